//! PostgreSQL incrementals against the private server (wal_level=logical): a full copy and
//! incrementals taken while writers run restore to exactly the source, with no change lost and
//! none applied twice.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::postgres::{connect, fresh_database, url_of};
use crate::support::{cairn, run};

const ACCOUNTS: i32 = 50;
const START_BALANCE: i64 = 1_000;

/// Writes the configuration of source `fx` (incrementals on) and returns its path.
pub(crate) fn config(locks: &Path, database: &str) -> std::path::PathBuf {
    let path = locks.join("cairn.toml");
    std::fs::write(
        &path,
        format!("[sources.fx]\nurl = \"{}\"\nincrementals = true\n", url_of(database)),
    )
    .unwrap();
    path
}

pub(crate) fn backup(locks: &Path, config: &Path, to: &str, kind: &str) -> (i32, String, String) {
    run(cairn(locks)
        .arg("--config")
        .arg(config)
        .args(["backup", "--jobs", "3", "--type", kind, "--source", "fx", "--to", to]))
}

/// `cairn` with the configuration file `config`, and `args`.
pub(crate) fn cairn_config(locks: &Path, config: &Path, args: &[&str]) -> (i32, String, String) {
    run(cairn(locks).arg("--config").arg(config).args(args))
}

/// Checks that `target` holds `source`'s schema and data, once `cairn slot drop` took cairn's
/// own objects (slot, publication, DDL log) off the source: a restore leaves them out.
pub(crate) async fn assert_restored_as_source(locks: &Path, config: &Path, source: &str, target: &str) {
    let (code, out, err) = cairn_config(locks, config, &["slot", "drop", "--source", "fx"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(crate::postgres::schema_of(target), crate::postgres::schema_of(source));
    assert_eq!(
        crate::postgres::data_of(target).await,
        crate::postgres::data_of(source).await
    );
}

/// `cairn restore` of source `fx` from `to` into `database`, with `extra` arguments.
pub(crate) fn restore(locks: &Path, to: &str, database: &str, extra: &[&str]) -> (i32, String, String) {
    let target = url_of(database);
    run(cairn(locks)
        .args([
            "restore", "--jobs", "3", "--source", "fx", "--from", to, "--target", &target,
        ])
        .args(extra))
}

/// Transfers between accounts, each one transaction that also writes a ledger row, until told
/// to stop; returns how many committed.
fn transfers(database: &str, writers: usize, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..writers)
        .map(|w| {
            let (url, stop) = (url_of(database), stop.clone());
            tokio::spawn(async move {
                let client = connect(&url).await;
                // Decoding reads flushed WAL; the test server does not wait for the flush.
                client.batch_execute("SET synchronous_commit = on").await.unwrap();
                let mut done = 0u64;
                let mut i = w as i32;
                while !stop.load(Ordering::Relaxed) {
                    let (from, to) = (i % ACCOUNTS + 1, (i * 7 + 3) % ACCOUNTS + 1);
                    i += 1;
                    if from == to {
                        continue;
                    }
                    client
                        .batch_execute(&format!(
                            "BEGIN;
                             SELECT 1 FROM accounts WHERE id IN ({from}, {to}) ORDER BY id FOR UPDATE;
                             UPDATE accounts SET balance = balance - 1, note = 'to {to}' WHERE id = {from};
                             UPDATE accounts SET balance = balance + 1 WHERE id = {to};
                             INSERT INTO ledger (from_account, to_account, amount) VALUES ({from}, {to}, 1);
                             COMMIT;"
                        ))
                        .await
                        .unwrap();
                    done += 1;
                    // Enough transactions to interleave with the copies, few enough to replay fast.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                done
            })
        })
        .collect()
}

/// Every row of the two tables, as text, in order.
async fn rows_of(database: &str) -> (Vec<String>, Vec<String>) {
    let client = connect(&url_of(database)).await;
    let text = |rows: Vec<tokio_postgres::Row>| rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>();
    let accounts = client
        .query("SELECT a::text FROM accounts a ORDER BY id", &[])
        .await
        .unwrap();
    let ledger = client
        .query("SELECT l::text FROM ledger l ORDER BY id", &[])
        .await
        .unwrap();
    (text(accounts), text(ledger))
}

#[tokio::test]
async fn incrementals_taken_under_writes_restore_to_exactly_the_source() {
    let source = fresh_database("pg_incr").await;
    let client = connect(&url_of(&source)).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
             CREATE TABLE ledger (id bigserial PRIMARY KEY, from_account int, to_account int, amount bigint,
                                  at timestamptz DEFAULT now());
             INSERT INTO accounts SELECT g, {START_BALANCE}, NULL FROM generate_series(1, {ACCOUNTS}) g;"
        ))
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    let config = config(locks.path(), &source);

    // The full copy is taken while transfers commit: those the snapshot holds must not be
    // applied again, the others must all be.
    let stop = Arc::new(AtomicBool::new(false));
    let writers = transfers(&source, 3, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (locks_path, config_path, to_path) = (locks.path().to_path_buf(), config.clone(), to.clone());
    let (code, out, err) = tokio::task::spawn_blocking(move || backup(&locks_path, &config_path, &to_path, "full"))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (locks_path, config_path, to_path) = (locks.path().to_path_buf(), config.clone(), to.clone());
    let (code, out, err) =
        tokio::task::spawn_blocking(move || backup(&locks_path, &config_path, &to_path, "incremental"))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut committed = 0;
    for writer in writers {
        committed += writer.await.unwrap();
    }
    assert!(committed > 100, "only {committed} transfers");
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");

    let target = fresh_database("pg_incr_restored").await;
    let (code, out, err) = restore(locks.path(), &to, &target, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("2 incrementals"), "{out}");
    let (accounts, ledger) = rows_of(&source).await;
    assert_eq!(ledger.len() as u64, committed);
    assert_eq!(
        rows_of(&target).await,
        (accounts, ledger),
        "the restored tables differ from the source"
    );
    // The sequence continues where the source's does.
    let next = |database: String| async move {
        connect(&url_of(&database))
            .await
            .query_one("SELECT last_value FROM ledger_id_seq", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(next(target.clone()).await, next(source.clone()).await);

    // A dry run checks every change file of the chain.
    let (code, out, err) = restore(locks.path(), &to, &target, &["--dry-run", "--clean"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("checked: 2 incrementals"), "{out}");

    // A damaged change file: nothing of the chain is restored, not even the full copy.
    let change_file = crate::support::walk(dir.path())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("changes/00000.pgoutput.zst"))
        .expect("a change file");
    let mut bytes = std::fs::read(&change_file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&change_file, bytes).unwrap();
    let untouched = fresh_database("pg_incr_damaged").await;
    let (code, out, err) = restore(locks.path(), &to, &untouched, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("damaged"), "{err}");
    let tables: i64 = connect(&url_of(&untouched))
        .await
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "a damaged chain restored something");

    // The slot is the source's: drop it so it does not hold WAL after the test.
    client
        .batch_execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()",
        )
        .await
        .unwrap();
}

/// Filters recorded with the full copy hold for its incrementals: the replay leaves out the
/// changes of tables (and rows) the full copy left out.
#[tokio::test]
async fn the_replay_leaves_out_what_the_full_copy_left_out() {
    let source = fresh_database("pg_incr_filters").await;
    let client = connect(&url_of(&source)).await;
    client
        .batch_execute(
            "SET synchronous_commit = on;
             CREATE SCHEMA skip;
             CREATE TABLE skip.noise (id int PRIMARY KEY, v text);
             CREATE TABLE kept (id int PRIMARY KEY, v text);
             CREATE TABLE logs (id int PRIMARY KEY, line text);
             INSERT INTO skip.noise SELECT g, 'n' FROM generate_series(1, 5) g;
             INSERT INTO kept SELECT g, 'k' FROM generate_series(1, 5) g;
             INSERT INTO logs SELECT g, 'l' FROM generate_series(1, 5) g;",
        )
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    let config = locks.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.fx]\nurl = \"{}\"\nincrementals = true\n[sources.fx.filters]\nexclude-schemas = [\"skip\"]\n\
             exclude-table-data = [\"public.logs\"]\n",
            url_of(&source)
        ),
    )
    .unwrap();
    let (code, out, err) = backup(locks.path(), &config, &to, "full");
    assert_eq!(code, 0, "{out}\n{err}");
    client
        .batch_execute(
            "UPDATE skip.noise SET v = 'changed'; DELETE FROM skip.noise WHERE id = 1;
             UPDATE logs SET line = 'changed'; DELETE FROM logs WHERE id = 2; INSERT INTO logs VALUES (9, 'new');
             UPDATE kept SET v = 'changed' WHERE id < 3; INSERT INTO kept VALUES (9, 'new');
             TRUNCATE skip.noise, logs;
             INSERT INTO skip.noise VALUES (7, 'again');",
        )
        .await
        .unwrap();
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");

    let target = fresh_database("pg_incr_filters_restored").await;
    let (code, out, err) = restore(locks.path(), &to, &target, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let restored = connect(&url_of(&target)).await;
    let text = |rows: Vec<tokio_postgres::Row>| rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>();
    let kept = "SELECT k::text FROM kept k ORDER BY id";
    assert_eq!(
        text(restored.query(kept, &[]).await.unwrap()),
        text(client.query(kept, &[]).await.unwrap())
    );
    let logs: i64 = restored
        .query_one("SELECT count(*) FROM logs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(logs, 0, "the rows of a table copied without data were replayed");
    let skip: i64 = restored
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = 'skip'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(skip, 0);
    client
        .batch_execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()",
        )
        .await
        .unwrap();
}

