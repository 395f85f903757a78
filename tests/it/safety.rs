//! What a backup tool must never do, each proved against real servers and destinations: record
//! a copy that cannot be restored, lose a copy a manifest proves, stay stuck after a crash, or
//! touch files it was not asked to touch.

use std::path::Path;

use crate::postgres::{fixture_database, url_of};
use crate::support::{cairn, cairn_s3, cairn_under, run, walk};

/// A file size limit (as a full disk does) cuts a data file short: the run must fail and
/// record nothing, instead of recording a copy whose files are truncated.
#[tokio::test]
async fn a_write_cut_short_fails_the_backup_and_records_nothing() {
    let source = fixture_database("pg_full_disk").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    // 20 KiB per file; the signal a process gets for passing the limit is ignored, so the write
    // itself fails, as it does on a full disk.
    let (code, out, err) = run(cairn_under(locks.path(), "trap '' XFSZ; ulimit -f 20")
        .env("CAIRN_CHUNK_SIZE_MIB", "1")
        .args(["backup", "--name", "fx", "--source", &url_of(&source), "--to", &to]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("File too large") || err.contains("holds"),
        "the error says what failed: {err}"
    );
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.ends_with("manifest.json") || p.ends_with("status.json"))
        .collect();
    assert!(leftovers.is_empty(), "nothing is recorded: {leftovers:?}");
}

/// Runs `cairn backup` of the PostgreSQL `database` as source `fx` into `to`.
fn backup_pg(locks: &Path, database: &str, to: &str) -> (i32, String, String) {
    run(cairn(locks).args(["backup", "--name", "fx", "--source", &url_of(database), "--to", to]))
}

