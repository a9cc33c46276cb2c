//! Fakes that can be "down", as Docker or ZFS can.

use std::sync::{Mutex, MutexGuard};

/// A fake's state, or the error it answers with while it is down.
pub(super) fn unless_down<S, E>(
    state: &Mutex<S>,
    is_down: impl Fn(&S) -> bool,
    error: impl FnOnce() -> E,
) -> Result<MutexGuard<'_, S>, E> {
    let st = state.lock().unwrap();
    if is_down(&st) {
        return Err(error());
    }
    Ok(st)
}
