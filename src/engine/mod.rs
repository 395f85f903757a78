//! Database engines: which exist, how a source URL is read, and the [`Source`] and [`Target`]
//! traits through which backups and restores use an engine. Engine specifics stay in their own
//! submodules.

pub mod change;
pub mod filter;
pub mod mysql;
pub mod pool;
pub mod postgres;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::exit::{Classify, ExitStatus};
use crate::repo::RepoError;
use crate::repo::manifest::Manifest;
use crate::repo::status::{CopyRecord, LogPosition, LogRange, ServerIdentity};
use crate::repo::writer::CopyWriter;
use crate::secret::{MASK, Secret};
use crate::storage::{Destination, DestinationError};

/// The database engines cairn backs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Postgres => "PostgreSQL",
            Engine::Mysql => "MySQL/MariaDB",
        })
    }
}

/// A source database URL with its password held apart, so it can be shown safely.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceUrl {
    pub engine: Engine,
    /// The URL without its password.
    url: url::Url,
    pub password: Option<Secret>,
}

impl fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceUrl({self})")
    }
}

impl fmt::Display for SourceUrl {
    /// The URL with the password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.password.is_some() {
            let mut shown = self.url.clone();
            let _ = shown.set_password(Some(MASK));
            write!(f, "{shown}")
        } else {
            write!(f, "{}", self.url)
        }
    }
}

