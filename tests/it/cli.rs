//! The real binary: exit codes, messages, secrets kept out of output, `status` and dry runs.

use std::path::Path;

use cairn::repo::kinds::CopyKind;
use cairn::repo::layout;

use crate::status::{damage, full_and_incremental, make_copy, take_lock};
use crate::support::{S3_ACCESS_KEY, S3_SECRET_KEY, cairn, local_destination, postgres_url, run, s3_server};

/// Every file under `dir`, relative.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found
}

#[test]
fn help_documents_commands_and_exit_codes() {
    let locks = tempfile::tempdir().unwrap();
    let (code, out, _) = run(cairn(locks.path()).arg("--help"));
    assert_eq!(code, 0);
    for word in [
        "backup",
        "restore",
        "status",
        "verify",
        "purge",
        "replica",
        "config",
        "75",
        "temporary",
    ] {
        assert!(out.contains(word), "--help lacks {word}:\n{out}");
    }
    let (code, out, _) = run(cairn(locks.path()).args(["backup", "--help"]));
    assert_eq!(code, 0);
    for word in [
        "--run-type",
        "--type",
        "--jobs",
        "--dry-run",
        "--source",
        "--to",
        "Exit codes",
    ] {
        assert!(out.contains(word), "backup --help lacks {word}:\n{out}");
    }
    use clap::CommandFactory;
    cairn::cli::Cli::command().debug_assert();
}

