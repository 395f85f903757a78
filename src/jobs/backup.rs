//! The periodic backup job: from a request to a validated plan, then for each source the lock,
//! the choice between full and incremental, and the commit of a copy in the order
//! files → manifest → status.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::engine::{CopyOptions, Planned, Source, SourceError, SourceSpec, SourceUrl};
use crate::jobs::events::{BackupEvent, Observer};
use crate::repo::RepoError;
use crate::repo::kinds::{CopyKind, RequestedType, RunType};
use crate::repo::lock::{LockError, LockOptions};
use crate::repo::status::{CopyInfo, CopyRecord, StatusBody, StatusError, StatusStore};
use crate::repo::writer::CopyWriter;
use crate::storage::{Access, DestinationError, DestinationSpec};

/// Errors of a backup run.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
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
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(
        "source {source_name} has no copy an incremental at run type {run_type} can continue from; take a full copy \
         first (--type full) or let cairn choose (--type auto)"
    )]
    NoParent { source_name: String, run_type: RunType },
    /// One failure shared by every destination of a source (its database could not be read).
    #[error(transparent)]
    Shared(Arc<BackupError>),
}

impl From<RepoError> for BackupError {
    fn from(error: RepoError) -> Self {
        match error {
            RepoError::Destination(e) => BackupError::Destination(e),
            RepoError::Status(e) => BackupError::Status(e),
            RepoError::Lock(e) => BackupError::Lock(e),
            other => BackupError::Source(SourceError::from(other)),
        }
    }
}

/// What `cairn backup` was asked for, before validation.
#[derive(Debug, Clone, Default)]
pub struct BackupRequest {
    /// Source names from the configuration or source URLs; empty means every configured source.
    pub sources: Vec<String>,
    /// Name for a source given by URL.
    pub name: Option<String>,
    /// Destination name or URL overriding the configuration.
    pub to: Option<String>,
    pub run_type: Option<RunType>,
    pub requested: RequestedType,
    pub jobs: Option<u32>,
    /// Patterns added to every source's configured filters.
    pub filters: crate::engine::filter::Filters,
    /// Record table checksums in MySQL copies.
    pub checksums: bool,
    /// Sources backed up at the same time (default 1).
    pub parallel_sources: Option<u32>,
    /// Password of the source given by URL.
    pub password_file: Option<std::path::PathBuf>,
}

/// One source of a validated plan.
#[derive(Debug, Clone)]
pub struct PlannedSource {
    pub source: SourceSpec,
    pub destination: DestinationSpec,
    pub full_backup: RunType,
    pub jobs: u32,
    pub copy_options: CopyOptions,
    /// The other destinations each copy is written to at the same time (`destinations = [...]`).
    pub also: Vec<DestinationSpec>,
    /// The key the copies are encrypted with (`[encryption]`); `None`: not encrypted.
    pub key: Option<crate::repo::crypt::Key>,
    /// zstd level of the copy's files (`compression-level`).
    pub compression_level: i32,
}

/// A validated backup run: everything needed, nothing opened yet.
#[derive(Debug, Clone)]
pub struct BackupPlan {
    pub run_type: RunType,
    pub requested: RequestedType,
    pub sources: Vec<PlannedSource>,
    /// Sources backed up at the same time.
    pub parallel_sources: usize,
}

/// Checks every configured source as a backup of it would, without touching the network:
/// its password file is read, its destination chosen (with its secret file), its engine opened.
/// `cairn config check` runs this, so it refuses what `cairn backup` would refuse.
///
/// # Errors
/// The first source's [`ConfigError`] or engine error.
pub fn check_sources(config: &Config) -> Result<(), BackupError> {
    for name in config.settings.sources.keys() {
        let source = config.source(name)?;
        config.destination_of(name)?;
        crate::engine::open(&source)?;
    }
    Ok(())
}

