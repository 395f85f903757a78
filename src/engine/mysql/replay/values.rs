//! Column values between the change model and MySQL: what the binary log decoding gives, and the
//! adjustment to what the target column takes (signedness, `SET` bit maps, `TIMESTAMP`, …).

use mysql_async::Value as MyValue;
use mysql_async::binlog::value::BinlogValue;

use crate::engine::SourceError;
use crate::engine::change::Value;

/// A target table's columns, in order, as the apply needs them.
#[derive(Debug)]
pub(super) struct TableInfo {
    pub(super) qualified: String,
    pub(super) columns: Vec<ColumnInfo>,
    /// The columns' names, quoted, in order.
    pub(super) quoted: Vec<String>,
    /// `INSERT INTO … (the columns an insert sets) VALUES `.
    pub(super) insert_head: Vec<u8>,
    /// Indexes of the primary key's columns; empty: rows are found by their whole image.
    pub(super) key: Vec<usize>,
    /// Bytes that are not UTF-8 are written as hex: the statements go into a script.
    pub(super) printable: bool,
}

#[derive(Debug)]
pub(super) struct ColumnInfo {
    pub(super) name: String,
    pub(super) data_type: String,
    pub(super) unsigned: bool,
    pub(super) generated: bool,
}

/// A value of a decoded row image in the change model.
///
/// # Errors
/// Partial JSON updates, which carry a difference instead of the value.
pub(super) fn from_binlog(value: BinlogValue<'static>) -> Result<Value, String> {
    let value = match value {
        BinlogValue::Value(value) => value,
        BinlogValue::Jsonb(_) => {
            return match MyValue::try_from(value).map_err(|e| e.to_string())? {
                MyValue::Bytes(text) => Ok(Value::Json(text)),
                other => Ok(from_mysql(other)),
            };
        }
        BinlogValue::JsonDiff(_) => {
            return Err("partial JSON updates are not supported; set binlog_row_value_options = ''".into());
        }
    };
    Ok(from_mysql(value))
}

fn from_mysql(value: MyValue) -> Value {
    match value {
        MyValue::NULL => Value::Null,
        MyValue::Bytes(bytes) => Value::Bytes(bytes),
        MyValue::Int(v) => Value::Int(v),
        MyValue::UInt(v) => Value::UInt(v),
        MyValue::Float(v) => Value::Float(v),
        MyValue::Double(v) => Value::Double(v),
        MyValue::Date(year, month, day, hour, minute, second, micros) => Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        },
        MyValue::Time(negative, days, hours, minutes, seconds, micros) => Value::Time {
            negative,
            days,
            hours,
            minutes,
            seconds,
            micros,
        },
    }
}

fn to_mysql(value: Value) -> MyValue {
    match value {
        Value::Null => MyValue::NULL,
        Value::Bytes(bytes) | Value::Json(bytes) => MyValue::Bytes(bytes),
        // Refused by `values` before it gets here: a MySQL row image carries every column.
        Value::Unchanged => MyValue::NULL,
        Value::Int(v) => MyValue::Int(v),
        Value::UInt(v) => MyValue::UInt(v),
        Value::Float(v) => MyValue::Float(v),
        Value::Double(v) => MyValue::Double(v),
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } => MyValue::Date(year, month, day, hour, minute, second, micros),
        Value::Time {
            negative,
            days,
            hours,
            minutes,
            seconds,
            micros,
        } => MyValue::Time(negative, days, hours, minutes, seconds, micros),
    }
}

/// A row image as statement parameters, each value in the form the target column takes.
pub(super) fn values(row: Vec<Value>, info: &TableInfo, at: &str) -> Result<Vec<MyValue>, SourceError> {
    if row.len() != info.columns.len() {
        return Err(SourceError::Unsupported(format!(
            "{at}: a row image of {} holds {} of {} columns; replay needs binlog_row_image = FULL",
            info.qualified,
            row.len(),
            info.columns.len()
        )));
    }
    row.into_iter()
        .zip(&info.columns)
        .map(|(value, column)| {
            if value == Value::Unchanged {
                return Err(SourceError::Unsupported(format!(
                    "{at}: {}: the change does not carry this column's value",
                    column.name
                )));
            }
            convert(to_mysql(value), column)
                .map_err(|e| SourceError::Unsupported(format!("{at}: {}: {e}", column.name)))
        })
        .collect()
}

