//! Restore: choosing the copy and its chain from the status, and (with an engine) replaying it
//! into a target database.

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::destination::DestinationError;
use crate::exit::{Classify, ExitStatus};
use crate::source::{SourceError, SourceUrl};
use crate::status::{CopyRecord, StatusError, StatusStore};

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
}

impl Classify for RestoreError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            RestoreError::Config(e) => e.exit_status(),
            RestoreError::Usage(_) => ExitStatus::Usage,
            RestoreError::Source(e) => e.exit_status(),
            RestoreError::Destination(e) => e.exit_status(),
            RestoreError::Status(e) => e.exit_status(),
            RestoreError::NoCopy { .. } => ExitStatus::Failed,
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
}

/// The copies a restore applies, full first.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    pub source: String,
    pub destination: String,
    pub target: String,
    pub chain: Vec<CopyRecord>,
}

/// Resolves the copy and its chain from the status; writes nothing.
///
/// # Errors
/// Usage errors for bad arguments, status errors, or a broken chain.
pub async fn plan(config: &Config, request: &RestoreRequest) -> Result<RestorePlan, RestoreError> {
    let target = SourceUrl::parse(&request.target).map_err(|e| RestoreError::Usage(format!("--target: {e}")))?;
    let destination = config.destination(&request.from)?.open().await?;
    destination.check(crate::destination::Access::Read).await?;
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
        target: target.to_string(),
        chain,
    })
}

/// Replays a plan into its target.
///
/// # Errors
/// [`RestoreError::Source`] while no engine is available in this build.
pub async fn run(plan: &RestorePlan, engine: crate::source::Engine) -> Result<(), RestoreError> {
    crate::source::ensure_engine(&plan.source, engine, "restore")?;
    Ok(())
}
