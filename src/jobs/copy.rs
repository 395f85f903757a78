//! `cairn copy`: copies already taken, carried from one destination to another, like restic's
//! `copy` or pgBackRest's repositories — so a new off-site place is filled from a local one.
//! Each copy goes with the copies it needs (its chain), parents first, in the order a backup
//! commits: every file streamed across with its size and MD5 checked against the manifest on
//! the way, then the manifest (checked against the source status's MD5, stored create-only),
//! then the entry in the destination's status, under its lock. Copies the destination already
//! records are left as they are; encrypted copies are carried as they are stored (no key needed).

use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::repo::codec::Verified;
use crate::repo::layout;
use crate::repo::lock::{LockError, LockOptions};
use crate::repo::manifest::Manifest;
use crate::repo::model::CopyRecord;
use crate::repo::status::{StatusError, StatusStore};
use crate::repo::{RepoError, reader};
use crate::storage::{Destination, DestinationError, DestinationExt as _, PutCondition, md5_hex};

/// What to copy, and where from and to.
#[derive(Debug, Clone, Default)]
pub struct CopyRequest {
    pub from: String,
    pub to: String,
    /// `None`: every source on `from`.
    pub source: Option<String>,
    /// A copy id or unique start of one, or `latest` (the default); ignored with `all`.
    pub copy: Option<String>,
    pub all: bool,
}

/// What one source's copying did.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub source: String,
    pub from: String,
    pub to: String,
    /// Copies carried, parents first.
    pub copied: Vec<String>,
    /// Copies the destination already recorded.
    pub present: Vec<String>,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// The largest manifest read whole.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// One source's part of a run: what was carried, or why nothing of it was recorded on `to`.
#[derive(Debug)]
pub struct SourceOutcome {
    pub source: String,
    pub result: Result<CopyReport, CopyError>,
}

/// Copies what `request` names, source by source: one source's failure (a copy damaged on
/// `from`, its lock on `to` held by another run) does not keep the others from being carried.
///
/// # Errors
/// A configuration error, or a destination that cannot be opened or listed; each source's own
/// errors are in its [`SourceOutcome`] (a copy that is not there or is damaged on `from`: nothing
/// of it is recorded on `to`; the lock of `to` held by another run).
pub async fn run(config: &Config, request: &CopyRequest, lock: &LockOptions) -> Result<Vec<SourceOutcome>, CopyError> {
    let from_spec = config.destination(&request.from)?;
    let to_spec = config.destination(&request.to)?;
    if from_spec.describe() == to_spec.describe() {
        return Err(CopyError::Usage(format!(
            "--from and --to are the same destination ({})",
            from_spec.describe()
        )));
    }
    let from = from_spec.open().await?;
    let to = to_spec.open().await?;
    let sources = match &request.source {
        Some(source) => vec![source.clone()],
        None => crate::repo::status::sources_at(from.as_ref()).await?,
    };
    let mut outcomes = Vec::new();
    for source in sources {
        let result = copy_source(&from, &to, &source, request, lock).await;
        outcomes.push(SourceOutcome { source, result });
    }
    Ok(outcomes)
}

