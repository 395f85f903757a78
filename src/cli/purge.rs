//! `cairn purge`: what `[retention]` removes of a source's copies — shown by default, removed
//! with `--apply`.

use clap::Args;

use super::{CliResult, print_out, to_json};
use crate::config::Config;
use crate::jobs::history::{Command, RunFacts};
use crate::jobs::purge::{self, PurgeReport, PurgeRequest};

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Destination holding the copies (default: the source's configured one).
    #[arg(long, value_name = "DEST")]
    pub from: Option<String>,
    /// Name of the source whose copies to purge.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// Remove what the retention leaves out (without it, only show it).
    #[arg(long)]
    pub apply: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(config: &Config, args: &PurgeArgs) -> CliResult {
    let destination = match &args.from {
        Some(from) => config.destination(from).ok(),
        None => config.destination_of(&args.source).ok(),
    };
    let body = async {
        let request = PurgeRequest {
            at: None,
            from: args.from.clone(),
            source: args.source.clone(),
            apply: args.apply,
        };
        let report = purge::run(config, &request).await?;
        let facts = RunFacts {
            bytes: report.bytes,
            ..RunFacts::default()
        };
        let printed = match args.json {
            true => print_out(&to_json(&report)),
            false => print_out(&render(&report)),
        };
        printed.map(|status| (status, facts))
    };
    super::finish::recorded(config, Command::Purge, &args.source, destination, args.apply, body).await
}

fn render(report: &PurgeReport) -> String {
    let verb = if report.applied { "removed" } else { "would remove" };
    let mut out = format!("source {} at {}\n", report.source, report.destination);
    for removal in &report.plan.remove {
        out.push_str(&format!(
            "  {verb} {} ({}): {}\n",
            removal.copy, removal.run_type, removal.reason
        ));
    }
    for leftover in &report.leftovers {
        out.push_str(&format!(
            "  {verb} the files of {leftover}: no manifest (a failed or killed run left them)\n"
        ));
    }
    out.push_str(&format!(
        "{} {}{}, {}; {} kept",
        verb,
        crate::text::count(report.plan.remove.len() as u64, "copy"),
        match report.leftovers.len() {
            0 => String::new(),
            n => format!(" and {}", crate::text::count(n as u64, "leftover folder")),
        },
        crate::text::bytes(report.bytes),
        crate::text::count(report.plan.keep.len() as u64, "copy"),
    ));
    if let (Some(earliest), Some(latest)) = (report.earliest, report.latest) {
        out.push_str(&format!(
            ", restorable from {} to {} UTC",
            earliest.format("%Y-%m-%d %H:%M:%S"),
            latest.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    out.push('\n');
    let something = !report.plan.remove.is_empty() || !report.leftovers.is_empty();
    if !report.applied && something {
        out.push_str("dry run: nothing was removed (pass --apply)\n");
    }
    out
}
