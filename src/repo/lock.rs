//! Keeps two runs of the same source from overlapping: a local file lock for runs on this host,
//! and a lease object on the destination for runs on other hosts.
//!
//! The lease (`<source>/lock.json`) is created with a create-only put, renewed in the background
//! with replace-if-unchanged puts, and removed on release. A lease whose expiry has passed was
//! left by a run that died; it is taken over with a warning. Expiry compares clocks of different
//! hosts, so the lease time must be much longer than any expected clock skew. A lease of this
//! host whose process provably no longer exists (same boot and PID namespace, no such pid) is
//! taken over at once.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::repo::layout;
use crate::storage::{Destination, DestinationError, PutCondition, md5_hex};

/// How locks are taken.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// Folder of the local lock files.
    pub lock_dir: PathBuf,
    /// How long a lease stays valid without renewal.
    pub ttl: Duration,
    /// The host name written into leases.
    pub host: String,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            lock_dir: std::env::temp_dir(),
            ttl: Duration::from_secs(600),
            host: host_name(),
        }
    }
}

/// This machine's host name, for lease owners.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// This process's boot and PID namespace (Linux), in which pids of leases are compared;
/// `None` where they cannot be read, and then only expiry frees a lease.
pub fn process_scope() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), namespace.display()))
}

/// Whether the holder of `lease` provably no longer runs: same host, same boot and PID
/// namespace as this process, and no process with its pid. Anything less certain waits for the
/// lease to expire.
fn holder_is_gone(lease: &Lease, host: &str) -> bool {
    let Some(scope) = process_scope() else {
        return false;
    };
    lease.host == host
        && lease.process_scope.as_deref() == Some(scope.as_str())
        && lease.pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{}", lease.pid)).exists()
}

/// The content of a lease object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub host: String,
    pub pid: u32,
    /// What the holder is doing (`backup`, `status --rebuild`, …).
    pub operation: String,
    /// Identifies this holder; a renewal or release only touches a lease with its own token.
    pub token: String,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub cairn_version: String,
    /// Where `pid` is meaningful: the boot and the PID namespace of the holder (Linux), so a
    /// run that finds its own host's lease can tell whether the holder still exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_scope: Option<String>,
}

impl Lease {
    fn describe(&self) -> String {
        format!(
            "{} (pid {}) on host {} since {}, lease valid until {}",
            self.operation,
            self.pid,
            self.host,
            self.started_at.format("%Y-%m-%d %H:%M:%SZ"),
            self.expires_at.format("%Y-%m-%d %H:%M:%SZ")
        )
    }
}

/// Lock failures.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "source {source_name} is locked on this host by {holder} (lock file {path}); try again when it has finished"
    )]
    LocalHeld {
        source_name: String,
        path: PathBuf,
        holder: String,
    },
    #[error("source {source_name} is locked by {holder} (lease {key} at {location}); try again when it has finished")]
    LeaseHeld {
        source_name: String,
        key: String,
        location: String,
        holder: String,
    },
    #[error(
        "the lease {key} at {location} cannot be read ({reason}); if no cairn run is active for this source, delete it"
    )]
    Unreadable {
        key: String,
        location: String,
        reason: String,
    },
    #[error(
        "the lease {key} at {location} was lost: {reason}; the run stops so it cannot overwrite another run's work"
    )]
    Lost {
        key: String,
        location: String,
        reason: String,
    },
    #[error("{operation} lock file {path} failed: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Destination(#[from] DestinationError),
}

fn local_lock_path(options: &LockOptions, destination: &dyn Destination, source: &str) -> PathBuf {
    let place = &md5_hex(destination.location().as_bytes())[..12];
    options.lock_dir.join(format!("cairn-{source}-{place}.lock"))
}

/// A held local lock; unlocked explicitly when dropped.
///
/// Closing the file is not enough to free the lock at once: a child process that another thread
/// is starting holds a copy of every open descriptor until it execs, and an `flock` lock belongs
/// to the open file that all copies share. Unlocking through any copy frees it, so a run that
/// follows another one in the same process (a purge after a backup while other sources start
/// `pg_dump`) is not refused for nothing.
#[derive(Debug)]
struct LocalLock(File);

