//! Schema changes and PostgreSQL incrementals: logical decoding carries no DDL, so a schema
//! change between copies stops the incremental (or takes a full copy when configured), and with
//! `on-ddl = "capture"` the DDL is recorded on the source and replayed in order.

use std::path::Path;

use crate::postgres::{connect, fresh_database, url_of};
use crate::postgres_incrementals::{assert_restored_as_source, backup, cairn_config, restore};
use crate::support::{cairn, run};

fn write_config(locks: &Path, database: &str, extra: &str) -> std::path::PathBuf {
    let path = locks.join("cairn.toml");
    std::fs::write(
        &path,
        format!(
            "[sources.fx]\nurl = \"{}\"\nincrementals = true\n{extra}",
            url_of(database)
        ),
    )
    .unwrap();
    path
}

fn copy_ids(locks: &Path, to: &str) -> Vec<(String, String)> {
    let (code, out, err) = run(cairn(locks).args(["status", "--json", "--source", "fx", "--from", to]));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_schema_change_stops_the_incremental_or_takes_a_full_copy() {
    let source = fresh_database("pg_ddl_stop").await;
    let client = connect(&url_of(&source)).await;
    client
        .batch_execute(
            "SET synchronous_commit = on;
             CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    let config = write_config(locks.path(), &source, "");
    let (code, out, err) = backup(locks.path(), &config, &to, "full");
    assert_eq!(code, 0, "{out}\n{err}");
    let full = copy_ids(locks.path(), &to)[0].0.clone();

    // Rows alone: the incremental goes through.
    client
        .batch_execute("UPDATE t SET v = 'changed' WHERE id < 4")
        .await
        .unwrap();
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");
    let first = copy_ids(locks.path(), &to)[1].0.clone();

    // Each kind of change the stream would not carry stops the next incremental, dry run or not.
    for (change, undo) in [
        ("ALTER TABLE t ADD COLUMN extra int", "ALTER TABLE t DROP COLUMN extra"),
        ("CREATE INDEX t_v ON t (v)", "DROP INDEX t_v"),
        ("CREATE TABLE other (id int PRIMARY KEY)", "DROP TABLE other"),
    ] {
        client.batch_execute(change).await.unwrap();
        client
            .batch_execute("INSERT INTO t (id, v) VALUES (100, 'after')")
            .await
            .unwrap();
        for extra in [&["--dry-run"][..], &[][..]] {
            let args = [
                &["backup", "--type", "incremental", "--source", "fx", "--to", &to][..],
                extra,
            ]
            .concat();
            let (code, out, err) = cairn_config(locks.path(), &config, &args);
            assert_eq!(code, 1, "{change} {extra:?}: {out}\n{err}");
            assert!(
                err.contains(&format!("the schema changed since copy {first} ended")) && err.contains("on-ddl"),
                "{change}: {err}"
            );
        }
        // Undone, the schema is the parent's again (the row inserted meanwhile stays).
        client.batch_execute(undo).await.unwrap();
        client.batch_execute("DELETE FROM t WHERE id = 100").await.unwrap();
    }
    assert_eq!(
        copy_ids(locks.path(), &to).len(),
        2,
        "a failed incremental was recorded"
    );

    // on-ddl = "full": a full copy instead, and the chain restores to the source as it is now.
    client
        .batch_execute("ALTER TABLE t ADD COLUMN extra int DEFAULT 7")
        .await
        .unwrap();
    let config = write_config(locks.path(), &source, "on-ddl = \"full\"\n");
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("on-ddl = \"full\": taking full copy"), "{err}");
    client
        .batch_execute("INSERT INTO t VALUES (11, 'new', 8)")
        .await
        .unwrap();
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");
    let kinds: Vec<String> = copy_ids(locks.path(), &to).into_iter().map(|(_, kind)| kind).collect();
    assert_eq!(kinds, ["full", "incremental", "full", "incremental"]);
    assert_ne!(copy_ids(locks.path(), &to)[2].0, full);
    let target = fresh_database("pg_ddl_stop_restored").await;
    let (code, out, err) = restore(locks.path(), &to, &target, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_restored_as_source(locks.path(), &config, &source, &target).await;
}

#[tokio::test]
async fn captured_ddl_replays_in_order_with_the_rows() {
    let source = fresh_database("pg_ddl_capture").await;
    let client = connect(&url_of(&source)).await;
    client
        .batch_execute(
            "SET synchronous_commit = on;
             CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    let config = write_config(locks.path(), &source, "on-ddl = \"capture\"\n");
    let (code, out, err) = backup(locks.path(), &config, &to, "full");
    assert_eq!(code, 0, "{out}\n{err}");

    // Each statement is its own query, as migration tools and psql send them.
    for statement in [
        "INSERT INTO t VALUES (11, 'before the new column')",
        "ALTER TABLE t ADD COLUMN extra int",
        "UPDATE t SET extra = id * 2 WHERE id <= 5",
        "CREATE TABLE newer (id serial PRIMARY KEY, note text)",
        "INSERT INTO newer (note) SELECT 'n' || g FROM generate_series(1, 5) g",
        "CREATE INDEX CONCURRENTLY t_v ON t (v)",
    ] {
        client.batch_execute(statement).await.unwrap();
    }
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");
    client
        .batch_execute("CREATE TABLE doomed (id int PRIMARY KEY)")
        .await
        .unwrap();
    let doomed_xid: String = client
        .query_one(
            "INSERT INTO doomed VALUES (1) RETURNING pg_current_xact_id()::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for statement in [
        "DROP TABLE doomed",
        "BEGIN",
        "ALTER TABLE t RENAME COLUMN v TO label",
        "UPDATE t SET label = 'renamed' WHERE id = 1",
        "COMMIT",
        "SET search_path = other, public",
        "CREATE SCHEMA other",
        "CREATE TABLE placed (id int PRIMARY KEY)",
        "INSERT INTO placed VALUES (1), (2)",
        "RESET search_path",
        "DELETE FROM newer WHERE id = 2",
        // DDL of a role that is not a superuser: recorded all the same, and replayed as it.
        "DO $$ BEGIN CREATE ROLE cairn_ddl_user NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        "GRANT CREATE ON SCHEMA public TO cairn_ddl_user",
        "SET ROLE cairn_ddl_user",
        "CREATE TABLE by_user (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)",
        "INSERT INTO by_user (v) VALUES ('one'), ('two')",
        "UPDATE by_user SET v = 'changed' WHERE id = 1",
        "RESET ROLE",
    ] {
        client.batch_execute(statement).await.unwrap();
    }
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");

    // Stopped before the drop: the table is there, with its row.
    let before_drop = fresh_database("pg_ddl_capture_pit").await;
    let (code, out, err) = restore(locks.path(), &to, &before_drop, &["--until-xid", &doomed_xid]);
    assert_eq!(code, 0, "{out}\n{err}");
    let doomed: i64 = connect(&url_of(&before_drop))
        .await
        .query_one("SELECT count(*) FROM doomed", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(doomed, 1);

    // The whole chain: schema and rows as the source has them.
    let target = fresh_database("pg_ddl_capture_restored").await;
    let (code, out, err) = restore(locks.path(), &to, &target, &[]);
    assert_eq!(code, 0, "{out}\n{err}");

    // DDL sent together with other commands cannot be replayed alone: the incremental says so.
    client
        .batch_execute("CREATE TABLE mixed (id int PRIMARY KEY); INSERT INTO mixed VALUES (1)")
        .await
        .unwrap();
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("one per query"), "{err}");
    client.batch_execute("DROP TABLE mixed").await.unwrap();

    // cairn's own objects are the source's bookkeeping: without them the two are the same.
    assert_restored_as_source(locks.path(), &config, &source, &target).await;
    let leftover: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_event_trigger) + (SELECT count(*) FROM pg_namespace WHERE nspname = '_cairn')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftover, 0, "slot drop leaves the DDL log behind");
}
