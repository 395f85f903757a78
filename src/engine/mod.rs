//! Database engines: which exist, how a source URL is read, and the [`Source`] and [`Target`]
//! traits through which backups and restores use an engine. Engine specifics stay in their own
//! submodules.

pub mod accounts;
pub mod change;
mod error;
pub mod event_copy;
pub mod event_tables;
pub mod filter;
pub mod follow;
pub mod mysql;
mod mysql_restore;
pub mod pool;
pub mod postgres;
pub mod selection;
pub mod sql_name;
pub mod to_postgres;
mod until;
mod url;

pub use error::SourceError;
pub(crate) use error::{explain_unreachable, io_hint};
pub use mysql_restore::MysqlRestoreOptions;
pub use until::{Until, UntilArgs, parse_time};
pub use url::{Engine, SourceSpec, SourceUrl};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::repo::manifest::Manifest;
use crate::repo::status::{CopyRecord, LogPosition, LogRange, ServerIdentity};
use crate::repo::writer::CopyWriter;
use crate::storage::Destination;

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
    /// When the log no longer reaches back to the parent: take a full copy instead of failing
    /// (`on-log-gap = "full"`).
    pub full_on_log_gap: bool,
    /// Record the accounts and roles with their grants (`users = true`); `None`: the engine's
    /// default (a whole MySQL server does, one database does not).
    pub users: Option<bool>,
    /// What only MySQL and MariaDB sources use.
    pub mysql: MysqlCopyOptions,
    /// What only PostgreSQL sources use.
    pub postgres: PostgresCopyOptions,
}

/// Copy options of PostgreSQL sources.
#[derive(Debug, Clone, Default)]
pub struct PostgresCopyOptions {
    /// Keep a logical replication slot from each full copy on, so incrementals can follow
    /// (`incrementals = true`).
    pub incrementals: bool,
    /// A schema change between copies makes the run take a full copy (`on-ddl = "full"`).
    pub full_on_ddl: bool,
    /// DDL is recorded on the source and replayed in order (`on-ddl = "capture"`).
    pub capture_ddl: bool,
}

/// Copy options of MySQL and MariaDB sources.
#[derive(Debug, Clone, Default)]
pub struct MysqlCopyOptions {
    /// MariaDB: one connection and no global read lock (`consistency = "lock-free"`).
    pub lock_free: bool,
    /// Record `CHECKSUM TABLE` of every table, in the copy's snapshot.
    pub checksums: bool,
    /// The server id cairn uses when it reads the binary log as a replica would; it must differ
    /// from every real replica's. `None`: derived from the source name (docs/mysql.md).
    pub replica_server_id: Option<u32>,
    /// With the accounts, also `root`'s (`users-include-root = true`).
    pub users_include_root: bool,
}

impl CopyOptions {
    /// Whether `error`, met by an incremental, makes the run take a full copy instead.
    pub fn full_instead(&self, error: &SourceError) -> bool {
        match error {
            SourceError::LogGap { .. } => self.full_on_log_gap,
            SourceError::SchemaChanged { .. } => self.postgres.full_on_ddl,
            _ => false,
        }
    }

    /// The setting that makes a run take a full copy after `error`, as the configuration
    /// spells it.
    pub fn full_setting(error: &SourceError) -> &'static str {
        match error {
            SourceError::SchemaChanged { .. } => "on-ddl = \"full\"",
            _ => "on-log-gap = \"full\"",
        }
    }
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            jobs: default_jobs(),
            chunk_bytes: 128 * 1024 * 1024,
            lock_wait: Duration::from_secs(30),
            filters: filter::Filters::default(),
            full_on_log_gap: false,
            users: None,
            mysql: MysqlCopyOptions::default(),
            postgres: PostgresCopyOptions::default(),
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

/// What the source keeps for cairn's incrementals at a cost to itself: a PostgreSQL
/// replication slot pins WAL until the next incremental moves it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogHold {
    /// What kind of thing it is, as the source calls it (`replication slot`).
    pub kind: &'static str,
    /// Its name on the source.
    pub name: String,
    /// Bytes of log the source keeps for it.
    pub retained_bytes: u64,
    /// How far the source may forget (the slot's confirmed position: the newest recorded
    /// copy's parent's end, since an incremental moves the slot to its parent's end first).
    pub position: String,
    /// The server's word on the log it keeps (`reserved`, `extended`, `unreserved`, `lost`).
    pub state: String,
    /// A session is reading it now.
    pub active: bool,
}

