//! MySQL row changes, as the binary log's decoding gives them (by column position, in MySQL's
//! storage forms), turned into row changes the PostgreSQL applier takes: named columns, the
//! primary key's positions, and every value as the text of the mapped PostgreSQL type — through
//! the same conversion a full copy's rows go through (`values::copy_field`), so a value replays
//! exactly as it would have loaded.

use std::collections::BTreeMap;

use super::ddl::PgTable;
use super::mysql_ddl::{MyColumn, MyTable};
use super::types::enum_values;
use super::values::{ColumnRule, Written, copy_field};
use crate::engine::SourceError;
use crate::engine::change::{RowChange, Rows, Value};

/// One MySQL column of a replicated table, and where it goes.
#[derive(Debug, Clone)]
struct SourceColumn {
    name: String,
    type_name: String,
    unsigned: bool,
    /// Its position among the PostgreSQL table's columns; `None`: left out (generated).
    kept: Option<usize>,
    rule: Option<ColumnRule>,
    /// An `ENUM`'s or `SET`'s members, in order.
    members: Vec<String>,
    /// A `BINARY(n)`'s width: the log leaves its trailing zero bytes out.
    width: Option<usize>,
}

/// A MySQL table as the applier of its row changes into PostgreSQL sees it.
#[derive(Debug, Clone)]
pub struct Shape {
    schema: String,
    table: String,
    columns: Vec<SourceColumn>,
    names: Vec<String>,
    key: Vec<usize>,
    key_unique: bool,
}

