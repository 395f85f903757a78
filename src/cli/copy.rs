//! `cairn copy`: copies carried from one destination to another, and its report.

use clap::Args;

use super::{CliResult, print_out, to_json};
use crate::config::Config;
use crate::exit::{Classify, ExitStatus};
use crate::jobs::copy::{self, CopyRequest};

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Destination holding the copies: a configured name, a path or s3://bucket/prefix.
    #[arg(long, value_name = "DEST")]
    pub from: String,
    /// Destination to fill.
    #[arg(long, value_name = "DEST")]
    pub to: String,
    /// Only this source (default: every source on --from).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// This copy (an id or a unique start of one) and the copies it needs; default: the latest
    /// copy with an intact chain.
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    pub copy: Option<String>,
    /// Every copy of the source(s).
    #[arg(long)]
    pub all: bool,
    /// Print results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(config: &Config, args: &CopyArgs) -> CliResult {
    let request = CopyRequest {
        from: args.from.clone(),
        to: args.to.clone(),
        source: args.source.clone(),
        copy: args.copy.clone(),
        all: args.all,
    };
    let outcomes = copy::run(config, &request, &config.lock_options()).await?;
    // Every source is reported; the exit status is the worst of theirs.
    let mut worst = ExitStatus::Success;
    let mut reports = Vec::new();
    let mut text = String::new();
    for outcome in outcomes {
        let report = match outcome.result {
            Ok(report) => report,
            Err(e) => {
                eprintln!("error: {}: {e}", outcome.source);
                worst = worst.worse(e.exit_status());
                text.push_str(&format!("{}: failed, {}\n", outcome.source, e.exit_status()));
                reports.push(serde_json::json!({"source": outcome.source, "ok": false, "error": e.to_string()}));
                continue;
            }
        };
        text.push_str(&format!(
            "{}: copied {} ({} files, {} bytes) from {} to {}",
            report.source,
            crate::text::count(report.copied.len() as u64, "copy"),
            report.files,
            report.bytes,
            report.from,
            report.to
        ));
        if !report.present.is_empty() {
            text.push_str(&format!("; {} already there", report.present.len()));
        }
        text.push('\n');
        reports.push(serde_json::to_value(&report).expect("results always serialize"));
    }
    if args.json {
        print_out(&to_json(&reports))?;
    } else {
        print_out(&text)?;
    }
    Ok(worst)
}
