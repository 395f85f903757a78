//! What follows every run of backup, restore, verify or purge: its outcome recorded in the
//! source's status, notifications sent and the metrics file written — none of which can fail
//! the run itself.

use std::future::Future;

use chrono::Utc;

use super::{CliResult, Failure, render};
use crate::config::Config;
use crate::exit::ExitStatus;
use crate::jobs::history::{self, Command, FinishedRun, RunFacts};
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

/// Records each run in its source's status.
pub(super) async fn finish(_config: &Config, runs: &[FinishedRun]) {
    for run in runs {
        history::record(run).await;
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