impl Drop for LocalLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn take_local(path: &Path, source: &str, operation: &str) -> Result<LocalLock, LockError> {
    let io = |operation: &'static str| {
        move |source: std::io::Error| LockError::Io {
            operation,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating the folder of"))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io("opening"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LockError::LocalHeld {
                source_name: source.to_string(),
                path: path.to_path_buf(),
                holder: if holder.is_empty() {
                    "another cairn process".into()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io("locking")(e)),
    }
    let mut local = LocalLock(file);
    let file = &mut local.0;
    file.set_len(0).map_err(io("writing"))?;
    file.rewind().map_err(io("writing"))?;
    write!(
        file,
        "{operation} (pid {}) since {}",
        std::process::id(),
        Utc::now().format("%Y-%m-%d %H:%M:%SZ")
    )
    .map_err(io("writing"))?;
    Ok(local)
}

fn new_token() -> String {
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{:016x}{:08x}", random, std::process::id())
}

/// Shared between the holder and its renewal task.
#[derive(Debug)]
struct LeaseState {
    etag: String,
    lease: Lease,
    /// Why the lease was lost, once it was.
    lost: Option<String>,
}

/// A held lock; released by [`SourceLock::release`], or (lease left to expire) when dropped.
#[derive(Debug)]
pub struct SourceLock {
    destination: Arc<dyn Destination>,
    key: String,
    state: Arc<Mutex<LeaseState>>,
    renewer: tokio::task::JoinHandle<()>,
    _local: LocalLock,
}

/// Takes the lock of `source` on `destination` for `operation`.
///
/// # Errors
/// [`LockError::LocalHeld`] or [`LockError::LeaseHeld`] when another run holds it (exit 75),
/// [`LockError::Unreadable`] for a lease that is not cairn's, or I/O and destination errors.
pub async fn acquire(
    destination: Arc<dyn Destination>,
    source: &str,
    operation: &str,
    options: &LockOptions,
) -> Result<SourceLock, LockError> {
    let local = take_local(
        &local_lock_path(options, destination.as_ref(), source),
        source,
        operation,
    )?;
    let key = layout::lock_key(source);
    let now = Utc::now();
    let lease = Lease {
        host: options.host.clone(),
        pid: std::process::id(),
        operation: operation.to_string(),
        token: new_token(),
        started_at: now,
        expires_at: now + options.ttl,
        cairn_version: crate::CAIRN_VERSION.to_string(),
        process_scope: process_scope(),
    };
    let encoded = Bytes::from(serde_json::to_vec_pretty(&lease).expect("leases serialize"));
    let etag = match destination
        .put_if(&key, encoded.clone(), PutCondition::CreateOnly)
        .await
    {
        Ok(outcome) => outcome.etag,
        Err(DestinationError::ConditionFailed { .. }) => {
            take_over_if_stale(&destination, source, &key, encoded, &options.host).await?
        }
        Err(other) => return Err(other.into()),
    };
    let state = Arc::new(Mutex::new(LeaseState {
        etag,
        lease,
        lost: None,
    }));
    let renewer = tokio::spawn(renew(destination.clone(), key.clone(), state.clone(), options.ttl));
    Ok(SourceLock {
        destination,
        key,
        state,
        renewer,
        _local: local,
    })
}

async fn take_over_if_stale(
    destination: &Arc<dyn Destination>,
    source: &str,
    key: &str,
    encoded: Bytes,
    host: &str,
) -> Result<String, LockError> {
    let held = |holder: String| LockError::LeaseHeld {
        source_name: source.to_string(),
        key: key.to_string(),
        location: destination.location(),
        holder,
    };
    let Some(existing) = destination.get_versioned(key, 1 << 20).await? else {
        // Released between our create and our read: one more create-only attempt, no loop.
        return match destination.put_if(key, encoded, PutCondition::CreateOnly).await {
            Ok(outcome) => Ok(outcome.etag),
            Err(DestinationError::ConditionFailed { .. }) => Err(held("another run that just started".into())),
            Err(other) => Err(other.into()),
        };
    };
    let current: Lease = serde_json::from_slice(&existing.data).map_err(|e| LockError::Unreadable {
        key: key.to_string(),
        location: destination.location(),
        reason: e.to_string(),
    })?;
    if holder_is_gone(&current, host) {
        // This host's own run that was killed: waiting for its lease to expire would block the
        // source for the whole lease time for nothing.
        tracing::warn!(
            "taking over the lease {key} at {} held by {}: no process with that pid runs on this host any more",
            destination.location(),
            current.describe()
        );
    } else if current.expires_at > Utc::now() {
        return Err(held(current.describe()));
    } else {
        tracing::warn!(
            "taking over the expired lease {key} at {} held by {}; that run seems to have died",
            destination.location(),
            current.describe()
        );
    }
    match destination
        .put_if(key, encoded, PutCondition::IfMatch(existing.etag))
        .await
    {
        Ok(outcome) => Ok(outcome.etag),
        Err(DestinationError::ConditionFailed { .. }) => {
            Err(held("another run that took over the same expired lease".into()))
        }
        Err(other) => Err(other.into()),
    }
}

