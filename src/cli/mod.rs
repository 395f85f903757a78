//! The command line: argument definitions, turning them into library plans, printing results,
//! and mapping errors to exit codes. The only place that uses `anyhow`.

mod status;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::exit::{Classify, EXIT_CODES_HELP, ExitStatus};
use crate::jobs::backup::{self, BackupRequest};
use crate::jobs::restore::{self, RestoreRequest};
use crate::repo::kinds::{RequestedType, RunType};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Backs up MySQL/MariaDB and PostgreSQL databases to a local directory or S3, and brings them back.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Configuration file (TOML). Without one, sources and destinations come from the flags.
    #[arg(long, global = true, env = "CAIRN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter for messages on stderr: error, warn, info, debug, trace.
    #[arg(
        long,
        global = true,
        env = "CAIRN_LOG",
        default_value = "info",
        value_name = "FILTER",
        value_parser = parse_log_filter
    )]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a full or incremental copy of each configured source (or of --source).
    #[command(after_help = EXIT_CODES_HELP)]
    Backup(BackupArgs),
    /// Replay a copy (and the copies it needs) into a target database.
    #[command(after_help = EXIT_CODES_HELP)]
    Restore(RestoreArgs),
    /// List the copies of one or all sources on a destination.
    #[command(after_help = EXIT_CODES_HELP)]
    Status(StatusArgs),
    /// Check copies against their manifests (not available yet).
    Verify(ReservedArgs),
    /// Remove copies beyond the retention policy (not available yet).
    Purge(ReservedArgs),
    /// Seed and hand over replicas (not available yet).
    Replica(ReservedArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

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
    /// Print the validated plan and exit; nothing is written.
    #[arg(long)]
    pub dry_run: bool,
    /// Print results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Destination holding the copies: a configured name, a path or s3://bucket/prefix.
    #[arg(long, value_name = "DEST")]
    pub from: String,
    /// Name of the source whose copy to restore.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// Copy id, or `latest`.
    #[arg(long, value_name = "ID", default_value = "latest")]
    pub copy: String,
    /// Database to restore into (postgres://…, mysql://…).
    #[arg(long, value_name = "URL")]
    pub target: String,
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
    /// Restore MySQL database FROM under the name TO. Repeatable.
    #[arg(long, value_name = "FROM=TO")]
    pub rename_db: Vec<String>,
    /// Keep the restore out of the target's binary log (MySQL; needs SUPER or SYSTEM_VARIABLES_ADMIN).
    #[arg(long)]
    pub no_binlog: bool,
    /// MySQL: compare CHECKSUM TABLE of every restored table with the one recorded by `backup --checksum`.
    #[arg(long)]
    pub checksum: bool,
    /// MySQL: replay the incrementals up to the last transaction started at or before TIME
    /// (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC).
    #[arg(long, value_name = "TIME", conflicts_with_all = ["until_gtid", "until_position"])]
    pub until: Option<String>,
    /// MySQL: replay up to and including the transaction with this GTID (`0-1-42`, `uuid:42`).
    #[arg(long, value_name = "GTID", conflicts_with = "until_position")]
    pub until_gtid: Option<String>,
    /// MySQL: replay every transaction that ends at or before this binary log position.
    #[arg(long, value_name = "FILE:POS")]
    pub until_position: Option<String>,
    /// MySQL: continue a replay that stopped, from the position the target recorded.
    #[arg(long)]
    pub resume: bool,
    /// Also write the log position the restored data corresponds to, as JSON, to PATH (it is
    /// printed, and recorded in the target, in any case).
    #[arg(long, value_name = "PATH")]
    pub position_file: Option<std::path::PathBuf>,
    /// Print the chain of copies, their files and the stop point that would be used, and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Print results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

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
}

#[derive(Debug, Args)]
pub struct ReservedArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the merged configuration (file + CAIRN_… variables) with secrets masked.
    Show,
    /// Validate the configuration and exit.
    Check,
}

fn parse_run_type(text: &str) -> Result<RunType, String> {
    text.parse()
}

