//! `cairn replica`: `seed` makes a replica from the copies on a destination and hands it over;
//! `run` is cairn's own applier (until SIGINT/SIGTERM, a stop request or, with `--catch-up`,
//! until it has applied what the source had), `status` and `stop` read and ask it on the target.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliResult, Failure, print_out, to_json};
use crate::config::Config;
use crate::exit::ExitStatus;
use crate::jobs::history::{Command, RunFacts};
use crate::jobs::replica::{self, Handover, SeedReport, SeedRequest};
use crate::jobs::replica_run::{self, AutoResync, ReplicaStatus, RunReport, RunRequest, TargetRequest};
use crate::jobs::restore::RestoreRequest;

#[derive(Debug, Subcommand)]
pub enum ReplicaCommand {
    /// Restore a source's chain into a new replica and hand it over to replication from the
    /// exact position the copies reached.
    Seed(SeedArgs),
    /// cairn's own continuous applier: follow the source's log into a target seeded with
    /// `--handover cairn` (MySQL/MariaDB or PostgreSQL sources).
    Run(RunArgs),
    /// The replicas cairn's applier keeps on a target: running or not, position, lag, last error.
    Status(ReplicaStatusArgs),
    /// Ask a running applier to stop after the transaction in flight, and wait for it.
    Stop(StopArgs),
    /// Copy an append-only event table's new rows, by increasing key, to one or more targets.
    Events(EventsArgs),
    /// End a PostgreSQL replica of a MySQL/MariaDB source for good: sequences past the largest
    /// ids, foreign keys made, cairn's bookkeeping removed.
    Detach(DetachArgs),
    /// Copy tables of a MySQL/MariaDB source again into its PostgreSQL replica at a new position,
    /// where the applier rejoins their changes (after a statement it could not translate).
    Reload(ReloadArgs),
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The configured source whose replica is reloaded.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// A table to copy again, as DATABASE.TABLE; DATABASE.* copies every table of the database
    /// (and drops those the source no longer has). Repeatable.
    #[arg(long = "table", value_name = "DATABASE.TABLE", required = true)]
    pub tables: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// The source whose replica is detached.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The configured source holding the event table.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// The table: DATABASE.TABLE (MySQL/MariaDB) or SCHEMA.TABLE (PostgreSQL).
    #[arg(long, value_name = "TABLE")]
    pub table: String,
    /// The increasing key column.
    #[arg(long, default_value = "id", value_name = "COLUMN")]
    pub key: String,
    /// A database to copy into (same engine as the source; repeatable).
    #[arg(long = "target", value_name = "URL", required = true)]
    pub targets: Vec<String>,
    /// File holding the targets' password (else MYSQL_PWD or PGPASSWORD).
    #[arg(long, value_name = "FILE")]
    pub target_password_file: Option<PathBuf>,
    /// Rows per transaction.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub batch: u32,
    /// Exit once every target holds every row the source has.
    #[arg(long)]
    pub catch_up: bool,
    /// Validate and print the plan, then exit.
    #[arg(long)]
    pub dry_run: bool,
    /// PostgreSQL: wake up when the source sends a notification on CHANNEL (else poll).
    #[arg(long, value_name = "CHANNEL")]
    pub notify: Option<String>,
    /// The longest sleep while the source has nothing new, in seconds.
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    pub max_idle: u64,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The target of `run`, `status` and `stop`.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The replica's server (mysql://…).
    #[arg(long, value_name = "URL")]
    pub target: String,
    /// File holding the target's password (else MYSQL_PWD or PGPASSWORD).
    #[arg(long, value_name = "FILE")]
    pub target_password_file: Option<PathBuf>,
}

