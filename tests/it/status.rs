//! The status file on real destinations: commit order, damage, fallback, rebuild, versions and
//! racing writers.

use std::sync::Arc;

use bytes::Bytes;
use cairn::jobs::backup::new_copy_id;
use cairn::repo::kinds::{CopyKind, RunType};
use cairn::repo::layout;
use cairn::repo::lock::{self, LockOptions, SourceLock};
use cairn::repo::manifest::Manifest;
use cairn::repo::status::{
    CopyInfo, CopyRecord, LoadedFrom, LogPosition, LogRange, STATUS_FORMAT, STATUS_VERSION, ServerIdentity,
    StatusError, StatusStore,
};
use cairn::repo::writer::CopyWriter;
use cairn::storage::{Destination, DestinationExt, md5_hex};
use chrono::Utc;
use serde_json::Map;

use crate::support::every_destination;

pub fn info(kind: CopyKind, run_type: RunType, parent: Option<&str>) -> CopyInfo {
    let position = LogPosition::Postgres {
        lsn: "0/16B3748".into(),
        timeline: Some(1),
        slot: None,
    };
    CopyInfo {
        id: String::new(),
        kind,
        run_type,
        parent: parent.map(str::to_string),
        started_at: Utc::now(),
        finished_at: Utc::now(),
        log_range: LogRange {
            start: position.clone(),
            end: position,
        },
        server: ServerIdentity {
            id: "7301234567890123456".into(),
            version: "15.4".into(),
        },
        bytes: 0,
        files: 0,
        cairn_version: cairn::CAIRN_VERSION.into(),
        details: Default::default(),
    }
}

pub async fn take_lock(destination: &Arc<dyn Destination>, source: &str, dir: &tempfile::TempDir) -> SourceLock {
    let options = LockOptions {
        lock_dir: dir.path().to_path_buf(),
        ..LockOptions::default()
    };
    lock::acquire(destination.clone(), source, "test", &options)
        .await
        .unwrap()
}

/// Writes a copy of two files through the same path a backup uses and returns its record.
pub async fn make_copy(
    destination: &Arc<dyn Destination>,
    source: &str,
    kind: CopyKind,
    parent: Option<&str>,
    lock: &SourceLock,
) -> CopyRecord {
    try_make_copy(destination, source, kind, parent, lock).await.unwrap()
}

/// [`make_copy`], returning what went wrong instead of panicking.
pub async fn try_make_copy(
    destination: &Arc<dyn Destination>,
    source: &str,
    kind: CopyKind,
    parent: Option<&str>,
    lock: &SourceLock,
) -> Result<CopyRecord, String> {
    let started = Utc::now();
    let id = format!(
        "{}-{}",
        new_copy_id(started, kind),
        &md5_hex(format!("{started:?}{parent:?}").as_bytes())[..6]
    );
    let writer = CopyWriter::new(destination.clone(), source, &id);
    for (path, content) in [
        ("schema/pre-data.sql", format!("create table t_{id};")),
        ("data/t.0", id.repeat(50)),
    ] {
        writer
            .put_file(path, std::io::Cursor::new(content.into_bytes()), Map::new)
            .await
            .map_err(|e| e.to_string())?;
    }
    let run_type = if kind == CopyKind::Full {
        RunType::Daily
    } else {
        RunType::Hourly
    };
    writer
        .commit(
            info(kind, run_type, parent),
            &StatusStore::new(destination.clone(), source),
            lock,
        )
        .await
        .map_err(|e| e.to_string())
}

/// Records a full copy of `source` and an incremental on top of it, under the source's lock.
pub async fn full_and_incremental(destination: &Arc<dyn Destination>, source: &str) -> (CopyRecord, CopyRecord) {
    let locks = tempfile::tempdir().unwrap();
    let lock = take_lock(destination, source, &locks).await;
    let full = make_copy(destination, source, CopyKind::Full, None, &lock).await;
    let incr = make_copy(destination, source, CopyKind::Incremental, Some(&full.id), &lock).await;
    lock.release().await.unwrap();
    (full, incr)
}

