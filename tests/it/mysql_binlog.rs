//! MySQL/MariaDB incremental copies and their replay against the private MariaDB: chains taken
//! under a workload across binary log rotations, points in time, damaged and missing logs, an
//! interrupted replay, and every column type changed by UPDATE and DELETE.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::mysql::{
    ONE_AT_A_TIME, accounts_database, assert_same, backup_with, connect, contents_of, fixture_database, fresh_database,
    restore_with, transfer_workload, url_of,
};
use crate::support::{cairn, mysql_url, run};

/// A lock folder, a folder for the destination, and the destination's path.
fn workspace() -> (tempfile::TempDir, tempfile::TempDir, String) {
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    (locks, dir, to)
}

/// An incremental of source `fx` configured with `settings` (TOML lines) beside its URL.
fn incremental_with_settings(locks: &Path, source: &str, to: &str, settings: &str) -> (i32, String, String) {
    let config = locks.join("cairn.toml");
    std::fs::write(
        &config,
        format!("[sources.fx]\nurl = \"{}\"\n{settings}", url_of(source)),
    )
    .unwrap();
    run(cairn(locks).arg("--config").arg(&config).args([
        "backup",
        "--type",
        "incremental",
        "--source",
        "fx",
        "--to",
        to,
    ]))
}

/// A fresh database holding what `create` makes, and its full copy (source `fx`) in a new
/// workspace: the database, a session on it, the lock folder, the destination's folder and path.
async fn with_full_copy(
    hint: &str,
    create: &str,
) -> (String, mysql_async::Conn, tempfile::TempDir, tempfile::TempDir, String) {
    let source = fresh_database(hint).await;
    let mut conn = connect(&url_of(&source)).await;
    conn.query_drop(create).await.unwrap();
    let (locks, dir, to) = workspace();
    backup_ok(locks.path(), &source, &to, "full").await;
    (source, conn, locks, dir, to)
}

async fn server(sql: &str) {
    connect(&mysql_url()).await.query_drop(sql).await.unwrap();
}

fn status_json(locks: &Path, to: &str) -> serde_json::Value {
    let (code, json, err) = run(cairn(locks).args(["status", "--json", "--source", "fx", "--from", to]));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&json).unwrap()[0]["copies"].clone()
}