impl TargetArgs {
    fn request(&self) -> TargetRequest {
        TargetRequest {
            target: self.target.clone(),
            target_password_file: self.target_password_file.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configured source to follow.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Validate and print the plan (source, target, position, tables), then exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Exit once everything the source had logged at the start is applied.
    #[arg(long)]
    pub catch_up: bool,
    /// When the source's log no longer reaches the replica's position, seed it again from the
    /// latest copy on DEST (with --clean) and continue.
    #[arg(long, value_name = "DEST")]
    pub auto_resync: Option<String>,
    /// Re-seeds `--auto-resync` may do in one run.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub resync_limit: u32,
    /// Reconnections after a lost connection before giving up (default: forever).
    #[arg(long, value_name = "N")]
    pub reconnect_limit: Option<u32>,
    /// Longest wait between reconnection attempts, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub max_wait: u64,
    /// Rows compared at each end of each table by the start-up validation (0: counts only).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub sample_rows: u32,
    /// Server id the applier reads the source's log with (default: derived from the source and
    /// target databases).
    #[arg(long, value_name = "ID")]
    pub server_id: Option<u32>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplicaStatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Only this source's replica.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The source whose replica's applier stops.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Seconds to wait for the applier to end.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub wait: u64,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Destination holding the copies: a configured name, a path or s3://bucket/prefix.
    #[arg(long, value_name = "DEST")]
    pub from: String,
    /// The configured source the replica follows (its URL and password are what the replica
    /// connects with).
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// Copy id, or `latest`.
    #[arg(long, default_value = "latest", value_name = "ID")]
    pub copy: String,
    /// The new replica's server (mysql://… for MySQL/MariaDB sources).
    #[arg(long, value_name = "URL")]
    pub target: String,
    /// File holding the target's password (else MYSQL_PWD or PGPASSWORD).
    #[arg(long, value_name = "FILE")]
    pub target_password_file: Option<PathBuf>,
    /// What follows the restore: the server's own replication from the restored position
    /// (`native`), cairn's applier (`cairn`: then run `cairn replica run`), or nothing (`none`).
    #[arg(long, value_enum, default_value_t = Handover::Native)]
    pub handover: Handover,
    /// Parallel connections of the restore.
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// Drop what the target's databases hold first.
    #[arg(long)]
    pub clean: bool,
    /// Restore database FROM of the copy as TO (MySQL/MariaDB; repeatable). Not with
    /// `--handover native`: the source's changes name the source's databases.
    #[arg(long, value_name = "FROM=TO")]
    pub rename_db: Vec<String>,
    /// Leave the copy's accounts and roles out (by default a seed creates those the target
    /// lacks, when the copy holds them: `users = true`).
    #[arg(long)]
    pub without_users: bool,
    /// Set the accounts the target already has as the copy holds them.
    #[arg(long, conflicts_with = "without_users")]
    pub replace_users: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(config: &Config, command: &ReplicaCommand) -> CliResult {
    let args = match command {
        ReplicaCommand::Seed(args) => args,
        ReplicaCommand::Run(args) => {
            let destination = config.destination_of(&args.source).ok();
            let body = follow(config, args);
            return super::finish::recorded(
                config,
                Command::ReplicaRun,
                &args.source,
                destination,
                !args.dry_run,
                body,
            )
            .await;
        }
        ReplicaCommand::Status(args) => return show_status(config, args).await,
        ReplicaCommand::Stop(args) => return stop(args).await,
        ReplicaCommand::Events(args) => return events(config, args).await,
        ReplicaCommand::Detach(args) => return detach(args).await,
        ReplicaCommand::Reload(args) => return reload(config, args).await,
    };
    let destination = config.destination(&args.from).ok();
    let body = seed(config, args);
    super::finish::recorded(config, Command::ReplicaSeed, &args.source, destination, true, body).await
}

async fn seed(config: &Config, args: &SeedArgs) -> Result<(ExitStatus, RunFacts), Failure> {
    let request = SeedRequest {
        restore: RestoreRequest {
            from: Some(args.from.clone()),
            source: args.source.clone(),
            copy: Some(args.copy.clone()),
            target: args.target.clone(),
            target_password_file: args.target_password_file.clone(),
            jobs: args.jobs,
            clean: args.clean,
            rename_databases: args.rename_db.clone(),
            with_users: args.without_users.then_some(false),
            replace_users: args.replace_users,
            seeding: true,
            ..RestoreRequest::default()
        },
        handover: args.handover,
    };
    let report = replica::seed(config, &request).await?;
    let facts = RunFacts {
        copy: report.copy.clone(),
        ..RunFacts::default()
    };
    let printed = match args.json {
        true => print_out(&to_json(&report)),
        false => print_out(&render(&report)),
    };
    printed.map(|status| (status, facts))
}

fn render(report: &SeedReport) -> String {
    let restored = &report.restore;
    let mut out = format!(
        "seeded {}: {}, {}",
        restored.target,
        crate::text::count(restored.tables, "table"),
        crate::text::count(restored.rows, "row")
    );
    if restored.incrementals > 0 {
        out.push_str(&format!(
            "; replayed {}",
            crate::text::count(restored.incrementals, "incremental")
        ));
    }
    out.push('\n');
    if let Some(position) = &restored.position {
        out.push_str(&format!("restored position: {position}\n"));
    }
    match &report.replication {
        Some(state) => out.push_str(&format!(
            "native replication started: IO thread {}, SQL thread {}{}\n",
            if state.io_running { "running" } else { "NOT running" },
            if state.sql_running { "running" } else { "NOT running" },
            state
                .seconds_behind
                .map(|s| format!(", {s}s behind the source"))
                .unwrap_or_default()
        )),
        None if report.handover == Handover::Cairn => out.push_str(&format!(
            "handed to cairn's applier: start it with `cairn replica run --source {} --target …`\n",
            report.source
        )),
        None => out.push_str("no handover: the target stops at the restored position\n"),
    }
    out.push_str(&super::restore::accounts_text(&report.restore.accounts));
    out
}

/// Stops the applier after the transaction in flight on SIGINT or SIGTERM.
fn stop_on_signals() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        cancel.cancel();
    });
    token
}

