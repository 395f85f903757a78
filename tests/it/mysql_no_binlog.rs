//! `cairn restore --no-binlog` against the private MariaDB: nothing the restore writes — schema,
//! rows, indexes, foreign keys, views, routines, and the replay of an incremental's DDL and rows —
//! reaches the target's binary log, so a replica of the target never gets tables without their
//! rows.

use mysql_async::Row;
use mysql_async::prelude::Queryable;

use crate::mysql::{ONE_AT_A_TIME, assert_same, backup_with, connect, fixture_database, restore_with};
use crate::support::{cairn, mysql_url};

#[tokio::test]
async fn a_restore_with_no_binlog_leaves_nothing_in_the_targets_binary_log() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fixture_database("my_nobinlog").await;
    let target = format!("{source}_restored");
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, out, err) = backup_with(&mut cairn(locks.path()), &source, &to, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    // An incremental with DDL and rows: the restore replays it after loading the full copy.
    connect(&crate::mysql::url_of(&source))
        .await
        .query_drop("CREATE TABLE after_copy (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO after_copy VALUES (1, 'one'), (2, 'two'); UPDATE after_copy SET v = 'changed' WHERE id = 2")
        .await
        .unwrap();
    let (code, out, err) = backup_with(&mut cairn(locks.path()), &source, &to, &["--type", "incremental"]);
    assert_eq!(code, 0, "{out}\n{err}");

    let mut admin = connect(&mysql_url()).await;
    let status: Row = admin
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .expect("binary log on");
    let (first, position): (String, u64) = (status.get(0).unwrap(), status.get(1).unwrap());
    let (code, out, err) = restore_with(&mut cairn(locks.path()), &to, &source, &target, &["--no-binlog"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_same(&source, &target).await;

    // Every event since, in every binary log file from the one current before the restore (other
    // tests write too: only events naming the restored database count). Statements name it in
    // their text, row events in the table map before them.
    let files: Vec<String> = admin
        .query::<Row, _>("SHOW BINARY LOGS")
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.get::<String, _>(0).unwrap())
        .filter(|file| *file >= first)
        .collect();
    let mut naming = Vec::new();
    for file in files {
        let from = if file == first { position } else { 4 };
        let events: Vec<Row> = admin
            .query(format!("SHOW BINLOG EVENTS IN '{file}' FROM {from}"))
            .await
            .unwrap();
        naming.extend(
            events
                .iter()
                // Info may hold bytes that are not UTF-8 (another session's statement) or NULL.
                .filter_map(|event| event.get::<Option<Vec<u8>>, _>(5).flatten())
                .map(|info| String::from_utf8_lossy(&info).into_owned())
                .filter(|info| info.contains(&target)),
        );
    }
    assert!(naming.is_empty(), "the restore reached the binary log: {naming:?}");
}