/// Backs up `database` as source `fx`, expecting success.
async fn backup_ok(locks: &Path, database: &str, to: &str, kind: &str) {
    let (locks, database, to, kind) = (
        locks.to_path_buf(),
        database.to_string(),
        to.to_string(),
        kind.to_string(),
    );
    let (code, out, err) =
        tokio::task::spawn_blocking(move || backup_with(&mut cairn(&locks), &database, &to, &["--type", &kind]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
}

#[tokio::test]
async fn incrementals_under_a_workload_and_rotations_replay_to_the_source() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = accounts_database("my_chain").await;
    let (locks, dir, to) = workspace();
    let stop = Arc::new(AtomicBool::new(false));
    let workers = transfer_workload(&source, 3, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    backup_ok(locks.path(), &source, &to, "full").await;
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        server("FLUSH BINARY LOGS").await;
        if round == 1 {
            // A rotation while the incremental reads the log.
            let rotating = tokio::spawn(async {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    server("FLUSH BINARY LOGS").await;
                }
            });
            backup_ok(locks.path(), &source, &to, "incremental").await;
            rotating.await.unwrap();
        } else {
            backup_ok(locks.path(), &source, &to, "incremental").await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut transfers = 0;
    for worker in workers {
        transfers += worker.await.unwrap();
    }
    assert!(transfers > 100, "only {transfers} transfers ran");
    backup_ok(locks.path(), &source, &to, "incremental").await;

    let copies = status_json(locks.path(), &to);
    let copies = copies.as_array().unwrap();
    assert_eq!(copies.len(), 5);
    for pair in copies.windows(2) {
        assert_eq!(pair[1]["parent"], pair[0]["id"]);
        assert_eq!(
            pair[1]["log_range"]["start"], pair[0]["log_range"]["end"],
            "an incremental must start exactly where its parent ended"
        );
    }
    let files_touched: u64 = copies[1..]
        .iter()
        .map(|c| c["details"]["binlog_files"].as_array().unwrap().len() as u64)
        .sum();
    assert!(files_touched >= 4, "the chain should span several rotated binlog files");

    // Stored logs are real binary logs: mysqlbinlog lists the same transactions.
    if let Ok(status) = std::process::Command::new("mysqlbinlog").arg("--version").output()
        && status.status.success()
    {
        let mut gtids = 0;
        let mut recorded = 0;
        for copy in &copies[1..] {
            recorded += copy["details"]["transactions"].as_u64().unwrap();
        }
        for file in crate::support::walk(dir.path()) {
            if !file.to_string_lossy().contains("/binlog/") {
                continue;
            }
            let plain = zstd::decode_all(std::fs::File::open(&file).unwrap()).unwrap();
            let path = dir.path().join("plain.bin");
            std::fs::write(&path, plain).unwrap();
            let out = std::process::Command::new("mysqlbinlog")
                .arg("--no-defaults")
                .arg(&path)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            gtids += text.lines().filter(|l| l.contains("\tGTID ")).count() as u64;
        }
        assert_eq!(
            gtids, recorded,
            "mysqlbinlog sees other transactions than the copies recorded"
        );
    }

    let target = format!("{source}_replayed");
    let (code, out, err) = restore_with(
        &mut cairn(locks.path()),
        &to,
        &source,
        &target,
        &["--position-file", "replayed.json"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("replayed 3 incrementals") || out.contains("replayed 4 incrementals"),
        "{out}"
    );
    let last = &copies[4]["log_range"]["end"];
    assert!(
        out.contains(&format!(
            "binary log position: {}:{}",
            last["file"].as_str().unwrap(),
            last["position"]
        )),
        "{out}"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(locks.path().join("replayed.json")).unwrap()).unwrap();
    assert_eq!(&written["position"], last);
    let dropped: Vec<_> = std::fs::read_dir(locks.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("cairn-restore"))
        .collect();
    assert!(dropped.is_empty(), "a file the user did not ask for: {dropped:?}");
    let (a, b) = (contents_of(&source).await, contents_of(&target).await);
    assert_eq!(a, b, "the replayed database differs from the source");
}

#[tokio::test]
async fn a_restore_stops_at_a_time_a_gtid_or_a_position() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (source, mut conn, locks, _dir, to) = with_full_copy(
        "my_pitr",
        "CREATE TABLE marks (id INT AUTO_INCREMENT PRIMARY KEY, label VARCHAR(20))",
    )
    .await;
    conn.query_drop("INSERT INTO marks (label) VALUES ('early')")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO marks (label) VALUES ('before')")
        .await
        .unwrap();
    let gtid: String = conn.query_first("SELECT @@gtid_binlog_pos").await.unwrap().unwrap();
    let master: mysql_async::Row = conn.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    let (file, position): (String, u64) = (master.get(0).unwrap(), master.get(1).unwrap());
    // Binary log times have one-second resolution: the point lies strictly between seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let point = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    conn.query_drop("INSERT INTO marks (label) VALUES ('after')")
        .await
        .unwrap();
    server("FLUSH BINARY LOGS").await;
    conn.query_drop("INSERT INTO marks (label) VALUES ('later')")
        .await
        .unwrap();
    backup_ok(locks.path(), &source, &to, "incremental").await;

    let position_arg = format!("{file}:{position}");
    let time_arg = point.to_rfc3339();
    for (name, flag, value) in [
        ("gtid", "--until-gtid", gtid.as_str()),
        ("time", "--until", time_arg.as_str()),
        ("pos", "--until-position", position_arg.as_str()),
    ] {
        let target = format!("{source}_{name}");
        let (code, out, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, &[flag, value]);
        assert_eq!(code, 0, "{flag} {value}: {out}\n{err}");
        let labels: Vec<String> = connect(&url_of(&target))
            .await
            .query("SELECT label FROM marks ORDER BY id")
            .await
            .unwrap();
        assert_eq!(labels, ["early", "before"], "{flag} {value}");
        assert!(out.contains(&format!("GTID {gtid}")), "{flag}: {out}");
        assert!(
            out.contains(&format!("binary log position: {file}:{position}")),
            "{flag}: {out}"
        );
    }

    // A GTID the chain does not hold fails before anything is applied; a dry run names the stop.
    let (code, _, err) = restore_with(
        &mut cairn(locks.path()),
        &to,
        &source,
        &format!("{source}_none"),
        &["--until-gtid", "0-1-999999999"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no transaction of the chain has this GTID"), "{err}");
    let (code, out, err) = restore_with(
        &mut cairn(locks.path()),
        &to,
        &source,
        &format!("{source}_dry"),
        &["--until-gtid", &gtid, "--dry-run"],
    );
    assert_eq!(code, 0, "{err}");
    // The dry run reads the files and names the exact transaction, position and GTID state.
    assert!(
        out.contains(&format!(
            "stop: transaction {gtid} is the transaction ending at {file}:{position}"
        )) && out.contains(&format!("GTID position {gtid}"))
            && out.contains("binlog/"),
        "{out}"
    );
    let (code, out, err) = restore_with(
        &mut cairn(locks.path()),
        &to,
        &source,
        &format!("{source}_dry"),
        &["--dry-run"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("stop: at the end of the chain, after transaction 4 of 4"),
        "{out}"
    );
    let databases: Vec<String> = connect(&mysql_url())
        .await
        .exec(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (format!("{source}_dry"),),
        )
        .await
        .unwrap();
    assert!(databases.is_empty(), "a dry run created {databases:?}");
}

#[tokio::test]
async fn a_purged_parent_log_fails_clearly_or_takes_a_full_copy() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (source, mut conn, locks, _dir, to) = with_full_copy("my_purged", "CREATE TABLE t (id INT PRIMARY KEY)").await;
    let parent_file = status_json(locks.path(), &to)[0]["log_range"]["end"]["file"]
        .as_str()
        .unwrap()
        .to_string();
    conn.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    // `cairn status` of the configured source shows how far back the binary logs reach.
    let config = locks.path().join("status.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.fx]\nurl = \"{}\"\n[destinations.here]\nurl = {to:?}\n",
            url_of(&source)
        ),
    )
    .unwrap();
    let status = || {
        run(cairn(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["status", "--source", "fx"]))
    };
    let (code, out, err) = status();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("binary logs: kept back to") && out.contains(&format!("from {parent_file}:")),
        "{out}"
    );
    // The server keeps a file it still needs for crash recovery; purge until the parent's is gone.
    let mut gone = false;
    for _ in 0..50 {
        server("FLUSH BINARY LOGS").await;
        let current: mysql_async::Row = conn.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
        let current: String = current.get(0).unwrap();
        server(&format!("PURGE BINARY LOGS TO '{current}'")).await;
        let logs: Vec<String> = conn
            .query_map("SHOW BINARY LOGS", |row: mysql_async::Row| {
                row.get::<String, _>(0).unwrap()
            })
            .await
            .unwrap();
        if !logs.contains(&parent_file) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the server kept {parent_file}");
    // Seen before the next run fails on it.
    let (code, out, err) = status();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("WARNING") && out.contains(&parent_file) && out.contains("log gap"),
        "{out}"
    );
    // A replica seeded from this copy could not follow: refused before the target is touched.
    {
        let target = crate::replica::replica_server();
        let (code, out, err) = crate::replica::seed_run(locks.path(), &config, &to, &target);
        assert_eq!(code, 1, "{out}\n{err}");
        assert!(err.contains(&parent_file) && err.contains("could not follow"), "{err}");
        let touched =
            mysql_async::Conn::new(mysql_async::Opts::from_url(&crate::replica::on_replica(&source)).unwrap())
                .await
                .is_ok();
        assert!(!touched, "the replica got database {source}");
    }

    let (code, out, err) = backup_with(&mut cairn(locks.path()), &source, &to, &["--type", "incremental"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(&parent_file) && err.contains("no longer on the server") && err.contains("on-log-gap"),
        "{err}"
    );
    assert_eq!(status_json(locks.path(), &to).as_array().unwrap().len(), 1);

    let (code, out, err) = incremental_with_settings(locks.path(), &source, &to, "on-log-gap = \"full\"\n");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("taking full copy"), "{err}");
    let copies = status_json(locks.path(), &to);
    assert_eq!(copies.as_array().unwrap().len(), 2);
    assert_eq!(copies[1]["kind"], "full");
}

#[tokio::test]
async fn a_damaged_incremental_is_refused_before_anything_is_applied() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (source, mut conn, locks, dir, to) =
        with_full_copy("my_damaged", "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)").await;
    conn.query_drop("INSERT INTO t VALUES (1, 'one')").await.unwrap();
    server("FLUSH BINARY LOGS").await;
    conn.query_drop("INSERT INTO t VALUES (2, 'two')").await.unwrap();
    backup_ok(locks.path(), &source, &to, "incremental").await;
    // Damage the second log file: the first must not be applied either.
    let mut logs: Vec<_> = crate::support::walk(dir.path())
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("/binlog/"))
        .collect();
    logs.sort();
    assert_eq!(logs.len(), 2, "{logs:?}");
    let mut bytes = std::fs::read(&logs[1]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&logs[1], bytes).unwrap();

    let target = format!("{source}_damaged");
    let (code, out, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, &[]);
    assert_ne!(code, 0, "{out}\n{err}");
    let name = logs[1].file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name), "the error names the damaged file: {err}");
    // Every log file is checked before the target is touched: not even the full copy is loaded.
    assert!(
        !database_exists(&target).await,
        "the target was touched though the chain is damaged"
    );
}

