//! PostgreSQL logical decoding against the private server: what a pgoutput slot holds after
//! known changes decodes into exactly those changes (the transaction source of PostgreSQL
//! incrementals; issue #11).

use cairn::engine::change::{Change, RowChange, Value};
use cairn::engine::postgres::pgoutput::Decoder;

use crate::postgres::{connect, fresh_database, url_of};

fn text(value: &str) -> Value {
    Value::Bytes(value.as_bytes().to_vec())
}

#[tokio::test]
async fn a_slot_s_changes_decode_into_the_changes_that_were_made() {
    let database = fresh_database("decoding").await;
    let client = connect(&url_of(&database)).await;
    let slot = format!("cairn_test_{database}");
    let publication = "cairn_test_all";
    // A TOASTed value (stored out of line, uncompressed) that an update of another column
    // leaves out of the change.
    let big: String = (0..12_000).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
    client
        .batch_execute(&format!(
            "CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL, notes text, balance numeric(12,2), \
                 seen timestamptz, tags text[]);
             ALTER TABLE accounts ALTER COLUMN notes SET STORAGE EXTERNAL;
             CREATE TABLE events (at bigint, what text);
             ALTER TABLE events REPLICA IDENTITY FULL;
             CREATE PUBLICATION {publication} FOR ALL TABLES;"
        ))
        .await
        .unwrap();
    // A slot is created outside any transaction that wrote (a multi-statement batch is one).
    client
        .execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "BEGIN;
             INSERT INTO accounts VALUES (1, 'ann', '{big}', 10.50, '2026-01-02 03:04:05+00', '{{a,\"b c\"}}'),
                                         (2, 'bob', NULL, NULL, NULL, NULL);
             INSERT INTO events VALUES (1, 'opened');
             COMMIT;"
        ))
        .await
        .unwrap();
    // One transaction each (a multi-statement batch would be one transaction).
    for statement in [
        "UPDATE accounts SET name = 'anne' WHERE id = 1",
        "UPDATE accounts SET id = 3 WHERE id = 2",
        "DELETE FROM events WHERE at = 1",
        "DELETE FROM accounts WHERE id = 3",
        "TRUNCATE events",
    ] {
        client.batch_execute(statement).await.unwrap();
    }

    let rows = client
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', \
             'publication_names', $2)",
            &[&slot, &publication],
        )
        .await
        .unwrap();
    let mut decoder = Decoder::default();
    let mut changes = Vec::new();
    for row in &rows {
        let lsn: String = row.get(0);
        let data: Vec<u8> = row.get(1);
        if let Some(change) = decoder.decode(&lsn, &data).unwrap() {
            changes.push(change);
        }
    }
    client
        .batch_execute(&format!(
            "SELECT pg_drop_replication_slot('{slot}'); DROP PUBLICATION {publication};"
        ))
        .await
        .unwrap();

    // Six transactions: the first with three rows, then one change each.
    let begins = changes.iter().filter(|c| matches!(c, Change::Begin { .. })).count();
    let commits = changes.iter().filter(|c| matches!(c, Change::Commit(_))).count();
    assert_eq!((begins, commits), (6, 6), "{changes:#?}");
    let row_changes: Vec<(String, RowChange)> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Rows(rows) => Some((rows.table.clone(), rows.changes[0].clone())),
            _ => None,
        })
        .collect();
    let expected = vec![
        (
            "accounts".to_string(),
            RowChange::Insert {
                after: vec![
                    text("1"),
                    text("ann"),
                    text(&big),
                    text("10.50"),
                    text("2026-01-02 03:04:05+00"),
                    text("{a,\"b c\"}"),
                ],
            },
        ),
        (
            "accounts".to_string(),
            RowChange::Insert {
                after: vec![
                    text("2"),
                    text("bob"),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ],
            },
        ),
        (
            "events".to_string(),
            RowChange::Insert {
                after: vec![text("1"), text("opened")],
            },
        ),
        // The TOASTed notes are not in the change: they must never be overwritten.
        (
            "accounts".to_string(),
            RowChange::Update {
                before: vec![
                    text("1"),
                    Value::Unchanged,
                    Value::Unchanged,
                    Value::Unchanged,
                    Value::Unchanged,
                    Value::Unchanged,
                ],
                after: vec![
                    text("1"),
                    text("anne"),
                    Value::Unchanged,
                    text("10.50"),
                    text("2026-01-02 03:04:05+00"),
                    text("{a,\"b c\"}"),
                ],
            },
        ),
        // A key change carries the old key.
        (
            "accounts".to_string(),
            RowChange::Update {
                before: vec![
                    text("2"),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ],
                after: vec![
                    text("3"),
                    text("bob"),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ],
            },
        ),
        // REPLICA IDENTITY FULL: the whole old row finds it.
        (
            "events".to_string(),
            RowChange::Delete {
                before: vec![text("1"), text("opened")],
            },
        ),
        (
            "accounts".to_string(),
            RowChange::Delete {
                before: vec![
                    text("3"),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ],
            },
        ),
    ];
    assert_eq!(row_changes, expected);
    let truncated: Vec<_> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Truncate(t) => Some(t.tables.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(truncated, vec![vec![("public".to_string(), "events".to_string())]]);
    // Every transaction carries its id and commit time; positions only grow.
    let mut last = 0u64;
    for change in &changes {
        match change {
            Change::Begin {
                transaction,
                committed_at,
                ..
            } => assert!(transaction.is_some() && committed_at.is_some(), "{change:?}"),
            Change::Commit(commit) => {
                let cairn::repo::model::LogPosition::Postgres { lsn, .. } = &commit.position else {
                    panic!("not a PostgreSQL position: {commit:?}")
                };
                let at = cairn::engine::postgres::pgoutput::parse_lsn(lsn).unwrap();
                assert!(at > last, "{lsn} does not follow {last:X}");
                last = at;
            }
            _ => {}
        }
    }
}
