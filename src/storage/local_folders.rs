//! The folders of a local destination: created with their parents and synced, locked for a
//! conditional write (a lock that is still the folder's after a concurrent removal), and
//! removed when a delete leaves them empty, as S3 has no empty folders.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::DestinationError;

/// Creates `dir` and its missing parents, fsyncing each parent that gained an entry.
pub(super) fn create_dirs(dir: &Path) -> Result<(), DestinationError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(DestinationError::io("creating directory", dir, e)),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Opens `dir`, creating it (and its parents) when a concurrent delete removed it as empty.
fn open_folder(dir: &Path) -> Result<File, DestinationError> {
    create_dirs(dir)?;
    match File::open(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dirs(dir)?;
            File::open(dir).map_err(|e| DestinationError::io("opening", dir, e))
        }
        other => other.map_err(|e| DestinationError::io("opening", dir, e)),
    }
}

/// An exclusive lock on a folder, unlocked explicitly when dropped: closing alone would leave it
/// held while a child process that another thread is starting still shares the open folder
/// (until it execs), and the next conditional write in the folder would wait for that.
pub(super) struct FolderLock(File);

impl FolderLock {
    /// Locks `dir`, creating it when it is missing.
    pub(super) fn take(dir: &Path) -> Result<FolderLock, DestinationError> {
        loop {
            if let Some(lock) = Self::lock_opened(open_folder(dir)?, dir)? {
                return Ok(lock);
            }
        }
    }

    /// Locks `dir` if it exists (`None`: it does not).
    pub(super) fn existing(dir: &Path) -> Result<Option<FolderLock>, DestinationError> {
        loop {
            let folder = match File::open(dir) {
                Ok(folder) => folder,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(DestinationError::io("opening", dir, e)),
            };
            if let Some(lock) = Self::lock_opened(folder, dir)? {
                return Ok(Some(lock));
            }
        }
    }

    /// Locks the opened `folder` and checks that it is still the folder at `dir` (`None`: open
    /// it again). A delete may have removed it as empty between the open and the lock; a lock on
    /// a removed folder excludes nobody, since the next writer creates and locks a new one.
    fn lock_opened(folder: File, dir: &Path) -> Result<Option<FolderLock>, DestinationError> {
        use std::os::unix::fs::MetadataExt as _;
        folder.lock().map_err(|e| DestinationError::io("locking", dir, e))?;
        let lock = FolderLock(folder);
        let held = lock
            .0
            .metadata()
            .map_err(|e| DestinationError::io("inspecting", dir, e))?;
        match fs::metadata(dir) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => Ok(Some(lock)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DestinationError::io("inspecting", dir, e)),
        }
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Removes `dir` and then each parent below `root` while they are empty, as S3 has no empty
/// folders; a folder that is not empty (or is being filled) stays. Each is removed under its
/// lock, so a conditional write that opened it before finds it gone once it has the lock;
/// `held` is `dir`'s lock when the caller already has it.
pub(super) fn remove_empty_folders(root: &Path, mut dir: &Path, mut held: Option<FolderLock>) {
    while dir != root && dir.starts_with(root) {
        let lock = match held.take() {
            Some(lock) => lock,
            None => match FolderLock::existing(dir) {
                Ok(Some(lock)) => lock,
                _ => return,
            },
        };
        let removed = fs::remove_dir(dir).is_ok();
        drop(lock);
        if !removed {
            return;
        }
        dir = parent_of(dir);
    }
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), DestinationError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DestinationError::io("syncing directory", dir, e))
}

pub(super) fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_removed_between_open_and_lock_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a");
        fs::create_dir(&folder).unwrap();
        // A writer opened the folder, then a delete removed it as empty before the writer's lock.
        let opened = File::open(&folder).unwrap();
        fs::remove_dir(&folder).unwrap();
        assert!(
            FolderLock::lock_opened(opened, &folder).unwrap().is_none(),
            "a lock on a removed folder was taken as the folder's"
        );
        let _lock = FolderLock::take(&folder).unwrap();
        assert!(folder.is_dir(), "taking the lock made the folder again");
    }
}
