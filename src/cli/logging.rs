//! Logging to stderr: the `--log` filter, checked, and the subscriber set up from it.

use super::Cli;

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Accepts a level (`info`) or directives in which every part is a level or `target=level`, so
/// a mistyped level is an error instead of a filter that silently matches nothing.
pub(super) fn parse_log_filter(text: &str) -> Result<String, String> {
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

/// Crates whose debug output would hold the statements cairn sends.
const QUIET_DRIVERS: &[&str] = &["tokio_postgres", "mysql_async", "mysql_common"];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per message.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Sets up logging to stderr. A plain level keeps the AWS SDK's own chatter (configuration
/// files not found, region probes) down to errors; full directives are used as written.
/// `--quiet` keeps only errors. On a terminal, progress is drawn as bars and log lines are
/// written above them; elsewhere (cron, a pipe, a log shipper) progress is logged.
pub fn init_logging(cli: &Cli) {
    let level = if cli.quiet { "error" } else { cli.log.trim() };
    let directives = if LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        format!("{level},aws_config=error,aws_runtime=error,aws_smithy_runtime=error")
    } else {
        cli.log.clone()
    };
    // The database drivers log every statement they send at debug level, and some statements
    // carry secrets (a role's password hash, a subscription's connection string): never below
    // info, whatever was asked.
    let drivers = match level.to_ascii_lowercase().as_str() {
        quieter @ ("off" | "error" | "warn") => quieter.to_string(),
        _ => "info".to_string(),
    };
    let directives = format!(
        "{directives},{}",
        QUIET_DRIVERS
            .iter()
            .map(|driver| format!("{driver}={drivers}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = match cli.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init(),
        LogFormat::Text if terminal && !cli.quiet => {
            let bars = crate::progress::draw_bars();
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(move || crate::progress::BarsWriter(bars.clone()))
                .with_ansi(std::env::var_os("NO_COLOR").is_none())
                .with_target(false)
                .try_init()
        }
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(terminal && std::env::var_os("NO_COLOR").is_none())
            .with_target(false)
            .try_init(),
    };
}