/// Flips one byte in the middle of an object.
pub async fn damage(destination: &Arc<dyn Destination>, key: &str) {
    let mut data = destination.get_bytes(key, 64 << 20).await.unwrap().to_vec();
    let middle = data.len() / 2;
    data[middle] ^= 0x04;
    destination.put_bytes(key, Bytes::from(data)).await.unwrap();
}

fn ids(copies: &[CopyRecord]) -> Vec<String> {
    copies.iter().map(|c| c.id.clone()).collect()
}

#[tokio::test]
async fn a_commit_writes_files_then_manifest_then_status() {
    for (_guard, destination) in every_destination("commit").await {
        let locks = tempfile::tempdir().unwrap();
        let lock = take_lock(&destination, "app", &locks).await;
        let store = StatusStore::new(destination.clone(), "app");
        assert_eq!(store.load().await.unwrap().from, LoadedFrom::Nothing);
        let copy = make_copy(&destination, "app", CopyKind::Full, None, &lock).await;
        let manifest_bytes = destination.get_bytes(&copy.manifest.path, 1 << 20).await.unwrap();
        assert_eq!(copy.manifest.md5, md5_hex(&manifest_bytes));
        let manifest = Manifest::decode("m", &manifest_bytes).unwrap();
        assert_eq!(manifest.copy, copy.info);
        assert_eq!(manifest.files.len(), 2);
        assert_eq!(copy.files, 2);
        for file in &manifest.files {
            let key = format!("{}{}", layout::copy_prefix("app", &copy.id), file.path);
            let stored = destination.get_bytes(&key, 1 << 20).await.unwrap();
            assert_eq!(
                (stored.len() as u64, md5_hex(&stored)),
                (file.size, file.md5.clone()),
                "{key}"
            );
        }
        assert_eq!(copy.bytes, manifest.files.iter().map(|f| f.size).sum::<u64>());
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.from, LoadedFrom::Latest);
        assert_eq!(loaded.status.generation, 1);
        assert_eq!(loaded.status.body.copies, vec![copy.clone()]);

        // A copy is written once: committing the same id again fails and changes no status.
        let writer = CopyWriter::new(destination.clone(), "app", &copy.id);
        let again = writer
            .commit(info(CopyKind::Full, RunType::Daily, None), &store, &lock)
            .await;
        assert!(again.is_err(), "second commit of {} succeeded", copy.id);
        assert_eq!(store.load().await.unwrap().status.body.copies, vec![copy]);
        lock.release().await.unwrap();
    }
}

