//! MySQL/MariaDB full copies against the private MariaDB: exact round trips, a copy taken under
//! a transfer workload that must be consistent, and failures that must be clear.

use md5::Digest as _;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row, Value};

use crate::support::{S3_ACCESS_KEY, S3_SECRET_KEY, cairn, mysql_url, run, s3_server, test_ca, walk};

/// MySQL tests run one at a time on the shared server: a copy's global read lock waits for other
/// tests' running statements and DDL (as it would in production), and one test switches
/// `local_infile` off for the whole server.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn url_of(database: &str) -> String {
    let base = mysql_url();
    let (server, _) = base.rsplit_once('/').expect("the test URL names a database");
    format!("{server}/{database}")
}

pub async fn connect(url: &str) -> Conn {
    Conn::new(Opts::from_url(url).unwrap())
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

pub async fn fresh_database(hint: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{hint}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    connect(&mysql_url())
        .await
        .query_drop(format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    name
}

/// A database of 200 accounts holding 1000 each, and an empty transfer history.
pub async fn accounts_database(hint: &str) -> String {
    let source = fresh_database(hint).await;
    connect(&url_of(&source))
        .await
        .query_drop(
            "CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, transfers BIGINT NOT NULL DEFAULT 0) ENGINE=InnoDB;
             CREATE TABLE history (id BIGINT AUTO_INCREMENT PRIMARY KEY, from_id INT, to_id INT, amount BIGINT, pad CHAR(100) NOT NULL DEFAULT 'p') ENGINE=InnoDB;
             INSERT INTO accounts (id, balance) SELECT seq, 1000 FROM seq_1_to_200;",
        )
        .await
        .unwrap();
    source
}

/// Transfers between the accounts from `sessions` connections until `stop` is set; each task
/// returns how many it committed. The total never changes, and every transfer adds one history
/// row and one to the sender's count: a consistent copy keeps both invariants.
pub fn transfer_workload(database: &str, sessions: u64, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..sessions)
        .map(|w| {
            let (url, stop) = (url_of(database), stop.clone());
            tokio::spawn(async move {
                let mut conn = connect(&url).await;
                let mut state = w * 7919 + 17;
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let (from, to, amount) = (
                        1 + (state >> 33) % 200,
                        1 + (state >> 17) % 200,
                        1 + ((state >> 5) % 50) as i64,
                    );
                    if from == to {
                        continue;
                    }
                    let mut tx = conn.start_transaction(Default::default()).await.unwrap();
                    // Rows are locked in id order, so two opposite transfers cannot deadlock.
                    for id in [from.min(to), from.max(to)] {
                        let (delta, counted) = if id == from { (-amount, 1) } else { (amount, 0) };
                        tx.exec_drop(
                            "UPDATE accounts SET balance = balance + ?, transfers = transfers + ? WHERE id = ?",
                            (delta, counted, id),
                        )
                        .await
                        .unwrap();
                    }
                    tx.exec_drop(
                        "INSERT INTO history (from_id, to_id, amount) VALUES (?, ?, ?)",
                        (from, to, amount),
                    )
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect()
}

pub async fn fixture_database(hint: &str) -> String {
    let name = fresh_database(hint).await;
    let sql =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mysql/fixture.sql")).unwrap();
    connect(&url_of(&name))
        .await
        .query_drop(sql)
        .await
        .expect("loading the fixture");
    name
}

fn bytes_of(value: &Value) -> Vec<u8> {
    match value {
        Value::NULL => b"\\NULL".to_vec(),
        Value::Bytes(b) => b.clone(),
        other => format!("{other:?}").into_bytes(),
    }
}

/// Everything a restore must reproduce, with the database's own name taken out.
pub async fn contents_of(database: &str) -> BTreeMap<String, String> {
    let mut conn = connect(&url_of(database)).await;
    conn.query_drop("SET SESSION time_zone = '+00:00'").await.unwrap();
    let unname = |text: String| text.replace(&format!("`{database}`"), "`DB`");
    let mut out = BTreeMap::new();
    let tables: Vec<(String, String)> = conn
        .query(format!(
            "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{database}' ORDER BY 1"
        ))
        .await
        .unwrap();
    for (table, kind) in tables {
        let quoted = format!("`{}`", table.replace('`', "``"));
        if kind == "VIEW" {
            let row: Row = conn
                .query_first(format!("SHOW CREATE VIEW {quoted}"))
                .await
                .unwrap()
                .unwrap();
            out.insert(format!("view {table}"), unname(row.get::<String, _>(1).unwrap()));
            continue;
        }
        let (_, create): (String, String) = conn
            .query_first(format!("SHOW CREATE TABLE {quoted}"))
            .await
            .unwrap()
            .unwrap();
        out.insert(format!("table {table}"), create);
        let (_, checksum): (String, Option<u64>) = conn
            .query_first(format!("CHECKSUM TABLE {quoted}"))
            .await
            .unwrap()
            .unwrap();
        // Every row's exact bytes as the server prints them, independent of row order.
        let rows: Vec<Row> = conn.query(format!("SELECT * FROM {quoted}")).await.unwrap();
        let mut digests: Vec<String> = rows
            .into_iter()
            .map(|row| {
                let fields: Vec<Vec<u8>> = row.unwrap().iter().map(bytes_of).collect();
                format!("{:x}", md5::Md5::digest(fields.join(&b"\x1f"[..])))
            })
            .collect();
        digests.sort();
        out.insert(
            format!("data {table}"),
            format!(
                "{} rows, checksum {checksum:?}, rows md5 {:x}",
                digests.len(),
                md5::Md5::digest(digests.concat())
            ),
        );
    }
    for (kind, show, column) in [("PROCEDURE", "PROCEDURE", 2), ("FUNCTION", "FUNCTION", 2)] {
        let names: Vec<String> = conn
            .query(format!(
                "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{database}' AND ROUTINE_TYPE = '{kind}'"
            ))
            .await
            .unwrap();
        for name in names {
            let row: Row = conn
                .query_first(format!("SHOW CREATE {show} `{name}`"))
                .await
                .unwrap()
                .unwrap();
            out.insert(format!("{kind} {name}"), unname(row.get::<String, _>(column).unwrap()));
        }
    }
    let triggers: Vec<String> = conn
        .query(format!(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{database}'"
        ))
        .await
        .unwrap();
    for name in triggers {
        let row: Row = conn
            .query_first(format!("SHOW CREATE TRIGGER `{name}`"))
            .await
            .unwrap()
            .unwrap();
        out.insert(format!("trigger {name}"), unname(row.get::<String, _>(2).unwrap()));
    }
    let events: Vec<String> = conn
        .query(format!(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{database}'"
        ))
        .await
        .unwrap();
    for name in events {
        let row: Row = conn
            .query_first(format!("SHOW CREATE EVENT `{name}`"))
            .await
            .unwrap()
            .unwrap();
        out.insert(format!("event {name}"), unname(row.get::<String, _>(3).unwrap()));
    }
    out
}

pub async fn assert_same(source: &str, restored: &str) {
    let (a, b) = (contents_of(source).await, contents_of(restored).await);
    assert!(a.len() > 15, "the fixture has more objects than {:?}", a.keys());
    for (name, value) in &a {
        assert_eq!(Some(value), b.get(name), "{name} differs");
    }
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
}

fn backup(command: &mut std::process::Command, database: &str, to: &str) -> (i32, String, String) {
    backup_with(command, database, to, &[])
}

fn restore(command: &mut std::process::Command, from: &str, source: &str, target: &str) -> (i32, String, String) {
    restore_with(command, from, source, target, &[])
}

#[tokio::test]
async fn a_full_copy_restores_identically_from_a_local_directory() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fixture_database("my_local").await;
    let target = format!("{source}_restored");
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, out, err) = backup_with(
        cairn(locks.path()).env("CAIRN_CHUNK_SIZE_MIB", "1"),
        &source,
        &to,
        &["--checksum"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        !out.contains("cairn-test-pw") && !err.contains("cairn-test-pw"),
        "password leaked"
    );
    let (_, json, _) = run(cairn(locks.path()).args(["status", "--json", "--source", "fx", "--from", &to]));
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let copy = &status[0]["copies"][0];
    assert!(
        copy["details"]["chunks"].as_u64().unwrap() > copy["details"]["tables"].as_u64().unwrap(),
        "{copy}"
    );
    assert!(
        copy["log_range"]["end"]["file"]
            .as_str()
            .unwrap()
            .starts_with("binlog."),
        "{copy}"
    );
    assert!(copy["log_range"]["end"]["gtid"].as_str().is_some(), "{copy}");
    assert!(copy["details"]["write_stall_ms"].as_f64().unwrap() < 5_000.0, "{copy}");
    assert_eq!(copy["details"]["ddl_blocked"], true, "{copy}");

    let (code, out, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, &["--checksum"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("CHECKSUM TABLE of all 6 restored tables matches the copy"),
        "{err}"
    );
    assert_same(&source, &target).await;
}

#[tokio::test]
async fn a_full_copy_and_an_incremental_restore_identically_from_s3() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fixture_database("my_s3").await;
    let target = format!("{source}_restored");
    let server = s3_server();
    let bucket = server.new_bucket("my");
    let to = server.url(&bucket, "nightly");
    let locks = tempfile::tempdir().unwrap();
    let keys = |command: &mut std::process::Command| {
        command
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY);
    };
    let mut command = cairn(locks.path());
    keys(&mut command);
    let (code, out, err) = backup(&mut command, &source, &to);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut command = cairn(locks.path());
    keys(&mut command);
    let (code, out, err) = restore(&mut command, &to, &source, &target);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_same(&source, &target).await;

    // An incremental through S3 too, replayed on its full copy.
    connect(&url_of(&source))
        .await
        .query_drop(
            "UPDATE customers SET name = CONCAT(name, ' (s3)') WHERE id < 100; DELETE FROM log_lines WHERE level = 'info';",
        )
        .await
        .unwrap();
    let mut command = cairn(locks.path());
    keys(&mut command);
    let (code, out, err) = backup_with(&mut command, &source, &to, &["--type", "incremental"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let replayed = format!("{source}_replayed");
    let mut command = cairn(locks.path());
    keys(&mut command);
    let (code, out, err) = restore(&mut command, &to, &source, &replayed);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("replayed 1 incremental:"), "{out}");
    assert_same(&source, &replayed).await;
}

#[tokio::test]
async fn without_local_infile_the_restore_falls_back_to_insert() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fixture_database("my_noinfile").await;
    let target = format!("{source}_restored");
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, _, err) = backup(&mut cairn(locks.path()), &source, &to);
    assert_eq!(code, 0, "{err}");
    let mut admin = connect(&mysql_url()).await;
    admin.query_drop("SET GLOBAL local_infile = 0").await.unwrap();
    let (code, out, err) = restore(&mut cairn(locks.path()), &to, &source, &target);
    admin.query_drop("SET GLOBAL local_infile = 1").await.unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("batched INSERT"), "the fallback must be announced: {err}");
    assert_same(&source, &target).await;
}

#[tokio::test]
async fn a_copy_taken_under_a_transfer_workload_is_consistent() {
    copy_under_transfer_workload(false).await;
}

#[tokio::test]
async fn a_lock_free_copy_taken_under_a_transfer_workload_is_consistent() {
    copy_under_transfer_workload(true).await;
}

async fn copy_under_transfer_workload(lock_free: bool) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = accounts_database("my_transfers").await;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = transfer_workload(&source, 4, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    // Lock-free mode is a setting of a configured source.
    let config = dir.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.fx]\nurl = \"{}\"\nconsistency = \"{}\"\n",
            url_of(&source),
            if lock_free { "lock-free" } else { "lock" }
        ),
    )
    .unwrap();
    let mut counter = connect(&url_of(&source)).await;
    let count = "SELECT CAST(SUM(transfers) AS UNSIGNED) FROM accounts";
    let before: u64 = counter.query_first(count).await.unwrap().unwrap_or(0);
    let (code, out, err) = tokio::task::spawn_blocking({
        let (to, locks, config) = (to.clone(), locks.path().to_path_buf(), config.clone());
        move || {
            run(cairn(&locks)
                .env("CAIRN_CHUNK_SIZE_MIB", "1")
                .arg("--config")
                .arg(&config)
                .args(["backup", "--jobs", "3", "--source", "fx", "--to", &to]))
        }
    })
    .await
    .unwrap();
    // The writers run until the copy has ended, however long it takes on a loaded machine; they
    // must have committed transfers while it ran.
    let during = counter
        .query_first::<u64, _>(count)
        .await
        .unwrap()
        .unwrap_or(0)
        .saturating_sub(before);
    stop.store(true, Ordering::Relaxed);
    let mut transfers = 0;
    for worker in workers {
        transfers += worker.await.unwrap();
    }
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        during > 0,
        "no transfer committed while the copy ran; the test proves nothing"
    );
    let (_, json, _) = run(cairn(locks.path()).args(["status", "--json", "--source", "fx", "--from", &to]));
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stall = status[0]["copies"][0]["details"]["write_stall_ms"].as_f64().unwrap();
    eprintln!("writes were blocked for {stall} ms during the copy ({transfers} transfers ran)");
    // Measured from the first request for the global read lock; a retried request adds about
    // a second (FTWRL_ATTEMPT).
    assert!(stall < 5_000.0, "write stall of {stall} ms");
    if lock_free {
        assert_eq!(stall, 0.0, "a lock-free copy took the global read lock");
        assert_eq!(status[0]["copies"][0]["details"]["jobs"], 1);
    }

    let target = format!("{source}_restored");
    let (code, out, err) = restore(&mut cairn(locks.path()), &to, &source, &target);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut restored = connect(&url_of(&target)).await;
    let (total, counted, history, moved): (i64, i64, i64, i64) = restored
        .query_first(
            "SELECT (SELECT CAST(SUM(balance) AS SIGNED) FROM accounts), (SELECT CAST(SUM(transfers) AS SIGNED) FROM accounts),
                    (SELECT COUNT(*) FROM history), (SELECT CAST(COALESCE(SUM(amount), 0) AS SIGNED) FROM history)",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        total,
        200 * 1000,
        "money was created or lost: the copy is not one snapshot"
    );
    assert!(history > 0, "no transfer was in the copy");
    assert_eq!(
        counted, history,
        "accounts and history are from different moments (moved {moved})"
    );
}

