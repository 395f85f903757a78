//! Replay of incremental copies: the stored binary logs applied to a restored database as SQL,
//! transaction by transaction, up to a chosen point, with the applied position recorded in the
//! target in the same transaction as the data (docs/mysql.md, "Replay").
//!
//! Before anything is applied, every file of every incremental is fetched, its MD5 and every
//! event's CRC32 checked, and the stop point located; a damaged file or an unknown stop point
//! fails the replay with the target untouched by it.

mod apply;
mod batch;
mod decode;
mod events;
mod fetch;
mod live;
mod progress;
mod render;
mod scan;
mod script;
mod sql;
mod triggers;
mod values;

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;

pub(crate) use self::live::{LiveFeed, Wanted};
pub(super) use self::live::{follow, record_setup, request_stop, states};
pub(crate) use self::script::{DELIMITER as SCRIPT_DELIMITER, Definitions, Written, write_changes};
pub(crate) use self::sql::first_words;

use self::apply::{Applier, ROW_SESSION};
use self::decode::{Decoder, ResumeAfter};
use self::fetch::{LocalLog, fetch};
use self::scan::scan;
use self::triggers::{prepare_progress, restore_triggers, set_aside_triggers};
use super::My;
use super::binlog::GtidState;
use crate::engine::filter::Filters;
use crate::engine::{RestoreInput, SourceError};
use crate::progress::Progress;
use crate::repo::manifest::Manifest;
use crate::repo::model::LogPosition;

/// The database holding replay progress and set-aside triggers on the target.
pub const PROGRESS_DATABASE: &str = "cairn_replay";
/// How often a long replay logs a progress line.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A transaction boundary in the chain: which file, and the server position after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Boundary {
    log: usize,
    /// Transactions of the chain up to and including this one.
    count: u64,
    server_file: String,
    position: u64,
    gtids: GtidState,
    copy: String,
}

/// How far the replay goes.
#[derive(Debug, Clone)]
enum Limit {
    /// No transaction of the incrementals: the point is before the first one.
    Nothing,
    /// Up to and including the transaction ending at this boundary.
    After(Boundary),
}

/// What the replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    pub transactions: u64,
    pub row_changes: u64,
    pub position: Option<LogPosition>,
}

/// What a replay of `input` would do: its files fetched and checked, and the exact stop point.
pub(crate) async fn preview(input: &RestoreInput) -> Result<Vec<String>, SourceError> {
    let full = &input.manifests[0];
    let start_gtids = full_gtids(full)?;
    let work = work_folder()?;
    let logs = fetch(input, work.path()).await?;
    let (limit, in_chain) = scan(&logs, &start_gtids, input.until.as_ref(), &full.copy.log_range.end).await?;
    let mut lines = vec![format!(
        "checked: {} of {}, {} (MD5 and every event's CRC32)",
        crate::text::count(logs.len() as u64, "log file"),
        crate::text::count(input.manifests.len() as u64 - 1, "incremental"),
        crate::text::count(in_chain, "transaction")
    )];
    lines.push(match (&limit, &input.until) {
        (_, None) => format!("stop: at the end of the chain, after transaction {in_chain} of {in_chain}"),
        (Limit::Nothing, Some(until)) => {
            format!("stop: {until} comes before the first transaction; only the full copy would be restored")
        }
        (Limit::After(b), Some(until)) => format!(
            "stop: {until} is the transaction ending at {}:{} (copy {}), transaction {} of {in_chain}; GTID position \
             {}",
            b.server_file, b.position, b.copy, b.count, b.gtids
        ),
    });
    Ok(lines)
}

/// The GTID position the full copy of a chain recorded.
fn full_gtids(full: &Manifest) -> Result<GtidState, SourceError> {
    let LogPosition::Mysql { gtid, .. } = &full.copy.log_range.end else {
        return Err(SourceError::Unsupported(format!(
            "copy {} is not a MySQL copy",
            full.copy.id
        )));
    };
    GtidState::parse(gtid.as_deref().unwrap_or_default())
        .map_err(|e| SourceError::Damaged(format!("copy {}: recorded GTID position: {e}", full.copy.id)))
}

/// A folder for the chain's log files, removed when dropped.
fn work_folder() -> Result<tempfile::TempDir, SourceError> {
    tempfile::Builder::new()
        .prefix("cairn-replay-")
        .tempdir()
        .map_err(|e| SourceError::Damaged(format!("creating a work folder for the replay: {e}")))
}

/// The key of a replay's progress row: the target databases, sorted.
fn target_key(databases: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&str> = databases.values().map(String::as_str).collect();
    names.sort_unstable();
    names.join(",")
}

