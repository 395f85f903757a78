//! The scope filter and the tiling check on hand-made events (no checksums).

use super::*;

/// Builds events at consecutive positions of one server file.
struct Log {
    at: u64,
}

impl Log {
    fn event(&mut self, kind: u8, body: &[u8]) -> RawEvent {
        let size = 19 + body.len();
        let end = self.at + size as u64;
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(size as u32).to_le_bytes());
        bytes.extend_from_slice(&(end as u32).to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(body);
        self.at = end;
        RawEvent::new(bytes).unwrap()
    }

    fn gtid(&mut self, sequence: u64, standalone: bool) -> RawEvent {
        let mut body = sequence.to_le_bytes().to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(u8::from(standalone));
        self.event(kind::MARIADB_GTID, &body)
    }

    fn query(&mut self, schema: &str, text: &str) -> RawEvent {
        let mut body = vec![0u8; 8];
        body.push(schema.len() as u8);
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(schema.as_bytes());
        body.push(0);
        body.extend_from_slice(text.as_bytes());
        self.event(kind::QUERY, &body)
    }

    fn table_map(&mut self, database: &str) -> RawEvent {
        let mut body = vec![0u8; 8];
        body.push(database.len() as u8);
        body.extend_from_slice(database.as_bytes());
        body.extend_from_slice(&[0, 1, b't', 0]);
        self.event(kind::TABLE_MAP, &body)
    }

    fn rows(&mut self, last: bool) -> RawEvent {
        let mut body = vec![0u8; 6];
        body.extend_from_slice(&u16::from(last).to_le_bytes());
        body.extend_from_slice(b"row data");
        self.event(kind::WRITE_ROWS, &body)
    }

    fn xid(&mut self) -> RawEvent {
        self.event(kind::XID, &7u64.to_le_bytes())
    }
}

fn filter() -> ScopeFilter {
    ScopeFilter::new(BTreeSet::from(["app".to_string()]))
}

/// Pushes events; returns the positions of the stored ones and how transactions ended.
fn run(filter: &mut ScopeFilter, events: Vec<RawEvent>) -> (Vec<u64>, Vec<Ended>) {
    let mut stored = Vec::new();
    let mut ended = Vec::new();
    for event in events {
        let pushed = filter.push(event, false);
        stored.extend(pushed.store.iter().map(RawEvent::start));
        ended.extend(pushed.ended);
    }
    (stored, ended)
}

#[test]
fn transactions_of_other_databases_are_left_out_whole_with_their_gtid() {
    let mut log = Log { at: 4 };
    let events = vec![
        log.gtid(10, false),
        log.table_map("other"),
        log.rows(true),
        log.xid(),
        log.gtid(11, false),
        log.table_map("app"),
        log.rows(true),
        log.xid(),
    ];
    let ours: Vec<u64> = events[4..].iter().map(RawEvent::start).collect();
    let mut filter = filter();
    let (stored, ended) = run(&mut filter, events);
    assert_eq!(stored, ours);
    assert_eq!(ended.len(), 2);
    assert!(matches!(
        &ended[0],
        Ended::Dropped(Some(Gtid::Mariadb { sequence: 10, .. }))
    ));
    assert_eq!(ended[1], Ended::Kept);
    assert!(filter.idle());
}

#[test]
fn in_a_transaction_of_ours_the_statements_of_others_are_left_out() {
    let mut log = Log { at: 4 };
    let gtid = log.gtid(12, false);
    let foreign = [log.table_map("other"), log.rows(false), log.rows(true)];
    let own = [log.table_map("app"), log.rows(true)];
    let foreign_query = log.query("other", "INSERT INTO t VALUES (1)");
    let xid = log.xid();
    let mut expected = vec![gtid.start()];
    expected.extend(own.iter().map(RawEvent::start));
    expected.push(xid.start());
    let mut events = vec![gtid];
    events.extend(foreign);
    events.extend(own);
    events.push(foreign_query);
    events.push(xid);
    let (stored, ended) = run(&mut filter(), events);
    assert_eq!(stored, expected);
    assert_eq!(ended, [Ended::Kept]);
}

