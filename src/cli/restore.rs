//! `cairn restore`: its arguments, the dry run's description, the restore and its report.

use std::path::PathBuf;

use clap::Args;

use super::{CliResult, Failure, print_out, to_json};
use crate::config::Config;
use crate::engine::UntilArgs;
use crate::exit::ExitStatus;
use crate::jobs::history::{Command, RunFacts};
use crate::jobs::restore::{self, RestoreRequest};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Destination holding the copies: a configured name, a path or s3://bucket/prefix (default:
    /// the source's configured destination).
    #[arg(long, value_name = "DEST")]
    pub from: Option<String>,
    /// Name of the source whose copy to restore.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// Copy id (or a unique start of one), or `latest`.
    #[arg(long, value_name = "ID", default_value = "latest")]
    pub copy: String,
    /// Restore the newest copy that finished before TIME (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in
    /// UTC) instead of --copy.
    #[arg(long, value_name = "TIME")]
    pub before: Option<String>,
    /// Database to restore into (postgres://…, mysql://…).
    #[arg(long, value_name = "URL", required_unless_present = "to_sql")]
    pub target: Option<String>,
    /// Instead of restoring into a database, write a SQL script the `mysql` client or psql loads
    /// to FILE (`-`: standard output), up to the chosen point. An existing file is kept.
    #[arg(long, value_name = "FILE", conflicts_with = "target")]
    pub to_sql: Option<std::path::PathBuf>,
    /// File holding the password of --target (else PGPASSWORD or MYSQL_PWD; a password in the URL
    /// is visible to every user in the process list).
    #[arg(long, value_name = "FILE")]
    pub target_password_file: Option<PathBuf>,
    /// Parallel connections (default: the CPUs, at most 8).
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// Drop everything in the target database before restoring (it must otherwise be empty).
    #[arg(long)]
    pub clean: bool,
    /// Restore only this table: DATABASE.TABLE / SCHEMA.TABLE, or TABLE in any; `*` and `?`
    /// match. Repeatable.
    #[arg(long = "table", value_name = "PATTERN")]
    pub tables: Vec<String>,
    /// Leave this table out (same patterns). Repeatable.
    #[arg(long = "exclude-table", value_name = "PATTERN")]
    pub exclude_tables: Vec<String>,
    /// Restore table OLD (TABLE or DATABASE.TABLE) as NEW, beside the live one. Repeatable.
    #[arg(long = "rename-table", value_name = "OLD=NEW")]
    pub rename_tables: Vec<String>,
    /// Keep the restored tables' foreign keys to tables not restored (the target has those).
    #[arg(long)]
    pub keep_foreign_keys: bool,
    /// PostgreSQL: restore the chosen tables into schema NAME (created if missing), beside the
    /// live ones.
    #[arg(long, value_name = "NAME")]
    pub into_schema: Option<String>,
    /// Restore MySQL database FROM under the name TO. Repeatable.
    #[arg(long, value_name = "FROM=TO")]
    pub rename_db: Vec<String>,
    /// Keep the restore out of the target's binary log (MySQL; needs SUPER or SYSTEM_VARIABLES_ADMIN).
    #[arg(long)]
    pub no_binlog: bool,
    /// MySQL: compare CHECKSUM TABLE of every restored table with the one recorded by `backup --checksum`.
    #[arg(long)]
    pub checksum: bool,
    /// Replay the incrementals up to TIME (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC): MySQL, the
    /// last transaction started at or before it; PostgreSQL, the last committed at or before it.
    #[arg(long, value_name = "TIME", group = "stop")]
    pub until: Option<String>,
    /// MySQL: replay up to and including the transaction with this GTID (`0-1-42`, `uuid:42`).
    #[arg(long, value_name = "GTID", group = "stop")]
    pub until_gtid: Option<String>,
    /// MySQL: replay every transaction that ends at or before this binary log position.
    #[arg(long, value_name = "FILE:POS", group = "stop")]
    pub until_position: Option<String>,
    /// PostgreSQL: replay every transaction whose commit ends at or before this LSN (`16/B374D848`).
    #[arg(long, value_name = "LSN", group = "stop")]
    pub until_lsn: Option<String>,
    /// PostgreSQL: replay up to and including the transaction with this id (`xmin`, or
    /// `pg_current_xact_id()`).
    #[arg(long, value_name = "XID", group = "stop")]
    pub until_xid: Option<String>,
    /// Continue a replay that stopped, from the position the target recorded.
    #[arg(long)]
    pub resume: bool,
    /// Also write the log position the restored data corresponds to, as JSON, to PATH (it is
    /// printed, and recorded in the target, in any case).
    #[arg(long, value_name = "PATH")]
    pub position_file: Option<std::path::PathBuf>,
    /// Create the copy's accounts and roles with their grants on the target before the data
    /// (default for a whole-server copy restored under its own names; the copy must hold them:
    /// `users = true`). Existing accounts are kept as they are.
    #[arg(long, conflicts_with = "without_users")]
    pub with_users: bool,
    /// Leave the copy's accounts out.
    #[arg(long)]
    pub without_users: bool,
    /// With the accounts: set those the target already has as the copy holds them.
    #[arg(long, conflicts_with = "without_users")]
    pub replace_users: bool,
    /// Print the chain of copies, their files and the stop point that would be used, and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Print results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(config: &Config, args: &RestoreArgs) -> CliResult {
    let destination = match &args.from {
        Some(from) => config.destination(from).ok(),
        None => config.destination_of(&args.source).ok(),
    };
    let body = restore(config, args);
    super::finish::recorded(config, Command::Restore, &args.source, destination, !args.dry_run, body).await
}

