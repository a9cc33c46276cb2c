//! Writing back what the api only counts in memory: session activity
//! (`status.lastActivityAt`) and login token use (`last_used_at`).

use crate::state::AppState;
use crate::users;

/// Writes back session activity (one backend batch) and token use (one transaction).
pub async fn flush_activity(state: &AppState) {
    let pending = state.index().pending_activity();
    if !pending.is_empty() {
        let batch: Vec<(String, jiff::Timestamp)> = pending
            .iter()
            .filter_map(|(e, at)| Some((e.name.clone(), jiff::Timestamp::from_second(*at).ok()?)))
            .collect();
        match state.backend().record_activity(&batch).await {
            Ok(()) => state.index().mark_flushed(&pending),
            Err(e) => {
                tracing::warn!(error = %e, sessions = batch.len(), "could not record session activity")
            }
        }
    }
    let uses = state.tokens().pending_uses();
    if !uses.is_empty() {
        match users::touch_tokens(state.db(), &uses).await {
            Ok(()) => state.tokens().mark_flushed(&uses),
            Err(e) => tracing::warn!(error = %e, tokens = uses.len(), "could not record token use"),
        }
    }
}
