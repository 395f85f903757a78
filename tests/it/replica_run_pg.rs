//! cairn's own applier on PostgreSQL (`replica seed --handover cairn`, then `replica run`): it
//! follows the replica's slot under a writer through a SIGKILL and a restart without losing or
//! repeating a transaction; its validation catches a row changed by hand; a dropped slot is
//! refused, and `--auto-resync` seeds the replica again.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::postgres::{connect as pg_connect, fresh_database, url_of};
use crate::replica::{pg_replica_url, pg_rows};
use crate::support::{Background, cairn, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairns_applier_follows_a_postgres_source_validates_and_resyncs() {
    let source = fresh_database("pg_applier").await;
    let writer = pg_connect(&url_of(&source)).await;
    writer
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g")
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let config = locks.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!("[sources.fx]\nurl = {:?}\nincrementals = true\n", url_of(&source)),
    )
    .unwrap();
    let target = pg_replica_url(&format!("{source}_replica"));
    let with_config = || {
        let mut command = cairn(locks.path());
        command.arg("--config").arg(&config);
        command
    };
    let backup = || run(with_config().args(["backup", "--source", "fx", "--to", &to, "--type", "full"]));
    let replica = |args: &[&str]| {
        run(with_config()
            .arg("replica")
            .args(args)
            .args(["--source", "fx", "--target", &target]))
    };
    let (code, out, err) = backup();
    assert_eq!(code, 0, "{out}\n{err}");
    writer
        .batch_execute("INSERT INTO t VALUES (101, 'after the copy'); UPDATE t SET v = 'changed' WHERE id = 1")
        .await
        .unwrap();
    let (code, out, err) = run(with_config().args([
        "replica",
        "seed",
        "--from",
        &to,
        "--source",
        "fx",
        "--target",
        &target,
        "--handover",
        "cairn",
        "--json",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["handover"], "cairn", "{report}");

    // The dry run validates: nothing was written since the seed's slot started.
    let (code, out, err) = replica(&["run", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(plan["validation"].to_string().contains("public.t: 101 rows"), "{plan}");
    // A row changed by hand is caught before anything is applied.
    let on_replica = pg_connect(&target).await;
    on_replica
        .batch_execute("UPDATE t SET v = 'by hand' WHERE id = 100")
        .await
        .unwrap();
    let (code, _, err) = replica(&["run", "--catch-up"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("public.t") && err.contains("differ"), "{err}");
    on_replica
        .batch_execute("UPDATE t SET v = 'v100' WHERE id = 100")
        .await
        .unwrap();

    // A writer goes on while the applier runs, is killed and started again.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (stop, url) = (stop.clone(), url_of(&source));
        tokio::spawn(async move {
            let client = pg_connect(&url).await;
            let mut id = 1000;
            while !stop.load(Ordering::Relaxed) {
                client
                    .batch_execute(&format!(
                        "BEGIN; INSERT INTO t VALUES ({id}, 'written'); UPDATE t SET v = 'moved {id}' WHERE id = {}; \
                         COMMIT",
                        1 + id % 100
                    ))
                    .await
                    .unwrap();
                id += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            id - 1000
        })
    };
    let log = locks.path().join("applier.log");
    let spawn = || {
        Background::spawn(
            with_config()
                .args(["replica", "run", "--source", "fx", "--target", &target, "--json"])
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).unwrap()),
        )
    };
    let mut applier = spawn();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    applier.kill();
    let applier = spawn();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let written = busy.await.unwrap();
    assert!(written > 10, "only {written} transactions were written");
    let expected = pg_rows(&url_of(&source)).await;
    let mut seen = Vec::new();
    for _ in 0..120 {
        seen = pg_rows(&target).await;
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // `status` sees the running applier and, once it found the slot holding nothing new, a
    // caught-up point past everything the source had flushed when the replica was seen equal
    // (recorded at its next heartbeat). The lag in bytes counts all of the server's WAL since
    // then — other tests' databases too — so it is only checked to be there.
    let flushed: String = writer
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let lsn = |text: &str| {
        let (high, low) = text.split_once('/').unwrap();
        (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap()
    };
    let status = || {
        let (code, out, err) = run(with_config().args(["replica", "status", "--target", &target, "--json"]));
        assert_eq!(code, 0, "{out}\n{err}");
        let states: serde_json::Value = serde_json::from_str(&out).unwrap();
        states[0].clone()
    };
    let mut state = serde_json::Value::Null;
    for _ in 0..20 {
        state = status();
        if state["caught_up_to"]["lsn"]
            .as_str()
            .is_some_and(|at| lsn(at) >= lsn(&flushed))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(state["running"], true, "{state}");
    let caught_up = state["caught_up_to"]["lsn"].as_str().map(lsn);
    assert!(caught_up >= Some(lsn(&flushed)), "{state} (flushed {flushed})");
    assert!(state["lag_bytes"].is_u64(), "{state}");
    let (code, out, err) = replica(&["stop"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let output = applier.wait_with_output();
    let applier_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(output.status.code(), Some(0), "{applier_log}");
    let ran: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(ran["stopped"], "stop requested", "{ran}");
    assert_eq!(
        seen, expected,
        "the replica is not its source; the applier's log:\n{applier_log}"
    );
    // A transaction the stopped applier has not applied shows as lag.
    writer
        .batch_execute("INSERT INTO t VALUES (999999, 'waiting')")
        .await
        .unwrap();
    let state = status();
    assert_eq!(state["running"], false, "{state}");
    assert!(state["lag_bytes"].as_u64().is_some_and(|bytes| bytes > 0), "{state}");
    // The lease is an advisory lock, which belongs to one database: the same lock held in
    // another database of the replica's server (an applier of another source named fx) is not
    // this replica's applier.
    let elsewhere = pg_connect(&pg_replica_url("postgres")).await;
    let lease = (
        0x6361_6972_i32,
        i32::from_str_radix(&cairn::storage::md5_hex(b"fx")[..7], 16).unwrap(),
    );
    let taken: bool = elsewhere
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&lease.0, &lease.1])
        .await
        .unwrap()
        .get(0);
    assert!(taken, "the lock is free in the postgres database");
    let state = status();
    elsewhere
        .execute("SELECT pg_advisory_unlock($1, $2)", &[&lease.0, &lease.1])
        .await
        .unwrap();
    assert_eq!(state["running"], false, "the lease of another database: {state}");

    // The replica's slot is dropped on the source: refused; --auto-resync seeds it again.
    let slot: String = on_replica
        .query_one("SELECT slot FROM cairn_replay.replica WHERE source = 'fx'", &[])
        .await
        .unwrap()
        .get(0);
    writer
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    let (code, _, err) = replica(&["run", "--catch-up"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("slot was dropped") && err.contains("--auto-resync"),
        "{err}"
    );
    let (code, out, err) = backup();
    assert_eq!(code, 0, "{out}\n{err}");
    writer
        .batch_execute("INSERT INTO t VALUES (102, 'after the new copy')")
        .await
        .unwrap();
    let (code, out, err) = replica(&["run", "--catch-up", "--auto-resync", &to, "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let ran: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ran["resyncs"], 1, "{ran}");
    assert_eq!(pg_rows(&target).await, pg_rows(&url_of(&source)).await);
    // Leave the source without the replica's slot.
    writer
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap();
}
