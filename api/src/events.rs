//! Live events: `GET /api/v2/events` streams the caller's session changes as
//! Server-Sent Events (`snapshot` with every session first and after any gap,
//! then `session` per change and `session_deleted` per deletion).
//!
//! Browsers' `EventSource` cannot send headers, so `POST /api/v2/events/token`
//! hands out a single-use token valid for 60 s to pass as `?token=`; it is stored
//! hashed and deleted when redeemed. The request log shows it as `token=***`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::auth::{Auth, authenticate};
use crate::clock::{now_secs, rfc3339};
use crate::error::ApiError;
use crate::index::{IndexedSession, SessionChange};
use crate::reply::Reply;
use crate::request::Query;
use crate::sessions::view;
use crate::state::AppState;
use crate::tokens;
use crate::users;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v2/events", get(events))
        .route("/api/v2/events/token", post(issue_token))
}

/// Body of `POST /api/v2/events/token`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventToken {
    /// Pass as `?token=` to `GET /api/v2/events`, once.
    pub token: String,
    /// When it stops working (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: String,
    /// Seconds it is valid for.
    pub expires_in: u64,
}

async fn issue_token(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Reply<EventToken>, ApiError> {
    let token = tokens::new_token();
    let ttl = state.config().auth.event_token_ttl.as_secs();
    let expires_at = now_secs() + ttl as i64;
    users::insert_event_token(
        state.db(),
        &tokens::hash_hex(&tokens::hash_token(&token)),
        &principal.user.id,
        expires_at,
    )
    .await?;
    Ok(Reply::created(EventToken {
        token,
        expires_at: rfc3339(expires_at),
        expires_in: ttl,
    }))
}

#[derive(Debug, Default, Deserialize)]
struct EventsQuery {
    token: Option<String>,
}

async fn events(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let user_id = match query.token.as_deref() {
        Some(token) => {
            // A token of the wrong shape is no credential: 401 without a query.
            if !crate::validate::EVENT_TOKEN.matches(token) {
                return Err(ApiError::Unauthenticated);
            }
            let hash = tokens::hash_hex(&tokens::hash_token(token));
            users::redeem_event_token(state.db(), &hash, now_secs())
                .await?
                .ok_or(ApiError::Unauthenticated)?
                .id
        }
        None => authenticate(&state, &headers)
            .await?
            .ok_or(ApiError::Unauthenticated)?
            .user
            .id
            .clone(),
    };
    tracing::info!(user_id = %user_id, "event stream opened");
    // Subscribed before the snapshot, so that no change falls in between.
    let rx = state.index().subscribe();
    let mut queue = VecDeque::new();
    queue.push_back(snapshot(&state, &user_id));
    let stream = futures::stream::unfold(
        (rx, queue, state, user_id),
        |(mut rx, mut queue, state, user_id)| async move {
            loop {
                if let Some(event) = queue.pop_front() {
                    return Some((Ok(event), (rx, queue, state, user_id)));
                }
                match rx.recv().await {
                    Ok(SessionChange::Applied(e)) if e.owner == user_id => {
                        queue.push_back(session_event(&state, &e));
                    }
                    Ok(SessionChange::Deleted(e)) if e.owner == user_id => {
                        let data = serde_json::json!({ "id": e.name }).to_string();
                        queue.push_back(Event::default().event("session_deleted").data(data));
                    }
                    Ok(SessionChange::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        queue.push_back(snapshot(&state, &user_id));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn session_event(state: &AppState, entry: &Arc<IndexedSession>) -> Event {
    let body = view(state, &entry.session, entry.last_activity());
    Event::default()
        .event("session")
        .data(serde_json::to_string(&body).unwrap_or_default())
}

fn snapshot(state: &AppState, user_id: &str) -> Event {
    let sessions: Vec<_> = state
        .index()
        .list(|e| e.owner == user_id)
        .iter()
        .map(|e| view(state, &e.session, e.last_activity()))
        .collect();
    Event::default()
        .event("snapshot")
        .data(serde_json::to_string(&sessions).unwrap_or_default())
}