#[test]
fn replica_commands_refuse_bad_usage_with_exit_2() {
    let locks = tempfile::tempdir().unwrap();
    for command in ["run", "status", "stop"] {
        let (code, _, err) = run(cairn(locks.path()).args(["replica", command, "--anything", "x"]));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--anything"), "{err}");
    }
    // The applier reads the source as configured: a name that is not configured is a usage error.
    let (code, _, err) = run(cairn(locks.path()).args([
        "replica",
        "run",
        "--source",
        "nowhere",
        "--target",
        "mysql://root@127.0.0.1:1/",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"nowhere\" must be a configured source"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let locks = tempfile::tempdir().unwrap();
    let (code, _, err) = run(cairn(locks.path()).args([
        "backup",
        "--run-type",
        "fortnightly",
        "--source",
        "mysql://h",
        "--to",
        "/tmp/x",
    ]));
    assert_eq!(code, 2);
    assert!(err.contains("fortnightly") && err.contains("hourly"), "{err}");
    let (code, _, err) = run(cairn(locks.path()).args(["backup"]));
    assert_eq!(code, 2);
    assert!(err.contains("no source to back up"), "{err}");
    let (code, _, err) = run(cairn(locks.path()).args(["backup", "--source", "postgres://u:pw-in-url@h/db"]));
    assert_eq!(code, 2);
    assert!(err.contains("--to") && !err.contains("pw-in-url"), "{err}");
    let (code, _, err) = run(cairn(locks.path()).args(["backup", "--source", "ftp://h", "--to", "/tmp/x"]));
    assert_eq!(code, 2);
    assert!(err.contains("unsupported scheme"), "{err}");
}

#[test]
fn configuration_errors_name_the_file_and_key() {
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.toml");
    std::fs::write(&path, "[retention]\nhourly = 24\ndayly = 7\n").unwrap();
    let (code, _, err) = run(cairn(locks.path()).arg("--config").arg(&path).args(["config", "check"]));
    assert_eq!(code, 2);
    assert!(
        err.contains(&path.display().to_string()) && err.contains("retention") && err.contains("dayly"),
        "{err}"
    );
    let (code, _, err) = run(cairn(locks.path()).args(["config", "check"]).env("CAIRN_JOBS", "lots"));
    assert_eq!(code, 2);
    assert!(err.contains("CAIRN_JOBS"), "{err}");
    // A variable that is not UTF-8 (a Latin-1 value from an old shell) is not cairn's business,
    // unless it is one of cairn's own.
    use std::os::unix::ffi::OsStrExt;
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9");
    let (code, out, err) = run(cairn(locks.path()).args(["config", "check"]).env("LEGACY_NAME", latin1));
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, _, err) = run(cairn(locks.path()).args(["config", "check"]).env("CAIRN_JOBS", latin1));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("CAIRN_JOBS") && err.contains("UTF-8"), "{err}");
    let (code, _, err) = run(cairn(locks.path()).args(["--config", "/nonexistent/cairn.toml", "config", "check"]));
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/cairn.toml"), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "the cause is said once: {err}");
    // The shipped example names a password file: config check reads it, as a backup would.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cairn.example.toml");
    let (code, _, err) = run(cairn(locks.path())
        .arg("--config")
        .arg(&example)
        .args(["config", "check"])
        .env("CAIRN_NOTIFICATIONS__WEBHOOK_URL", "https://hooks.example.com/T000"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/etc/cairn/app-db.password"), "{err}");
    let password = dir.path().join("app-db.password");
    std::fs::write(&password, "secret\n").unwrap();
    let text = std::fs::read_to_string(&example)
        .unwrap()
        .replace("/etc/cairn/app-db.password", &password.display().to_string());
    let copy = dir.path().join("example.toml");
    std::fs::write(&copy, text).unwrap();
    // Its [notifications] take the webhook URL from the environment, as the example says.
    let (code, _, err) = run(cairn(locks.path()).arg("--config").arg(&copy).args(["config", "check"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("notifications.webhook-url"), "{err}");
    let (code, out, err) = run(cairn(locks.path())
        .arg("--config")
        .arg(&copy)
        .args(["config", "check"])
        .env("CAIRN_NOTIFICATIONS__WEBHOOK_URL", "https://hooks.example.com/T000"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration is valid"), "{out}");
}

/// `config check` refuses what `backup` refuses, with the same key named.
#[test]
fn config_check_rejects_what_backup_rejects() {
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[destinations.d]\nurl = \"/tmp/d\"\n[sources.pg]\nurl = \"postgres://u@h/db\"\npassword-file = \"/nonexistent/pw\"\n",
            "sources.pg.password-file",
        ),
        (
            "[destinations.a]\nurl = \"/tmp/a\"\n[destinations.b]\nurl = \"/tmp/b\"\n[sources.pg]\nurl = \"postgres://u@h/db\"\n",
            "sources.pg.destination",
        ),
        (
            "[destinations.d]\nurl = \"/tmp/d\"\n[sources.pg]\nurl = \"postgres://u@h/db\"\nconsistency = \"lock-free\"\n",
            "sources.pg.consistency",
        ),
    ];
    for (text, key) in cases {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        for args in [&["config", "check"][..], &["backup", "--dry-run"][..]] {
            let (code, _, err) = run(cairn(locks.path()).arg("--config").arg(&path).args(args));
            assert_eq!(code, 2, "{args:?} {key}: {err}");
            assert!(err.contains(key), "{args:?}: {err}");
        }
    }
    let (code, _, err) = run(cairn(locks.path()).args([
        "backup",
        "--source",
        "postgres://u@127.0.0.1:1/db",
        "--to",
        &dir.path().join("b").display().to_string(),
        "--checksum",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--checksum"), "{err}");
}

#[test]
fn secrets_never_reach_output() {
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.toml");
    std::fs::write(
        &path,
        "[sources.a]\nurl = \"postgres://u:url-secret-1@h/db\"\n[destinations.s3]\nurl = \"s3://b/p\"\n\
         access-key-id = \"AK\"\nsecret-access-key = \"file-secret-2\"\n",
    )
    .unwrap();
    let mut command = cairn(locks.path());
    command
        .arg("--config")
        .arg(&path)
        .env("CAIRN_SOURCES__B__URL", "mysql://u@h")
        .env("CAIRN_SOURCES__B__PASSWORD", "env-secret-3");
    let (code, out, err) = run(command.args(["config", "show"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[sources.a]") && out.contains("********"), "{out}");
    for secret in ["url-secret-1", "file-secret-2", "env-secret-3"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} leaked:\n{out}\n{err}"
        );
    }
    let mut command = cairn(locks.path());
    command
        .arg("--config")
        .arg(&path)
        .env("CAIRN_SOURCES__B__PASSWORD", "env-secret-3");
    let (_, out, err) = run(command.arg("--help"));
    assert!(!out.contains("env-secret-3") && !err.contains("env-secret-3"));
}

#[test]
fn backup_dry_run_prints_the_plan_and_writes_nothing() {
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups");
    let url = postgres_url();
    let (code, out, err) = run(cairn(locks.path())
        .args([
            "backup",
            "--dry-run",
            "--run-type",
            "hourly",
            "--name",
            "app",
            "--source",
            &url,
            "--to",
        ])
        .arg(&to));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("source app") && out.contains("would take: full copy") && out.contains("hourly"),
        "{out}"
    );
    assert!(
        !out.contains("cairn-test-pw") && !err.contains("cairn-test-pw"),
        "password leaked"
    );
    assert!(
        files_under(dir.path()).is_empty(),
        "dry run wrote {:?}",
        files_under(dir.path())
    );
    // Asking for what the engine cannot take fails before anything is read or written.
    let (code, _, err) = run(cairn(locks.path())
        .args([
            "backup",
            "--dry-run",
            "--type",
            "incremental",
            "--name",
            "app",
            "--source",
            &url,
            "--to",
        ])
        .arg(&to));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("PostgreSQL incremental copies are not available"), "{err}");
    let (code, _, err) = run(cairn(locks.path())
        .args([
            "backup",
            "--type",
            "incremental",
            "--name",
            "app",
            "--source",
            &url,
            "--to",
        ])
        .arg(&to));
    assert_eq!(code, 2, "{err}");
    assert!(
        files_under(dir.path()).is_empty(),
        "a refused run wrote {:?}",
        files_under(dir.path())
    );
}

#[tokio::test]
async fn backup_dry_run_reports_the_copy_the_run_would_take() {
    let (guard, destination) = local_destination();
    let locks = tempfile::tempdir().unwrap();
    let lock = take_lock(&destination, "app", &locks).await;
    let full = make_copy(&destination, "app", CopyKind::Full, None, &lock).await;
    lock.release().await.unwrap();
    let to = guard.path().join("backups");
    let cli_locks = tempfile::tempdir().unwrap();
    let (code, out, err) = run(cairn(cli_locks.path())
        .args([
            "backup",
            "--dry-run",
            "--json",
            "--run-type",
            "hourly",
            "--name",
            "app",
            "--source",
            &postgres_url(),
            "--to",
        ])
        .arg(&to));
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    // An hourly run below the daily policy would continue from the full, but PostgreSQL takes
    // full copies only in this build, and the dry run says what the run will really do.
    assert_eq!(plan[0]["plan"]["kind"], "full", "{out} (recorded full: {})", full.id);
    assert_eq!(plan[0]["plan"]["parent"], serde_json::Value::Null);
    // It connected and checked the source.
    assert!(
        plan[0]["plan"]["checks"][0].as_str().unwrap().contains("pg_dump"),
        "{out}"
    );
}

#[tokio::test]
async fn status_lists_copies_as_a_table_and_json_and_survives_damage() {
    let (guard, destination) = local_destination();
    let (full, incr) = full_and_incremental(&destination, "app").await;
    let from = guard.path().join("backups");
    let cli_locks = tempfile::tempdir().unwrap();

    let (code, out, err) = run(cairn(cli_locks.path())
        .args(["status", "--source", "app", "--from"])
        .arg(&from));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&full.id) && out.contains(&incr.id) && out.contains("incremental") && out.contains("0/16B3748"),
        "{out}"
    );

    let (code, out, err) = run(cairn(cli_locks.path()).args(["status", "--json", "--from"]).arg(&from));
    assert_eq!(code, 0, "{err}");
    let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reports[0]["source"], "app");
    assert_eq!(reports[0]["read_from"], "latest");
    assert_eq!(reports[0]["copies"][1]["parent"], serde_json::json!(full.id));
    assert_eq!(
        reports[0]["copies"][1]["manifest"]["md5"],
        serde_json::json!(incr.manifest.md5)
    );

    damage(&destination, &layout::status_key("app")).await;
    let (code, out, err) = run(cairn(cli_locks.path())
        .args(["status", "--source", "app", "--from"])
        .arg(&from));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("read from the previous copy"), "{out}");
    assert!(
        err.contains("status.json") && err.contains("unusable") && err.contains("recovered"),
        "the fallback must warn: {err}"
    );

    damage(&destination, &layout::status_previous_key("app")).await;
    let (code, _, err) = run(cairn(cli_locks.path())
        .args(["status", "--source", "app", "--from"])
        .arg(&from));
    assert_eq!(code, 1);
    assert!(
        err.contains("status.json") && err.contains("status.previous.json") && err.contains("--rebuild"),
        "{err}"
    );

    let (code, out, err) = run(cairn(cli_locks.path())
        .args(["status", "--rebuild", "--source", "app", "--from"])
        .arg(&from));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("from 2 manifests"), "{out}");
    let (code, out, _) = run(cairn(cli_locks.path())
        .args(["status", "--json", "--source", "app", "--from"])
        .arg(&from));
    assert_eq!(code, 0);
    let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reports[0]["copies"].as_array().unwrap().len(), 2);
}

#[test]
fn status_of_a_missing_folder_says_so_and_creates_nothing() {
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("not-there");
    let (code, _, err) = run(cairn(locks.path()).args(["status", "--from"]).arg(&from));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not-there") && err.contains("does not exist"), "{err}");
    assert!(!from.exists(), "status created {}", from.display());
    std::fs::create_dir(&from).unwrap();
    let (code, out, err) = run(cairn(locks.path()).args(["status", "--from"]).arg(&from));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no source has a status file"), "{out}");
}

#[tokio::test]
async fn a_held_lock_makes_a_second_run_exit_75_naming_the_holder() {
    let (guard, destination) = local_destination();
    let from = guard.path().join("backups");
    let locks = tempfile::tempdir().unwrap();
    let held = take_lock(&destination, "app", &locks).await;
    make_copy(&destination, "app", CopyKind::Full, None, &held).await;
    // Same host: the local lock file answers.
    let (code, _, err) = run(cairn(locks.path())
        .args(["status", "--rebuild", "--source", "app", "--from"])
        .arg(&from));
    assert_eq!(code, 75, "{err}");
    assert!(
        err.contains("locked") && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    // Another host (another lock folder): the lease on the destination answers.
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, _, err) = run(cairn(elsewhere.path())
        .args(["status", "--rebuild", "--source", "app", "--from"])
        .arg(&from));
    assert_eq!(code, 75, "{err}");
    assert!(
        err.contains("app/lock.json") && err.contains(&held.lease().host),
        "{err}"
    );
    held.release().await.unwrap();
    let (code, _, err) = run(cairn(elsewhere.path())
        .args(["status", "--rebuild", "--source", "app", "--from"])
        .arg(&from));
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn s3_destinations_work_through_the_standard_credential_chain() {
    let server = s3_server();
    let bucket = server.new_bucket("cli");
    let locks = tempfile::tempdir().unwrap();
    let destination = server.destination_at(&bucket, "team/cairn").await;
    let lock = take_lock(&destination, "app", &locks).await;
    let full = make_copy(&destination, "app", CopyKind::Full, None, &lock).await;
    lock.release().await.unwrap();
    let url = server.url(&bucket, "team/cairn");
    let with_keys = |secret: &str| {
        let mut command = cairn(locks.path());
        command
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret);
        command
    };
    let (code, out, err) = run(with_keys(S3_SECRET_KEY).args(["status", "--source", "app", "--from", &url]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&full.id), "{out}");
    let (code, _, err) = run(with_keys("wrong-secret").args(["status", "--from", &url]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&bucket) && err.contains(&server.endpoint) && err.contains("denied"),
        "{err}"
    );
    assert!(!err.contains("wrong-secret"), "{err}");
    let missing = server.url("no-such-bucket-cli", "x");
    let (code, _, err) = run(with_keys(S3_SECRET_KEY).args(["status", "--from", &missing]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no-such-bucket-cli") && err.contains("does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn restore_dry_run_prints_the_chain_and_refuses_what_the_engine_cannot_replay() {
    let (guard, destination) = local_destination();
    let (full, _) = full_and_incremental(&destination, "app").await;
    let from = guard.path().join("backups");
    let base = postgres_url();
    let target = format!(
        "{}/never_created_{}",
        base.rsplit_once('/').unwrap().0,
        std::process::id()
    );
    let locks = tempfile::tempdir().unwrap();
    // The full copy alone: the dry run lists it and checks the target (which it would create).
    let (code, out, err) = run(cairn(locks.path())
        .args([
            "restore",
            "--dry-run",
            "--source",
            "app",
            "--copy",
            &full.id,
            "--target",
            &target,
            "--from",
        ])
        .arg(&from));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&full.id) && out.contains("does not exist: it is created"),
        "{out}"
    );
    assert!(!out.contains("cairn-test-pw"), "{out}");
    // A chain ending in an incremental: the dry run refuses what the restore would refuse.
    for dry_run in [true, false] {
        let mut command = cairn(locks.path());
        command
            .args(["restore", "--source", "app", "--target", &target, "--from"])
            .arg(&from);
        if dry_run {
            command.arg("--dry-run");
        }
        let (code, _, err) = run(&mut command);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("taken without incrementals") && err.contains("cannot be replayed"),
            "{err}"
        );
    }
    let (code, _, err) = run(cairn(locks.path())
        .args([
            "restore",
            "--dry-run",
            "--source",
            "app",
            "--copy",
            "nope",
            "--target",
            &target,
            "--from",
        ])
        .arg(&from));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("copy nope is not recorded"), "{err}");
}

