//! `cairn backup`: its arguments, the run (or dry run) of the plan, and each source's outcome as
//! text or JSON.

use std::path::PathBuf;

use clap::Args;

use super::{CliResult, print_out, to_json};
use crate::config::Config;
use crate::exit::{Classify, ExitStatus};
use crate::jobs::backup::{self, BackupRequest};
use crate::jobs::history::{Command, FinishedRun, RunFacts};
use crate::jobs::purge::{self, PurgeRequest};
use crate::repo::kinds::{RequestedType, RunType};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Source name from the configuration, or a URL (postgres://…, mysql://…, mariadb://…). Repeatable.
    #[arg(long, value_name = "NAME|URL")]
    pub source: Vec<String>,
    /// Name under which a source given by URL is stored (default: derived from host, port and database).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Destination: a configured name, a local path, file:///path or s3://bucket/prefix.
    #[arg(long, value_name = "DEST")]
    pub to: Option<String>,
    /// File holding the password of a --source URL (else PGPASSWORD or MYSQL_PWD; a password in
    /// the URL is visible to every user in the process list).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Which periodic run this is; with the full-backup policy it decides full or incremental.
    #[arg(long, value_name = "RUN_TYPE", default_value = "daily", value_parser = parse_run_type)]
    pub run_type: RunType,
    /// Kind of copy to take.
    #[arg(long = "type", value_enum, default_value_t = RequestedType::Auto)]
    pub kind: RequestedType,
    /// Parallel connections per source (default: from the configuration, else the CPUs, at most 8).
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// Copy only schemas matching PATTERN (`*`, `?`); adds to the configured filters. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub include_schema: Vec<String>,
    /// Leave out schemas matching PATTERN. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub exclude_schema: Vec<String>,
    /// Leave out tables matching [SCHEMA.]TABLE. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub exclude_table: Vec<String>,
    /// Keep the definition of tables matching [SCHEMA.]TABLE but not their rows. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub exclude_table_data: Vec<String>,
    /// MySQL: record CHECKSUM TABLE of every table in the copy (reads each table a second time).
    #[arg(long)]
    pub checksum: bool,
    /// After each successful copy, remove the source's copies beyond the `[retention]` table (as `cairn
    /// purge --apply`).
    #[arg(long)]
    pub purge: bool,
    /// Back up this many sources at the same time (default 1); each still uses --jobs connections.
    #[arg(long, value_name = "N")]
    pub parallel_sources: Option<u32>,
    /// Print the validated plan and exit; nothing is written.
    #[arg(long)]
    pub dry_run: bool,
    /// Print results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_run_type(text: &str) -> Result<RunType, String> {
    text.parse()
}

