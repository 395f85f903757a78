//! A fault-injecting wrapper of a destination (after kopia's FaultyStorage): it fails the Nth
//! write, or performs it and loses the answer. Used to prove that a crash or an error at any
//! write of a backup leaves a valid state in which every recorded copy is whole, and that the
//! next run goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use cairn::repo::kinds::CopyKind;
use cairn::repo::manifest::Manifest;
use cairn::repo::status::StatusStore;
use cairn::storage::{
    Access, Destination, DestinationError, DestinationExt, ObjectMeta, ObjectStream, PutCondition, PutOutcome,
    VersionedObject, md5_hex,
};

use crate::status::{make_copy, take_lock};

use crate::support::local_destination;

/// What happens to the chosen write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// It fails before anything is stored.
    Fail,
    /// It is stored, then its answer is lost.
    LoseAnswer,
    /// Reads (not writes) end half way, as a connection that breaks without an error would.
    TruncateReads,
}

#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn Destination>,
    fault: Fault,
    /// Which write (counting from 1) goes wrong; 0: none.
    nth: u32,
    writes: AtomicU32,
}

impl Faulty {
    fn error(&self, key: &str) -> DestinationError {
        DestinationError::Unavailable {
            operation: "writing",
            location: self.inner.location(),
            key: key.to_string(),
            detail: "injected fault".into(),
        }
    }

    /// Counts a write; `true` when this one is to go wrong.
    fn chosen(&self) -> bool {
        self.writes.fetch_add(1, Ordering::SeqCst) + 1 == self.nth
    }

    async fn write<T>(
        &self,
        key: &str,
        write: impl std::future::Future<Output = Result<T, DestinationError>>,
    ) -> Result<T, DestinationError> {
        if !self.chosen() {
            return write.await;
        }
        match self.fault {
            Fault::Fail => Err(self.error(key)),
            Fault::LoseAnswer => {
                write.await?;
                Err(self.error(key))
            }
            Fault::TruncateReads => write.await,
        }
    }
}

