//! The status file of each source: reading it safely, updating it without losing a concurrent
//! update, and rebuilding it from the copies' manifests (see docs/status-format.md).
//!
//! The status is only ever replaced whole, by a conditional put against the version that was
//! read. Before the replace, the generation being replaced is kept as the second copy
//! (`status.previous.json`), but only when it verified: a damaged latest never overwrites a
//! sound previous. A checksum mismatch is never trusted.

pub mod query;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use serde_json::{Map, Value};

use crate::repo::envelope::{self, EnvelopeError};
use crate::repo::layout;
use crate::repo::manifest::Manifest;
use crate::retry::Retry;
use crate::storage::{Destination, DestinationError, DestinationExt, PutCondition, md5_hex};

pub use crate::repo::model::{
    CopyInfo, CopyRecord, LogPosition, LogRange, ManifestRef, STATUS_FORMAT, STATUS_VERSION, ServerIdentity, StatusBody,
};
pub use query::ChainError;

/// Status files larger than this are refused rather than read into memory.
pub const MAX_STATUS_BYTES: u64 = 64 * 1024 * 1024;
/// Conditional-put attempts before an update gives up with [`StatusError::Conflict`].
const UPDATE_ATTEMPTS: usize = 10;

/// Errors about status files; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error("status file {file} is damaged: {reason}")]
    Corrupted { file: String, reason: String },
    #[error(
        "both status files of source {source_name} are unusable: {latest} ({latest_reason}) and {previous} \
         ({previous_reason}); run `cairn status --rebuild --source {source_name}` to rebuild them from the copies' manifests"
    )]
    BothDamaged {
        source_name: String,
        latest: String,
        latest_reason: String,
        previous: String,
        previous_reason: String,
    },
    #[error(
        "status file {file} has version {found}, newer than version {supported} that this cairn {cairn} understands; \
         upgrade cairn"
    )]
    NewerVersion {
        file: String,
        found: u32,
        supported: u32,
        cairn: &'static str,
    },
    #[error("source {source_name:?} has no status and no copy at {location}; {}", known_sources(.known))]
    UnknownSource {
        source_name: String,
        location: String,
        known: Vec<String>,
    },
    #[error("status file {file} kept changing under {attempts} update attempts; another writer is active, try again")]
    Conflict { file: String, attempts: u32 },
    #[error("copy {id} is already recorded in status file {file}")]
    DuplicateCopy { file: String, id: String },
    #[error(transparent)]
    Chain(#[from] ChainError),
}

fn known_sources(known: &[String]) -> String {
    if known.is_empty() {
        "no source has copies there".to_string()
    } else {
        format!("sources there: {}", known.join(", "))
    }
}

/// The sources on a destination: its folders holding a status file, a copy or the lease of a
/// run in progress.
///
/// # Errors
/// Destination errors.
pub async fn sources_at(destination: &dyn Destination) -> Result<Vec<String>, DestinationError> {
    let mut names = Vec::new();
    for name in destination.folders("").await? {
        let is_source = destination.head(&layout::status_key(&name)).await?.is_some()
            || destination.head(&layout::status_previous_key(&name)).await?.is_some()
            || !destination.folders(&layout::copies_prefix(&name)).await?.is_empty()
            || destination.head(&layout::lock_key(&name)).await?.is_some();
        if is_source {
            names.push(name);
        }
    }
    Ok(names)
}

/// A status and its generation counter.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub generation: u64,
    pub body: StatusBody,
}

/// Which file a loaded status came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadedFrom {
    /// `status.json`, verified.
    Latest,
    /// `status.previous.json`, because the latest was damaged or missing for `reason`.
    Previous { reason: String },
    /// Neither file exists: a source with no copy yet, or one whose copies all come from their
    /// manifests (see [`Loaded::recovered`]).
    Nothing,
}

