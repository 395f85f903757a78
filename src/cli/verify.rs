//! `cairn verify`: the copies of a source checked against their manifests and the status,
//! as a table or JSON; exit 1 when anything is damaged or missing.

use clap::Args;

use super::{CliResult, Failure, print_out, to_json};
use crate::config::Config;
use crate::exit::ExitStatus;
use crate::jobs::history::{Command, RunFacts};
use crate::jobs::verify::{self, VerifyReport, VerifyRequest};
use crate::jobs::verify_deep::{self, DeepReport, DeepRequest};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Destination holding the copies: a configured name, a path or s3://bucket/prefix.
    #[arg(long, value_name = "DEST")]
    pub from: String,
    /// Name of the source whose copies to verify.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// This copy and the copies it needs (default: the latest).
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    pub copy: Option<String>,
    /// Every copy of the source.
    #[arg(long)]
    pub all: bool,
    /// Restore the copy's full copy into a scratch database on --scratch and compare every table's
    /// rows with the count and digest the backup recorded.
    #[arg(long, requires = "scratch", conflicts_with = "all")]
    pub deep: bool,
    /// Server the scratch database is created on (postgres://… or mysql://…; a new database is
    /// made there and dropped afterwards).
    #[arg(long, value_name = "URL")]
    pub scratch: Option<String>,
    /// File holding the password of --scratch (else PGPASSWORD or MYSQL_PWD).
    #[arg(long, value_name = "FILE")]
    pub scratch_password_file: Option<std::path::PathBuf>,
    /// Leave the scratch database in place for inspection.
    #[arg(long, requires = "deep")]
    pub keep_scratch: bool,
    /// Parallel connections of the scratch restore.
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(config: &Config, args: &VerifyArgs) -> CliResult {
    let destination = config.destination(&args.from).ok();
    let body = verify(config, args);
    super::finish::recorded(config, Command::Verify, &args.source, destination, true, body).await
}

async fn verify(config: &Config, args: &VerifyArgs) -> Result<(ExitStatus, RunFacts), Failure> {
    if args.deep {
        return deep(config, args).await;
    }
    let request = VerifyRequest {
        from: args.from.clone(),
        source: args.source.clone(),
        copy: args.copy.clone(),
        all: args.all,
    };
    let report = verify::run(config, &request).await?;
    let status = match report.intact() {
        true => ExitStatus::Success,
        false => ExitStatus::Failed,
    };
    let printed = match args.json {
        true => print_out(&to_json(&report)),
        false => print_out(&render(&report)),
    };
    let facts = super::finish::facts(
        status,
        report.copies.iter().map(|c| c.bytes).sum(),
        report.copies.iter().map(|c| c.copy.clone()).max(),
        || {
            let damaged = report.copies.iter().filter(|c| !c.problems.is_empty()).count();
            let unrestorable = report
                .copies
                .iter()
                .filter(|c| c.unrestorable_because.is_some())
                .count();
            format!(
                "{} damaged, {} unrestorable",
                crate::text::count(damaged as u64, "copy"),
                crate::text::count(unrestorable as u64, "copy")
            )
        },
    );
    printed.map(|_| (status, facts))
}

fn render(report: &VerifyReport) -> String {
    let mut out = format!("source {} at {}\n", report.source, report.destination);
    if report.copies.is_empty() {
        out.push_str("  no copies\n");
        return out;
    }
    let rows: Vec<[String; 5]> = report
        .copies
        .iter()
        .map(|c| {
            [
                c.copy.clone(),
                c.kind.clone(),
                c.files.to_string(),
                crate::text::bytes(c.bytes),
                match (&c.problems.is_empty(), &c.unrestorable_because) {
                    (true, None) => "intact".to_string(),
                    (false, _) => format!("DAMAGED ({})", crate::text::count(c.problems.len() as u64, "problem")),
                    (true, Some(why)) => format!("UNRESTORABLE: {why}"),
                },
            ]
        })
        .collect();
    out.push_str(&super::table::render(
        ["COPY", "KIND", "FILES", "SIZE", "RESULT"],
        &rows,
    ));
    for copy in &report.copies {
        for problem in &copy.problems {
            out.push_str(&format!("  copy {}: {problem}\n", copy.copy));
        }
    }
    let unrestorable: Vec<&str> = report
        .copies
        .iter()
        .filter(|c| c.unrestorable_because.is_some())
        .map(|c| c.copy.as_str())
        .collect();
    match unrestorable.is_empty() {
        true => out.push_str(&format!(
            "all {} intact and restorable\n",
            crate::text::count(report.copies.len() as u64, "copy")
        )),
        false => out.push_str(&format!("not restorable: {}\n", unrestorable.join(", "))),
    }
    out
}

async fn deep(config: &Config, args: &VerifyArgs) -> Result<(ExitStatus, RunFacts), Failure> {
    let request = DeepRequest {
        from: args.from.clone(),
        source: args.source.clone(),
        copy: args.copy.clone(),
        scratch: args.scratch.clone().unwrap_or_default(),
        scratch_password_file: args.scratch_password_file.clone(),
        keep_scratch: args.keep_scratch,
        jobs: args.jobs,
    };
    let report = verify_deep::run(config, &request).await?;
    let status = match report.intact() {
        true => ExitStatus::Success,
        false => ExitStatus::Failed,
    };
    let printed = match args.json {
        true => print_out(&to_json(&report)),
        false => print_out(&render_deep(&report)),
    };
    let facts = super::finish::facts(status, 0, Some(report.copy.clone()), || report.problems.join("; "));
    printed.map(|_| (status, facts))
}

fn render_deep(report: &DeepReport) -> String {
    let mut out = format!(
        "source {} at {}: full copy {} restored into scratch {}{}\n",
        report.source,
        report.destination,
        report.copy,
        report.scratch.join(", "),
        if report.kept { " (kept)" } else { " (dropped)" }
    );
    let rows: Vec<[String; 4]> = report
        .tables
        .iter()
        .map(|t| {
            [
                t.table.clone(),
                t.rows.to_string(),
                t.restored_rows.to_string(),
                if t.intact { "same rows" } else { "DIFFERENT" }.to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&super::table::render(
            ["TABLE", "BACKED UP", "RESTORED", "RESULT"],
            &rows,
        ));
    }
    if let Some(replayed) = &report.replayed {
        out.push_str(&format!("  then replayed {replayed} into a second scratch database\n"));
    }
    for problem in &report.problems {
        out.push_str(&format!("  {problem}\n"));
    }
    out.push_str(match report.intact() {
        true => "the restored data equals the data backed up\n",
        false => "DAMAGED: the restored data differs from what was backed up\n",
    });
    out
}