/// Transactions the replay of source `fx` into `target` recorded (0 before it started).
async fn applied_by(probe: &mut mysql_async::Conn, target: &str) -> u64 {
    probe
        .exec_first(
            "SELECT transactions FROM cairn_replay.progress WHERE source = 'fx' AND target_databases = ?",
            (target,),
        )
        .await
        .unwrap_or(None)
        .unwrap_or(0)
}

#[tokio::test]
async fn an_interrupted_replay_resumes_to_the_same_result() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = accounts_database("my_resume").await;
    let (locks, _dir, to) = workspace();
    backup_ok(locks.path(), &source, &to, "full").await;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = transfer_workload(&source, 3, stop.clone());
    // Enough transactions that the replay is still busy when the test kills it, counted rather
    // than timed: a loaded machine may run few in a given time.
    let mut counter = connect(&url_of(&source)).await;
    for _ in 0..600 {
        let done: u64 = counter
            .query_first("SELECT CAST(SUM(transfers) AS UNSIGNED) FROM accounts")
            .await
            .unwrap()
            .unwrap_or(0);
        if done >= 1500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut transfers = 0;
    for worker in workers {
        transfers += worker.await.unwrap();
    }
    assert!(
        transfers >= 1500,
        "only {transfers} transfers in a minute: too few to interrupt"
    );
    backup_ok(locks.path(), &source, &to, "incremental").await;

    let whole = format!("{source}_whole");
    let (code, out, err) = restore_with(&mut cairn(locks.path()), &to, &source, &whole, &[]);
    assert_eq!(code, 0, "{out}\n{err}");

    let target = format!("{source}_resumed");
    let rename = format!("{source}={target}");
    let mut child = cairn(locks.path())
        .args([
            "restore",
            "--source",
            "fx",
            "--from",
            &to,
            "--target",
            &mysql_url(),
            "--rename-db",
            &rename,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut probe = connect(&mysql_url()).await;
    let mut applied = 0u64;
    for _ in 0..600 {
        applied = applied_by(&mut probe, &target).await;
        if applied > 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    let ended = child.wait().unwrap();
    eprintln!("the replay was killed after {applied} of {transfers} transactions ({ended})");
    // Every replayed transfer inserts one history row: what the target committed and the
    // position it recorded must agree at any moment, or a resume would repeat or skip one.
    let rows: u64 = probe
        .query_first(format!("SELECT COUNT(*) FROM {target}.history"))
        .await
        .unwrap()
        .unwrap();
    let recorded: u64 = applied_by(&mut probe, &target).await;
    assert_eq!(
        rows, recorded,
        "committed rows and the recorded position disagree after the kill"
    );
    assert!(
        applied > 20 && applied < transfers,
        "killed after {applied} of {transfers} transactions"
    );
    // A replay cannot go back: resuming towards a stop point before what the target already
    // holds (here the full copy's own position, before every transaction) is refused, and the
    // target keeps what it had.
    let (code, out, err) = run(cairn(locks.path()).args(["status", "--json", "--source", "fx", "--from", &to]));
    assert_eq!(code, 0, "{err}");
    let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
    let full_end = &reports[0]["copies"][0]["log_range"]["end"];
    let before_all = format!("{}:{}", full_end["file"].as_str().unwrap(), full_end["position"]);
    let (code, out, err) = restore_with(
        &mut cairn(locks.path()),
        &to,
        &source,
        &target,
        &["--resume", "--until-position", &before_all],
    );
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("past the stop point"), "{err}");
    let still: u64 = applied_by(&mut probe, &target).await;
    assert_eq!(still, recorded, "a refused resume changed the target");
    let (code, out, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, &["--resume"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("replayed 1 incremental:"), "{out}");
    let (a, b) = (contents_of(&whole).await, contents_of(&target).await);
    assert_eq!(a, b, "a resumed replay differs from an uninterrupted one");
    assert_eq!(a, contents_of(&source).await);
}

#[tokio::test]
async fn updates_and_deletes_of_every_type_replay_identically() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fixture_database("my_types_replay").await;
    let (locks, _dir, to) = workspace();
    backup_ok(locks.path(), &source, &to, "full").await;
    connect(&url_of(&source))
        .await
        .query_drop(
            "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO', time_zone = '+00:00';
             UPDATE every_type SET t_tinyint = 5, t_tinyint_u = 254, t_bigint_u = 18446744073709551614,
               t_int_u = 4294967294, t_mediumint_u = 16777214, t_smallint_u = 65534,
               t_decimal = -t_decimal, t_float = -t_float, t_double = t_double / 3, t_bit64 = b'1010',
               t_date = '1000-01-01', t_datetime = '2001-02-03 04:05:06.789012', t_timestamp = '2020-02-29 23:59:59.5',
               t_time = '-12:34:56.000001', t_year = 1901, t_char = 'ch', t_varchar = CONCAT(t_varchar, ' é'),
               t_text = REPEAT('t', 70000), t_binary = x'0001020300', t_varbinary = x'ff00fe', t_blob = x'00',
               t_enum = 'b', t_set = 'y,z', t_json = '{\"k\": [true]}', t_geometry = ST_GeomFromText('LINESTRING(0 0,1 1)'),
               t_point = POINT(-1, 1), t_inet6 = '2001:db8::1', t_uuid = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', t_int = t_int - 1
               WHERE id IN (1, 4);
             UPDATE every_type SET t_timestamp = NULL, t_year = 0, t_set = '', t_enum = NULL WHERE id = 2;
             DELETE FROM every_type WHERE id = 3;
             INSERT INTO every_type (id, t_tinyint, t_timestamp, t_year, t_bit1) VALUES (0, 1, '1970-01-01 00:00:01', 0, b'0');
             UPDATE log_lines SET message = CONCAT(message, '!') WHERE at < '2026-01-01 00:00:10';
             DELETE FROM log_lines WHERE level = 'warn' AND at < '2026-01-01 00:01:00';
             UPDATE order_items SET qty = qty + 1, line = line + 10 WHERE order_id < 5;
             DELETE FROM order_items WHERE order_id BETWEEN 5 AND 7;
             UPDATE `odd ``name`` here` SET `select` = 'changed', `from` = '2000-01-01' WHERE `col with space` = 2;
             INSERT INTO orders (customer_id, placed_at, amount, note) VALUES (2, '2026-11-21 01:00:00', 2.50, 'replayed');
             DELETE FROM customers WHERE id = 3;
             ALTER TABLE customers ADD COLUMN tier TINYINT NOT NULL DEFAULT 1;
             UPDATE customers SET tier = 2 WHERE id < 10;",
        )
        .await
        .unwrap();
    backup_ok(locks.path(), &source, &to, "incremental").await;
    let target = format!("{source}_restored");
    let (code, out, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_same(&source, &target).await;
}

#[tokio::test]
async fn a_replica_server_id_in_use_is_refused() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fresh_database("my_replica_id").await;
    let (locks, _dir, to) = workspace();
    backup_ok(locks.path(), &source, &to, "full").await;
    // A replica registered with the id cairn is configured to use.
    let mut replica = connect(&mysql_url()).await;
    replica.query_drop("SET @mariadb_slave_capability = 4").await.unwrap();
    let master: mysql_async::Row = replica.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    let (file, position): (String, u64) = (master.get(0).unwrap(), master.get(1).unwrap());
    let stream = replica
        .get_binlog_stream(
            mysql_async::BinlogStreamRequest::new(4_000_000_123)
                .with_filename(file.as_bytes())
                .with_pos(position),
        )
        .await
        .unwrap();
    let (code, out, err) = incremental_with_settings(locks.path(), &source, &to, "replica-server-id = 4000000123\n");
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("replica-server-id 4000000123 is used by a replica"),
        "{err}"
    );
    drop(stream);
}

#[tokio::test]
async fn tables_left_out_by_filters_stay_out_of_the_replay() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fresh_database("my_filtered").await;
    let mut conn = connect(&url_of(&source)).await;
    conn.query_drop("CREATE TABLE kept (id INT PRIMARY KEY, v TEXT); CREATE TABLE tmp_scratch (id INT PRIMARY KEY);")
        .await
        .unwrap();
    let (locks, _dir, to) = workspace();
    let config = locks.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.fx]\nurl = \"{}\"\n[sources.fx.filters]\nexclude-tables = [\"*.tmp_*\"]\n",
            url_of(&source)
        ),
    )
    .unwrap();
    let backup = |kind: &str| {
        run(cairn(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["backup", "--type", kind, "--source", "fx", "--to", &to]))
    };
    let (code, out, err) = backup("full");
    assert_eq!(code, 0, "{out}\n{err}");
    conn.query_drop(
        "INSERT INTO kept VALUES (1, 'one'), (2, 'two'); INSERT INTO tmp_scratch VALUES (1);
         ALTER TABLE tmp_scratch ADD COLUMN c INT; UPDATE tmp_scratch SET c = 5;
         CREATE TABLE tmp_later (a INT); INSERT INTO tmp_later VALUES (1);
         ALTER TABLE kept ADD COLUMN w INT NOT NULL DEFAULT 7; DELETE FROM kept WHERE id = 2;",
    )
    .await
    .unwrap();
    let (code, out, err) = backup("incremental");
    assert_eq!(code, 0, "{out}\n{err}");
    let target = format!("{source}_filtered");
    let (code, out, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut restored = connect(&url_of(&target)).await;
    let tables: Vec<String> = restored.query("SHOW TABLES").await.unwrap();
    assert_eq!(tables, ["kept"]);
    let rows: Vec<(i32, String, i32)> = restored.query("SELECT id, v, w FROM kept").await.unwrap();
    assert_eq!(rows, [(1, "one".to_string(), 7)]);
}

