//! `cairn verify`: proves, without a database, that copies are restorable as recorded — every
//! manifest against the status, every stored file's size and MD5 against its manifest, each
//! chain's continuity, and the log files' own framing and checksums — and names what each
//! damaged or missing object makes unrestorable.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::engine::{MysqlRestoreOptions, RestoreInput, SourceError};
use crate::repo::codec::Verified;
use crate::repo::manifest::Manifest;
use crate::repo::model::{VERIFICATIONS_KEPT, VerificationRecord};
use crate::repo::reader::files_of;
use crate::repo::status::{CopyRecord, LogPosition, StatusError, StatusStore};
use crate::storage::{Access, Destination, DestinationError};

/// Why a verification could not run at all (a damaged copy is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error(transparent)]
    Status(#[from] StatusError),
}

/// What `cairn verify` was asked for.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    pub from: String,
    pub source: String,
    /// One copy (with its chain); `None`: the latest.
    pub copy: Option<String>,
    /// Every copy of the source.
    pub all: bool,
}

/// What was found about one copy.
#[derive(Debug, Clone, Serialize)]
pub struct CopyCheck {
    pub copy: String,
    pub kind: String,
    pub files: u64,
    pub bytes: u64,
    /// Each damaged or missing object, named, with what is wrong.
    pub problems: Vec<String>,
    /// Why the copy cannot be restored: its own problems, or those of a copy its chain needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unrestorable_because: Option<String>,
}

/// What a verification found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub source: String,
    pub destination: String,
    pub copies: Vec<CopyCheck>,
}

impl VerifyReport {
    /// Whether everything checked is intact.
    pub fn intact(&self) -> bool {
        self.copies
            .iter()
            .all(|c| c.problems.is_empty() && c.unrestorable_because.is_none())
    }
}

/// Verifies the copies `request` names.
///
/// # Errors
/// A destination or status that cannot be read at all, or an unknown copy.
pub async fn run(config: &Config, request: &VerifyRequest) -> Result<VerifyReport, VerifyError> {
    let started_at = chrono::Utc::now();
    let destination = config.destination(&request.from)?.open().await?;
    destination.check(Access::Read).await?;
    let loaded = StatusStore::new(destination.clone(), &request.source)
        .load_existing()
        .await?;
    let body = &loaded.status.body;
    let tips: Vec<&CopyRecord> = match (&request.copy, request.all) {
        (Some(_), true) => return Err(VerifyError::Usage("pass --copy ID or --all, not both".into())),
        (_, true) => body.copies.iter().collect(),
        (Some(id), false) if id != "latest" => vec![body.copy(id).ok_or_else(|| {
            VerifyError::Usage(format!(
                "source {} has no copy {id} at {} (cairn status lists them)",
                request.source,
                destination.location()
            ))
        })?],
        _ => body.latest().into_iter().collect(),
    };
    // Every copy a named one needs, each checked once, oldest first.
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut wanted: BTreeMap<(chrono::DateTime<chrono::Utc>, String), &CopyRecord> = BTreeMap::new();
    for tip in &tips {
        let chain = body.chain(&tip.id).map_err(StatusError::from)?;
        chains.insert(tip.id.clone(), chain.iter().map(|c| c.id.clone()).collect());
        for copy in chain {
            wanted.insert((copy.started_at, copy.id.clone()), copy);
        }
    }
    let mut checks: BTreeMap<String, CopyCheck> = BTreeMap::new();
    let mut manifests: BTreeMap<String, Manifest> = BTreeMap::new();
    let progress = crate::progress::Progress::new(format!("{}: verify, copies", request.source), wanted.len() as u64);
    let reporter = progress.report_every(std::time::Duration::from_secs(10));
    for copy in wanted.values() {
        let (check, manifest) = check_copy(&destination, &request.source, copy).await;
        progress.done(check.bytes);
        if let Some(manifest) = manifest {
            manifests.insert(copy.id.clone(), manifest);
        }
        checks.insert(copy.id.clone(), check);
    }
    drop(reporter);
    // Chains: each incremental starts where its parent ended, and its logs read back whole.
    for chain in chains.values() {
        check_chain(&destination, &request.source, chain, &manifests, &mut checks).await;
    }
    // A copy is as restorable as the worst copy its chain needs.
    let mut copies = Vec::new();
    for copy in wanted.values() {
        let chain = body.chain(&copy.id).map_err(StatusError::from)?;
        let mut check = checks.remove(&copy.id).expect("every wanted copy was checked");
        check.unrestorable_because = chain.iter().rev().find_map(|needed| {
            let damaged = match needed.id == copy.id {
                true => !check.problems.is_empty(),
                false => copies
                    .iter()
                    .any(|c: &CopyCheck| c.copy == needed.id && !c.problems.is_empty()),
            };
            damaged.then(|| match needed.id == copy.id {
                true => "its own files (above)".to_string(),
                false => format!("copy {} it needs is damaged", needed.id),
            })
        });
        copies.push(check);
    }
    let report = VerifyReport {
        source: request.source.clone(),
        destination: destination.location(),
        copies,
    };
    let outcome = VerificationRecord {
        started_at,
        finished_at: chrono::Utc::now(),
        kind: "files".into(),
        copies: report.copies.iter().map(|c| c.copy.clone()).collect(),
        intact: report.intact(),
        problems: report.copies.iter().map(|c| c.problems.len() as u64).sum(),
    };
    record(&destination, &report.source, outcome).await;
    Ok(report)
}

