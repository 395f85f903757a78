//! cairn's own applier on MariaDB (`replica seed --handover cairn`, then `replica run`): it
//! follows the source's live binary log through rotations, a SIGKILL and a restart, and a lost
//! connection, without losing or repeating a transaction; `status` and `stop` see and end it; its start-up
//! validation catches a row changed by hand; a purged log is refused, and `--auto-resync`
//! seeds the replica again.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::mysql::{ONE_AT_A_TIME, accounts_database, connect, fresh_database, transfer_workload, url_of};
use crate::replica::{checksums, config_for, on_replica, replica_server, reset_replica};
use crate::support::{Background, cairn, run, wait_for_applier};

/// `replica seed --handover cairn` of source `fx` from `to` into the second server.
fn seed_for_cairn(locks: &std::path::Path, config: &std::path::Path, to: &str, more: &[&str]) -> serde_json::Value {
    let target = replica_server();
    let (code, out, err) = run(cairn(locks)
        .arg("--config")
        .arg(config)
        .args([
            "replica",
            "seed",
            "--from",
            to,
            "--source",
            "fx",
            "--target",
            &target,
            "--handover",
            "cairn",
            "--clean",
            "--json",
        ])
        .args(more));
    assert_eq!(code, 0, "{out}\n{err}");
    serde_json::from_str(&out).unwrap()
}

/// `cairn replica <args> --source fx --target <second server>`.
fn replica(locks: &std::path::Path, config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let target = replica_server();
    run(cairn(locks)
        .arg("--config")
        .arg(config)
        .arg("replica")
        .args(args)
        .args(["--source", "fx", "--target", &target]))
}

