//! The SQL database of users and tokens: SQLite (a file in the data directory, the
//! default) or PostgreSQL (for several api replicas). Queries are runtime
//! `sqlx::query*` calls written once in portable SQL (`$n` placeholders work on
//! both) and run on whichever pool is configured; so are the migrations under
//! `migrations/` (one set for both databases).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Could not open or reach the database.
    #[error("could not connect to the database {what}: {source}")]
    Connect {
        /// Which database (URL without password, or file).
        what: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// The data directory or the database file in it could not be created
    /// or made private.
    #[error("could not prepare the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl DbError {
    /// Whether the error is a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Query(err) => err
                .as_database_error()
                .is_some_and(|e| e.is_unique_violation()),
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A pool on SQLite or PostgreSQL, with a count of the queries it ran (the benchmark
/// uses it to show that the hot path makes none).
#[derive(Clone, Debug)]
pub struct Db {
    pub(crate) pool: Pool,
    queries: Arc<AtomicU64>,
}

/// Runs the same query on whichever pool the database has. `$p` names the pool.
macro_rules! on_pool {
    ($db:expr, |$p:ident| $body:expr) => {{
        $db.count_query();
        match &$db.pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    }};
}
pub(crate) use on_pool;

/// Runs one statement with its bound values on whichever pool the database
/// has; the number of rows it changed.
macro_rules! execute {
    ($db:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        $crate::db::on_pool!($db, |p| sqlx::query($sql)
            $(.bind($bind))*
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
    };
}
pub(crate) use execute;

/// The database kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The file name of the default SQLite database inside the data directory.
pub const SQLITE_FILE: &str = "api.sqlite3";

impl Db {
    /// Opens the configured database: a `postgres://`/`postgresql://` URL, a `sqlite:` URL,
    /// or (when `url` is `None`) `<data_dir>/api.sqlite3`, created when missing.
    pub async fn connect(url: Option<&str>, data_dir: &Path) -> Result<Db, DbError> {
        match url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Self::connect_postgres(url).await
            }
            Some(url) => {
                let options =
                    SqliteConnectOptions::from_str(url).map_err(|source| DbError::Connect {
                        what: url.to_owned(),
                        source,
                    })?;
                Self::connect_sqlite(options, url).await
            }
            None => {
                let file = data_dir.join(SQLITE_FILE);
                private_file_in(data_dir, &file).map_err(|source| DbError::DataDir {
                    path: data_dir.display().to_string(),
                    source,
                })?;
                let options = SqliteConnectOptions::new().filename(&file);
                Self::connect_sqlite(options, &file.display().to_string()).await
            }
        }
    }

    async fn connect_sqlite(options: SqliteConnectOptions, what: &str) -> Result<Db, DbError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| DbError::Connect {
                what: what.to_owned(),
                source,
            })?;
        Ok(Db::from_pool(Pool::Sqlite(pool)))
    }

    async fn connect_postgres(url: &str) -> Result<Db, DbError> {
        let what = redact_url(url);
        let options = PgConnectOptions::from_str(url).map_err(|source| DbError::Connect {
            what: what.clone(),
            source,
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|source| DbError::Connect { what, source })?;
        Ok(Db::from_pool(Pool::Postgres(pool)))
    }

    fn from_pool(pool: Pool) -> Db {
        Db {
            pool,
            queries: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Applies the migrations. Both databases run the same files: the SQL in
    /// `migrations/` is kept to what SQLite and PostgreSQL both accept.
    pub async fn migrate(&self) -> Result<(), DbError> {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
        match &self.pool {
            Pool::Sqlite(p) => MIGRATOR.run(p).await?,
            Pool::Postgres(p) => MIGRATOR.run(p).await?,
        }
        Ok(())
    }

    /// Which kind of database this is.
    pub fn kind(&self) -> DbKind {
        match self.pool {
            Pool::Sqlite(_) => DbKind::Sqlite,
            Pool::Postgres(_) => DbKind::Postgres,
        }
    }

    /// How many queries ran through this pool (all clones together).
    pub fn query_count(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    pub(crate) fn count_query(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// One round trip, for readiness.
    pub async fn ping(&self) -> Result<(), DbError> {
        on_pool!(self, |p| sqlx::query("SELECT 1")
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// The URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Creates `dir` (mode 0700) and the empty `file` in it (0600) unless they
/// exist, and narrows existing ones to those modes: the database holds
/// password hashes and token hashes. SQLite gives its `-wal` and `-shm` files
/// the database file's mode.
fn private_file_in(dir: &Path, file: &Path) -> std::io::Result<()> {
    use std::fs::{DirBuilder, OpenOptions, Permissions, set_permissions};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    set_permissions(dir, Permissions::from_mode(0o700))?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)?;
    set_permissions(file, Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn the_data_directory_and_the_database_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        // A new directory, and one an operator made with the usual umask.
        let fresh = tmp.path().join("new/api");
        let existing = tmp.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(existing.join(SQLITE_FILE), b"").unwrap();
        std::fs::set_permissions(
            existing.join(SQLITE_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        for dir in [fresh, existing] {
            let db = Db::connect(None, &dir).await.unwrap();
            db.migrate().await.unwrap();
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
            for file in [SQLITE_FILE, "api.sqlite3-wal", "api.sqlite3-shm"] {
                assert_eq!(mode(&dir.join(file)), 0o600, "{file} in {}", dir.display());
            }
        }
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            super::redact_url("postgres://mf:secret@db:5432/mf"),
            "postgres://mf:***@db:5432/mf"
        );
        assert_eq!(super::redact_url("postgres://db/mf"), "postgres://db/mf");
    }
}