async fn renew(destination: Arc<dyn Destination>, key: String, state: Arc<Mutex<LeaseState>>, ttl: Duration) {
    let period = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let (etag, mut lease) = {
            let state = state.lock().expect("lease state lock poisoned");
            if state.lost.is_some() {
                return;
            }
            (state.etag.clone(), state.lease.clone())
        };
        lease.expires_at = Utc::now() + ttl;
        let encoded = Bytes::from(serde_json::to_vec_pretty(&lease).expect("leases serialize"));
        match destination.put_if(&key, encoded, PutCondition::IfMatch(etag)).await {
            Ok(outcome) => {
                let mut state = state.lock().expect("lease state lock poisoned");
                state.etag = outcome.etag;
                state.lease = lease;
            }
            Err(DestinationError::ConditionFailed { reason, .. }) => {
                tracing::error!("lease {key} was replaced by another run ({reason})");
                state.lock().expect("lease state lock poisoned").lost =
                    Some(format!("another run replaced it ({reason})"));
                return;
            }
            // The lease is still valid until it expires; the next period tries again.
            Err(other) => tracing::warn!("renewing lease {key} failed: {other}"),
        }
    }
}

impl SourceLock {
    /// Checks, before a write that must not race another run, that the lease is still ours.
    ///
    /// # Errors
    /// [`LockError::Lost`] when another run replaced the lease or it expired unrenewed.
    pub fn ensure_held(&self) -> Result<(), LockError> {
        let state = self.state.lock().expect("lease state lock poisoned");
        let reason = match &state.lost {
            Some(reason) => Some(reason.clone()),
            None if state.lease.expires_at <= Utc::now() => Some(format!(
                "it expired at {} without being renewed",
                state.lease.expires_at
            )),
            None => None,
        };
        match reason {
            Some(reason) => Err(LockError::Lost {
                key: self.key.clone(),
                location: self.destination.location(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// The lease as last written.
    pub fn lease(&self) -> Lease {
        self.state.lock().expect("lease state lock poisoned").lease.clone()
    }

    /// Removes the lease if it is still ours, then the local lock.
    ///
    /// # Errors
    /// Destination errors while reading or removing the lease.
    pub async fn release(self) -> Result<(), LockError> {
        self.renewer.abort();
        let token = self
            .state
            .lock()
            .expect("lease state lock poisoned")
            .lease
            .token
            .clone();
        if let Some(current) = self.destination.get_versioned(&self.key, 1 << 20).await? {
            match serde_json::from_slice::<Lease>(&current.data) {
                Ok(lease) if lease.token == token => self.destination.delete(&self.key).await?,
                _ => tracing::warn!("lease {} now belongs to another run; leaving it in place", self.key),
            }
        }
        Ok(())
    }
}

impl Drop for SourceLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalDestination;

    fn options(dir: &Path) -> LockOptions {
        LockOptions {
            lock_dir: dir.to_path_buf(),
            ttl: Duration::from_secs(600),
            host: "h1".into(),
        }
    }

    #[tokio::test]
    async fn a_copy_of_the_lock_file_left_open_does_not_hold_the_lock_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let destination: Arc<dyn Destination> = Arc::new(LocalDestination::new(dir.path().join("backups")));
        let held = acquire(destination.clone(), "app", "backup", &options(dir.path()))
            .await
            .unwrap();
        // What a child that another thread is starting holds until it execs: the same open file.
        let copy = held._local.0.try_clone().unwrap();
        let err = acquire(destination.clone(), "app", "purge", &options(dir.path()))
            .await
            .unwrap_err();
        assert!(matches!(err, LockError::LocalHeld { .. }), "{err}");
        held.release().await.unwrap();
        acquire(destination.clone(), "app", "purge", &options(dir.path()))
            .await
            .expect("released while a copy of the file is still open")
            .release()
            .await
            .unwrap();
        drop(copy);
    }
}
