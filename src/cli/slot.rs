//! `cairn slot`: what a source keeps on its server for incrementals, and dropping it.

use clap::{Args, Subcommand};

use super::{CliResult, print_out, to_json};
use crate::config::Config;
use crate::jobs::slots;

#[derive(Debug, Subcommand)]
pub enum SlotCommand {
    /// Drop a PostgreSQL source's replication slot and publication, so the source stops keeping
    /// WAL for cairn. Its next copy must be a full one.
    Drop(SlotDropArgs),
}

#[derive(Debug, Args)]
pub struct SlotDropArgs {
    /// The configured source whose slot to drop.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// Show what would be dropped, and drop nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(config: &Config, command: &SlotCommand) -> CliResult {
    let SlotCommand::Drop(args) = command;
    let source = &args.source;
    let held = match args.dry_run {
        true => slots::hold_of(config, source, &[]).await?.map(|report| report.hold),
        false => slots::drop_hold(config, source).await?,
    };
    if args.json {
        return print_out(&to_json(&serde_json::json!({
            "source": source,
            "dropped": !args.dry_run && held.is_some(),
            "hold": held,
        })));
    }
    let text = match (&held, args.dry_run) {
        (None, _) => format!("source {source} keeps no replication slot: nothing to drop\n"),
        (Some(held), true) => format!(
            "would drop {} {} of source {source} (it keeps {} of WAL) and its publication\ndry run: nothing was \
             dropped\n",
            held.kind,
            held.name,
            crate::text::bytes(held.retained_bytes)
        ),
        (Some(held), false) => format!(
            "dropped {} {} of source {source} (it kept {} of WAL) and its publication; the next copy of {source} \
             must be a full one (--type full, or on-log-gap = \"full\")\n",
            held.kind,
            held.name,
            crate::text::bytes(held.retained_bytes)
        ),
    };
    print_out(&text)
}
