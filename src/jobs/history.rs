//! The run history: every run's outcome appended to its source's status (bounded), so that
//! monitoring, notifications and `cairn status --errors` see the runs that left no copy.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::repo::model::{RUNS_KEPT, RunRecord};
use crate::repo::status::StatusStore;
use crate::storage::{Destination, DestinationSpec};

/// Which command a run was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    Backup,
    Restore,
    Verify,
    Purge,
    ReplicaSeed,
    ReplicaRun,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Backup => "backup",
            Command::Restore => "restore",
            Command::Verify => "verify",
            Command::Purge => "purge",
            Command::ReplicaSeed => "replica seed",
            Command::ReplicaRun => "replica run",
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One source's finished run and where its status lives.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    pub command: Command,
    pub source: String,
    /// The destination holding the source's status; `None` when the run failed before one
    /// could be chosen (the run is then only reported, not recorded).
    pub destination: Option<DestinationSpec>,
    pub record: RunRecord,
}

/// What a run did, for its record.
#[derive(Debug, Default, Clone)]
pub struct RunFacts {
    pub bytes: u64,
    pub copy: Option<String>,
    /// Why the run did not succeed: its error, or what it found (damaged copies).
    pub error: Option<String>,
}

impl FinishedRun {
    /// A run of `command` on `source` that started at `started_at` and ends now with the exit
    /// code its outcome deserves; the error text has the passwords of URLs masked.
    pub fn new(
        command: Command,
        source: &str,
        destination: Option<DestinationSpec>,
        started_at: DateTime<Utc>,
        exit_code: u8,
        facts: RunFacts,
    ) -> Self {
        FinishedRun {
            command,
            source: source.to_string(),
            destination,
            record: RunRecord {
                command: command.as_str().to_string(),
                started_at,
                finished_at: Utc::now(),
                exit_code,
                error: facts.error.map(|e| crate::secret::mask_urls(&e)),
                bytes: facts.bytes,
                copy: facts.copy,
                host: crate::repo::lock::host_name(),
                cairn_version: crate::CAIRN_VERSION.to_string(),
            },
        }
    }
}

/// Appends the run to its source's status, keeping the last [`RUNS_KEPT`].
///
/// Never fails the run it records: a destination that cannot be reached or written (read-only
/// credentials for a restore) leaves the run out, with a warning. A source that has no status
/// and no copy yet gets none from its history: a mistyped name must not become a source, and a
/// first backup that fails its checks leaves the destination as it found it (the exit code and
/// the notification report it).
pub async fn record(run: &FinishedRun) {
    let Some(spec) = &run.destination else {
        return;
    };
    let destination = match spec.open().await {
        Ok(destination) => destination,
        Err(e) => {
            tracing::warn!(
                "{}: the {} run was not recorded in the status: {e}",
                run.source,
                run.command
            );
            return;
        }
    };
    if let Err(e) = append(&destination, run).await {
        tracing::warn!(
            "{}: the {} run was not recorded in the status: {e}",
            run.source,
            run.command
        );
    }
}

async fn append(destination: &Arc<dyn Destination>, run: &FinishedRun) -> Result<(), crate::repo::status::StatusError> {
    let store = StatusStore::new(destination.clone(), &run.source);
    store.load_existing().await?;
    store
        .update(|body| {
            body.runs.push(run.record.clone());
            let excess = body.runs.len().saturating_sub(RUNS_KEPT);
            body.runs.drain(..excess);
            Ok(())
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(spec: &DestinationSpec, command: Command, n: u64) -> FinishedRun {
        let facts = RunFacts {
            bytes: n,
            ..RunFacts::default()
        };
        FinishedRun::new(command, "app", Some(spec.clone()), Utc::now(), 0, facts)
    }

    #[tokio::test]
    async fn the_history_keeps_the_latest_runs_and_never_creates_a_source() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DestinationSpec::Local {
            root: dir.path().to_path_buf(),
        };
        record(&run(&spec, Command::Backup, 0)).await;
        assert!(!dir.path().join("app").exists(), "a run made a source");
        let store = StatusStore::new(spec.open().await.unwrap(), "app");
        store.update(|_| Ok(())).await.unwrap();
        for n in 0..RUNS_KEPT as u64 + 5 {
            record(&run(&spec, Command::Backup, n)).await;
        }
        let runs = store.load().await.unwrap().status.body.runs;
        assert_eq!(runs.len(), RUNS_KEPT);
        assert_eq!(runs.first().map(|r| r.bytes), Some(5), "the oldest go first");
        assert_eq!(runs.last().map(|r| r.bytes), Some(RUNS_KEPT as u64 + 4));
    }
}