/// A status as read, with what a conditional update needs.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub status: Status,
    pub from: LoadedFrom,
    /// Copies found by their manifests that the status file lacked, now part of `status`.
    pub recovered: Vec<String>,
    /// Version token of `status.json` as read, damaged or not; `None` when it does not exist.
    latest_etag: Option<String>,
    /// Bytes of `status.json` when they verified, to keep as the second copy on the next update.
    latest_bytes: Option<Bytes>,
}

/// Renders a status file's bytes.
pub fn encode(generation: u64, body: &StatusBody) -> Vec<u8> {
    let mut members = Map::new();
    members.insert("generation".into(), Value::from(generation));
    members.insert("written_at".into(), Value::String(Utc::now().to_rfc3339()));
    members.insert(
        "written_by".into(),
        Value::String(format!("cairn {}", crate::CAIRN_VERSION)),
    );
    members.insert(
        "body".into(),
        serde_json::to_value(body).expect("status bodies always serialize"),
    );
    envelope::seal(STATUS_FORMAT, STATUS_VERSION, members)
}

/// Parses and verifies a status file's bytes, upgrading an older version in memory.
///
/// # Errors
/// [`StatusError::Corrupted`] naming `file` for any damage; [`StatusError::NewerVersion`].
pub fn decode(file: &str, bytes: &[u8]) -> Result<Status, StatusError> {
    let corrupted = |reason: String| StatusError::Corrupted {
        file: file.to_string(),
        reason,
    };
    let opened = envelope::open(STATUS_FORMAT, bytes).map_err(|e: EnvelopeError| corrupted(e.to_string()))?;
    if opened.version > STATUS_VERSION {
        return Err(StatusError::NewerVersion {
            file: file.to_string(),
            found: opened.version,
            supported: STATUS_VERSION,
            cairn: crate::CAIRN_VERSION,
        });
    }
    let generation = opened
        .members
        .get("generation")
        .and_then(Value::as_u64)
        .ok_or_else(|| corrupted("the generation is missing".into()))?;
    let body = opened
        .members
        .get("body")
        .cloned()
        .ok_or_else(|| corrupted("the body is missing".into()))?;
    let body = crate::repo::model::upgrade(opened.version, body)
        .map_err(|e| corrupted(format!("cannot upgrade from version {}: {e}", opened.version)))?;
    let body: StatusBody =
        serde_path_to_error::deserialize(body).map_err(|e| corrupted(format!("body.{}: {}", e.path(), e.inner())))?;
    Ok(Status { generation, body })
}

/// The generation after `generation`, which a damaged or hand-edited status (`file`) may have
/// set to the largest number: refused rather than wrapped to 0, which would reuse generations.
fn next_generation(generation: u64, file: &str) -> Result<u64, StatusError> {
    generation.checked_add(1).ok_or_else(|| StatusError::Corrupted {
        file: file.to_string(),
        reason: format!(
            "its generation {generation} cannot grow; move the status files aside and run cairn status --rebuild"
        ),
    })
}

/// Reads the generation of a status file without trusting it, to keep counting up after damage.
fn generation_hint(bytes: &[u8]) -> u64 {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("generation").and_then(Value::as_u64))
        .unwrap_or(0)
}

/// Reads and writes the status files of one source on one destination.
#[derive(Debug, Clone)]
pub struct StatusStore {
    destination: Arc<dyn Destination>,
    source: String,
}

impl StatusStore {
    pub fn new(destination: Arc<dyn Destination>, source: impl Into<String>) -> Self {
        StatusStore {
            destination,
            source: source.into(),
        }
    }

    fn describe(&self, key: &str) -> String {
        format!("{key} at {}", self.destination.location())
    }

    /// Reads the status, falling back to the second copy (with a warning) when the latest is
    /// damaged or missing, then adds every copy whose manifest is on the destination but not in
    /// the status (with a warning): a copy a manifest proves is never lost to a damaged, stale or
    /// missing status file.
    ///
    /// # Errors
    /// [`StatusError::BothDamaged`], [`StatusError::NewerVersion`] or a destination error.
    pub async fn load(&self) -> Result<Loaded, StatusError> {
        self.load_recording(None).await
    }