/// The fixture (every column type, quoted names, partitions, domains, a TOASTed value) changed
/// after its full copy by updates, deletes, inserts and a TRUNCATE replays to exactly the source.
#[tokio::test]
async fn every_kind_of_change_to_the_fixture_replays_identically() {
    let source = crate::postgres::fixture_database("pg_incr_types").await;
    let client = connect(&url_of(&source)).await;
    client
        .batch_execute(
            "SET synchronous_commit = on;
             ALTER TABLE every_type REPLICA IDENTITY FULL;
             ALTER TABLE bookings REPLICA IDENTITY FULL;
             ALTER TABLE events_log REPLICA IDENTITY FULL;",
        )
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    let config = config(locks.path(), &source);
    let (code, out, err) = backup(locks.path(), &config, &to, "full");
    assert_eq!(code, 0, "{out}\n{err}");
    for statement in [
        // Every column of every row, through text, numbers, times, arrays, ranges, JSON, enums…
        "UPDATE every_type SET t_text = coalesce(t_text, '') || E' \\\\ changed\\n', t_varchar = 'v2', t_char = 'c',
           t_bytea = '\\x00010203'::bytea, t_bool = NOT coalesce(t_bool, false), t_int2 = -1, t_int4 = -2, t_int8 = -3,
           t_numeric = -0.000001, t_real = 1.5, t_double = -2.25e-300, t_money = '-1.50', t_date = '2000-02-29',
           t_time = '00:00:00.000001', t_timetz = '23:59+14', t_timestamp = '1999-12-31 23:59:59.999999',
           t_timestamptz = '2038-01-19 03:14:08+00', t_interval = '-1 day', t_uuid = gen_random_uuid(),
           t_json = '[1, \"two\"]', t_jsonb = '{\"changed\": true}', t_xml = '<changed/>', t_inet = '::1',
           t_cidr = '10.0.0.0/8', t_macaddr = '08:00:2b:01:02:03', t_bit = B'1010', t_varbit = B'1',
           t_point = point(-1, 1), t_box = box(point(0, 0), point(2, 2)), t_int_range = '[1,5)',
           t_ts_range = '[2026-01-01,)', t_int_array = '{3,2,1}', t_text_array = '{\"a b\",NULL}',
           t_matrix = '{{5,6},{7,8}}', t_mood = 'très \"heureux\"', t_positive = 9, t_pair = ROW(2, 'two'),
           t_tsvector = 'changed words', t_default = NULL",
        "DELETE FROM every_type WHERE ctid = (SELECT min(ctid) FROM every_type)",
        "INSERT INTO every_type (t_text, t_int4) VALUES ('late', 21)",
        // The big TOASTed body is not in the update's change: it must survive unchanged.
        "UPDATE big_values SET blob = '\\xdeadbeef'::bytea WHERE id = 1",
        "UPDATE \"Sales Dept\".\"Order Lines\" SET \"Select\" = 'sel' || \"Id\", \"weird \"\"quoted\"\" col\" = NULL WHERE \"Id\" < 20",
        "DELETE FROM \"Sales Dept\".\"Order Lines\" WHERE \"Id\" BETWEEN 20 AND 30",
        "UPDATE \"user\" SET \"group\" = 'owners' WHERE \"order\" = 1",
        "UPDATE customers SET email = NULL WHERE id < 10",
        "UPDATE orders SET status = 'happy', note = NULL WHERE id < 100",
        "DELETE FROM orders WHERE id BETWEEN 100 AND 150",
        "UPDATE measurements SET value = value * 2, taken_on = date '2026-06-01' WHERE id < 10",
        "DELETE FROM events_log WHERE at < timestamptz '2026-01-01 00:00:10+00'",
        "UPDATE events_log SET payload = payload || '{\"seen\": 1}' WHERE at < timestamptz '2026-01-01 00:00:20+00'",
        "UPDATE inventory.stock SET quantity = quantity + 1, attributes = NULL",
        "TRUNCATE bookings",
        "INSERT INTO bookings VALUES (3, '[2026-02-01,2026-02-02)')",
        "SELECT nextval('standalone_seq')",
    ] {
        client.batch_execute(statement).await.unwrap();
    }
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");

    let target = fresh_database("pg_incr_types_restored").await;
    let (code, out, err) = restore(locks.path(), &to, &target, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    crate::postgres::assert_same_data(&source, &target).await;
    assert_restored_as_source(locks.path(), &config, &source, &target).await;
}
