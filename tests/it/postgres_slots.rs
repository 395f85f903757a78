//! The slot a PostgreSQL source keeps for incrementals: shown with the WAL it keeps by `cairn
//! status` (with a warning above the threshold), dropped by `cairn slot drop`, a log gap once it
//! is gone (a clear failure, or a full copy when configured), and dropped when incrementals are
//! turned off.

use std::path::Path;

use crate::postgres::{connect, fresh_database, url_of};
use crate::postgres_incrementals::{backup, cairn_config, restore};
use crate::support::{cairn, run};

fn write_config(locks: &Path, database: &str, extra: &str) -> std::path::PathBuf {
    let path = locks.join("cairn.toml");
    std::fs::write(&path, format!("[sources.fx]\nurl = \"{}\"\n{extra}", url_of(database))).unwrap();
    path
}

/// (slots, publications) the source database has.
async fn kept(database: &str) -> (i64, i64) {
    let row = connect(&url_of(database))
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database()),
                    (SELECT count(*) FROM pg_publication)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_slot_is_shown_dropped_and_its_loss_is_a_log_gap() {
    let source = fresh_database("pg_slot").await;
    let client = connect(&url_of(&source)).await;
    client
        .batch_execute("CREATE TABLE t (id serial PRIMARY KEY, v text)")
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    let config = write_config(locks.path(), &source, "incrementals = true\nslot-warning-mib = 1\n");
    let (code, out, err) = backup(locks.path(), &config, &to, "full");
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(kept(&source).await, (1, 1));

    // WAL written after the slot was made is kept for it: over the 1 MiB threshold, a warning.
    client
        .batch_execute("INSERT INTO t (v) SELECT repeat(md5(g::text), 40) FROM generate_series(1, 3000) g")
        .await
        .unwrap();
    let (code, out, err) = cairn_config(
        locks.path(),
        &config,
        &["status", "--json", "--source", "fx", "--from", &to],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
    let slot = &reports[0]["slot"];
    let name = slot["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("cairn_fx_"), "{slot}");
    assert!(slot["retained_bytes"].as_u64().unwrap() > 1024 * 1024, "{slot}");
    assert!(slot["last_advanced"].is_string(), "{slot}");
    assert!(slot["warning"].as_str().unwrap().contains("slot-warning-mib"), "{slot}");
    let (code, out, err) = cairn_config(locks.path(), &config, &["status", "--source", "fx", "--from", &to]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("replication slot {name}: keeps")) && out.contains("WARNING"),
        "{out}"
    );

    // A dry run drops nothing; the drop takes slot and publication.
    let (code, out, err) = cairn_config(locks.path(), &config, &["slot", "drop", "--source", "fx", "--dry-run"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("would drop replication slot {name}")), "{out}");
    assert_eq!(kept(&source).await, (1, 1));
    let (code, out, err) = cairn_config(locks.path(), &config, &["slot", "drop", "--source", "fx"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("dropped replication slot {name}")), "{out}");
    assert_eq!(kept(&source).await, (0, 0));

    // Without the slot the chain cannot go on: a clear failure naming the slot and the parent.
    let (code, out, err) = run(cairn(locks.path()).args(["status", "--json", "--source", "fx", "--from", &to]));
    assert_eq!(code, 0, "{err}");
    let full_id = serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["copies"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(&name) && err.contains("does not exist") && err.contains(&full_id) && err.contains("on-log-gap"),
        "{err}"
    );

    // With on-log-gap = "full", the run takes a full copy instead, and it restores.
    let config = write_config(locks.path(), &source, "incrementals = true\non-log-gap = \"full\"\n");
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = run(cairn(locks.path()).args(["status", "--json", "--source", "fx", "--from", &to]));
    assert_eq!(code, 0, "{err}");
    let copies = serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["copies"].clone();
    let kinds: Vec<&str> = copies
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["full", "full"], "{out}");
    assert_eq!(kept(&source).await, (1, 1));
    let target = fresh_database("pg_slot_restored").await;
    let (code, out, err) = restore(locks.path(), &to, &target, &[]);
    assert_eq!(code, 0, "{out}\n{err}");

    // Incrementals turned off: the next full copy drops the slot and says so.
    let config = write_config(locks.path(), &source, "");
    let (code, out, err) = backup(locks.path(), &config, &to, "full");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("incrementals are off") && err.contains(&name), "{err}");
    assert_eq!(kept(&source).await, (0, 0));
}
