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