/// Records a verification's outcome in the source's status, as evidence of a restore drill. A
/// destination this run may only read keeps the outcome out, with a warning: the verification
/// itself stands.
pub(crate) async fn record(destination: &Arc<dyn Destination>, source: &str, outcome: VerificationRecord) {
    let stored = StatusStore::new(destination.clone(), source)
        .update(|body| {
            body.verifications.push(outcome.clone());
            let excess = body.verifications.len().saturating_sub(VERIFICATIONS_KEPT);
            body.verifications.drain(..excess);
            Ok(())
        })
        .await;
    if let Err(e) = stored {
        tracing::warn!("{source}: the verification was not recorded in the status: {e}");
    }
}

/// Checks one copy's manifest against the status and every file against the manifest.
async fn check_copy(
    destination: &Arc<dyn Destination>,
    source: &str,
    copy: &CopyRecord,
) -> (CopyCheck, Option<Manifest>) {
    let mut check = CopyCheck {
        copy: copy.id.clone(),
        kind: copy.kind.to_string(),
        files: 0,
        bytes: 0,
        problems: Vec::new(),
        unrestorable_because: None,
    };
    // The same check a restore makes: present, the MD5 the status records, parsed.
    let manifest = match crate::jobs::restore::manifests(destination, std::slice::from_ref(copy)).await {
        Ok(mut found) => found.remove(0),
        Err(e) => {
            check.problems.push(format!("manifest {}: {e}", copy.manifest.path));
            return (check, None);
        }
    };
    let files = match files_of(source, &manifest) {
        Ok(files) => files,
        Err(e) => {
            check.problems.push(e.to_string());
            return (check, Some(manifest));
        }
    };
    for file in files {
        check.files += 1;
        check.bytes += file.file.size;
        let stream = match destination.get(&file.key).await {
            Ok(stream) => stream,
            Err(DestinationError::NotFound { .. }) => {
                check.problems.push(format!("{}: missing", file.key));
                continue;
            }
            Err(e) => {
                check.problems.push(format!("{}: cannot be read: {e}", file.key));
                continue;
            }
        };
        let mut verified = Verified::new(stream, file.key.clone(), &file.file.md5, file.file.size);
        if let Err(e) = tokio::io::copy(&mut verified, &mut tokio::io::sink()).await {
            check.problems.push(match crate::repo::codec::damage_in(&e) {
                Some(damage) => damage.to_string(),
                None => format!("{}: cannot be read: {e}", file.key),
            });
        }
    }
    (check, Some(manifest))
}

/// Checks that each copy of `chain` (full first) starts where its parent ended and that its
/// incrementals' logs read back whole (framing, each event's or message's own checksum); a
/// problem is recorded against the copy it is found in.
async fn check_chain(
    destination: &Arc<dyn Destination>,
    source: &str,
    chain: &[String],
    manifests: &BTreeMap<String, Manifest>,
    checks: &mut BTreeMap<String, CopyCheck>,
) {
    let Some(found) = chain
        .iter()
        .map(|id| manifests.get(id).cloned())
        .collect::<Option<Vec<_>>>()
    else {
        return; // a missing or damaged manifest is already named
    };
    for pair in found.windows(2) {
        let (parent, child) = (&pair[0].copy, &pair[1].copy);
        if child.log_range.start != parent.log_range.end
            && let Some(check) = checks.get_mut(&child.id)
        {
            let problem = format!(
                "copy {} starts at {} but its parent {} ended at {}: the chain has a hole",
                child.id, child.log_range.start, parent.id, parent.log_range.end
            );
            if !check.problems.contains(&problem) {
                check.problems.push(problem);
            }
        }
    }
    let files_intact = chain
        .iter()
        .all(|id| checks.get(id).is_some_and(|c| c.problems.is_empty()));
    if found.len() < 2 || !files_intact {
        return;
    }
    let engine = match found[0].copy.log_range.end {
        LogPosition::Postgres { .. } => crate::engine::Engine::Postgres,
        LogPosition::Mysql { .. } => crate::engine::Engine::Mysql,
    };
    let input = RestoreInput {
        destination: destination.clone(),
        source: source.to_string(),
        manifests: found,
        jobs: 1,
        clean: false,
        until: None,
        resume: false,
        mysql: MysqlRestoreOptions::default(),
        selection: Default::default(),
        // Only the logs are read.
        users: Default::default(),
    };
    // Encrypted logs read back only with their key; without it their stored bytes were checked
    // above (MD5 and size), which is what verify promises without a key.
    if let Some(key_id) = input
        .manifests
        .iter()
        .filter_map(|m| m.copy.details.get("key_id").and_then(|k| k.as_str()))
        .find(|id| crate::repo::crypt::reading_key(id).is_none())
    {
        tracing::info!(
            "source {source}: the chain's logs are encrypted with key {key_id}, not configured here: their files \
             were checked (size, MD5), their events are read back only with the key"
        );
        return;
    }
    if let Err(e) = crate::engine::check_logs(engine, &input).await {
        let tip = chain.last().expect("a chain has a copy");
        let problem = match e {
            SourceError::Damaged(text) => text,
            other => other.to_string(),
        };
        if let Some(check) = checks.get_mut(tip) {
            check.problems.push(format!("logs of the chain: {problem}"));
        }
    }
}
