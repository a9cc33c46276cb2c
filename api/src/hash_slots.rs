//! A bound on the password hashes computed at once (signup and login). Each
//! one holds Argon2's memory (19 MiB by default) and a blocking thread for
//! tens of milliseconds; a request that finds every slot taken gets 503
//! `busy` with `Retry-After` at once instead of waiting in a queue that a
//! flood of logins would grow without bound.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The slots; cheap to share.
#[derive(Clone, Debug)]
pub struct HashSlots {
    slots: Arc<Semaphore>,
}

/// A taken slot; dropping it frees the slot.
#[derive(Debug)]
pub struct HashSlot(#[allow(dead_code)] OwnedSemaphorePermit);

impl HashSlots {
    /// `count` slots (at least one).
    pub fn new(count: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(count.max(1))),
        }
    }

    /// A slot, or 503 `busy` (`Retry-After: 1`) when all are taken.
    pub fn take(&self) -> Result<HashSlot, ApiError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(HashSlot)
            .map_err(|_| ApiError::Unavailable {
                code: "busy",
                detail: "Too many logins and signups at once; retry in a second.".into(),
                retry_after_secs: Some(1),
            })
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.slots.available_permits()
    }
}
