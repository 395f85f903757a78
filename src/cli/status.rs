//! `cairn status`: the copies of each source as a table or JSON, and `--rebuild`.

use clap::Args;
use std::sync::Arc;

use serde::Serialize;

use super::{CliResult, Failure, print_out, to_json};
use crate::config::{Config, ConfigError};
use crate::exit::ExitStatus;
use crate::jobs::slots::{self, HoldReport, ReachReport};
use crate::repo::model::RunRecord;
use crate::repo::status::{CopyRecord, LoadedFrom, StatusStore};
use crate::storage::{Access, Destination, DestinationSpec};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Destination: a configured name, a path or s3://bucket/prefix (default: each configured source's).
    #[arg(long, value_name = "DEST")]
    pub from: Option<String>,
    /// Only this source.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Print JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Rebuild the status of --source from its copies' manifests.
    #[arg(long, requires = "source")]
    pub rebuild: bool,
    /// List the recent runs that failed (backup, restore, verify, purge), newest first.
    #[arg(long, conflicts_with = "rebuild")]
    pub errors: bool,
}

#[derive(Serialize)]
struct SourceReport {
    source: String,
    destination: String,
    /// `latest`, `previous` (fallback after damage) or `none`.
    read_from: &'static str,
    generation: u64,
    /// Copies the status file lacked and their manifests proved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    recovered: Vec<String>,
    /// Uploads of runs that were killed, never completed nor aborted (S3).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unfinished_uploads: Vec<String>,
    copies: Vec<CopyRecord>,
    /// The first and last moments a restore can reach.
    #[serde(skip_serializing_if = "Option::is_none")]
    restorable_from: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restorable_to: Option<chrono::DateTime<chrono::Utc>>,
    /// The latest `cairn verify` of the source's copies.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_verification: Option<crate::repo::model::VerificationRecord>,
    /// The latest run of any command, whatever its result.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_run: Option<RunRecord>,
    /// What the source keeps on its server for incrementals (configured PostgreSQL sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    slot: Option<HoldReport>,
    /// How far back the source's binary logs reach (configured MySQL/MariaDB sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    binlog: Option<ReachReport>,
    /// Why the binary logs could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    binlog_error: Option<String>,
    /// Why the slot could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    slot_error: Option<String>,
}