/// How far back a source's change log reaches, seen from where its next incremental starts
/// (MySQL/MariaDB: the binary logs the server still has).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogReach {
    /// The oldest log the server still has.
    pub oldest: String,
    /// Where the next incremental starts: the latest copy's end.
    pub from: String,
    /// Whether the server still has the log from there.
    pub reaches: bool,
    /// Log bytes the server keeps from there on (what the next incremental reads).
    pub bytes_since: u64,
    /// How long the server keeps its logs, when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_seconds: Option<u64>,
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
    fn supports_incremental(&self, options: &CopyOptions) -> bool;

    /// Everything the copy checks before it writes, and nothing that changes anything: it
    /// connects, reads settings, catalogs and privileges, and returns notes for a dry run. It
    /// never locks, blocks DDL, starts reading a log or creates a slot. A backup runs it before
    /// it touches the destination; a dry run runs only it.
    ///
    /// # Errors
    /// The error the copy would fail with (login, privileges, settings, a log gap).
    async fn preflight(&self, options: &CopyOptions, planned: Planned<'_>) -> Result<Vec<String>, SourceError>;

    /// Whether the source keeps one position for incrementals (a PostgreSQL slot has one
    /// reader and moves only forward): then every incremental continues from the newest copy,
    /// whatever its run type, or the slot would have moved past its parent.
    fn single_position(&self, options: &CopyOptions) -> bool {
        let _ = options;
        false
    }

    /// What the source keeps for this source's incrementals; `None`: nothing.
    ///
    /// # Errors
    /// Login or the server's error.
    async fn log_hold(&self) -> Result<Option<LogHold>, SourceError> {
        Ok(None)
    }

    /// Drops what the source keeps for this source's incrementals; returns what it held. The
    /// next copy must then be a full one.
    ///
    /// # Errors
    /// Login, privileges or the server's error.
    async fn drop_log_hold(&self) -> Result<Option<LogHold>, SourceError> {
        Ok(None)
    }

    /// Whether the log on the server still reaches back to `from`, where the next incremental
    /// starts; `None` for engines whose log is held for cairn instead (see [`Source::log_hold`]).
    ///
    /// # Errors
    /// Login or the server's error.
    async fn log_reach(&self, from: &LogPosition) -> Result<Option<LogReach>, SourceError> {
        let _ = from;
        Ok(None)
    }

    /// Log bytes the source wrote after `from` (a position one of its replicas holds), for a
    /// replica's lag; `None` where [`Source::log_reach`] measures it (MySQL/MariaDB).
    ///
    /// # Errors
    /// Login or the server's error.
    async fn log_written_since(&self, from: &LogPosition) -> Result<Option<u64>, SourceError> {
        let _ = from;
        Ok(None)
    }

    /// Creates the slot `name` a replica's native subscription streams from, and returns the
    /// publication it subscribes to and the position the slot starts at (changes committed
    /// after it are streamed); `None` for engines whose replicas need no slot.
    ///
    /// # Errors
    /// Login, privileges, a source without cairn's publication, or the server's error.
    async fn create_replica_slot(&self, name: &str) -> Result<Option<(String, LogPosition)>, SourceError> {
        let _ = name;
        Ok(None)
    }

    /// Drops the slot `name` of a seed that failed before its replica used it.
    ///
    /// # Errors
    /// Login or the server's error.
    async fn drop_replica_slot(&self, name: &str) -> Result<(), SourceError> {
        let _ = name;
        Ok(())
    }

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
    /// Where replay of the incrementals stops; `None`: at the end of the chain.
    pub until: Option<Until>,
    /// Continue an interrupted replay from the position the target recorded.
    pub resume: bool,
    /// What only MySQL and MariaDB targets use.
    pub mysql: MysqlRestoreOptions,
    /// The tables restored, and their names (empty: everything).
    pub selection: selection::Selection,
    /// Whether the copy's accounts are created on the target.
    pub users: accounts::UsersChoice,
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
    /// Source database → target database (MySQL/MariaDB): where each database of the copy went.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub databases: BTreeMap<String, String>,
    /// Why the requested `--until` point lies beyond the chain, which was then restored to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_not_covered: Option<String>,
    /// The copy's accounts: created, replaced or kept (names only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<accounts::AccountOutcome>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// A table to read back for `cairn verify --deep`: where it is on the target, and the columns
/// its copy stored (in the engine's own description, as the manifest records them).
#[derive(Debug, Clone)]
pub struct TableToDigest {
    pub container: String,
    pub table: String,
    pub columns: serde_json::Value,
}

/// A table's rows as read back: their count and [`crate::streams::RowDigest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDigest {
    pub rows: u64,
    pub digest: String,
}