impl SourceUrl {
    /// Parses `postgres://`, `postgresql://`, `mysql://` or `mariadb://` URLs.
    ///
    /// # Errors
    /// A sentence saying what is wrong; it never contains the password.
    pub fn parse(text: &str) -> Result<Self, String> {
        for scheme in ["postgres", "postgresql", "mysql", "mariadb"] {
            if let Some(rest) = text.strip_prefix(scheme)
                && !rest.starts_with("://")
                && (rest.starts_with(':') || rest.starts_with('/'))
            {
                return Err(format!(
                    "malformed URL: {scheme} must be followed by ://, e.g. {scheme}://user@host/database"
                ));
            }
        }
        let mut url = url::Url::parse(text).map_err(|e| format!("not a valid URL ({e})"))?;
        let engine = match url.scheme() {
            "postgres" | "postgresql" => Engine::Postgres,
            "mysql" | "mariadb" => Engine::Mysql,
            other => {
                return Err(format!(
                    "unsupported scheme {other:?}: use postgres://, postgresql://, mysql:// or mariadb://"
                ));
            }
        };
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the host is missing, e.g. postgres://user@db1:5432/app".into());
        }
        let password = url.password().map(|p| {
            Secret::new(
                url::form_urlencoded::parse(format!("p={p}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default(),
            )
        });
        let _ = url.set_password(None);
        Ok(SourceUrl { engine, url, password })
    }

    /// Gives a URL typed on the command line its password: from `password_file`, else from the
    /// engine's usual environment variable (`PGPASSWORD`, `MYSQL_PWD`) when the URL has none.
    /// A password inside the URL works, with a warning: every user of the machine sees it in the
    /// process list.
    ///
    /// # Errors
    /// A sentence naming `flag` when the password is given twice or the file cannot be read.
    pub fn complete_from_command_line(
        &mut self,
        flag: &str,
        password_file: Option<&std::path::Path>,
    ) -> Result<(), String> {
        match (&self.password, password_file) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{flag}: give the password once, in the URL or with a password file"
                ));
            }
            (Some(_), None) => tracing::warn!(
                "the password in {flag} is visible to every user of this machine (ps, /proc); use a password file \
                 or the {} environment variable",
                self.password_variable()
            ),
            (None, Some(path)) => {
                self.password = Some(
                    crate::secret::read_file(path)
                        .map_err(|e| format!("{flag}: cannot read secret file {}: {e}", path.display()))?,
                );
            }
            (None, None) => {
                self.password = std::env::var(self.password_variable())
                    .ok()
                    .filter(|p| !p.is_empty())
                    .map(Secret::new);
            }
        }
        Ok(())
    }

    /// The environment variable this engine's own clients read a password from.
    pub fn password_variable(&self) -> &'static str {
        match self.engine {
            Engine::Postgres => "PGPASSWORD",
            Engine::Mysql => "MYSQL_PWD",
        }
    }

    /// The database named in the URL's path, if any.
    pub fn database(&self) -> Option<String> {
        let path = self.url.path().trim_start_matches('/');
        (!path.is_empty()).then(|| {
            url::form_urlencoded::parse(format!("d={path}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
    }

    /// Points the URL at another database of the same server.
    pub fn set_database(&mut self, database: &str) {
        let encoded: String = url::form_urlencoded::byte_serialize(database.as_bytes()).collect();
        self.url.set_path(&format!("/{encoded}"));
    }

    /// The URL without its password, for drivers that take the password separately.
    pub fn without_password(&self) -> &url::Url {
        &self.url
    }

    /// A source name derived from the URL when none is given: `host-port[-database]`,
    /// lowercased, with every other character turned into `-`.
    pub fn default_name(&self) -> String {
        let host = self.url.host_str().unwrap_or("source");
        let port = self.url.port().map(|p| p.to_string()).unwrap_or_else(|| {
            match self.engine {
                Engine::Postgres => "5432",
                Engine::Mysql => "3306",
            }
            .to_string()
        });
        let database = self.url.path().trim_start_matches('/');
        let raw = if database.is_empty() {
            format!("{host}-{port}")
        } else {
            format!("{host}-{port}-{database}")
        };
        let mut name: String = raw
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        while name.contains("--") {
            name = name.replace("--", "-");
        }
        name.trim_matches('-').to_string()
    }
}

/// A configured source: its name and where it is.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    pub url: SourceUrl,
}

impl SourceSpec {
    pub fn engine(&self) -> Engine {
        self.url.engine
    }
}

/// The default number of parallel connections: the CPUs of this machine, at most 8.
pub fn default_jobs() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(2)
        .clamp(1, 8)
}

/// How a full copy is taken.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Parallel connections reading data.
    pub jobs: u32,
    /// Tables larger than this (on disk) are split into chunks of about this size.
    pub chunk_bytes: u64,
    /// How long to wait for a lock on a table before giving up.
    pub lock_wait: Duration,
    /// Which schemas and tables to copy.
    pub filters: filter::Filters,
    /// MariaDB: one connection and no global read lock (`consistency = "lock-free"`).
    pub lock_free: bool,
    /// MySQL: record `CHECKSUM TABLE` of every table, in the copy's snapshot.
    pub checksums: bool,
    /// MySQL: the server id cairn uses when it reads the binary log as a replica would; it must
    /// differ from every real replica's. `None`: derived from the source name (docs/mysql.md).
    pub replica_server_id: Option<u32>,
    /// When the log no longer reaches back to the parent: take a full copy instead of failing
    /// (`on-log-gap = "full"`).
    pub full_on_log_gap: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            jobs: default_jobs(),
            chunk_bytes: 128 * 1024 * 1024,
            lock_wait: Duration::from_secs(30),
            filters: filter::Filters::default(),
            lock_free: false,
            checksums: false,
            replica_server_id: None,
            full_on_log_gap: false,
        }
    }
}

/// What an engine reports about a copy it took; the rest of the record is filled by the job.
#[derive(Debug, Clone)]
pub struct TakenCopy {
    pub log_range: LogRange,
    pub server: ServerIdentity,
    pub details: Map<String, Value>,
}

/// What a run is about to take, for [`Source::preflight`].
#[derive(Debug, Clone, Copy)]
pub enum Planned<'a> {
    Full,
    Incremental { parent: &'a CopyRecord },
}

/// An engine reading a source database.
#[async_trait]
pub trait Source: Send + Sync {
    /// Whether this engine can take incremental copies.
    fn supports_incremental(&self) -> bool;

