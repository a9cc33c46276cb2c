//! The watch-fed, in-memory index of Sessions (a [`WatchIndex`] that also maps
//! slugs). It answers every read of the API: lists, single sessions, the slug
//! lookup of `session-proxy` (the hot path: one read lock and a hash lookup),
//! create's wait for the scheduler's decision, and the live event stream. It
//! also holds the per-session activity the proxy records, an atomic store per
//! request, written back in batches by the flusher.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::http::HeaderValue;
use futures::stream::BoxStream;
use medforge_crds::{DesiredState, Exposure, Session, SessionCondition, SessionPhase, conditions};

use crate::backend::{BackendError, SessionBackend, WatchEvent};
use crate::slug::session_slug;
use crate::watch_index::{Change, Entry, Secondary, WatchIndex};

/// One Session as indexed, with what the hot path needs precomputed.
#[derive(Debug)]
pub struct IndexedSession {
    /// The Session as last seen.
    pub session: Session,
    /// `metadata.name`, the API's session id.
    pub name: String,
    /// `spec.owner`.
    pub owner: String,
    /// `status.slug`, or the slug the api chose (label) until the operator copies it.
    pub slug: Option<String>,
    /// `spec.exposure`.
    pub exposure: Exposure,
    /// `X-Upstream` when the session is routable (Running, Ready, upstream set).
    pub upstream: Option<HeaderValue>,
    last_activity: AtomicI64,
    flushed_activity: AtomicI64,
}

impl Entry for IndexedSession {
    type Object = Session;
    const KIND: &'static str = "session";

    fn watch(
        backend: &dyn SessionBackend,
    ) -> BoxStream<'static, Result<WatchEvent<Session>, BackendError>> {
        backend.watch()
    }

    fn new(session: Session) -> Self {
        let name = session.metadata.name.clone().unwrap_or_default();
        let status = session.status.as_ref();
        let slug = session_slug(&session);
        let upstream = routable_upstream(&session).and_then(|u| HeaderValue::from_str(u).ok());
        let last = status
            .and_then(|s| s.last_activity_at.as_ref())
            .map_or(0, |t| t.0.as_second());
        Self {
            owner: session.spec.owner.clone(),
            exposure: session.spec.exposure,
            name,
            slug,
            upstream,
            last_activity: AtomicI64::new(last),
            flushed_activity: AtomicI64::new(last),
            session,
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn sort_key(&self) -> i128 {
        self.session
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_nanosecond())
    }

    /// Keeps the activity recorded on the entry replaced.
    fn succeed(&self, before: &Self) {
        self.last_activity.fetch_max(
            before.last_activity.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.flushed_activity.fetch_max(
            before.flushed_activity.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }
}

impl IndexedSession {
    /// Records a request through the proxy (Unix seconds). An atomic store, no I/O.
    pub fn touch(&self, now: i64) {
        if self.last_activity.load(Ordering::Relaxed) < now {
            self.last_activity.store(now, Ordering::Relaxed);
        }
    }

    /// The last recorded activity (Unix seconds, 0 for none).
    pub fn last_activity(&self) -> i64 {
        self.last_activity.load(Ordering::Relaxed)
    }

    /// The Session's phase.
    pub fn phase(&self) -> SessionPhase {
        self.session.phase()
    }

    /// Whether the Session is being deleted (its finalizers are still running).
    pub fn is_deleting(&self) -> bool {
        self.session.metadata.deletion_timestamp.is_some()
    }
}

/// `status.upstream` when the session may be routed to: its owner wants it
/// running and it is not being deleted (desired state first, whatever the
/// status still says), and its status is phase Running, `Ready` True, upstream set.
pub fn routable_upstream(session: &Session) -> Option<&str> {
    if session.spec.state != DesiredState::Running || session.metadata.deletion_timestamp.is_some()
    {
        return None;
    }
    let status = session.status.as_ref()?;
    let ready = conditions::is_true(&status.conditions, SessionCondition::Ready);
    if status.phase == Some(SessionPhase::Running) && ready {
        status.upstream.as_deref().filter(|u| !u.is_empty())
    } else {
        None
    }
}

/// A change of the index, for live event streams.
pub type SessionChange = Change<IndexedSession>;

/// The index: Sessions by name and by slug. Shared behind an `Arc`.
pub type SessionIndex = WatchIndex<IndexedSession, Slugs>;

/// The sessions by slug: the proxy's lookup.
#[derive(Default)]
pub struct Slugs(HashMap<String, Arc<IndexedSession>>);

impl Slugs {
    fn remove(&mut self, slug: &str, name: &str) {
        if self.0.get(slug).is_some_and(|e| e.name == name) {
            self.0.remove(slug);
        }
    }
}

impl Secondary<IndexedSession> for Slugs {
    fn link(&mut self, entry: &Arc<IndexedSession>, before: Option<&Arc<IndexedSession>>) {
        if let Some(prev) = before
            && let Some(slug) = &prev.slug
            && prev.slug != entry.slug
        {
            self.remove(slug, &prev.name);
        }
        if let Some(slug) = &entry.slug {
            self.0.insert(slug.clone(), entry.clone());
        }
    }

    fn unlink(&mut self, entry: &IndexedSession) {
        if let Some(slug) = &entry.slug {
            self.remove(slug, &entry.name);
        }
    }
}

impl SessionIndex {
    /// Applies a Session this replica just wrote (read your writes: a stop
    /// is seen by forward_auth at once, not when the watch brings it),
    /// unless the index already holds a newer version of it or no longer
    /// holds it at all (deleted meanwhile). Resource versions are compared
    /// as numbers, as both the embedded control plane and etcd write them.
    pub fn apply_written(&self, session: Session) {
        let version = |s: &Session| {
            s.metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
        };
        let name = session.metadata.name.clone().unwrap_or_default();
        let Some(current) = self.get(&name) else {
            return;
        };
        match (version(&current.session), version(&session)) {
            (Some(held), Some(written)) if written > held => self.apply(session),
            _ => {}
        }
    }

    /// A session by slug: the proxy's lookup.
    pub fn by_slug(&self, slug: &str) -> Option<Arc<IndexedSession>> {
        self.read().secondary.0.get(slug).cloned()
    }

    /// Whether a slug is taken.
    pub fn slug_taken(&self, slug: &str) -> bool {
        self.read().secondary.0.contains_key(slug)
    }

    /// Activity recorded since the last flush: `(name, unix seconds)`.
    pub fn pending_activity(&self) -> Vec<(Arc<IndexedSession>, i64)> {
        self.read()
            .by_name
            .values()
            .filter_map(|e| {
                let last = e.last_activity.load(Ordering::Relaxed);
                (last > e.flushed_activity.load(Ordering::Relaxed)).then(|| (e.clone(), last))
            })
            .collect()
    }

    /// Marks activity as written back.
    pub fn mark_flushed(&self, flushed: &[(Arc<IndexedSession>, i64)]) {
        for (entry, at) in flushed {
            entry.flushed_activity.fetch_max(*at, Ordering::Relaxed);
            // The entry may have been replaced meanwhile; mark the current one too.
            if let Some(current) = self.get(&entry.name) {
                current.flushed_activity.fetch_max(*at, Ordering::Relaxed);
            }
        }
    }
}
