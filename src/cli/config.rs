//! `cairn config`: the merged configuration shown with secrets masked, or checked.

use clap::Subcommand;

use super::{CliResult, print_out};
use crate::config::Config;
use crate::jobs::backup;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the merged configuration (file + CAIRN_… variables) with secrets masked.
    Show,
    /// Validate the configuration and exit.
    Check,
}

/// Runs a `cairn config` subcommand.
pub(super) fn run(config: &Config, command: &ConfigCommand) -> CliResult {
    match command {
        ConfigCommand::Show => print_out(&config.show()),
        ConfigCommand::Check => {
            backup::check_sources(config)?;
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
