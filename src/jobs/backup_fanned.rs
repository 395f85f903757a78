//! A backup run of a source with several destinations (`destinations = [...]`): the database is
//! read once and each file written to every destination at the same time
//! ([`FanOut`]); each destination keeps its own lock, status and chain and gets its own
//! outcome. A destination that cannot be opened, locked or written is set aside and the others
//! go on. When the destinations' chains differ (one missed a run), an incremental cannot
//! continue all of them from one position, so the run takes a full copy for every one.

use std::sync::Arc;

use chrono::Utc;

use super::backup::{
    BackupError, BackupPlan, Decision, PlannedSource, copy_info, decide_for, new_copy_id, preflight_source, take_copy,
};
use crate::engine::Source;
use crate::jobs::events::{BackupEvent, Observer};
use crate::repo::kinds::CopyKind;
use crate::repo::lock::{LockOptions, SourceLock};
use crate::repo::status::{CopyRecord, StatusBody, StatusStore};
use crate::storage::fan_out::FanOut;
use crate::storage::{Access, Destination, DestinationSpec};

/// One destination of the run, as far as it got.
struct Place {
    spec: DestinationSpec,
    opened: Option<Opened>,
    /// Why it was set aside.
    error: Option<BackupError>,
    /// The copy recorded there.
    recorded: Option<CopyRecord>,
}

struct Opened {
    destination: Arc<dyn Destination>,
    status: StatusStore,
    lock: SourceLock,
    body: StatusBody,
}

/// Runs `item` into its destination and every one of `item.also`; an outcome per destination,
/// in that order.
pub(super) async fn run_fanned(
    plan: &BackupPlan,
    item: &PlannedSource,
    engine: Arc<dyn Source>,
    lock_options: &LockOptions,
    observer: &dyn Observer,
) -> Vec<(DestinationSpec, Result<CopyRecord, BackupError>)> {
    let name = &item.source.name;
    let mut places = Vec::new();
    for spec in std::iter::once(item.destination.clone()).chain(item.also.iter().cloned()) {
        let opened = open(&spec, name, lock_options).await;
        places.push(match opened {
            Ok(opened) => Place {
                spec,
                opened: Some(opened),
                error: None,
                recorded: None,
            },
            Err(e) => Place {
                spec,
                opened: None,
                error: Some(e),
                recorded: None,
            },
        });
    }
    let result = copy_once(plan, item, engine.as_ref(), &mut places, observer).await;
    let mut outcomes = Vec::new();
    let shared = result.err().map(Arc::new);
    for place in places {
        let outcome = match (place.recorded, place.error, &shared) {
            (Some(record), _, _) => Ok(record),
            (None, Some(e), _) => Err(e),
            (None, None, Some(shared)) => Err(BackupError::Shared(shared.clone())),
            (None, None, None) => Err(BackupError::Usage("the copy was not recorded there".into())),
        };
        if let Some(opened) = place.opened {
            opened.destination.settle().await;
            if let Err(error) = opened.lock.release().await {
                observer.backup(&BackupEvent::LockNotReleased {
                    source: name,
                    error: &error,
                });
            }
        }
        outcomes.push((place.spec, outcome));
    }
    outcomes
}

/// Opens, checks and locks one destination, and reads its status.
async fn open(spec: &DestinationSpec, name: &str, lock_options: &LockOptions) -> Result<Opened, BackupError> {
    let destination = spec.open().await?;
    destination.check(Access::Write).await?;
    let lock = crate::repo::lock::acquire(destination.clone(), name, "backup", lock_options).await?;
    let status = StatusStore::new(destination.clone(), name);
    let body = match status.load().await {
        Ok(loaded) => loaded.status.body,
        Err(e) => {
            let _ = lock.release().await;
            return Err(e.into());
        }
    };
    Ok(Opened {
        destination,
        status,
        lock,
        body,
    })
}

/// Takes the copy once into every healthy place and records it in each; a place that fails is
/// given its error. The error returned is one every healthy place shares (the source failed).
async fn copy_once(
    plan: &BackupPlan,
    item: &PlannedSource,
    engine: &dyn Source,
    places: &mut [Place],
    observer: &dyn Observer,
) -> Result<(), BackupError> {
    let name = &item.source.name;
    let healthy: Vec<usize> = (0..places.len()).filter(|i| places[*i].opened.is_some()).collect();
    let Some(&first) = healthy.first() else {
        return Ok(());
    };
    let first_body = places[first].opened.as_ref().expect("healthy").body.clone();
    // The preflight's decision: a full copy instead of an incremental whose log is gone
    // (`on-log-gap = "full"`) holds for every destination.
    let (checked, _) = preflight_source(plan, item, engine, &first_body, observer).await?;
    // One copy for all: an incremental only when every chain ends at the same copy.
    let mut decisions = vec![checked];
    for &i in &healthy[1..] {
        let body = &places[i].opened.as_ref().expect("healthy").body;
        decisions.push(decide_for(engine, item, body, plan, observer)?);
    }
    let decision = match decisions.windows(2).all(|pair| pair[0] == pair[1]) {
        true => decisions.remove(0),
        false => {
            tracing::info!("{name}: the destinations' chains differ (one missed a run): a full copy for every one");
            Decision {
                kind: CopyKind::Full,
                parent: None,
            }
        }
    };
    let destinations: Vec<Arc<dyn Destination>> = healthy
        .iter()
        .map(|&i| places[i].opened.as_ref().expect("healthy").destination.clone())
        .collect();
    let fan = Arc::new(FanOut::new(destinations.clone()));
    let started_at = Utc::now();
    let copy_id = new_copy_id(started_at, decision.kind);
    observer.backup(&BackupEvent::Taking {
        source: name,
        kind: decision.kind,
        copy: &copy_id,
        destination: &fan.location(),
    });
    let parent = decision.parent.as_deref().and_then(|id| first_body.copy(id));
    let taken = take_copy(engine, item, fan.clone(), &copy_id, parent, observer).await;
    let (writer, kind, parent, taken) = match taken {
        Ok(taken) => taken,
        Err(e) => {
            // Where a destination itself failed, that is its error; the others share the
            // source's.
            for (slot, &i) in healthy.iter().enumerate() {
                if let Some(own) = fan.take_failure(slot) {
                    places[i].error = Some(own.into());
                }
            }
            return Err(e.into());
        }
    };
    let info = copy_info(plan, kind, parent, started_at, taken);
    for (slot, &i) in healthy.iter().enumerate() {
        if let Some(e) = fan.take_failure(slot) {
            places[i].error = Some(e.into());
            continue;
        }
        let opened = places[i].opened.as_ref().expect("healthy");
        match writer
            .commit_to(info.clone(), &destinations[slot], &opened.status, &opened.lock)
            .await
        {
            Ok(record) => places[i].recorded = Some(record),
            Err(e) => places[i].error = Some(e.into()),
        }
    }
    Ok(())
}
