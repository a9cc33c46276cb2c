//! Waiting for state in tests: poll a check until it holds, with a deadline
//! and a failure message that names what was awaited.
//!
//! ```no_run
//! # async fn example(ready: impl Fn() -> bool) {
//! use std::time::Duration;
//! use medforge_testkit::eventually;
//! eventually("the server is ready", Duration::from_secs(10), || async { ready() }).await;
//! # }
//! ```

use std::fmt::Debug;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] runs its check.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// What a check of [`eventually`] returns: whether the awaited state holds,
/// and what to return when it does.
pub trait Outcome {
    /// What [`eventually`] returns once the state holds.
    type Value;
    /// `Ok(value)` when the state holds; `Err(note)` otherwise, where the note
    /// (if any) describes what was seen instead, for the failure message.
    fn into_outcome(self) -> Result<Self::Value, Option<String>>;
}

/// `true` when the state holds.
impl Outcome for bool {
    type Value = ();
    fn into_outcome(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

/// `Some(value)` when the state holds.
impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_outcome(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

/// `Ok(value)` when the state holds; `Err(what was seen)` while it does not
/// (the last one is in the failure message).
impl<T, E: Debug> Outcome for Result<T, E> {
    type Value = T;
    fn into_outcome(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(format!("{e:?}")))
    }
}

/// Why [`try_eventually`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// The awaited state, as the caller named it.
    pub what: String,
    /// How long it was awaited.
    pub waited: Duration,
    /// What the last check saw instead, when it said.
    pub last: Option<String>,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.waited, self.what
        )?;
        if let Some(last) = &self.last {
            write!(f, "; last seen: {last}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TimedOut {}

/// `check` is an async closure (`async || …`) or a closure that returns a
/// future (`|| async { … }`).
///
/// Runs `check` every [`POLL_INTERVAL`] until it reports that the state holds
/// and returns its value; once `within` has passed (after one last check),
/// returns [`TimedOut`] naming `what`.
pub async fn try_eventually<O, F>(
    what: &str,
    within: Duration,
    mut check: F,
) -> Result<O::Value, TimedOut>
where
    O: Outcome,
    F: AsyncFnMut() -> O,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match check().await.into_outcome() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_string(),
                waited: within,
                last,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`try_eventually`] that panics on timeout with a message naming `what`
/// (and what the last check saw, for checks that return a `Result`).
pub async fn eventually<O, F>(what: &str, within: Duration, check: F) -> O::Value
where
    O: Outcome,
    F: AsyncFnMut() -> O,
{
    match try_eventually(what, within, check).await {
        Ok(value) => value,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_value_once_the_check_holds() {
        let n = AtomicU32::new(0);
        let v = eventually("three calls", Duration::from_secs(5), || async {
            let i = n.fetch_add(1, Ordering::SeqCst) + 1;
            (i >= 3).then_some(i)
        })
        .await;
        assert_eq!(v, 3);
        eventually("true", Duration::from_secs(1), || async { true }).await;
    }

    #[tokio::test]
    async fn a_timeout_names_what_was_awaited_and_the_last_state() {
        let e = try_eventually("the answer", Duration::from_millis(60), || async {
            Err::<(), _>("still 41")
        })
        .await
        .unwrap_err();
        assert_eq!(e.what, "the answer");
        assert_eq!(e.last.as_deref(), Some("\"still 41\""));
        let msg = e.to_string();
        assert!(msg.contains("waiting for the answer"), "{msg}");
        assert!(msg.contains("still 41"), "{msg}");
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for nothing")]
    async fn eventually_panics_on_timeout() {
        eventually("nothing", Duration::from_millis(10), || async { false }).await;
    }
}
