//! The event-table copy (`cairn replica events`): new rows copied by increasing key from a
//! source table to the same table in one or more target databases of the same engine, in
//! batches, each batch one transaction per target, every target resuming from its own largest
//! key, after a validation of each target.

use std::time::Duration;

use super::event_tables::{EventStore, EventTablesOptions, EventTablesReport, TargetProgress};
use super::follow::Ended;
use super::{Engine, SourceError, SourceUrl};

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
