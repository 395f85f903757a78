//! Row changes written as SQL text with their values as literals, so that many statements go to
//! the target in one round trip (`batch.rs`). Every value is written so that the server reads
//! back exactly what a prepared statement's parameter would have carried.

use std::io::Write;

use mysql_async::Value;

use super::values::{ColumnInfo, TableInfo};

/// A statement longer than this is not queued: it runs on its own as a prepared statement, whose
/// parameters the driver can send in pieces (a text statement must fit `max_allowed_packet`).
pub(super) const LONGEST_STATEMENT: usize = 1 << 20;

/// Writes `value` as a literal; `false` for a value that has none (a float that is not a
/// number), which the caller sends as a parameter instead. `printable`: bytes that are not UTF-8
/// as a hex literal, so that a script stays text the `mysql` client reads (`restore --to-sql`).
fn literal(out: &mut Vec<u8>, value: &Value, printable: bool) -> bool {
    // Writing into a Vec cannot fail.
    let _ = match value {
        Value::NULL => out.write_all(b"NULL"),
        Value::Int(v) => write!(out, "{v}"),
        Value::UInt(v) => write!(out, "{v}"),
        // The shortest text that reads back as the same double, in the exponent form the server
        // reads as a DOUBLE literal (a plain decimal would be read as DECIMAL first). A FLOAT's
        // value is exact as a double, so it too reads back to the same bits.
        Value::Float(v) if v.is_finite() => write!(out, "{:e}", f64::from(*v)),
        Value::Double(v) if v.is_finite() => write!(out, "{v:e}"),
        Value::Float(_) | Value::Double(_) => return false,
        Value::Bytes(bytes) if printable && std::str::from_utf8(bytes).is_err() => {
            out.extend_from_slice(b"_binary X'");
            for byte in bytes {
                let _ = write!(out, "{byte:02X}");
            }
            out.push(b'\'');
            Ok(())
        }
        Value::Bytes(bytes) => {
            out.extend_from_slice(b"_binary'");
            escape(out, bytes);
            out.push(b'\'');
            Ok(())
        }
        Value::Date(year, month, day, hour, minute, second, micros) => write!(
            out,
            "'{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}'"
        ),
        Value::Time(negative, days, hours, minutes, seconds, micros) => write!(
            out,
            "'{}{}:{minutes:02}:{seconds:02}.{micros:06}'",
            if *negative { "-" } else { "" },
            u64::from(*days) * 24 + u64::from(*hours)
        ),
    };
    true
}

/// Bytes inside a quoted literal. The applying session never has `NO_BACKSLASH_ESCAPES` (its
/// `sql_mode` is set by the applier) and reads them as `binary`, so no byte is a character set's
/// lead byte.
fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    for &byte in bytes {
        match byte {
            0 => out.extend_from_slice(b"\\0"),
            b'\'' => out.extend_from_slice(b"\\'"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0x1a => out.extend_from_slice(b"\\Z"),
            other => out.push(other),
        }
    }
}

/// `INSERT INTO t (columns) VALUES ` for the columns an insert sets (generated ones are not).
pub(super) fn insert_head(info: &TableInfo) -> Vec<u8> {
    let names: Vec<&str> = info
        .columns
        .iter()
        .zip(&info.quoted)
        .filter(|(c, _)| !c.generated)
        .map(|(_, name)| name.as_str())
        .collect();
    format!("INSERT INTO {} ({}) VALUES ", info.qualified, names.join(", ")).into_bytes()
}

/// One row of an insert: `(v1, v2, …)`; `false` when a value has no literal.
pub(super) fn insert_row(out: &mut Vec<u8>, info: &TableInfo, row: &[Value]) -> bool {
    out.push(b'(');
    let mut first = true;
    for (value, column) in row.iter().zip(&info.columns) {
        if column.generated {
            continue;
        }
        if !first {
            out.extend_from_slice(b", ");
        }
        first = false;
        if !literal(out, value, info.printable) {
            return false;
        }
    }
    out.push(b')');
    true
}

/// `UPDATE t SET … WHERE <the row> LIMIT 1`; `false` when a value has no literal.
pub(super) fn update(out: &mut Vec<u8>, info: &TableInfo, before: &[Value], after: &[Value]) -> bool {
    out.extend_from_slice(b"UPDATE ");
    out.extend_from_slice(info.qualified.as_bytes());
    out.extend_from_slice(b" SET ");
    pairs(out, info, after, |_, column| !column.generated, b", ", b" = ") && locate(out, info, before)
}

/// `DELETE FROM t WHERE <the row> LIMIT 1`; `false` when a value has no literal.
pub(super) fn delete(out: &mut Vec<u8>, info: &TableInfo, before: &[Value]) -> bool {
    out.extend_from_slice(b"DELETE FROM ");
    out.extend_from_slice(info.qualified.as_bytes());
    locate(out, info, before)
}

