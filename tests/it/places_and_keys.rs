//! Copies in several places, encrypted at rest (issue #18). With `[encryption]`, every stored
//! file of a MariaDB and a PostgreSQL copy is encrypted — no file holds a known marker row — and
//! the copies restore identically with the key; without the key, or with another, a restore
//! fails naming the copy and the key it needs and touches nothing, while `verify` still checks
//! every file; a flipped byte fails the restore as damage; after a rotation the old key keeps
//! reading old copies. `cairn copy` carries copies to another destination; a source with two
//! destinations fills both in one run and a failing one does not fail the other.

use std::path::Path;

use mysql_async::prelude::Queryable;

use crate::mysql::{ONE_AT_A_TIME, assert_same, connect, fixture_database, url_of};
use crate::support::{cairn, run, walk};

const MARKER: &str = "PLAINTEXT-MARKER-7741-never-stored-in-clear";

fn generate(locks: &Path, file: &Path) -> String {
    let (code, out, err) = run(cairn(locks).args(["key", "generate"]).arg(file));
    assert_eq!(code, 0, "{out}\n{err}");
    out.split_whitespace().nth(2).unwrap().to_string()
}

/// A configuration `name` of source `fx` at `url`, with `encryption` as its `[encryption]` lines.
fn config(locks: &Path, name: &str, url: &str, encryption: &str) -> std::path::PathBuf {
    let path = locks.join(format!("{name}.toml"));
    std::fs::write(&path, format!("{encryption}\n[sources.fx]\nurl = {url:?}\n")).unwrap();
    path
}

/// The stored files under `dir` holding `needle`.
fn holding(dir: &Path, needle: &str) -> Vec<String> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(|p| p.display().to_string())
        .collect()
}

