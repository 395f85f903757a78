//! `cairn purge`: the copies beyond `[retention]` removed, chain-aware — a copy a kept copy
//! needs is kept — and the leftovers of failed runs. A dry run by default; `--apply` removes,
//! under the source's lock: the status stops listing a copy first, then its manifest goes, then
//! its files, so a crash leaves unlisted files without a manifest, never a listed copy with
//! missing files.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ConfigError, Retention};
use crate::repo::kinds::RunType;
use crate::repo::lock::LockError;
use crate::repo::model::StatusBody;
use crate::repo::status::{StatusError, StatusStore};
use crate::storage::{Access, Destination, DestinationError};

/// Why a purge could not run.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// A copy the retention leaves out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    pub copy: String,
    pub run_type: RunType,
    pub reason: String,
}

/// What the retention keeps and removes of one source's copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    pub keep: Vec<String>,
    pub remove: Vec<Removal>,
}

/// Applies `retention` to `body`'s copies at `now`: the newest N copies of each run type that
/// has a count are kept (a run type without one keeps every copy), every copy younger than
/// `min-age-days`, and the newest copy of all; every copy a kept copy's chain needs is kept too.
pub fn plan(body: &StatusBody, retention: &Retention, now: chrono::DateTime<chrono::Utc>) -> RetentionPlan {
    let young = |copy: &crate::repo::model::CopyRecord| {
        retention
            .min_age_days
            .is_some_and(|days| now - copy.finished_at < chrono::TimeDelta::days(i64::from(days)))
    };
    let count = |run_type: RunType| match run_type {
        RunType::Hourly => retention.hourly,
        RunType::Daily => retention.daily,
        RunType::Weekly => retention.weekly,
        RunType::Monthly => retention.monthly,
        RunType::Yearly => retention.yearly,
    };
    let mut newest_first: Vec<_> = body.copies.iter().collect();
    newest_first.sort_by(|a, b| (b.finished_at, &b.id).cmp(&(a.finished_at, &a.id)));
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeMap<RunType, u32> = BTreeMap::new();
    for copy in &newest_first {
        let nth = seen.entry(copy.run_type).or_default();
        *nth += 1;
        if count(copy.run_type).is_none_or(|keep| *nth <= keep) || young(copy) {
            wanted.insert(copy.id.clone());
        }
    }
    if let Some(newest) = newest_first.first() {
        wanted.insert(newest.id.clone());
    }
    // A kept copy keeps every copy it needs.
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for id in &wanted {
        match body.chain(id) {
            Ok(chain) => keep.extend(chain.into_iter().map(|c| c.id.clone())),
            Err(_) => {
                keep.insert(id.clone());
            }
        }
    }
    let mut plan = RetentionPlan {
        keep: Vec::new(),
        remove: Vec::new(),
    };
    for copy in newest_first.iter().rev() {
        if keep.contains(&copy.id) {
            plan.keep.push(copy.id.clone());
        } else {
            plan.remove.push(Removal {
                copy: copy.id.clone(),
                run_type: copy.run_type,
                reason: format!(
                    "beyond the {} newest {} copies{}, and no kept copy needs it",
                    count(copy.run_type).unwrap_or_default(),
                    copy.run_type,
                    retention
                        .min_age_days
                        .map(|days| format!(", older than {days} days"))
                        .unwrap_or_default()
                ),
            });
        }
    }
    plan
}

/// What `cairn purge` was asked for.
#[derive(Debug, Clone, Default)]
pub struct PurgeRequest {
    /// Destination name or URL; `None`: the source's configured one.
    pub from: Option<String>,
    /// The destination itself, when the caller has it (a backup purging where it just wrote);
    /// wins over `from`.
    pub at: Option<crate::storage::DestinationSpec>,
    pub source: String,
    pub apply: bool,
}

/// What a purge did, or would do.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeReport {
    pub source: String,
    pub destination: String,
    pub applied: bool,
    pub plan: RetentionPlan,
    /// Bytes the removed copies and leftovers took.
    pub bytes: u64,
    /// Copy folders without a manifest: what failed or killed runs left.
    pub leftovers: Vec<String>,
    /// The earliest and latest finish times of the copies kept: the restorable window.
    pub earliest: Option<chrono::DateTime<chrono::Utc>>,
    pub latest: Option<chrono::DateTime<chrono::Utc>>,
}

