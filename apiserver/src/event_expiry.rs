//! Events expire a fixed time after their last write, as with
//! kube-apiserver's `--event-ttl`.

use std::sync::Arc;
use std::time::Duration;

use crate::events::last_written;
use crate::registry::Builtin;
use crate::state::AppState;
use crate::store::{Precondition, WriteError, WriteOp};

/// How often the reaper looks for expired Events: a tenth of the lifetime,
/// between 100 ms and a minute.
fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Deletes Events `ttl` after their last write until shutdown, as
/// kube-apiserver's `--event-ttl` does (one hour by default).
pub async fn expire(st: Arc<AppState>, ttl: Duration) {
    let Some(rt) = st
        .registry
        .types
        .iter()
        .find(|t| t.builtin == Some(Builtin::Event))
    else {
        return;
    };
    let mut tick = tokio::time::interval(sweep_interval(ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = st.shutdown.cancelled() => return,
        }
        let Ok(ttl) = jiff::SignedDuration::try_from(ttl) else {
            return;
        };
        let cutoff = jiff::Timestamp::now() - ttl;
        let (events, _) = st.store.snapshot(rt.id, None);
        let mut expired = 0usize;
        for e in events {
            if last_written(&e.value()).is_some_and(|t| t > cutoff) {
                continue;
            }
            let op = WriteOp::Delete {
                resource: rt.id,
                key: e.key(),
                // A write since the snapshot renews the Event: leave it.
                precondition: Precondition::Rv(e.rv),
                last_state: None,
            };
            match st.store.write(op).await {
                Ok(_) => expired += 1,
                Err(WriteError::Conflict | WriteError::NotFound) => {}
                Err(WriteError::Closed) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "could not delete an expired Event");
                }
            }
        }
        if expired > 0 {
            tracing::debug!(expired, "deleted expired Events");
        }
    }
}