    /// Everything the copy checks before it writes, and nothing that changes anything: it
    /// connects, reads settings, catalogs and privileges, and returns notes for a dry run. It
    /// never locks, blocks DDL, starts reading a log or creates a slot. A backup runs it before
    /// it touches the destination; a dry run runs only it.
    ///
    /// # Errors
    /// The error the copy would fail with (login, privileges, settings, a log gap).
    async fn preflight(&self, options: &CopyOptions, planned: Planned<'_>) -> Result<Vec<String>, SourceError>;

    /// Takes a consistent full copy, writing its files through `writer`.
    async fn full_copy(&self, writer: &CopyWriter, options: &CopyOptions) -> Result<TakenCopy, SourceError>;

    /// Takes the changes since `parent` ended, writing their files through `writer`.
    ///
    /// # Errors
    /// [`SourceError::LogGap`] when the log no longer reaches back to the parent's end.
    async fn incremental_copy(
        &self,
        writer: &CopyWriter,
        options: &CopyOptions,
        parent: &CopyRecord,
    ) -> Result<TakenCopy, SourceError> {
        let _ = (writer, options);
        Err(SourceError::Unsupported(format!(
            "incremental copies after {} are not available for this engine",
            parent.id
        )))
    }
}

/// What a restore replays.
#[derive(Debug, Clone)]
pub struct RestoreInput {
    pub destination: Arc<dyn Destination>,
    pub source: String,
    /// The manifests of the chain, full first, each verified against the status.
    pub manifests: Vec<Manifest>,
    pub jobs: u32,
    /// Drop what the target holds before restoring.
    pub clean: bool,
    /// Databases restored under another name (MySQL).
    pub rename_databases: Vec<(String, String)>,
    /// Keep the restore out of the target's binary log (MySQL `sql_log_bin = 0`).
    pub no_binlog: bool,
    /// Compare `CHECKSUM TABLE` of every restored table with the copy's (MySQL).
    pub verify_checksums: bool,
    /// Where replay of the incrementals stops; `None`: at the end of the chain.
    pub until: Option<Until>,
    /// Continue an interrupted replay from the position the target recorded.
    pub resume: bool,
}

/// A point in the source's history where a replay stops, after the last whole transaction
/// before it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Until {
    /// Every transaction that started at or before this time.
    Time(chrono::DateTime<chrono::Utc>),
    /// Up to and including this transaction.
    Gtid(String),
    /// Every transaction that ended at or before this position.
    Position { file: String, position: u64 },
}

impl fmt::Display for Until {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Until::Time(time) => write!(f, "the last transaction started at or before {}", time.to_rfc3339()),
            Until::Gtid(gtid) => write!(f, "transaction {gtid}"),
            Until::Position { file, position } => {
                write!(f, "the last transaction ending at or before {file}:{position}")
            }
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    pub target: String,
    pub tables: u64,
    pub rows: u64,
    pub files: u64,
    pub seconds: f64,
    /// Incremental copies replayed on top of the full one.
    #[serde(skip_serializing_if = "is_zero")]
    pub incrementals: u64,
    /// Transactions and row changes applied from the incrementals.
    #[serde(skip_serializing_if = "is_zero")]
    pub transactions: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub row_changes: u64,
    /// The source's log position the restored data corresponds to: a replica continues from here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<LogPosition>,
    /// Why the requested `--until` point lies beyond the chain, which was then restored to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_not_covered: Option<String>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// An engine writing into a target database.
#[async_trait]
pub trait Target: Send + Sync {
    /// Everything the restore checks before it loads, and nothing that changes the target: it
    /// connects and reads (the target's contents, the replay's progress, privileges), and
    /// returns notes for a dry run. It never creates, drops or kills anything.
    ///
    /// # Errors
    /// The error the restore would fail with before loading (login, a non-empty target, …).
    async fn preflight(&self, input: &RestoreInput) -> Result<Vec<String>, SourceError>;

    async fn restore(&self, input: &RestoreInput) -> Result<RestoreReport, SourceError>;