impl Shape {
    /// The shape of MySQL table `my`, translated as `pg`.
    ///
    /// # Errors
    /// An `ENUM`/`SET` whose members do not read.
    pub fn new(my: &MyTable, pg: &PgTable) -> Result<Shape, String> {
        let columns = my
            .columns
            .iter()
            .map(|column: &MyColumn| {
                let kept = pg.columns.iter().position(|c| c.name == column.name);
                let members = match column.type_name.as_str() {
                    "enum" | "set" => enum_values(column.params.as_deref().unwrap_or_default())
                        .map_err(|e| format!("{}.{}: {e}", pg.name, column.name))?,
                    _ => Vec::new(),
                };
                Ok(SourceColumn {
                    name: column.name.clone(),
                    type_name: column.type_name.clone(),
                    unsigned: column.unsigned,
                    kept,
                    rule: kept.map(|i| pg.columns[i].rule.clone()),
                    members,
                    width: match column.type_name.as_str() {
                        "binary" => Some(
                            column
                                .params
                                .as_deref()
                                .and_then(|p| p.trim().parse().ok())
                                .unwrap_or(1),
                        ),
                        _ => None,
                    },
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let names: Vec<String> = pg.columns.iter().map(|c| c.name.clone()).collect();
        // Without a primary key a row is found by every column, compared by type: the text of a
        // value as MySQL gave it is not always PostgreSQL's output text of it (`.000000`).
        let key_unique = !pg.key.is_empty();
        let key = match key_unique {
            true => pg
                .key
                .iter()
                .filter_map(|k| names.iter().position(|n| n == k))
                .collect(),
            false => (0..names.len()).collect(),
        };
        Ok(Shape {
            schema: pg.schema.clone(),
            table: pg.name.clone(),
            columns,
            names,
            key,
            key_unique,
        })
    }
}

/// Row changes of replicated tables turned into PostgreSQL's, with zero dates counted.
#[derive(Debug, Default)]
pub struct RowTranslator {
    /// By MySQL (database, table).
    shapes: BTreeMap<(String, String), Shape>,
    /// Zero dates written as NULL or `-infinity`, per column.
    pub zero_dates: BTreeMap<String, u64>,
}

impl RowTranslator {
    pub fn new(shapes: BTreeMap<(String, String), Shape>) -> Self {
        RowTranslator {
            shapes,
            zero_dates: BTreeMap::new(),
        }
    }

    /// Replaces (or, with `None`, forgets) the shape of MySQL table `key`, after DDL.
    pub fn set_shape(&mut self, key: (String, String), shape: Option<Shape>) {
        match shape {
            Some(shape) => self.shapes.insert(key, shape),
            None => self.shapes.remove(&key),
        };
    }

    /// `rows` of a MySQL table as row changes of its PostgreSQL table.
    ///
    /// # Errors
    /// A table the copy did not hold (created after it: its DDL is not translated yet), a row
    /// image of another width (the table was altered), or a value PostgreSQL cannot hold —
    /// naming the table, column and value.
    pub fn translate(&mut self, rows: Rows) -> Result<Rows, SourceError> {
        let Some(shape) = self.shapes.get(&(rows.database.clone(), rows.table.clone())) else {
            return Err(SourceError::Unsupported(format!(
                "{}: rows of {}.{}, a table the replica's catalog does not hold (created by a statement that was \
                 passed over, or in a session the log does not show); a replica: copy the table again (cairn \
                 replica reload --table DATABASE.TABLE); a restore: stop before it (--until), or take a new full copy",
                rows.at, rows.database, rows.table
            )));
        };
        let at = rows.at.clone();
        let mut zero_dates = Vec::new();
        let mut image = |values: Vec<Value>| -> Result<Vec<Value>, SourceError> {
            if values.len() != shape.columns.len() {
                return Err(SourceError::Unsupported(format!(
                    "{at}: a row of {}.{} with {} columns, where the replica's definition has {}: the table was \
                     altered in a way the log did not show, or the source logs with binlog_row_image other than \
                     FULL; a replica: copy the table again (cairn replica reload --table DATABASE.TABLE)",
                    rows.database,
                    rows.table,
                    values.len(),
                    shape.columns.len()
                )));
            }
            let mut out = vec![Value::Null; shape.names.len()];
            for (value, column) in values.into_iter().zip(&shape.columns) {
                let (Some(i), Some(rule)) = (column.kept, &column.rule) else {
                    continue;
                };
                let (text, zero) =
                    pg_text(column, rule, value).map_err(|e| SourceError::Unsupported(format!("{at}: {e}")))?;
                if zero {
                    zero_dates.push(rule.name.clone());
                }
                out[i] = text.map_or(Value::Null, |t| Value::Bytes(t.into_bytes()));
            }
            Ok(out)
        };
        let changes = rows
            .changes
            .into_iter()
            .map(|change| {
                Ok(match change {
                    RowChange::Insert { after } => RowChange::Insert { after: image(after)? },
                    RowChange::Update { before, after } => RowChange::Update {
                        before: image(before)?,
                        after: image(after)?,
                    },
                    RowChange::Delete { before } => RowChange::Delete { before: image(before)? },
                })
            })
            .collect::<Result<Vec<_>, SourceError>>()?;
        for column in zero_dates {
            *self.zero_dates.entry(column).or_default() += 1;
        }
        Ok(Rows {
            at: rows.at,
            database: shape.schema.clone(),
            table: shape.table.clone(),
            columns: shape.names.len() as u64,
            names: shape.names.clone(),
            key: shape.key.clone(),
            key_unique: shape.key_unique,
            foreign_key_checks: rows.foreign_key_checks,
            changes,
        })
    }
}

/// A binary log value of `column` as the text PostgreSQL's input function of the mapped type
/// reads (`None`: NULL), and whether it was a zero date.
fn pg_text(column: &SourceColumn, rule: &ColumnRule, value: Value) -> Result<(Option<String>, bool), String> {
    let Some(mysql) = mysql_text(column, value)? else {
        return Ok((None, false));
    };
    let mut copy = Vec::with_capacity(mysql.len() + 8);
    let written = copy_field(&mut copy, rule, Some(&mysql))?;
    Ok((unescape_copy(&copy), written == Written::ZeroDate))
}

/// A binary log value as the MySQL server's text for it (what a copy holds, in UTC), which
/// `copy_field` takes; `None` for NULL.
fn mysql_text(column: &SourceColumn, value: Value) -> Result<Option<Vec<u8>>, String> {
    let name = &column.name;
    let text = match value {
        Value::Null => return Ok(None),
        Value::Unchanged => return Err(format!("{name}: the change does not carry the value")),
        Value::Int(v) => integer_text(column, v)?,
        Value::UInt(v) => v.to_string(),
        // The shortest text that reads back as the same value.
        Value::Float(v) => v.to_string(),
        Value::Double(v) => v.to_string(),
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } => match column.type_name.as_str() {
            "date" => format!("{year:04}-{month:02}-{day:02}"),
            _ => format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}"),
        },
        Value::Time {
            negative,
            days,
            hours,
            minutes,
            seconds,
            micros,
        } => format!(
            "{}{}:{minutes:02}:{seconds:02}.{micros:06}",
            if negative { "-" } else { "" },
            u64::from(days) * 24 + u64::from(hours)
        ),
        Value::Json(text) => return Ok(Some(text)),
        Value::Bytes(bytes) => return bytes_text(column, bytes).map(Some),
    };
    Ok(Some(text.into_bytes()))
}

/// An integer the log gave as signed: the column's signedness and width settle it; an `ENUM`
/// gives its member's number.
fn integer_text(column: &SourceColumn, v: i64) -> Result<String, String> {
    let bits = match column.type_name.as_str() {
        "enum" => {
            // 0 is MySQL's '' for a value outside the list.
            return match v {
                0 => Ok(String::new()),
                n => usize::try_from(n - 1)
                    .ok()
                    .and_then(|i| column.members.get(i))
                    .cloned()
                    .ok_or_else(|| format!("{}: ENUM member {n} is not in the copy's definition", column.name)),
            };
        }
        "tinyint" | "bool" | "boolean" => 8,
        "smallint" => 16,
        "mediumint" => 24,
        "int" | "integer" => 32,
        _ => 64,
    };
    let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    Ok(match column.unsigned {
        true => ((v as u64) & mask).to_string(),
        // A signed MEDIUMINT decodes without its sign extended.
        false if bits == 24 && v > 0x7f_ffff => (v - 0x100_0000).to_string(),
        false => v.to_string(),
    })
}

/// Bytes the log gave: text and binary strings and decimals as they are; the types MySQL logs
/// in a storage form (`BIT`, `SET`, `YEAR`, `TIMESTAMP`, MariaDB's `UUID`/`INET`) as their text.
fn bytes_text(column: &SourceColumn, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let name = &column.name;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Ok(match column.type_name.as_str() {
        // Big-endian, as the column's width of bits.
        "bit" => bytes
            .iter()
            .fold(0u64, |value, byte| (value << 8) | u64::from(*byte))
            .to_string()
            .into_bytes(),
        // Little-endian: bit i is member i.
        "set" => {
            let mut chosen = Vec::new();
            for (i, member) in column.members.iter().enumerate() {
                if bytes.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1) {
                    chosen.push(member.as_str());
                }
            }
            chosen.join(",").into_bytes()
        }
        // 1900 + the stored byte, where 0 stands for the year 0000.
        "year" => {
            let year: i64 = text(&bytes)
                .parse()
                .map_err(|_| format!("{name}: bad YEAR {}", text(&bytes)))?;
            (if year == 1900 { 0 } else { year }).to_string().into_bytes()
        }
        // Seconds since the epoch, with microseconds; 0 is MySQL's zero timestamp.
        "timestamp" => {
            let shown = text(&bytes);
            let (seconds, micros) = shown.split_once('.').unwrap_or((&shown, "0"));
            let seconds: i64 = seconds
                .parse()
                .map_err(|_| format!("{name}: bad TIMESTAMP {shown:?}"))?;
            let micros: u32 = micros.parse().map_err(|_| format!("{name}: bad TIMESTAMP {shown:?}"))?;
            if seconds == 0 && micros == 0 {
                b"0000-00-00 00:00:00".to_vec()
            } else {
                chrono::DateTime::from_timestamp(seconds, micros * 1000)
                    .ok_or_else(|| format!("{name}: TIMESTAMP {shown} is out of range"))?
                    .format("%Y-%m-%d %H:%M:%S%.6f")
                    .to_string()
                    .into_bytes()
            }
        }
        // MariaDB leaves trailing zero bytes of its fixed-size types out of the log.
        "uuid" => {
            let mut raw = bytes;
            raw.resize(16, 0);
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            )
            .into_bytes()
        }
        "inet6" => {
            let mut raw = [0u8; 16];
            let n = bytes.len().min(16);
            raw[..n].copy_from_slice(&bytes[..n]);
            std::net::Ipv6Addr::from(raw).to_string().into_bytes()
        }
        "inet4" => {
            let mut raw = [0u8; 4];
            let n = bytes.len().min(4);
            raw[..n].copy_from_slice(&bytes[..n]);
            std::net::Ipv4Addr::from(raw).to_string().into_bytes()
        }
        "binary" => {
            let mut padded = bytes;
            padded.resize(padded.len().max(column.width.unwrap_or(0)), 0);
            padded
        }
        _ => bytes,
    })
}

/// A `COPY` text field as the plain text it stands for; `None` for `\N`.
pub(super) fn unescape_copy(field: &[u8]) -> Option<String> {
    if field == b"\\N" {
        return None;
    }
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        out.push(match bytes.next() {
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(&other) => other,
            None => b'\\',
        });
    }
    // `copy_field` writes UTF-8 text only.
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests;