#[tokio::test]
async fn an_encrypted_mariadb_chain_restores_with_its_key_only_and_survives_a_rotation() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fixture_database("enc").await;
    let mut my = connect(&url_of(&source)).await;
    my.query_drop(format!(
        "CREATE TABLE secrets (id INT PRIMARY KEY, v VARCHAR(64)); INSERT INTO secrets VALUES (1, '{MARKER}')"
    ))
    .await
    .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (k1, k2) = (locks.path().join("k1"), locks.path().join("k2"));
    let id1 = generate(locks.path(), &k1);
    // A key file is never overwritten.
    let (code, _, err) = run(cairn(locks.path()).args(["key", "generate"]).arg(&k1));
    assert_eq!(code, 2, "{err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&k1).unwrap().permissions().mode() & 0o777, 0o600);
    let with_k1 = config(
        locks.path(),
        "k1",
        &url_of(&source),
        &format!("[encryption]\nkey-file = {k1:?}"),
    );
    let plain = config(locks.path(), "plain", &url_of(&source), "");
    let cairn_with = |config: &Path, args: &[&str]| run(cairn(locks.path()).arg("--config").arg(config).args(args));

    let (code, out, err) = cairn_with(&with_k1, &["backup", "--source", "fx", "--to", &to]);
    assert_eq!(code, 0, "{out}\n{err}");
    // `fx: full copy ID recorded: …`
    let oldest = out.split_whitespace().nth(3).unwrap().to_string();
    my.query_drop(format!("INSERT INTO secrets VALUES (2, '{MARKER}-in-the-log')"))
        .await
        .unwrap();
    let (code, out, err) = cairn_with(
        &with_k1,
        &["backup", "--source", "fx", "--to", &to, "--type", "incremental"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        holding(dir.path(), MARKER),
        Vec::<String>::new(),
        "a marker row is readable"
    );
    let stored: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/copies/") && !p.to_string_lossy().ends_with("manifest.json"))
        .collect();
    assert!(
        stored.len() > 3 && stored.iter().all(|p| p.to_string_lossy().ends_with(".zst.enc")),
        "{stored:?}"
    );
    let manifest = walk(dir.path())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("manifest.json"))
        .unwrap();
    assert!(
        std::fs::read_to_string(&manifest).unwrap().contains(&id1),
        "the copy records its key id"
    );

    let restore = |config: &Path, target: &str, extra: &[&str]| {
        let mut args = vec![
            "restore".to_string(),
            "--source".into(),
            "fx".into(),
            "--from".into(),
            to.clone(),
            "--target".into(),
            crate::support::mysql_url(),
            "--rename-db".into(),
            format!("{source}={target}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run(cairn(locks.path()).arg("--config").arg(config).args(&args))
    };
    let exists = |database: String| async move {
        connect(&crate::support::mysql_url())
            .await
            .exec_first::<u8, _, _>(
                "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (database,),
            )
            .await
            .unwrap()
            .is_some()
    };
    // Without the key, and with another: refused by name, nothing made.
    let id2 = generate(locks.path(), &k2);
    let with_k2 = config(
        locks.path(),
        "k2",
        &url_of(&source),
        &format!("[encryption]\nkey-file = {k2:?}"),
    );
    for (config, name) in [(&plain, "nokey"), (&with_k2, "wrongkey")] {
        let target = format!("{source}_{name}");
        let (code, out, err) = restore(config, &target, &[]);
        assert_eq!(code, 2, "{out}\n{err}");
        assert!(
            err.contains(&id1) && err.contains("not configured") && err.contains("copy "),
            "{err}"
        );
        assert!(!exists(target).await, "nothing was restored");
    }
    // verify checks every stored file without the key.
    let (code, out, err) = cairn_with(&plain, &["verify", "--source", "fx", "--from", &to]);
    assert_eq!(code, 0, "{out}\n{err}");

    // With it, the chain restores to the source.
    let restored = format!("{source}_enc");
    let (code, out, err) = restore(&with_k1, &restored, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_same(&source, &restored).await;

    // Rotation: new copies with the new key, the old one kept for reading.
    let rotated = config(
        locks.path(),
        "rotated",
        &url_of(&source),
        &format!("[encryption]\nkey-file = {k2:?}\nold-key-files = [{k1:?}]"),
    );
    let (code, out, err) = cairn_with(&rotated, &["backup", "--source", "fx", "--to", &to, "--type", "full"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = cairn_with(&rotated, &["status", "--source", "fx", "--from", &to, "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&id2) && out.contains(&id1), "{out}");
    let after = format!("{source}_rot");
    let (code, out, err) = restore(&rotated, &after, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_same(&source, &after).await;
    let older = format!("{source}_old");
    let (code, out, err) = restore(&rotated, &older, &["--copy", &oldest]);
    assert_eq!(code, 0, "the old key reads the old copy: {out}\n{err}");
    // Only the new key: the old copy is refused by name.
    let (code, _, err) = restore(&with_k2, &format!("{source}_old2"), &["--copy", &oldest]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&id1), "{err}");

    // A flipped byte in a stored file: damage, caught.
    let data = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&oldest) && p.to_string_lossy().contains("/data/"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&data, bytes).unwrap();
    let (code, out, err) = restore(&rotated, &format!("{source}_flip"), &["--copy", &oldest]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("damaged"), "{err}");
}

#[tokio::test]
async fn an_encrypted_postgres_copy_restores_identically_and_holds_no_marker() {
    use crate::postgres::{connect, data_of, fresh_database, schema_of, url_of};
    let source = fresh_database("pg_enc").await;
    connect(&url_of(&source))
        .await
        .batch_execute(&format!(
            "CREATE TABLE secrets (id int PRIMARY KEY, v text); INSERT INTO secrets VALUES (1, '{MARKER}');
             CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g;"
        ))
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let key = locks.path().join("key");
    generate(locks.path(), &key);
    let with_key = config(
        locks.path(),
        "key",
        &url_of(&source),
        &format!("[encryption]\nkey-file = {key:?}"),
    );
    let cairn_with = |args: &[&str]| run(cairn(locks.path()).arg("--config").arg(&with_key).args(args));
    let (code, out, err) = cairn_with(&["backup", "--source", "fx", "--to", &to]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(holding(dir.path(), MARKER), Vec::<String>::new());
    let target = fresh_database("pg_enc_restored").await;
    let (code, out, err) = cairn_with(&["restore", "--source", "fx", "--from", &to, "--target", &url_of(&target)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(schema_of(&target), schema_of(&source));
    assert_eq!(data_of(&target).await, data_of(&source).await);
}

/// `cairn copy` fills an S3 destination from a local one (encrypted copies carried as stored,
/// without the key), parents first; the copy there restores to the same data; copying again
/// carries nothing; a file damaged on the way in is never recorded there.
#[tokio::test]
async fn copies_carried_to_another_destination_restore_from_there() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fixture_database("carry").await;
    let mut my = connect(&url_of(&source)).await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("backups").display().to_string();
    let key = locks.path().join("key");
    generate(locks.path(), &key);
    let with_key = config(
        locks.path(),
        "key",
        &url_of(&source),
        &format!("[encryption]\nkey-file = {key:?}"),
    );
    let plain = config(locks.path(), "plain", &url_of(&source), "");
    let cairn_with = |config: &Path, args: &[&str]| {
        run(crate::support::cairn_s3(locks.path())
            .arg("--config")
            .arg(config)
            .args(args))
    };
    let (code, out, err) = cairn_with(&with_key, &["backup", "--source", "fx", "--to", &local]);
    assert_eq!(code, 0, "{out}\n{err}");
    my.query_drop("CREATE TABLE later (id INT PRIMARY KEY); INSERT INTO later VALUES (1), (2)")
        .await
        .unwrap();
    let (code, out, err) = cairn_with(
        &with_key,
        &["backup", "--source", "fx", "--to", &local, "--type", "incremental"],
    );
    assert_eq!(code, 0, "{out}\n{err}");

    let server = crate::support::s3_server();
    let bucket = server.new_bucket("carry");
    let offsite = server.url(&bucket, "offsite");
    // Without the key: encrypted copies are carried as they are stored.
    let (code, out, err) = cairn_with(
        &plain,
        &["copy", "--from", &local, "--to", &offsite, "--source", "fx", "--json"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report[0]["copied"].as_array().unwrap().len(),
        2,
        "the incremental and its full copy: {report}"
    );
    let (code, out, err) = cairn_with(&plain, &["copy", "--from", &local, "--to", &offsite, "--source", "fx"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("copied 0 copies") && out.contains("2 already there"),
        "{out}"
    );
    let (code, out, err) = cairn_with(&plain, &["verify", "--source", "fx", "--from", &offsite]);
    assert_eq!(code, 0, "{out}\n{err}");

    let restored = format!("{source}_offsite");
    let (code, out, err) = cairn_with(
        &with_key,
        &[
            "restore",
            "--source",
            "fx",
            "--from",
            &offsite,
            "--target",
            &crate::support::mysql_url(),
            "--rename-db",
            &format!("{source}={restored}"),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_same(&source, &restored).await;

    // A file damaged on the first destination: the copy is not recorded on the next.
    let data = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/data/"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&data, bytes).unwrap();
    let third = server.url(&bucket, "third");
    let (code, out, err) = cairn_with(&plain, &["copy", "--from", &local, "--to", &third, "--source", "fx"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("damaged"), "{err}");
    let (code, out, err) = cairn_with(&plain, &["status", "--source", "fx", "--from", &third, "--json"]);
    assert!(
        code != 0 || !out.contains("\"kind\""),
        "nothing was recorded there: {out}\n{err}"
    );

    // Every source at once: the damaged one fails, the next one is still carried, and the exit
    // status says the run failed.
    let (code, out, err) = run(crate::support::cairn_s3(locks.path()).args([
        "backup",
        "--name",
        "zz-other",
        "--source",
        &url_of(&source),
        "--to",
        &local,
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let fourth = server.url(&bucket, "fourth");
    let (code, out, err) = cairn_with(&plain, &["copy", "--from", &local, "--to", &fourth]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("error: fx:") && err.contains("damaged"), "{err}");
    assert!(
        out.contains("fx: failed") && out.contains("zz-other: copied 1 copy"),
        "{out}"
    );
    let (code, out, err) = cairn_with(&plain, &["status", "--source", "zz-other", "--from", &fourth, "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("\"kind\": \"full\""), "{out}");
}

/// A source with two destinations (a local folder and the S3 test server): one run reads the
/// database once and records the same copy in both, each with its own status and chain, and a
/// restore from either gives the same data; with the S3 store refusing the copy's data part way,
/// the local copy still lands, the S3 one is not recorded, and the exit code says the run was
/// not fully successful.
#[tokio::test]
async fn one_run_fills_two_destinations_and_a_failing_one_does_not_fail_the_other() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fixture_database("two_places").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("backups").display().to_string();
    let server = crate::support::s3_server();
    let good = server.url(&server.new_bucket("offsite"), "copies");
    let refusing = server.url(&server.new_bucket("refusing"), "copies");
    let write = |name: &str, offsite: &str| {
        let path = locks.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[destinations.local]\nurl = {local:?}\n[destinations.offsite]\nurl = {offsite:?}\n\
                 [sources.fx]\nurl = {:?}\ndestinations = [\"local\", \"offsite\"]\n",
                url_of(&source)
            ),
        )
        .unwrap();
        path
    };
    let both = write("both", &good);
    let failing = write("failing", &refusing);
    let cairn_with = |config: &Path, args: &[&str]| {
        run(crate::support::cairn_s3(locks.path())
            .arg("--config")
            .arg(config)
            .args(args))
    };
    let (code, out, err) = cairn_with(&both, &["backup", "--source", "fx", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = report
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["copy"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{report}");
    assert_eq!(ids[0], ids[1], "one copy, read once, recorded in both");
    connect(&url_of(&source))
        .await
        .query_drop("CREATE TABLE later (id INT PRIMARY KEY); INSERT INTO later VALUES (1)")
        .await
        .unwrap();
    let (code, out, err) = cairn_with(&both, &["backup", "--source", "fx", "--type", "incremental"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.matches("incremental copy").count(), 2, "{out}");
    for (from, name) in [(&local, "a"), (&good, "b")] {
        let restored = format!("{source}_{name}");
        let (code, out, err) = cairn_with(
            &both,
            &[
                "restore",
                "--source",
                "fx",
                "--from",
                from,
                "--target",
                &crate::support::mysql_url(),
                "--rename-db",
                &format!("{source}={restored}"),
            ],
        );
        assert_eq!(code, 0, "{out}\n{err}");
        assert_same(&source, &restored).await;
    }

    // The offsite store refuses the data: the local copy lands, the run says it was partial. A row
    // written before makes that copy the only one holding it.
    connect(&url_of(&source))
        .await
        .query_drop("INSERT INTO later VALUES (2)")
        .await
        .unwrap();
    let (code, out, err) = cairn_with(&failing, &["backup", "--source", "fx", "--type", "full"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("(to ") && out.contains("full copy") && out.contains("failed"),
        "{out}"
    );
    assert!(err.contains("AccessDenied"), "{err}");
    let listed = |to: &str| {
        // A destination that never recorded the source may not know it at all.
        let (code, out, _) = cairn_with(&both, &["status", "--source", "fx", "--from", to, "--json"]);
        match code {
            0 => out.matches("\"kind\": \"full\"").count(),
            _ => 0,
        }
    };
    assert_eq!(listed(&local), 2, "the local destination has both full copies");
    assert_eq!(listed(&refusing), 0, "nothing was recorded where the data was refused");

    // Without --from, a restore reads the source's destinations in order, with `offsite` (at
    // `first`) before the local folder, into `{source}_{suffix}`.
    let restore_without_from = |first: &str, suffix: &str| {
        let path = locks.path().join(format!("{suffix}.toml"));
        std::fs::write(
            &path,
            format!(
                "[destinations.local]\nurl = {local:?}\n[destinations.offsite]\nurl = {first:?}\n\
                 [sources.fx]\nurl = {:?}\ndestinations = [\"offsite\", \"local\"]\n",
                url_of(&source)
            ),
        )
        .unwrap();
        let restored = format!("{source}_{suffix}");
        let (code, out, err) = cairn_with(
            &path,
            &[
                "restore",
                "--source",
                "fx",
                "--target",
                &crate::support::mysql_url(),
                "--rename-db",
                &format!("{source}={restored}"),
            ],
        );
        (code, out, err, restored)
    };
    // The first holds no copy, the second does.
    let (code, out, err, restored) = restore_without_from(&refusing, "fallback");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("trying the source's next destination"), "{err}");
    assert_same(&source, &restored).await;

    // The offsite store that missed the last copy comes first: the latest copy still comes from
    // the local folder, which holds a newer one, not from the first destination that answers.
    let (code, out, err, restored) = restore_without_from(&good, "newest");
    assert_eq!(code, 0, "{out}\n{err}");
    assert_same(&source, &restored).await;
    assert!(err.contains("holds the newest copy"), "{err}");
}
