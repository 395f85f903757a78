//! `cairn replica`: `seed` makes a replica from the copies on a destination and hands it over;
//! `run`, `status` and `stop` (cairn's own applier) are not available yet.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliResult, Failure, ReservedArgs, print_out, to_json};
use crate::config::Config;
use crate::exit::ExitStatus;
use crate::jobs::history::{Command, RunFacts};
use crate::jobs::replica::{self, Handover, SeedReport, SeedRequest};
use crate::jobs::restore::RestoreRequest;

#[derive(Debug, Subcommand)]
pub enum ReplicaCommand {
    /// Restore a source's chain into a new replica and hand it over to replication from the
    /// exact position the copies reached.
    Seed(SeedArgs),
    /// cairn's own continuous applier (not available yet).
    Run(ReservedArgs),
    /// The replicas cairn applies to (not available yet).
    Status(ReservedArgs),
    /// Stop a running applier (not available yet).
    Stop(ReservedArgs),
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
    /// (`native`), cairn's applier (`cairn`, not available yet), or nothing (`none`).
    #[arg(long, value_enum, default_value_t = Handover::Native)]
    pub handover: Handover,
    /// Parallel connections of the restore.
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// Drop what the target's databases hold first.
    #[arg(long)]
    pub clean: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(config: &Config, command: &ReplicaCommand) -> CliResult {
    let args = match command {
        ReplicaCommand::Seed(args) => args,
        ReplicaCommand::Run(_) => return Ok(super::not_available("replica run")),
        ReplicaCommand::Status(_) => return Ok(super::not_available("replica status")),
        ReplicaCommand::Stop(_) => return Ok(super::not_available("replica stop")),
    };
    let destination = config.destination(&args.from).ok();
    let body = seed(config, args);
    super::finish::recorded(config, Command::ReplicaSeed, &args.source, destination, true, body).await
}

async fn seed(config: &Config, args: &SeedArgs) -> Result<(ExitStatus, RunFacts), Failure> {
    let request = SeedRequest {
        restore: RestoreRequest {
            from: args.from.clone(),
            source: args.source.clone(),
            copy: Some(args.copy.clone()),
            target: args.target.clone(),
            target_password_file: args.target_password_file.clone(),
            jobs: args.jobs,
            clean: args.clean,
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
        None => out.push_str("no handover: the target stops at the restored position\n"),
    }
    out
}
