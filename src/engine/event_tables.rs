//! Event tables (append-only, ordered by a key): new rows copied by increasing key from a source
//! table to the same table in one or more target databases of the same engine, in batches, each
//! batch one transaction per target, every target resuming from its own largest key. The loop is
//! here; each engine gives an [`EventStore`] (one session on one database's table).

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::follow::Ended;
use super::{Engine, SourceError, SourceUrl};

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

/// Opens an event store of `table` in the database `url` names. `source`: the source's table
/// is the one `--table` names; a MySQL/MariaDB target's is in the database its URL names, if
/// it names one.
async fn open(url: &SourceUrl, options: &EventTablesOptions, source: bool) -> Result<Box<dyn EventStore>, SourceError> {
    let listen = source;
    let (container, table) = options.table.split_once('.').ok_or_else(|| {
        SourceError::Unsupported(format!(
            "--table {}: name it as DATABASE.TABLE (MySQL/MariaDB) or SCHEMA.TABLE (PostgreSQL)",
            options.table
        ))
    })?;
    match url.engine {
        Engine::Mysql => {
            let database = match source {
                true => container.to_string(),
                false => url.database().unwrap_or_else(|| container.to_string()),
            };
            Ok(Box::new(
                super::mysql::event_table::MysqlEvents::open(url, &database, table, &options.key).await?,
            ))
        }
        Engine::Postgres => {
            let channel = options.notify_channel.as_deref().filter(|_| listen);
            Ok(Box::new(
                super::postgres::event_table::PgEvents::open(url, container, table, &options.key, channel).await?,
            ))
        }
    }
}

/// Checks each target against the source: the first row equal, and as many rows up to the
/// target's largest key as the source has.
async fn validate(
    source: &mut Box<dyn EventStore>,
    targets: &mut [Box<dyn EventStore>],
) -> Result<Vec<String>, SourceError> {
    let first = source.first_row().await?;
    let mut lines = Vec::new();
    let mut differences = Vec::new();
    for target in targets.iter_mut() {
        let Some(max) = target.max_key().await? else {
            lines.push(format!("{}: empty, every row will be copied", target.name()));
            continue;
        };
        let (on_source, on_target) = (source.count_upto(&max).await?, target.count_upto(&max).await?);
        if on_source != on_target {
            differences.push(format!(
                "{}: {on_target} rows up to key {max}, the source has {on_source}",
                target.name()
            ));
        } else if target.first_row().await? != first {
            differences.push(format!("{}: its first row differs from the source's", target.name()));
        } else {
            lines.push(format!(
                "{}: {on_target} rows up to key {max}, the first row equal",
                target.name()
            ));
        }
    }
    if !differences.is_empty() {
        return Err(SourceError::Diverged(format!(
            "event table {}: a target does not hold what the source holds up to its own largest key:\n  {}\nnothing was \
             copied; fix or empty that target",
            source.name(),
            differences.join("\n  ")
        )));
    }
    Ok(lines)
}

/// Copies new rows of the event table from `source` to every target until stopped.
///
/// # Errors
/// A target of another engine, a table or key that does not exist, a diverging target, or
/// either side's error (naming the target).
pub async fn run(
    source: &SourceUrl,
    targets: &[SourceUrl],
    options: &EventTablesOptions,
) -> Result<EventTablesReport, SourceError> {
    if let Some(other) = targets.iter().find(|t| t.engine != source.engine) {
        return Err(SourceError::Unsupported(format!(
            "{other}: event tables are copied between databases of the same engine as the source"
        )));
    }
    if options.batch == 0 {
        return Err(SourceError::Unsupported("--batch must be at least 1".into()));
    }
    let mut from = open(source, options, true).await?;
    let mut to = Vec::new();
    for target in targets {
        to.push(open(target, options, false).await?);
    }
    let mut report = EventTablesReport {
        table: options.table.clone(),
        key: options.key.clone(),
        validation: validate(&mut from, &mut to).await?,
        ..EventTablesReport::default()
    };
    for target in to.iter_mut() {
        let max = target.max_key().await?;
        report.targets.push(TargetProgress {
            target: target.name().to_string(),
            started_after: max.clone(),
            max_key: max,
            ..TargetProgress::default()
        });
    }
    if options.dry_run {
        report.stopped = Ended::DryRun.describe().into();
        return Ok(report);
    }
    let mut idle = Duration::from_millis(100);
    let ended = loop {
        if options.stop.is_cancelled() {
            break Ended::Signal;
        }
        let mut copied = false;
        for (target, progress) in to.iter_mut().zip(report.targets.iter_mut()) {
            let batch = from.read_after(progress.max_key.as_deref(), options.batch).await?;
            if batch.is_empty() {
                continue;
            }
            target.insert(&batch).await?;
            copied = true;
            progress.rows_copied += batch.len();
            progress.batches += 1;
            progress.max_key = batch.last_key().map(str::to_string);
        }
        if copied {
            idle = Duration::from_millis(100);
            continue;
        }
        if options.catch_up {
            break Ended::CaughtUp;
        }
        tokio::select! {
            () = from.wait_for_news(idle) => {}
            () = options.stop.cancelled() => {}
        }
        idle = (idle * 2).min(options.max_idle);
    };
    report.stopped = ended.describe().into();
    Ok(report)
}
