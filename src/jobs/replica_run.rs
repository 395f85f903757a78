//! `cairn replica run`, `status` and `stop`: cairn's own applier following a configured source
//! into a target seeded with `--handover cairn`, re-seeding it when asked after a gap, and what
//! `status` and `stop` read and ask of it on the target.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::engine::follow::{FollowOptions, FollowReport, ReplicaState};
use crate::engine::mysql::binlog::file_order;
use crate::engine::postgres::pgoutput::parse_lsn;
use crate::engine::{SourceError, SourceSpec, SourceUrl, Target};
use crate::jobs::replica::{self, Handover, SeedError, SeedRequest};
use crate::jobs::restore::RestoreRequest;
use crate::repo::model::LogPosition;

/// Why a replica command failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The re-seed of `--auto-resync` failed.
    #[error("--auto-resync: the re-seed failed: {0}")]
    Resync(#[source] Box<SeedError>),
    /// `replica stop` asked, and the applier is still running.
    #[error("{0}")]
    StillRunning(String),
}

/// The target a replica command works on.
#[derive(Debug, Clone, Default)]
pub struct TargetRequest {
    pub target: String,
    pub target_password_file: Option<PathBuf>,
}

impl TargetRequest {
    fn url(&self) -> Result<SourceUrl, ReplicaError> {
        let mut url = SourceUrl::parse(&self.target).map_err(|e| ReplicaError::Usage(format!("--target: {e}")))?;
        url.complete_from_command_line("--target", self.target_password_file.as_deref())
            .map_err(ReplicaError::Usage)?;
        Ok(url)
    }

    /// The target as a replica of a source of engine `source`: a PostgreSQL target of a MySQL
    /// source is a translated replica.
    fn open_for(&self, source: crate::engine::Engine) -> Result<(SourceUrl, Arc<dyn Target>), ReplicaError> {
        let url = self.url()?;
        let target = crate::engine::open_target_for(&url, source)?;
        Ok((url, target))
    }

    /// The target as a replica of each engine it can follow (PostgreSQL: of PostgreSQL and of
    /// MySQL), for `status` and `stop`.
    fn open_all(&self) -> Result<(SourceUrl, Vec<Arc<dyn Target>>), ReplicaError> {
        let url = self.url()?;
        let mut targets = vec![crate::engine::open_target(&url)?];
        if url.engine == crate::engine::Engine::Postgres {
            targets.push(crate::engine::open_target_for(&url, crate::engine::Engine::Mysql)?);
        }
        Ok((url, targets))
    }
}

/// Re-seeding after a gap: from which destination, how many times at most in one run.
#[derive(Debug, Clone)]
pub struct AutoResync {
    pub from: String,
    pub limit: u32,
}

/// What `cairn replica run` was asked for.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub source: String,
    pub target: TargetRequest,
    pub options: FollowOptions,
    pub auto_resync: Option<AutoResync>,
}

/// What a run did, with the re-seeds it needed.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub follow: FollowReport,
    pub resyncs: u32,
}

fn configured(config: &Config, name: &str) -> Result<SourceSpec, ReplicaError> {
    config.source(name).map_err(|e| {
        ReplicaError::Usage(format!(
            "the applier reads the source as configured, so {name:?} must be a configured source: {e}"
        ))
    })
}

/// Follows the source into the target until stopped; after a gap, re-seeds from the latest copy
/// when `auto_resync` allows.
///
/// # Errors
/// A source that is not configured, a target of another engine, what stopped the applier.
pub async fn run(config: &Config, request: &RunRequest) -> Result<RunReport, ReplicaError> {
    let source = configured(config, &request.source)?;
    let (url, target) = request.target.open_for(source.engine())?;
    let translated = source.engine() == crate::engine::Engine::Mysql && url.engine == crate::engine::Engine::Postgres;
    if url.engine != source.engine() && !translated {
        return Err(ReplicaError::Usage(format!(
            "source {} is {:?} and the target is {:?}: the applier replicates between servers of the same engine, or \
             from MySQL/MariaDB into PostgreSQL",
            source.name,
            source.engine(),
            url.engine
        )));
    }
    let mut resyncs = 0;
    loop {
        match target.follow(&source, &request.options).await {
            Err(SourceError::LogGap { detail, .. })
                if request
                    .auto_resync
                    .as_ref()
                    .is_some_and(|resync| resyncs < resync.limit && !request.options.dry_run) =>
            {
                let resync = request.auto_resync.as_ref().expect("checked above");
                resyncs += 1;
                tracing::warn!(
                    "{}: the replica cannot continue ({detail}); --auto-resync: seeding it again from the latest \
                     copy on {} (re-seed {resyncs} of at most {})",
                    source.name,
                    resync.from,
                    resync.limit
                );
                // The new seed renames the databases as the first one did.
                let renamed = target
                    .replicas()
                    .await?
                    .into_iter()
                    .find(|s| s.source == source.name)
                    .map(|s| s.renamed)
                    .unwrap_or_default();
                let seed = SeedRequest {
                    restore: RestoreRequest {
                        rename_databases: renamed.iter().map(|(from, to)| format!("{from}={to}")).collect(),
                        from: Some(resync.from.clone()),
                        source: source.name.clone(),
                        copy: Some("latest".into()),
                        target: request.target.target.clone(),
                        target_password_file: request.target.target_password_file.clone(),
                        clean: true,
                        seeding: true,
                        ..RestoreRequest::default()
                    },
                    handover: Handover::Cairn,
                };
                replica::seed(config, &seed)
                    .await
                    .map_err(|e| ReplicaError::Resync(Box::new(e)))?;
            }
            Ok(follow) => return Ok(RunReport { follow, resyncs }),
            Err(e) => return Err(e.into()),
        }
    }
}

