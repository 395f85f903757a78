//! `cairn verify --deep` on both engines: a good copy restores into a scratch database whose
//! every table has the rows the backup read (and the scratch is dropped); a copy whose data
//! file was swapped for another valid file of the same table — checksums and manifests all in
//! order, rows different — is caught, naming the table.

use std::path::Path;

use cairn::repo::manifest::Manifest;
use cairn::repo::status::StatusStore;
use cairn::storage::DestinationSpec;

use crate::support::{cairn, mysql_url, postgres_url, run};

fn status_json(locks: &Path, to: &str) -> serde_json::Value {
    let (code, out, err) = run(cairn(locks).args(["status", "--json", "--from", to, "--source", "fx"]));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

fn deep(locks: &Path, to: &str, scratch: &str, copy: Option<&str>) -> (i32, String, String) {
    let mut command = cairn(locks);
    command.args(["verify", "--deep", "--from", to, "--source", "fx", "--scratch", scratch]);
    if let Some(copy) = copy {
        command.args(["--copy", copy]);
    }
    run(&mut command)
}

/// The server part of a test URL: the scratch database is made there.
fn server_of(url: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_path("/postgres");
    url.to_string()
}

/// Puts the data files of copy `from` in place of those of copy `into` and re-seals `into`'s
/// manifest and the status around them, keeping `into`'s recorded row digests: every checksum
/// matches, only the rows are another copy's.
async fn swap_data(root: &Path, into: &str, from: &str) {
    let copies = root.join("fx/copies");
    let mut swapped = 0;
    for entry in walkdir(&copies.join(from).join("data")) {
        let relative = entry.strip_prefix(copies.join(from)).unwrap().to_path_buf();
        let target = copies.join(into).join(&relative);
        assert!(target.exists(), "{} is not in both copies", relative.display());
        std::fs::copy(&entry, &target).unwrap();
        swapped += 1;
    }
    assert!(swapped > 0);
    let manifest_path = copies.join(into).join("manifest.json");
    let mut manifest = Manifest::decode("manifest", &std::fs::read(&manifest_path).unwrap()).unwrap();
    for file in &mut manifest.files {
        let bytes = std::fs::read(copies.join(into).join(&file.path)).unwrap();
        file.size = bytes.len() as u64;
        file.md5 = cairn::storage::md5_hex(&bytes);
    }
    let sealed = manifest.encode();
    std::fs::write(&manifest_path, &sealed).unwrap();
    let destination = DestinationSpec::Local {
        root: root.to_path_buf(),
    }
    .open()
    .await
    .unwrap();
    StatusStore::new(destination, "fx")
        .update(|body| {
            for copy in &mut body.copies {
                if copy.id == into {
                    copy.manifest.md5 = cairn::storage::md5_hex(&sealed);
                }
            }
            Ok(())
        })
        .await
        .unwrap();
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    crate::support::walk(dir)
}

#[tokio::test]
async fn postgres_deep_verify_proves_the_rows_and_catches_a_swapped_data_file() {
    let source = crate::postgres::fixture_database("pg_deep").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("backups");
    let to = root.display().to_string();
    let backup = || {
        run(cairn(locks.path()).args([
            "backup",
            "--name",
            "fx",
            "--source",
            &crate::postgres::url_of(&source),
            "--to",
            &to,
            "--type",
            "full",
        ]))
    };
    let (code, out, err) = backup();
    assert_eq!(code, 0, "{out}\n{err}");
    let scratch = server_of(&postgres_url());

    let (code, out, err) = deep(locks.path(), &to, &scratch, None);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("the restored data equals the data backed up") && out.contains("same rows"),
        "{out}"
    );
    assert!(!out.contains("DIFFERENT"), "{out}");
    let admin = crate::postgres::connect(&postgres_url()).await;
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_verify_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the scratch database stayed");
    let status = status_json(locks.path(), &to);
    assert_eq!(status["last_verification"]["kind"], "deep", "{status}");

    // The same number of rows, other values: a second copy after an UPDATE.
    crate::postgres::connect(&crate::postgres::url_of(&source))
        .await
        .batch_execute("UPDATE orders SET note = coalesce(note, '') || ' changed'")
        .await
        .unwrap();
    let (code, out, err) = backup();
    assert_eq!(code, 0, "{out}\n{err}");
    let ids: Vec<String> = status_json(locks.path(), &to)["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    swap_data(&root, &ids[0], &ids[1]).await;
    let (code, out, err) = run(cairn(locks.path()).args(["verify", "--from", &to, "--source", "fx", "--all"]));
    assert_eq!(code, 0, "every checksum still matches: {out}\n{err}");

    let (code, out, err) = deep(locks.path(), &to, &scratch, Some(&ids[0]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("DIFFERENT") && out.contains("orders"), "{out}");
    assert!(out.contains("DAMAGED"), "{out}");
}

#[tokio::test]
async fn mysql_deep_verify_proves_the_rows_of_a_good_copy_and_replays_its_chain() {
    let _serial = crate::mysql::ONE_AT_A_TIME.lock().await;
    let source = crate::mysql::fixture_database("my_deep").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, out, err) = run(cairn(locks.path()).args([
        "backup",
        "--name",
        "fx",
        "--source",
        &crate::mysql::url_of(&source),
        "--to",
        &to,
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    // An incremental on top: the latest copy's chain also replays, into a second scratch.
    use mysql_async::prelude::Queryable;
    crate::mysql::connect(&crate::mysql::url_of(&source))
        .await
        .query_drop("CREATE TABLE deep_extra (id INT PRIMARY KEY); INSERT INTO deep_extra VALUES (1), (2)")
        .await
        .unwrap();
    let (code, out, err) = run(cairn(locks.path()).args([
        "backup",
        "--name",
        "fx",
        "--source",
        &crate::mysql::url_of(&source),
        "--to",
        &to,
        "--type",
        "incremental",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let mut scratch = url::Url::parse(&mysql_url()).unwrap();
    scratch.set_path("");
    let (code, out, err) = deep(locks.path(), &to, scratch.as_str(), None);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("the restored data equals the data backed up") && out.contains("same rows"),
        "{out}"
    );
    assert!(out.contains("then replayed 1 incremental up to"), "{out}");
    let mut admin = crate::mysql::connect(&mysql_url()).await;
    let left: Vec<String> = admin
        .query("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'cairn\\_verify\\_%'")
        .await
        .unwrap();
    assert!(left.is_empty(), "scratch databases stayed: {left:?}");
}