/// `cairn status --json` of source `fx`.
fn status_json(locks: &Path, to: &str) -> serde_json::Value {
    let (code, out, err) = run(cairn(locks).args(["status", "--from", to, "--source", "fx", "--json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

fn copy_ids(status: &serde_json::Value) -> Vec<String> {
    status["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// One damaged byte in `status.json` must not hide the newest copy from a restore, nor make the
/// next backup write a status without it or reuse a generation number.
#[tokio::test]
async fn a_damaged_status_never_hides_the_newest_copy() {
    let source = fixture_database("pg_status_damage").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let status_file = dir.path().join("backups/fx/status.json");
    let mut after_first = Vec::new();
    for _ in 0..2 {
        let (code, out, err) = backup_pg(locks.path(), &source, &to);
        assert_eq!(code, 0, "{out}\n{err}");
        if after_first.is_empty() {
            after_first = std::fs::read(&status_file).unwrap();
        }
    }
    let before = copy_ids(&status_json(locks.path(), &to));
    assert_eq!(before.len(), 2);
    // The second copy of the status is one generation behind; the run history's update after
    // each copy would let it know the newest copy. A status that is a whole backup behind is
    // what a lost or stale write leaves, and the manifest must still bring the copy back.
    std::fs::write(dir.path().join("backups/fx/status.previous.json"), &after_first).unwrap();
    let damaged_generation = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&status_file).unwrap())
        .unwrap()["generation"]
        .as_u64()
        .unwrap();
    let mut bytes = std::fs::read(&status_file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x04;
    std::fs::write(&status_file, bytes).unwrap();

    let (code, out, err) = run(cairn(locks.path()).args([
        "restore",
        "--from",
        &to,
        "--source",
        "fx",
        "--target",
        &url_of(&format!("{source}_never")),
        "--dry-run",
        "--json",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["chain"][0]["id"], before[1], "latest is the newest copy: {out}");
    assert!(
        err.contains("status.json") && err.contains(&before[1]),
        "said loudly: {err}"
    );

    let (code, out, err) = backup_pg(locks.path(), &source, &to);
    assert_eq!(code, 0, "{out}\n{err}");
    let status = status_json(locks.path(), &to);
    let after = copy_ids(&status);
    assert_eq!(after.len(), 3, "{status}");
    assert_eq!(after[..2], before[..]);
    assert_eq!(status["read_from"], "latest");
    assert!(
        status["generation"].as_u64().unwrap() > damaged_generation,
        "generation {damaged_generation} was the damaged one: {status}"
    );
}

/// A backup killed with SIGKILL leaves its lease behind; the next run on the same host must not
/// wait for the lease to expire (600 s) when the holder provably no longer exists.
#[tokio::test]
async fn a_killed_backup_does_not_block_the_next_one() {
    let source = fixture_database("pg_killed").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    // Hold a lock the copy waits for, so the run is surely inside its lease when it is killed.
    let blocker = crate::postgres::connect(&url_of(&source)).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut child = cairn(locks.path())
        .args(["backup", "--name", "fx", "--source", &url_of(&source), "--to", &to])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lease = dir.path().join("backups/fx/lock.json");
    for _ in 0..200 {
        if lease.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(lease.exists(), "the run took its lease");
    child.kill().unwrap();
    child.wait().unwrap();
    blocker.batch_execute("ROLLBACK").await.unwrap();
    assert!(lease.exists(), "a killed run cannot release its lease");

    let started = std::time::Instant::now();
    let (code, out, err) = backup_pg(locks.path(), &source, &to);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("no process with that pid"), "the takeover is said: {err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_eq!(copy_ids(&status_json(locks.path(), &to)).len(), 1);
}

/// Every conditional write of a backup (lease, manifest, status) loses its answer once, after
/// the store applied it: the run must still succeed, record its copy and release its lease.
#[tokio::test]
async fn lost_answers_to_conditional_writes_do_not_fail_a_backup() {
    let source = fixture_database("pg_lossy").await;
    let server = crate::support::s3_server();
    let bucket = server.new_bucket("lossy");
    let to = server.url(&bucket, "b");
    let locks = tempfile::tempdir().unwrap();
    let (code, out, err) =
        run(cairn_s3(locks.path()).args(["backup", "--name", "fx", "--source", &url_of(&source), "--to", &to]));
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = run(cairn_s3(locks.path()).args(["status", "--from", &to, "--source", "fx", "--json"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(copy_ids(&status[0]).len(), 1, "{status}");
    assert_eq!(status[0]["read_from"], "latest");
    let destination = server.destination_at(&bucket, "b").await;
    assert!(
        destination.head("fx/lock.json").await.unwrap().is_none(),
        "the lease was released"
    );

    // An upload a killed run left open is shown, so it can be cleaned.
    server
        .client()
        .create_multipart_upload()
        .bucket(&bucket)
        .key("b/fx/copies/killed/data/t.zst")
        .send()
        .await
        .unwrap();
    let (code, out, err) = run(cairn_s3(locks.path()).args(["status", "--from", &to, "--source", "fx"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("1 unfinished upload left by runs that were killed")
            && out.contains("fx/copies/killed/data/t.zst"),
        "{out}"
    );
}

/// Connections that break while a restore downloads: resumed where they broke, and, when they
/// keep breaking, reported as unreachable (exit 75) — never as damaged files.
#[tokio::test]
async fn broken_downloads_are_resumed_and_never_called_damage() {
    let source = fixture_database("pg_cut").await;
    let server = crate::support::s3_server();
    let bucket = server.new_bucket("cut");
    let to = server.url(&bucket, "b");
    let locks = tempfile::tempdir().unwrap();
    let with_keys = |mut command: std::process::Command| {
        command.env("CAIRN_CHUNK_SIZE_MIB", "1");
        command
    };
    let (code, out, err) = run(with_keys(cairn_s3(locks.path())).args([
        "backup",
        "--name",
        "fx",
        "--source",
        &url_of(&source),
        "--to",
        &to,
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let restore = |target: &str| {
        run(with_keys(cairn_s3(locks.path())).args([
            "restore",
            "--from",
            &to,
            "--source",
            "fx",
            "--target",
            &url_of(target),
        ]))
    };

    // Every object (status, manifest, each data file) breaks off twice before it arrives whole.
    server.cut_downloads(&bucket, 2);
    let target = format!("{source}_resumed");
    let (code, out, err) = restore(&target);
    assert_eq!(code, 0, "{out}\n{err}");
    crate::postgres::assert_same_data(&source, &target).await;

    // A store that never delivers a whole object: retry later, not "damaged".
    server.cut_downloads(&bucket, u32::MAX);
    let (code, out, err) = restore(&format!("{source}_severed"));
    assert_eq!(code, 75, "{out}\n{err}");
    assert!(!err.contains("damaged"), "{err}");
    assert!(err.contains("cannot reach") && err.contains("broke off"), "{err}");
    server.cut_downloads(&bucket, 0);
}

/// The destination holds what docs/layout.md lists and nothing else: no hidden lock files
/// beside status files and manifests, no folder left by a run whose source was mistyped.
#[tokio::test]
async fn the_destination_holds_only_what_the_layout_lists() {
    let source = fixture_database("pg_droppings").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("backups");
    let to = root.display().to_string();
    for _ in 0..2 {
        let (code, out, err) = backup_pg(locks.path(), &source, &to);
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let (code, out, err) = run(cairn(locks.path()).args([
        "backup",
        "--name",
        "typo",
        "--source",
        "postgres://postgres@127.0.0.1:1/nothing",
        "--to",
        &to,
    ]));
    assert_eq!(code, 75, "{out}\n{err}");
    let mut unexpected = Vec::new();
    for path in walk(&root) {
        let key = path.strip_prefix(&root).unwrap().display().to_string();
        let listed = key == "fx/status.json"
            || key == "fx/status.previous.json"
            || (key.starts_with("fx/copies/")
                && (key.ends_with("/manifest.json") || key.contains("/schema/") || key.contains("/data/")));
        let hidden = key.split('/').any(|segment| segment.starts_with('.'));
        if !listed || hidden {
            unexpected.push(key);
        }
    }
    assert!(unexpected.is_empty(), "not in docs/layout.md: {unexpected:?}");
    let folders: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(folders, ["fx"], "the mistyped source left a folder");
}

/// Every file below `dir` (none when it does not exist).
fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    if dir.exists() { walk(dir) } else { Vec::new() }
}

/// A dry run connects and checks what the run would (login, reachability), and a run that
/// fails those checks fails before it writes anything: no destination folder, no lock file.
#[tokio::test]
async fn dry_runs_check_the_source_and_failed_checks_write_nothing() {
    let pg = fixture_database("pg_preflight").await;
    // Creating the database writes to the shared server's binary log, which other MariaDB tests
    // compare positions against.
    let _serial = crate::mysql::ONE_AT_A_TIME.lock().await;
    let my = crate::mysql::fresh_database("my_preflight").await;
    let wrong_password = [
        url_of(&pg).replacen(":cairn-test-pw@", ":wrong@", 1),
        crate::mysql::url_of(&my).replacen(":cairn-test-pw@", ":wrong@", 1),
    ];
    let unreachable = ["postgres://u@127.0.0.1:1/db", "mysql://u@127.0.0.1:1/db"];
    for (url, expected) in wrong_password
        .iter()
        .map(|u| (u.as_str(), 2))
        .chain(unreachable.iter().map(|u| (*u, 75)))
    {
        for dry_run in [true, false] {
            let locks = tempfile::tempdir().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let to = dir.path().join("backups");
            let mut command = cairn(locks.path());
            command
                .args(["backup", "--name", "pf", "--source", url, "--to"])
                .arg(&to);
            if dry_run {
                command.arg("--dry-run");
            }
            let (code, out, err) = run(&mut command);
            assert_eq!(code, expected, "{url} dry run {dry_run}: {out}\n{err}");
            assert!(!err.contains("wrong@") && !err.contains(":wrong"), "{err}");
            assert!(!to.exists(), "{url} dry run {dry_run}: the destination was created");
            assert!(files_in(locks.path()).is_empty(), "{url}: {:?}", files_in(locks.path()));
        }
    }
    // A source that is fine: the dry run says what it checked.
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, out, err) = run(cairn(locks.path()).args([
        "backup",
        "--name",
        "pf",
        "--source",
        &url_of(&pg),
        "--to",
        &to,
        "--dry-run",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("checked: PostgreSQL") && out.contains("pg_dump"), "{out}");
}

/// A restore dry run checks the target as the restore would: a non-empty target is refused,
/// and with --clean it says what would be dropped and drops nothing.
#[tokio::test]
async fn a_restore_dry_run_checks_the_target() {
    let source = fixture_database("pg_dry_target").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, out, err) = backup_pg(locks.path(), &source, &to);
    assert_eq!(code, 0, "{out}\n{err}");
    let target = crate::postgres::fresh_database("pg_dry_busy").await;
    crate::postgres::connect(&url_of(&target))
        .await
        .batch_execute("CREATE TABLE junk (id int)")
        .await
        .unwrap();
    let restore = |extra: &[&str]| {
        run(cairn(locks.path())
            .args([
                "restore",
                "--from",
                &to,
                "--source",
                "fx",
                "--target",
                &url_of(&target),
                "--dry-run",
            ])
            .args(extra))
    };
    let (code, _, err) = restore(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not empty"), "{err}");
    let (code, out, err) = restore(&["--clean"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("--clean drops"), "{out}");
    let (code, _, err) = restore(&["--json"]);
    assert_eq!(code, 2, "{err}");
    let still: i64 = crate::postgres::connect(&url_of(&target))
        .await
        .query_one("SELECT count(*) FROM pg_class WHERE relname = 'junk'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, 1, "the dry run dropped nothing");
}

/// A stored data file replaced by another valid one of the same table (same rows, other
/// values: zstd and the row count accept it) is refused by its MD5 before anything of it is
/// loaded.
#[tokio::test]
async fn a_valid_file_of_another_copy_is_refused_by_its_checksum() {
    let source = fixture_database("pg_swapped").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("backups");
    let to = root.display().to_string();
    let (code, out, err) = backup_pg(locks.path(), &source, &to);
    assert_eq!(code, 0, "{out}\n{err}");
    crate::postgres::connect(&url_of(&source))
        .await
        .batch_execute("UPDATE customers SET name = name || ' (renamed)'")
        .await
        .unwrap();
    let (code, out, err) = backup_pg(locks.path(), &source, &to);
    assert_eq!(code, 0, "{out}\n{err}");
    let ids = copy_ids(&status_json(locks.path(), &to));
    let customers = |id: &str| {
        walk(&root.join("fx/copies").join(id))
            .into_iter()
            .find(|p| p.to_string_lossy().contains("public.customers"))
            .expect("the customers table's data file")
    };
    let (first, second) = (customers(&ids[0]), customers(&ids[1]));
    assert_ne!(std::fs::read(&first).unwrap(), std::fs::read(&second).unwrap());
    std::fs::copy(&second, &first).unwrap();

    let target = format!("{source}_swapped");
    let (code, out, err) = run(cairn(locks.path()).args([
        "restore",
        "--from",
        &to,
        "--source",
        "fx",
        "--copy",
        &ids[0],
        "--target",
        &url_of(&target),
    ]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("public.customers") && err.contains("MD5"), "{err}");
    let renamed: i64 = crate::postgres::connect(&url_of(&target))
        .await
        .query_one(
            "SELECT count(*) FROM pg_class c WHERE c.relname = 'customers' AND EXISTS
               (SELECT 1 FROM customers WHERE name LIKE '%(renamed)')",
            &[],
        )
        .await
        .map(|row| row.get(0))
        .unwrap_or(0);
    assert_eq!(renamed, 0, "no row of the swapped file was loaded");
}
