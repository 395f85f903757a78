//! Errors of the engines, each naming the database and what was being done, and the hints a
//! failed connection gets.

use super::{Engine, SourceUrl};
use crate::repo::RepoError;
use crate::storage::DestinationError;

/// Errors of engines; each names the database and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot connect to {database}: {detail}")]
    Unreachable { database: String, detail: String },
    #[error("database {database} does not exist: {detail}")]
    NoDatabase { database: String, detail: String },
    #[error(
        "TLS with {database} failed: {detail}; check the TLS settings in the URL (PostgreSQL: sslmode, sslrootcert; \
         MySQL: ssl-mode, ssl-ca)"
    )]
    Tls { database: String, detail: String },
    #[error("{database} refused the login: {detail}; check the user and password")]
    Authentication { database: String, detail: String },
    #[error("{database}: {doing}: permission denied ({detail}); grant the privileges listed in docs/postgres.md")]
    Privilege {
        database: String,
        doing: String,
        detail: String,
    },
    #[error("{database}: {doing}: {detail}; another session holds a conflicting lock, try again when it is done")]
    Locked {
        database: String,
        doing: String,
        detail: String,
    },
    #[error("{database}: {doing}: {detail}")]
    Database {
        database: String,
        doing: String,
        detail: String,
    },
    /// An established session's connection was lost: trying again later may succeed.
    #[error("{database}: {doing}: the connection was lost: {detail}")]
    Disconnected {
        database: String,
        doing: String,
        detail: String,
    },
    /// A replica's target no longer holds what its source held at the same position.
    #[error("{0}")]
    Diverged(String),
    #[error("{tool}: {detail}")]
    Tool { tool: String, detail: String },
    #[error(
        "target database {database} is not empty ({detail}); restore into an empty database, or pass --clean to drop its contents first"
    )]
    TargetNotEmpty { database: String, detail: String },
    #[error("{cause}\nthe restore stopped part way: {target} is incomplete; drop it, or restore again with --clean")]
    Incomplete { target: String, cause: Box<SourceError> },
    #[error(
        "{cause}\nthe replay stopped: {target} holds the full copy and every transaction up to the position recorded \
         in {progress}; fix the cause and run the same restore with --resume"
    )]
    ReplayStopped {
        target: String,
        /// Where the target records the replay's position.
        progress: String,
        cause: Box<SourceError>,
    },
    #[error("--resume: there is nothing to resume in {target}: {detail}")]
    NothingToResume { target: String, detail: String },
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "source {source_name}: the source's log no longer reaches back to where copy {parent} ended ({needed}): \
         {detail}; an incremental would have a hole. Take a full copy (--type full), or set on-log-gap = \"full\" for \
         this source, and keep the log longer than the time between copies (binary log retention on MySQL/MariaDB, \
         max_slot_wal_keep_size on PostgreSQL)"
    )]
    LogGap {
        source_name: String,
        parent: String,
        needed: String,
        detail: String,
    },
    #[error(
        "source {source_name}: the schema changed since copy {parent} ended: {detail}. Logical decoding does not \
         carry schema changes, so this incremental would not restore to what the source was. Take a full copy \
         (--type full); set on-ddl = \"full\" for this source to do so by itself, or on-ddl = \"capture\" to \
         record DDL and replay it"
    )]
    SchemaChanged {
        source_name: String,
        parent: String,
        detail: String,
    },
    #[error("{0}")]
    Damaged(String),
    #[error(transparent)]
    Destination(#[from] DestinationError),
    /// The repository's status, lock or manifest, with its own error kept.
    #[error(transparent)]
    Repo(RepoError),
    #[error("{what}: a worker stopped: {source}")]
    Worker {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl From<RepoError> for SourceError {
    fn from(error: RepoError) -> Self {
        match error {
            RepoError::Destination(e) => SourceError::Destination(e),
            RepoError::Damaged(text) => SourceError::Damaged(text),
            other => SourceError::Repo(other),
        }
    }
}

/// Adds what to check to a failed connection: the kind of the operating system's error when it
/// has one, and whether the host name resolves at all (a typed answer, unlike the resolver's
/// message).
pub(crate) async fn explain_unreachable(url: &SourceUrl, error: SourceError) -> SourceError {
    let SourceError::Unreachable { database, detail } = error else {
        return error;
    };
    let address = url.without_password();
    let host = address.host_str().unwrap_or_default().to_string();
    let port = address.port().unwrap_or(match url.engine {
        Engine::Postgres => 5432,
        Engine::Mysql => 3306,
    });
    let hint = if tokio::net::lookup_host((host.as_str(), port)).await.is_err() {
        format!("the host name {host:?} does not resolve: check it and DNS")
    } else {
        format!("check that {host}:{port} is the server's address, that it runs, and the network between")
    };
    SourceError::Unreachable {
        database,
        detail: format!("{detail}; {hint}"),
    }
}

/// What the operating system's error inside a driver's error says to check, if it says.
pub(crate) fn io_hint(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let io = std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref::<std::io::Error>())?;
    match io.kind() {
        std::io::ErrorKind::ConnectionRefused => Some("nothing accepts connections there"),
        std::io::ErrorKind::TimedOut => Some("no answer in time"),
        _ => None,
    }
}

impl SourceError {
    /// The error of reading a stored file: the destination's own error when it could not deliver
    /// the bytes (so an unreachable store is a temporary failure), damage otherwise.
    pub fn from_read(error: std::io::Error) -> SourceError {
        RepoError::from_read(error).into()
    }
}
