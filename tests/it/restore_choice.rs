//! Choosing the copy to restore (issue #16): a unique start of its id, the newest copy that
//! finished before a time, and the source's configured destination when `--from` is left out.

use mysql_async::prelude::Queryable;

use crate::mysql::{ONE_AT_A_TIME, connect, fresh_database, url_of};
use crate::support::{cairn, mysql_url, run};

/// The restored database's rows of `t`, as a list.
async fn rows_of(database: &str) -> String {
    connect(&url_of(database))
        .await
        .query_first::<String, _>("SELECT GROUP_CONCAT(id ORDER BY id) FROM t")
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_copy_is_chosen_by_the_start_of_its_id_or_a_time_and_the_destination_by_the_configuration() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fresh_database("choice").await;
    let mut my = connect(&url_of(&source)).await;
    my.query_drop("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let config = locks.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[destinations.local]\nurl = {to:?}\n[sources.fx]\nurl = {:?}\ndestination = \"local\"\n",
            url_of(&source)
        ),
    )
    .unwrap();
    let cairn_with_config = || {
        let mut command = cairn(locks.path());
        command.arg("--config").arg(&config);
        command
    };
    for row in [2, 3] {
        let (code, out, err) = run(cairn_with_config().args(["backup", "--source", "fx"]));
        assert_eq!(code, 0, "{out}\n{err}");
        my.query_drop(format!("INSERT INTO t VALUES ({row})")).await.unwrap();
        // Copy ids and finish times a second apart.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    let (code, out, err) = run(cairn_with_config().args(["status", "--json", "--source", "fx", "--from", &to]));
    assert_eq!(code, 0, "{out}\n{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let copies = status[0]["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 2, "{status}");
    let (first, second) = (
        copies[0]["id"].as_str().unwrap().to_string(),
        copies[1]["id"].as_str().unwrap().to_string(),
    );
    let (first, second) = if first < second {
        (first, second)
    } else {
        (second, first)
    };
    let common = first.chars().zip(second.chars()).take_while(|(a, b)| a == b).count();
    assert!(common > 0, "{first} {second}");

    let restore = |target: &str, extra: &[&str]| {
        run(cairn_with_config()
            .args([
                "restore",
                "--source",
                "fx",
                "--target",
                &mysql_url(),
                "--rename-db",
                &format!("{source}={target}"),
            ])
            .args(extra))
    };
    // No --from: the source's configured destination. A unique start of the first copy's id.
    let by_prefix = format!("{source}_by_prefix");
    let (code, out, err) = restore(&by_prefix, &["--copy", &first[..=common]]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(rows_of(&by_prefix).await, "1");
    // A start both ids share names both and restores nothing.
    let (code, out, err) = restore(&format!("{source}_ambiguous"), &["--copy", &first[..common]]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains(&first) && err.contains(&second) && err.contains("give more"),
        "{err}"
    );
    // The newest copy that finished before the second one did is the first.
    let finished = copies
        .iter()
        .find(|c| c["id"] == second.as_str())
        .and_then(|c| c["finished_at"].as_str())
        .unwrap()
        .to_string();
    let before = format!("{source}_before");
    let (code, out, err) = restore(&before, &["--before", &finished]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(rows_of(&before).await, "1");
    let (code, _, err) = restore(&format!("{source}_too_early"), &["--before", "2001-01-01 00:00:00"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no restorable copy that finished before"), "{err}");
    let latest = format!("{source}_latest");
    let (code, out, err) = restore(&latest, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(rows_of(&latest).await, "1,2");
}
