//! PostgreSQL incrementals under write load: a chain taken while pgbench writes, across WAL
//! switches and checkpoints, with incrementals killed at arbitrary moments, restores to exactly
//! the source — no change lost, none applied twice.

use std::process::Command;
use std::time::Duration;

use crate::postgres::{connect, fresh_database, pg_tool, url_of};
use crate::postgres_incrementals::{assert_restored_as_source, backup, config, restore};
use crate::support::cairn;

#[tokio::test]
async fn a_chain_taken_under_pgbench_with_killed_incrementals_restores_to_the_source() {
    let source = fresh_database("pg_load").await;
    let url = url_of(&source);
    let init = Command::new(pg_tool("pgbench"))
        .args(["-i", "-s", "1", "-q", &url])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    let config = config(locks.path(), &source);

    // pgbench_history has no key: incrementals refuse to start, naming it and the fix.
    let (code, out, err) = backup(locks.path(), &config, &to, "full");
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("pgbench_history") && err.contains("REPLICA IDENTITY FULL"),
        "{err}"
    );
    let client = connect(&url).await;
    // Decoding reads flushed WAL only: with the test server's asynchronous commits, the last
    // transactions before an incremental may not be in it yet (nor durable); pgbench's commits
    // are flushed, so the last incremental ends after all of them.
    client
        .batch_execute(&format!(
            "ALTER TABLE pgbench_history REPLICA IDENTITY FULL; ALTER DATABASE {source} SET synchronous_commit = on"
        ))
        .await
        .unwrap();

    // A steady write load, bounded so the replay stays short.
    let mut load = Command::new(pg_tool("pgbench"))
        .args(["-c", "2", "-j", "1", "-R", "250", "-T", "120", "-n", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_background = |kind: &'static str| {
        let (locks, config, to) = (locks.path().to_path_buf(), config.clone(), to.clone());
        tokio::task::spawn_blocking(move || backup(&locks, &config, &to, kind))
    };
    let (code, out, err) = in_background("full").await.unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    for kill_after in [
        Duration::from_millis(150),
        Duration::from_millis(600),
        Duration::from_millis(40),
    ] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        client
            .batch_execute("SELECT pg_switch_wal(); CHECKPOINT")
            .await
            .unwrap();
        // An incremental killed at some moment: stored or not, the next one continues exactly.
        let mut killed = cairn(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["backup", "--type", "incremental", "--source", "fx", "--to", &to])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(kill_after).await;
        let _ = killed.kill();
        let _ = killed.wait();
        let (code, out, err) = in_background("incremental").await.unwrap();
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let still_writing = load.try_wait().unwrap().is_none();
    let _ = load.kill();
    let _ = load.wait();
    assert!(
        still_writing,
        "pgbench ended before the chain did; the test proves nothing"
    );
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");

    let target = fresh_database("pg_load_restored").await;
    let (code, out, err) = restore(locks.path(), &to, &target, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let history: i64 = client
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        history > 500,
        "only {history} pgbench transactions: too few to prove anything"
    );
    assert_restored_as_source(locks.path(), &config, &source, &target).await;
}
