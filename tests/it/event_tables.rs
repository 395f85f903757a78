//! `cairn replica events`: an append-only table's new rows copied by increasing key to two
//! targets in batches — a restart in the middle and a target that was behind end with every
//! row exactly once; a target that diverged is refused. MariaDB, then PostgreSQL with
//! `LISTEN`/`NOTIFY`.

use std::process::Stdio;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::{Background, cairn, run};

/// `replica events --source fx --table TABLE` to `targets`, with `more` arguments.
fn events(
    locks: &std::path::Path,
    config: &std::path::Path,
    table: &str,
    targets: &[String],
    more: &[&str],
) -> std::process::Command {
    let mut command = cairn(locks);
    command
        .arg("--config")
        .arg(config)
        .args(["replica", "events", "--source", "fx", "--table", table, "--batch", "7"])
        .args(more);
    for target in targets {
        command.args(["--target", target]);
    }
    command
}

#[tokio::test]
async fn event_rows_reach_two_mariadb_targets_once_through_a_restart() {
    use crate::mysql::{ONE_AT_A_TIME, connect, fresh_database, url_of};
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fresh_database("ev_source").await;
    let (first, second) = (fresh_database("ev_first").await, fresh_database("ev_second").await);
    let create = "CREATE TABLE events (id BIGINT PRIMARY KEY, kind VARCHAR(20), amount DECIMAL(10,2), at DATETIME(6))";
    let mut conn = connect(&url_of(&source)).await;
    conn.query_drop(create).await.unwrap();
    conn.query_drop("INSERT INTO events SELECT seq, CONCAT('k', seq % 3), seq / 7, '2026-01-01' + INTERVAL seq SECOND FROM seq_1_to_40")
        .await
        .unwrap();
    for target in [&first, &second] {
        connect(&url_of(target)).await.query_drop(create).await.unwrap();
    }
    // The second target was fed before and is only behind.
    connect(&url_of(&second))
        .await
        .query_drop(format!(
            "INSERT INTO events SELECT * FROM `{source}`.events WHERE id <= 10"
        ))
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let config = crate::replica::config_for(locks.path(), &source);
    let table = format!("{source}.events");
    let targets = vec![url_of(&first), url_of(&second)];
    let rows = |url: String| async move {
        connect(&url)
            .await
            .query::<(i64, String, String, String), _>(
                "SELECT id, kind, CAST(amount AS CHAR), CAST(at AS CHAR) FROM events ORDER BY id",
            )
            .await
            .unwrap()
    };

    // The dry run validates both targets and copies nothing.
    let (code, out, err) = run(&mut events(
        locks.path(),
        &config,
        &table,
        &targets,
        &["--dry-run", "--json"],
    ));
    assert_eq!(code, 0, "{out}\n{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["targets"][1]["started_after"], "10", "{plan}");
    assert!(rows(url_of(&first)).await.is_empty());

    // Running, killed part way, started again: every row once, in both.
    let mut running = Background::spawn(
        events(locks.path(), &config, &table, &targets, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.query_drop("INSERT INTO events SELECT seq, 'late', 1.5, '2026-02-01' FROM seq_41_to_60")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    running.kill();
    conn.query_drop("INSERT INTO events VALUES (61, 'after', 2.25, '2026-03-01 10:00:00.123456')")
        .await
        .unwrap();
    let (code, out, err) = run(&mut events(
        locks.path(),
        &config,
        &table,
        &targets,
        &["--catch-up", "--json"],
    ));
    assert_eq!(code, 0, "{out}\n{err}");
    let expected = rows(url_of(&source)).await;
    assert_eq!(expected.len(), 61);
    assert_eq!(rows(url_of(&first)).await, expected);
    assert_eq!(rows(url_of(&second)).await, expected);

    // A target whose rows differ from the source's up to its own largest key is refused.
    connect(&url_of(&second))
        .await
        .query_drop("DELETE FROM events WHERE id = 5")
        .await
        .unwrap();
    let (code, _, err) = run(&mut events(locks.path(), &config, &table, &targets, &["--catch-up"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&second) && err.contains("60 rows up to key 61"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_rows_reach_a_postgres_target_woken_by_notify() {
    use crate::postgres::{connect, fresh_database, url_of};
    let source = fresh_database("ev_pg_source").await;
    let target = fresh_database("ev_pg_target").await;
    let create = "CREATE TABLE events (id bigint PRIMARY KEY, body jsonb, tags text[], at timestamptz, raw bytea)";
    let writer = connect(&url_of(&source)).await;
    writer.batch_execute(create).await.unwrap();
    writer
        .batch_execute("INSERT INTO events SELECT g, jsonb_build_object('n', g), ARRAY['a', 'b' || g], now(), '\\x00ff'::bytea FROM generate_series(1, 25) g")
        .await
        .unwrap();
    connect(&url_of(&target)).await.batch_execute(create).await.unwrap();
    let locks = tempfile::tempdir().unwrap();
    let config = locks.path().join("cairn.toml");
    std::fs::write(&config, format!("[sources.fx]\nurl = {:?}\n", url_of(&source))).unwrap();
    let rows = |url: String| async move {
        let client = connect(&url).await;
        client
            .query("SELECT id, body::text, tags::text, at::text, coalesce(encode(raw, 'hex'), 'null') FROM events ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1), r.get::<_, String>(2), r.get::<_, String>(3), r.get::<_, String>(4)))
            .collect::<Vec<_>>()
    };
    // A long idle wait: only the notification wakes the copy up in time.
    let mut command = events(
        locks.path(),
        &config,
        "public.events",
        &[url_of(&target)],
        &["--notify", "events_added", "--max-idle", "60"],
    );
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let mut running = Background::spawn(&mut command);
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen = rows(url_of(&target)).await;
        if seen.len() == 25 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(seen.len(), 25);
    // Idle long enough for the waits to have grown: they double from 0.1 s, so the copy's 12.8 s
    // wait runs from 12.7 s into the idleness (later by its queries' time) to 25.5 s. Inserted
    // 17 s in and seen within 4 s, the row can only have come through the notification.
    tokio::time::sleep(Duration::from_secs(17)).await;
    writer
        .batch_execute("INSERT INTO events VALUES (26, '{\"late\": true}', '{x}', now(), NULL); NOTIFY events_added")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        seen = rows(url_of(&target)).await;
        if seen.len() == 26 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.kill();
    assert_eq!(
        seen,
        rows(url_of(&source)).await,
        "the notification did not wake the copy up within 4 s"
    );
}