/// Checks, reading only, that the target holds a replay of this chain's full copy that
/// `--resume` can continue; says in one sentence what to do when it does not.
///
/// # Errors
/// [`SourceError::NothingToResume`], or a database error.
pub(super) async fn check_resumable(
    my: &My,
    input: &RestoreInput,
    databases: &BTreeMap<String, String>,
    target: &str,
) -> Result<(), SourceError> {
    let full = &input.manifests[0].copy.id;
    let mut conn = my.connect(Some("")).await?;
    let doing = "reading the replay progress";
    let has_table: Option<u8> = conn
        .exec_first(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'progress'",
            (PROGRESS_DATABASE,),
        )
        .await
        .map_err(|e| my.error(doing, e))?;
    let recorded: Option<String> = match has_table {
        Some(_) => conn
            .exec_first(
                format!("SELECT full_copy FROM {PROGRESS_DATABASE}.progress WHERE source = ? AND target_databases = ?"),
                (&input.source, target_key(databases)),
            )
            .await
            .map_err(|e| my.error(doing, e))?,
        None => None,
    };
    let detail = match recorded {
        Some(recorded) if &recorded == full => return Ok(()),
        Some(recorded) => format!(
            "it holds a replay of full copy {recorded}, not {full}; resume that chain (--copy), or restore again with \
             --clean"
        ),
        None => {
            let mut existing = 0usize;
            for database in databases.values() {
                let found: Option<u8> = conn
                    .exec_first(
                        "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                        (database,),
                    )
                    .await
                    .map_err(|e| my.error(doing, e))?;
                existing += usize::from(found.is_some());
            }
            if existing == 0 {
                "the target databases do not exist; restore without --resume".to_string()
            } else {
                format!(
                    "no replay of source {} was recorded there (the full restore did not finish); restore again with \
                     --clean",
                    input.source
                )
            }
        }
    };
    Err(SourceError::NothingToResume {
        target: target.to_string(),
        detail,
    })
}

/// The incrementals of a chain fetched into a work folder, every file checked (MD5, each
/// event's CRC32) and the stop point found: what a replay needs before it touches the target.
pub(crate) struct Checked {
    _work: tempfile::TempDir,
    logs: Vec<LocalLog>,
    limit: Limit,
    in_chain: u64,
}

/// Fetches and checks the incrementals of `input` and finds where `until` stops, so a damaged
/// file or a point the chain does not hold fails before anything is restored.
///
/// # Errors
/// Damaged files, or an `until` the chain does not hold.
pub(crate) async fn check(input: &RestoreInput) -> Result<Checked, SourceError> {
    let full: &Manifest = &input.manifests[0];
    let start_gtids = full_gtids(full)?;
    let work = work_folder()?;
    let logs = fetch(input, work.path()).await?;
    let (limit, in_chain) = scan(&logs, &start_gtids, input.until.as_ref(), &full.copy.log_range.end).await?;
    Ok(Checked {
        _work: work,
        logs,
        limit,
        in_chain,
    })
}

/// Where a replay by another engine's applier continues: after the transaction of copy `copy`
/// that ended at `file`:`position`, with the source's GTID state `gtid` there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainResume {
    pub copy: String,
    pub file: String,
    pub position: u64,
    pub gtid: String,
}

impl Checked {
    /// The chain's changes from the full copy's position (or after `resume`, a transaction an
    /// earlier replay applied last) to the stop point, the rows of the tables `wanted` picks
    /// only, for another engine's applier (MySQL → PostgreSQL).
    ///
    /// # Errors
    /// A GTID position that does not read.
    pub(crate) fn changes<'a>(
        &'a self,
        input: &RestoreInput,
        resume: Option<&ChainResume>,
        wanted: &'a (dyn Fn(&str, &str) -> bool + Sync),
    ) -> Result<Decoder<'a>, SourceError> {
        let full = &input.manifests[0];
        let (gtids, resume_after) = match resume {
            None => (full_gtids(full)?, None),
            Some(resume) => (
                GtidState::parse(&resume.gtid)
                    .map_err(|e| SourceError::Damaged(format!("the replay progress's GTID position: {e}")))?,
                (resume.copy != full.copy.id).then(|| ResumeAfter {
                    copy: resume.copy.clone(),
                    server_file: resume.file.clone(),
                    position: resume.position,
                }),
            ),
        };
        let stop = match &self.limit {
            Limit::Nothing => None,
            Limit::After(boundary) => Some((boundary.log, boundary.position)),
        };
        let nothing = stop.is_none() && input.until.is_some();
        Ok(Decoder::new(&self.logs, gtids, stop, nothing, resume_after, wanted))
    }

    /// Transactions the chain holds, and how many of them the stop point takes.
    pub(crate) fn counts(&self) -> (u64, u64) {
        match &self.limit {
            Limit::Nothing => (self.in_chain, 0),
            Limit::After(boundary) => (self.in_chain, boundary.count),
        }
    }
}