#[tokio::test]
async fn a_damaged_latest_falls_back_to_the_previous_generation_and_never_overwrites_it() {
    for (_guard, destination) in every_destination("fallback").await {
        let locks = tempfile::tempdir().unwrap();
        let lock = take_lock(&destination, "app", &locks).await;
        let store = StatusStore::new(destination.clone(), "app");
        let full = make_copy(&destination, "app", CopyKind::Full, None, &lock).await;
        let incr = make_copy(&destination, "app", CopyKind::Incremental, Some(&full.id), &lock).await;
        damage(&destination, &layout::status_key("app")).await;

        let loaded = store.load().await.unwrap();
        let LoadedFrom::Previous { reason } = &loaded.from else {
            panic!("expected a fallback, got {:?}", loaded.from)
        };
        assert!(
            reason.contains("checksum mismatch") || reason.contains("JSON"),
            "{reason}"
        );
        // The previous generation holds the first copy; the second comes back from its manifest.
        assert_eq!(ids(&loaded.status.body.copies), [full.id.clone(), incr.id.clone()]);
        assert_eq!(loaded.recovered, std::slice::from_ref(&incr.id));
        assert_eq!(
            loaded.status.body.latest().map(|c| c.id.clone()),
            Some(incr.id.clone()),
            "the newest copy a manifest proves is the latest"
        );
        assert!(
            loaded.status.generation >= 2,
            "the damaged generation 2 is never reused"
        );
        let previous_before = destination
            .get_bytes(&layout::status_previous_key("app"), 1 << 20)
            .await
            .unwrap();

        // The next update replaces the damaged latest but keeps the sound previous as it was.
        let third = make_copy(&destination, "app", CopyKind::Incremental, Some(&full.id), &lock).await;
        let previous_after = destination
            .get_bytes(&layout::status_previous_key("app"), 1 << 20)
            .await
            .unwrap();
        assert_eq!(
            previous_before, previous_after,
            "a damaged latest overwrote the previous copy"
        );
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.from, LoadedFrom::Latest);
        assert!(loaded.recovered.is_empty(), "the update wrote the recovered copy");
        assert_eq!(
            ids(&loaded.status.body.copies),
            [full.id.clone(), incr.id.clone(), third.id.clone()]
        );
        assert_eq!(loaded.status.generation, 3, "generation 2 was the damaged one");

        let (status, report) = store.rebuild().await.unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        assert_eq!(
            ids(&status.body.copies),
            [full.id.clone(), incr.id.clone(), third.id.clone()]
        );
        lock.release().await.unwrap();
    }
}

#[tokio::test]
async fn both_files_damaged_is_an_error_until_rebuilt_from_manifests() {
    for (_guard, destination) in every_destination("both-bad").await {
        let locks = tempfile::tempdir().unwrap();
        let lock = take_lock(&destination, "app", &locks).await;
        let store = StatusStore::new(destination.clone(), "app");
        let full = make_copy(&destination, "app", CopyKind::Full, None, &lock).await;
        let incr = make_copy(&destination, "app", CopyKind::Incremental, Some(&full.id), &lock).await;
        damage(&destination, &layout::status_key("app")).await;
        damage(&destination, &layout::status_previous_key("app")).await;

        let err = store.load().await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StatusError::BothDamaged { .. }), "{text}");
        assert!(
            text.contains("app/status.json") && text.contains("app/status.previous.json"),
            "{text}"
        );
        assert!(text.contains("cairn status --rebuild --source app"), "{text}");
        // An update refuses too: nothing is written over damage it cannot read.
        let update = store.update(|_| Ok(())).await;
        assert!(matches!(update, Err(StatusError::BothDamaged { .. })));

        let (status, report) = store.rebuild().await.unwrap();
        assert_eq!(ids(&status.body.copies), [full.id.clone(), incr.id.clone()]);
        assert_eq!(report.copies, 2);
        for key in [layout::status_key("app"), layout::status_previous_key("app")] {
            let bytes = destination.get_bytes(&key, 1 << 20).await.unwrap();
            assert_eq!(
                cairn::repo::status::decode(&key, &bytes).unwrap().body,
                status.body,
                "{key}"
            );
        }
        // A damaged manifest is left out and reported, never trusted.
        damage(&destination, &incr.manifest.path).await;
        let (status, report) = store.rebuild().await.unwrap();
        assert_eq!(ids(&status.body.copies), [full.id.as_str()]);
        assert_eq!(report.skipped.len(), 1);
        assert!(
            report.skipped[0].0.contains(&incr.id) && report.skipped[0].1.contains("damaged"),
            "{:?}",
            report.skipped
        );
        lock.release().await.unwrap();
    }
}