    /// [`StatusStore::load`] for a source that must already exist on the destination.
    ///
    /// # Errors
    /// [`StatusError::UnknownSource`] naming the sources that do exist, or a load error.
    pub async fn load_existing(&self) -> Result<Loaded, StatusError> {
        let loaded = self.load().await?;
        if loaded.from == LoadedFrom::Nothing && loaded.status.body.copies.is_empty() {
            return Err(StatusError::UnknownSource {
                source_name: self.source.clone(),
                location: self.destination.location(),
                known: sources_at(self.destination.as_ref()).await?,
            });
        }
        Ok(loaded)
    }

    /// [`StatusStore::load`], leaving out the manifest of the copy `recording` is about to add.
    async fn load_recording(&self, recording: Option<&str>) -> Result<Loaded, StatusError> {
        let mut loaded = self.read_files().await?;
        let known: Vec<String> = loaded.status.body.copies.iter().map(|c| c.id.clone()).collect();
        let (found, skipped) = self.manifests_except(&known, recording).await?;
        for (key, reason) in &skipped {
            tracing::warn!("{}: left out: {reason}", self.describe(key));
        }
        if !found.is_empty() {
            let ids: Vec<&str> = found.iter().map(|c| c.id.as_str()).collect();
            match &loaded.from {
                LoadedFrom::Latest => tracing::warn!(
                    "status of source {} at {} lacks copies whose manifests are there (a run stopped between its \
                     manifest and the status); recovered from their manifests: {}",
                    self.source,
                    self.destination.location(),
                    ids.join(", ")
                ),
                _ => tracing::warn!(
                    "recovered copies of source {} from their manifests at {}: {}",
                    self.source,
                    self.destination.location(),
                    ids.join(", ")
                ),
            }
            loaded.status.body.copies.extend(found.iter().cloned());
            loaded
                .status
                .body
                .copies
                .sort_by(|a, b| (a.finished_at, &a.id).cmp(&(b.finished_at, &b.id)));
            loaded.recovered = ids.into_iter().map(str::to_string).collect();
        }
        Ok(loaded)
    }

    /// Reads `status.json`, or `status.previous.json` when it is damaged or missing.
    async fn read_files(&self) -> Result<Loaded, StatusError> {
        let latest_key = layout::status_key(&self.source);
        let previous_key = layout::status_previous_key(&self.source);
        let latest = self.destination.get_versioned(&latest_key, MAX_STATUS_BYTES).await?;
        let latest_etag = latest.as_ref().map(|o| o.etag.clone());
        let latest_reason = match &latest {
            Some(object) => match decode(&self.describe(&latest_key), &object.data) {
                Ok(status) => {
                    return Ok(Loaded {
                        status,
                        from: LoadedFrom::Latest,
                        recovered: Vec::new(),
                        latest_etag,
                        latest_bytes: Some(object.data.clone()),
                    });
                }
                Err(StatusError::Corrupted { reason, .. }) => reason,
                Err(other) => return Err(other),
            },
            None => "it does not exist".to_string(),
        };
        let previous = self.destination.get_versioned(&previous_key, MAX_STATUS_BYTES).await?;
        let previous_reason = match &previous {
            Some(object) => match decode(&self.describe(&previous_key), &object.data) {
                Ok(mut status) => {
                    tracing::warn!(
                        "status file {} is unusable ({latest_reason}); using the previous generation {} from {} and \
                         the copies' manifests",
                        self.describe(&latest_key),
                        status.generation,
                        previous_key,
                    );
                    // The unusable latest was at least one generation further; the next write
                    // must not reuse its number, whatever its damaged bytes claim.
                    let damaged = latest.as_ref().map(|o| generation_hint(&o.data)).unwrap_or(0);
                    status.generation = damaged.max(status.generation.saturating_add(1));
                    return Ok(Loaded {
                        status,
                        from: LoadedFrom::Previous { reason: latest_reason },
                        recovered: Vec::new(),
                        latest_etag,
                        latest_bytes: None,
                    });
                }
                Err(StatusError::Corrupted { reason, .. }) => reason,
                Err(other) => return Err(other),
            },
            None => "it does not exist".to_string(),
        };
        if latest.is_none() && previous.is_none() {
            return Ok(Loaded {
                status: Status {
                    generation: 0,
                    body: StatusBody::empty(&self.source),
                },
                from: LoadedFrom::Nothing,
                recovered: Vec::new(),
                latest_etag: None,
                latest_bytes: None,
            });
        }
        Err(StatusError::BothDamaged {
            source_name: self.source.clone(),
            latest: self.describe(&latest_key),
            latest_reason,
            previous: self.describe(&previous_key),
            previous_reason,
        })
    }