/// Plans, and with `apply` carries out, the retention of one source.
///
/// # Errors
/// Configuration, destination, status or lock errors.
pub async fn run(config: &Config, request: &PurgeRequest) -> Result<PurgeReport, PurgeError> {
    let spec = match (&request.at, &request.from) {
        (Some(at), _) => at.clone(),
        (None, Some(from)) => config.destination(from)?,
        (None, None) => config.destination_of(&request.source)?,
    };
    let destination = spec.open().await?;
    destination
        .check(if request.apply { Access::Write } else { Access::Read })
        .await?;
    let store = StatusStore::new(destination.clone(), &request.source);
    let lock = match request.apply {
        true => Some(
            crate::repo::lock::acquire(destination.clone(), &request.source, "purge", &config.lock_options()).await?,
        ),
        false => None,
    };
    let result = purge(&destination, &store, &config.settings.retention, request).await;
    if let Some(lock) = lock {
        lock.release().await?;
    }
    result
}

async fn purge(
    destination: &Arc<dyn Destination>,
    store: &StatusStore,
    retention: &Retention,
    request: &PurgeRequest,
) -> Result<PurgeReport, PurgeError> {
    let loaded = store.load_existing().await?;
    let body = &loaded.status.body;
    let plan = plan(body, retention, chrono::Utc::now());
    let sizes: BTreeMap<&str, u64> = body.copies.iter().map(|c| (c.id.as_str(), c.bytes)).collect();
    let leftovers = leftovers(destination, &request.source).await?;
    let bytes = plan
        .remove
        .iter()
        .map(|r| sizes.get(r.copy.as_str()).copied().unwrap_or(0))
        .sum::<u64>()
        + leftovers.values().flatten().map(|o| o.size).sum::<u64>();
    let kept: Vec<_> = body.copies.iter().filter(|c| plan.keep.contains(&c.id)).collect();
    let report = PurgeReport {
        source: request.source.clone(),
        destination: destination.location(),
        applied: request.apply,
        earliest: kept.iter().map(|c| c.finished_at).min(),
        latest: kept.iter().map(|c| c.finished_at).max(),
        bytes,
        leftovers: leftovers.keys().cloned().collect(),
        plan,
    };
    if !request.apply {
        return Ok(report);
    }
    // Under the lock no run of this source is writing: a copy folder without a manifest is
    // what a failed or killed run left (or a purge that stopped after the manifest).
    for (id, objects) in &leftovers {
        for object in objects {
            destination.delete(&object.key).await?;
        }
        tracing::info!("{}: removed the leftovers of copy {id} (no manifest)", request.source);
    }
    if report.plan.remove.is_empty() {
        return Ok(report);
    }
    let removed: BTreeSet<String> = report.plan.remove.iter().map(|r| r.copy.clone()).collect();
    // The status stops listing them first: from here on they are not copies.
    store
        .update(|body| {
            body.copies.retain(|c| !removed.contains(&c.id));
            Ok(())
        })
        .await?;
    // Every manifest first: files without one are leftovers, never a copy with files missing,
    // and a purge cut short after this loop leaves no manifest to bring a removed copy back.
    for id in &removed {
        destination
            .delete(&crate::repo::layout::manifest_key(&request.source, id))
            .await?;
    }
    for id in &removed {
        for object in destination
            .list(&crate::repo::layout::copy_prefix(&request.source, id))
            .await?
        {
            destination.delete(&object.key).await?;
        }
        tracing::info!("{}: removed copy {id}", request.source);
    }
    Ok(report)
}