#[async_trait]
impl Destination for Faulty {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn check(&self, access: Access) -> Result<(), DestinationError> {
        self.inner.check(access).await
    }
    async fn put(&self, key: &str, body: ObjectStream) -> Result<PutOutcome, DestinationError> {
        self.write(key, self.inner.put(key, body)).await
    }
    async fn put_if(&self, key: &str, data: Bytes, condition: PutCondition) -> Result<PutOutcome, DestinationError> {
        self.write(key, self.inner.put_if(key, data, condition)).await
    }
    async fn get(&self, key: &str) -> Result<ObjectStream, DestinationError> {
        let stream = self.inner.get(key).await?;
        if self.fault != Fault::TruncateReads {
            return Ok(stream);
        }
        let size = self.inner.head(key).await?.map_or(0, |m| m.size);
        Ok(Box::pin(tokio::io::AsyncReadExt::take(stream, size / 2)))
    }
    async fn get_versioned(&self, key: &str, limit: u64) -> Result<Option<VersionedObject>, DestinationError> {
        self.inner.get_versioned(key, limit).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, DestinationError> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, DestinationError> {
        self.inner.list(prefix).await
    }
    async fn folders(&self, prefix: &str) -> Result<Vec<String>, DestinationError> {
        self.inner.folders(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), DestinationError> {
        self.write(key, self.inner.delete(key)).await
    }
}

/// Every copy the status holds (recovered ones included) is whole: its manifest has the bytes
/// the status recorded, and every file the manifest lists is there with its size and MD5.
async fn assert_recorded_copies_are_whole(destination: &Arc<dyn Destination>, source: &str, context: &str) {
    let loaded = StatusStore::new(destination.clone(), source)
        .load()
        .await
        .unwrap_or_else(|e| panic!("{context}: the status does not load: {e}"));
    for copy in &loaded.status.body.copies {
        let bytes = destination.get_bytes(&copy.manifest.path, 1 << 20).await.unwrap();
        assert_eq!(md5_hex(&bytes), copy.manifest.md5, "{context}: manifest of {}", copy.id);
        let manifest = Manifest::decode("m", &bytes).unwrap();
        for file in &manifest.files {
            let key = format!("{}{}", cairn::repo::layout::copy_prefix(source, &copy.id), file.path);
            let stored = destination.get_bytes(&key, 1 << 20).await.unwrap();
            assert_eq!(
                (stored.len() as u64, md5_hex(&stored)),
                (file.size, file.md5.clone()),
                "{context}: {key}"
            );
        }
    }
}

/// A backup's writes are: the lease, two data files, the manifest, the status (with its second
/// copy), the lease's release. Each of them in turn fails, or succeeds and loses its answer:
/// afterwards the status loads, every copy it holds is whole, and the next run records its copy.
#[tokio::test]
async fn a_fault_at_any_write_of_a_backup_leaves_a_valid_state() {
    for fault in [Fault::Fail, Fault::LoseAnswer] {
        for nth in 1..=10 {
            let context = format!("{fault:?} at write {nth}");
            let (_guard, inner) = local_destination();
            let locks = tempfile::tempdir().unwrap();
            // A first copy, written without faults, that nothing may lose.
            let lock = take_lock(&inner, "app", &locks).await;
            let first = make_copy(&inner, "app", CopyKind::Full, None, &lock).await;
            lock.release().await.unwrap();

            let faulty: Arc<dyn Destination> = Arc::new(Faulty {
                inner: inner.clone(),
                fault,
                nth,
                writes: AtomicU32::new(0),
            });
            let options = cairn::repo::lock::LockOptions {
                lock_dir: locks.path().to_path_buf(),
                ..Default::default()
            };
            if let Ok(lock) = cairn::repo::lock::acquire(faulty.clone(), "app", "test", &options).await {
                // Failing or not, what it leaves must be valid.
                let _ = crate::status::try_make_copy(&faulty, "app", CopyKind::Full, None, &lock).await;
                let _ = lock.release().await;
            }
            assert_recorded_copies_are_whole(&inner, "app", &context).await;
            let loaded = StatusStore::new(inner.clone(), "app").load().await.unwrap();
            assert!(
                loaded.status.body.copy(&first.id).is_some(),
                "{context}: the first copy was lost"
            );

            // The next run is not blocked. A lease the failed run could not remove names this
            // test's own (live) process; the next run is another process, and this one gone.
            if let Some(lease) = inner
                .get_versioned(&cairn::repo::layout::lock_key("app"), 1 << 20)
                .await
                .unwrap()
            {
                let mut lease: cairn::repo::lock::Lease = serde_json::from_slice(&lease.data).unwrap();
                lease.pid = crate::lock::dead_pid();
                inner
                    .put_bytes(
                        &cairn::repo::layout::lock_key("app"),
                        Bytes::from(serde_json::to_vec(&lease).unwrap()),
                    )
                    .await
                    .unwrap();
            }
            let next_locks = tempfile::tempdir().unwrap();
            let lock = take_lock(&inner, "app", &next_locks).await;
            let next = make_copy(&inner, "app", CopyKind::Full, None, &lock).await;
            lock.release().await.unwrap();
            let loaded = StatusStore::new(inner.clone(), "app").load().await.unwrap();
            assert!(
                loaded.status.body.copy(&next.id).is_some(),
                "{context}: the next run recorded nothing"
            );
            assert_recorded_copies_are_whole(&inner, "app", &context).await;
        }
    }
}

/// A read that ends early without an error (a truncated manifest) is damage: the status never
/// takes a copy from it, and says which manifest it left out.
#[tokio::test]
async fn a_truncated_read_is_damage_never_a_copy() {
    let (_guard, inner) = local_destination();
    let locks = tempfile::tempdir().unwrap();
    let lock = take_lock(&inner, "app", &locks).await;
    let copy = make_copy(&inner, "app", CopyKind::Full, None, &lock).await;
    lock.release().await.unwrap();
    // The status forgets the copy, so only its manifest can bring it back.
    inner.delete(&cairn::repo::layout::status_key("app")).await.unwrap();
    inner
        .delete(&cairn::repo::layout::status_previous_key("app"))
        .await
        .unwrap();
    let faulty: Arc<dyn Destination> = Arc::new(Faulty {
        inner: inner.clone(),
        fault: Fault::TruncateReads,
        nth: 0,
        writes: AtomicU32::new(0),
    });
    let loaded = StatusStore::new(faulty, "app").load().await.unwrap();
    assert!(
        loaded.status.body.copies.is_empty(),
        "a truncated manifest was taken for a copy: {:?}",
        loaded.status.body.copies
    );
    // Read whole, the same manifest brings the copy back.
    let loaded = StatusStore::new(inner, "app").load().await.unwrap();
    assert_eq!(loaded.recovered, std::slice::from_ref(&copy.id));
}
