//! The durable copy of the store: SQLite through sqlx, in the data directory.
//!
//! WAL journal with `synchronous=FULL`: a commit returns only once the WAL is
//! on disk, and the store acknowledges a write only after its commit. Each
//! batch of writes is one multi-row INSERT into `events`, whose triggers apply
//! it to `objects` and drop history that has fallen out of the retained
//! window, so a commit is one round trip to SQLite's thread and one fsync.
//! Checkpoints (copying the WAL into the database file) run on a second
//! connection in the background instead of inside a commit. A lock file keeps
//! a second server off the same data directory.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// A row to write in one commit.
pub struct Write<'a> {
    pub resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub rv: u64,
    pub event_type: &'static str,
    pub body: &'a [u8],
}

/// What the database held at start.
pub struct Loaded {
    /// `(resource, body)` of every live object.
    pub objects: Vec<(String, Vec<u8>)>,
    /// `(rv, resource, type, body)` of the retained history, oldest first.
    pub events: Vec<(u64, String, String, Vec<u8>)>,
    /// The newest resource version given out.
    pub rv: u64,
    /// Every event newer than this is in `events`.
    pub history_floor: u64,
}

pub struct Db {
    pool: SqlitePool,
    checkpoints: CancellationToken,
    checkpointer: Option<tokio::task::JoinHandle<()>>,
    _lock: std::fs::File,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// At most 6 parameters a row: well under SQLite's limit of 32766 a statement.
const ROWS_PER_STATEMENT: usize = 512;
/// How often the background checkpointer looks at the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Creates the empty database file with mode 0600 unless it exists, and
/// narrows an existing one to 0600 (SQLite gives its `-wal` and `-shm` files
/// the same mode): the store holds every object, Secrets' worth included.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

impl Db {
    /// Opens (or creates) the database; `keep` is how many resource versions
    /// of history the database retains.
    pub async fn open(path: &Path, keep: u64) -> Result<Db, Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| Error::Io {
                path: lock_path.clone(),
                source: e,
            })?;
        lock.try_lock()
            .map_err(|_| Error::Locked(lock_path.clone()))?;
        private_file(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts.clone().pragma("wal_autocheckpoint", "0"))
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let checkpoint_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts.pragma("wal_autocheckpoint", "0"))
            .await?;
        let checkpoints = CancellationToken::new();
        let checkpointer = tokio::spawn(checkpoint_loop(checkpoint_pool, checkpoints.clone()));
        let db = Db {
            pool,
            checkpoints,
            checkpointer: Some(checkpointer),
            _lock: lock,
        };
        db.load_keep(keep).await?;
        Ok(db)
    }

    /// Records the retention for the pruning trigger, remembering the floor
    /// the previous retention left.
    async fn load_keep(&self, keep: u64) -> Result<(), sqlx::Error> {
        let floor = self.floor().await?;
        let mut tx = self.pool.begin().await?;
        for (k, v) in [("history_floor", floor), ("history_keep", keep)] {
            sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)")
                .bind(k)
                .bind(to_i64(v))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    async fn meta(&self, key: &str) -> Result<Option<i64>, sqlx::Error> {
        Ok(sqlx::query("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get(0)))
    }

    async fn newest(&self) -> Result<u64, sqlx::Error> {
        let newest: Option<i64> = sqlx::query("SELECT MAX(rv) FROM events")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(newest.unwrap_or(0).max(0) as u64)
    }

    /// Every event above this resource version is still in the database.
    async fn floor(&self) -> Result<u64, sqlx::Error> {
        let recorded = self.meta("history_floor").await?.unwrap_or(0).max(0) as u64;
        let by_keep = match self.meta("history_keep").await? {
            Some(keep) => self.newest().await?.saturating_sub(keep.max(0) as u64),
            None => 0,
        };
        Ok(recorded.max(by_keep))
    }

    pub async fn load(&self) -> Result<Loaded, sqlx::Error> {
        let history_floor = self.floor().await?;
        let objects =
            sqlx::query("SELECT resource, body FROM objects ORDER BY resource, namespace, name")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| (r.get::<String, _>(0), r.get::<Vec<u8>, _>(1)))
                .collect();
        let events =
            sqlx::query("SELECT rv, resource, type, body FROM events WHERE rv > ? ORDER BY rv")
                .bind(to_i64(history_floor))
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| {
                    (
                        r.get::<i64, _>(0).max(0) as u64,
                        r.get::<String, _>(1),
                        r.get::<String, _>(2),
                        r.get::<Vec<u8>, _>(3),
                    )
                })
                .collect();
        Ok(Loaded {
            objects,
            events,
            rv: self.newest().await?.max(history_floor),
            history_floor,
        })
    }

    /// Writes one batch; durable when this returns `Ok`.
    ///
    /// One statement (and so one implicit transaction) for up to 512 writes:
    /// one round trip to SQLite's thread. On a VM every extra thread wake-up
    /// on the commit path shows in the watch latency.
    pub async fn commit(&self, writes: &[Write<'_>]) -> Result<(), sqlx::Error> {
        if writes.len() <= ROWS_PER_STATEMENT {
            return insert_events(&self.pool, writes).await;
        }
        let mut tx = self.pool.begin().await?;
        for chunk in writes.chunks(ROWS_PER_STATEMENT) {
            insert_events(&mut *tx, chunk).await?;
        }
        tx.commit().await
    }

    /// Stops the checkpointer, folds the WAL into the database and closes.
    pub async fn close(mut self) {
        self.checkpoints.cancel();
        if let Some(h) = self.checkpointer.take() {
            let _ = h.await;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::debug!(error = %e, "final checkpoint failed; the WAL is replayed at next start");
        }
        self.pool.close().await;
    }
}

async fn checkpoint_loop(pool: SqlitePool, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
            _ = stop.cancelled() => break,
        }
        // PASSIVE never blocks the writer; it copies what it can.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "background checkpoint failed; retrying later");
        }
    }
    pool.close().await;
}

async fn insert_events<'c, E>(conn: E, writes: &[Write<'_>]) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO events (rv, resource, namespace, name, type, body) ",
    );
    qb.push_values(writes, |mut b, w| {
        b.push_bind(to_i64(w.rv))
            .push_bind(w.resource)
            .push_bind(w.namespace)
            .push_bind(w.name)
            .push_bind(w.event_type)
            .push_bind(w.body);
    });
    qb.build().execute(conn).await?;
    Ok(())
}