#[test]
fn a_statement_whose_rows_span_databases_is_kept_whole() {
    let mut log = Log { at: 4 };
    let events = vec![
        log.gtid(13, false),
        log.table_map("app"),
        log.table_map("other"),
        log.rows(false),
        log.rows(true),
        log.xid(),
    ];
    let all: Vec<u64> = events.iter().map(RawEvent::start).collect();
    let mut filter = filter();
    let (stored, _) = run(&mut filter, events);
    assert_eq!(stored, all);
    assert_eq!(filter.mixed_statements, 1);
}

#[test]
fn logged_statements_go_by_the_replay_rule() {
    let mut log = Log { at: 4 };
    let cases = [
        ("app", "ALTER TABLE t ADD c INT", true),
        ("", "CREATE TABLE app.t (a INT)", true),
        ("", "DROP DATABASE `app`", true),
        ("other", "CREATE TABLE t (a INT)", false),
        ("app", "GRANT SELECT ON app.* TO x", false),
        ("", "CREATE TABLE myapp.t (a INT)", false),
    ];
    for (schema, text, kept) in cases {
        let mut filter = filter();
        let gtid = log.gtid(14, true);
        let statement = log.query(schema, text);
        let (stored, ended) = run(&mut filter, vec![gtid, statement]);
        assert_eq!(!stored.is_empty(), kept, "{schema:?} {text:?}");
        assert_eq!(ended.len(), 1, "a standalone statement is a transaction");
        assert_eq!(ended[0] == Ended::Kept, kept);
    }
}

#[test]
fn events_between_transactions_are_kept() {
    let mut log = Log { at: 4 };
    let stop = log.event(kind::STOP, &[]);
    let (stored, ended) = run(&mut filter(), vec![stop]);
    assert_eq!(stored.len(), 1);
    assert!(ended.is_empty());
}

#[test]
fn stored_events_and_recorded_skips_must_tile_the_file() {
    let mut log = Log { at: 4 };
    let events: Vec<RawEvent> = (0..4).map(|_| log.query("app", "CREATE TABLE t (a INT)")).collect();
    let end = log.at;
    let skip = Skip {
        from: events[1].start(),
        to: events[2].start(),
        transactions: 1,
        gtids: GtidState::parse("0-1-9").unwrap(),
    };
    // Exact: events 0, 2, 3 and the skip of event 1.
    let mut tiling = Tiling::new(4, end, vec![skip.clone()], false);
    for event in [&events[0], &events[2], &events[3]] {
        tiling.next(event).unwrap();
    }
    assert!(tiling.finish().unwrap().is_none());
    // A hole that no skip accounts for.
    let mut tiling = Tiling::new(4, end, Vec::new(), false);
    tiling.next(&events[0]).unwrap();
    assert!(tiling.next(&events[2]).unwrap_err().contains("missing"));
    // A file that stops short of its recorded end, or leaves a skip unused.
    let mut tiling = Tiling::new(4, end, Vec::new(), false);
    for event in &events[..3] {
        tiling.next(event).unwrap();
    }
    assert!(tiling.finish().is_err());
    // An event stored where a skip says the log was left out.
    let mut tiling = Tiling::new(4, end, vec![skip], false);
    tiling.next(&events[0]).unwrap();
    assert!(tiling.next(&events[1]).unwrap_err().contains("overlaps"));
    // MariaDB's left-out annotations stand only before a table map.
    let mut log = Log { at: 4 };
    let first = log.query("app", "BEGIN");
    log.at += 30;
    let map = log.table_map("app");
    let mut tiling = Tiling::new(4, log.at, Vec::new(), true);
    tiling.next(&first).unwrap();
    tiling.next(&map).unwrap();
    assert_eq!(tiling.annotations, 1);
    tiling.finish().unwrap();
}

#[test]
fn skips_round_trip_through_json() {
    let skip = Skip {
        from: 256,
        to: 4096,
        transactions: 41,
        gtids: GtidState::parse("0-1-4711").unwrap(),
    };
    assert_eq!(Skip::from_json(&skip.to_json()).unwrap(), skip);
    assert!(Skip::from_json(&json!([1, 2])).is_err());
}