async fn restore(config: &Config, args: &RestoreArgs) -> Result<(ExitStatus, RunFacts), Failure> {
    let done = |status: ExitStatus| (status, RunFacts::default());
    if args.jobs == Some(0) {
        return Err(Failure::from(restore::RestoreError::Usage(
            "--jobs must be at least 1".into(),
        )));
    }
    let before = match &args.before {
        Some(time) => Some(restore::parse_time("--before", time)?),
        None => None,
    };
    let request = RestoreRequest {
        from: args.from.clone(),
        before,
        source: args.source.clone(),
        copy: Some(args.copy.clone()),
        target: args.target.clone().unwrap_or_default(),
        target_password_file: args.target_password_file.clone(),
        jobs: args.jobs,
        clean: args.clean,
        rename_databases: args.rename_db.clone(),
        no_binlog: args.no_binlog,
        verify_checksums: args.checksum,
        until: restore::parse_until(UntilArgs {
            time: args.until.as_deref(),
            gtid: args.until_gtid.as_deref(),
            position: args.until_position.as_deref(),
            lsn: args.until_lsn.as_deref(),
            xid: args.until_xid.as_deref(),
        })?,
        resume: args.resume,
        tables: args.tables.clone(),
        exclude_tables: args.exclude_tables.clone(),
        rename_tables: args.rename_tables.clone(),
        keep_foreign_keys: args.keep_foreign_keys,
        into_schema: args.into_schema.clone(),
        to_sql: args.to_sql.clone(),
        with_users: match (args.with_users || args.replace_users, args.without_users) {
            (true, _) => Some(true),
            (false, true) => Some(false),
            (false, false) => None,
        },
        replace_users: args.replace_users,
        seeding: false,
    };
    let plan = restore::plan(config, &request).await?;
    if args.dry_run {
        if args.json {
            let checks = restore::check(&plan).await?;
            let mut value = serde_json::to_value(&plan).expect("plans serialize");
            value["checks"] = serde_json::json!(checks.iter().map(|c| c.trim()).collect::<Vec<_>>());
            return print_out(&to_json(&value)).map(done);
        }
        let text = restore::describe(&plan).await?;
        return print_out(&format!("{text}dry run: nothing was written\n")).map(done);
    }
    if plan.to_sql.is_some() {
        let report = crate::jobs::restore_sql::write_sql(&plan).await?;
        let facts = RunFacts {
            bytes: plan.chain.iter().map(|c| c.bytes).sum(),
            copy: plan.chain.last().map(|c| c.id.clone()),
            error: None,
        };
        // The script may be on standard output: the summary goes to the log.
        tracing::info!(
            "wrote copy {} to {} as SQL: {}, {}",
            plan.chain.first().map(|c| c.id.as_str()).unwrap_or_default(),
            report.target,
            crate::text::count(report.tables, "table"),
            crate::text::count(report.rows, "row")
        );
        return Ok((ExitStatus::Success, facts));
    }
    let mut report = restore::run(&plan).await?;
    let facts = RunFacts {
        bytes: plan.chain.iter().map(|c| c.bytes).sum(),
        copy: plan.chain.last().map(|c| c.id.clone()),
        error: None,
    };
    report.until_not_covered = plan.until_not_covered.clone();
    if let (Some(path), Some(position)) = (&args.position_file, &report.position) {
        restore::write_position(path, &plan, position)?;
    }
    if args.json {
        return print_out(&to_json(&report)).map(|status| (status, facts));
    }
    let mut text = format!(
        "restored {} into {}: {}, {} from {}",
        plan.chain.first().map(|c| c.id.as_str()).unwrap_or_default(),
        report.target,
        crate::text::count(report.tables, "table"),
        crate::text::count(report.rows, "row"),
        crate::text::count(report.files, "file"),
    );
    if report.incrementals > 0 {
        text.push_str(&format!(
            "; replayed {}: {}, {}",
            crate::text::count(report.incrementals, "incremental"),
            crate::text::count(report.transactions, "transaction"),
            crate::text::count(report.row_changes, "row change")
        ));
    }
    text.push_str(&format!(" in {:.1}s\n", report.seconds));
    text.push_str(&accounts_text(&report.accounts));
    if let (Some(until), Some(why)) = (&plan.until, &plan.until_not_covered) {
        text.push_str(&format!(
            "the requested point ({until}) is not covered: {why}; restored to the end of the chain\n"
        ));
    }
    let shown = match &report.position {
        Some(crate::repo::status::LogPosition::Mysql { file, position, gtid }) if !file.is_empty() => {
            text.push_str(&format!(
                "binary log position: {file}:{position}{}\n",
                gtid.as_deref().map(|g| format!(", GTID {g}")).unwrap_or_default(),
            ));
            true
        }
        Some(crate::repo::status::LogPosition::Postgres { lsn, slot, .. }) if report.incrementals > 0 => {
            text.push_str(&format!(
                "source position: LSN {lsn}{}\n",
                slot.as_deref().map(|s| format!(" (slot {s})")).unwrap_or_default()
            ));
            true
        }
        _ => false,
    };
    if shown && let Some(path) = &args.position_file {
        text.push_str(&format!("written to {}\n", path.display()));
    }
    print_out(&text).map(|status| (status, facts))
}

/// What a restore did with the copy's accounts, a line per outcome (names only).
pub(super) fn accounts_text(accounts: &[crate::engine::accounts::AccountOutcome]) -> String {
    let mut text = String::new();
    for (outcome, why) in [
        ("created", ""),
        ("replaced", ""),
        (
            "kept",
            " (the target has them; --replace-users sets them as the copy holds them)",
        ),
    ] {
        let names: Vec<&str> = accounts
            .iter()
            .filter(|a| a.outcome == outcome)
            .map(|a| a.name.as_str())
            .collect();
        if !names.is_empty() {
            text.push_str(&format!("accounts {outcome}{why}: {}\n", names.join(", ")));
        }
    }
    for account in accounts {
        for note in &account.notes {
            text.push_str(&format!("account {}: {note}\n", account.name));
        }
    }
    text
}
