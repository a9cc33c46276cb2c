//! Why the server could not start or stop cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::registry::RegistryError;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the database in the data directory could not be opened: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0} is locked: another server is using this data directory")]
    Locked(PathBuf),
    #[error("the database schema could not be migrated: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("could not create a certificate: {0}")]
    Certificate(#[source] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid CRD: {0}")]
    Registry(#[from] RegistryError),
    #[error("could not build a client: {0}")]
    Client(#[from] kube::Error),
    #[error("could not create the initial namespaces: {0}")]
    Bootstrap(String),
}