    /// Lines for `restore --dry-run` about what the restore would replay and where it would stop,
    /// found without touching the target.
    ///
    /// # Errors
    /// Damaged files, or a stop point the chain does not hold.
    async fn preview(&self, input: &RestoreInput) -> Result<Vec<String>, SourceError> {
        let _ = input;
        Ok(Vec::new())
    }
}

/// The engine reading `spec`.
///
/// # Errors
/// None today; engines that need checks before any I/O report them here.
pub fn open(spec: &SourceSpec) -> Result<Arc<dyn Source>, SourceError> {
    match spec.engine() {
        Engine::Postgres => Ok(Arc::new(postgres::PostgresSource::new(spec.clone()))),
        Engine::Mysql => Ok(Arc::new(mysql::MysqlSource::new(spec.clone()))),
    }
}

/// The engine writing into `target`.
///
/// # Errors
/// None today; engines that need checks before any I/O report them here.
pub fn open_target(target: &SourceUrl) -> Result<Arc<dyn Target>, SourceError> {
    match target.engine {
        Engine::Postgres => Ok(Arc::new(postgres::PostgresTarget::new(target.clone()))),
        Engine::Mysql => Ok(Arc::new(mysql::MysqlTarget::new(target.clone()))),
    }
}

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
         in cairn_replay.progress; fix the cause and run the same restore with --resume"
    )]
    ReplayStopped { target: String, cause: Box<SourceError> },
    #[error("--resume: there is nothing to resume in {target}: {detail}")]
    NothingToResume { target: String, detail: String },
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "source {source_name}: the binary log no longer reaches back to where copy {parent} ended ({needed}): {detail}; \
         an incremental would have a hole. Take a full copy (--type full), or set on-log-gap = \"full\" for this \
         source, and keep binary logs longer than the time between copies"
    )]
    LogGap {
        source_name: String,
        parent: String,
        needed: String,
        detail: String,
    },
    #[error("{0}")]
    Damaged(String),
    #[error(transparent)]
    Destination(#[from] DestinationError),
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
            other => SourceError::Damaged(other.to_string()),
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

impl Classify for SourceError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            SourceError::Authentication { .. }
            | SourceError::Tls { .. }
            | SourceError::NoDatabase { .. }
            | SourceError::Privilege { .. }
            | SourceError::Tool { .. }
            | SourceError::TargetNotEmpty { .. }
            | SourceError::NothingToResume { .. }
            | SourceError::Unsupported(_) => ExitStatus::Usage,
            SourceError::Unreachable { .. } | SourceError::Locked { .. } => ExitStatus::Temporary,
            SourceError::Destination(e) => e.exit_status(),
            SourceError::Incomplete { cause, .. } | SourceError::ReplayStopped { cause, .. } => cause.exit_status(),
            SourceError::Database { .. }
            | SourceError::Damaged(_)
            | SourceError::LogGap { .. }
            | SourceError::Worker { .. } => ExitStatus::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_password_apart() {
        let url = SourceUrl::parse("postgres://backup:p%40ss@DB1.example:6543/App").unwrap();
        assert_eq!(url.engine, Engine::Postgres);
        assert_eq!(url.password.as_ref().unwrap().expose(), "p@ss");
        let shown = url.to_string();
        assert!(
            !shown.contains("p%40ss") && !shown.contains("p@ss") && shown.contains(MASK),
            "{shown}"
        );
        assert!(url.without_password().password().is_none());
        assert_eq!(url.default_name(), "db1-example-6543-app");
        assert_eq!(
            SourceUrl::parse("mariadb://root@127.0.0.1").unwrap().default_name(),
            "127-0-0-1-3306"
        );
    }

    #[test]
    fn bad_urls_are_explained() {
        assert!(
            SourceUrl::parse("oracle://x")
                .unwrap_err()
                .contains("unsupported scheme \"oracle\"")
        );
        assert!(SourceUrl::parse("not a url").unwrap_err().contains("not a valid URL"));
        for malformed in ["postgres//u@h/db", "postgres:/u@h/db", "mysql:u@h"] {
            let err = SourceUrl::parse(malformed).unwrap_err();
            assert!(err.contains("malformed URL"), "{malformed}: {err}");
        }
        let err = SourceUrl::parse("mysql://root:topsecret@/db").unwrap_err();
        assert!(!err.contains("topsecret"), "{err}");
    }
}
