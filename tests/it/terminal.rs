//! What a person at a terminal and a log shipper see: progress bars on a pseudo-terminal
//! (cairn run under `script`), none when stderr is not a terminal or with `--quiet`, and one
//! JSON object per line with `--log-format json`.

use std::path::Path;
use std::process::Command;

use crate::postgres::{connect, fresh_database, url_of};
use crate::support::{cairn, run};

/// Runs `cairn ARGS` on a pseudo-terminal (util-linux `script`) with the environment of
/// [`cairn`]; returns the exit code and everything the terminal showed.
fn on_terminal(lock_dir: &Path, args: &[&str]) -> (i32, String) {
    let template = cairn(lock_dir);
    let mut command = Command::new("script");
    let line = std::iter::once(env!("CARGO_BIN_EXE_cairn"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    command.args(["-qefc", &line, "/dev/null"]).current_dir(lock_dir);
    command.env_clear();
    for (key, value) in template.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    for key in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command.env("TERM", "xterm");
    let (code, out, err) = run(&mut command);
    (code, format!("{out}{err}"))
}

#[tokio::test]
async fn progress_bars_on_a_terminal_log_lines_elsewhere_and_json_logs_for_shippers() {
    let source = fresh_database("pg_terminal").await;
    connect(&url_of(&source))
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let backup = ["backup", "--name", "fx", "--source", &url_of(&source), "--to", &to];
    let bar = |shown: &str, what: &str| shown.contains(&format!("{what} [")) && shown.contains("] 1/1");

    let (code, shown) = on_terminal(locks.path(), &backup);
    assert_eq!(code, 0, "{shown}");
    assert!(bar(&shown, "fx: copy, chunks"), "no bar for the copy:\n{shown}");
    assert!(shown.contains("full copy") && shown.contains("recorded"), "{shown}");

    let (code, shown) = on_terminal(locks.path(), &["verify", "--from", &to, "--source", "fx"]);
    assert_eq!(code, 0, "{shown}");
    assert!(bar(&shown, "fx: verify, copies"), "no bar for verify:\n{shown}");

    let target = fresh_database("pg_terminal_target").await;
    let (code, shown) = on_terminal(
        locks.path(),
        &["restore", "--from", &to, "--source", "fx", "--target", &url_of(&target)],
    );
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains(": data files (stored size) ["),
        "no bar for the restore:\n{shown}"
    );

    // --quiet on a terminal: no bar, no informational line; the result still goes to stdout.
    let quiet: Vec<&str> = backup.iter().copied().chain(["--quiet"]).collect();
    let (code, shown) = on_terminal(locks.path(), &quiet);
    assert_eq!(code, 0, "{shown}");
    assert!(!shown.contains(" [=") && !shown.contains("INFO"), "{shown}");
    assert!(shown.contains("recorded"), "{shown}");

    // Not a terminal (cron, a pipe): no bar drawing codes on stderr.
    let (code, out, err) = run(cairn(locks.path()).args(backup));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("chunks [") && !err.contains('\u{1b}'), "{err}");

    // A log shipper: every line of stderr is one JSON object with a level and a message.
    let (code, out, err) = run(cairn(locks.path()).args(["--log-format", "json"]).args(backup));
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 2, "{err}");
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            event["level"].is_string() && event["fields"]["message"].is_string(),
            "{line}"
        );
    }
}