/// Turns a request into a plan without touching the network.
///
/// # Errors
/// [`BackupError::Usage`] or [`BackupError::Config`] for anything the user must fix.
pub fn plan(config: &Config, request: &BackupRequest) -> Result<BackupPlan, BackupError> {
    let run_type = request.run_type.unwrap_or(RunType::Daily);
    if request.jobs == Some(0) {
        return Err(BackupError::Usage("--jobs must be at least 1".into()));
    }
    if request.parallel_sources == Some(0) {
        return Err(BackupError::Usage("--parallel-sources must be at least 1".into()));
    }
    let names: Vec<String> = if request.sources.is_empty() {
        if config.settings.sources.is_empty() {
            return Err(BackupError::Usage(
                "no source to back up: pass --source URL|NAME, or configure sources (see config/cairn.example.toml)"
                    .into(),
            ));
        }
        config.settings.sources.keys().cloned().collect()
    } else {
        request.sources.clone()
    };
    if request.name.is_some() && names.len() != 1 {
        return Err(BackupError::Usage("--name applies to a single --source".into()));
    }
    if request.password_file.is_some() && names.len() != 1 {
        return Err(BackupError::Usage(
            "--password-file applies to a single --source URL".into(),
        ));
    }
    let mut sources = Vec::new();
    for given in names {
        // Anything that is not a configured name and could not be one is meant as a URL, so a
        // malformed URL is reported as such, not as an unknown source.
        let looks_like_url = given.contains("://") || given.contains([':', '/', '@']);
        let (source, config_name) = if !config.settings.sources.contains_key(&given) && looks_like_url {
            let mut url = SourceUrl::parse(&given)
                .map_err(|e| BackupError::Usage(format!("--source {}: {e}", crate::secret::redact_url(&given))))?;
            url.complete_from_command_line("--source", request.password_file.as_deref())
                .map_err(BackupError::Usage)?;
            let name = request.name.clone().unwrap_or_else(|| url.default_name());
            if !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                || name.is_empty()
            {
                return Err(BackupError::Usage(format!(
                    "--name {name:?}: names use lowercase letters, digits and '-'"
                )));
            }
            (SourceSpec { name, url }, None)
        } else {
            if request.name.is_some() {
                return Err(BackupError::Usage("--name only names a source given by URL".into()));
            }
            (config.source(&given)?, Some(given))
        };
        let destination = match &request.to {
            Some(to) => config.destination(to)?,
            None => match &config_name {
                Some(name) => config.destination_of(name)?,
                None => {
                    return Err(BackupError::Usage(format!(
                        "no destination for source {}: pass --to PATH|s3://bucket/prefix",
                        source.name
                    )));
                }
            },
        };
        let key = config_name.as_deref().unwrap_or(&source.name);
        let mut copy_options = config.copy_options_of(key, request.jobs);
        copy_options.filters = copy_options.filters.merged(&request.filters);
        if copy_options.postgres.capture_ddl && !copy_options.filters.is_empty() {
            return Err(BackupError::Usage(format!(
                "source {}: on-ddl = \"capture\" cannot be combined with filters (recorded DDL may name tables the \
                 copies leave out); leave the filters out of this run, or use on-ddl = \"full\"",
                source.name
            )));
        }
        copy_options.mysql.checksums |= request.checksums;
        // An explicit --to writes there only.
        let also = match (&request.to, &config_name) {
            (None, Some(name)) => config.more_destinations_of(name)?,
            _ => Vec::new(),
        };
        sources.push(PlannedSource {
            compression_level: config.compression_level_of(key),
            also,
            key: config.writing_key_of(key)?,
            full_backup: config.full_backup_of(key),
            jobs: copy_options.jobs,
            copy_options,
            source,
            destination,
        });
    }
    if request.checksums
        && sources
            .iter()
            .all(|s| s.source.engine() == crate::engine::Engine::Postgres)
    {
        return Err(BackupError::Usage(
            "--checksum records table checksums of MySQL/MariaDB copies; no source of this run is one".into(),
        ));
    }
    Ok(BackupPlan {
        run_type,
        requested: request.requested,
        sources,
        parallel_sources: request.parallel_sources.unwrap_or(1).max(1) as usize,
    })
}

