//! `cairn replica seed`: a replica made from the copies on a destination — the chain restored
//! into the target — and then handed over: to native replication from the exact position the
//! restore reached, to cairn's own applier (`cairn replica run`, `jobs/replica_run.rs`), or
//! left there (`none`).

use serde::Serialize;

use crate::config::Config;
use crate::engine::follow::FollowSetup;
use crate::engine::{NativeHandover, ReplicationState, RestoreReport, SourceError, SourceSpec, Target, Until};
use crate::jobs::backup::{self, BackupError, BackupRequest};
use crate::jobs::restore::{self, RestoreError, RestoreRequest};
use crate::repo::kinds::{RequestedType, RunType};
use crate::repo::status::LogPosition;

/// Why a seed failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// The incremental a PostgreSQL seed takes to close the gap to its slot failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
}

impl From<SourceError> for SeedError {
    fn from(error: SourceError) -> Self {
        SeedError::Restore(error.into())
    }
}

/// What follows the restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Handover {
    /// The server's own replication, from the restored position.
    Native,
    /// cairn's own applier: `cairn replica run` follows the source from the restored position
    /// (MySQL/MariaDB).
    Cairn,
    /// Stop at the restored position and report it.
    None,
}

/// What `cairn replica seed` was asked for.
#[derive(Debug, Clone)]
pub struct SeedRequest {
    /// The restore: destination, source, copy, target, password, jobs, clean.
    pub restore: RestoreRequest,
    pub handover: Handover,
}

/// What a seed did.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    pub source: String,
    /// The newest copy restored.
    pub copy: Option<String>,
    pub restore: RestoreReport,
    pub handover: Handover,
    /// The target's replication after a native handover.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationState>,
}

