//! Binary log values of every kind become the text of their PostgreSQL type.

use super::*;
use crate::engine::to_postgres::{parse_table, translate};

fn translator() -> RowTranslator {
    let my = parse_table(
        "CREATE TABLE `t` (\n  `id` int(10) unsigned NOT NULL,\n  `m` mediumint(9) DEFAULT NULL,\n  \
         `e` enum('a','b') DEFAULT NULL,\n  `s` set('x','y','z') DEFAULT NULL,\n  `b` bit(4) DEFAULT NULL,\n  \
         `y` year(4) DEFAULT NULL,\n  `ts` timestamp NULL DEFAULT NULL,\n  `d` date NOT NULL,\n  \
         `tm` time DEFAULT NULL,\n  `txt` varchar(10) DEFAULT NULL,\n  `raw` binary(4),\n  \
         `g` int(11) GENERATED ALWAYS AS (`id` + 1) VIRTUAL,\n  `u` uuid DEFAULT NULL,\n  \
         `f` float DEFAULT NULL,\n  PRIMARY KEY (`id`)\n) DEFAULT CHARSET=latin1",
        &[],
    )
    .unwrap();
    let pg = translate(&my, "shop", &|d: &str| d.to_string(), &mut Default::default()).unwrap();
    let shape = Shape::new(&my, &pg).unwrap();
    RowTranslator::new([(("db".to_string(), "t".to_string()), shape)].into())
}

fn rows(changes: Vec<RowChange>) -> Rows {
    Rows {
        at: "binlog.000001:4".into(),
        database: "db".into(),
        table: "t".into(),
        columns: 14,
        names: Vec::new(),
        key: Vec::new(),
        key_unique: true,
        foreign_key_checks: true,
        changes,
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Bytes(bytes) => Some(String::from_utf8(bytes.clone()).unwrap()),
        Value::Null => None,
        other => panic!("{other:?}"),
    }
}

#[test]
fn binlog_values_become_the_text_of_the_mapped_type() {
    let mut translator = translator();
    let image = vec![
        Value::Int(-1),
        Value::Int(0xff_ffff),
        Value::Int(2),
        Value::Bytes(vec![0b101]),
        Value::Bytes(vec![0x0a]),
        Value::Bytes(b"1900".to_vec()),
        Value::Bytes(b"1.000001".to_vec()),
        Value::DateTime {
            year: 0,
            month: 0,
            day: 0,
            hour: 0,
            minute: 0,
            second: 0,
            micros: 0,
        },
        Value::Time {
            negative: true,
            days: 1,
            hours: 2,
            minutes: 3,
            seconds: 4,
            micros: 5,
        },
        Value::Bytes(vec![b'c', 0xe9, b'\\', b'\t']),
        Value::Bytes(vec![0, 0xff]),
        Value::Int(99),
        Value::Bytes(vec![0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x1d, 0xef, 0x81]),
        Value::Float(0.1),
    ];
    let out = translator
        .translate(rows(vec![RowChange::Insert { after: image }]))
        .unwrap();
    assert_eq!((out.database.as_str(), out.table.as_str()), ("shop", "t"));
    assert_eq!(out.key, [0]);
    assert!(!out.names.contains(&"g".to_string()), "{:?}", out.names);
    let RowChange::Insert { after } = &out.changes[0] else {
        panic!()
    };
    let texts: Vec<Option<String>> = after.iter().map(text).collect();
    let expected = [
        Some("4294967295"),
        Some("-1"),
        Some("b"),
        Some("x,z"),
        Some("1010"),
        Some("0"),
        Some("1970-01-01 00:00:01.000001+00"),
        // A zero date in a NOT NULL column.
        Some("-infinity"),
        Some("-26:03:04.000005"),
        Some("cé\\\t"),
        Some("\\x00ff0000"),
        Some("12345678-9abc-1def-8100-000000000000"),
        Some("0.1"),
    ];
    let expected: Vec<Option<String>> = expected.iter().map(|e| e.map(str::to_string)).collect();
    assert_eq!(texts, expected);
    assert_eq!(translator.zero_dates.get("shop.t.d"), Some(&1));
}

#[test]
fn what_the_copy_does_not_describe_stops_with_the_table_named() {
    let mut translator = translator();
    let err = translator
        .translate(rows(vec![RowChange::Delete {
            before: vec![Value::Int(1)],
        }]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("db.t with 1 columns") && err.contains("altered"), "{err}");
    let mut other = rows(Vec::new());
    other.table = "new_table".into();
    let err = translator.translate(other).unwrap_err().to_string();
    assert!(err.contains("db.new_table") && err.contains("--until"), "{err}");
    // An ENUM number the copy's definition does not have.
    let mut image = vec![Value::Null; 14];
    image[0] = Value::Int(1);
    image[2] = Value::Int(3);
    image[7] = Value::DateTime {
        year: 2020,
        month: 1,
        day: 2,
        hour: 0,
        minute: 0,
        second: 0,
        micros: 0,
    };
    let err = translator
        .translate(rows(vec![RowChange::Insert { after: image }]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("e: ENUM member 3"), "{err}");
}