/// The filters the full copy `full` was taken with: the replay leaves out what the copy did.
fn copy_filters(full: &Manifest) -> Result<Filters, SourceError> {
    match full.copy.details.get("filters") {
        Some(recorded) => serde_json::from_value(recorded.clone()).map_err(|e| {
            SourceError::Damaged(format!("copy {}: the recorded filters do not parse: {e}", full.copy.id))
        }),
        None => Ok(Filters::default()),
    }
}

/// The tables a selective restore made: by the copy's (database, table), and as the target has
/// them. Only their changes replay.
#[derive(Debug, Clone, Default)]
pub(crate) struct Restored {
    pub chosen: std::collections::BTreeSet<(String, String)>,
    pub made: std::collections::BTreeSet<(String, String)>,
}

/// Replays the checked incrementals of `input` into the target, after its full copy was
/// restored (or, with `resume`, from where an earlier replay stopped).
pub(super) async fn replay(
    my: &My,
    input: &RestoreInput,
    databases: &BTreeMap<String, String>,
    checked: Checked,
    restored: Option<Restored>,
) -> Result<Replayed, SourceError> {
    let full: &Manifest = &input.manifests[0];
    let start_gtids = full_gtids(full)?;
    let Checked {
        logs, limit, in_chain, ..
    } = &checked;
    let (logs, limit, in_chain) = (logs, limit, *in_chain);
    let stop = match limit {
        Limit::Nothing => None,
        Limit::After(boundary) => Some(boundary.clone()),
    };
    tracing::info!(
        "replay: {} of {} checked, {}; applying {}",
        crate::text::count(logs.len() as u64, "log file"),
        crate::text::count(input.manifests.len() as u64 - 1, "incremental"),
        crate::text::count(in_chain, "transaction"),
        match (&input.until, &stop) {
            (None, _) => "all of them".to_string(),
            (Some(until), Some(b)) => format!("up to {until}: {}:{}", b.server_file, b.position),
            (Some(until), None) => format!("none of them ({until} is before the first)"),
        }
    );

    let filters = copy_filters(full)?;
    // A selective restore keeps its progress apart from a whole restore's or a replica's of the
    // same databases.
    let targets = match &restored {
        None => target_key(databases),
        Some(restored) => {
            // Bounded: the key is a column of 300 characters.
            let names: Vec<String> = restored.made.iter().map(|(d, t)| format!("{d}.{t}")).collect();
            let digest = crate::storage::md5_hex(names.join(",").as_bytes());
            format!("{} tables {}", target_key(databases), &digest[..12])
        }
    };
    let conn = my
        .connect_tuned(Some(""), |builder| builder.client_found_rows(true).stmt_cache_size(512))
        .await?;
    let mut applier = Applier::new(
        my,
        conn,
        input.source.clone(),
        targets.clone(),
        databases,
        filters.clone(),
    );
    if input.mysql.no_binlog {
        applier
            .exec(
                "leaving the replay out of the binary log",
                "SET SESSION sql_log_bin = 0",
            )
            .await?;
    }
    applier.only = restored.map(|restored| apply::only::Only::new(input.selection.clone(), restored));
    prepare_progress(&mut applier).await?;
    applier.exec("preparing the replay session", ROW_SESSION).await?;
    applier
        .exec(
            "preparing the replay session",
            if applier.only.is_some() {
                "SET SESSION foreign_key_checks = 0"
            } else {
                "SET SESSION foreign_key_checks = 1"
            },
        )
        .await?;

    let (gtids, resume_after) = progress::begin(&mut applier, input, full, &start_gtids).await?;
    set_aside_triggers(&mut applier).await?;

    let to_apply = stop.as_ref().map_or(in_chain, |s| s.count);
    let progress = Progress::new(format!("{}: replay, transactions", input.source), to_apply);
    let _reporter = progress.report_every(PROGRESS_EVERY);
    let nothing = stop.is_none() && input.until.is_some();
    let selection = &input.selection;
    let wanted = |database: &str, table: &str| {
        databases.contains_key(database)
            && filters.data_included(database, table)
            && selection.selected(database, table)
    };
    let mut decoder = Decoder::new(
        logs,
        gtids,
        stop.as_ref().map(|s| (s.log, s.position)),
        nothing,
        resume_after,
        &wanted,
    );
    while let Some(change) = decoder.next().await? {
        applier.apply(change, &progress).await?;
        if std::mem::take(&mut applier.trigger_created) {
            set_aside_triggers(&mut applier).await?;
        }
    }
    applier.close().await?;
    restore_triggers(&mut applier).await?;
    let position = progress::end(&mut applier, input).await?;
    let _ = applier.conn.disconnect().await;
    Ok(Replayed {
        transactions: applier.transactions,
        row_changes: applier.row_changes,
        position: Some(position),
    })
}