/// Configuration problems of an S3 destination are the user's to fix (exit 2), said in one line
/// without the SDK's debug output; cron must not retry them forever.
#[tokio::test]
async fn s3_configuration_problems_exit_2_in_one_line() {
    let locks = tempfile::tempdir().unwrap();
    let server = s3_server();
    let bucket = server.new_bucket("nocreds");
    let (code, _, err) = run(cairn(locks.path()).args(["status", "--from", &server.url(&bucket, "p")]));
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("no S3 credentials") && err.contains(&bucket) && err.contains(&server.endpoint),
        "{err}"
    );
    assert!(!err.contains("DispatchFailure") && !err.contains('{'), "{err}");

    let (code, _, err) = run(cairn(locks.path()).args(["status", "--from", "s3://b/p?endpoint=htp:/x"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("htp:/x") && err.contains("http://"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cairn.toml");
    std::fs::write(&config, "[destinations.s]\nurl = \"s3://b/p\"\nendpoint = \"htp:/x\"\n").unwrap();
    let (code, _, err) = run(cairn(locks.path())
        .arg("--config")
        .arg(&config)
        .args(["config", "check"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("destinations.s.endpoint"), "{err}");

    // A store that is not there is worth retrying later, and says what to check.
    let (code, _, err) = run(cairn(locks.path())
        .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        .args(["status", "--from", "s3://b/p?endpoint=http://127.0.0.1:1"]));
    assert_eq!(code, 75, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("check the endpoint"), "{err}");
}

/// A source name that is neither configured nor on the destination is a typo: exit 2, naming
/// the sources that exist, and nothing is written.
#[tokio::test]
async fn unknown_sources_exit_2_and_list_the_known_ones() {
    let locks = tempfile::tempdir().unwrap();
    let (dir, destination) = local_destination();
    full_and_incremental(&destination, "app").await;
    let from = dir.path().join("backups").display().to_string();
    let before = files_under(dir.path());
    let attempts: [&[&str]; 4] = [
        &[
            "restore",
            "--from",
            &from,
            "--source",
            "typo",
            "--target",
            "postgres://u@127.0.0.1:1/x",
        ],
        &["status", "--from", &from, "--source", "typo"],
        &["status", "--from", &from, "--source", "typo", "--json"],
        &["status", "--from", &from, "--source", "typo", "--rebuild"],
    ];
    for args in attempts {
        let (code, out, err) = run(cairn(locks.path()).args(args));
        assert_eq!(code, 2, "{args:?}: {out}\n{err}");
        assert!(
            err.contains("\"typo\"") && err.contains("sources there: app"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(files_under(dir.path()), before, "nothing was written");

    let config = dir.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!("[destinations.d]\nurl = \"{from}\"\n[sources.app]\nurl = \"postgres://u@127.0.0.1:1/app\"\n"),
    )
    .unwrap();
    let (code, _, err) = run(cairn(locks.path())
        .arg("--config")
        .arg(&config)
        .args(["status", "--source", "typo"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("configured sources: app"), "{err}");
    let (code, out, err) = run(cairn(locks.path())
        .arg("--config")
        .arg(&config)
        .args(["config", "check"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 source, 1 destination"), "{out}");
}

#[test]
fn unknown_log_levels_exit_2() {
    let locks = tempfile::tempdir().unwrap();
    let (code, _, err) = run(cairn(locks.path()).args(["--log", "verbose", "config", "check"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("verbose") && err.contains("info"), "{err}");
    let (code, _, err) = run(cairn(locks.path())
        .env("CAIRN_LOG", "verbose")
        .args(["config", "check"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(cairn(locks.path()).args(["--log", "info,cairn=debug", "config", "check"]));
    assert_eq!(code, 0, "{err}");
}

/// A server that cannot be reached: retry later (75), once on stderr with what to check, and a
/// line for the source on stdout.
#[test]
fn unreachable_sources_say_what_to_check_once() {
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("b").display().to_string();
    let (code, out, err) = run(cairn(locks.path()).args([
        "backup",
        "--name",
        "x",
        "--source",
        "postgres://u:pw@127.0.0.1:1/db",
        "--to",
        &to,
    ]));
    assert_eq!(code, 75, "{err}");
    assert_eq!(err.matches("cannot connect").count(), 1, "{err}");
    assert!(err.contains("nothing accepts connections"), "{err}");
    assert!(out.starts_with("x: failed") && out.contains("75"), "{out}");
    let (code, _, err) = run(cairn(locks.path()).args([
        "backup",
        "--name",
        "x",
        "--source",
        "mysql://u:pw@no-such-host.invalid/db",
        "--to",
        &to,
    ]));
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("does not resolve"), "{err}");
}

/// A malformed URL is called malformed (not an unknown source, not a local folder), without
/// showing its password.
#[test]
fn malformed_urls_are_named_as_such() {
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("b").display().to_string();
    for source in [
        "postgres//u:pw-in-url@127.0.0.1/db",
        "postgres:/u:pw-in-url@127.0.0.1/db",
    ] {
        let (code, _, err) = run(cairn(locks.path()).args(["backup", "--source", source, "--to", &to, "--dry-run"]));
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("malformed URL") && !err.contains("unknown source"),
            "{err}"
        );
        assert!(!err.contains("pw-in-url"), "{err}");
    }
    let (code, _, err) = run(cairn(locks.path()).args([
        "backup",
        "--source",
        "postgres://u@127.0.0.1:1/db",
        "--to",
        "s3:/bucket/x",
        "--dry-run",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("malformed URL"), "{err}");
    assert!(!Path::new(&locks.path().join("s3:")).exists());
}

/// A password in a URL on the command line works but is visible in the process list: warned
/// about, never printed; a password file or the engine's variable is the way.
#[test]
fn passwords_in_command_line_urls_are_warned_about() {
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("b").display().to_string();
    let (code, _, err) = run(cairn(locks.path()).args([
        "backup",
        "--source",
        "postgres://u:pw-in-url@127.0.0.1:1/db",
        "--to",
        &to,
    ]));
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("visible to every user"), "{err}");
    assert!(!err.contains("pw-in-url"), "{err}");
    let password = dir.path().join("pw");
    std::fs::write(&password, "pw-in-file\n").unwrap();
    let (code, _, err) = run(cairn(locks.path())
        .args([
            "backup",
            "--source",
            "postgres://u:pw-in-url@127.0.0.1:1/db",
            "--to",
            &to,
        ])
        .arg("--password-file")
        .arg(&password));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("once"), "{err}");
}

/// Every cairn command line in the deployment examples (crontab, systemd, Kubernetes) parses,
/// and the configuration the Kubernetes example mounts loads: the examples cannot drift from
/// the flags and keys cairn has.
#[test]
fn the_deployment_examples_use_flags_and_keys_cairn_has() {
    use clap::Parser;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
    let mut commands: Vec<Vec<String>> = Vec::new();
    for line in read("cron/cairn.crontab")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        if let Some((_, command)) = line.split_once("exec cairn ") {
            let command = command.split(" >").next().unwrap().split(" 2>").next().unwrap();
            commands.push(command.split_whitespace().map(str::to_string).collect());
        }
    }
    for unit in ["systemd/cairn-backup.service", "systemd/cairn-replica@.service"] {
        for line in read(unit).lines() {
            if let Some(command) = line.strip_prefix("ExecStart=") {
                commands.push(command.split_whitespace().skip(1).map(str::to_string).collect());
            }
        }
    }
    let kubernetes = read("kubernetes/cronjob.yaml");
    let mut rest = kubernetes.as_str();
    while let Some(at) = rest.find("args: [") {
        let list = &rest[at + "args: ".len()..];
        let end = list.find(']').unwrap();
        // Commented-out examples continue on lines that start with `#`.
        commands.push(serde_json::from_str(&list[..=end].replace("\n#", "\n")).unwrap());
        rest = &list[end..];
    }
    assert!(commands.len() >= 6, "{commands:?}");
    for args in &commands {
        let parsed = cairn::cli::Cli::try_parse_from(std::iter::once("cairn".to_string()).chain(args.iter().cloned()));
        assert!(parsed.is_ok(), "{args:?}: {}", parsed.err().unwrap());
    }
    // The configuration the Kubernetes example mounts, with the secrets the Secret provides.
    let start = kubernetes.find("cairn.toml: |\n").unwrap() + "cairn.toml: |\n".len();
    let toml: String = kubernetes[start..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.trim_start_matches("    ")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.toml");
    std::fs::write(&path, toml).unwrap();
    let env = [(
        "CAIRN_NOTIFICATIONS__WEBHOOK_URL".to_string(),
        "https://hooks.example.com/T000".to_string(),
    )];
    let config = cairn::config::Config::load(Some(&path), env).unwrap();
    assert!(!config.settings.sources.is_empty());
}