/// A `replica run` in the background, its messages in `log`.
fn spawn_applier(locks: &std::path::Path, config: &std::path::Path, log: &std::path::Path) -> Background {
    let target = replica_server();
    Background::spawn(
        cairn(locks)
            .arg("--config")
            .arg(config)
            .args(["replica", "run", "--source", "fx", "--target", &target, "--json"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap()),
    )
}

async fn flush_logs(source: &str) {
    connect(&url_of(source))
        .await
        .query_drop("FLUSH BINARY LOGS")
        .await
        .unwrap();
}

/// Waits until the replica's tables have the source's checksums; the last ones seen.
async fn until_equal(source: &str, tables: &[&str]) -> (Vec<Option<u64>>, Vec<Option<u64>>) {
    let expected = checksums(&url_of(source), tables).await;
    let mut seen = Vec::new();
    for _ in 0..240 {
        seen = checksums(&on_replica(source), tables).await;
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (expected, seen)
}

// The workload runs on the runtime's workers while the test thread waits for cairn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cairns_applier_follows_a_source_through_rotations_a_kill_and_a_restart() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = accounts_database("my_applier").await;
    reset_replica(&source).await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let config = config_for(locks.path(), &source);
    let stop = Arc::new(AtomicBool::new(false));
    // One writer: a debug build of the applier keeps up with it, so the test waits for the
    // properties, not for throughput (docs/benchmarks.md measures that, in release builds).
    let workers = transfer_workload(&source, 1, stop.clone());
    for kind in ["full", "incremental"] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (code, out, err) = run(cairn(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["backup", "--source", "fx", "--to", &to, "--type", kind]));
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let report = seed_for_cairn(locks.path(), &config, &to, &[]);
    assert_eq!(report["handover"], "cairn", "{report}");
    assert!(report.get("replication").is_none(), "{report}");

    let log = locks.path().join("applier.log");
    let mut applier = spawn_applier(locks.path(), &config, &log);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    flush_logs(&source).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // SIGKILL in the middle of the stream: whatever was committed on the target stays, with its
    // position; the restart continues after it.
    applier.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A second applier of the same replica is refused while one runs.
    let mut applier = spawn_applier(locks.path(), &config, &log);
    wait_for_applier(locks.path(), &config, &replica_server(), "fx", &mut applier).await;
    let (code, _, err) = replica(locks.path(), &config, &["run", "--dry-run"]);
    assert_eq!(code, 0, "a dry run takes no lease: {err}");
    // With --catch-up, a second applier wrongly let in would end instead of hanging the test.
    let (code, _, err) = replica(locks.path(), &config, &["run", "--catch-up"]);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("another applier runs"), "{err}");
    assert!(!applier.has_ended(), "the applier that holds the lease ended");
    flush_logs(&source).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The source ends the applier's binary log session: it reconnects and goes on.
    let mut admin = connect(&url_of(&source)).await;
    let mut dumps: Vec<u64> = Vec::new();
    for _ in 0..120 {
        dumps = admin
            .query("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
            .await
            .unwrap();
        if !dumps.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!dumps.is_empty(), "the applier reads no binary log after 30 s");
    for id in dumps {
        admin.query_drop(format!("KILL {id}")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let mut transfers = 0;
    for worker in workers {
        transfers += worker.await.unwrap();
    }
    assert!(transfers > 0);
    let (expected, seen) = until_equal(&source, &["accounts", "history"]).await;
    // Idle, the source sends heartbeat events (every 5 s); they keep the stream alive.
    tokio::time::sleep(Duration::from_secs(7)).await;

    // `status` sees the running applier and no lag once it caught up.
    let target = replica_server();
    // The applier records where it has applied everything at its next heartbeat (every second).
    let mut state = serde_json::Value::Null;
    for _ in 0..10 {
        let (code, out, err) = run(cairn(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["replica", "status", "--target", &target, "--json"]));
        assert_eq!(code, 0, "{out}\n{err}");
        let states: serde_json::Value = serde_json::from_str(&out).unwrap();
        state = states
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == "fx")
            .cloned()
            .unwrap_or_else(|| panic!("{states}"));
        if state["lag_bytes"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(state["running"], true, "{state}");
    assert_eq!(state["lag_bytes"], 0, "{state}");

    // `stop` ends it after the transaction in flight; it exits 0.
    let (code, out, err) = replica(locks.path(), &config, &["stop"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let output = applier.wait_with_output();
    let applier_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(output.status.code(), Some(0), "{applier_log}");
    let ran: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(ran["stopped"], "stop requested", "{ran}");
    assert_eq!(ran["reconnections"], 1, "{ran}\n{applier_log}");
    assert!(!applier_log.contains("cairn-test-pw"), "the password was logged");
    reset_replica(&source).await;
    assert_eq!(
        seen, expected,
        "the replica is not its source after {transfers} transfers; the applier's log:\n{applier_log}"
    );
}

/// How many source transactions the replica recorded for `target`.
async fn recorded(conn: &mut mysql_async::Conn, target: &str) -> u64 {
    let sql = "SELECT transactions FROM cairn_replay.progress WHERE source = 'fx' AND target_databases = ?";
    conn.exec_first(sql, (target,)).await.unwrap().unwrap()
}

async fn rows(url: &str) -> Vec<(i32, String)> {
    connect(url)
        .await
        .query("SELECT id, v FROM t ORDER BY id")
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn the_applier_validates_its_target_refuses_a_purged_log_and_resyncs_when_asked() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fresh_database("my_applier_checks").await;
    reset_replica(&source).await;
    let mut conn = connect(&url_of(&source)).await;
    conn.query_drop(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_50",
    )
    .await
    .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let config = config_for(locks.path(), &source);
    let backup = || {
        run(cairn(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["backup", "--source", "fx", "--to", &to, "--type", "full"]))
    };
    let (code, out, err) = backup();
    assert_eq!(code, 0, "{out}\n{err}");
    // The replica holds the database under another name; re-seeds keep it.
    let renamed = format!("{source}_r");
    reset_replica(&renamed).await;
    seed_for_cairn(
        locks.path(),
        &config,
        &to,
        &["--rename-db", &format!("{source}={renamed}")],
    );

    // The dry run validates and prints the plan, and applies nothing.
    let (code, out, err) = replica(locks.path(), &config, &["run", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["stopped"], "dry run", "{plan}");
    assert!(
        plan["validation"].to_string().contains(&format!("{source}.t: 50 rows")),
        "{plan}"
    );

    // A row changed by hand on the replica is caught before anything is applied.
    let mut by_hand = connect(&on_replica(&renamed)).await;
    by_hand
        .query_drop("UPDATE t SET v = 'by hand' WHERE id = 7")
        .await
        .unwrap();
    let (code, out, err) = replica(locks.path(), &config, &["run", "--catch-up"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains(&format!("{source}.t")) && err.contains("differ"), "{err}");
    // The error is kept for `status`.
    let target = replica_server();
    let (_, out, _) = run(cairn(locks.path())
        .arg("--config")
        .arg(&config)
        .args(["replica", "status", "--target", &target, "--source", "fx"]));
    assert!(out.contains("last error") && out.contains("differ"), "{out}");

    // Put right, the replica catches up with what the source wrote meanwhile and stops there.
    by_hand.query_drop("UPDATE t SET v = 'v7' WHERE id = 7").await.unwrap();
    // A row missing on the replica that a later source transaction changes stops the applier in
    // the middle of what it applies together: the error names the table, and the replica's rows
    // and its recorded position still agree (whole transactions, each recorded with its rows).
    let before = recorded(&mut by_hand, &renamed).await;
    by_hand.query_drop("DELETE FROM t WHERE id = 20").await.unwrap();
    for id in 100..130 {
        conn.query_drop(format!("INSERT INTO t VALUES ({id}, 'batch')"))
            .await
            .unwrap();
    }
    conn.query_drop("UPDATE t SET v = 'changed' WHERE id = 20")
        .await
        .unwrap();
    for id in 130..135 {
        conn.query_drop(format!("INSERT INTO t VALUES ({id}, 'after')"))
            .await
            .unwrap();
    }
    let (code, out, err) = replica(locks.path(), &config, &["run", "--catch-up"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("found no matching row") && err.contains(&format!("`{renamed}`.`t`")),
        "{err}"
    );
    let applied: u64 = by_hand
        .query_first("SELECT COUNT(*) FROM t WHERE id >= 100")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(applied, recorded(&mut by_hand, &renamed).await - before);
    assert!(applied <= 30, "{applied} rows: applied past the update that failed");
    // Put right, the applier goes on from the position it recorded.
    by_hand.query_drop("INSERT INTO t VALUES (20, 'v20')").await.unwrap();
    conn.query_drop("DELETE FROM t WHERE id >= 100").await.unwrap();
    let (code, out, err) = replica(locks.path(), &config, &["run", "--catch-up"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(rows(&on_replica(&renamed)).await, rows(&url_of(&source)).await);
    // A trigger created on the source after the seed: its effects come as rows, so on the replica
    // it must not fire again while the applier runs — and it is there once the applier stops.
    conn.query_drop(
        "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, t_id INT); \
         CREATE TRIGGER t_audit AFTER INSERT ON t FOR EACH ROW INSERT INTO audit (t_id) VALUES (NEW.id)",
    )
    .await
    .unwrap();
    conn.query_drop("INSERT INTO t VALUES (51, 'new'); DELETE FROM t WHERE id = 3")
        .await
        .unwrap();
    let (code, out, err) = replica(locks.path(), &config, &["run", "--catch-up", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let ran: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ran["stopped"], "caught up", "{ran}");
    assert_eq!(rows(&on_replica(&renamed)).await, rows(&url_of(&source)).await);
    let audit = |url: String| async move {
        connect(&url)
            .await
            .query::<(i32, i32), _>("SELECT id, t_id FROM audit ORDER BY id")
            .await
            .unwrap()
    };
    assert_eq!(audit(on_replica(&renamed)).await, vec![(1, 51)]);
    let triggers: Vec<String> = by_hand
        .query("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()")
        .await
        .unwrap();
    assert_eq!(triggers, vec!["t_audit".to_string()]);

    // The source purges the log the replica still needs: refused, with what to do.
    conn.query_drop("INSERT INTO t VALUES (52, 'after')").await.unwrap();
    let replica_file: String = by_hand
        .exec_first(
            "SELECT server_file FROM cairn_replay.progress WHERE source = 'fx' AND target_databases = ?",
            (&renamed,),
        )
        .await
        .unwrap()
        .unwrap();
    let mut purged = false;
    for _ in 0..50 {
        flush_logs(&source).await;
        let current: mysql_async::Row = conn.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
        let current: String = current.get(0).unwrap();
        conn.query_drop(format!("PURGE BINARY LOGS TO '{current}'"))
            .await
            .unwrap();
        let logs: Vec<String> = conn
            .query_map("SHOW BINARY LOGS", |row: mysql_async::Row| {
                row.get::<String, _>(0).unwrap()
            })
            .await
            .unwrap();
        if !logs.contains(&replica_file) {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(purged, "the server kept {replica_file}");
    let (code, _, err) = replica(locks.path(), &config, &["run", "--catch-up"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("seed it again") && err.contains(&replica_file), "{err}");

    // With --auto-resync it seeds itself again from the latest copy and follows from there.
    let (code, out, err) = backup();
    assert_eq!(code, 0, "{out}\n{err}");
    conn.query_drop("INSERT INTO t VALUES (53, 'after the new copy')")
        .await
        .unwrap();
    let (code, out, err) = replica(
        locks.path(),
        &config,
        &["run", "--catch-up", "--auto-resync", &to, "--json"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let ran: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ran["resyncs"], 1, "{ran}");
    let expected = rows(&url_of(&source)).await;
    assert_eq!(expected.len(), 52);
    assert_eq!(rows(&on_replica(&renamed)).await, expected);
    reset_replica(&renamed).await;
}