pub(super) async fn run(config: &Config, args: &BackupArgs) -> CliResult {
    let request = BackupRequest {
        sources: args.source.clone(),
        name: args.name.clone(),
        to: args.to.clone(),
        run_type: Some(args.run_type),
        requested: args.kind,
        jobs: args.jobs,
        filters: crate::engine::filter::Filters {
            include_schemas: args.include_schema.clone(),
            exclude_schemas: args.exclude_schema.clone(),
            exclude_tables: args.exclude_table.clone(),
            exclude_table_data: args.exclude_table_data.clone(),
        },
        checksums: args.checksum,
        parallel_sources: args.parallel_sources,
        password_file: args.password_file.clone(),
    };
    let plan = backup::plan(config, &request)?;
    if args.dry_run {
        let outcomes = backup::dry_run(&plan, &crate::jobs::events::Log).await?;
        let mut worst = ExitStatus::Success;
        let mut text = String::new();
        let mut reports = Vec::new();
        for outcome in &outcomes {
            match &outcome.result {
                Ok(p) => {
                    text.push_str(&format!(
                        "source {} ({}, {})\n  destination: {}\n  run type: {} (full-backup policy: {})\n  would take: {} copy{}\n  jobs: {}\n",
                        p.source,
                        p.engine,
                        p.url,
                        p.destination,
                        p.run_type,
                        p.full_backup,
                        p.kind,
                        p.parent.as_ref().map(|id| format!(" continuing from {id}")).unwrap_or_default(),
                        p.jobs
                    ));
                    for check in &p.checks {
                        text.push_str(&format!("  checked: {check}\n"));
                    }
                    reports.push(serde_json::json!({"source": outcome.source, "ok": true, "plan": p}));
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", outcome.source);
                    text.push_str(&format!("source {}: would fail, {}\n", outcome.source, e.exit_status()));
                    worst = worst.worse(e.exit_status());
                    reports.push(serde_json::json!({"source": outcome.source, "ok": false, "error": e.to_string()}));
                }
            }
        }
        text.push_str("dry run: nothing was written\n");
        if args.json {
            print_out(&to_json(&reports))?;
        } else {
            print_out(&text)?;
        }
        return Ok(worst);
    }
    let outcomes = crate::jobs::backup_run::run(&plan, &config.lock_options(), &crate::jobs::events::Log).await?;
    let mut worst = ExitStatus::Success;
    let mut lines = String::new();
    let mut reports = Vec::new();
    let mut runs = Vec::new();
    for outcome in &outcomes {
        // With several destinations, each line says which one it is about.
        let label = match outcome.several {
            true => format!("{} (to {})", outcome.source, outcome.destination.describe()),
            false => outcome.source.clone(),
        };
        let run = |exit: ExitStatus, facts: RunFacts| {
            let mut run = FinishedRun::new(
                Command::Backup,
                &outcome.source,
                Some(outcome.destination.clone()),
                outcome.started_at,
                exit.code(),
                facts,
            );
            run.record.finished_at = outcome.finished_at;
            run
        };
        match &outcome.result {
            Ok(copy) => {
                runs.push(run(
                    ExitStatus::Success,
                    RunFacts {
                        bytes: copy.bytes,
                        copy: Some(copy.id.clone()),
                        error: None,
                    },
                ));
                lines.push_str(&format!(
                    "{label}: {} copy {} recorded: {}, {} bytes, {}s, log position {}\n",
                    copy.kind,
                    copy.id,
                    crate::text::count(copy.files, "file"),
                    copy.bytes,
                    (copy.finished_at - copy.started_at).num_seconds(),
                    copy.log_range.end.coordinates()
                ));
                let mut report = serde_json::json!({"source": outcome.source, "ok": true, "copy": copy});
                if outcome.several {
                    report["destination"] = serde_json::json!(outcome.destination.describe());
                }
                if args.purge {
                    let request = PurgeRequest {
                        // Where this outcome's copy was recorded (one of several destinations).
                        at: Some(outcome.destination.clone()),
                        from: args.to.clone(),
                        source: outcome.source.clone(),
                        apply: true,
                    };
                    let purge_started = chrono::Utc::now();
                    let purged = purge::run(config, &request).await;
                    let (exit, facts) = match &purged {
                        Ok(purged) => (
                            ExitStatus::Success,
                            RunFacts {
                                bytes: purged.bytes,
                                ..RunFacts::default()
                            },
                        ),
                        Err(e) => (
                            e.exit_status(),
                            RunFacts {
                                error: Some(e.to_string()),
                                ..RunFacts::default()
                            },
                        ),
                    };
                    runs.push(FinishedRun::new(
                        Command::Purge,
                        &outcome.source,
                        Some(outcome.destination.clone()),
                        purge_started,
                        exit.code(),
                        facts,
                    ));
                    match purged {
                        Ok(purged) => {
                            lines.push_str(&format!(
                                "{}: purged {} ({})\n",
                                outcome.source,
                                crate::text::count(purged.plan.remove.len() as u64, "copy"),
                                crate::text::bytes(purged.bytes)
                            ));
                            report["purged"] = serde_json::json!(purged);
                        }
                        Err(e) => {
                            eprintln!(
                                "error: {}: the copy is recorded, but the purge after it failed: {e}",
                                outcome.source
                            );
                            worst = worst.worse(e.exit_status());
                            report["purge_error"] = serde_json::json!(e.to_string());
                        }
                    }
                }
                reports.push(report);
            }
            Err(e) => {
                eprintln!("error: {label}: {e}");
                runs.push(run(
                    e.exit_status(),
                    RunFacts {
                        error: Some(e.to_string()),
                        ..RunFacts::default()
                    },
                ));
                lines.push_str(&format!("{label}: failed, {}\n", e.exit_status()));
                worst = worst.worse(e.exit_status());
                let mut report = serde_json::json!({"source": outcome.source, "ok": false, "error": e.to_string()});
                if outcome.several {
                    report["destination"] = serde_json::json!(outcome.destination.describe());
                }
                reports.push(report);
            }
        }
    }
    super::finish::finish(config, &runs).await;
    if args.json {
        print_out(&to_json(&reports))?;
    } else {
        print_out(&lines)?;
    }
    Ok(worst)
}
