//! A PostgreSQL replica of a MariaDB source (issue #14): seeded from a full copy and an
//! incremental taken under the transfer workload (`replica seed --handover cairn` into a
//! `postgres://` target), then followed by `replica run` while the workload goes on — a SIGKILL
//! and a restart in between, a second applier refused — and stopped with `replica stop`; after a
//! last `--catch-up` every account and the history are equal and the invariant holds in
//! PostgreSQL. DDL the applier does not translate stops it, naming the statement; `replica
//! reload` of the table copies it again and the applier goes on.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::mysql::{ONE_AT_A_TIME, accounts_database, connect, transfer_workload, url_of};
use crate::postgres::{connect as pg_connect, url_of as pg_url_of};
use crate::replica::config_for;
use crate::support::{Background, cairn, run, wait_for_applier};

/// `cairn replica <args> --source fx --target <target>`.
fn replica(locks: &std::path::Path, config: &std::path::Path, target: &str, args: &[&str]) -> (i32, String, String) {
    run(cairn(locks)
        .arg("--config")
        .arg(config)
        .arg("replica")
        .args(args)
        .args(["--source", "fx", "--target", target]))
}

fn spawn_applier(locks: &std::path::Path, config: &std::path::Path, target: &str, log: &std::path::Path) -> Background {
    Background::spawn(
        cairn(locks)
            .arg("--config")
            .arg(config)
            .args(["replica", "run", "--source", "fx", "--target", target, "--json"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap()),
    )
}

/// Accounts as `id:balance:transfers` lines, and the history's count, sum and largest id.
async fn mysql_state(source: &str) -> (String, String) {
    let mut my = connect(&url_of(source)).await;
    my.query_drop("SET SESSION group_concat_max_len = 1000000")
        .await
        .unwrap();
    let accounts: String = my
        .query_first("SELECT GROUP_CONCAT(id, ':', balance, ':', transfers ORDER BY id SEPARATOR ' ') FROM accounts")
        .await
        .unwrap()
        .unwrap();
    let history: String = my
        .query_first("SELECT CONCAT(COUNT(*), ' ', COALESCE(SUM(amount), 0), ' ', COALESCE(MAX(id), 0)) FROM history")
        .await
        .unwrap()
        .unwrap();
    (accounts, history)
}

async fn postgres_state(pg: &tokio_postgres::Client) -> (String, String) {
    let accounts: String = pg
        .query_one(
            "SELECT string_agg(id || ':' || balance || ':' || transfers, ' ' ORDER BY id) FROM bank.accounts",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let history: String = pg
        .query_one(
            "SELECT count(*) || ' ' || coalesce(sum(amount), 0) || ' ' || coalesce(max(id), 0) FROM bank.history",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (accounts, history)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mariadb_source_is_followed_into_postgres_through_a_kill_and_a_restart() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = accounts_database("my_pg_replica").await;
    // A table with a foreign key, for the detach.
    connect(&url_of(&source))
        .await
        .query_drop(
            "CREATE TABLE notes (id INT AUTO_INCREMENT PRIMARY KEY, account_id INT NOT NULL, body TEXT, \
             CONSTRAINT notes_account FOREIGN KEY (account_id) REFERENCES accounts (id));
             INSERT INTO notes (account_id, body) VALUES (1, 'first')",
        )
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let config = config_for(locks.path(), &source);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = transfer_workload(&source, 1, stop.clone());
    for kind in ["full", "incremental"] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (code, out, err) = run(cairn(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["backup", "--source", "fx", "--to", &to, "--type", kind]));
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let target = pg_url_of(&format!("my_pg_replica_{}", std::process::id()));
    let (code, out, err) = run(cairn(locks.path()).arg("--config").arg(&config).args([
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
        "--rename-db",
        &format!("{source}=bank"),
        "--json",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let seeded: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(seeded["handover"], "cairn", "{seeded}");

    let log = locks.path().join("applier.log");
    let mut applier = spawn_applier(locks.path(), &config, &target, &log);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // SIGKILL mid-stream: what was committed stays with its position; the restart goes on after it.
    applier.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut applier = spawn_applier(locks.path(), &config, &target, &log);
    wait_for_applier(locks.path(), &config, &target, "fx", &mut applier).await;
    // With --catch-up, a second applier wrongly let in would end instead of hanging the test.
    let (code, _, err) = replica(locks.path(), &config, &target, &["run", "--catch-up"]);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("another applier runs"), "{err}");
    assert!(!applier.has_ended(), "the applier that holds the lease ended");
    let (code, out, err) = run(cairn(locks.path())
        .arg("--config")
        .arg(&config)
        .args(["replica", "status", "--target", &target, "--json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let states: serde_json::Value = serde_json::from_str(&out).unwrap();
    let state = states
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "fx")
        .cloned()
        .unwrap_or_else(|| panic!("{states}"));
    assert_eq!(state["running"], true, "{state}");
    assert!(state["applied"]["file"].is_string(), "{state}");

    stop.store(true, Ordering::Relaxed);
    let mut transfers = 0;
    for worker in workers {
        transfers += worker.await.unwrap();
    }
    let (code, out, err) = replica(locks.path(), &config, &target, &["stop"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let output = applier.wait_with_output();
    let applier_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(output.status.code(), Some(0), "{applier_log}");
    let ran: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(ran["stopped"], "stop requested", "{ran}");
    assert!(!applier_log.contains("cairn-test-pw"), "the password was logged");
    // Whatever the stopped applier had not read, a catch-up applies; `status` then shows no lag.
    let (code, out, err) = replica(locks.path(), &config, &target, &["run", "--catch-up"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = run(cairn(locks.path())
        .arg("--config")
        .arg(&config)
        .args(["replica", "status", "--target", &target, "--source", "fx", "--json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let states: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(states[0]["running"], false, "{states}");
    assert_eq!(states[0]["lag_bytes"], 0, "{states}");

    let pg = pg_connect(&target).await;
    let expected = mysql_state(&source).await;
    assert_eq!(
        postgres_state(&pg).await,
        expected,
        "the replica is not its source after {transfers} transfers; the applier's log:\n{applier_log}"
    );
    let invariant: (i64, i64, i64) = pg
        .query_one(
            "SELECT sum(balance)::int8, sum(transfers)::int8, (SELECT count(*) FROM bank.history) FROM bank.accounts",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .unwrap();
    assert_eq!(invariant.0, 200 * 1000);
    assert_eq!(invariant.1, invariant.2);
    assert!(transfers > 0);

    // The start-up validation compares the tables while the source is at the replica's position:
    // equal now; a row changed by hand on the replica stops the applier before it applies
    // anything (exit 1, naming the table).
    let (code, out, err) = replica(locks.path(), &config, &target, &["run", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let dry: serde_json::Value = serde_json::from_str(&out).unwrap();
    let lines = dry["validation"].to_string();
    assert!(
        lines.contains(&format!("{source}.accounts: 200 rows, the first and last")),
        "{dry}"
    );
    pg.batch_execute("UPDATE bank.accounts SET balance = balance + 1 WHERE id = 200")
        .await
        .unwrap();
    let (code, out, err) = replica(locks.path(), &config, &target, &["run", "--catch-up"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(&format!("{source}.accounts")) && err.contains("not on the replica"),
        "{err}"
    );
    pg.batch_execute("UPDATE bank.accounts SET balance = balance - 1 WHERE id = 200")
        .await
        .unwrap();

    // DDL during replication: an added column, a new table, a dropped table replay.
    let mut my = connect(&url_of(&source)).await;
    my.query_drop(
        "INSERT INTO history (from_id, to_id, amount) VALUES (1, 2, 0);
         ALTER TABLE accounts ADD COLUMN note INT;
         UPDATE accounts SET note = 1 WHERE id = 1;
         CREATE INDEX by_note ON accounts (note);
         CREATE TABLE audit (id INT PRIMARY KEY, what VARCHAR(20), state ENUM('a', 'b') NOT NULL DEFAULT 'a');
         INSERT INTO audit (id, what) VALUES (1, 'created');
         ALTER TABLE audit MODIFY state ENUM('a', 'b', 'c') NOT NULL DEFAULT 'a';
         UPDATE audit SET state = 'c' WHERE id = 1;
         ALTER TABLE audit DROP PRIMARY KEY, ADD PRIMARY KEY (id, what);
         CREATE TABLE scratch (a INT);
         DROP TABLE scratch",
    )
    .await
    .unwrap();
    let (code, out, err) = replica(locks.path(), &config, &target, &["run", "--catch-up"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let note: Option<i32> = pg
        .query_one("SELECT note FROM bank.accounts WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, Some(1));
    let indexed: bool = pg
        .query_one("SELECT to_regclass('bank.accounts_by_note') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(indexed, "CREATE INDEX made the index");
    let (what, state): (String, String) = pg
        .query_one("SELECT what, state FROM bank.audit WHERE id = 1", &[])
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert_eq!(
        (what.as_str(), state.as_str()),
        ("created", "c"),
        "the ENUM's new member passed its new check"
    );
    let key_columns: i16 = pg
        .query_one(
            "SELECT indnkeyatts FROM pg_index WHERE indrelid = 'bank.audit'::regclass AND indisprimary",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(key_columns, 2, "the primary key was replaced");
    let scratch: bool = pg
        .query_one("SELECT to_regclass('bank.scratch') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(scratch, "scratch was created and dropped on the source");

    // DDL the applier does not translate stops it (exit 2), naming the statement; what came
    // before it is in.
    my.query_drop(
        "DROP TABLE audit;
         ALTER TABLE accounts MODIFY note BIGINT;
         INSERT INTO history (from_id, to_id, amount) VALUES (2, 3, 0);
         ALTER TABLE accounts ADD COLUMN doubled BIGINT AS (balance * 2) VIRTUAL;
         INSERT INTO history (from_id, to_id, amount) VALUES (3, 4, 0)",
    )
    .await
    .unwrap();
    let (code, out, err) = replica(locks.path(), &config, &target, &["run", "--catch-up"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("ALTER TABLE accounts ADD COLUMN doubled") && err.contains("cairn replica reload --table"),
        "{err}"
    );
    let history: i64 = pg
        .query_one("SELECT count(*) FROM bank.history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(history, invariant.2 + 2);
    let audit: bool = pg
        .query_one("SELECT to_regclass('bank.audit') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(audit, "the DROP TABLE before it applied");
    let note_type: String = pg
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'bank.accounts'::regclass AND attname = 'note'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(note_type, "bigint", "the MODIFY applied");
    let (code, out, _) = run(cairn(locks.path())
        .arg("--config")
        .arg(&config)
        .args(["replica", "status", "--target", &target, "--json"]));
    assert_eq!(code, 0);
    assert!(
        out.contains("ALTER TABLE accounts"),
        "the error is in the status: {out}"
    );

    // `replica reload` copies the table again at a new position: the applier passes over its
    // changes before that — the statement that stopped it, and a transfer's rows — applies the
    // history row of that transfer, and everything after.
    let transfer = "START TRANSACTION;
         UPDATE accounts SET balance = balance - 7, transfers = transfers + 1 WHERE id = 1;
         UPDATE accounts SET balance = balance + 7, transfers = transfers + 1 WHERE id = 2;
         INSERT INTO history (from_id, to_id, amount) VALUES (1, 2, 7);
         COMMIT";
    my.query_drop(transfer).await.unwrap();
    let (code, out, err) = replica(
        locks.path(),
        &config,
        &target,
        &["reload", "--table", &format!("{source}.accounts"), "--json"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let reloaded: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        reloaded["tables"],
        serde_json::json!([format!("{source}.accounts")]),
        "{reloaded}"
    );
    assert_eq!(reloaded["rows"], 200, "{reloaded}");
    assert_eq!(
        reloaded["foreign_keys_dropped"],
        serde_json::json!(["bank.notes.notes_account"]),
        "{reloaded}"
    );
    my.query_drop(transfer).await.unwrap();
    let (code, out, err) = replica(locks.path(), &config, &target, &["run", "--catch-up"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(postgres_state(&pg).await, mysql_state(&source).await);
    let doubled: bool = pg
        .query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'bank.accounts'::regclass AND attname = 'doubled')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(doubled, "a generated column is left out, as in a seed");
    // A whole database at once (pg_chameleon's refresh_schema), after a transfer the replica has
    // not applied: the reload holds it, so the applier passes it over, then applies the next.
    my.query_drop(transfer).await.unwrap();
    let (code, out, err) = replica(
        locks.path(),
        &config,
        &target,
        &["reload", "--table", &format!("{source}.*"), "--json"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let reloaded: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tables: Vec<&str> = ["accounts", "history", "notes"].to_vec();
    assert_eq!(
        reloaded["tables"],
        serde_json::json!(tables.iter().map(|t| format!("{source}.{t}")).collect::<Vec<_>>()),
        "{reloaded}"
    );
    my.query_drop(transfer).await.unwrap();
    let (code, out, err) = replica(locks.path(), &config, &target, &["run", "--catch-up"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(postgres_state(&pg).await, mysql_state(&source).await);
    let (code, out, err) = replica(
        locks.path(),
        &config,
        &target,
        &["reload", "--table", &format!("{source}.nothing_here")],
    );
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("has no table") && err.contains("nothing_here"), "{err}");

    // Detach: the sequences go past the largest ids the applier wrote, the foreign keys are
    // made (the one the reload dropped comes back), cairn's bookkeeping goes.
    let most: i64 = pg
        .query_one("SELECT max(id)::int8 FROM bank.history", &[])
        .await
        .unwrap()
        .get(0);
    let (code, out, err) = replica(locks.path(), &config, &target, &["detach", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let detached: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(detached["foreign_keys_added"], 1, "{detached}");
    assert!(detached["sequences"].as_u64().unwrap() >= 2, "{detached}");
    let next: i64 = pg
        .query_one(
            "INSERT INTO bank.history (from_id, to_id, amount) VALUES (1, 1, 0) RETURNING id::int8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(next > most, "the identity hands out {next} after {most}");
    let orphan = pg
        .execute("INSERT INTO bank.notes (account_id, body) VALUES (999999, 'x')", &[])
        .await;
    assert!(orphan.is_err(), "the foreign key is not there");
    let validated: bool = pg
        .query_one(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'notes_account'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(validated);
    let cairn_left: bool = pg
        .query_one("SELECT to_regnamespace('cairn_replay') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!cairn_left, "cairn's bookkeeping is left in the detached database");
    let (code, out, err) = replica(locks.path(), &config, &target, &["run", "--catch-up"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("holds no replica"), "{err}");
}

/// The validation compares every kind of value through the mapping: the MySQL fixture seeded
/// into PostgreSQL validates equal, table by table.
#[tokio::test]
async fn the_validation_finds_the_fixture_equal_through_the_mapping() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = crate::mysql::fixture_database("my_pg_validate").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let config = config_for(locks.path(), &source);
    let (code, out, err) = run(cairn(locks.path())
        .arg("--config")
        .arg(&config)
        .args(["backup", "--source", "fx", "--to", &to, "--type", "full"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let target = pg_url_of(&format!("my_pg_validate_{}", std::process::id()));
    let (code, out, err) = run(cairn(locks.path()).arg("--config").arg(&config).args([
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
        "--rename-db",
        &format!("{source}=shop"),
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = replica(locks.path(), &config, &target, &["run", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let lines = report["validation"].to_string();
    for table in ["every_type", "customers", "orders", "order_items", "odd `name` here"] {
        assert!(
            lines.contains(&format!("{source}.{table}: ")) && !lines.contains("moved on"),
            "{table}: {report}"
        );
    }
    assert!(
        lines.contains(&format!("{source}.every_type: ")) && lines.contains("the first and last"),
        "{report}"
    );
}
