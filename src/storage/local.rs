//! A destination in a local directory (or a mounted file system).
//!
//! Every write goes to a temporary file in the target's own directory, is fsynced, renamed over
//! the key and followed by an fsync of the directory, so a crash leaves either the old object or
//! the new one. Conditional replaces hold an exclusive lock on the object's folder while they
//! compare and swap, which keeps two cairn processes on this host from both winning; deleting a
//! folder's last object removes the folder, as on S3.

use md5::Digest as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::local_folders::{FolderLock, create_dirs, parent_of, remove_empty_folders, sync_dir};
use super::{
    Access, Destination, DestinationError, ObjectMeta, ObjectStream, PutCondition, PutOutcome, VersionedObject,
    md5_hex, validate_key,
};

/// Read buffer of streaming puts; memory per put stays at this size whatever the object's size.
const STREAM_BUFFER: usize = 1 << 20;

/// A directory holding objects as files; the version token of an object is the MD5 of its bytes.
#[derive(Debug, Clone)]
pub struct LocalDestination {
    root: PathBuf,
}

impl LocalDestination {
    /// A destination rooted at `root`; the directory is created on the first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalDestination { root: root.into() }
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, DestinationError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A hidden temporary name beside `path`, unique within this host.
fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unique = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{unique}", std::process::id()))
}

/// Writes `data` to a fresh temporary file beside `path` and syncs it; returns the temp path.
fn write_temp(path: &Path, data: &[u8]) -> Result<PathBuf, DestinationError> {
    create_dirs(parent_of(path))?;
    let temp = temp_path_for(path);
    let create = || OpenOptions::new().write(true).create_new(true).open(&temp);
    // A delete of the folder's last object may remove the folder between the two steps.
    let opened = match create() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dirs(parent_of(path))?;
            create()
        }
        other => other,
    };
    let result = opened.and_then(|mut f| {
        f.write_all(data)?;
        f.flush()?;
        f.sync_all()?;
        f.metadata().map(|m| m.len())
    });
    let written = match result {
        Ok(len) => len,
        Err(e) => {
            let _ = fs::remove_file(&temp);
            return Err(DestinationError::io("writing", &temp, e));
        }
    };
    if written != data.len() as u64 {
        let _ = fs::remove_file(&temp);
        return Err(DestinationError::io(
            "writing",
            &temp,
            io::Error::other(format!("{written} of {} bytes were stored", data.len())),
        ));
    }
    Ok(temp)
}

/// Fails unless the file that was written holds every byte that was sent to it.
fn confirm_size(location: &str, key: &str, sent: u64, stored: u64) -> Result<(), DestinationError> {
    if sent == stored {
        return Ok(());
    }
    Err(DestinationError::Incomplete {
        location: location.to_string(),
        key: key.to_string(),
        expected: sent,
        found: stored,
    })
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, DestinationError> {
    match fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DestinationError::io("reading", path, e)),
    }
}

impl LocalDestination {
    fn put_if_blocking(
        &self,
        key: &str,
        data: &[u8],
        condition: &PutCondition,
    ) -> Result<PutOutcome, DestinationError> {
        let path = self.path_of(key)?;
        let refused = |reason: String| DestinationError::ConditionFailed {
            location: self.location(),
            key: key.to_string(),
            reason,
        };
        // The compare and the swap happen under an exclusive lock on the object's folder, so
        // no lock file is left beside the object.
        let folder = parent_of(&path);
        let lock = FolderLock::take(folder)?;
        let current = read_if_exists(&path)?;
        match (condition, &current) {
            (PutCondition::CreateOnly, Some(_)) => return Err(refused("the object already exists".into())),
            (PutCondition::IfMatch(_), None) => return Err(refused("the object no longer exists".into())),
            (PutCondition::IfMatch(expected), Some(bytes)) => {
                let actual = md5_hex(bytes);
                if &actual != expected {
                    return Err(refused(format!(
                        "it changed since it was read (version {expected}, now {actual})"
                    )));
                }
            }
            (PutCondition::CreateOnly, None) => {}
        }
        let temp = write_temp(&path, data)?;
        if let Err(e) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(DestinationError::io("renaming into place", &path, e));
        }
        sync_dir(parent_of(&path))?;
        drop(lock);
        let md5 = md5_hex(data);
        Ok(PutOutcome {
            size: data.len() as u64,
            etag: md5.clone(),
            md5,
        })
    }
}

