//! The backup job's run: every source of a plan, `parallel_sources` at a time, each into its one
//! destination (`backup::run_source`) or its several (`backup_fanned`), an outcome per
//! destination.

use chrono::Utc;

use super::backup::{BackupError, BackupPlan, SourceOutcome};
use crate::jobs::events::{BackupEvent, Observer};
use crate::repo::lock::LockOptions;

/// Runs the plan, `parallel_sources` sources at a time; a failing source does not stop the
/// others, and the outcomes come in the plan's order.
///
/// Every source's engine is opened (no I/O) before anything runs, so a plan that cannot work
/// fails at once.
///
/// # Errors
/// [`BackupError::Source`] when an engine is not available; per-source failures are in the
/// outcomes.
pub async fn run(
    plan: &BackupPlan,
    lock_options: &LockOptions,
    observer: &dyn Observer,
) -> Result<Vec<SourceOutcome>, BackupError> {
    use futures::StreamExt as _;
    let engines = super::backup::open_engines(plan)?;
    let runs = plan.sources.iter().zip(engines).map(|(item, engine)| async move {
        let started_at = Utc::now();
        let results = match item.also.is_empty() {
            true => vec![(
                item.destination.clone(),
                super::backup::run_source(plan, item, engine, lock_options, observer).await,
            )],
            false => super::backup_fanned::run_fanned(plan, item, engine, lock_options, observer).await,
        };
        let finished_at = Utc::now();
        results
            .into_iter()
            .map(|(destination, result)| {
                if let Ok(copy) = &result {
                    observer.backup(&BackupEvent::Recorded {
                        source: &item.source.name,
                        copy,
                    });
                }
                SourceOutcome {
                    source: item.source.name.clone(),
                    several: !item.also.is_empty(),
                    destination,
                    started_at,
                    finished_at,
                    result,
                }
            })
            .collect::<Vec<_>>()
    });
    Ok(futures::stream::iter(runs)
        .buffered(plan.parallel_sources)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect())
}
