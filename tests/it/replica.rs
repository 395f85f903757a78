//! `cairn replica seed` on MariaDB: a replica made from a full copy and an incremental on the
//! second test server, handed over to native replication at the restored GTID, receives what
//! the source wrote after the copies — before and after the seed — and ends equal to it.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::mysql::{ONE_AT_A_TIME, connect, fresh_database, url_of};
use crate::support::{cairn, run};

/// The second private MariaDB (server_id 2), where replicas are seeded.
fn replica_url() -> String {
    std::env::var("CAIRN_TEST_MYSQL_REPLICA_URL").unwrap_or_else(|_| {
        panic!(
            "CAIRN_TEST_MYSQL_REPLICA_URL is not set: run the tests with scripts/test.sh, which starts a second \
             private MariaDB for replica targets"
        )
    })
}

/// The second server as the next test expects it: not replicating, without `database`.
pub(crate) async fn reset_replica(database: &str) {
    connect(&replica_url())
        .await
        .query_drop(format!(
            "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL replicate_do_db = ''; DROP DATABASE IF EXISTS `{database}`"
        ))
        .await
        .unwrap();
}

/// Writes a configuration with source `fx` at `database` and returns its path.
pub(crate) fn config_for(locks: &std::path::Path, database: &str) -> std::path::PathBuf {
    let config = locks.join("cairn.toml");
    std::fs::write(&config, format!("[sources.fx]\nurl = {:?}\n", url_of(database))).unwrap();
    config
}

/// The second server, as a seed's target.
pub(crate) fn replica_server() -> String {
    let mut target = url::Url::parse(&replica_url()).unwrap();
    target.set_path("");
    target.to_string()
}

/// Runs `replica seed --json` of source `fx` from `to` into `target`.
pub(crate) fn seed_run(
    locks: &std::path::Path,
    config: &std::path::Path,
    to: &str,
    target: &str,
) -> (i32, String, String) {
    run(cairn(locks).arg("--config").arg(config).args([
        "replica", "seed", "--from", to, "--source", "fx", "--target", target, "--json",
    ]))
}

/// `replica seed` of source `fx` from `to` into the second server, natively; its JSON report.
fn seed(locks: &std::path::Path, config: &std::path::Path, to: &str) -> serde_json::Value {
    let (code, out, err) = seed_run(locks, config, to, &replica_server());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        !out.contains("cairn-test-pw") && !err.contains("cairn-test-pw"),
        "the password was printed"
    );
    serde_json::from_str(&out).unwrap()
}

/// The second server's copy of `database`.
pub(crate) fn on_replica(database: &str) -> String {
    let mut url = url::Url::parse(&replica_url()).unwrap();
    url.set_path(&format!("/{database}"));
    url.to_string()
}

async fn rows(url: &str) -> Vec<(i32, String)> {
    connect(url)
        .await
        .query("SELECT id, v FROM t ORDER BY id")
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn a_mariadb_replica_seeded_from_the_copies_follows_its_source_natively() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fresh_database("my_replica").await;
    reset_replica(&source).await;
    let mut conn = connect(&url_of(&source)).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let config = config_for(locks.path(), &source);
    for kind in ["full", "incremental"] {
        let (code, out, err) = run(cairn(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["backup", "--source", "fx", "--to", &to, "--type", kind]));
        assert_eq!(code, 0, "{out}\n{err}");
        conn.query_drop(format!(
            "INSERT INTO t VALUES ({}, 'after {kind}'); UPDATE t SET v = 'changed' WHERE id = 1",
            if kind == "full" { 3 } else { 4 }
        ))
        .await
        .unwrap();
    }

    // The target must not be its source's server.
    let (code, _, err) = seed_run(locks.path(), &config, &to, &crate::support::mysql_url());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("server_id"), "{err}");

    let report = seed(locks.path(), &config, &to);
    assert_eq!(report["restore"]["incrementals"], 1, "{report}");
    assert_eq!(report["replication"]["io_running"], true, "{report}");
    assert_eq!(report["replication"]["sql_running"], true, "{report}");

    // A replica already replicating is not seeded again.
    let (code, _, err) = seed_run(locks.path(), &config, &to, &replica_server());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already replicates"), "{err}");

    // After the seed the source goes on; the replica follows.
    conn.query_drop("INSERT INTO t VALUES (5, 'after the seed'); DELETE FROM t WHERE id = 2")
        .await
        .unwrap();
    let expected = rows(&url_of(&source)).await;
    assert_eq!(expected.len(), 4);
    let mut seen = Vec::new();
    for _ in 0..60 {
        seen = rows(&on_replica(&source)).await;
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut replica = connect(&replica_url()).await;
    let status: Option<mysql_async::Row> = replica.query_first("SHOW SLAVE STATUS").await.unwrap();
    let error: Option<String> = status
        .as_ref()
        .and_then(|row| row.get_opt::<Option<String>, _>("Last_SQL_Error"))
        .and_then(|v| v.ok())
        .flatten();
    reset_replica(&source).await;
    assert_eq!(
        seen, expected,
        "the replica did not catch up; its last SQL error: {error:?}"
    );
}

/// `CHECKSUM TABLE` of each of `tables` in the database `url` names.
pub(crate) async fn checksums(url: &str, tables: &[&str]) -> Vec<Option<u64>> {
    let mut conn = connect(url).await;
    let mut sums = Vec::new();
    for table in tables {
        let row: Option<(String, Option<u64>)> = conn
            .query_first(format!("CHECKSUM TABLE `{table}`"))
            .await
            .unwrap_or(None);
        sums.push(row.and_then(|(_, sum)| sum));
    }
    sums
}