#[async_trait]
impl Destination for LocalDestination {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn check(&self, access: Access) -> Result<(), DestinationError> {
        if access == Access::Read {
            return match tokio::fs::metadata(&self.root).await {
                Ok(meta) if meta.is_dir() => Ok(()),
                Ok(_) => Err(DestinationError::io(
                    "opening",
                    &self.root,
                    io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(DestinationError::Missing {
                    location: self.location(),
                }),
                Err(e) => Err(DestinationError::io("opening", &self.root, e)),
            };
        }
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            create_dirs(&root)?;
            // Prove we may write here before a long run finds out it may not.
            let probe = write_temp(&root.join("probe"), b"")?;
            fs::remove_file(&probe).map_err(|e| DestinationError::io("removing", &probe, e))
        })
        .await
        .map_err(|e| DestinationError::io("checking", &self.root, io::Error::other(e)))?
    }

    async fn put(&self, key: &str, mut body: ObjectStream) -> Result<PutOutcome, DestinationError> {
        let path = self.path_of(key)?;
        let dir = parent_of(&path).to_path_buf();
        tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || create_dirs(&dir)
        })
        .await
        .map_err(|e| DestinationError::io("creating directory", &dir, io::Error::other(e)))??;
        let temp = temp_path_for(&path);
        let result: Result<(u64, String), DestinationError> = async {
            let mut options = tokio::fs::OpenOptions::new();
            options.write(true).create_new(true);
            let create = || options.open(&temp);
            // A delete of the folder's last object may remove the folder in between.
            let mut file = match create().await {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let dir = dir.clone();
                    tokio::task::spawn_blocking(move || create_dirs(&dir))
                        .await
                        .map_err(|e| DestinationError::io("creating directory", &temp, io::Error::other(e)))??;
                    create().await
                }
                other => other,
            }
            .map_err(|e| DestinationError::io("creating", &temp, e))?;
            let mut hasher = md5::Md5::new();
            let mut size = 0u64;
            let mut buffer = vec![0u8; STREAM_BUFFER];
            loop {
                let filled =
                    crate::streams::fill(&mut body, &mut buffer)
                        .await
                        .map_err(|source| DestinationError::Body {
                            key: key.to_string(),
                            source,
                        })?;
                if filled == 0 {
                    break;
                }
                hasher.update(&buffer[..filled]);
                size += filled as u64;
                tokio::io::AsyncWriteExt::write_all(&mut file, &buffer[..filled])
                    .await
                    .map_err(|e| DestinationError::io("writing", &temp, e))?;
            }
            // tokio hands each write to a background thread and reports its error on the next
            // call; sync_all drops the error of the last one (a full disk, a file size limit),
            // so flush first to collect it, then confirm what the file really holds.
            tokio::io::AsyncWriteExt::flush(&mut file)
                .await
                .map_err(|e| DestinationError::io("writing", &temp, e))?;
            file.sync_all()
                .await
                .map_err(|e| DestinationError::io("syncing", &temp, e))?;
            let stored = file
                .metadata()
                .await
                .map_err(|e| DestinationError::io("inspecting", &temp, e))?
                .len();
            confirm_size(&self.location(), key, size, stored)?;
            Ok((size, format!("{:x}", hasher.finalize())))
        }
        .await;
        let (size, md5) = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(e);
            }
        };
        if let Err(e) = tokio::fs::rename(&temp, &path).await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(DestinationError::io("renaming into place", &path, e));
        }
        tokio::task::spawn_blocking(move || sync_dir(&dir))
            .await
            .map_err(|e| DestinationError::io("syncing directory", &path, io::Error::other(e)))??;
        Ok(PutOutcome {
            size,
            etag: md5.clone(),
            md5,
        })
    }

    async fn put_if(&self, key: &str, data: Bytes, condition: PutCondition) -> Result<PutOutcome, DestinationError> {
        let this = self.clone();
        let key_owned = key.to_string();
        tokio::task::spawn_blocking(move || this.put_if_blocking(&key_owned, &data, &condition))
            .await
            .map_err(|e| DestinationError::io("conditional write", self.root.join(key), io::Error::other(e)))?
    }

    async fn get(&self, key: &str) -> Result<ObjectStream, DestinationError> {
        let path = self.path_of(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(Box::pin(tokio::io::BufReader::with_capacity(STREAM_BUFFER, file))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(DestinationError::NotFound {
                location: self.location(),
                key: key.to_string(),
            }),
            Err(e) => Err(DestinationError::io("opening", &path, e)),
        }
    }

    async fn get_versioned(&self, key: &str, limit: u64) -> Result<Option<VersionedObject>, DestinationError> {
        let path = self.path_of(key)?;
        let location = self.location();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(DestinationError::io("opening", &path, e)),
            };
            let mut data = Vec::new();
            file.take(limit + 1)
                .read_to_end(&mut data)
                .map_err(|e| DestinationError::io("reading", &path, e))?;
            if data.len() as u64 > limit {
                return Err(DestinationError::TooLarge { location, key, limit });
            }
            let etag = md5_hex(&data);
            Ok(Some(VersionedObject {
                data: Bytes::from(data),
                etag,
            }))
        })
        .await
        .map_err(|e| DestinationError::io("reading", self.root.clone(), io::Error::other(e)))?
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, DestinationError> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: meta.len(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DestinationError::io("inspecting", &path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, DestinationError> {
        // Walk only the deepest directory the prefix names, then filter by the full prefix.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let mut pending = vec![start];
            while let Some(dir) = pending.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(DestinationError::io("listing", &dir, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| DestinationError::io("listing", &dir, e))?;
                    if entry.file_name().to_string_lossy().starts_with('.') {
                        continue;
                    }
                    let path = entry.path();
                    let kind = entry
                        .file_type()
                        .map_err(|e| DestinationError::io("inspecting", &path, e))?;
                    if kind.is_dir() {
                        pending.push(path);
                    } else if kind.is_file() {
                        let Ok(relative) = path.strip_prefix(&root) else {
                            continue;
                        };
                        let key = relative.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
                        if key.starts_with(&prefix) {
                            let size = entry
                                .metadata()
                                .map_err(|e| DestinationError::io("inspecting", &path, e))?
                                .len();
                            found.push(ObjectMeta { key, size });
                        }
                    }
                }
            }
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        })
        .await
        .map_err(|e| DestinationError::io("listing", self.root.clone(), io::Error::other(e)))?
    }

    async fn folders(&self, prefix: &str) -> Result<Vec<String>, DestinationError> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        let mut names = Vec::new();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(DestinationError::io("listing", &dir, e)),
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| DestinationError::io("listing", &dir, e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().await.map(|t| t.is_dir()).unwrap_or(false);
            if is_dir && !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn delete(&self, key: &str) -> Result<(), DestinationError> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let folder = parent_of(&path);
            // Under the folder's lock, as conditional writes compare and swap under it: a delete
            // between a conditional write's compare and its rename would be undone by the rename
            // (a lease renewal finishing after the release deleted the lease brought it back).
            let Some(lock) = FolderLock::existing(folder)? else {
                return Ok(());
            };
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(DestinationError::io("removing", &path, e)),
            }
            remove_empty_folders(&root, folder, Some(lock));
            Ok(())
        })
        .await
        .map_err(|e| DestinationError::io("removing", self.root.join(key), io::Error::other(e)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::DestinationExt;

    #[tokio::test]
    async fn a_delete_waits_for_a_conditional_write_in_progress_in_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let destination = LocalDestination::new(dir.path());
        destination
            .put_bytes("a/lock.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        // What a conditional write holds between its compare and its rename.
        let writing = FolderLock::take(&dir.path().join("a")).unwrap();
        let deleting = tokio::spawn({
            let destination = destination.clone();
            async move { destination.delete("a/lock.json").await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!deleting.is_finished(), "the delete did not wait for the write");
        assert!(dir.path().join("a/lock.json").exists());
        drop(writing);
        deleting.await.unwrap().unwrap();
        assert!(
            !dir.path().join("a").exists(),
            "the object and its empty folder are gone"
        );
    }
}
