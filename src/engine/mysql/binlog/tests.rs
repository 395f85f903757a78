//! Unit tests of binary log framing, transactions and GTIDs.

use super::*;

#[test]
fn gtid_states_merge_later_transactions() {
    let mut mariadb = GtidState::parse("0-1-10,1-1-5").unwrap();
    mariadb.merge(&GtidState::parse("0-1-12").unwrap());
    assert_eq!(mariadb.to_string(), "0-1-12,1-1-5");
    let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    let mut mysql = GtidState::parse(&format!("{uuid}:1-5")).unwrap();
    mysql.merge(&GtidState::parse(&format!("{uuid}:6-9:12")).unwrap());
    assert_eq!(mysql.to_string(), format!("{uuid}:1-9:12"));
}

fn event(kind: u8, log_pos: u32, flags: u16, body: &[u8], crc: bool) -> RawEvent {
    let size = HEADER_LEN + body.len() + if crc { 4 } else { 0 };
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    bytes.push(kind);
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&(size as u32).to_le_bytes());
    bytes.extend_from_slice(&log_pos.to_le_bytes());
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(body);
    if crc {
        let sum = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
    }
    RawEvent::new(bytes).unwrap()
}

fn query(text: &str) -> Vec<u8> {
    let mut body = vec![0u8; 13];
    body[8] = 3;
    body.extend_from_slice(b"app\0");
    body.extend_from_slice(text.as_bytes());
    body
}

#[tokio::test]
async fn a_flipped_byte_fails_the_crc_and_a_short_file_is_named() {
    let mut fde_body = vec![0u8; 60];
    fde_body.push(1); // CRC32
    let fde = event(kind::FORMAT_DESCRIPTION, 100, 0, &fde_body, true);
    let q = event(kind::QUERY, 200, 0, &query("BEGIN"), true);
    let mut file = MAGIC.to_vec();
    file.extend_from_slice(fde.bytes());
    file.extend_from_slice(q.bytes());
    let mut reader = EventReader::open(&file[..]).await.unwrap();
    assert_eq!(reader.next().await.unwrap().unwrap(), fde);
    assert!(reader.checksums());
    let read = reader.next().await.unwrap().unwrap();
    assert_eq!(read.query(true).unwrap(), ("app".to_string(), &b"BEGIN"[..]));
    assert!(reader.next().await.unwrap().is_none());

    let mut damaged = file.clone();
    let last = damaged.len() - 6;
    damaged[last] ^= 0x40;
    let mut reader = EventReader::open(&damaged[..]).await.unwrap();
    reader.next().await.unwrap();
    let err = reader.next().await.unwrap_err();
    assert!(err.to_string().contains("CRC32 mismatch"), "{err}");
    assert_eq!(err.offset, 4 + fde.bytes().len() as u64);

    let mut reader = EventReader::open(&file[..file.len() - 3]).await.unwrap();
    reader.next().await.unwrap();
    let err = reader.next().await.unwrap_err();
    assert!(err.to_string().contains("ends inside an event"), "{err}");
    assert!(EventReader::open(&b"\xfebix"[..]).await.is_err());
}

#[test]
fn transactions_end_at_commit_xid_or_after_a_standalone_statement() {
    let query_event = |pos, text| event(kind::QUERY, pos, 0, &query(text), false);
    let mut t = Transactions::default();
    // MariaDB: the GTID event itself begins the transaction.
    let gtid = event(kind::MARIADB_GTID, 10, 0, &[0u8; 13], false);
    assert_eq!(t.step(&gtid, false), Step::Within);
    assert_eq!(t, Transactions::Open);
    assert_eq!(
        t.step(&event(kind::TABLE_MAP, 30, 0, &[0; 8], false), false),
        Step::Within
    );
    assert_eq!(t.step(&event(kind::XID, 40, 0, &[0; 8], false), false), Step::Ends);
    assert!(!t.is_open());
    // A standalone MariaDB transaction is its one statement.
    let mut body = [0u8; 13];
    body[12] = 1;
    t.step(&event(kind::MARIADB_GTID, 10, 0, &body, false), false);
    assert_eq!(t, Transactions::AfterGtid);
    assert_eq!(t.step(&query_event(50, "CREATE TABLE x (a int)"), false), Step::Ends);
    // MySQL: a GTID, then BEGIN … COMMIT, or one DDL statement.
    let mysql = event(kind::MYSQL_GTID, 10, 0, &[0u8; 25], false);
    t.step(&mysql, false);
    assert_eq!(t, Transactions::AfterGtid);
    assert_eq!(t.step(&query_event(60, "BEGIN"), false), Step::Within);
    assert!(t.is_open());
    assert_eq!(
        t.step(&query_event(65, "INSERT INTO x VALUES (1)"), false),
        Step::Within
    );
    assert_eq!(t.step(&query_event(70, "COMMIT"), false), Step::Ends);
    t.step(&mysql, false);
    assert_eq!(t.step(&query_event(80, "DROP TABLE x"), false), Step::Ends);
}

#[test]
fn gtid_positions_follow_transactions() {
    let mut state = GtidState::parse("0-1-42,1-2-7").unwrap();
    state.add(&Gtid::parse("0-1-43").unwrap());
    state.add(&Gtid::parse("2-5-1").unwrap());
    assert_eq!(state.to_string(), "0-1-43,1-2-7,2-5-1");

    let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    let mut state = GtidState::parse(&format!("{uuid}:1-5:7")).unwrap();
    state.add(&Gtid::parse(&format!("{uuid}:6")).unwrap());
    state.add(&Gtid::parse(&format!("{uuid}:9")).unwrap());
    assert_eq!(state.to_string(), format!("{uuid}:1-7:9"));
    assert!(Gtid::parse("0-1").is_err());
    assert!(GtidState::parse("").unwrap().is_empty());
}

#[test]
fn binlog_files_order_by_their_number() {
    assert!(file_order("binlog.000009") < file_order("binlog.000010"));
    assert!(file_order("binlog.999999") < file_order("binlog.1000000"));
}
