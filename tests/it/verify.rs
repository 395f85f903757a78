//! `cairn verify`: without a database, every manifest against the status, every file against its
//! manifest, each chain's logs read back; one flipped byte or one missing file anywhere is named,
//! with the copies it makes unrestorable.

use std::path::{Path, PathBuf};

use crate::postgres::{connect, fresh_database, url_of};
use crate::postgres_incrementals::{backup, config};
use crate::support::{cairn, run, walk};

fn verify(locks: &Path, to: &str, extra: &[&str]) -> (i32, String, String) {
    run(cairn(locks)
        .args(["verify", "--from", to, "--source", "fx"])
        .args(extra))
}

/// The first stored file whose key ends with `suffix`.
fn stored(root: &Path, suffix: &str) -> PathBuf {
    walk(root)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .min()
        .unwrap_or_else(|| panic!("no stored file ends with {suffix}"))
}

fn flip(path: &Path) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let mut bytes = original.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
    original
}

#[tokio::test]
async fn one_flipped_byte_or_missing_file_anywhere_is_named_with_what_it_breaks() {
    let source = fresh_database("pg_verify").await;
    let client = connect(&url_of(&source)).await;
    client
        .batch_execute(
            "SET synchronous_commit = on;
             CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g;",
        )
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    let config = config(locks.path(), &source);
    let (code, out, err) = backup(locks.path(), &config, &to, "full");
    assert_eq!(code, 0, "{out}\n{err}");
    for round in 0..2 {
        client
            .batch_execute(&format!("UPDATE t SET v = 'round {round}' WHERE id % 7 = {round}"))
            .await
            .unwrap();
        let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
        assert_eq!(code, 0, "{out}\n{err}");
    }

    let (code, out, err) = verify(locks.path(), &to, &["--all"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("all 3 copies intact and restorable"), "{out}");
    // The outcome is evidence kept in the status.
    let (code, out, _) = run(cairn(locks.path()).args(["status", "--source", "fx", "--from", &to]));
    assert_eq!(code, 0);
    assert!(
        out.contains("last verified") && out.contains("3 copies intact"),
        "{out}"
    );

    let (code, out, _) = run(cairn(locks.path()).args(["status", "--json", "--source", "fx", "--from", &to]));
    assert_eq!(code, 0);
    let ids: Vec<String> = serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    let root = dir.path();
    // One object of each kind: a data file, a schema file, a change file, a manifest.
    for (what, path) in [
        ("data file", stored(root, ".copy.zst")),
        ("schema file", stored(root, "pre-data.sql.zst")),
        ("change file", stored(root, "changes/00000.pgoutput.zst")),
        ("manifest", root.join("fx/copies").join(&ids[2]).join("manifest.json")),
    ] {
        let original = flip(&path);
        let (code, out, err) = verify(locks.path(), &to, &["--all", "--json"]);
        std::fs::write(&path, original).unwrap();
        assert_eq!(code, 1, "{what}: {out}\n{err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let damaged: Vec<&serde_json::Value> = report["copies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| !c["problems"].as_array().unwrap().is_empty())
            .collect();
        assert_eq!(damaged.len(), 1, "{what}: exactly one copy is damaged: {out}");
        let key = path.strip_prefix(root).unwrap().to_string_lossy().to_string();
        let problem = damaged[0]["problems"][0].as_str().unwrap();
        assert!(
            problem.contains(&key) && problem.contains("damaged"),
            "{what}: {problem}"
        );
        // Everything after the damaged copy in its chain cannot be restored either.
        let position = ids.iter().position(|id| damaged[0]["copy"] == id.as_str()).unwrap();
        for (i, copy) in report["copies"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                copy["unrestorable_because"].is_string(),
                i >= position,
                "{what}: {copy}"
            );
        }
    }

    // A missing file of the newest incremental: named; the older copies are intact.
    let sequences = root.join("fx/copies").join(&ids[2]).join("schema/sequences.sql.zst");
    let kept = std::fs::read(&sequences).unwrap();
    std::fs::remove_file(&sequences).unwrap();
    let (code, out, err) = verify(locks.path(), &to, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    let (_, status, _) = run(cairn(locks.path()).args(["status", "--json", "--source", "fx", "--from", &to]));
    let last = &serde_json::from_str::<serde_json::Value>(&status).unwrap()[0]["last_verification"];
    assert_eq!(last["intact"], false, "{last}");
    assert_eq!(last["problems"], 1, "{last}");
    assert!(
        out.contains("sequences.sql.zst: missing") && out.contains(&format!("not restorable: {}", ids[2])),
        "{out}"
    );
    let (code, out, err) = verify(locks.path(), &to, &["--copy", &ids[1]]);
    assert_eq!(
        code, 0,
        "the chain of an older copy does not need the file: {out}\n{err}"
    );
    std::fs::write(&sequences, kept).unwrap();
    let (code, out, err) = verify(locks.path(), &to, &["--all"]);
    assert_eq!(code, 0, "{out}\n{err}");

    client
        .batch_execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()",
        )
        .await
        .unwrap();
}

/// A MySQL/MariaDB chain: a flipped byte in a stored binary log file or a data file is named,
/// with the copies it makes unrestorable.
#[tokio::test]
async fn a_damaged_binary_log_or_data_file_of_a_mysql_chain_is_named() {
    use mysql_async::prelude::Queryable;
    let _serial = crate::mysql::ONE_AT_A_TIME.lock().await;
    let source = crate::mysql::fresh_database("my_verify").await;
    let mut conn = crate::mysql::connect(&crate::mysql::url_of(&source)).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    let backup = |kind: &str| crate::mysql::backup_with(&mut cairn(locks.path()), &source, &to, &["--type", kind]);
    let (code, out, err) = backup("full");
    assert_eq!(code, 0, "{out}\n{err}");
    conn.query_drop("INSERT INTO t VALUES (3, 'c'); UPDATE t SET v = 'changed' WHERE id = 1")
        .await
        .unwrap();
    let (code, out, err) = backup("incremental");
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = verify(locks.path(), &to, &["--all"]);
    assert_eq!(code, 0, "{out}\n{err}");

    let root = dir.path();
    for (what, suffix, damaged_copy) in [("binary log file", "-incr", 1usize), ("data file", "-full", 0)] {
        let path = walk(root)
            .into_iter()
            .filter(|p| {
                let text = p.to_string_lossy();
                text.contains(suffix) && (text.contains("/binlog/") || text.contains("/data/"))
            })
            .min()
            .unwrap_or_else(|| panic!("no {what}"));
        let original = flip(&path);
        let (code, out, err) = verify(locks.path(), &to, &["--all", "--json"]);
        std::fs::write(&path, original).unwrap();
        assert_eq!(code, 1, "{what}: {out}\n{err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let copies = report["copies"].as_array().unwrap();
        let key = path.strip_prefix(root).unwrap().to_string_lossy().to_string();
        assert!(
            copies[damaged_copy]["problems"][0].as_str().unwrap().contains(&key),
            "{what}: {out}"
        );
        assert!(copies[1]["unrestorable_because"].is_string(), "{what}: {out}");
    }
}