/// What a native handover needs: the source to follow (with its password), where to start, and
/// the databases the target holds.
#[derive(Debug)]
pub struct NativeHandover<'a> {
    pub source: &'a SourceUrl,
    pub position: &'a LogPosition,
    pub databases: &'a [String],
    /// MySQL: `mysql` or `mariadb`, as the copy recorded its server (their statements differ).
    pub vendor: Option<String>,
    /// PostgreSQL: the slot on the source the subscription streams from, and the publication.
    pub slot: Option<String>,
    pub publication: Option<String>,
}

/// A target's native replication as it stood after the handover.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplicationState {
    pub io_running: bool,
    pub sql_running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_behind: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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

    /// Reads each of `tables` back from the target in the format a copy stores rows in, and
    /// counts and digests its rows as the backup did (`cairn verify --deep`).
    ///
    /// # Errors
    /// Connection or query errors naming the table.
    async fn digest_tables(&self, tables: &[TableToDigest]) -> Result<Vec<TableDigest>, SourceError>;

    /// Drops the scratch databases `names` of the target's server.
    ///
    /// # Errors
    /// Connection or query errors naming the database.
    async fn drop_databases(&self, names: &[String]) -> Result<(), SourceError>;

    /// The target's server id, which must differ from its source's for native replication.
    ///
    /// # Errors
    /// Login or the server's error.
    async fn server_id(&self) -> Result<Option<String>, SourceError> {
        Ok(None)
    }

    /// Refuses a target that already replicates from a source, before a seed writes to it.
    ///
    /// # Errors
    /// [`SourceError::Unsupported`] naming what to stop, login or the server's error.
    async fn check_not_replicating(&self) -> Result<(), SourceError> {
        Ok(())
    }

    /// Starts native replication from `handover.source` at `handover.position`, and waits
    /// until it runs.
    ///
    /// # Errors
    /// [`SourceError::Unsupported`] for engines without it yet; the server's error naming the step.
    async fn hand_over(&self, handover: &NativeHandover<'_>) -> Result<ReplicationState, SourceError> {
        let _ = handover;
        Err(SourceError::Unsupported(
            "a native handover is not available for this engine yet (use --handover none)".into(),
        ))
    }

    /// Records on the target what cairn's applier needs to follow the source from where the
    /// restore left it (`replica seed --handover cairn`).
    ///
    /// # Errors
    /// [`SourceError::Unsupported`] for engines without the applier yet; the target's error.
    async fn prepare_follow(&self, setup: &follow::FollowSetup<'_>) -> Result<(), SourceError> {
        let _ = setup;
        Err(SourceError::Unsupported(
            "cairn's own applier is not available for this engine yet (use --handover native or none)".into(),
        ))
    }

    /// Follows `source`'s live log into the target until stopped (`cairn replica run`).
    ///
    /// # Errors
    /// A target that was not seeded for the applier, a source whose log no longer reaches the
    /// target's position, a validation that finds the target diverged, or what stopped the
    /// applier (the failing transaction named).
    async fn follow(
        &self,
        source: &SourceSpec,
        options: &follow::FollowOptions,
    ) -> Result<follow::FollowReport, SourceError> {
        let _ = (source, options);
        Err(SourceError::Unsupported(
            "cairn's own applier is not available for this engine yet".into(),
        ))
    }

    /// The replicas cairn's applier keeps on this target.
    ///
    /// # Errors
    /// Login or the server's error.
    async fn replicas(&self) -> Result<Vec<follow::ReplicaState>, SourceError> {
        Ok(Vec::new())
    }

    /// Asks the applier of `source`'s replica on this target to stop after the transaction in
    /// flight; `None` when the target holds no such replica.
    ///
    /// # Errors
    /// Login or the server's error.
    async fn request_stop(&self, source: &str) -> Result<Option<follow::ReplicaState>, SourceError> {
        let _ = source;
        Ok(None)
    }

    /// Ends `source`'s replica on this target for good (`cairn replica detach`): sequences set
    /// past their columns' values, foreign keys made, cairn's bookkeeping removed.
    ///
    /// # Errors
    /// [`SourceError::Unsupported`] for replicas without it; no such replica, a running applier
    /// ([`SourceError::Locked`]), or the target's error.
    async fn detach(&self, source: &str) -> Result<follow::Detached, SourceError> {
        let _ = source;
        Err(SourceError::Unsupported(
            "replica detach is for PostgreSQL replicas of MySQL/MariaDB sources; stop a same-engine replica with \
             `cairn replica stop`"
                .into(),
        ))
    }

    /// Copies the chosen tables of `source` (database, and a table or every one) again into its
    /// replica on this target at a new log position, where the applier rejoins their changes
    /// (`cairn replica reload`).
    ///
    /// # Errors
    /// [`SourceError::Unsupported`] for replicas without it; no such replica or table, a
    /// running applier ([`SourceError::Locked`]), or either server's error.
    async fn reload(
        &self,
        source: &SourceSpec,
        selection: &[(String, Option<String>)],
        lock_wait: std::time::Duration,
    ) -> Result<follow::Reloaded, SourceError> {
        let _ = (source, selection, lock_wait);
        Err(SourceError::Unsupported(
            "replica reload is for PostgreSQL replicas of MySQL/MariaDB sources; seed a same-engine replica again \
             instead (cairn replica seed --clean)"
                .into(),
        ))
    }
}

