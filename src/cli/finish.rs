//! What follows every run of backup, restore, verify or purge: its outcome recorded in the
//! source's status, notifications sent and the metrics file written — none of which can fail
//! the run itself.

use std::future::Future;

use chrono::Utc;

use super::{CliResult, Failure, render};
use crate::config::Config;
use crate::exit::ExitStatus;
use crate::jobs::history::{self, Command, FinishedRun, RunFacts};
use crate::jobs::metrics;
use crate::storage::DestinationSpec;

/// Runs `body`, a run of `command` on `source` whose status lives at `destination`, and then
/// records its outcome; a dry run (`recorded` false) is not a run and is only carried out.
pub(super) async fn recorded(
    config: &Config,
    command: Command,
    source: &str,
    destination: Option<DestinationSpec>,
    recorded: bool,
    body: impl Future<Output = Result<(ExitStatus, RunFacts), Failure>>,
) -> CliResult {
    let started_at = Utc::now();
    let result = body.await;
    if recorded {
        let (code, facts) = match &result {
            Ok((status, facts)) => (status.code(), facts.clone()),
            Err(failure) => (
                failure.status.code(),
                RunFacts {
                    error: Some(render(&failure.error)),
                    ..RunFacts::default()
                },
            ),
        };
        let run = FinishedRun::new(command, source, destination, started_at, code, facts);
        finish(config, &[run]).await;
    }
    result.map(|(status, _)| status)
}

/// Records each run in its source's status, sends the notifications the configuration asks
/// for, and rewrites the metrics file.
pub(super) async fn finish(config: &Config, runs: &[FinishedRun]) {
    for run in runs {
        history::record(run).await;
    }
    crate::jobs::notify::send(&config.settings.notifications, runs).await;
    if let Some(path) = &config.settings.metrics_file {
        // Every configured source, and the sources of this run that are not configured.
        let mut sources: Vec<(String, DestinationSpec)> = Vec::new();
        for run in runs {
            if let Some(spec) = &run.destination
                && !sources.iter().any(|(name, _)| name == &run.source)
            {
                sources.push((run.source.clone(), spec.clone()));
            }
        }
        for name in config.settings.sources.keys() {
            if !sources.iter().any(|(known, _)| known == name)
                && let Ok(spec) = config.destination_of(name)
            {
                sources.push((name.clone(), spec));
            }
        }
        sources.sort_by(|a, b| a.0.cmp(&b.0));
        let observed = metrics::observe(&sources).await;
        let text = metrics::render(&observed, Utc::now());
        if let Err(e) = metrics::write_atomically(path, &text) {
            tracing::warn!("the metrics were not written: {e}");
        }
    }
}

/// The facts of a run that ended with `status`, the error saying why when it did not succeed.
pub(super) fn facts(
    status: ExitStatus,
    bytes: u64,
    copy: Option<String>,
    problem: impl FnOnce() -> String,
) -> RunFacts {
    RunFacts {
        bytes,
        copy,
        error: (status != ExitStatus::Success).then(problem),
    }
}