async fn follow(config: &Config, args: &RunArgs) -> Result<(ExitStatus, RunFacts), Failure> {
    let request = RunRequest {
        source: args.source.clone(),
        target: args.target.request(),
        options: crate::engine::follow::FollowOptions {
            dry_run: args.dry_run,
            catch_up: args.catch_up,
            stop: stop_on_signals(),
            reconnect_limit: args.reconnect_limit,
            max_wait: std::time::Duration::from_secs(args.max_wait.max(1)),
            sample_rows: args.sample_rows,
            replica_server_id: args.server_id,
        },
        auto_resync: args.auto_resync.as_ref().map(|from| AutoResync {
            from: from.clone(),
            limit: args.resync_limit,
        }),
    };
    let report = replica_run::run(config, &request).await?;
    let printed = match args.json {
        true => print_out(&to_json(&report)),
        false => print_out(&render_run(&report)),
    };
    printed.map(|status| (status, RunFacts::default()))
}

fn render_run(report: &RunReport) -> String {
    let follow = &report.follow;
    let mut out = String::new();
    if let Some(start) = &follow.started_at {
        out.push_str(&format!(
            "replica {} of source {}: from {start}\n",
            follow.target, follow.source
        ));
    }
    for line in &follow.validation {
        out.push_str(&format!("validation: {line}\n"));
    }
    if report.resyncs > 0 {
        out.push_str(&format!(
            "re-seeded {}\n",
            crate::text::count(u64::from(report.resyncs), "time")
        ));
    }
    out.push_str(&format!(
        "{}: applied {}, {}{}\n",
        follow.stopped,
        crate::text::count(follow.transactions, "transaction"),
        crate::text::count(follow.row_changes, "row change"),
        follow
            .position
            .as_ref()
            .map(|p| format!("; at {p}"))
            .unwrap_or_default()
    ));
    if follow.reconnections > 0 {
        out.push_str(&format!(
            "reconnected {}\n",
            crate::text::count(u64::from(follow.reconnections), "time")
        ));
    }
    out
}

async fn show_status(config: &Config, args: &ReplicaStatusArgs) -> CliResult {
    let replicas = replica_run::status(config, &args.target.request(), args.source.as_deref()).await?;
    match args.json {
        true => print_out(&to_json(&replicas)),
        false => print_out(&render_status(&replicas)),
    }
}