/// What `cairn replica events` was asked for.
#[derive(Debug, Clone)]
pub struct EventsRequest {
    pub source: String,
    pub targets: Vec<TargetRequest>,
    pub options: crate::engine::event_tables::EventTablesOptions,
}

/// Copies an event table's new rows from the configured source to every target until stopped.
///
/// # Errors
/// A source that is not configured, a bad target URL, or what stopped the copy.
pub async fn events(
    config: &Config,
    request: &EventsRequest,
) -> Result<crate::engine::event_tables::EventTablesReport, ReplicaError> {
    let source = configured(config, &request.source)?;
    if request.targets.is_empty() {
        return Err(ReplicaError::Usage("name at least one --target".into()));
    }
    let mut targets = Vec::new();
    for target in &request.targets {
        targets.push(target.url()?);
    }
    Ok(crate::engine::event_copy::run(&source.url, &targets, &request.options).await?)
}

/// A replica as `cairn replica status` shows it: the target's record and, for a configured
/// source, how far behind it is.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    #[serde(flatten)]
    pub state: ReplicaState,
    /// Bytes of the source's log not applied yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Seconds between now and when the oldest unapplied transaction was written (0 when
    /// nothing is waiting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
    /// Why the lag could not be measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_unknown: Option<String>,
}

/// The replicas on a target (of one source, when named).
///
/// # Errors
/// A bad target URL, or the target's error.
pub async fn status(
    config: &Config,
    target: &TargetRequest,
    source: Option<&str>,
) -> Result<Vec<ReplicaStatus>, ReplicaError> {
    let (_, engines) = target.open_all()?;
    let mut states = Vec::new();
    for engine in &engines {
        states.extend(engine.replicas().await?);
    }
    let mut shown = Vec::new();
    for state in states {
        if source.is_some_and(|name| name != state.source) {
            continue;
        }
        let mut status = ReplicaStatus {
            state,
            lag_bytes: None,
            lag_seconds: None,
            lag_unknown: None,
        };
        measure_lag(config, &mut status).await;
        shown.push(status);
    }
    Ok(shown)
}

async fn measure_lag(config: &Config, status: &mut ReplicaStatus) {
    let Ok(spec) = config.source(&status.state.source) else {
        status.lag_unknown = Some("the source is not configured here".into());
        return;
    };
    // The later of the last transaction applied and the last idle point read.
    let applied = match (&status.state.applied, &status.state.caught_up_to) {
        (Some(applied), Some(idle)) if later(idle, applied) => idle.clone(),
        (Some(applied), _) => applied.clone(),
        (None, _) => return,
    };
    let source = match crate::engine::open(&spec) {
        Ok(source) => source,
        Err(e) => {
            status.lag_unknown = Some(format!("the source could not be read: {e}"));
            return;
        }
    };
    let behind = match &applied {
        LogPosition::Postgres { .. } => source.log_written_since(&applied).await.map(|b| b.map(Ok)),
        LogPosition::Mysql { .. } => source.log_reach(&applied).await.map(|reach| {
            reach.map(|reach| match reach.reaches {
                true => Ok(reach.bytes_since),
                false => Err(reach.oldest),
            })
        }),
    };
    match behind {
        Ok(Some(Ok(bytes))) => {
            status.lag_bytes = Some(bytes);
            status.lag_seconds = Some(match bytes {
                0 => 0,
                _ => status
                    .state
                    .applied_event_at
                    .as_deref()
                    .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                    .map_or(0, |at| {
                        (chrono::Utc::now() - at.with_timezone(&chrono::Utc))
                            .num_seconds()
                            .max(0)
                    }),
            });
        }
        Ok(Some(Err(oldest))) => {
            status.lag_unknown = Some(format!(
                "the source's log starts at {oldest}, after the replica's position: the replica cannot continue \
                 (seed it again)"
            ));
        }
        Ok(None) => status.lag_unknown = Some("the source's engine does not report its log".into()),
        Err(e) => status.lag_unknown = Some(format!("the source could not be read: {e}")),
    }
}