    /// The copies whose manifests are on the destination, except `known` ones and `recording`,
    /// and the manifests left out with the reason. Copy folders without a manifest are the
    /// leftovers of failed runs, not copies.
    async fn manifests_except(
        &self,
        known: &[String],
        recording: Option<&str>,
    ) -> Result<(Vec<CopyRecord>, Vec<(String, String)>), StatusError> {
        let mut found = Vec::new();
        let mut skipped = Vec::new();
        for id in self.destination.folders(&layout::copies_prefix(&self.source)).await? {
            if known.contains(&id) || recording == Some(id.as_str()) {
                continue;
            }
            let key = layout::manifest_key(&self.source, &id);
            let bytes = match self.destination.get_bytes(&key, MAX_STATUS_BYTES).await {
                Ok(bytes) => bytes,
                Err(DestinationError::NotFound { .. }) => continue,
                Err(other) => return Err(other.into()),
            };
            match Manifest::decode(&self.describe(&key), &bytes) {
                Ok(manifest) if manifest.source == self.source && manifest.copy.id == id => found.push(CopyRecord {
                    info: manifest.copy,
                    manifest: ManifestRef {
                        md5: md5_hex(&bytes),
                        path: key,
                    },
                }),
                Ok(manifest) => skipped.push((
                    key,
                    format!(
                        "it records copy {:?} of source {:?}, not copy {id:?} of {:?}",
                        manifest.copy.id, manifest.source, self.source
                    ),
                )),
                Err(e) => skipped.push((key, e.to_string())),
            }
        }
        Ok((found, skipped))
    }

    /// Applies `change` to the current status and writes the result as the next generation.
    ///
    /// When another writer replaced the status in between, re-reads it and applies `change`
    /// again, so `change` must be safe to run more than once.
    ///
    /// # Errors
    /// Whatever `change` returns, [`StatusError::Conflict`] after repeated lost races, or a
    /// load or destination error.
    pub async fn update<T>(
        &self,
        change: impl FnMut(&mut StatusBody) -> Result<T, StatusError>,
    ) -> Result<(Status, T), StatusError> {
        self.update_recording(None, change).await
    }

