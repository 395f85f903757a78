//! PostgreSQL points in time: a chain replayed up to a time, an LSN or a transaction stops right
//! after the last whole transaction the point lets through; a replay killed part way resumes to
//! the result of an uninterrupted one; a slot that is gone breaks the chain loudly.

use std::time::Duration;

use crate::postgres::{connect, fresh_database, url_of};
use crate::postgres_incrementals::{backup, config, restore};
use crate::support::{cairn, run};

/// One committed transaction of the source: its id, and the WAL position and time just after
/// its commit.
struct Mark {
    xid: String,
    lsn_after: String,
    time_after: String,
}

async fn mark(client: &tokio_postgres::Client, n: i32) -> Mark {
    client.batch_execute("BEGIN").await.unwrap();
    let xid: String = client
        .query_one(
            "INSERT INTO marks (n) VALUES ($1) RETURNING pg_current_xact_id()::text",
            &[&n],
        )
        .await
        .unwrap()
        .get(0);
    client.batch_execute("COMMIT").await.unwrap();
    let row = client
        .query_one(
            "SELECT pg_current_wal_insert_lsn()::text,
                    to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    Mark {
        xid,
        lsn_after: row.get(0),
        time_after: row.get(1),
    }
}

async fn marks_in(database: &str) -> Vec<i32> {
    connect(&url_of(database))
        .await
        .query("SELECT n FROM marks ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Replication origins the replays into `database` keep (one while a replay is unfinished).
async fn origins_of(database: &str) -> i64 {
    connect(&url_of("postgres"))
        .await
        .query_one(
            "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'cairn\\_%\\_' || $1",
            &[&database],
        )
        .await
        .unwrap()
        .get(0)
}

async fn database_exists(database: &str) -> bool {
    connect(&url_of("postgres"))
        .await
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .unwrap()
        .is_some()
}

async fn drop_slots(database: &str) {
    connect(&url_of(database))
        .await
        .batch_execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_replay_stops_after_the_transaction_a_time_an_lsn_or_an_xid_names() {
    let source = fresh_database("pg_pitr").await;
    let client = connect(&url_of(&source)).await;
    // Decoding reads flushed WAL; the test server does not wait for the flush.
    client
        .batch_execute(
            "SET synchronous_commit = on; CREATE TABLE marks (n int PRIMARY KEY, at timestamptz DEFAULT now())",
        )
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    let config = config(locks.path(), &source);
    let (code, out, err) = backup(locks.path(), &config, &to, "full");
    assert_eq!(code, 0, "{out}\n{err}");
    // Hourly incrementals, then a daily one: the slot has one position, so the daily one
    // continues from the newest hourly copy, not from the last daily one.
    let (m1, m2) = (mark(&client, 1).await, mark(&client, 2).await);
    let hourly = |locks: &std::path::Path| {
        run(cairn(locks).arg("--config").arg(&config).args([
            "backup",
            "--type",
            "incremental",
            "--run-type",
            "hourly",
            "--source",
            "fx",
            "--to",
            &to,
        ]))
    };
    let (code, out, err) = hourly(locks.path());
    assert_eq!(code, 0, "{out}\n{err}");
    let m3 = mark(&client, 3).await;
    let (code, out, err) = hourly(locks.path());
    assert_eq!(code, 0, "{out}\n{err}");
    let m4 = mark(&client, 4).await;
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");

    for (flag, value, expected) in [
        ("--until", &m2.time_after, vec![1, 2]),
        ("--until-lsn", &m3.lsn_after, vec![1, 2, 3]),
        ("--until-xid", &m1.xid, vec![1]),
        ("--until-xid", &m3.xid, vec![1, 2, 3]),
        ("--until-xid", &m4.xid, vec![1, 2, 3, 4]),
    ] {
        let target = fresh_database("pg_pitr_at").await;
        let (code, out, err) = restore(locks.path(), &to, &target, &[flag, value]);
        assert_eq!(code, 0, "{flag} {value}: {out}\n{err}");
        assert_eq!(marks_in(&target).await, expected, "{flag} {value}: {out}");
        assert!(out.contains("source position: LSN"), "{out}");
        assert_eq!(
            origins_of(&target).await,
            0,
            "a finished replay keeps its replication origin"
        );
    }

    // The dry run names the exact stop, found by reading the chain.
    let (code, out, err) = restore(
        locks.path(),
        &to,
        &fresh_database("pg_pitr_dry").await,
        &["--dry-run", "--until-xid", &m2.xid],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("stop: after transaction {} committed", m2.xid))
            && out.contains("2 of 4 transactions applied"),
        "{out}"
    );

    // The restored position is written where a replica seed can read it: the dry run's.
    let shown = out
        .split("restored position ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the dry run shows the restored position")
        .to_string();
    let position_file = locks.path().join("position.json");
    let target = fresh_database("pg_pitr_position").await;
    let position_arg = position_file.display().to_string();
    let (code, out, err) = restore(
        locks.path(),
        &to,
        &target,
        &["--until-xid", &m2.xid, "--position-file", &position_arg],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&position_file).unwrap()).unwrap();
    assert_eq!(written["position"]["lsn"], shown.as_str(), "{written}");
    assert!(
        written["position"]["slot"].as_str().unwrap().starts_with("cairn_fx_"),
        "{written}"
    );
    // Exactly after transaction 2: past what was written before it ended, not past its end.
    let lsn = |text: &str| {
        let (high, low) = text.split_once('/').unwrap();
        (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap()
    };
    assert!(
        lsn(&shown) > lsn(&m1.lsn_after) && lsn(&shown) <= lsn(&m2.lsn_after),
        "{shown}"
    );

    // Points the chain does not hold, or another engine's, fail before anything is created.
    let nowhere = format!("{source}_nowhere");
    for (extra, expected) in [
        (["--until-xid", "999999"], "no transaction of the chain has this id"),
        (["--until-gtid", "0-1-5"], "applies to MySQL/MariaDB chains only"),
        (["--until-lsn", "0/10"], "is before full copy"),
    ] {
        let (code, out, err) = restore(locks.path(), &to, &nowhere, &extra);
        assert_eq!(code, 2, "{extra:?}: {out}\n{err}");
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(!database_exists(&nowhere).await, "{extra:?} created the target");
    }
    drop_slots(&source).await;
}

#[tokio::test]
async fn a_killed_replay_resumes_to_the_result_of_an_uninterrupted_one() {
    let source = fresh_database("pg_resume").await;
    let client = connect(&url_of(&source)).await;
    client
        .batch_execute(
            "SET synchronous_commit = on;
             CREATE TABLE items (id int PRIMARY KEY, v text);
             CREATE PROCEDURE fill(n int) LANGUAGE plpgsql AS $$
               BEGIN FOR i IN 1..n LOOP
                 INSERT INTO items VALUES (i, md5(i::text));
                 UPDATE items SET v = v || '!' WHERE id = i - 1;
                 COMMIT;
               END LOOP; END $$;",
        )
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    let config = config(locks.path(), &source);
    let (code, out, err) = backup(locks.path(), &config, &to, "full");
    assert_eq!(code, 0, "{out}\n{err}");
    const TRANSACTIONS: i64 = 8_000;
    client
        .batch_execute(&format!("CALL fill({TRANSACTIONS})"))
        .await
        .unwrap();
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");
    drop_slots(&source).await;

    // Nothing to resume in a database no replay went into.
    let empty = fresh_database("pg_resume_empty").await;
    let (code, out, err) = restore(locks.path(), &to, &empty, &["--resume"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("nothing to resume") && err.contains("--clean"), "{err}");

    let target = format!("{source}_resumed");
    let mut child = cairn(locks.path())
        .args(["restore", "--source", "fx", "--from", &to, "--target", &url_of(&target)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let count = |database: String| async move {
        let Ok((client, connection)) = tokio_postgres::connect(&url_of(&database), tokio_postgres::NoTls).await else {
            return None;
        };
        tokio::spawn(connection);
        let row = client.query_one("SELECT count(*) FROM items", &[]).await.ok()?;
        Some(row.get::<_, i64>(0))
    };
    for _ in 0..3_000 {
        if count(target.clone()).await.unwrap_or(0) > 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let applied = count(target.clone()).await.unwrap();
    assert!(
        applied > 100 && applied < TRANSACTIONS,
        "killed after {applied} of {TRANSACTIONS} transactions"
    );
    assert_eq!(origins_of(&target).await, 1, "the stopped replay's position is kept");

    // A replay cannot go back: a stop before what the target holds is refused, touching nothing.
    let (code, out, err) = run(cairn(locks.path()).args(["status", "--json", "--source", "fx", "--from", &to]));
    assert_eq!(code, 0, "{err}");
    let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
    let full_end = reports[0]["copies"][0]["log_range"]["end"]["lsn"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out, err) = restore(locks.path(), &to, &target, &["--resume", "--until-lsn", &full_end]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("past the stop point"), "{err}");
    assert_eq!(
        count(target.clone()).await,
        Some(applied),
        "a refused resume changed the target"
    );

    // A target changed behind the replay's back: the next transaction updates a row that is
    // gone, fails whole (its insert too), and the recorded position stays where it was.
    let changed = connect(&url_of(&target)).await;
    let last: String = changed
        .query_one(
            "DELETE FROM items WHERE id = (SELECT max(id) FROM items) RETURNING format('(%s, %L)', id, v)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (code, out, err) = restore(locks.path(), &to, &target, &["--resume"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("no row matches the change") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(
        count(target.clone()).await,
        Some(applied - 1),
        "a failed transaction was committed"
    );
    assert_eq!(origins_of(&target).await, 1);
    changed
        .batch_execute(&format!("INSERT INTO items VALUES {last}"))
        .await
        .unwrap();
    let (code, out, err) = restore(locks.path(), &to, &target, &["--resume"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let rows = |database: String| async move {
        connect(&url_of(&database))
            .await
            .query("SELECT i::text FROM items i ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let expected = rows(source.clone()).await;
    assert_eq!(expected.len() as i64, TRANSACTIONS);
    assert_eq!(
        rows(target.clone()).await,
        expected,
        "a resumed replay differs from the source"
    );
}
