//! The watch-fed, in-memory index of Sessions. It answers every read of the API:
//! lists, single sessions, the slug lookup of `session-proxy` (the hot path: one
//! read lock and a hash lookup), create's wait for the scheduler's decision, and the
//! live event stream. It also holds the per-session activity the proxy records, an
//! atomic store per request, written back in batches by the flusher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use axum::http::HeaderValue;
use futures::StreamExt;
use medforge_crds::{DesiredState, Exposure, Session, SessionCondition, SessionPhase, conditions};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::backend::{SessionBackend, WatchEvent};
use crate::slug::session_slug;

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

impl IndexedSession {
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
#[derive(Clone, Debug)]
pub enum SessionChange {
    /// A session was created or changed.
    Applied(Arc<IndexedSession>),
    /// A session was deleted.
    Deleted(Arc<IndexedSession>),
    /// The whole index was relisted; streams should resend their snapshot.
    Reset,
}

#[derive(Default)]
struct Maps {
    by_name: HashMap<String, Arc<IndexedSession>>,
    by_slug: HashMap<String, Arc<IndexedSession>>,
}

/// The index. Shared behind an `Arc`.
pub struct SessionIndex {
    maps: RwLock<Maps>,
    version: watch::Sender<u64>,
    changes: broadcast::Sender<SessionChange>,
    synced: AtomicBool,
}

impl Default for SessionIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionIndex {
    /// An empty, unsynced index.
    pub fn new() -> Self {
        Self {
            maps: RwLock::new(Maps::default()),
            version: watch::channel(0).0,
            changes: broadcast::channel(1024).0,
            synced: AtomicBool::new(false),
        }
    }

    /// Whether the first full listing has arrived.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Feeds the index from the backend's watch until the stream ends.
    pub async fn run(self: Arc<Self>, backend: Arc<dyn SessionBackend>) {
        let mut stream = backend.watch();
        let mut listing: Option<Vec<Session>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Init) => listing = Some(Vec::new()),
                Ok(WatchEvent::InitApply(s)) => listing.get_or_insert_with(Vec::new).push(s),
                Ok(WatchEvent::InitDone) => {
                    self.reset(listing.take().unwrap_or_default());
                    self.synced.store(true, Ordering::Release);
                }
                Ok(WatchEvent::Apply(s)) => self.apply(s),
                Ok(WatchEvent::Delete(s)) => self.remove(&s),
                Err(err) => tracing::warn!(error = %err, "session watch failed; it retries"),
            }
        }
        self.synced.store(false, Ordering::Release);
        tracing::error!("session watch ended");
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Replaces the whole content (a relist), keeping recorded activity.
    pub fn reset(&self, sessions: Vec<Session>) {
        {
            let mut maps = self.write();
            let old = std::mem::take(&mut *maps);
            for session in sessions {
                let entry = Arc::new(IndexedSession::new(session));
                if let Some(prev) = old.by_name.get(&entry.name) {
                    carry_activity(prev, &entry);
                }
                insert(&mut maps, entry);
            }
        }
        self.bump();
        let _ = self.changes.send(SessionChange::Reset);
    }

    /// Adds or replaces one Session.
    pub fn apply(&self, session: Session) {
        let entry = Arc::new(IndexedSession::new(session));
        {
            let mut maps = self.write();
            if let Some(prev) = maps.by_name.get(&entry.name).cloned() {
                carry_activity(&prev, &entry);
                if let Some(slug) = &prev.slug
                    && prev.slug != entry.slug
                {
                    remove_slug(&mut maps, slug, &prev.name);
                }
            }
            insert(&mut maps, entry.clone());
        }
        self.bump();
        let _ = self.changes.send(SessionChange::Applied(entry));
    }

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

    /// Removes one Session.
    pub fn remove(&self, session: &Session) {
        let name = session.metadata.name.as_deref().unwrap_or_default();
        let removed = {
            let mut maps = self.write();
            let removed = maps.by_name.remove(name);
            if let Some(entry) = &removed
                && let Some(slug) = &entry.slug
            {
                remove_slug(&mut maps, slug, name);
            }
            removed
        };
        self.bump();
        if let Some(entry) = removed {
            let _ = self.changes.send(SessionChange::Deleted(entry));
        }
    }

    /// A session by name (id).
    pub fn get(&self, name: &str) -> Option<Arc<IndexedSession>> {
        self.read().by_name.get(name).cloned()
    }

    /// A session by slug: the proxy's lookup.
    pub fn by_slug(&self, slug: &str) -> Option<Arc<IndexedSession>> {
        self.read().by_slug.get(slug).cloned()
    }

    /// Whether a slug is taken.
    pub fn slug_taken(&self, slug: &str) -> bool {
        self.read().by_slug.contains_key(slug)
    }

    /// The sessions a filter accepts, newest first (then by name).
    pub fn list(&self, filter: impl Fn(&IndexedSession) -> bool) -> Vec<Arc<IndexedSession>> {
        let mut out: Vec<Arc<IndexedSession>> = self
            .read()
            .by_name
            .values()
            .filter(|e| filter(e))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            sort_key(b)
                .cmp(&sort_key(a))
                .then_with(|| a.name.cmp(&b.name))
        });
        out
    }

    /// Number of indexed sessions.
    pub fn len(&self) -> usize {
        self.read().by_name.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Subscribes to changes (for live events).
    pub fn subscribe(&self) -> broadcast::Receiver<SessionChange> {
        self.changes.subscribe()
    }

    /// Waits until `check` returns `Some` for the session `name` (which may be absent), or the deadline.
    pub async fn wait_for<T>(
        &self,
        name: &str,
        deadline: Instant,
        mut check: impl FnMut(Option<&Arc<IndexedSession>>) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.version.subscribe();
        loop {
            if let Some(done) = check(self.get(name).as_ref()) {
                return Some(done);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
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

fn sort_key(e: &IndexedSession) -> i128 {
    e.session
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_nanosecond())
}

fn insert(maps: &mut Maps, entry: Arc<IndexedSession>) {
    if let Some(slug) = &entry.slug {
        maps.by_slug.insert(slug.clone(), entry.clone());
    }
    maps.by_name.insert(entry.name.clone(), entry);
}

fn remove_slug(maps: &mut Maps, slug: &str, name: &str) {
    if maps.by_slug.get(slug).is_some_and(|e| e.name == name) {
        maps.by_slug.remove(slug);
    }
}

fn carry_activity(prev: &IndexedSession, next: &IndexedSession) {
    next.last_activity.fetch_max(
        prev.last_activity.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    next.flushed_activity.fetch_max(
        prev.flushed_activity.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
}
