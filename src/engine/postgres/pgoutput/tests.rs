//! Unit tests of the pgoutput decoder, on messages built byte by byte as the protocol
//! documentation lays them out.

use super::*;

/// Builds a message.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn new(kind: u8) -> Self {
        Message(vec![kind])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn string(mut self, v: &str) -> Self {
        self.0.extend(v.as_bytes());
        self.0.push(0);
        self
    }
    fn text(mut self, v: &str) -> Self {
        self.0.push(b't');
        self.0.extend((v.len() as i32).to_be_bytes());
        self.0.extend(v.as_bytes());
        self
    }
}

fn relation() -> Vec<u8> {
    Message::new(b'R')
        .u32(16385)
        .string("public")
        .string("accounts")
        .u8(b'd')
        .i16(3)
        .u8(1)
        .string("id")
        .u32(23)
        .u32(u32::MAX)
        .u8(0)
        .string("name")
        .u32(25)
        .u32(u32::MAX)
        .u8(0)
        .string("notes")
        .u32(25)
        .u32(u32::MAX)
        .0
}

#[test]
fn a_transaction_decodes_into_begin_rows_and_commit() {
    let mut decoder = Decoder::default();
    // 2026-01-01T00:00:00Z in microseconds since 2000-01-01.
    let committed = (1_767_225_600_000_000i64 - POSTGRES_EPOCH_MICROS) as u64;
    let begin = Message::new(b'B').u64(0x16_B374_D848).u64(committed).u32(771).0;
    let Some(Change::Begin {
        transaction,
        committed_at,
        ..
    }) = decoder.decode("at 1", &begin).unwrap()
    else {
        panic!("not a begin")
    };
    assert_eq!(transaction, Some(771));
    assert_eq!(committed_at.unwrap().to_rfc3339(), "2026-01-01T00:00:00+00:00");

    assert_eq!(decoder.decode("at 2", &relation()).unwrap(), None);
    let insert = Message::new(b'I')
        .u32(16385)
        .u8(b'N')
        .i16(3)
        .text("1")
        .text("ann")
        .u8(b'n')
        .0;
    let Some(Change::Rows(rows)) = decoder.decode("at 3", &insert).unwrap() else {
        panic!("not rows")
    };
    assert_eq!((rows.database.as_str(), rows.table.as_str()), ("public", "accounts"));
    assert_eq!(rows.names, ["id", "name", "notes"]);
    assert_eq!(rows.key, [0]);
    assert_eq!(
        rows.changes,
        [RowChange::Insert {
            after: vec![Value::Bytes(b"1".to_vec()), Value::Bytes(b"ann".to_vec()), Value::Null]
        }]
    );

    // An update that leaves a TOASTed column out and has no old image: the key finds the row.
    let update = Message::new(b'U')
        .u32(16385)
        .u8(b'N')
        .i16(3)
        .text("1")
        .text("bo")
        .u8(b'u')
        .0;
    let Some(Change::Rows(rows)) = decoder.decode("at 4", &update).unwrap() else {
        panic!("not rows")
    };
    assert_eq!(
        rows.changes,
        [RowChange::Update {
            before: vec![Value::Bytes(b"1".to_vec()), Value::Unchanged, Value::Unchanged],
            after: vec![
                Value::Bytes(b"1".to_vec()),
                Value::Bytes(b"bo".to_vec()),
                Value::Unchanged
            ],
        }]
    );

    // A key change sends the old key.
    let rekey = Message::new(b'U')
        .u32(16385)
        .u8(b'K')
        .i16(3)
        .text("1")
        .u8(b'n')
        .u8(b'n')
        .u8(b'N')
        .i16(3)
        .text("2")
        .text("bo")
        .u8(b'u')
        .0;
    let Some(Change::Rows(rows)) = decoder.decode("at 5", &rekey).unwrap() else {
        panic!("not rows")
    };
    let RowChange::Update { before, .. } = &rows.changes[0] else {
        panic!("not an update")
    };
    assert_eq!(before[0], Value::Bytes(b"1".to_vec()));

    let delete = Message::new(b'D')
        .u32(16385)
        .u8(b'K')
        .i16(3)
        .text("2")
        .u8(b'n')
        .u8(b'n')
        .0;
    assert!(matches!(
        decoder.decode("at 6", &delete).unwrap(),
        Some(Change::Rows(Rows { changes, .. })) if matches!(changes[0], RowChange::Delete { .. })
    ));

    let truncate = Message::new(b'T').u32(1).u8(2).u32(16385).0;
    let Some(Change::Truncate(truncate)) = decoder.decode("at 7", &truncate).unwrap() else {
        panic!("not a truncate")
    };
    assert_eq!(truncate.tables, [("public".to_string(), "accounts".to_string())]);
    assert!(truncate.restart_identity && !truncate.cascade);

    let commit = Message::new(b'C')
        .u8(0)
        .u64(0x16_B374_D900)
        .u64(0x16_B374_D930)
        .u64(committed)
        .0;
    let Some(Change::Commit(commit)) = decoder.decode("at 8", &commit).unwrap() else {
        panic!("not a commit")
    };
    assert_eq!(
        commit.position,
        LogPosition::Postgres {
            lsn: "16/B374D930".into(),
            timeline: None,
            slot: None
        }
    );
}

#[test]
fn damaged_or_unknown_messages_are_refused_with_a_reason() {
    let mut decoder = Decoder::default();
    let orphan = Message::new(b'I').u32(99).u8(b'N').i16(0).0;
    assert!(
        decoder
            .decode("x", &orphan)
            .unwrap_err()
            .contains("before its Relation")
    );
    decoder.decode("x", &relation()).unwrap();
    let short = Message::new(b'I').u32(16385).u8(b'N').i16(3).text("1").0;
    assert!(decoder.decode("x", &short).unwrap_err().contains("ends at byte"));
    let wrong_count = Message::new(b'I').u32(16385).u8(b'N').i16(2).text("1").text("a").0;
    assert!(decoder.decode("x", &wrong_count).unwrap_err().contains("has 2 columns"));
    let trailing = Message::new(b'B').u64(1).u64(1).u32(1).u8(7).0;
    assert!(decoder.decode("x", &trailing).unwrap_err().contains("1 bytes follow"));
    assert!(decoder.decode("x", b"Z").unwrap_err().contains("not one pgoutput"));
}

#[test]
fn lsns_read_and_write_as_postgresql_shows_them() {
    assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
    assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
    assert_eq!(lsn_text(parse_lsn("0/0").unwrap()), "0/0");
    assert!(parse_lsn("16B374D848").is_err());
    assert!(parse_lsn("1FFFFFFFF/0").is_err());
}