#[tokio::test]
async fn status_files_gone_while_copies_exist_are_recovered_from_the_manifests() {
    for (_guard, destination) in every_destination("missing").await {
        let locks = tempfile::tempdir().unwrap();
        let lock = take_lock(&destination, "app", &locks).await;
        let copy = make_copy(&destination, "app", CopyKind::Full, None, &lock).await;
        destination.delete(&layout::status_key("app")).await.unwrap();
        destination.delete(&layout::status_previous_key("app")).await.unwrap();
        let store = StatusStore::new(destination.clone(), "app");
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.status.body.copies, vec![copy.clone()]);
        assert_eq!(loaded.recovered, std::slice::from_ref(&copy.id));
        // The next update writes the recovered history, not a new one.
        let next = make_copy(&destination, "app", CopyKind::Incremental, Some(&copy.id), &lock).await;
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.from, LoadedFrom::Latest);
        assert_eq!(ids(&loaded.status.body.copies), [copy.id.clone(), next.id.clone()]);
        lock.release().await.unwrap();
    }
}

/// A run that stopped after its manifest and before the status leaves a complete copy: the next
/// load recovers it even though the status file itself is sound.
#[tokio::test]
async fn a_copy_whose_status_update_was_lost_is_recovered() {
    for (_guard, destination) in every_destination("lost-update").await {
        let locks = tempfile::tempdir().unwrap();
        let lock = take_lock(&destination, "app", &locks).await;
        let full = make_copy(&destination, "app", CopyKind::Full, None, &lock).await;
        let before = destination
            .get_bytes(&layout::status_key("app"), 1 << 20)
            .await
            .unwrap();
        let incr = make_copy(&destination, "app", CopyKind::Incremental, Some(&full.id), &lock).await;
        destination.put_bytes(&layout::status_key("app"), before).await.unwrap();
        // A folder of a run that died before its manifest is not a copy.
        destination
            .put_bytes(
                &format!(
                    "{}data/t.0.zst",
                    layout::copy_prefix("app", "20260101T000000.000Z-full")
                ),
                Bytes::from_static(b"partial"),
            )
            .await
            .unwrap();
        let loaded = StatusStore::new(destination.clone(), "app").load().await.unwrap();
        assert_eq!(loaded.from, LoadedFrom::Latest);
        assert_eq!(ids(&loaded.status.body.copies), [full.id.clone(), incr.id.clone()]);
        assert_eq!(loaded.recovered, std::slice::from_ref(&incr.id));
        assert_eq!(loaded.status.body.copy(&incr.id), Some(&incr));
        lock.release().await.unwrap();
    }
}

/// A status file as the first development builds wrote it (version 1).
fn version_1_status() -> Vec<u8> {
    let mut members = serde_json::Map::new();
    members.insert("generation".into(), serde_json::json!(4));
    members.insert(
        "body".into(),
        serde_json::json!({
            "source": "shop",
            "engine": "mysql",
            "copies": [{
                "id": "20260101T000000.000Z-full",
                "kind": "full",
                "run_type": "daily",
                "parent": null,
                "started_at": "2026-01-01T00:00:00Z",
                "finished_at": "2026-01-01T00:10:00Z",
                "start_position": "binlog.000042:1234",
                "end_position": "binlog.000042:1234",
                "server_id": "1",
                "server_version": "10.11.6-MariaDB",
                "bytes": 1000,
                "files": 3,
                "manifest": "shop/copies/20260101T000000.000Z-full/manifest.json",
                "manifest_md5": "0123456789abcdef0123456789abcdef"
            }]
        }),
    );
    cairn::repo::envelope::seal(STATUS_FORMAT, 1, members)
}

