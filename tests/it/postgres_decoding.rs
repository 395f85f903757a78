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
    // Decoding reads flushed WAL only, and the test server commits without waiting for the flush.
    client.batch_execute("SET synchronous_commit = on").await.unwrap();
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

/// Every table's rows as text, in a stable order.
async fn contents(client: &tokio_postgres::Client) -> Vec<(String, Vec<String>)> {
    let mut all = Vec::new();
    for table in ["accounts", "events", "pairs"] {
        let rows = client
            .query(&format!("SELECT t::text FROM {table} t ORDER BY t::text"), &[])
            .await
            .unwrap();
        all.push((table.to_string(), rows.iter().map(|r| r.get::<_, String>(0)).collect()));
    }
    all
}

#[tokio::test]
async fn decoded_changes_applied_to_the_starting_point_give_the_source_s_tables() {
    let source = fresh_database("apply_src").await;
    let target = fresh_database("apply_dst").await;
    let schema = "CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL, notes text, balance numeric(12,2), \
                      seen timestamptz, tags text[], doc jsonb);
                  ALTER TABLE accounts ALTER COLUMN notes SET STORAGE EXTERNAL;
                  CREATE TABLE events (at bigint, what text, doc json);
                  ALTER TABLE events REPLICA IDENTITY FULL;
                  CREATE TABLE pairs (a int, b text, v float8, PRIMARY KEY (a, b));";
    let src = connect(&url_of(&source)).await;
    let dst = connect(&url_of(&target)).await;
    // Decoding reads flushed WAL only, and the test server commits without waiting for the flush.
    src.batch_execute("SET synchronous_commit = on").await.unwrap();
    src.batch_execute(schema).await.unwrap();
    dst.batch_execute(schema).await.unwrap();
    let slot = format!("cairn_test_{source}");
    let publication = format!("cairn_pub_{source}");
    src.batch_execute(&format!("CREATE PUBLICATION {publication} FOR ALL TABLES"))
        .await
        .unwrap();
    src.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
        .await
        .unwrap();
    let big: String = (0..12_000).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
    for statement in [
        format!(
            "INSERT INTO accounts VALUES (1, 'ann', '{big}', 10.50, '2026-01-02 03:04:05.123456+00', \
             '{{a,\"b c\",NULL}}', '{{\"k\": [1, 2.5, \"x\"]}}'), (2, 'bob', NULL, NULL, NULL, NULL, NULL), \
             (3, 'o''neil \\ back', 'short', -0.01, 'infinity', '{{}}', 'null')"
        ),
        "INSERT INTO events VALUES (1, 'dup', '{\"a\": 1}'), (1, 'dup', '{\"a\": 1}'), (2, NULL, NULL)".into(),
        "INSERT INTO pairs VALUES (1, 'x', 0.1), (1, 'y', 1e300), (2, 'x', 'NaN')".into(),
        "UPDATE accounts SET name = 'anne', balance = balance + 1 WHERE id = 1".into(),
        "UPDATE accounts SET id = 20 WHERE id = 2".into(),
        "UPDATE pairs SET b = 'z' WHERE a = 1 AND b = 'y'".into(),
        "DELETE FROM events WHERE ctid = (SELECT ctid FROM events WHERE at = 1 LIMIT 1)".into(),
        "UPDATE events SET what = 'none' WHERE at = 2".into(),
        "BEGIN; INSERT INTO accounts VALUES (4, 'gone', NULL, NULL, NULL, NULL, NULL); ROLLBACK".into(),
        "BEGIN; DELETE FROM accounts WHERE id = 3; INSERT INTO accounts VALUES (3, 'back', NULL, 1, NULL, NULL, \
         NULL); COMMIT"
            .into(),
        "TRUNCATE pairs".into(),
        "INSERT INTO pairs VALUES (5, 'after truncate', -1.5)".into(),
    ] {
        src.batch_execute(&statement).await.unwrap();
    }

    let rows = src
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', \
             'publication_names', $2)",
            &[&slot, &publication],
        )
        .await
        .unwrap();
    let pg = cairn::engine::postgres::Pg::new(cairn::engine::SourceUrl::parse(&url_of(&target)).unwrap());
    let mut applier = cairn::engine::postgres::apply::Applier::new(&pg, &dst).await.unwrap();
    let mut decoder = Decoder::default();
    for row in &rows {
        let lsn: String = row.get(0);
        let data: Vec<u8> = row.get(1);
        if let Some(change) = decoder.decode(&lsn, &data).unwrap() {
            applier.apply(change, "").await.unwrap();
        }
    }
    src.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    src.batch_execute(&format!("DROP PUBLICATION {publication}"))
        .await
        .unwrap();

    let applied = applier.finish().await.unwrap();
    // The applier works under search_path = pg_catalog; the checks below name tables plainly.
    dst.batch_execute("RESET search_path").await.unwrap();
    assert_eq!(
        applied.transactions, 11,
        "the rolled-back transaction is not in the stream"
    );
    let (expected, got) = (contents(&src).await, contents(&dst).await);
    assert_eq!(got, expected);
    // The TOASTed notes survived the update that did not carry them.
    let notes: String = dst
        .query_one("SELECT notes FROM accounts WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes, big);
}