/// An error on its way to the user, with the exit code it deserves.
pub struct Failure {
    status: ExitStatus,
    error: anyhow::Error,
}

impl<E> From<E> for Failure
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Failure {
            status: error.exit_status(),
            error: error.into(),
        }
    }
}

type CliResult = Result<ExitStatus, Failure>;

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Accepts a level (`info`) or directives in which every part is a level or `target=level`, so
/// a mistyped level is an error instead of a filter that silently matches nothing.
fn parse_log_filter(text: &str) -> Result<String, String> {
    let explain = || {
        format!(
            "{text:?} is not a log filter: use one of {}, or directives like info,cairn=debug",
            LOG_LEVELS.join(", ")
        )
    };
    let parts_valid = text.split(',').all(|part| {
        let level = part.rsplit_once('=').map_or(part, |(_, level)| level);
        LOG_LEVELS.contains(&level.trim().to_ascii_lowercase().as_str())
    });
    if !parts_valid || tracing_subscriber::EnvFilter::try_new(text).is_err() {
        return Err(explain());
    }
    Ok(text.to_string())
}

/// Sets up logging to stderr. A plain level keeps the AWS SDK's own chatter (configuration
/// files not found, region probes) down to errors; full directives are used as written.
pub fn init_logging(cli: &Cli) {
    let directives = if LOG_LEVELS.contains(&cli.log.trim().to_ascii_lowercase().as_str()) {
        format!(
            "{},aws_config=error,aws_runtime=error,aws_smithy_runtime=error",
            cli.log.trim()
        )
    } else {
        cli.log.clone()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Runs a parsed command line and returns the exit status; errors are printed to stderr.
pub fn run(cli: Cli) -> ExitStatus {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitStatus::Failed;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(status) => status,
        Err(failure) => {
            eprintln!("error: {}", render(&failure.error));
            failure.status
        }
    }
}

/// An error and its causes in one line, each cause once: most messages already name their
/// cause, and printing the chain again would say it twice.
fn render(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn load_config(cli: &Cli) -> Result<Config, Failure> {
    Ok(Config::load(cli.config.as_deref(), std::env::vars())?)
}

async fn dispatch(cli: Cli) -> CliResult {
    match &cli.command {
        Command::Backup(args) => backup_command(&load_config(&cli)?, args).await,
        Command::Restore(args) => restore_command(&load_config(&cli)?, args).await,
        Command::Status(args) => status::run(&load_config(&cli)?, args).await,
        Command::Verify(_) => Ok(not_available("verify")),
        Command::Purge(_) => Ok(not_available("purge")),
        Command::Replica(_) => Ok(not_available("replica")),
        Command::Config(command) => {
            let config = load_config(&cli)?;
            match command {
                ConfigCommand::Show => print_out(&config.show()),
                ConfigCommand::Check => {
                    backup::check_sources(&config)?;
                    let origin = config
                        .path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "environment".into());
                    print_out(&format!(
                        "configuration is valid ({origin}): {}, {}\n",
                        crate::text::count(config.settings.sources.len() as u64, "source"),
                        crate::text::count(config.settings.destinations.len() as u64, "destination")
                    ))
                }
            }
        }
    }
}

fn not_available(command: &str) -> ExitStatus {
    eprintln!(
        "error: `cairn {command}` is not available yet in cairn {}",
        crate::CAIRN_VERSION
    );
    ExitStatus::Usage
}

/// Writes results to stdout; a closed pipe (`cairn status | head`) is not an error.
fn print_out(text: &str) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitStatus::Success),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitStatus::Success),
        Err(e) => Err(Failure {
            status: ExitStatus::Failed,
            error: anyhow::Error::new(e).context("writing to stdout"),
        }),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("results always serialize");
    text.push('\n');
    text
}