#[tokio::test]
async fn older_versions_are_upgraded_when_read_and_written_back_in_the_newest() {
    for (_guard, destination) in every_destination("upgrade").await {
        destination
            .put_bytes(&layout::status_key("shop"), Bytes::from(version_1_status()))
            .await
            .unwrap();
        let store = StatusStore::new(destination.clone(), "shop");
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.status.generation, 4);
        let old = &loaded.status.body.copies[0];
        assert_eq!(
            old.log_range.end,
            LogPosition::Mysql {
                file: "binlog.000042".into(),
                position: 1234,
                gtid: None
            }
        );
        assert_eq!(old.server.version, "10.11.6-MariaDB");
        assert_eq!(old.manifest.md5, "0123456789abcdef0123456789abcdef");

        let locks = tempfile::tempdir().unwrap();
        let lock = take_lock(&destination, "shop", &locks).await;
        let new = make_copy(&destination, "shop", CopyKind::Full, None, &lock).await;
        let bytes = destination
            .get_bytes(&layout::status_key("shop"), 1 << 20)
            .await
            .unwrap();
        let on_disk: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(on_disk["version"], serde_json::json!(STATUS_VERSION));
        assert_eq!(on_disk["generation"], serde_json::json!(5));
        let reread = cairn::repo::status::decode("s", &bytes).unwrap();
        assert_eq!(reread.body.copies[0], *old);
        assert_eq!(reread.body.copies[1], new);
        // The second copy is the version-1 generation that was replaced, still readable.
        let previous = destination
            .get_bytes(&layout::status_previous_key("shop"), 1 << 20)
            .await
            .unwrap();
        assert_eq!(previous, version_1_status());
        lock.release().await.unwrap();
    }
}

#[tokio::test]
async fn a_newer_version_is_refused_and_not_bypassed_through_the_previous_copy() {
    for (_guard, destination) in every_destination("newer").await {
        let locks = tempfile::tempdir().unwrap();
        let lock = take_lock(&destination, "app", &locks).await;
        make_copy(&destination, "app", CopyKind::Full, None, &lock).await;
        make_copy(&destination, "app", CopyKind::Full, None, &lock).await;
        let mut members = serde_json::Map::new();
        members.insert("generation".into(), serde_json::json!(9));
        members.insert(
            "body".into(),
            serde_json::json!({"source": "app", "copies": [], "future": true}),
        );
        let future = cairn::repo::envelope::seal(STATUS_FORMAT, STATUS_VERSION + 1, members);
        destination
            .put_bytes(&layout::status_key("app"), Bytes::from(future.clone()))
            .await
            .unwrap();
        let store = StatusStore::new(destination.clone(), "app");
        let err = store.load().await.unwrap_err();
        assert!(matches!(err, StatusError::NewerVersion { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("version {}", STATUS_VERSION + 1))
                && text.contains(&format!("version {STATUS_VERSION}")),
            "{text}"
        );
        assert!(store.update(|_| Ok(())).await.is_err());
        assert_eq!(
            destination
                .get_bytes(&layout::status_key("app"), 1 << 20)
                .await
                .unwrap(),
            future,
            "left untouched"
        );
        lock.release().await.unwrap();
    }
}

#[tokio::test]
async fn racing_writers_never_lose_an_update() {
    for (_guard, destination) in every_destination("race").await {
        let writers = 4;
        let per_writer = 6;
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                // Each writer has its own store, as separate processes would.
                let store = StatusStore::new(destination.clone(), "app");
                tokio::spawn(async move {
                    for i in 0..per_writer {
                        let mut copy = crate::status::record_for_race(w, i);
                        copy.info.id = format!("w{w}-c{i}");
                        store.record(copy).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let loaded = StatusStore::new(destination.clone(), "app").load().await.unwrap();
        let mut recorded = ids(&loaded.status.body.copies);
        recorded.sort();
        let mut expected: Vec<String> = (0..writers)
            .flat_map(|w| (0..per_writer).map(move |i| format!("w{w}-c{i}")))
            .collect();
        expected.sort();
        assert_eq!(recorded, expected, "{}", destination.location());
        assert_eq!(
            loaded.status.generation,
            (writers * per_writer) as u64,
            "one generation per update"
        );
    }
}

pub fn record_for_race(writer: usize, index: usize) -> CopyRecord {
    CopyRecord {
        info: info(CopyKind::Full, RunType::Daily, None),
        manifest: cairn::repo::status::ManifestRef {
            path: format!("app/copies/w{writer}-c{index}/manifest.json"),
            md5: "0".repeat(32),
        },
    }
}
