//! Restore: choosing the copy and its chain from the status, and (with an engine) replaying it
//! into a target database.

use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::destination::{Access, Destination, DestinationError, DestinationExt, md5_hex};
use crate::exit::{Classify, ExitStatus};
use crate::manifest::Manifest;
use crate::source::{RestoreInput, RestoreReport, SourceError, SourceUrl};
use crate::status::{CopyRecord, MAX_STATUS_BYTES, StatusError, StatusStore};

/// Errors of a restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("source {source_name} has no copy at {location}")]
    NoCopy { source_name: String, location: String },
    #[error("{0}")]
    Manifest(String),
}

impl Classify for RestoreError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            RestoreError::Config(e) => e.exit_status(),
            RestoreError::Usage(_) => ExitStatus::Usage,
            RestoreError::Source(e) => e.exit_status(),
            RestoreError::Destination(e) => e.exit_status(),
            RestoreError::Status(e) => e.exit_status(),
            RestoreError::NoCopy { .. } | RestoreError::Manifest(_) => ExitStatus::Failed,
        }
    }
}

/// What `cairn restore` was asked for.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    pub from: String,
    pub source: String,
    /// A copy id or `latest`.
    pub copy: Option<String>,
    pub target: String,
    pub jobs: Option<u32>,
    pub clean: bool,
    /// `FROM=TO` database renames (MySQL).
    pub rename_databases: Vec<String>,
    pub no_binlog: bool,
    pub verify_checksums: bool,
}

/// The copies a restore applies, full first, and where they go.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    pub source: String,
    pub destination: String,
    /// The target URL, password masked.
    pub target: String,
    pub jobs: u32,
    pub clean: bool,
    pub rename_databases: Vec<(String, String)>,
    pub no_binlog: bool,
    pub verify_checksums: bool,
    pub chain: Vec<CopyRecord>,
    #[serde(skip)]
    target_url: SourceUrl,
    #[serde(skip)]
    store: Option<Arc<dyn Destination>>,
}

/// Resolves the copy and its chain from the status; writes nothing.
///
/// # Errors
/// Usage errors for bad arguments, status errors, or a broken chain.
pub async fn plan(config: &Config, request: &RestoreRequest) -> Result<RestorePlan, RestoreError> {
    let target_url = SourceUrl::parse(&request.target).map_err(|e| RestoreError::Usage(format!("--target: {e}")))?;
    if target_url.engine == crate::source::Engine::Postgres && target_url.database().is_none() {
        return Err(RestoreError::Usage(format!(
            "--target {target_url}: name the database to restore into, e.g. postgres://user@host/app_restored"
        )));
    }
    if request.jobs == Some(0) {
        return Err(RestoreError::Usage("--jobs must be at least 1".into()));
    }
    let mut rename_databases = Vec::new();
    for rename in &request.rename_databases {
        let Some((from, to)) = rename.split_once('=').filter(|(f, t)| !f.is_empty() && !t.is_empty()) else {
            return Err(RestoreError::Usage(format!("--rename-db {rename:?}: expected FROM=TO")));
        };
        rename_databases.push((from.to_string(), to.to_string()));
    }
    if target_url.engine == crate::source::Engine::Postgres
        && (!rename_databases.is_empty() || request.no_binlog || request.verify_checksums)
    {
        return Err(RestoreError::Usage(
            "--rename-db, --no-binlog and --checksum apply to MySQL targets; a PostgreSQL copy goes into the database \
             of --target and is checked by row counts"
                .into(),
        ));
    }
    let destination = config.destination(&request.from)?.open().await?;
    destination.check(Access::Read).await?;
    let loaded = StatusStore::new(destination.clone(), &request.source).load().await?;
    let body = &loaded.status.body;
    let copy = match request.copy.as_deref() {
        None | Some("latest") => body.latest().ok_or_else(|| RestoreError::NoCopy {
            source_name: request.source.clone(),
            location: destination.location(),
        })?,
        Some(id) => body
            .copy(id)
            .ok_or_else(|| StatusError::Chain(crate::status::ChainError::UnknownCopy(id.to_string())))?,
    };
    let chain = body
        .chain(&copy.id)
        .map_err(StatusError::from)?
        .into_iter()
        .cloned()
        .collect();
    Ok(RestorePlan {
        source: request.source.clone(),
        destination: destination.location(),
        target: target_url.to_string(),
        jobs: request.jobs.unwrap_or_else(crate::config::default_jobs),
        clean: request.clean,
        rename_databases,
        no_binlog: request.no_binlog,
        verify_checksums: request.verify_checksums,
        chain,
        target_url,
        store: Some(destination),
    })
}

/// Reads each manifest of the chain and checks it against the MD5 the status recorded.
///
/// # Errors
/// [`RestoreError::Manifest`] naming the manifest that does not match or does not parse.
pub async fn manifests(
    destination: &Arc<dyn Destination>,
    chain: &[CopyRecord],
) -> Result<Vec<Manifest>, RestoreError> {
    let mut manifests = Vec::new();
    for copy in chain {
        let name = format!("{} at {}", copy.manifest.path, destination.location());
        let bytes = destination.get_bytes(&copy.manifest.path, MAX_STATUS_BYTES).await?;
        let actual = md5_hex(&bytes);
        if actual != copy.manifest.md5 {
            return Err(RestoreError::Manifest(format!(
                "manifest {name} is damaged: the status records MD5 {}, it hashes to {actual}",
                copy.manifest.md5
            )));
        }
        manifests.push(Manifest::decode(&name, &bytes).map_err(|e| RestoreError::Manifest(e.to_string()))?);
    }
    Ok(manifests)
}

/// Replays a plan into its target.
///
/// # Errors
/// Engine errors (naming the file, table or statement), damaged manifests or files.
pub async fn run(plan: &RestorePlan) -> Result<RestoreReport, RestoreError> {
    let copy_engine = plan.chain.first().map(|c| match c.log_range.end {
        crate::status::LogPosition::Postgres { .. } => crate::source::Engine::Postgres,
        crate::status::LogPosition::Mysql { .. } => crate::source::Engine::Mysql,
    });
    if let Some(engine) = copy_engine
        && engine != plan.target_url.engine
    {
        return Err(RestoreError::Usage(format!(
            "source {} holds {engine} copies; they cannot be restored into the {} database {}",
            plan.source, plan.target_url.engine, plan.target
        )));
    }
    let target = crate::source::open_target(&plan.target_url)?;
    let destination = plan.store.clone().expect("plans are made by plan()");
    let manifests = manifests(&destination, &plan.chain).await?;
    let input = RestoreInput {
        destination,
        source: plan.source.clone(),
        manifests,
        jobs: plan.jobs,
        clean: plan.clean,
        rename_databases: plan.rename_databases.clone(),
        no_binlog: plan.no_binlog,
        verify_checksums: plan.verify_checksums,
    };
    Ok(target.restore(&input).await?)
}