async fn backup_command(config: &Config, args: &BackupArgs) -> CliResult {
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
        password_file: args.password_file.clone(),
    };
    let plan = backup::plan(config, &request)?;
    if args.dry_run {
        let outcomes = backup::dry_run(&plan).await?;
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
                    worst = worse(worst, e.exit_status());
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
    let outcomes = backup::run(&plan, &config.lock_options()).await?;
    let mut worst = ExitStatus::Success;
    let mut lines = String::new();
    let mut reports = Vec::new();
    for outcome in &outcomes {
        match &outcome.result {
            Ok(copy) => {
                lines.push_str(&format!(
                    "{}: {} copy {} recorded: {}, {} bytes, {}s, log position {}\n",
                    outcome.source,
                    copy.kind,
                    copy.id,
                    crate::text::count(copy.files, "file"),
                    copy.bytes,
                    (copy.finished_at - copy.started_at).num_seconds(),
                    status::position(&copy.log_range.end)
                ));
                reports.push(serde_json::json!({"source": outcome.source, "ok": true, "copy": copy}));
            }
            Err(e) => {
                eprintln!("error: {}: {e}", outcome.source);
                lines.push_str(&format!("{}: failed, {}\n", outcome.source, e.exit_status()));
                worst = worse(worst, e.exit_status());
                reports.push(serde_json::json!({"source": outcome.source, "ok": false, "error": e.to_string()}));
            }
        }
    }
    if args.json {
        print_out(&to_json(&reports))?;
    } else {
        print_out(&lines)?;
    }
    Ok(worst)
}

/// The status of a run with several outcomes: a configuration error matters most, then a
/// failure, then a temporary condition.
fn worse(a: ExitStatus, b: ExitStatus) -> ExitStatus {
    let rank = |s: ExitStatus| match s {
        ExitStatus::Success => 0,
        ExitStatus::Temporary => 1,
        ExitStatus::Failed => 2,
        ExitStatus::Usage => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}

async fn restore_command(config: &Config, args: &RestoreArgs) -> CliResult {
    if args.jobs == Some(0) {
        return Err(Failure::from(restore::RestoreError::Usage(
            "--jobs must be at least 1".into(),
        )));
    }
    let request = RestoreRequest {
        from: args.from.clone(),
        source: args.source.clone(),
        copy: Some(args.copy.clone()),
        target: args.target.clone(),
        target_password_file: args.target_password_file.clone(),
        jobs: args.jobs,
        clean: args.clean,
        rename_databases: args.rename_db.clone(),
        no_binlog: args.no_binlog,
        verify_checksums: args.checksum,
        until: restore::parse_until(
            args.until.as_deref(),
            args.until_gtid.as_deref(),
            args.until_position.as_deref(),
        )?,
        resume: args.resume,
    };
    let plan = restore::plan(config, &request).await?;
    if args.dry_run {
        if args.json {
            let checks = restore::check(&plan).await?;
            let mut value = serde_json::to_value(&plan).expect("plans serialize");
            value["checks"] = serde_json::json!(checks.iter().map(|c| c.trim()).collect::<Vec<_>>());
            return print_out(&to_json(&value));
        }
        let text = restore::describe(&plan).await?;
        return print_out(&format!("{text}dry run: nothing was written\n"));
    }
    let mut report = restore::run(&plan).await?;
    report.until_not_covered = plan.until_not_covered.clone();
    if let (Some(path), Some(position)) = (&args.position_file, &report.position) {
        restore::write_position(path, &plan, position)?;
    }
    if args.json {
        return print_out(&to_json(&report));
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
    if let (Some(until), Some(why)) = (&plan.until, &plan.until_not_covered) {
        text.push_str(&format!(
            "the requested point ({until}) is not covered: {why}; restored to the end of the chain\n"
        ));
    }
    if let Some(crate::repo::status::LogPosition::Mysql { file, position, gtid }) = &report.position
        && !file.is_empty()
    {
        text.push_str(&format!(
            "binary log position: {file}:{position}{}\n",
            gtid.as_deref().map(|g| format!(", GTID {g}")).unwrap_or_default(),
        ));
        if let Some(path) = &args.position_file {
            text.push_str(&format!("written to {}\n", path.display()));
        }
    }
    print_out(&text)
}