/// Which (source, destination) pairs the command is about.
async fn targets(config: &Config, args: &StatusArgs) -> Result<Vec<(String, Arc<dyn Destination>)>, Failure> {
    let mut found = Vec::new();
    match (&args.from, &args.source) {
        (Some(from), Some(source)) => {
            let destination = config.destination(from)?.open().await?;
            destination.check(Access::Read).await?;
            // A name that is neither configured nor on the destination is a typo, not an
            // empty source.
            if !config.settings.sources.contains_key(source) {
                let known = crate::repo::status::sources_at(destination.as_ref()).await?;
                if !known.contains(source) {
                    return Err(Failure::from(crate::repo::status::StatusError::UnknownSource {
                        source_name: source.clone(),
                        location: destination.location(),
                        known,
                    }));
                }
            }
            found.push((source.clone(), destination));
        }
        (Some(from), None) => {
            let destination = config.destination(from)?.open().await?;
            destination.check(Access::Read).await?;
            for name in crate::repo::status::sources_at(destination.as_ref()).await? {
                found.push((name, destination.clone()));
            }
        }
        (None, Some(source)) => {
            if !config.settings.sources.contains_key(source) {
                return Err(Failure::from(ConfigError::Unknown {
                    kind: "source",
                    name: source.clone(),
                    hint: format!(
                        "configured sources: {}; or pass --from DEST to look on a destination",
                        config.settings.sources.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                }));
            }
            found.push((source.clone(), config.destination_of(source)?.open().await?))
        }
        (None, None) => {
            if config.settings.sources.is_empty() {
                return Err(Failure::from(ConfigError::Invalid {
                    origin: "the command line".into(),
                    key: "--from".into(),
                    message: "no sources are configured: pass --from DEST (and --source NAME)".into(),
                }));
            }
            for name in config.settings.sources.keys() {
                let spec: DestinationSpec = config.destination_of(name)?;
                found.push((name.clone(), spec.open().await?));
            }
        }
    }
    Ok(found)
}

pub(super) async fn run(config: &Config, args: &StatusArgs) -> CliResult {
    let targets = targets(config, args).await?;
    if targets.is_empty() && !args.json {
        let from = args.from.as_deref().unwrap_or("the configured destinations");
        return print_out(&format!("no source has a status file at {from}\n"));
    }
    if args.rebuild {
        let (source, destination) = targets.into_iter().next().expect("--rebuild requires --source");
        destination.check(Access::Write).await?;
        let lock = crate::repo::lock::acquire(destination.clone(), &source, "status --rebuild", &config.lock_options())
            .await?;
        let result = StatusStore::new(destination.clone(), &source).rebuild().await;
        lock.release().await?;
        let (status, report) = result?;
        let mut text = format!(
            "rebuilt the status of {source} at {} from {} (generation {})\n",
            destination.location(),
            crate::text::count(report.copies as u64, "manifest"),
            status.generation
        );
        for (key, reason) in &report.skipped {
            text.push_str(&format!("  left out {key}: {reason}\n"));
        }
        return print_out(&text).map(|_| {
            if report.skipped.is_empty() {
                ExitStatus::Success
            } else {
                ExitStatus::Failed
            }
        });
    }
    if args.errors {
        return errors(targets, args.json).await;
    }
    let mut reports = Vec::new();
    for (source, destination) in targets {
        destination.check(Access::Read).await?;
        let loaded = StatusStore::new(destination.clone(), &source).load().await?;
        // Reported, not required: read-only credentials may not list uploads.
        let unfinished_uploads = match destination.unfinished_uploads(&format!("{source}/")).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!("{source}: cannot list unfinished uploads: {e}");
                Vec::new()
            }
        };
        // Read from the source, not the destination: a source that cannot be reached is said so,
        // and the copies are still listed.
        // Only sources that take incrementals are asked: status must not need every server.
        let incrementals = config.settings.sources.contains_key(&source)
            && config.copy_options_of(&source, None).postgres.incrementals;
        let (slot, slot_error) = match incrementals {
            false => (None, None),
            true => match slots::hold_of(config, &source, &loaded.status.body.copies).await {
                Ok(slot) => (slot, None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        let (binlog, binlog_error) = match slots::reach_of(config, &source, &loaded.status.body.copies).await {
            Ok(binlog) => (binlog, None),
            Err(e) => (None, Some(e.to_string())),
        };
        if let Some(warning) = binlog.as_ref().and_then(|b| b.warning.as_ref()) {
            tracing::warn!("{source}: {warning}");
        }
        if let Some(warning) = slot.as_ref().and_then(|s| s.warning.as_ref()) {
            tracing::warn!("{source}: {warning}");
        }
        let window = loaded.status.body.restorable_window();
        reports.push(SourceReport {
            restorable_from: window.map(|(from, _)| from),
            restorable_to: window.map(|(_, to)| to),
            last_verification: loaded.status.body.verifications.last().cloned(),
            last_run: loaded.status.body.runs.last().cloned(),
            slot,
            slot_error,
            binlog,
            binlog_error,
            unfinished_uploads,
            source,
            destination: destination.location(),
            read_from: match loaded.from {
                LoadedFrom::Latest => "latest",
                LoadedFrom::Previous { .. } => "previous",
                LoadedFrom::Nothing => "none",
            },
            generation: loaded.status.generation,
            recovered: loaded.recovered,
            copies: loaded.status.body.copies,
        });
    }
    if args.json {
        return print_out(&to_json(&reports));
    }
    print_out(&render_table(&reports))
}

/// A duration for people: `45s`, `12m`, `5h 3m`, `3d 4h`.
fn age(elapsed: chrono::TimeDelta) -> String {
    let seconds = elapsed.num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d {}h", seconds / 86400, seconds % 86400 / 3600),
    }
}

fn render_table(reports: &[SourceReport]) -> String {
    let mut out = String::new();
    for report in reports {
        out.push_str(&format!(
            "source {} at {} (status generation {}{})\n",
            report.source,
            report.destination,
            report.generation,
            if report.read_from == "previous" {
                ", read from the previous copy: the latest is damaged"
            } else {
                ""
            }
        ));
        if !report.recovered.is_empty() {
            out.push_str(&format!(
                "  recovered from their manifests (the status file lacked them; the next backup records them): {}\n",
                report.recovered.join(", ")
            ));
        }
        if !report.unfinished_uploads.is_empty() {
            out.push_str(&format!(
                "  {} left by runs that were killed (their parts are billed until removed): {}\n",
                crate::text::count(report.unfinished_uploads.len() as u64, "unfinished upload"),
                report.unfinished_uploads.join(", ")
            ));
        }
        if let Some(slot) = &report.slot {
            let hold = &slot.hold;
            out.push_str(&format!(
                "  {} {}: keeps {} of WAL ({}{}), confirmed up to {}{}\n",
                hold.kind,
                hold.name,
                crate::text::bytes(hold.retained_bytes),
                if hold.state.is_empty() {
                    "state unknown"
                } else {
                    &hold.state
                },
                if hold.active { ", in use" } else { "" },
                hold.position,
                slot.last_advanced
                    .map(|at| format!(
                        ", last moved {} UTC ({} ago)",
                        at.format("%Y-%m-%d %H:%M:%S"),
                        age(chrono::Utc::now() - at)
                    ))
                    .unwrap_or_default()
            ));
            if let Some(warning) = &slot.warning {
                out.push_str(&format!("  WARNING: {warning}\n"));
            }
        }
        if let Some(binlog) = &report.binlog {
            let reach = &binlog.reach;
            match &binlog.warning {
                Some(warning) => out.push_str(&format!("  WARNING: {warning}\n")),
                None => out.push_str(&format!(
                    "  binary logs: kept back to {}; the next incremental reads {} from {}{}\n",
                    reach.oldest,
                    crate::text::bytes(reach.bytes_since),
                    reach.from,
                    reach
                        .expire_seconds
                        .map(|s| format!(
                            " (the server removes logs after {})",
                            age(chrono::TimeDelta::seconds(s as i64))
                        ))
                        .unwrap_or_default()
                )),
            }
        }
        if let Some(error) = &report.binlog_error {
            out.push_str(&format!("  binary logs: cannot be read: {error}\n"));
        }
        if let (Some(from), Some(to)) = (report.restorable_from, report.restorable_to) {
            out.push_str(&format!(
                "  restorable from {} to {} UTC; the latest copy finished {} ago\n",
                from.format("%Y-%m-%d %H:%M:%S"),
                to.format("%Y-%m-%d %H:%M:%S"),
                age(chrono::Utc::now() - to)
            ));
        }
        if let Some(run) = &report.last_run {
            out.push_str(&format!(
                "  last run: {} on {}, finished {} UTC ({} ago): {}\n",
                run.command,
                run.host,
                run.finished_at.format("%Y-%m-%d %H:%M:%S"),
                age(chrono::Utc::now() - run.finished_at),
                match run.succeeded() {
                    true => "ok".to_string(),
                    false => format!(
                        "FAILED (exit code {}); `cairn status --source {} --errors` lists the failures",
                        run.exit_code, report.source
                    ),
                }
            ));
        }
        if let Some(verified) = &report.last_verification {
            out.push_str(&format!(
                "  last verified {} UTC ({} ago): {} {}\n",
                verified.finished_at.format("%Y-%m-%d %H:%M:%S"),
                age(chrono::Utc::now() - verified.finished_at),
                crate::text::count(verified.copies.len() as u64, "copy"),
                match verified.intact {
                    true => "intact".to_string(),
                    false => format!("DAMAGED ({})", crate::text::count(verified.problems, "problem")),
                }
            ));
        }
        if let Some(error) = &report.slot_error {
            out.push_str(&format!("  slot: cannot be read: {error}\n"));
        }
        if report.copies.is_empty() {
            out.push_str("  no copies\n");
            continue;
        }
        let header = [
            "COPY",
            "KIND",
            "RUN TYPE",
            "PARENT",
            "FINISHED (UTC)",
            "DURATION",
            "SIZE",
            "FILES",
            "LOG END",
        ];
        let rows: Vec<[String; 9]> = report
            .copies
            .iter()
            .map(|c| {
                [
                    c.id.clone(),
                    c.kind.to_string(),
                    c.run_type.to_string(),
                    c.parent.clone().unwrap_or_else(|| "-".into()),
                    c.finished_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    format!("{}s", (c.finished_at - c.started_at).num_seconds()),
                    crate::text::bytes(c.bytes),
                    c.files.to_string(),
                    c.log_range.end.coordinates(),
                ]
            })
            .collect();
        out.push_str(&super::table::render(header, &rows));
    }
    out
}

#[derive(Serialize)]
struct FailedRuns {
    source: String,
    destination: String,
    /// Runs the status still holds (the last [`crate::repo::model::RUNS_KEPT`]).
    runs_kept: usize,
    /// The failed ones among them, newest first.
    failures: Vec<RunRecord>,
}

/// `status --errors`: each source's failed runs, newest first.
async fn errors(targets: Vec<(String, Arc<dyn Destination>)>, json: bool) -> CliResult {
    let mut reports = Vec::new();
    for (source, destination) in targets {
        destination.check(Access::Read).await?;
        let loaded = StatusStore::new(destination.clone(), &source).load().await?;
        let runs = loaded.status.body.runs;
        reports.push(FailedRuns {
            source,
            destination: destination.location(),
            runs_kept: runs.len(),
            failures: runs.iter().rev().filter(|r| !r.succeeded()).cloned().collect(),
        });
    }
    if json {
        return print_out(&to_json(&reports));
    }
    let mut out = String::new();
    for report in &reports {
        out.push_str(&format!(
            "source {} at {}: {} of the last {}\n",
            report.source,
            report.destination,
            crate::text::count(report.failures.len() as u64, "failed run"),
            crate::text::count(report.runs_kept as u64, "run")
        ));
        for run in &report.failures {
            out.push_str(&format!(
                "  {} UTC  {} on {}, exit code {}: {}\n",
                run.finished_at.format("%Y-%m-%d %H:%M:%S"),
                run.command,
                run.host,
                run.exit_code,
                run.error.as_deref().unwrap_or("(no message)")
            ));
        }
    }
    print_out(&out)
}
