//! The run history: every backup, restore, verify and purge leaves its outcome in the source's
//! status — a failure too, even one that happened before anything was written, with the
//! passwords of URLs masked — and `cairn status` shows it. A failure alone never makes a
//! source.

use crate::postgres::{connect, fresh_database, url_of};
use crate::support::{cairn, run, walk};

fn status_json(lock_dir: &std::path::Path, to: &str, extra: &[&str]) -> serde_json::Value {
    let (code, out, err) = run(cairn(lock_dir)
        .args(["status", "--json", "--source", "fx", "--from", to])
        .args(extra));
    assert_eq!(code, 0, "{out}\n{err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

#[tokio::test]
async fn every_run_is_recorded_and_failures_are_listed_without_secrets() {
    let source = fresh_database("pg_history").await;
    connect(&url_of(&source))
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();

    // The first backup of a source that fails writes nothing: a mistyped name gets no status.
    let (code, _, _) = run(cairn(locks.path()).args([
        "backup",
        "--name",
        "fx",
        "--source",
        &url_of("no_such_database_here"),
        "--to",
        &to,
    ]));
    assert_ne!(code, 0);
    assert!(!dir.path().join("fx").exists(), "a failed first backup made a source");

    let (code, out, err) =
        run(cairn(locks.path()).args(["backup", "--name", "fx", "--source", &url_of(&source), "--to", &to]));
    assert_eq!(code, 0, "{out}\n{err}");
    let status = status_json(locks.path(), &to, &[]);
    let copy = status["copies"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(status["last_run"]["command"], "backup", "{status}");
    assert_eq!(status["last_run"]["exit_code"], 0);
    assert_eq!(status["last_run"]["copy"].as_str(), Some(copy.as_str()));
    assert!(status["last_run"]["bytes"].as_u64().unwrap() > 0);

    // A backup that fails before anything is written: its database does not exist. It is
    // recorded (the source exists now), and the password in the URL does not reach the status.
    let mut wrong = url::Url::parse(&url_of("no_such_database_here")).unwrap();
    wrong.set_password(Some("hunter2secret")).unwrap();
    let (code, out, err) =
        run(cairn(locks.path()).args(["backup", "--name", "fx", "--source", wrong.as_str(), "--to", &to]));
    assert_ne!(code, 0, "{out}\n{err}");
    let failed = status_json(locks.path(), &to, &["--errors"]);
    let failures = failed["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failed}");
    assert_eq!(failures[0]["command"], "backup");
    assert_eq!(failures[0]["exit_code"], code);
    let error = failures[0]["error"].as_str().unwrap();
    assert!(error.contains("no_such_database_here"), "{error}");
    for file in walk(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("hunter2secret"),
            "{} holds the password",
            file.display()
        );
    }

    let (code, out, err) = run(cairn(locks.path()).args(["verify", "--from", &to, "--source", "fx"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(status_json(locks.path(), &to, &[])["last_run"]["command"], "verify");

    let target = fresh_database("pg_history_target").await;
    let (code, out, err) =
        run(cairn(locks.path()).args(["restore", "--from", &to, "--source", "fx", "--target", &url_of(&target)]));
    assert_eq!(code, 0, "{out}\n{err}");
    let restored = status_json(locks.path(), &to, &[]);
    assert_eq!(restored["last_run"]["command"], "restore", "{restored}");
    assert_eq!(restored["last_run"]["copy"].as_str(), Some(copy.as_str()));

    // A restore that fails (the target is not empty now) is a failure of its own.
    let (code, _, _) =
        run(cairn(locks.path()).args(["restore", "--from", &to, "--source", "fx", "--target", &url_of(&target)]));
    assert_ne!(code, 0);

    let (code, out, err) = run(cairn(locks.path()).args(["purge", "--from", &to, "--source", "fx", "--apply"]));
    assert_eq!(code, 0, "{out}\n{err}");
    // A dry run is not a run.
    let (code, out, err) = run(cairn(locks.path()).args(["purge", "--from", &to, "--source", "fx"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(status_json(locks.path(), &to, &[])["last_run"]["command"], "purge");

    let (code, out, err) = run(cairn(locks.path()).args(["status", "--from", &to, "--source", "fx", "--errors"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 failed runs of the last 6 runs"), "{out}");
    let (newest, oldest) = (out.find("restore on").unwrap(), out.find("backup on").unwrap());
    assert!(newest < oldest, "newest first:\n{out}");
    let (code, out, _) = run(cairn(locks.path()).args(["status", "--from", &to, "--source", "fx"]));
    assert_eq!(code, 0);
    assert!(out.contains("last run: purge on"), "{out}");

    // A verify of a mistyped source name fails and does not make it a source.
    let (code, _, _) = run(cairn(locks.path()).args(["verify", "--from", &to, "--source", "fxx"]));
    assert_ne!(code, 0);
    assert!(!dir.path().join("fxx").exists(), "a typo became a source");
}