/// The kind of copy a run takes and the copy it continues from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub kind: CopyKind,
    pub parent: Option<String>,
}

/// Decides full or incremental from the status, the run type and what was asked.
///
/// # Errors
/// [`BackupError::NoParent`] when an incremental was asked for and nothing can be its parent.
pub fn decide(
    source: &str,
    status: &StatusBody,
    run_type: RunType,
    requested: RequestedType,
    full_backup: RunType,
) -> Result<Decision, BackupError> {
    let kind = match requested {
        RequestedType::Auto => status.next_backup_type(run_type, full_backup),
        RequestedType::Full => CopyKind::Full,
        RequestedType::Incremental => CopyKind::Incremental,
    };
    let parent =
        match kind {
            CopyKind::Full => None,
            CopyKind::Incremental => Some(status.candidate_parent(run_type).map(|c| c.id.clone()).ok_or_else(
                || BackupError::NoParent {
                    source_name: source.to_string(),
                    run_type,
                },
            )?),
        };
    Ok(Decision { kind, parent })
}

/// A new copy id: UTC start time to the millisecond, then the kind. Ids sort by start time.
pub fn new_copy_id(started_at: DateTime<Utc>, kind: CopyKind) -> String {
    let suffix = match kind {
        CopyKind::Full => "full",
        CopyKind::Incremental => "incr",
    };
    format!("{}-{suffix}", started_at.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// What a dry run or a run reports for one source.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedCopy {
    pub source: String,
    pub engine: crate::engine::Engine,
    pub url: String,
    pub destination: String,
    pub run_type: RunType,
    pub full_backup: RunType,
    pub jobs: u32,
    pub kind: CopyKind,
    pub parent: Option<String>,
    /// What the engine checked against the source, for people.
    pub checks: Vec<String>,
}

/// Opens every source's engine (no I/O) and checks it can take what the plan asks for.
pub(super) fn open_engines(plan: &BackupPlan) -> Result<Vec<Arc<dyn Source>>, BackupError> {
    let mut engines = Vec::new();
    for item in &plan.sources {
        let engine = crate::engine::open(&item.source)?;
        if plan.requested == RequestedType::Incremental && !engine.supports_incremental(&item.copy_options) {
            return Err(BackupError::Usage(format!(
                "source {}: {} incremental copies are not available for this source: turn them on with \
                 incrementals = true in its settings (CAIRN_SOURCES__<NAME>__INCREMENTALS); use --type full or auto \
                 meanwhile",
                item.source.name,
                item.source.engine()
            )));
        }
        engines.push(engine);
    }
    Ok(engines)
}

/// What a dry run found for one source.
#[derive(Debug)]
pub struct DryRunOutcome {
    pub source: String,
    pub result: Result<PlannedCopy, BackupError>,
}

/// For each source: reads its status and runs every check a backup makes before it writes —
/// connecting to the source, its settings, privileges and log — and reports what the run would
/// take, writing nothing anywhere. A failing source does not stop the others.
///
/// # Errors
/// [`BackupError`] when an engine cannot take what the plan asks for; per-source failures are
/// in the outcomes.
pub async fn dry_run(plan: &BackupPlan, observer: &dyn Observer) -> Result<Vec<DryRunOutcome>, BackupError> {
    let engines = open_engines(plan)?;
    let mut outcomes = Vec::new();
    for (item, engine) in plan.sources.iter().zip(engines) {
        let result = async {
            // No check(): on a local destination it would create the folder.
            let destination = item.destination.open().await?;
            let loaded = StatusStore::new(destination.clone(), &item.source.name).load().await?;
            let (decision, checks) =
                preflight_source(plan, item, engine.as_ref(), &loaded.status.body, observer).await?;
            Ok(PlannedCopy {
                source: item.source.name.clone(),
                engine: item.source.engine(),
                url: item.source.url.to_string(),
                destination: destination.location(),
                run_type: plan.run_type,
                full_backup: item.full_backup,
                jobs: item.jobs,
                kind: decision.kind,
                parent: decision.parent,
                checks,
            })
        }
        .await;
        outcomes.push(DryRunOutcome {
            source: item.source.name.clone(),
            result,
        });
    }
    Ok(outcomes)
}

/// The copy a run of `item` takes, checked against the source by the engine's preflight: the
/// decision (a full copy instead of an incremental whose log is gone, with `on-log-gap =
/// "full"`) and the engine's notes.
pub(super) async fn preflight_source(
    plan: &BackupPlan,
    item: &PlannedSource,
    engine: &dyn Source,
    status: &StatusBody,
    observer: &dyn Observer,
) -> Result<(Decision, Vec<String>), BackupError> {
    let decision = decide_for(engine, item, status, plan, observer)?;
    let planned = match decision.parent.as_deref().and_then(|id| status.copy(id)) {
        Some(parent) => Planned::Incremental { parent },
        None => Planned::Full,
    };
    match engine.preflight(&item.copy_options, planned).await {
        Ok(notes) => Ok((decision, notes)),
        Err(gap) if item.copy_options.full_instead(&gap) && matches!(planned, Planned::Incremental { .. }) => {
            let mut notes = engine.preflight(&item.copy_options, Planned::Full).await?;
            notes.insert(
                0,
                format!("{gap}; {}: a full copy instead", CopyOptions::full_setting(&gap)),
            );
            Ok((
                Decision {
                    kind: CopyKind::Full,
                    parent: None,
                },
                notes,
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// [`decide`], then a full copy instead of an incremental the engine cannot take (only reached
/// with `--type auto`; an explicit `--type incremental` was refused when the engines opened).
pub(super) fn decide_for(
    engine: &dyn Source,
    item: &PlannedSource,
    status: &StatusBody,
    plan: &BackupPlan,
    observer: &dyn Observer,
) -> Result<Decision, BackupError> {
    let decision = decide(
        &item.source.name,
        status,
        plan.run_type,
        plan.requested,
        item.full_backup,
    )?;
    if decision.kind == CopyKind::Incremental && engine.single_position(&item.copy_options) {
        return Ok(Decision {
            kind: CopyKind::Incremental,
            parent: status.newest_intact().map(|c| c.id.clone()),
        });
    }
    if decision.kind == CopyKind::Incremental && !engine.supports_incremental(&item.copy_options) {
        observer.backup(&BackupEvent::FullOnly {
            source: &item.source.name,
            engine: &item.source.engine().to_string(),
        });
        return Ok(Decision {
            kind: CopyKind::Full,
            parent: None,
        });
    }
    Ok(decision)
}

/// How one source's run ended.
#[derive(Debug)]
pub struct SourceOutcome {
    pub source: String,
    /// Where the source's status lives.
    pub destination: DestinationSpec,
    /// The source writes to several destinations: this is one of them.
    pub several: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub result: Result<CopyRecord, BackupError>,
}

pub(super) async fn run_source(
    plan: &BackupPlan,
    item: &PlannedSource,
    engine: Arc<dyn Source>,
    lock_options: &LockOptions,
    observer: &dyn Observer,
) -> Result<CopyRecord, BackupError> {
    let name = &item.source.name;
    let destination = item.destination.open().await?;
    // Everything that can be checked without writing is checked first: a mistyped URL, a wrong
    // password or a missing privilege leaves the destination untouched.
    let before = StatusStore::new(destination.clone(), name).load().await?;
    preflight_source(plan, item, engine.as_ref(), &before.status.body, observer).await?;
    destination.check(Access::Write).await?;
    let lock = crate::repo::lock::acquire(destination.clone(), name, "backup", lock_options).await?;
    let result = async {
        let status = StatusStore::new(destination.clone(), name);
        let loaded = status.load().await?;
        let decision = decide_for(engine.as_ref(), item, &loaded.status.body, plan, observer)?;
        let started_at = Utc::now();
        let copy_id = new_copy_id(started_at, decision.kind);
        observer.backup(&BackupEvent::Taking {
            source: name,
            kind: decision.kind,
            copy: &copy_id,
            destination: &destination.location(),
        });
        let parent = decision.parent.as_deref().and_then(|id| loaded.status.body.copy(id));
        let (writer, kind, parent, taken) =
            take_copy(engine.as_ref(), item, destination.clone(), &copy_id, parent, observer).await?;
        let info = copy_info(plan, kind, parent, started_at, taken);
        Ok(writer.commit(info, &status, &lock).await?)
    }
    .await;
    // Workers cancelled by a failure may still be aborting their uploads.
    destination.settle().await;
    if let Err(error) = lock.release().await {
        observer.backup(&BackupEvent::LockNotReleased {
            source: name,
            error: &error,
        });
    }
    result
}

/// What [`take_copy`] took: the writer holding the copy's files, its kind, its parent and the
/// engine's account of it.
pub(super) type Taken = (CopyWriter, CopyKind, Option<String>, crate::engine::TakenCopy);

/// Takes the copy `copy_id` of `item` through a writer on `destination`: the incremental after
/// `parent` when there is one, else a full copy. When the incremental cannot be taken because
/// its log is gone (or, on PostgreSQL, the schema changed) and the settings say so
/// (`on-log-gap = "full"`), a full copy is taken instead under a new id, with an event saying
/// why. Shared by backups to one destination and fanned backups, so both decide alike.
///
/// # Errors
/// The engine's error for the copy it took last.
pub(super) async fn take_copy(
    engine: &dyn Source,
    item: &PlannedSource,
    destination: Arc<dyn crate::storage::Destination>,
    copy_id: &str,
    parent: Option<&CopyRecord>,
    observer: &dyn Observer,
) -> Result<Taken, SourceError> {
    let name = &item.source.name;
    let writer_for = |id: &str| {
        CopyWriter::new(destination.clone(), name, id)
            .with_key(item.key.clone())
            .with_level(item.compression_level)
    };
    let writer = writer_for(copy_id);
    let Some(parent) = parent else {
        let taken = engine.full_copy(&writer, &item.copy_options).await?;
        return Ok((writer, CopyKind::Full, None, taken));
    };
    match engine.incremental_copy(&writer, &item.copy_options, parent).await {
        Ok(taken) => Ok((writer, CopyKind::Incremental, Some(parent.id.clone()), taken)),
        Err(gap) if item.copy_options.full_instead(&gap) => {
            let full_id = new_copy_id(Utc::now(), CopyKind::Full);
            observer.backup(&BackupEvent::FullAfterLogGap {
                source: name,
                gap: &gap,
                copy: &full_id,
            });
            let writer = writer_for(&full_id);
            let taken = engine.full_copy(&writer, &item.copy_options).await?;
            Ok((writer, CopyKind::Full, None, taken))
        }
        Err(e) => Err(e),
    }
}

/// The record of a copy the engine took, before its writer fills in its id, files and bytes.
pub(super) fn copy_info(
    plan: &BackupPlan,
    kind: CopyKind,
    parent: Option<String>,
    started_at: DateTime<Utc>,
    taken: crate::engine::TakenCopy,
) -> CopyInfo {
    CopyInfo {
        id: String::new(),
        kind,
        run_type: plan.run_type,
        parent,
        started_at,
        finished_at: Utc::now(),
        log_range: taken.log_range,
        server: taken.server,
        bytes: 0,
        files: 0,
        cairn_version: crate::CAIRN_VERSION.to_string(),
        details: taken.details,
    }
}
