//! `cairn purge` on a real destination: a dry run removes nothing; `--apply` removes exactly
//! the copies the retention leaves out (status first, then every file), and what remains
//! verifies and restores.

use crate::postgres::{connect, fresh_database, url_of};
use crate::support::{cairn, cairn_s3, run, s3_server};

#[tokio::test]
async fn purge_removes_what_the_retention_leaves_out_and_the_rest_restores() {
    let source = fresh_database("pg_purge").await;
    connect(&url_of(&source))
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    for run_type in ["daily", "hourly", "daily", "hourly"] {
        let (code, out, err) = run(cairn(locks.path()).args([
            "backup",
            "--name",
            "fx",
            "--source",
            &url_of(&source),
            "--to",
            &to,
            "--type",
            "full",
            "--run-type",
            run_type,
        ]));
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let config = locks.path().join("cairn.toml");
    std::fs::write(&config, "[retention]\nhourly = 1\ndaily = 1\n").unwrap();
    let copies = || {
        let (code, out, err) = run(cairn(locks.path()).args(["status", "--json", "--source", "fx", "--from", &to]));
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["copies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let before = copies();
    assert_eq!(before.len(), 4);
    let purge = |extra: &[&str]| {
        run(cairn(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["purge", "--from", &to, "--source", "fx"])
            .args(extra))
    };

    // What a killed run leaves: files in a copy folder without a manifest.
    let leftover = dir.path().join("fx/copies/20200101T000000.000Z-full/data");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("00000.copy.zst"), vec![7u8; 1000]).unwrap();

    let (code, out, err) = purge(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("would remove 2 copies and 1 leftover folder") && out.contains("dry run"),
        "{out}"
    );
    assert_eq!(copies(), before, "a dry run removed something");
    assert!(leftover.join("00000.copy.zst").exists());

    let (code, out, err) = purge(&["--apply"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("removed 2 copies and 1 leftover folder"), "{out}");
    assert!(!leftover.join("00000.copy.zst").exists(), "the leftover stays");
    assert_eq!(
        copies(),
        before[2..].to_vec(),
        "the newest daily and hourly copies stay"
    );
    for gone in &before[..2] {
        assert!(
            !dir.path().join("fx/copies").join(gone).exists(),
            "{gone} left files behind"
        );
    }
    let (code, out, err) = run(cairn(locks.path()).args(["verify", "--from", &to, "--source", "fx", "--all"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let target = fresh_database("pg_purge_restored").await;
    let (code, out, err) =
        run(cairn(locks.path()).args(["restore", "--from", &to, "--source", "fx", "--target", &url_of(&target)]));
    assert_eq!(code, 0, "{out}\n{err}");
    // The status says from when to when a restore can land.
    let (code, out, err) = run(cairn(locks.path()).args(["status", "--source", "fx", "--from", &to]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("restorable from") && out.contains("the latest copy finished"),
        "{out}"
    );
    // `backup --purge`: the copy is taken, then what the retention leaves out goes.
    let (code, out, err) = run(cairn(locks.path()).arg("--config").arg(&config).args([
        "backup",
        "--name",
        "fx",
        "--source",
        &url_of(&source),
        "--to",
        &to,
        "--type",
        "full",
        "--run-type",
        "hourly",
        "--purge",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("fx: purged 1 copy"), "{out}");
    let after = copies();
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0], before[2], "the newest daily copy stays");
    // Nothing more to remove.
    let (code, out, err) = purge(&["--apply"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("removed 0 copies"), "{out}");
}

/// A purge that stops half way through deleting (here: the store refuses deletes after the
/// first few, as a killed run stops) leaves a status that lists only copies whose files are all
/// there, and the next purge finishes the job.
#[tokio::test]
async fn a_purge_cut_short_leaves_a_consistent_status_and_the_next_one_finishes() {
    let source = fresh_database("pg_purge_cut").await;
    connect(&url_of(&source))
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();
    let server = s3_server();
    let bucket = server.new_bucket("purge-cut");
    let to = server.url(&bucket, "backups");
    let locks = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let (code, out, err) = run(cairn_s3(locks.path()).args([
            "backup",
            "--name",
            "fx",
            "--source",
            &url_of(&source),
            "--to",
            &to,
            "--type",
            "full",
        ]));
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let config = locks.path().join("cairn.toml");
    std::fs::write(&config, "[retention]\ndaily = 1\n").unwrap();
    let ids = |status: &serde_json::Value| -> Vec<String> {
        status["copies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let status = || {
        let (code, out, err) = run(cairn_s3(locks.path()).args(["status", "--json", "--source", "fx", "--from", &to]));
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
    };
    let before = ids(&status());
    assert_eq!(before.len(), 3);
    let purge = || {
        run(cairn_s3(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["purge", "--from", &to, "--source", "fx", "--apply"]))
    };

    // Both manifests go, then nothing more can be deleted: the files stay behind.
    server.limit_deletes(&bucket, Some(2));
    let (code, out, err) = purge();
    assert_ne!(code, 0, "{out}\n{err}");
    server.limit_deletes(&bucket, None);
    let after_cut = status();
    assert_eq!(
        ids(&after_cut),
        before[2..].to_vec(),
        "the status stopped listing them first"
    );
    assert!(
        after_cut["recovered"].as_array().is_none_or(|r| r.is_empty()),
        "a removed copy came back from a manifest left behind: {after_cut}"
    );
    let (code, out, err) = run(cairn_s3(locks.path()).args(["verify", "--from", &to, "--source", "fx", "--all"]));
    assert_eq!(code, 0, "every listed copy is whole: {out}\n{err}");

    // The next purge removes what the cut one left: folders without a manifest.
    let (code, out, err) = purge();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("leftover folder"), "{out}");
    let client = server.client();
    for gone in &before[..2] {
        let listed = client
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(format!("backups/fx/copies/{gone}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(listed.key_count().unwrap_or(0), 0, "{gone} still has files");
    }
    assert_eq!(ids(&status()), before[2..].to_vec());
}
