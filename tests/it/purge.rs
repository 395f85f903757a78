//! `cairn purge` on a real destination: a dry run removes nothing; `--apply` removes exactly
//! the copies the retention leaves out (status first, then every file), and what remains
//! verifies and restores.

use crate::postgres::{connect, fresh_database, url_of};
use crate::support::{cairn, run};

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