/// Adjusts what the binary log decoding gives to what an `INSERT` of the column expects.
fn convert(value: MyValue, column: &ColumnInfo) -> Result<MyValue, String> {
    if value == MyValue::NULL {
        return Ok(value);
    }
    Ok(match (column.data_type.as_str(), value) {
        // TIMESTAMP arrives as seconds since the epoch; the session is in UTC.
        ("timestamp", MyValue::Bytes(text)) => {
            let text = String::from_utf8_lossy(&text).into_owned();
            let (seconds, micros) = text.split_once('.').unwrap_or((&text, "0"));
            let seconds: i64 = seconds.parse().map_err(|_| format!("bad TIMESTAMP {text:?}"))?;
            let micros: u32 = micros.parse().map_err(|_| format!("bad TIMESTAMP {text:?}"))?;
            timestamp_text(seconds, micros)
        }
        ("timestamp", MyValue::Int(seconds)) => timestamp_text(seconds, 0),
        // YEAR arrives as 1900 + the stored byte, where 0 stands for the year 0000.
        ("year", MyValue::Bytes(text)) => {
            let year: i64 = String::from_utf8_lossy(&text)
                .parse()
                .map_err(|_| "bad YEAR".to_string())?;
            MyValue::Int(if year == 1900 { 0 } else { year })
        }
        // SET arrives as its bitmap, little-endian.
        ("set", MyValue::Bytes(bits)) => {
            let mut mask = 0u64;
            for (i, byte) in bits.iter().enumerate().take(8) {
                mask |= u64::from(*byte) << (8 * i);
            }
            MyValue::UInt(mask)
        }
        // A signed MEDIUMINT decodes without its sign extended.
        ("mediumint", MyValue::Int(v)) if !column.unsigned && v > 0x7f_ffff => MyValue::Int(v - 0x100_0000),
        // MariaDB's fixed-size binary types leave trailing zero bytes out of the log.
        ("uuid" | "inet6" | "inet4", MyValue::Bytes(mut bytes)) => {
            let size = if column.data_type == "inet4" { 4 } else { 16 };
            if bytes.len() < size {
                bytes.resize(size, 0);
            }
            MyValue::Bytes(bytes)
        }
        // Unsigned columns decode as signed when the log does not say they are unsigned.
        (kind, MyValue::Int(v)) if column.unsigned && v < 0 => {
            let bits = match kind {
                "tinyint" => 8,
                "smallint" => 16,
                "mediumint" => 24,
                "int" | "integer" => 32,
                _ => 64,
            };
            let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
            MyValue::UInt((v as u64) & mask)
        }
        (_, other) => other,
    })
}

fn timestamp_text(seconds: i64, micros: u32) -> MyValue {
    if seconds == 0 && micros == 0 {
        return MyValue::Bytes(b"0000-00-00 00:00:00".to_vec());
    }
    let text = chrono::DateTime::from_timestamp(seconds, micros * 1000)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        .unwrap_or_default();
    MyValue::Bytes(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(data_type: &str, unsigned: bool) -> ColumnInfo {
        ColumnInfo {
            name: "c".into(),
            data_type: data_type.into(),
            unsigned,
            generated: false,
        }
    }

    #[test]
    fn binlog_values_become_what_the_column_takes() {
        let v = |x: MyValue| x;
        assert_eq!(
            convert(v(MyValue::Int(-1)), &column("tinyint", true)).unwrap(),
            MyValue::UInt(255)
        );
        assert_eq!(
            convert(v(MyValue::Int(-1)), &column("bigint", true)).unwrap(),
            MyValue::UInt(u64::MAX)
        );
        assert_eq!(
            convert(v(MyValue::Int(-1)), &column("int", false)).unwrap(),
            MyValue::Int(-1)
        );
        assert_eq!(
            convert(v(MyValue::Bytes(b"1900".to_vec())), &column("year", false)).unwrap(),
            MyValue::Int(0)
        );
        assert_eq!(
            convert(v(MyValue::Bytes(vec![5, 1])), &column("set", false)).unwrap(),
            MyValue::UInt(261)
        );
        assert_eq!(
            convert(v(MyValue::Bytes(b"1.000001".to_vec())), &column("timestamp", false)).unwrap(),
            MyValue::Bytes(b"1970-01-01 00:00:01.000001".to_vec())
        );
        assert_eq!(
            convert(v(MyValue::Bytes(b"0".to_vec())), &column("timestamp", false)).unwrap(),
            MyValue::Bytes(b"0000-00-00 00:00:00".to_vec())
        );
    }
}