    async fn update_recording<T>(
        &self,
        recording: Option<&str>,
        mut change: impl FnMut(&mut StatusBody) -> Result<T, StatusError>,
    ) -> Result<(Status, T), StatusError> {
        let latest_key = layout::status_key(&self.source);
        let previous_key = layout::status_previous_key(&self.source);
        let mut retry = Retry::exponential(
            Duration::from_millis(20),
            Duration::from_millis(1280),
            UPDATE_ATTEMPTS - 1,
        );
        loop {
            let loaded = self.load_recording(recording).await?;
            let mut body = loaded.status.body.clone();
            let outcome = change(&mut body)?;
            let generation = next_generation(loaded.status.generation, &self.describe(&latest_key))?;
            let bytes = encode(generation, &body);
            if let Some(sound) = &loaded.latest_bytes {
                self.destination.put_bytes(&previous_key, sound.clone()).await?;
            }
            let condition = match &loaded.latest_etag {
                Some(etag) => PutCondition::IfMatch(etag.clone()),
                None => PutCondition::CreateOnly,
            };
            match self
                .destination
                .put_if(&latest_key, Bytes::from(bytes), condition)
                .await
            {
                Ok(_) => return Ok((Status { generation, body }, outcome)),
                Err(DestinationError::ConditionFailed { reason, .. }) => {
                    tracing::debug!(attempt = retry.failed() + 1, %reason, "status of {} changed while updating it; reading it again", self.source);
                    if !retry.wait().await {
                        return Err(StatusError::Conflict {
                            file: self.describe(&latest_key),
                            attempts: retry.failed(),
                        });
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// Records a new copy; refuses an id that is already recorded.
    ///
    /// # Errors
    /// [`StatusError::DuplicateCopy`] or any [`StatusStore::update`] error.
    pub async fn record(&self, copy: CopyRecord) -> Result<Status, StatusError> {
        let file = self.describe(&layout::status_key(&self.source));
        let (status, ()) = self
            .update_recording(Some(&copy.id), |body| {
                if body.copy(&copy.id).is_some() {
                    return Err(StatusError::DuplicateCopy {
                        file: file.clone(),
                        id: copy.id.clone(),
                    });
                }
                body.copies.push(copy.clone());
                Ok(())
            })
            .await?;
        Ok(status)
    }

    /// Rebuilds both status files from the manifests of the copies present on the destination.
    ///
    /// Damaged manifests are left out and reported. Run it under the source's lock.
    ///
    /// # Errors
    /// Destination errors, or [`StatusError::Conflict`] when another writer changed the status
    /// during the rebuild.
    pub async fn rebuild(&self) -> Result<(Status, RebuildReport), StatusError> {
        let (mut copies, skipped) = self.manifests_except(&[], None).await?;
        let mut report = RebuildReport {
            skipped,
            ..RebuildReport::default()
        };
        copies.sort_by(|a, b| (a.finished_at, &a.id).cmp(&(b.finished_at, &b.id)));
        for (key, reason) in &report.skipped {
            tracing::warn!("left out of the rebuilt status: {key}: {reason}");
        }
        let latest_key = layout::status_key(&self.source);
        let previous_key = layout::status_previous_key(&self.source);
        let latest = self.destination.get_versioned(&latest_key, MAX_STATUS_BYTES).await?;
        let previous = self.destination.get_versioned(&previous_key, MAX_STATUS_BYTES).await?;
        let generation = [&latest, &previous]
            .into_iter()
            .flatten()
            .map(|o| generation_hint(&o.data))
            .max()
            .unwrap_or(0);
        let generation = next_generation(generation, &self.describe(&latest_key))?;
        let body = StatusBody {
            source: self.source.clone(),
            copies,
            verifications: Vec::new(),
            runs: Vec::new(),
        };
        let bytes = Bytes::from(encode(generation, &body));
        // Both files get the rebuilt status: whatever they held was damaged or is now stale.
        self.destination.put_bytes(&previous_key, bytes.clone()).await?;
        let condition = match &latest {
            Some(object) => PutCondition::IfMatch(object.etag.clone()),
            None => PutCondition::CreateOnly,
        };
        match self.destination.put_if(&latest_key, bytes, condition).await {
            Ok(_) => {}
            Err(DestinationError::ConditionFailed { .. }) => {
                return Err(StatusError::Conflict {
                    file: self.describe(&latest_key),
                    attempts: 1,
                });
            }
            Err(other) => return Err(other.into()),
        }
        report.copies = body.copies.len();
        Ok((Status { generation, body }, report))
    }
}

/// What a rebuild found.
#[derive(Debug, Default, Clone)]
pub struct RebuildReport {
    /// Copies now recorded.
    pub copies: usize,
    /// Manifests left out, with the reason.
    pub skipped: Vec<(String, String)>,
}

#[cfg(test)]
mod tests;