/// Whether a database exists on the test server.
async fn database_exists(name: &str) -> bool {
    let found: Option<u8> = connect(&mysql_url())
        .await
        .exec_first(
            "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (name,),
        )
        .await
        .unwrap();
    found.is_some()
}

/// What a restore cannot do is refused before it loads anything, once and with one hint; a
/// point past the end of the chain restores to the end and says so.
#[tokio::test]
async fn a_restore_refuses_what_it_cannot_do_before_loading_anything() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (source, mut conn, locks, _dir, to) = with_full_copy(
        "my_refuse",
        "CREATE TABLE marks (id INT AUTO_INCREMENT PRIMARY KEY, label VARCHAR(20))",
    )
    .await;
    conn.query_drop("INSERT INTO marks (label) VALUES ('one'), ('two')")
        .await
        .unwrap();
    backup_ok(locks.path(), &source, &to, "incremental").await;

    // A copy without checksums cannot be compared.
    let target = format!("{source}_checksum");
    let (code, _, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, &["--checksum"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--checksum") && err.contains("without table checksums"),
        "{err}"
    );
    assert!(!database_exists(&target).await, "nothing was loaded");

    // Nothing to resume: said once, with one hint, touching nothing — dry run or not.
    let target = format!("{source}_resume");
    for extra in [&["--resume"][..], &["--resume", "--dry-run"][..]] {
        let (code, _, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, extra);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert_eq!(err.matches("nothing to resume").count(), 1, "{err}");
        assert!(err.contains("restore without --resume"), "{err}");
        assert!(
            !err.contains("already in the target") && !err.contains("run the same restore with --resume"),
            "{err}"
        );
        assert!(!database_exists(&target).await);
    }

    // A transaction the chain does not hold fails before the full copy is loaded.
    let target = format!("{source}_gtid");
    let (code, _, err) = restore_with(
        &mut cairn(locks.path()),
        &to,
        &source,
        &target,
        &["--until-gtid", "0-1-999999999"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(!database_exists(&target).await, "nothing was loaded");

    // A point past the chain: restored to the end, and said clearly (exit 0).
    let target = format!("{source}_future");
    let (code, out, err) = restore_with(
        &mut cairn(locks.path()),
        &to,
        &source,
        &target,
        &["--until", "2099-01-01T00:00:00Z", "--position-file", "future.json"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("is not covered") && err.contains("not covered"),
        "{out}\n{err}"
    );
    let labels: Vec<String> = connect(&url_of(&target))
        .await
        .query("SELECT label FROM marks ORDER BY id")
        .await
        .unwrap();
    assert_eq!(labels, ["one", "two"]);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(locks.path().join("future.json")).unwrap()).unwrap();
    assert_eq!(written["until_covered"], false, "{written}");
}

/// A source that names one database stores only that database's part of the server's binary
/// log: other databases' rows and statements stay out (size and confidentiality), their
/// positions and GTIDs are kept track of, and the replay still equals the source.
#[tokio::test]
async fn other_databases_stay_out_of_an_incremental() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (source, mut conn, locks, dir, to) = with_full_copy(
        "my_scoped",
        "CREATE TABLE own (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(60))",
    )
    .await;
    // Created after the full copy: its CREATE DATABASE is in the log too.
    let other = fresh_database("my_foreign").await;
    let marker = format!("FOREIGN-{}-SECRET", std::process::id());
    let mut foreign = connect(&url_of(&other)).await;
    foreign
        .query_drop(format!(
            "CREATE TABLE secrets (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(60)) COMMENT '{marker}'"
        ))
        .await
        .unwrap();
    for i in 0..300 {
        foreign
            .exec_drop("INSERT INTO secrets (v) VALUES (?)", (&marker,))
            .await
            .unwrap();
        if i % 50 == 0 {
            conn.query_drop("INSERT INTO own (v) VALUES ('mine')").await.unwrap();
        }
        if i == 150 {
            server("FLUSH BINARY LOGS").await;
        }
    }
    // One transaction touching both: ours is kept, theirs left out of it.
    conn.query_drop(format!(
        "BEGIN; INSERT INTO own (v) VALUES ('mixed'); INSERT INTO `{other}`.secrets (v) VALUES ('{marker}'); COMMIT"
    ))
    .await
    .unwrap();
    conn.query_drop("ALTER TABLE own ADD COLUMN w INT NOT NULL DEFAULT 3")
        .await
        .unwrap();
    // A last file with other databases' transactions only.
    server("FLUSH BINARY LOGS").await;
    for _ in 0..20 {
        foreign
            .exec_drop("INSERT INTO secrets (v) VALUES (?)", (&marker,))
            .await
            .unwrap();
    }
    let position: String = conn.query_first("SELECT @@gtid_binlog_pos").await.unwrap().unwrap();
    backup_ok(locks.path(), &source, &to, "incremental").await;

    let mut stored_files = 0;
    for file in crate::support::walk(dir.path()) {
        if !file.to_string_lossy().contains("/binlog/") {
            continue;
        }
        stored_files += 1;
        let plain = zstd::decode_all(std::fs::File::open(&file).unwrap()).unwrap();
        assert!(
            !plain.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{} holds another database's data",
            file.display()
        );
    }
    assert!(stored_files >= 3, "the incremental spans the rotations");
    let copies = status_json(locks.path(), &to);
    let incremental = &copies.as_array().unwrap()[1]["details"];
    assert_eq!(incremental["databases"], serde_json::json!([source]), "{incremental}");
    assert_eq!(
        incremental["transactions"], 8,
        "6 inserts, the mixed one, the ALTER: {incremental}"
    );
    assert!(
        incremental["skipped_transactions"].as_u64().unwrap() >= 322,
        "CREATE DATABASE, CREATE TABLE and 320 inserts of the other database: {incremental}"
    );
    assert_eq!(
        copies.as_array().unwrap()[1]["log_range"]["end"]["gtid"],
        position.as_str(),
        "the copy ends at the server's GTID position, other databases' transactions included"
    );

    // The replay checks the stored events and recorded skips cover the log, and equals the source.
    let target = format!("{source}_scoped");
    let (code, out, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, &["--dry-run"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("GTID {position}")), "{out}");
    assert_eq!(contents_of(&source).await, contents_of(&target).await);
}

/// Runs of several run types: each incremental continues from the newest copy that is a full or
/// of its own or a rarer run type, so a daily incremental never depends on hourly ones (which
/// retention keeps for a shorter time), and its chain restores the source.
#[tokio::test]
async fn run_types_choose_the_parent_the_policy_says() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fresh_database("my_runtypes").await;
    let mut conn = connect(&url_of(&source)).await;
    conn.query_drop("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, run VARCHAR(10))")
        .await
        .unwrap();
    let (locks, _dir, to) = workspace();
    let config = locks.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "full-backup = \"weekly\"\n[sources.fx]\nurl = \"{}\"\n",
            url_of(&source)
        ),
    )
    .unwrap();
    let mut ids = Vec::new();
    for run_type in ["weekly", "hourly", "hourly", "daily", "hourly"] {
        conn.exec_drop("INSERT INTO t (run) VALUES (?)", (run_type,))
            .await
            .unwrap();
        let (code, out, err) = run(cairn(locks.path()).arg("--config").arg(&config).args([
            "backup",
            "--source",
            "fx",
            "--to",
            &to,
            "--run-type",
            run_type,
        ]));
        assert_eq!(code, 0, "{run_type}: {out}\n{err}");
        let copies = status_json(locks.path(), &to);
        ids.push(
            copies.as_array().unwrap().last().unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let copies = status_json(locks.path(), &to);
    let parent = |i: usize| copies[i]["parent"].as_str().map(str::to_string);
    assert_eq!(copies[0]["kind"], "full");
    assert_eq!(
        parent(1),
        Some(ids[0].clone()),
        "the first hourly continues from the full"
    );
    assert_eq!(
        parent(2),
        Some(ids[1].clone()),
        "an hourly continues from the hourly before it"
    );
    assert_eq!(
        parent(3),
        Some(ids[0].clone()),
        "a daily incremental continues from the full, never from hourly ones"
    );
    assert_eq!(
        parent(4),
        Some(ids[3].clone()),
        "an hourly continues from the newer daily"
    );
    // The daily's chain (full, daily) holds everything up to it.
    let target = format!("{source}_daily");
    let (code, out, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, &["--copy", &ids[3]]);
    assert_eq!(code, 0, "{out}\n{err}");
    let runs: Vec<String> = connect(&url_of(&target))
        .await
        .query("SELECT run FROM t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(runs, ["weekly", "hourly", "hourly", "daily"]);
}

/// An incremental of source `fx` read from `url` (off the async runtime: the binary blocks).
async fn incremental_from(locks: &Path, url: &str, to: &str) -> (i32, String, String) {
    let (locks, url, to) = (locks.to_path_buf(), url.to_string(), to.to_string());
    tokio::task::spawn_blocking(move || {
        run(cairn(&locks).args([
            "backup",
            "--type",
            "incremental",
            "--name",
            "fx",
            "--source",
            &url,
            "--to",
            &to,
        ]))
    })
    .await
    .unwrap()
}

/// The replication stream damaged between the server and cairn: a flipped byte is caught by the
/// event's CRC32, a missing event by the position continuity check; either way the run fails
/// and records nothing. The same proxy passing everything gives a good incremental.
#[tokio::test]
async fn a_damaged_or_incomplete_replication_stream_records_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (source, mut conn, locks, _dir, to) = with_full_copy(
        "my_stream",
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40))",
    )
    .await;
    for i in 0..5 {
        conn.exec_drop("INSERT INTO t (v) VALUES (?)", (format!("row {i}"),))
            .await
            .unwrap();
    }
    let server = url_of(&source);
    let address = server.split('@').nth(1).unwrap().split('/').next().unwrap().to_string();
    let through = |port: u16| server.replacen(&address, &format!("127.0.0.1:{port}"), 1);
    for (fault, says) in [
        (crate::proxy::Fault::FlipByte { nth: 2 }, "CRC32"),
        (crate::proxy::Fault::Drop { nth: 2 }, "does not follow"),
    ] {
        let proxy = crate::proxy::start(address.clone(), fault).await;
        let url = through(proxy.port);
        let (code, out, err) = incremental_from(locks.path(), &url, &to).await;
        assert_eq!(code, 1, "{fault:?}: {out}\n{err}");
        assert!(err.contains(says), "{fault:?}: {err}");
        assert!(proxy.rows_events.load(std::sync::atomic::Ordering::SeqCst) >= 2);
        assert_eq!(
            status_json(locks.path(), &to).as_array().unwrap().len(),
            1,
            "nothing recorded"
        );
    }
    let proxy = crate::proxy::start(address.clone(), crate::proxy::Fault::None).await;
    let url = through(proxy.port);
    let (code, out, err) = incremental_from(locks.path(), &url, &to).await;
    assert_eq!(code, 0, "the proxy itself is sound: {out}\n{err}");
    assert_eq!(status_json(locks.path(), &to).as_array().unwrap().len(), 2);
}

