//! The command line: argument definitions, turning them into library plans, printing results,
//! and mapping errors to exit codes. The only place that uses `anyhow`.

mod backup;
mod config;
mod copy;
mod finish;
mod key;
mod logging;
mod purge;
mod replica;
mod restore;
mod slot;
mod status;
mod table;
mod verify;

pub use backup::BackupArgs;
pub use config::ConfigCommand;
pub use logging::{LogFormat, init_logging};
pub use purge::PurgeArgs;
pub use replica::ReplicaCommand;
pub use restore::RestoreArgs;
pub use slot::SlotCommand;
pub use status::StatusArgs;
pub use verify::VerifyArgs;

use logging::parse_log_filter;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::exit::{Classify, EXIT_CODES_HELP, ExitStatus};

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
    /// Only errors on stderr: no progress, no informational messages (results still go to stdout).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// How messages on stderr are written: text lines, or one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CAIRN_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
    /// After each run, write every configured source's metrics to FILE in the Prometheus text
    /// format (overrides `metrics-file`).
    #[arg(long, global = true, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
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
    Restore(Box<RestoreArgs>),
    /// List the copies of one or all sources on a destination.
    #[command(after_help = EXIT_CODES_HELP)]
    Status(StatusArgs),
    /// Copy copies (with the copies they need) from one destination to another.
    #[command(after_help = EXIT_CODES_HELP)]
    Copy(copy::CopyArgs),
    /// Check copies against their manifests and the status, without a database.
    #[command(after_help = EXIT_CODES_HELP)]
    Verify(VerifyArgs),
    /// Remove copies beyond the retention policy (the `[retention]` table); a dry run without --apply.
    #[command(after_help = EXIT_CODES_HELP)]
    Purge(PurgeArgs),
    /// What a source keeps on its server for incrementals (a PostgreSQL replication slot).
    #[command(subcommand, after_help = EXIT_CODES_HELP)]
    Slot(SlotCommand),
    /// Replicas: seed one from the copies and hand it over to native replication, or follow the source with cairn's own applier (`run`, `status`, `stop`), event tables, MySQL→PostgreSQL upkeep.
    #[command(subcommand, after_help = EXIT_CODES_HELP)]
    Replica(ReplicaCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Encryption keys.
    #[command(subcommand, after_help = EXIT_CODES_HELP)]
    Key(key::KeyCommand),
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

/// The environment as text. `std::env::vars` panics on any variable that is not UTF-8 (a
/// Latin-1 value inherited from a cron job is enough): such variables are left out, except
/// cairn's settings, which are refused by name (`CAIRN_CONFIG`, a path, is clap's to read).
fn environment() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (key, value) in std::env::vars_os() {
        match (key.into_string(), value.into_string()) {
            (Ok(key), Ok(value)) => vars.push((key, value)),
            (Ok(key), Err(_)) if crate::config::is_setting(&key) => {
                return Err(ConfigError::Invalid {
                    origin: "the environment".into(),
                    key,
                    message: "its value is not UTF-8 text; set it again in UTF-8".into(),
                });
            }
            _ => {}
        }
    }
    Ok(vars)
}

fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let mut config = Config::load(cli.config.as_deref(), environment()?)?;
    if let Some(path) = &cli.metrics_file {
        config.settings.metrics_file = Some(path.clone());
    }
    Ok(config)
}

/// Makes the configured keys available for reading encrypted copies.
fn with_keys(config: Config) -> Config {
    crate::repo::crypt::install_reading_keys(config.reading_keys());
    config
}

async fn dispatch(cli: Cli) -> CliResult {
    match &cli.command {
        Command::Backup(args) => backup::run(&load_config(&cli)?, args).await,
        Command::Restore(args) => restore::run(&with_keys(load_config(&cli)?), args).await,
        Command::Status(args) => status::run(&load_config(&cli)?, args).await,
        Command::Slot(command) => slot::run(&load_config(&cli)?, command).await,
        Command::Verify(args) => verify::run(&with_keys(load_config(&cli)?), args).await,
        Command::Purge(args) => purge::run(&load_config(&cli)?, args).await,
        Command::Replica(command) => replica::run(&with_keys(load_config(&cli)?), command).await,
        Command::Config(command) => config::run(&load_config(&cli)?, command),
        Command::Key(command) => key::run(command),
        Command::Copy(args) => copy::run(&load_config(&cli)?, args).await,
    }
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
