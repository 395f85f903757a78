//! Event tables (append-only, ordered by a key): what the copy (`event_copy.rs`) asks of each
//! engine — an [`EventStore`], one session on one database's table — its options and its report.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::SourceError;

/// Rows read from the source, in the form the engine inserts them.
pub enum Batch {
    /// MySQL/MariaDB: the rows' values, in column order, with the column names.
    Mysql {
        columns: Vec<String>,
        rows: Vec<Vec<mysql_async::Value>>,
        last_key: Option<String>,
    },
    /// PostgreSQL: the rows as one JSON array (what `json_populate_recordset` reads).
    Postgres {
        json: String,
        rows: u64,
        last_key: Option<String>,
    },
}

impl Batch {
    pub fn len(&self) -> u64 {
        match self {
            Batch::Mysql { rows, .. } => rows.len() as u64,
            Batch::Postgres { rows, .. } => *rows,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The largest key of the batch, as text.
    pub fn last_key(&self) -> Option<&str> {
        match self {
            Batch::Mysql { last_key, .. } | Batch::Postgres { last_key, .. } => last_key.as_deref(),
        }
    }
}

/// One session on one database's event table.
#[async_trait]
pub trait EventStore: Send {
    /// Where the table is, for messages.
    fn name(&self) -> &str;
    /// The largest key, as text; `None` for an empty table.
    async fn max_key(&mut self) -> Result<Option<String>, SourceError>;
    /// The row with the smallest key, as comparable text.
    async fn first_row(&mut self) -> Result<Option<String>, SourceError>;
    /// Rows with a key up to and including `max`.
    async fn count_upto(&mut self, max: &str) -> Result<u64, SourceError>;
    /// Up to `limit` rows with a key above `after` (all when `None`), by increasing key.
    async fn read_after(&mut self, after: Option<&str>, limit: u32) -> Result<Batch, SourceError>;
    /// Inserts `batch` in one transaction.
    async fn insert(&mut self, batch: &Batch) -> Result<(), SourceError>;
    /// Waits at most `wait` for the source to say it has new rows (PostgreSQL `NOTIFY`);
    /// without notifications it just waits.
    async fn wait_for_news(&mut self, wait: Duration) {
        tokio::time::sleep(wait).await;
    }
}

/// What `cairn replica events` was asked for.
#[derive(Debug, Clone)]
pub struct EventTablesOptions {
    /// `DB.TABLE` (MySQL/MariaDB) or `SCHEMA.TABLE` (PostgreSQL).
    pub table: String,
    /// The increasing key column.
    pub key: String,
    /// Rows per transaction.
    pub batch: u32,
    pub dry_run: bool,
    /// Stop once every target holds every row the source has.
    pub catch_up: bool,
    /// PostgreSQL: the channel whose notifications wake the copy up.
    pub notify_channel: Option<String>,
    /// The longest sleep while the source has nothing new.
    pub max_idle: Duration,
    pub stop: CancellationToken,
}

/// One target's progress.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetProgress {
    pub target: String,
    /// The largest key the target held at the start, and holds now.
    pub started_after: Option<String>,
    pub max_key: Option<String>,
    pub rows_copied: u64,
    pub batches: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventTablesReport {
    pub table: String,
    pub key: String,
    pub validation: Vec<String>,
    pub targets: Vec<TargetProgress>,
    pub stopped: String,
}
