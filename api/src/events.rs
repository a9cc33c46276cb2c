//! Live events: `GET /api/v2/events` streams the caller's session changes as
//! Server-Sent Events (`snapshot` with every session first and after any gap,
//! then `session` per change and `session_deleted` per deletion, and
//! `session.expiring` ahead of an idle or lifetime stop), and the changes of
//! the caller's workspace snapshots (`snapshot.created`, `snapshot.ready`,
//! `snapshot.failed`, `snapshot.deleted`, each with the snapshot).
//!
//! Browsers' `EventSource` cannot send headers, so `POST /api/v2/events/token`
//! hands out a single-use token valid for 60 s to pass as `?token=`; it is stored
//! hashed and deleted when redeemed. The request log shows it as `token=***`.
//!
//! A stream ends with the login it was opened under (the cookie or bearer
//! token, or the login the event token was issued under): it checks that
//! login every second.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use futures::Stream;
use medforge_crds::WorkspaceSnapshot;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::MissedTickBehavior;

use crate::auth::{Auth, authenticate};
use crate::clock::{now_secs, rfc3339};
use crate::error::ApiError;
use crate::index::{IndexedSession, SessionChange};
use crate::reply::Reply;
use crate::request::Query;
use crate::sessions::view;
use crate::snapshot_index::SnapshotChange;
use crate::snapshots::view::{SnapshotState, snapshot_state, view as snapshot_view};
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
        &tokens::hash_hex(&principal.token_hash),
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
    // The stream lasts as long as the login it was opened under: `login` is
    // that login token's hash.
    let (user_id, login) = match query.token.as_deref() {
        Some(token) => {
            // A token of the wrong shape is no credential: 401 without a query.
            if !crate::validate::EVENT_TOKEN.matches(token) {
                return Err(ApiError::Unauthenticated);
            }
            let hash = tokens::hash_hex(&tokens::hash_token(token));
            let redeemed = users::redeem_event_token(state.db(), &hash, now_secs())
                .await?
                .ok_or(ApiError::Unauthenticated)?;
            let login = redeemed
                .login_token_hash
                .and_then(|h| hex::decode(h).ok())
                .and_then(|h| tokens::TokenHash::try_from(h).ok());
            (redeemed.user.id, login)
        }
        None => {
            let principal = authenticate(&state, &headers)
                .await?
                .ok_or(ApiError::Unauthenticated)?;
            (principal.user.id.clone(), Some(principal.token_hash))
        }
    };
    tracing::info!(user_id = %user_id, "event stream opened");
    // Subscribed before the snapshot, so that no change falls in between.
    let sessions = state.index().subscribe();
    let snapshots = state.snapshots().subscribe();
    let mut queue = VecDeque::new();
    queue.push_back(snapshot(&state, &user_id));
    let mut check = tokio::time::interval(LOGIN_CHECK_EVERY);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let follow = Follow {
        watched: Watched::of(&state, &user_id),
        sessions,
        snapshots,
        queue,
        state,
        user_id,
        check,
        login,
    };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(event) = f.queue.pop_front() {
                return Some((Ok(event), f));
            }
            // Changes first: the per-second checks never look at a session
            // older than a change already waiting for this stream.
            let wake = tokio::select! {
                biased;
                change = f.sessions.recv() => Wake::Session(change),
                change = f.snapshots.recv() => Wake::Snapshot(change),
                _ = f.check.tick() => Wake::Tick,
            };
            match wake {
                Wake::Tick => {
                    if login_ended(&f.state, f.login, &f.user_id).await {
                        return None;
                    }
                    let ahead = f.state.config().sessions.expiry_warning;
                    let expiring = f.watched.expiring(ahead);
                    f.queue.extend(expiring);
                }
                Wake::Session(change) => {
                    if !f.session_changed(change) {
                        return None;
                    }
                }
                Wake::Snapshot(change) => {
                    if !f.snapshot_changed(change) {
                        return None;
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// What woke a stream up.
enum Wake {
    Session(Result<SessionChange, broadcast::error::RecvError>),
    Snapshot(Result<SnapshotChange, broadcast::error::RecvError>),
    Tick,
}

/// One open stream: what it follows and what it has still to send.
struct Follow {
    sessions: broadcast::Receiver<SessionChange>,
    snapshots: broadcast::Receiver<SnapshotChange>,
    queue: VecDeque<Event>,
    state: AppState,
    user_id: String,
    check: tokio::time::Interval,
    watched: Watched,
    /// The hash of the login token the stream was opened under.
    login: Option<tokens::TokenHash>,
}

impl Follow {
    /// Queues what a change of the session index means to this user;
    /// `false` when the index is gone.
    fn session_changed(
        &mut self,
        change: Result<SessionChange, broadcast::error::RecvError>,
    ) -> bool {
        match change {
            Ok(SessionChange::Applied { after: e, .. }) if e.owner == self.user_id => {
                self.queue.push_back(session_event(&self.state, &e));
                self.watched.sessions.insert(e.name.clone(), e);
            }
            Ok(SessionChange::Deleted(e)) if e.owner == self.user_id => {
                let data = serde_json::json!({ "id": e.name }).to_string();
                self.queue
                    .push_back(Event::default().event("session_deleted").data(data));
                self.watched.sessions.remove(&e.name);
            }
            Ok(SessionChange::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                self.resend_snapshot();
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => return false,
        }
        true
    }

    /// Queues the snapshot events a change of the snapshot index means to
    /// this user; after a gap, the whole list again (each session with its
    /// snapshots). `false` when the index is gone.
    fn snapshot_changed(
        &mut self,
        change: Result<SnapshotChange, broadcast::error::RecvError>,
    ) -> bool {
        match change {
            Ok(SnapshotChange::Applied { before, after }) if after.owner == self.user_id => {
                let before = before.as_ref().map(|b| &b.record);
                for name in snapshot_event_names(before, &after.record) {
                    self.queue.push_back(snapshot_event(name, &after.record));
                }
            }
            Ok(SnapshotChange::Deleted(e)) if e.owner == self.user_id => {
                self.queue
                    .push_back(snapshot_event(SNAPSHOT_DELETED, &e.record));
            }
            Ok(SnapshotChange::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                self.resend_snapshot();
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => return false,
        }
        true
    }

    fn resend_snapshot(&mut self) {
        self.queue.push_back(snapshot(&self.state, &self.user_id));
        self.watched = Watched::of(&self.state, &self.user_id);
    }
}

/// A record of the user's appeared.
pub const SNAPSHOT_CREATED: &str = "snapshot.created";
/// A record of the user's became ready to use.
pub const SNAPSHOT_READY: &str = "snapshot.ready";
/// A record of the user's failed: the node agent could not take it, or it
/// is gone from its node.
pub const SNAPSHOT_FAILED: &str = "snapshot.failed";
/// A record of the user's is gone (its ZFS snapshot destroyed).
pub const SNAPSHOT_DELETED: &str = "snapshot.deleted";

/// The events a change of a record makes: `snapshot.created` when it is
/// new, then `snapshot.ready` or `snapshot.failed` when it has just come to
/// that state (a record new and ready at once makes both).
pub fn snapshot_event_names(
    before: Option<&WorkspaceSnapshot>,
    after: &WorkspaceSnapshot,
) -> Vec<&'static str> {
    let was = before.map(|b| snapshot_state(b).0);
    let now = snapshot_state(after).0;
    let mut names = Vec::new();
    if before.is_none() {
        names.push(SNAPSHOT_CREATED);
    }
    if was != Some(now) {
        match now {
            SnapshotState::Ready => names.push(SNAPSHOT_READY),
            SnapshotState::Failed => names.push(SNAPSHOT_FAILED),
            SnapshotState::Pending | SnapshotState::Deleting => {}
        }
    }
    names
}

fn snapshot_event(name: &'static str, record: &WorkspaceSnapshot) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(&snapshot_view(record)).unwrap_or_default())
}

/// How often an open stream checks that its login is still valid: a logout
/// on this replica ends it within this long; one on another replica within
/// this plus the token cache's TTL.
const LOGIN_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Whether the login an event stream was opened under has ended (logged out,
/// expired, idle). A database error keeps the stream: it shows only the
/// user's own sessions, and ending every stream on a blip would only bring
/// them all back at once.
async fn login_ended(state: &AppState, login: Option<tokens::TokenHash>, user_id: &str) -> bool {
    let Some(key) = login else {
        return false;
    };
    match state
        .tokens()
        .still_valid(state.db(), key, now_secs())
        .await
    {
        Ok(true) => false,
        Ok(false) => {
            tracing::info!(user_id = %user_id, "event stream closed: its login ended");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not check an event stream's login; keeping it");
            false
        }
    }
}

/// The caller's sessions as one event stream follows them (from the index
/// once, then from the changes it streams), and the stop times it has
/// warned of: the per-second expiry check looks at these, never at the
/// whole index.
struct Watched {
    sessions: HashMap<String, Arc<IndexedSession>>,
    /// Session → the stop time (Unix seconds) last warned of.
    warned: HashMap<String, i64>,
}

impl Watched {
    fn of(state: &AppState, user_id: &str) -> Watched {
        Watched {
            sessions: state
                .index()
                .list(|e| e.owner == user_id)
                .into_iter()
                .map(|e| (e.name.clone(), e))
                .collect(),
            warned: HashMap::new(),
        }
    }

    /// `session.expiring` for each running session whose idle or lifetime
    /// stop is less than `ahead` away: once per session and stop time, so a
    /// keepalive that moves the stop brings a new warning when the new time
    /// comes near. Nothing when `ahead` is zero.
    fn expiring(&mut self, ahead: Duration) -> Vec<Event> {
        if ahead.is_zero() {
            return Vec::new();
        }
        let now = jiff::Timestamp::now();
        let sessions = &self.sessions;
        self.warned.retain(|id, _| sessions.contains_key(id));
        let mut events = Vec::new();
        for e in self.sessions.values() {
            let Some((at, because)) = crate::sessions::expiry(&e.session, e.last_activity()) else {
                continue;
            };
            let left = at.as_second() - now.as_second();
            if left > ahead.as_secs() as i64 || self.warned.get(&e.name) == Some(&at.as_second()) {
                continue;
            }
            self.warned.insert(e.name.clone(), at.as_second());
            let data = serde_json::json!({
                "id": e.name,
                "at": at.to_string(),
                "because": because,
                "seconds_left": left.max(0),
            });
            events.push(
                Event::default()
                    .event("session.expiring")
                    .data(data.to_string()),
            );
        }
        events
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use medforge_crds::{
        SnapshotCondition, SnapshotReason, SnapshotSource, SnapshotStatusReason,
        WorkspaceSnapshotSpec, WorkspaceSnapshotStatus,
    };

    fn record(ready: Option<(bool, SnapshotStatusReason)>) -> WorkspaceSnapshot {
        let mut r = WorkspaceSnapshot::new(
            "web-manual-1",
            WorkspaceSnapshotSpec {
                owner: "ada".into(),
                session: SnapshotSource {
                    name: "web".into(),
                    uid: "u".into(),
                },
                node: "node-a".into(),
                snapshot: "pool/ada/u@manual-1".into(),
                reason: SnapshotReason::Manual,
            },
        );
        if let Some((ok, reason)) = ready {
            let mut status = WorkspaceSnapshotStatus::default();
            medforge_crds::conditions::set_condition(
                &mut status.conditions,
                SnapshotCondition::ReadyToUse,
                Some(ok),
                reason,
                "",
                None,
                Time(jiff::Timestamp::now()),
            );
            r.status = Some(status);
        }
        r
    }

    #[test]
    fn a_record_makes_created_once_then_ready_or_failed_once() {
        let pending = record(None);
        let ready = record(Some((true, SnapshotStatusReason::Taken)));
        let failed = record(Some((false, SnapshotStatusReason::DatasetMismatch)));
        let still_pending = record(Some((false, SnapshotStatusReason::Pending)));
        assert_eq!(snapshot_event_names(None, &pending), [SNAPSHOT_CREATED]);
        assert_eq!(
            snapshot_event_names(None, &ready),
            [SNAPSHOT_CREATED, SNAPSHOT_READY]
        );
        assert_eq!(
            snapshot_event_names(Some(&pending), &ready),
            [SNAPSHOT_READY]
        );
        assert_eq!(
            snapshot_event_names(Some(&pending), &failed),
            [SNAPSHOT_FAILED]
        );
        assert!(snapshot_event_names(Some(&pending), &still_pending).is_empty());
        assert!(snapshot_event_names(Some(&ready), &ready).is_empty());
        let mut deleting = ready.clone();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        assert!(snapshot_event_names(Some(&ready), &deleting).is_empty());
    }
}