/// ` WHERE … LIMIT 1` finding a row by its primary key, or by its whole image without one.
fn locate(out: &mut Vec<u8>, info: &TableInfo, before: &[Value]) -> bool {
    out.extend_from_slice(b" WHERE ");
    let used = |i: usize, column: &ColumnInfo| match info.key.is_empty() {
        true => !column.generated,
        false => info.key.contains(&i),
    };
    let written = pairs(out, info, before, used, b" AND ", b" <=> ");
    out.extend_from_slice(b" LIMIT 1");
    written
}

/// `column <operator> value`, joined by `separator`, for the columns `used` picks.
fn pairs(
    out: &mut Vec<u8>,
    info: &TableInfo,
    row: &[Value],
    used: impl Fn(usize, &ColumnInfo) -> bool,
    separator: &[u8],
    operator: &[u8],
) -> bool {
    let mut first = true;
    for (i, ((value, column), name)) in row.iter().zip(&info.columns).zip(&info.quoted).enumerate() {
        if !used(i, column) {
            continue;
        }
        if !first {
            out.extend_from_slice(separator);
        }
        first = false;
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(operator);
        if !column_literal(out, column, value, info.printable) {
            return false;
        }
    }
    true
}

/// `value` as a literal for `column`. A `DECIMAL`'s text is written as a number: compared with a
/// string, MySQL compares as doubles, and decimals that differ past 15 digits would meet.
fn column_literal(out: &mut Vec<u8>, column: &ColumnInfo, value: &Value, printable: bool) -> bool {
    match value {
        Value::Bytes(digits) if column.data_type == "decimal" && is_decimal(digits) => {
            out.extend_from_slice(digits);
            true
        }
        _ => literal(out, value, printable),
    }
}

/// A decimal number as the log's decoding writes it: `-`, digits, at most one point.
fn is_decimal(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    !digits.is_empty()
        && digits.iter().all(|b| b.is_ascii_digit() || *b == b'.')
        && digits.iter().filter(|b| **b == b'.').count() <= 1
        && digits[0] != b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: Value) -> String {
        let mut out = Vec::new();
        assert!(literal(&mut out, &value, false));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_become_literals_that_read_back_the_same() {
        assert_eq!(text(Value::NULL), "NULL");
        assert_eq!(text(Value::Int(-42)), "-42");
        assert_eq!(text(Value::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(text(Value::Double(0.1)), "1e-1");
        // 0.1 as a FLOAT is not 0.1: its exact value as a double.
        assert_eq!(text(Value::Float(0.1)), "1.0000000149011612e-1");
        assert_eq!(
            text(Value::Bytes(b"a'b\\c\0d\ne\rf\x1ag".to_vec())),
            "_binary'a\\'b\\\\c\\0d\\ne\\rf\\Zg'"
        );
        assert_eq!(
            text(Value::Date(2024, 2, 29, 23, 5, 9, 120)),
            "'2024-02-29 23:05:09.000120'"
        );
        assert_eq!(text(Value::Time(true, 2, 3, 4, 5, 6)), "'-51:04:05.000006'");
        assert!(!literal(&mut Vec::new(), &Value::Double(f64::NAN), false));
    }

    #[test]
    fn decimals_find_their_row_as_numbers() {
        let column = |name: &str, data_type: &str| ColumnInfo {
            name: name.into(),
            data_type: data_type.into(),
            unsigned: false,
            generated: false,
        };
        let info = TableInfo {
            qualified: "`d`.`t`".into(),
            columns: vec![column("k", "decimal"), column("s", "varchar")],
            quoted: vec!["`k`".into(), "`s`".into()],
            insert_head: Vec::new(),
            key: Vec::new(),
            printable: false,
        };
        let mut out = Vec::new();
        let before = [
            Value::Bytes(b"-12345678901234567890.000000000000000001".to_vec()),
            Value::Bytes(b"1.5".to_vec()),
        ];
        assert!(delete(&mut out, &info, &before));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "DELETE FROM `d`.`t` WHERE `k` <=> -12345678901234567890.000000000000000001 AND `s` <=> _binary'1.5' LIMIT 1"
        );
        // Anything else in a DECIMAL column stays a quoted literal.
        let mut out = Vec::new();
        assert!(column_literal(
            &mut out,
            &info.columns[0],
            &Value::Bytes(b"1; DROP".to_vec()),
            false
        ));
        assert_eq!(out, b"_binary'1; DROP'");
    }

    #[test]
    fn bytes_that_are_not_text_stay_bytes() {
        let mut out = Vec::new();
        assert!(literal(&mut out, &Value::Bytes(vec![0xff, 0xfe, b'\'', 0x80]), false));
        assert_eq!(out, b"_binary'\xff\xfe\\'\x80'");
        // In a script, as hex: the `mysql` client reads text.
        let mut out = Vec::new();
        assert!(literal(&mut out, &Value::Bytes(vec![0xff, 0xfe, b'\'', 0x80]), true));
        assert_eq!(out, b"_binary X'FFFE2780'");
        let mut out = Vec::new();
        assert!(literal(&mut out, &Value::Bytes("é'".as_bytes().to_vec()), true));
        assert_eq!(out, "_binary'é\\''".as_bytes());
    }
}