/// Whether position `a` is past `b` (positions of one source's log).
fn later(a: &LogPosition, b: &LogPosition) -> bool {
    match (a, b) {
        (
            LogPosition::Mysql { file, position, .. },
            LogPosition::Mysql {
                file: b_file,
                position: b_position,
                ..
            },
        ) => (file_order(file), *position) > (file_order(b_file), *b_position),
        (LogPosition::Postgres { lsn, .. }, LogPosition::Postgres { lsn: b_lsn, .. }) => {
            match (parse_lsn(lsn).ok(), parse_lsn(b_lsn).ok()) {
                (Some(a), Some(b)) => a > b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Ends `source`'s replica on the target for good: a PostgreSQL replica of a MySQL/MariaDB source
/// becomes a standalone database (sequences, foreign keys, cairn's bookkeeping removed).
///
/// # Errors
/// A target that is not PostgreSQL (usage), no such replica, a running applier, the target's
/// error.
pub async fn detach(target: &TargetRequest, source: &str) -> Result<crate::engine::follow::Detached, ReplicaError> {
    let (url, engine) = target.open_for(crate::engine::Engine::Mysql)?;
    if url.engine != crate::engine::Engine::Postgres {
        return Err(ReplicaError::Usage(
            "replica detach is for PostgreSQL replicas of MySQL/MariaDB sources; a MySQL/MariaDB replica needs no \
             detach: stop its applier with `cairn replica stop`"
                .into(),
        ));
    }
    Ok(engine.detach(source).await?)
}

/// Copies chosen tables of `source` (`DATABASE.TABLE`, or `DATABASE.*` for every table of a
/// database) again into its PostgreSQL replica on the target, at a new position where the
/// applier rejoins their changes.
///
/// # Errors
/// A source that is not configured or a selection that does not read (usage), a target that is
/// not a PostgreSQL replica of a MySQL source, a running applier, either server's error.
pub async fn reload(
    config: &Config,
    target: &TargetRequest,
    source: &str,
    tables: &[String],
) -> Result<crate::engine::follow::Reloaded, ReplicaError> {
    let spec = configured(config, source)?;
    let mut selection = Vec::new();
    for table in tables {
        let Some((database, name)) = table.split_once('.').filter(|(d, n)| !d.is_empty() && !n.is_empty()) else {
            return Err(ReplicaError::Usage(format!(
                "--table {table}: expected DATABASE.TABLE, or DATABASE.* for every table of a database"
            )));
        };
        selection.push((database.to_string(), (name != "*").then(|| name.to_string())));
    }
    if selection.is_empty() {
        return Err(ReplicaError::Usage(
            "replica reload: name what to reload with --table".into(),
        ));
    }
    let (url, engine) = target.open_for(spec.engine())?;
    if spec.engine() != crate::engine::Engine::Mysql || url.engine != crate::engine::Engine::Postgres {
        return Err(ReplicaError::Usage(
            "replica reload is for PostgreSQL replicas of MySQL/MariaDB sources; seed a same-engine replica again \
             instead (cairn replica seed --clean)"
                .into(),
        ));
    }
    let lock_wait = config.copy_options_of(source, None).lock_wait;
    Ok(engine.reload(&spec, &selection, lock_wait).await?)
}

/// Asks the applier of `source`'s replica on the target to stop after the transaction in
/// flight, and waits up to `wait` for it to end.
///
/// # Errors
/// No such replica (usage), the target's error, or [`ReplicaError::StillRunning`].
pub async fn stop(target: &TargetRequest, source: &str, wait: Duration) -> Result<ReplicaState, ReplicaError> {
    let (url, engines) = target.open_all()?;
    let mut found = None;
    for engine in engines {
        if let Some(state) = engine.request_stop(source).await? {
            found = Some((engine, state));
            break;
        }
    }
    let Some((engine, mut state)) = found else {
        return Err(ReplicaError::Usage(format!(
            "{} holds no replica of source {source} for cairn's applier",
            url.without_password()
        )));
    };
    // `--wait` comes from the command line unbounded: a wait past the clock's range is forever.
    let deadline = Instant::now().checked_add(wait);
    while state.running {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(ReplicaError::StillRunning(format!(
                "the applier of source {source} ({}) is still running {} s after the stop request; it stops after \
                 the transaction in flight — check its log, or stop its process",
                state.applier.as_deref().unwrap_or("unknown"),
                wait.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        match engine.replicas().await?.into_iter().find(|s| s.source == source) {
            Some(now) => state = now,
            None => break,
        }
    }
    Ok(state)
}