/// Every worker's snapshot must start while the global read lock still holds the writers back:
/// writers released earlier would commit rows that are both in some worker's snapshot and in
/// the log after the recorded position, and the replay would apply them twice. Many small
/// tables, one writer each and eight workers make that window show (checked: releasing the
/// writers first fails the first round every time).
#[tokio::test]
async fn writers_are_released_only_after_every_worker_has_its_snapshot() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fresh_database("my_unlock").await;
    let mut conn = connect(&url_of(&source)).await;
    const TABLES: usize = 16;
    for i in 0..TABLES {
        conn.query_drop(format!("CREATE TABLE t{i} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)"))
            .await
            .unwrap();
    }
    for round in 0..2 {
        let (locks, _dir, to) = workspace();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..TABLES)
            .map(|i| {
                let (url, stop) = (url_of(&source), stop.clone());
                tokio::spawn(async move {
                    let mut conn = connect(&url).await;
                    while !stop.load(Ordering::Relaxed) {
                        conn.exec_drop(format!("INSERT INTO t{i} (v) VALUES (?)"), (round,))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (locks_path, source_name, to_owned) = (locks.path().to_path_buf(), source.clone(), to.clone());
        let (code, out, err) = tokio::task::spawn_blocking(move || {
            run(cairn(&locks_path).args([
                "backup",
                "--type",
                "full",
                "--jobs",
                "8",
                "--name",
                "fx",
                "--source",
                &url_of(&source_name),
                "--to",
                &to_owned,
            ]))
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "{out}\n{err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.await.unwrap();
        }
        backup_ok(locks.path(), &source, &to, "incremental").await;
        let target = format!("{source}_r{round}");
        let (code, out, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, &[]);
        assert_eq!(
            code, 0,
            "round {round}: no row may be in the copy and in the log after it: {out}\n{err}"
        );
        assert_eq!(contents_of(&source).await, contents_of(&target).await, "round {round}");
    }
}
