//! `cairn replica seed`: a replica made from the copies on a destination — the chain restored
//! into the target — and then handed over: to native replication from the exact position the
//! restore reached, or left there (`none`).

use serde::Serialize;

use crate::config::Config;
use crate::engine::{NativeHandover, ReplicationState, RestoreReport};
use crate::jobs::restore::{self, RestoreError, RestoreRequest};

/// What follows the restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Handover {
    /// The server's own replication, from the restored position.
    Native,
    /// cairn's own applier (`cairn replica run`; not available yet).
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
pub async fn seed(config: &Config, request: &SeedRequest) -> Result<SeedReport, RestoreError> {
    if request.handover == Handover::Cairn {
        return Err(RestoreError::Usage(
            "--handover cairn needs `cairn replica run`, which is not available yet; use native or none".into(),
        ));
    }
    let native = request.handover == Handover::Native;
    // The replica connects to the source as configured, password from its secret.
    let source = match native {
        true => Some(config.source(&request.restore.source).map_err(|e| {
            RestoreError::Usage(format!(
                "--handover native connects the replica to the source, so {:?} must be a configured source: {e}",
                request.restore.source
            ))
        })?),
        false => None,
    };
    if native && !request.restore.rename_databases.is_empty() {
        return Err(RestoreError::Usage(
            "--rename-db cannot be used with --handover native: the source's changes name the source's databases"
                .into(),
        ));
    }
    let plan = restore::plan(config, &request.restore).await?;
    let latest = plan.chain.last().cloned();
    if native
        && latest
            .as_ref()
            .is_some_and(|c| matches!(c.log_range.end, crate::repo::status::LogPosition::Postgres { .. }))
    {
        return Err(RestoreError::Usage(
            "--handover native is not available for PostgreSQL yet; seed with --handover none".into(),
        ));
    }
    let target = plan.target_engine()?;
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
        )));
    }
    if native {
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
        )));
    }
    let report = restore::run(&plan).await?;
    let replication = match (&source, &report.position) {
        (Some(source), Some(position)) => {
            let databases = databases_of(&plan);
            let handover = NativeHandover {
                source: &source.url,
                position,
                databases: &databases,
            };
            Some(target.hand_over(&handover).await?)
        }
        (Some(_), None) => {
            return Err(RestoreError::Usage(
                "the restore reported no source position to replicate from".into(),
            ));
        }
        _ => None,
    };
    Ok(SeedReport {
        restore: report,
        handover: request.handover,
        replication,
    })
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
