//! The contract of cairn's own continuous applier (`cairn replica run`): what a seed leaves on
//! the target for it, what a run is asked for and reports, and a replica's state as
//! `cairn replica status` shows it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::filter::Filters;
use crate::repo::model::LogPosition;

/// What a seed with `--handover cairn` records on the target, so that the applier needs nothing
/// but the source and the target to continue.
#[derive(Debug)]
pub struct FollowSetup<'a> {
    /// The configured source's name.
    pub source: &'a str,
    /// Where the restore left the target: the applier continues right after it.
    pub position: &'a LogPosition,
    /// Source database → target database, for every database the copy holds.
    pub databases: &'a BTreeMap<String, String>,
    /// The copy's filters, which the applier keeps applying.
    pub filters: &'a Filters,
    /// The chain's full copy.
    pub full_copy: &'a str,
    /// The source server the copies came from (`server_uuid` or `server_id N`): the applier
    /// refuses to follow another server, whose log positions mean something else.
    pub server_identity: &'a str,
    /// PostgreSQL: the slot on the source the applier reads, and its publication.
    pub slot: Option<&'a str>,
    pub publication: Option<&'a str>,
}

/// How `cairn replica run` runs.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Check the source and the target and print the plan, then stop without applying.
    pub dry_run: bool,
    /// Stop once everything the source had logged when the run started is applied.
    pub catch_up: bool,
    /// Stops the applier after the source transaction in flight (SIGINT, SIGTERM).
    pub stop: CancellationToken,
    /// Reconnections after a lost connection before the run gives up; `None`: forever.
    pub reconnect_limit: Option<u32>,
    /// The longest wait between two reconnection attempts.
    pub max_wait: Duration,
    /// Rows compared at each end of each table by the start-up validation.
    pub sample_rows: u32,
    /// The server id the applier reads the source's log with (MySQL/MariaDB).
    pub replica_server_id: Option<u32>,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            dry_run: false,
            catch_up: false,
            stop: CancellationToken::new(),
            reconnect_limit: None,
            max_wait: Duration::from_secs(30),
            sample_rows: 100,
            replica_server_id: None,
        }
    }
}

/// What a run of the applier did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowReport {
    pub source: String,
    pub target: String,
    /// Where it started and where it stopped.
    pub started_at: Option<LogPosition>,
    pub position: Option<LogPosition>,
    pub transactions: u64,
    pub row_changes: u64,
    pub reconnections: u32,
    /// What the start-up validation compared, one line per table or note.
    pub validation: Vec<String>,
    /// Why it stopped: `dry run`, `caught up`, `stop requested`, `signal`.
    pub stopped: String,
}

/// What `cairn replica detach` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Detached {
    pub source: String,
    pub target: String,
    /// Identity sequences set past their column's largest value.
    pub sequences: u64,
    /// Foreign keys added, and those left `NOT VALID` (rows reference nothing), by name.
    pub foreign_keys_added: u64,
    pub foreign_keys_not_valid: Vec<String>,
}

/// What `cairn replica reload` did.
#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    pub source: String,
    pub target: String,
    /// The source's tables copied again, as `database.table`.
    pub tables: Vec<String>,
    pub rows: u64,
    /// Where in the source's log they were copied: the applier applies their changes from there.
    pub position: crate::repo::model::LogPosition,
    /// Tables of a reloaded database the source no longer has, dropped from the replica.
    pub dropped: Vec<String>,
    /// Foreign keys of other tables that referenced a reloaded one, dropped; `replica detach`
    /// makes them again.
    pub foreign_keys_dropped: Vec<String>,
}

/// One replica on a target, as `cairn replica status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicaState {
    pub source: String,
    /// The target databases it applies to.
    pub databases: String,
    /// MySQL/MariaDB: source database → target database, where a seed renamed them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub renamed: BTreeMap<String, String>,
    pub full_copy: String,
    /// An applier holds the replica's lease now.
    pub running: bool,
    /// The applier's host and process id, as it last recorded them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applier: Option<String>,
    /// The source position applied so far.
    pub applied: Option<LogPosition>,
    /// The end of the source's log as the applier last read it while no transaction was part way:
    /// everything before it is applied, including events that end no transaction (a rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caught_up_to: Option<LogPosition>,
    /// When the last applied source transaction was written on the source (UTC, RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_event_at: Option<String>,
    /// The applier's last sign of life (UTC, RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<String>,
    pub transactions: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<String>,
    pub stop_requested: bool,
}

/// Why a session of an applier ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    CaughtUp,
    StopRequested,
    Signal,
    DryRun,
}

impl Ended {
    /// As the report says it.
    pub fn describe(self) -> &'static str {
        match self {
            Ended::CaughtUp => "caught up",
            Ended::StopRequested => "stop requested",
            Ended::Signal => "signal",
            Ended::DryRun => "dry run",
        }
    }
}

/// Errors after which an applier reconnects: the session was lost, the server is not there yet,
/// or a lock stood in the way. Everything else stops it.
pub fn reconnects_after(error: &super::SourceError) -> bool {
    use super::SourceError;
    matches!(
        error,
        SourceError::Disconnected { .. } | SourceError::Unreachable { .. } | SourceError::Locked { .. }
    )
}

/// The waits between an applier's reconnections: growing from half a second up to the
/// options' longest wait, as many as the options allow.
pub fn reconnect_policy(options: &FollowOptions) -> crate::retry::Retry {
    let retries = options.reconnect_limit.map_or(usize::MAX, |n| n as usize);
    crate::retry::Retry::exponential(Duration::from_millis(500), options.max_wait, retries)
}

/// One table as the start-up validation sees it on one side: its row count and its first and
/// last rows by key (rows of the engine's own type).
#[derive(Debug, PartialEq)]
pub struct TableSample<R> {
    pub count: u64,
    pub first: Vec<R>,
    pub last: Vec<R>,
}

impl<R: PartialEq> TableSample<R> {
    /// What differs between the source (`self`) and the target, in words.
    pub fn differs(&self, target: &Self) -> Option<String> {
        if self.count != target.count {
            return Some(format!(
                "{} rows on the source, {} on the target",
                self.count, target.count
            ));
        }
        for (which, source, target) in [
            ("first", &self.first, &target.first),
            ("last", &self.last, &target.last),
        ] {
            if let Some(i) = (0..source.len().max(target.len())).find(|&i| source.get(i) != target.get(i)) {
                return Some(format!(
                    "the {which} rows by key differ (row {} of the {which} {})",
                    i + 1,
                    source.len()
                ));
            }
        }
        None
    }

    /// The validation's line for a table found equal.
    pub fn equal_line(&self, name: &str, keyed: bool) -> String {
        match keyed {
            false => format!("{name}: {} rows (no primary key: rows counted only)", self.count),
            true => format!(
                "{name}: {} rows, keys and the first and last {} rows equal",
                self.count,
                self.first.len().max(self.last.len())
            ),
        }
    }
}