#[tokio::test]
async fn backup_failures_are_clear_and_leave_the_status_untouched() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let status_file = dir.path().join("backups/fx/status.json");
    let source = fresh_database("my_fail").await;
    connect(&url_of(&source))
        .await
        .query_drop("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    // Port 1: nothing listens there, and no other test can start listening on it.
    let unreachable = "mysql://root:pw@127.0.0.1:1/x".to_string();
    let (code, _, err) =
        run(cairn(locks.path()).args(["backup", "--name", "fx", "--source", &unreachable, "--to", &to]));
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("cannot connect") && !err.contains(":pw@"), "{err}");

    let wrong = url_of(&source).replace("cairn-test-pw", "not-the-password");
    let (code, _, err) = run(cairn(locks.path()).args(["backup", "--name", "fx", "--source", &wrong, "--to", &to]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("refused the login") && !err.contains("not-the-password"),
        "{err}"
    );

    // A user who may read but not lock (no RELOAD).
    let mut admin = connect(&mysql_url()).await;
    admin
        .query_drop(
            "CREATE USER IF NOT EXISTS 'cairn_ro'@'127.0.0.1' IDENTIFIED BY 'ro-pw';
             GRANT SELECT, SHOW VIEW, EVENT, TRIGGER, PROCESS ON *.* TO 'cairn_ro'@'127.0.0.1'",
        )
        .await
        .unwrap();
    let limited = url_of(&source).replace("cairn:cairn-test-pw", "cairn_ro:ro-pw");
    let (code, _, err) = run(cairn(locks.path()).args(["backup", "--name", "fx", "--source", &limited, "--to", &to]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("RELOAD") && err.contains("denied"), "{err}");

    // A long-running query: the global read lock would stall every writer behind it.
    let mut sleeper = connect(&url_of(&source)).await;
    let sleeper_id = sleeper.id();
    let sleeping = tokio::spawn(async move {
        let _ = sleeper.query_drop("SELECT SLEEP(30) FROM t").await;
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, _, err) = run(cairn(locks.path()).env("CAIRN_LOCK_WAIT_SECONDS", "1").args([
        "backup",
        "--name",
        "fx",
        "--source",
        &url_of(&source),
        "--to",
        &to,
    ]));
    admin.query_drop(format!("KILL QUERY {sleeper_id}")).await.unwrap();
    let _ = sleeping.await;
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("long-running") && err.contains("SLEEP(30)"), "{err}");

    assert!(!status_file.exists(), "a failed backup wrote a status");
}

#[tokio::test]
async fn restore_refuses_damage_and_non_empty_targets() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fresh_database("my_damage").await;
    connect(&url_of(&source))
        .await
        .query_drop(
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)); INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_5000",
        )
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, _, err) = backup(&mut cairn(locks.path()), &source, &to);
    assert_eq!(code, 0, "{err}");

    let target = format!("{source}_restored");
    let (code, _, err) = restore(&mut cairn(locks.path()), &to, &source, &target);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = restore(&mut cairn(locks.path()), &to, &source, &target);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not empty") && err.contains("--clean"), "{err}");
    let (code, _, err) = run(cairn(locks.path()).args([
        "restore",
        "--clean",
        "--source",
        "fx",
        "--from",
        &to,
        "--target",
        &mysql_url(),
        "--rename-db",
        &format!("{source}={target}"),
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(contents_of(&source).await, contents_of(&target).await);

    // This copy has no checksums: asking to compare them is refused, not skipped.
    let nock = format!("{source}_nock");
    let (code, _, err) = restore_with(&mut cairn(locks.path()), &to, &source, &nock, &["--checksum"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("without table checksums"), "{err}");

    // A copy whose recorded checksum does not match what is restored fails the comparison.
    let checked = tempfile::tempdir().unwrap();
    let checked_to = checked.path().join("backups").display().to_string();
    let (code, _, err) = backup_with(&mut cairn(locks.path()), &source, &checked_to, &["--checksum"]);
    assert_eq!(code, 0, "{err}");
    let manifest_path = walk(&checked.path().join("backups"))
        .into_iter()
        .find(|p| p.ends_with("manifest.json"))
        .unwrap();
    let opened = cairn::repo::envelope::open("cairn-manifest", &std::fs::read(&manifest_path).unwrap()).unwrap();
    let mut members = opened.members;
    let recorded = &mut members["copy"]["details"]["checksums"][&source]["t"];
    *recorded = serde_json::json!(recorded.as_u64().unwrap() ^ 1);
    std::fs::write(
        &manifest_path,
        cairn::repo::envelope::seal("cairn-manifest", opened.version, members),
    )
    .unwrap();
    let (code, _, err) =
        run(cairn(locks.path()).args(["status", "--rebuild", "--source", "fx", "--from", &checked_to]));
    assert_eq!(code, 0, "{err}");
    let altered = format!("{source}_ck");
    let (code, _, err) = restore_with(
        &mut cairn(locks.path()),
        &checked_to,
        &source,
        &altered,
        &["--checksum"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("CHECKSUM TABLE differs") && err.contains("`t`"), "{err}");
    let data_file = walk(&dir.path().join("backups"))
        .into_iter()
        .find(|p| p.ends_with("00000.tsv.zst"))
        .expect("a data file");
    let mut bytes = std::fs::read(&data_file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&data_file, bytes).unwrap();
    let damaged = format!("{source}_damaged");
    let (code, _, err) = restore(&mut cairn(locks.path()), &to, &source, &damaged);
    assert_eq!(code, 1, "{err}");
    let name = data_file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains(&name) && err.contains("damaged") && err.contains("incomplete"),
        "{err}"
    );
    let (rows,): (i64,) = connect(&url_of(&damaged))
        .await
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows, 0, "rows of a damaged file were committed");
}

/// `backup` with extra flags of the subcommand.
pub fn backup_with(
    command: &mut std::process::Command,
    database: &str,
    to: &str,
    extra: &[&str],
) -> (i32, String, String) {
    run(command
        .args([
            "backup",
            "--jobs",
            "3",
            "--name",
            "fx",
            "--source",
            &url_of(database),
            "--to",
            to,
        ])
        .args(extra))
}

/// `restore` with extra flags of the subcommand.
pub fn restore_with(
    command: &mut std::process::Command,
    from: &str,
    source: &str,
    target: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let rename = format!("{source}={target}");
    let target_url = mysql_url();
    run(command
        .args([
            "restore",
            "--jobs",
            "3",
            "--source",
            "fx",
            "--from",
            from,
            "--target",
            &target_url,
            "--rename-db",
            &rename,
        ])
        .args(extra))
}

#[tokio::test]
async fn tls_is_used_and_verified_as_the_url_asks() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ca = test_ca();
    connect(&mysql_url())
        .await
        .query_drop(
            "CREATE USER IF NOT EXISTS 'cairn_tls'@'127.0.0.1' IDENTIFIED BY 'tls-pw' REQUIRE SSL;
             GRANT ALL PRIVILEGES ON *.* TO 'cairn_tls'@'127.0.0.1'",
        )
        .await
        .unwrap();
    let source = fresh_database("my_tls").await;
    connect(&url_of(&source))
        .await
        .query_drop(
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)); INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_1000",
        )
        .await
        .unwrap();
    let as_tls_user = |database: &str, query: &str| {
        format!(
            "{}?{query}",
            url_of(database).replace("cairn:cairn-test-pw", "cairn_tls:tls-pw")
        )
    };
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let backup_from =
        |url: &str| run(cairn(locks.path()).args(["backup", "--name", "fx", "--source", url, "--to", &to]));

    // The user is REQUIRE SSL: without TLS the login is refused.
    let (code, _, err) = backup_from(&as_tls_user(&source, "ssl-mode=DISABLED"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refused the login"), "{err}");

    let (code, _, err) = backup_from(&as_tls_user(&source, "ssl-mode=VERIFY_IDENTITY"));
    assert_eq!(code, 2, "the built-in roots do not know the test CA: {err}");
    assert!(err.contains("TLS"), "{err}");

    let verified = format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}");
    let (code, out, err) = backup_from(&as_tls_user(&source, &verified));
    assert_eq!(code, 0, "{out}\n{err}");
    let target = format!("{source}_restored");
    let (code, out, err) = run(cairn(locks.path()).args([
        "restore",
        "--source",
        "fx",
        "--from",
        &to,
        "--target",
        &as_tls_user("", &verified).replacen("/?", "?", 1),
        "--rename-db",
        &format!("{source}={target}"),
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(contents_of(&source).await, contents_of(&target).await);

    let (code, _, err) = backup_from(&as_tls_user(&source, "ssl-mode=REQUIRED"));
    assert_eq!(code, 0, "REQUIRED encrypts without checking the certificate: {err}");
}