/// The copy folders of `source` that hold files but no manifest, with their files.
async fn leftovers(
    destination: &Arc<dyn Destination>,
    source: &str,
) -> Result<BTreeMap<String, Vec<crate::storage::ObjectMeta>>, PurgeError> {
    let prefix = crate::repo::layout::copies_prefix(source);
    let mut folders: BTreeMap<String, Vec<crate::storage::ObjectMeta>> = BTreeMap::new();
    for object in destination.list(&prefix).await? {
        if let Some((id, _)) = object.key.get(prefix.len()..).and_then(|rest| rest.split_once('/')) {
            folders.entry(id.to_string()).or_default().push(object);
        }
    }
    folders.retain(|id, objects| {
        let manifest = crate::repo::layout::manifest_key(source, id);
        !objects.iter().any(|o| o.key == manifest)
    });
    Ok(folders)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::status::query::tests::copy;
    use RunType::*;

    fn body(copies: Vec<crate::repo::model::CopyRecord>) -> StatusBody {
        StatusBody {
            source: "s".into(),
            copies,
            verifications: Vec::new(),
            runs: Vec::new(),
        }
    }

    fn retention(hourly: Option<u32>, daily: Option<u32>) -> Retention {
        Retention {
            hourly,
            daily,
            ..Default::default()
        }
    }

    /// A day after the test copies were taken.
    fn later() -> chrono::DateTime<chrono::Utc> {
        use chrono::TimeZone;
        chrono::Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap()
    }

    fn removed(plan: &RetentionPlan) -> Vec<&str> {
        plan.remove.iter().map(|r| r.copy.as_str()).collect()
    }

    #[test]
    fn the_newest_copies_of_each_run_type_are_kept_with_what_they_need() {
        // f1 ← h1 ← h2, f2 (daily) ← h3 ← h4
        let copies = body(vec![
            copy("f1", Daily, None, 0),
            copy("h1", Hourly, Some("f1"), 1),
            copy("h2", Hourly, Some("h1"), 2),
            copy("f2", Daily, None, 3),
            copy("h3", Hourly, Some("f2"), 4),
            copy("h4", Hourly, Some("h3"), 5),
        ]);
        // One hourly and one daily: h4 needs h3 and f2; the older chain goes.
        let plan = plan(&copies, &retention(Some(1), Some(1)), later());
        assert_eq!(removed(&plan), ["f1", "h1", "h2"]);
        assert_eq!(plan.keep, ["f2", "h3", "h4"]);
        // Two hourly copies (h4, h3) and two daily: f1 is kept, but nothing needs h1 or h2.
        let plan = super::plan(&copies, &retention(Some(2), Some(2)), later());
        assert_eq!(removed(&plan), ["h1", "h2"]);
        // A kept hourly copy deep in the old chain keeps all of its chain.
        let plan = super::plan(&copies, &retention(Some(4), Some(1)), later());
        assert_eq!(
            removed(&plan),
            Vec::<&str>::new(),
            "h1 and h2 are among the 4 newest hourly copies"
        );
    }

    #[test]
    fn without_counts_everything_stays_and_the_newest_copy_always_stays() {
        let copies = body(vec![copy("f1", Daily, None, 0), copy("h1", Hourly, Some("f1"), 1)]);
        assert!(plan(&copies, &Retention::default(), later()).remove.is_empty());
        // Zero of every kind still keeps the newest copy and its chain.
        let zero = Retention {
            hourly: Some(0),
            daily: Some(0),
            weekly: Some(0),
            monthly: Some(0),
            yearly: Some(0),
            min_age_days: None,
        };
        let plan = plan(&copies, &zero, later());
        assert!(plan.remove.is_empty(), "{plan:?}");
        assert_eq!(plan.keep, ["f1", "h1"]);
    }

    #[test]
    fn copies_younger_than_the_minimum_age_stay_whatever_the_counts() {
        let copies = body(vec![
            copy("f1", Daily, None, 0),
            copy("h1", Hourly, Some("f1"), 1),
            copy("f2", Daily, None, 3),
        ]);
        let mut keep_one = retention(Some(0), Some(1));
        assert_eq!(removed(&plan(&copies, &keep_one, later())), ["f1", "h1"]);
        // Two days old at most: all of them are younger, so all stay.
        keep_one.min_age_days = Some(2);
        assert!(plan(&copies, &keep_one, later()).remove.is_empty());
        // One day: at later(), h1 is a minute younger than a day and keeps its parent f1; two
        // minutes on, both are older than a day and only the counts decide.
        keep_one.min_age_days = Some(1);
        assert!(plan(&copies, &keep_one, later()).remove.is_empty());
        let after = later() + chrono::TimeDelta::minutes(2);
        assert_eq!(removed(&plan(&copies, &keep_one, after)), ["f1", "h1"]);
    }
}