/// Checks what can be checked before the target is touched, restores the chain, and hands the
/// target over.
///
/// # Errors
/// Usage errors (a source that is not configured, `--rename-db` with a native handover, the
/// same server id on both sides), the restore's errors, the handover's errors naming the step.
pub async fn seed(config: &Config, request: &SeedRequest) -> Result<SeedReport, SeedError> {
    let native = request.handover == Handover::Native;
    let cairn = request.handover == Handover::Cairn;
    // The replica connects to the source as configured, password from its secret.
    let source = match native || cairn {
        true => Some(config.source(&request.restore.source).map_err(|e| {
            SeedError::from(RestoreError::Usage(format!(
                "--handover {} connects the replica to the source, so {:?} must be a configured source: {e}",
                if native { "native" } else { "cairn" },
                request.restore.source
            )))
        })?),
        false => None,
    };
    if native && !request.restore.rename_databases.is_empty() {
        return Err(RestoreError::Usage(
            "--rename-db cannot be used with --handover native: the source's changes name the source's databases"
                .into(),
        )
        .into());
    }
    let plan = restore::plan(config, &request.restore).await?;
    let latest = plan.chain.last().cloned();
    let target = plan.target_engine()?;
    let postgres = latest
        .as_ref()
        .is_some_and(|c| matches!(c.log_range.end, LogPosition::Postgres { .. }));
    if let Some(source) = &source
        && postgres
    {
        return seed_postgres(config, request, source, &plan.target, target).await;
    }
    // The copy records its server's id (MySQL/MariaDB `server_id`) in its details.
    let source_id = latest
        .as_ref()
        .and_then(|copy| copy.details.get("server_id"))
        .map(|id| id.to_string());
    if native
        && let (Some(source_id), Some(target_id)) = (source_id, target.server_id().await?)
        && source_id == target_id
    {
        return Err(RestoreError::Usage(format!(
            "the target has server_id {target_id}, the same as the source the copy came from: give the replica its own \
             server_id"
        ))
        .into());
    }
    if native || cairn {
        target.check_not_replicating().await?;
    }
    // The source must still have its log from where the replica will start.
    if let (Some(source), Some(copy)) = (&source, &latest)
        && let Some(reach) = crate::engine::open(source)?.log_reach(&copy.log_range.end).await?
        && !reach.reaches
    {
        return Err(RestoreError::LogGap(format!(
            "the source's binary logs start at {}, after {} where copy {} ends: a replica seeded from it could not \
             follow the source; take a new copy (cairn backup) and seed from it",
            reach.oldest, reach.from, copy.id
        ))
        .into());
    }
    let report = restore::run(&plan).await?;
    if cairn {
        let (Some(position), Some(full), Some(latest)) = (&report.position, plan.chain.first(), &latest) else {
            return Err(RestoreError::Usage("the restore reported no source position to follow".into()).into());
        };
        let filters = filters_of(full);
        let setup = FollowSetup {
            source: &request.restore.source,
            position,
            databases: &report.databases,
            filters: &filters,
            full_copy: &full.id,
            server_identity: &latest.server.id,
            slot: None,
            publication: None,
        };
        target.prepare_follow(&setup).await?;
        return Ok(SeedReport {
            source: request.restore.source.clone(),
            copy: Some(latest.id.clone()),
            restore: report,
            handover: request.handover,
            replication: None,
        });
    }
    let replication = match (&source, &report.position) {
        (Some(source), Some(position)) if native => {
            let databases = databases_of(&plan);
            let handover = NativeHandover {
                source: &source.url,
                position,
                databases: &databases,
                vendor: latest
                    .as_ref()
                    .and_then(|c| c.details.get("vendor"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
                slot: None,
                publication: None,
            };
            Some(target.hand_over(&handover).await?)
        }
        (Some(_), None) if native => {
            return Err(RestoreError::Usage("the restore reported no source position to replicate from".into()).into());
        }
        _ => None,
    };
    Ok(SeedReport {
        source: request.restore.source.clone(),
        copy: latest.map(|c| c.id.clone()),
        restore: report,
        handover: request.handover,
        replication,
    })
}

/// PostgreSQL: a slot for the subscription is created on the source first; an incremental then
/// reads the source's log past the slot's start, and the chain is restored up to exactly that
/// start — what the slot streams is what the restore left out, no gap and no overlap. A seed
/// that fails drops the slot again.
async fn seed_postgres(
    config: &Config,
    request: &SeedRequest,
    source: &SourceSpec,
    target_name: &str,
    target: std::sync::Arc<dyn Target>,
) -> Result<SeedReport, SeedError> {
    target.check_not_replicating().await?;
    let engine = crate::engine::open(source)?;
    let slot = format!(
        "cairn_replica_{}",
        &crate::storage::md5_hex(target_name.as_bytes())[..12]
    );
    // A seed of the same target before left its slot (a replica seeded again after it
    // diverged, or whose slot lost its WAL): the new one starts now.
    engine.drop_replica_slot(&slot).await?;
    let Some((publication, start)) = engine.create_replica_slot(&slot).await? else {
        return Err(RestoreError::Usage("this source's engine has no replica slots".into()).into());
    };
    let seeded = async {
        let LogPosition::Postgres { lsn, .. } = &start else {
            unreachable!("PostgreSQL slots start at an LSN")
        };
        let start_lsn = crate::engine::postgres::pgoutput::parse_lsn(lsn).map_err(RestoreError::Manifest)?;
        let backup_request = BackupRequest {
            sources: vec![source.name.clone()],
            to: request.restore.from.clone(),
            run_type: Some(RunType::Hourly),
            requested: RequestedType::Incremental,
            ..BackupRequest::default()
        };
        let plan = backup::plan(config, &backup_request)?;
        let outcome = crate::jobs::backup_run::run(&plan, &config.lock_options(), &crate::jobs::events::Log)
            .await?
            .into_iter()
            .next()
            .expect("one source, one outcome");
        let copy = outcome.result?;
        tracing::info!(
            "{}: incremental {} closes the gap to the replica's slot at {lsn}",
            source.name,
            copy.id
        );
        let mut restore_request = request.restore.clone();
        restore_request.copy = Some(copy.id.clone());
        restore_request.until = Some(Until::Lsn(start_lsn));
        let plan = restore::plan(config, &restore_request).await?;
        let report = restore::run(&plan).await?;
        let replication = match request.handover {
            Handover::Cairn => {
                let full = plan.chain.first().expect("a restored chain has its full copy");
                let filters = filters_of(full);
                let setup = FollowSetup {
                    source: &source.name,
                    position: &start,
                    databases: &report.databases,
                    filters: &filters,
                    full_copy: &full.id,
                    server_identity: &copy.server.id,
                    slot: Some(&slot),
                    publication: Some(&publication),
                };
                target.prepare_follow(&setup).await?;
                None
            }
            _ => {
                let handover = NativeHandover {
                    source: &source.url,
                    position: &start,
                    databases: &[],
                    vendor: None,
                    slot: Some(slot.clone()),
                    publication: Some(publication.clone()),
                };
                Some(target.hand_over(&handover).await?)
            }
        };
        Ok::<_, SeedError>(SeedReport {
            source: request.restore.source.clone(),
            copy: Some(copy.id.clone()),
            restore: report,
            handover: request.handover,
            replication,
        })
    }
    .await;
    if seeded.is_err()
        && let Err(e) = engine.drop_replica_slot(&slot).await
    {
        tracing::warn!("{}: the replica's slot {slot} was not dropped: {e}", source.name);
    }
    seeded
}

/// The databases the copy was limited to (a source URL naming one database, or exact
/// `include-schema` names), which the replica replicates and nothing else; empty: everything.
fn databases_of(plan: &restore::RestorePlan) -> Vec<String> {
    let included = plan
        .chain
        .first()
        .and_then(|full| full.details.get("filters"))
        .and_then(|f| serde_json::from_value::<crate::engine::filter::Filters>(f.clone()).ok())
        .map(|f| f.include_schemas)
        .unwrap_or_default();
    match included.iter().any(|s| s.contains(['*', '?'])) {
        true => Vec::new(),
        false => included,
    }
}

/// The filters a chain's full copy was taken with, which a replica keeps applying.
fn filters_of(full: &crate::repo::model::CopyRecord) -> crate::engine::filter::Filters {
    full.details
        .get("filters")
        .and_then(|f| serde_json::from_value::<crate::engine::filter::Filters>(f.clone()).ok())
        .unwrap_or_default()
}
