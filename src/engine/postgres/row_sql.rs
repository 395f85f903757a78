//! The statements that apply one row change to a PostgreSQL target: SQL with `$n` parameters
//! (the same text for every change of the same shape, so it is prepared once) and the values,
//! sent as text for the columns' input functions to read.

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

use super::quote_ident;
use crate::engine::SourceError;
use crate::engine::change::{RowChange, Rows, Value};

/// A parameter in text form, read by the input function of whatever type the server gives it:
/// the source's decoding produced each value as its output function's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub Option<String>);

impl ToSql for Text {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match &self.0 {
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// One statement and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowStatement {
    pub sql: String,
    pub params: Vec<Text>,
}

impl RowStatement {
    /// Adds a parameter; returns its placeholder.
    fn param(&mut self, value: Option<String>) -> String {
        self.params.push(Text(value));
        format!("${}", self.params.len())
    }
}

/// The statement applying `change` to `table` (quoted), or `None` when it changes nothing.
///
/// # Errors
/// A value this target cannot take, or a row that cannot be found (no replica identity).
pub fn statement(table: &str, rows: &Rows, change: &RowChange) -> Result<Option<RowStatement>, SourceError> {
    build(table, rows, change, true)
}

/// The statement applying `change` to `table` (quoted) as script text, its values written as
/// literals (`restore --to-sql`); `None` when it changes nothing. A script does not check that
/// an update or delete found its row: the database it is loaded into is the reader's.
///
/// # Errors
/// As [`statement`].
pub fn script_statement(table: &str, rows: &Rows, change: &RowChange) -> Result<Option<String>, SourceError> {
    Ok(build(table, rows, change, false)?.map(|statement| inline(&statement)))
}

/// The statement for `change`; `expect`: an update or delete fails unless it changed one row.
fn build(table: &str, rows: &Rows, change: &RowChange, expect: bool) -> Result<Option<RowStatement>, SourceError> {
    let mut out = RowStatement {
        sql: String::new(),
        params: Vec::new(),
    };
    match change {
        RowChange::Insert { after } => {
            let mut names = Vec::new();
            let mut values = Vec::new();
            for (name, value) in rows.names.iter().zip(after) {
                if *value != Value::Unchanged {
                    names.push(quote_ident(name));
                    values.push(out.param(text_of(value, &rows.at)?));
                }
            }
            // The source's value, also for `GENERATED ALWAYS AS IDENTITY` columns.
            out.sql = format!(
                "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES ({})",
                names.join(", "),
                values.join(", ")
            );
        }
        RowChange::Update { before, after } => {
            // Columns the change does not carry, or whose value it does not change, are left
            // alone (an identity column `GENERATED ALWAYS` may not be set at all).
            let mut sets = Vec::new();
            for ((name, value), old) in rows.names.iter().zip(after).zip(before) {
                if *value != Value::Unchanged && value != old {
                    let placeholder = out.param(text_of(value, &rows.at)?);
                    sets.push(format!("{} = {placeholder}", quote_ident(name)));
                }
            }
            if sets.is_empty() {
                return Ok(None);
            }
            let condition = one_row(&mut out, table, rows, before)?;
            out.sql = format!("UPDATE ONLY {table} SET {} WHERE {condition}", sets.join(", "));
            if expect {
                expect_one(&mut out, &format!("{}: {table}", rows.at));
            }
        }
        RowChange::Delete { before } => {
            let condition = one_row(&mut out, table, rows, before)?;
            out.sql = format!("DELETE FROM ONLY {table} WHERE {condition}");
            if expect {
                expect_one(&mut out, &format!("{}: {table}", rows.at));
            }
        }
    }
    Ok(Some(out))
}

/// A value as the text the target's input function reads; `None` for NULL.
fn text_of(value: &Value, at: &str) -> Result<Option<String>, SourceError> {
    match value {
        Value::Null => Ok(None),
        Value::Bytes(bytes) | Value::Json(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Ok(Some(text.to_string())),
            Err(_) => Err(SourceError::Damaged(format!("{at}: a value is not UTF-8 text"))),
        },
        Value::Int(v) => Ok(Some(v.to_string())),
        Value::UInt(v) => Ok(Some(v.to_string())),
        Value::Float(v) => Ok(Some(v.to_string())),
        Value::Double(v) => Ok(Some(v.to_string())),
        Value::DateTime { .. } | Value::Time { .. } | Value::Unchanged => Err(SourceError::Unsupported(format!(
            "{at}: a value of another engine's log cannot be written to PostgreSQL yet"
        ))),
    }
}

/// The condition choosing the one row `before` describes: its key columns' values (a replica
/// identity is unique and not null), or, when the whole row identifies it, one of the rows
/// equal to it (duplicates are interchangeable).
fn one_row(out: &mut RowStatement, table: &str, rows: &Rows, before: &[Value]) -> Result<String, SourceError> {
    let condition = locate(out, rows, before)?;
    Ok(match !rows.key.is_empty() && rows.key_unique {
        true => condition,
        false => format!("ctid = (SELECT ctid FROM ONLY {table} WHERE {condition} LIMIT 1)"),
    })
}

/// The condition that finds the row `before` describes: its identifying columns when the log
/// names them, else every column it carries. Compared as the output function's text when the
/// whole row identifies it (`REPLICA IDENTITY FULL`), since some types (json, point) have no
/// equality.
fn locate(out: &mut RowStatement, rows: &Rows, before: &[Value]) -> Result<String, SourceError> {
    let by_key = !rows.key.is_empty();
    let mut conditions = Vec::new();
    for (i, (name, value)) in rows.names.iter().zip(before).enumerate() {
        if *value == Value::Unchanged || (by_key && !rows.key.contains(&i)) {
            continue;
        }
        let column = quote_ident(name);
        conditions.push(match (by_key, value) {
            (_, Value::Null) => format!("{column} IS NULL"),
            (true, value) => format!("{column} = {}", out.param(text_of(value, &rows.at)?)),
            // The text the type's output function gives, as the source's decoding did under
            // the same settings (OUTPUT_SETTINGS); a `::text` cast is not always that text
            // (booleans, inet, char(n)).
            (false, value) => format!(
                "pg_catalog.format('%s', {column}) = {}::text",
                out.param(text_of(value, &rows.at)?)
            ),
        });
    }
    if conditions.is_empty() {
        return Err(SourceError::Unsupported(format!(
            "{}: {}.{} has no replica identity: a changed row cannot be found (give it a primary key or REPLICA \
             IDENTITY FULL)",
            rows.at, rows.database, rows.table
        )));
    }
    Ok(conditions.join(" AND "))
}

/// `statement`'s SQL with each `$n` outside quotes replaced by its value as a string literal (the
/// column's input function reads it, as it reads the parameter); needs
/// `standard_conforming_strings` on, which a script sets.
fn inline(statement: &RowStatement) -> String {
    let sql = statement.sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < sql.len() {
        let byte = sql[i];
        match quote {
            Some(q) if byte == q => quote = None,
            Some(_) => {}
            None if byte == b'"' || byte == b'\'' => quote = Some(byte),
            None if byte == b'$' && sql.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let digits = sql[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                let number: usize = statement.sql[i + 1..i + 1 + digits].parse().unwrap_or(0);
                match statement.params.get(number.wrapping_sub(1)) {
                    Some(Text(Some(value))) => {
                        out.push('\'');
                        out.push_str(&value.replace('\'', "''"));
                        out.push('\'');
                    }
                    Some(Text(None)) => out.push_str("NULL"),
                    None => out.push_str(&statement.sql[i..i + 1 + digits]),
                }
                i += 1 + digits;
                continue;
            }
            None => {}
        }
        // Whole characters: the text around the placeholders is copied as it is.
        let width = statement.sql[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&statement.sql[i..i + width]);
        i += width;
    }
    out
}

/// Wraps the UPDATE or DELETE in `out` so that it fails its transaction unless it changed
/// exactly one row.
fn expect_one(out: &mut RowStatement, what: &str) {
    let message = out.param(Some(format!(
        "{what}: no row matches the change: the target differs from the source at this point (was it changed after \
         the restore?)"
    )));
    out.sql = format!(
        "WITH changed AS ({} RETURNING 1) SELECT pg_temp.cairn_expect(count(*) = 1, {message}::text) FROM changed",
        out.sql
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_statement_holds_its_values_as_literals() {
        let rows = Rows {
            at: "0/1".into(),
            database: "public".into(),
            table: "t".into(),
            columns: 3,
            names: vec!["id".into(), "a$1".into(), "note".into()],
            key: vec![0],
            key_unique: true,
            foreign_key_checks: true,
            changes: Vec::new(),
        };
        let table = "\"public\".\"t\"";
        let value = |text: &str| Value::Bytes(text.as_bytes().to_vec());
        let insert = RowChange::Insert {
            after: vec![value("1"), value("it's"), Value::Null],
        };
        assert_eq!(
            script_statement(table, &rows, &insert).unwrap().unwrap(),
            "INSERT INTO \"public\".\"t\" (\"id\", \"a$1\", \"note\") OVERRIDING SYSTEM VALUE VALUES ('1', 'it''s', NULL)"
        );
        let update = RowChange::Update {
            before: vec![value("1"), value("x"), Value::Null],
            after: vec![value("1"), value("$2 é"), Value::Null],
        };
        assert_eq!(
            script_statement(table, &rows, &update).unwrap().unwrap(),
            "UPDATE ONLY \"public\".\"t\" SET \"a$1\" = '$2 é' WHERE \"id\" = '1'"
        );
        // The applier's form keeps its parameters and checks one row changed.
        let applied = statement(table, &rows, &update).unwrap().unwrap();
        assert!(
            applied.sql.contains("$1") && applied.sql.contains("cairn_expect"),
            "{}",
            applied.sql
        );
    }
}