/// Checks that each copy of a chain starts exactly where its parent ended.
///
/// # Errors
/// [`SourceError::Damaged`] naming the copy after the hole.
pub fn check_chain(manifests: &[Manifest]) -> Result<(), SourceError> {
    for pair in manifests.windows(2) {
        let (before, after) = (&pair[0].copy, &pair[1].copy);
        if after.log_range.start != before.log_range.end {
            return Err(SourceError::Damaged(format!(
                "copy {} starts at {} but its parent {} ended at {}: the chain has a hole",
                after.id, after.log_range.start, before.id, before.log_range.end
            )));
        }
    }
    Ok(())
}

/// Reads back every log file of a chain's incrementals as a restore does before it replays:
/// fetched, MD5 checked, every event's (or message's) framing and own checksum, the stop point
/// (none: the chain's end). Touches no database.
///
/// # Errors
/// [`SourceError::Damaged`] naming the copy and file.
pub async fn check_logs(engine: Engine, input: &RestoreInput) -> Result<(), SourceError> {
    match engine {
        Engine::Mysql => mysql::check_logs(input).await,
        Engine::Postgres => postgres::check_logs(input).await,
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
/// The engine that restores copies of `copy_engine` into `target`: its own engine's, or for a
/// MySQL/MariaDB copy into PostgreSQL, the translation (docs/mysql-to-postgres.md).
///
/// # Errors
/// A PostgreSQL copy into MySQL, which cairn does not translate.
pub fn open_target_for(target: &SourceUrl, copy_engine: Engine) -> Result<Arc<dyn Target>, SourceError> {
    match (copy_engine, target.engine) {
        (Engine::Mysql, Engine::Postgres) => Ok(Arc::new(to_postgres::MysqlIntoPostgres::new(target.clone()))),
        (Engine::Postgres, Engine::Mysql) => Err(SourceError::Unsupported(
            "a PostgreSQL copy cannot be restored into MySQL/MariaDB".into(),
        )),
        _ => open_target(target),
    }
}

pub fn open_target(target: &SourceUrl) -> Result<Arc<dyn Target>, SourceError> {
    match target.engine {
        Engine::Postgres => Ok(Arc::new(postgres::PostgresTarget::new(target.clone()))),
        Engine::Mysql => Ok(Arc::new(mysql::MysqlTarget::new(target.clone()))),
    }
}