// The workload runs on the runtime's workers while the test thread waits for cairn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_seeded_under_a_transfer_workload_ends_equal_to_its_source() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = crate::mysql::accounts_database("my_replica_load").await;
    reset_replica(&source).await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let config = config_for(locks.path(), &source);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = crate::mysql::transfer_workload(&source, 3, stop.clone());
    for kind in ["full", "incremental"] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (code, out, err) = run(cairn(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["backup", "--source", "fx", "--to", &to, "--type", kind]));
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let report = seed(locks.path(), &config, &to);
    assert_eq!(report["replication"]["sql_running"], true, "{report}");
    // The workload goes on after the seed, then stops; the replica catches up.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let mut transfers = 0;
    for worker in workers {
        transfers += worker.await.unwrap();
    }
    assert!(transfers > 0);
    let tables = ["accounts", "history"];
    let expected = checksums(&url_of(&source), &tables).await;
    let mut seen = Vec::new();
    for _ in 0..60 {
        seen = checksums(&on_replica(&source), &tables).await;
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    reset_replica(&source).await;
    assert_eq!(
        seen, expected,
        "the replica did not end equal to its source after {transfers} transfers"
    );
}

/// The second private PostgreSQL, where replicas are seeded.
pub(crate) fn pg_replica_url(database: &str) -> String {
    let base = std::env::var("CAIRN_TEST_PG_REPLICA_URL").unwrap_or_else(|_| {
        panic!(
            "CAIRN_TEST_PG_REPLICA_URL is not set: run the tests with scripts/test.sh, which starts a second \
             private PostgreSQL for replica targets"
        )
    });
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&format!("/{database}"));
    url.to_string()
}

pub(crate) async fn pg_rows(url: &str) -> Vec<(i32, String)> {
    let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
        return Vec::new();
    };
    tokio::spawn(connection);
    client
        .query("SELECT id, v FROM t ORDER BY id", &[])
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

// A writer runs on the runtime's workers through the seed: rows committed while the slot is
// made and the gap is closed must arrive exactly once, by the restore or by the subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_replica_seeded_from_the_copies_follows_its_source_by_subscription() {
    use crate::postgres::{connect as pg_connect, fresh_database as pg_database, url_of as pg_url};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let source = pg_database("pg_replica").await;
    let writer = pg_connect(&pg_url(&source)).await;
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
        format!("[sources.fx]\nurl = {:?}\nincrementals = true\n", pg_url(&source)),
    )
    .unwrap();
    let with_config = || {
        let mut command = cairn(locks.path());
        command.arg("--config").arg(&config);
        command
    };
    for (kind, sql) in [
        (
            "full",
            "INSERT INTO t VALUES (101, 'after the full copy'); UPDATE t SET v = 'changed' WHERE id = 1",
        ),
        (
            "incremental",
            "INSERT INTO t VALUES (102, 'after the incremental'); DELETE FROM t WHERE id = 2",
        ),
    ] {
        let (code, out, err) = run(with_config().args(["backup", "--source", "fx", "--to", &to, "--type", kind]));
        assert_eq!(code, 0, "{out}\n{err}");
        writer.batch_execute(sql).await.unwrap();
    }
    let target = format!("{source}_replica");
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (stop, url) = (stop.clone(), pg_url(&source));
        tokio::spawn(async move {
            let client = pg_connect(&url).await;
            let mut id = 1000;
            while !stop.load(Ordering::Relaxed) {
                client
                    .execute("INSERT INTO t VALUES ($1, 'during the seed')", &[&id])
                    .await
                    .unwrap();
                id += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            id - 1000
        })
    };
    let (code, out, err) = run(with_config().args([
        "replica",
        "seed",
        "--from",
        &to,
        "--source",
        "fx",
        "--target",
        &pg_replica_url(&target),
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}\n{err}"));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(report["replication"]["io_running"], true, "{report}");
    assert!(
        !out.contains("cairn-test-pw") && !err.contains("cairn-test-pw"),
        "the password was printed"
    );

    stop.store(true, Ordering::Relaxed);
    let during = busy.await.unwrap();
    assert!(during > 10, "only {during} rows were written during the seed");
    // After the seed the source goes on; the subscription follows.
    writer
        .batch_execute("INSERT INTO t VALUES (103, 'after the seed'); UPDATE t SET v = 'again' WHERE id = 3; DELETE FROM t WHERE id = 4")
        .await
        .unwrap();
    let expected = pg_rows(&pg_url(&source)).await;
    assert_eq!(expected.len() as i32, 101 + during);
    let mut seen = Vec::new();
    for _ in 0..60 {
        seen = pg_rows(&pg_replica_url(&target)).await;
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Leave both servers clean: the subscription drops its slot on the source.
    let replica = pg_connect(&pg_replica_url(&target)).await;
    let subscriptions: Vec<String> = replica
        // pg_subscription is shared by the server's databases; other tests' replicas are theirs.
        .query(
            "SELECT subname::text FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for name in &subscriptions {
        replica
            .batch_execute(&format!("DROP SUBSCRIPTION \"{name}\""))
            .await
            .unwrap();
    }
    let (code, _, err) = run(with_config().args(["slot", "drop", "--source", "fx"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(seen, expected, "the replica did not catch up with its source");
    assert_eq!(subscriptions.len(), 1, "{subscriptions:?}");
}
