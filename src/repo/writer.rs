//! The writer of one copy: its files streamed to the destination and confirmed there, then its
//! manifest, then its record in the status, in that order (docs/status-format.md).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{Map, Value};

use super::RepoError;
use crate::repo::layout;
use crate::repo::lock::SourceLock;
use crate::repo::manifest::{Manifest, ManifestFile};
use crate::repo::model::{CopyInfo, CopyRecord, ManifestRef};
use crate::repo::status::StatusStore;
use tokio::io::AsyncRead;

use crate::repo::{codec, crypt};
use crate::storage::{Destination, DestinationError, ObjectStream, PutCondition, md5_hex};

/// Writes the files of one copy, then its manifest, then records it in the status.
///
/// Files may be written from several tasks at once. Nothing is visible as a copy until
/// [`CopyWriter::commit`] has written the manifest; a run that dies before leaves only files
/// that no manifest names.
///
/// Clones share the list of files written, so workers can each hold one.
#[derive(Debug, Clone)]
pub struct CopyWriter {
    destination: Arc<dyn Destination>,
    source: String,
    copy_id: String,
    files: Arc<Mutex<Vec<ManifestFile>>>,
    /// The key files are encrypted with; `None`: stored compressed only.
    key: Option<crypt::Key>,
    /// zstd level.
    level: i32,
}

impl CopyWriter {
    pub fn new(destination: Arc<dyn Destination>, source: &str, copy_id: &str) -> Self {
        CopyWriter {
            destination,
            source: source.to_string(),
            copy_id: copy_id.to_string(),
            files: Arc::new(Mutex::new(Vec::new())),
            key: None,
            level: codec::DEFAULT_ZSTD_LEVEL,
        }
    }

    /// Compresses at zstd level `level` (`compression-level`).
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    /// Whether the files are encrypted.
    pub fn encrypts(&self) -> bool {
        self.key.is_some()
    }

    /// Encrypts every file with `key` (none: stored compressed only); the copy records the key's
    /// id.
    pub fn with_key(mut self, key: Option<crypt::Key>) -> Self {
        self.key = key;
        self
    }

    /// Streams one file of the copy through the codec to the destination and notes it for the
    /// manifest, with the details `describe` gives once the whole body has been read (row
    /// counts, for example). `path` is the file's plain name; the codec adds its suffix.
    ///
    /// # Errors
    /// Destination errors.
    pub async fn put_file(
        &self,
        path: &str,
        plain: impl AsyncRead + Send + Unpin + 'static,
        describe: impl FnOnce() -> Map<String, Value> + Send,
    ) -> Result<ManifestFile, DestinationError> {
        self.put_compressed(path, codec::compress_at(plain, self.level), describe)
            .await
    }

    /// [`CopyWriter::put_file`] of plain data its producer cut into blocks of about
    /// [`codec::FRAME`] bytes (one zstd frame each, no copy on the way).
    ///
    /// # Errors
    /// Destination errors.
    pub async fn put_blocks(
        &self,
        path: &str,
        blocks: impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static,
        describe: impl FnOnce() -> Map<String, Value> + Send,
    ) -> Result<ManifestFile, DestinationError> {
        self.put_compressed(path, codec::compress_blocks(blocks, self.level), describe)
            .await
    }

    async fn put_compressed(
        &self,
        path: &str,
        compressed: ObjectStream,
        describe: impl FnOnce() -> Map<String, Value> + Send,
    ) -> Result<ManifestFile, DestinationError> {
        let path = match &self.key {
            Some(_) => format!("{path}{}{}", codec::SUFFIX, crypt::SUFFIX),
            None => format!("{path}{}", codec::SUFFIX),
        };
        let key = format!("{}{path}", layout::copy_prefix(&self.source, &self.copy_id));
        let stored: ObjectStream = match &self.key {
            Some(secret) => Box::pin(crypt::Encrypting::new(compressed, secret, &key)),
            None => compressed,
        };
        let outcome = self.destination.put(&key, stored).await?;
        let mut details = describe();
        if self.key.is_some() {
            // A chunk's row condition holds key values: row data stays out of the readable
            // manifest (a restore does not need it).
            details.remove("condition");
        }
        let file = ManifestFile {
            path,
            size: outcome.size,
            md5: outcome.md5,
            details,
        };
        self.files.lock().expect("file list lock poisoned").push(file.clone());
        Ok(file)
    }

    /// Checks, with one listing, that the destination holds every file of the copy at the size
    /// that was written, so a copy is never recorded over files a full disk cut short.
    async fn confirm_stored(
        &self,
        destination: &Arc<dyn Destination>,
        files: &[ManifestFile],
    ) -> Result<(), DestinationError> {
        let prefix = layout::copy_prefix(&self.source, &self.copy_id);
        let stored: std::collections::HashMap<String, u64> = destination
            .list(&prefix)
            .await?
            .into_iter()
            .map(|object| (object.key, object.size))
            .collect();
        for file in files {
            let key = format!("{prefix}{}", file.path);
            match stored.get(&key) {
                Some(&size) if size == file.size => {}
                Some(&size) => {
                    return Err(DestinationError::Incomplete {
                        location: destination.location(),
                        key,
                        expected: file.size,
                        found: size,
                    });
                }
                None => {
                    return Err(DestinationError::NotFound {
                        location: destination.location(),
                        key,
                    });
                }
            }
        }
        Ok(())
    }

    /// Writes the manifest (create-only), then records the copy in the status.
    ///
    /// `info.files` and `info.bytes` are filled in from the files written.
    ///
    /// # Errors
    /// [`RepoError::Lock`] when the lease was lost, destination or status errors.
    pub async fn commit(
        self,
        info: CopyInfo,
        status: &StatusStore,
        lock: &SourceLock,
    ) -> Result<CopyRecord, RepoError> {
        let destination = self.destination.clone();
        self.commit_to(info, &destination, status, lock).await
    }

    /// [`CopyWriter::commit`] in one of the destinations the files were written to together
    /// (a [`crate::storage::fan_out::FanOut`]), with that destination's status and lock.
    ///
    /// # Errors
    /// As [`CopyWriter::commit`].
    pub async fn commit_to(
        &self,
        mut info: CopyInfo,
        destination: &Arc<dyn Destination>,
        status: &StatusStore,
        lock: &SourceLock,
    ) -> Result<CopyRecord, RepoError> {
        let mut files = self.files.lock().expect("file list lock poisoned").clone();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        info.id = self.copy_id.clone();
        info.files = files.len() as u64;
        info.bytes = files.iter().map(|f| f.size).sum();
        if let Some(key) = &self.key {
            info.details
                .insert("key_id".into(), Value::String(key.id().to_string()));
        }
        let manifest = Manifest {
            source: self.source.clone(),
            copy: info.clone(),
            files,
        };
        self.confirm_stored(destination, &manifest.files).await?;
        let bytes = manifest.encode();
        let key = layout::manifest_key(&self.source, &self.copy_id);
        lock.ensure_held()?;
        destination
            .put_if(&key, Bytes::from(bytes.clone()), PutCondition::CreateOnly)
            .await?;
        let record = CopyRecord {
            info,
            manifest: ManifestRef {
                path: key,
                md5: md5_hex(&bytes),
            },
        };
        lock.ensure_held()?;
        status.record(record.clone()).await?;
        Ok(record)
    }
}