fn render_status(replicas: &[ReplicaStatus]) -> String {
    if replicas.is_empty() {
        return "no replicas of cairn's applier on this target\n".into();
    }
    let mut out = String::new();
    for replica in replicas {
        let state = &replica.state;
        out.push_str(&format!(
            "{} → {}: {}{}\n",
            state.source,
            state.databases,
            if state.running { "running" } else { "not running" },
            state.applier.as_deref().map(|a| format!(" ({a})")).unwrap_or_default()
        ));
        if let Some(applied) = &state.applied {
            out.push_str(&format!(
                "  applied: {applied} ({})\n",
                crate::text::count(state.transactions, "transaction")
            ));
        }
        match (&replica.lag_bytes, &replica.lag_seconds, &replica.lag_unknown) {
            (Some(bytes), Some(seconds), _) => out.push_str(&format!("  lag: {bytes} bytes, {seconds} s\n")),
            (_, _, Some(why)) => out.push_str(&format!("  lag: unknown: {why}\n")),
            _ => {}
        }
        if let Some(at) = &state.heartbeat_at {
            out.push_str(&format!("  last heartbeat: {at}\n"));
        }
        if let Some(error) = &state.last_error {
            out.push_str(&format!(
                "  last error{}: {error}\n",
                state
                    .last_error_at
                    .as_deref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default()
            ));
        }
    }
    out
}

async fn stop(args: &StopArgs) -> CliResult {
    let state = replica_run::stop(
        &args.target.request(),
        &args.source,
        std::time::Duration::from_secs(args.wait),
    )
    .await?;
    match args.json {
        true => print_out(&to_json(&state)),
        false => print_out(&format!(
            "the applier of source {} on {} is stopped{}\n",
            state.source,
            state.databases,
            state.applied.as_ref().map(|p| format!(" at {p}")).unwrap_or_default()
        )),
    }
}

async fn detach(args: &DetachArgs) -> CliResult {
    let detached = replica_run::detach(&args.target.request(), &args.source).await?;
    match args.json {
        true => print_out(&to_json(&detached)),
        false => print_out(&format!(
            "the replica of source {} on {} is detached: {} sequences set past their largest values, {} foreign keys \
             added{}\n",
            detached.source,
            detached.target,
            detached.sequences,
            detached.foreign_keys_added,
            match detached.foreign_keys_not_valid.is_empty() {
                true => String::new(),
                false => format!(", left NOT VALID: {}", detached.foreign_keys_not_valid.join(", ")),
            }
        )),
    }
}

async fn reload(config: &Config, args: &ReloadArgs) -> CliResult {
    let reloaded = replica_run::reload(config, &args.target.request(), &args.source, &args.tables).await?;
    if args.json {
        return print_out(&to_json(&reloaded));
    }
    let mut out = format!(
        "reloaded {} of source {} into {} ({}) at {}; `cairn replica run` applies their changes from there\n",
        reloaded.tables.join(", "),
        reloaded.source,
        reloaded.target,
        crate::text::count(reloaded.rows, "row"),
        reloaded.position
    );
    if !reloaded.dropped.is_empty() {
        out.push_str(&format!(
            "dropped (gone from the source): {}\n",
            reloaded.dropped.join(", ")
        ));
    }
    if !reloaded.foreign_keys_dropped.is_empty() {
        out.push_str(&format!(
            "foreign keys dropped (replica detach makes them again): {}\n",
            reloaded.foreign_keys_dropped.join(", ")
        ));
    }
    print_out(&out)
}

async fn events(config: &Config, args: &EventsArgs) -> CliResult {
    let request = replica_run::EventsRequest {
        source: args.source.clone(),
        targets: args
            .targets
            .iter()
            .map(|target| TargetRequest {
                target: target.clone(),
                target_password_file: args.target_password_file.clone(),
            })
            .collect(),
        options: crate::engine::event_tables::EventTablesOptions {
            table: args.table.clone(),
            key: args.key.clone(),
            batch: args.batch,
            dry_run: args.dry_run,
            catch_up: args.catch_up,
            notify_channel: args.notify.clone(),
            max_idle: std::time::Duration::from_secs(args.max_idle.max(1)),
            stop: stop_on_signals(),
        },
    };
    let report = replica_run::events(config, &request).await?;
    if args.json {
        return print_out(&to_json(&report));
    }
    let mut out = String::new();
    for line in &report.validation {
        out.push_str(&format!("validation: {line}\n"));
    }
    for target in &report.targets {
        out.push_str(&format!(
            "{}: {} copied in {}, now up to key {}\n",
            target.target,
            crate::text::count(target.rows_copied, "row"),
            crate::text::count(target.batches, "transaction"),
            target.max_key.as_deref().unwrap_or("(none)")
        ));
    }
    out.push_str(&format!("{}\n", report.stopped));
    print_out(&out)
}