async fn copy_source(
    from: &Arc<dyn Destination>,
    to: &Arc<dyn Destination>,
    source: &str,
    request: &CopyRequest,
    lock_options: &LockOptions,
) -> Result<CopyReport, CopyError> {
    let held = StatusStore::new(from.clone(), source)
        .load_existing()
        .await?
        .status
        .body;
    let wanted: Vec<&CopyRecord> = match (request.all, request.copy.as_deref().unwrap_or("latest")) {
        (true, _) => {
            // Only copies whose whole chain is there: an incremental without its parent cannot
            // be restored from the other place either.
            let mut all: Vec<&CopyRecord> = held.copies.iter().filter(|c| held.chain(&c.id).is_ok()).collect();
            all.sort_by_key(|c| c.info.started_at);
            all
        }
        (false, "latest") => {
            let newest = held.newest_intact().ok_or_else(|| {
                CopyError::Usage(format!(
                    "source {source} has no copy with an intact chain on {}",
                    from.location()
                ))
            })?;
            chain_of(&held, source, &newest.id)?
        }
        (false, prefix) => {
            let found = held.copies_starting_with(prefix);
            match found.as_slice() {
                [one] => chain_of(&held, source, &one.id)?,
                [] => {
                    return Err(CopyError::Usage(format!(
                        "source {source} has no copy {prefix} on {}",
                        from.location()
                    )));
                }
                many => {
                    let ids: Vec<&str> = many.iter().map(|c| c.id.as_str()).collect();
                    return Err(CopyError::Usage(format!(
                        "--copy {prefix} names {} copies of {source}: {}",
                        many.len(),
                        ids.join(", ")
                    )));
                }
            }
        }
    };
    to.check(crate::storage::Access::Write).await?;
    let lock = crate::repo::lock::acquire(to.clone(), source, "copy", lock_options).await?;
    let result = async {
        let status = StatusStore::new(to.clone(), source);
        let there = status.load().await?.status.body;
        let mut report = CopyReport {
            source: source.to_string(),
            from: from.location(),
            to: to.location(),
            copied: Vec::new(),
            present: Vec::new(),
            files: 0,
            bytes: 0,
        };
        for copy in wanted {
            if there.copy(&copy.id).is_some() {
                report.present.push(copy.id.clone());
                continue;
            }
            let (files, bytes) = carry(from, to, source, copy).await?;
            lock.ensure_held()?;
            status.record(copy.clone()).await?;
            tracing::info!(
                "{source}: copy {} carried to {}: {files} files, {bytes} bytes",
                copy.id,
                to.location()
            );
            report.copied.push(copy.id.clone());
            report.files += files;
            report.bytes += bytes;
        }
        Ok::<CopyReport, CopyError>(report)
    }
    .await;
    to.settle().await;
    if let Err(e) = lock.release().await {
        tracing::warn!("{source}: the lock on {} was not released: {e}", to.location());
    }
    result
}

/// The copies `id` needs, full first.
fn chain_of<'a>(
    held: &'a crate::repo::status::StatusBody,
    source: &str,
    id: &str,
) -> Result<Vec<&'a CopyRecord>, CopyError> {
    held.chain(id)
        .map_err(|e| CopyError::Usage(format!("source {source}, copy {id}: {e}; it cannot be copied whole")))
}

/// Streams the files of `copy` from `from` to `to`, each checked on the way, then its manifest.
async fn carry(
    from: &Arc<dyn Destination>,
    to: &Arc<dyn Destination>,
    source: &str,
    copy: &CopyRecord,
) -> Result<(u64, u64), CopyError> {
    let name = format!("{} at {}", copy.manifest.path, from.location());
    let manifest_bytes = from.get_bytes(&copy.manifest.path, MAX_MANIFEST_BYTES).await?;
    if md5_hex(&manifest_bytes) != copy.manifest.md5 {
        return Err(RepoError::Damaged(format!(
            "manifest {name} is damaged: it does not hash to the MD5 the status records"
        ))
        .into());
    }
    let manifest = Manifest::decode(&name, &manifest_bytes).map_err(RepoError::from)?;
    let (mut files, mut bytes) = (0u64, 0u64);
    for stored in reader::files_of(source, &manifest)? {
        let body = from.get(&stored.key).await?;
        // A file damaged on `from` fails its upload: it is never recorded on `to`.
        let checked = Verified::new(
            body,
            format!("{} at {}", stored.key, from.location()),
            &stored.file.md5,
            stored.file.size,
        );
        let put = to.put(&stored.key, Box::pin(checked)).await?;
        if put.md5 != stored.file.md5 || put.size != stored.file.size {
            return Err(RepoError::Damaged(format!(
                "{} at {}: {} bytes with MD5 {} arrived, the manifest records {} bytes with MD5 {}",
                stored.key,
                to.location(),
                put.size,
                put.md5,
                stored.file.size,
                stored.file.md5
            ))
            .into());
        }
        files += 1;
        bytes += put.size;
    }
    let key = layout::manifest_key(source, &copy.id);
    match to.put_if(&key, manifest_bytes.clone(), PutCondition::CreateOnly).await {
        Ok(_) => {}
        // Left by an earlier copy that stopped before its status entry: the same bytes are fine.
        Err(DestinationError::ConditionFailed { .. })
            if to.get_bytes(&key, MAX_MANIFEST_BYTES).await.ok().as_deref() == Some(&manifest_bytes[..]) => {}
        Err(e) => return Err(e.into()),
    }
    Ok((files, bytes))
}
