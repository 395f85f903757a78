//! A MySQL table's PostgreSQL definition: `CREATE TABLE` with its primary key, the indexes and
//! identity sequences set after the load, the foreign keys created at detach, and a report of
//! everything that was not translated.

use super::mysql_ddl::{IndexKind, MyColumn, MyTable};
use super::types::{Kind, Mapped, enum_values, map_type, mysql_string};
use super::values::{Charset, ColumnRule};
use crate::engine::postgres::{quote_ident, quote_literal};

/// One column as the load and the applier convert its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    pub name: String,
    pub kind: Kind,
    pub pg_type: String,
    /// How its values are written for PostgreSQL.
    pub rule: ColumnRule,
}

/// A foreign key, added `NOT VALID` and then validated: MySQL data loaded with
/// `foreign_key_checks = 0` may hold rows that reference nothing, and such a key stays in place,
/// not validated, with a warning, instead of failing a restore whose rows are all in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgForeignKey {
    /// `schema.table.constraint`, for messages.
    pub shown: String,
    pub add: String,
    pub validate: String,
}

/// A MySQL table translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTable {
    pub schema: String,
    pub name: String,
    pub columns: Vec<PgColumn>,
    /// The primary key's columns; empty: rows are found by their whole image.
    pub key: Vec<String>,
    pub create: String,
    /// Indexes and identity sequences, once the rows are in.
    pub after_load: Vec<String>,
    /// Foreign keys, once the replica stops following its source (or the restore loaded every
    /// table).
    pub at_detach: Vec<PgForeignKey>,
    /// What was left out or changed, one line each.
    pub notes: Vec<String>,
}

/// Translates `table` into schema `schema`; `schema_of` names the schema of another MySQL
/// database a foreign key references; `taken` holds the relation names of the schema in use
/// (tables, `{table}_pkey`, indexes already named), which the table's index names avoid and join.
///
/// # Errors
/// A column whose type has no counterpart, or an `ENUM` whose values do not read.
pub fn translate(
    table: &MyTable,
    schema: &str,
    schema_of: &dyn Fn(&str) -> String,
    taken: &mut std::collections::BTreeSet<String>,
) -> Result<PgTable, String> {
    let qualified = format!("{}.{}", quote_ident(schema), quote_ident(&table.name));
    let shown = format!("{schema}.{}", table.name);
    let mut notes = Vec::new();
    let mut columns = Vec::new();
    let mut lines = Vec::new();
    let mut after_load = Vec::new();
    for column in &table.columns {
        if column.generated.is_some() {
            // A copy does not hold generated columns (MySQL computes them again on restore), and
            // their expressions are MySQL's.
            notes.push(format!(
                "{shown}.{}: a generated column is left out (a copy does not hold its values, and its \
                 expression is not translated); add it with a PostgreSQL expression after detach",
                column.name
            ));
            continue;
        }
        let mapped = map_type(&shown, column)?;
        notes.extend(mapped.note.clone());
        lines.push(format!("  {}", column_sql(&shown, column, &mapped, &mut notes)?));
        if column.auto_increment {
            let name = quote_ident(&column.name);
            after_load.push(format!(
                "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence({}, {}), \
                 coalesce(max({name}), 0) + 1, false) FROM {qualified}",
                quote_literal(&qualified),
                quote_literal(&column.name)
            ));
        }
        for other in &column.other {
            notes.push(format!("{shown}.{}: not translated: {other}", column.name));
        }
        // MySQL 8's JSON type is always utf8mb4, whatever the table's character set; MariaDB's
        // JSON is a text column with its own.
        let native_json = column.type_name == "json";
        let textual =
            matches!(mapped.kind, Kind::Text | Kind::Enum | Kind::Set) || (mapped.kind == Kind::Json && !native_json);
        let charset = match (textual, table.charset_of(column)) {
            (true, Some(name)) => {
                Charset::named(name).map_err(|e| format!("table {shown}, column {}: {e}", column.name))?
            }
            _ => Charset::Utf8,
        };
        columns.push(PgColumn {
            name: column.name.clone(),
            kind: mapped.kind,
            pg_type: mapped.pg_type,
            rule: ColumnRule {
                name: format!("{shown}.{}", column.name),
                kind: mapped.kind,
                charset,
                nullable: column.nullable,
            },
        });
    }
    let mut key = Vec::new();
    let generated = |name: &String| table.columns.iter().any(|c| &c.name == name && c.generated.is_some());
    for index in &table.indexes {
        if index.functional {
            notes.push(format!(
                "{shown}: index {} is left out (a part of it is an expression, which is not translated)",
                index.name
            ));
            continue;
        }
        if index.columns.iter().any(generated) {
            if index.kind == IndexKind::Primary {
                return Err(format!(
                    "table {shown}: its primary key has a generated column, which is left out; cairn cannot \
                     replicate it into PostgreSQL"
                ));
            }
            notes.push(format!(
                "{shown}: index {} is left out (it has a generated column)",
                index.name
            ));
            continue;
        }
        let list = index
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        if index.prefixed && index.kind != IndexKind::Primary {
            notes.push(format!(
                "{shown}: index {} indexes column prefixes in MySQL; in PostgreSQL it covers the whole columns",
                index.name
            ));
        }
        match index.kind {
            IndexKind::Primary => {
                key = index.columns.clone();
                lines.push(format!("  PRIMARY KEY ({list})"));
            }
            IndexKind::Unique | IndexKind::Plain => after_load.push(format!(
                "CREATE {}INDEX {} ON {qualified} ({list})",
                if index.kind == IndexKind::Unique { "UNIQUE " } else { "" },
                quote_ident(&index_name(&table.name, &index.name, taken))
            )),
            IndexKind::Fulltext | IndexKind::Spatial => notes.push(format!(
                "{shown}: {} index {} is not translated",
                if index.kind == IndexKind::Fulltext {
                    "FULLTEXT"
                } else {
                    "SPATIAL"
                },
                index.name
            )),
        }
    }
    if key.is_empty() {
        notes.push(format!(
            "{shown}: no primary key: its updates and deletes are applied by finding the whole row image, a \
             scan of the table each"
        ));
    }
    let at_detach = table
        .foreign_keys
        .iter()
        .enumerate()
        .map(|(i, fk)| {
            // MySQL names an unnamed key `<table>_ibfk_<n>`.
            let fk_name = match fk.name.is_empty() {
                true => format!("{}_ibfk_{}", table.name, i + 1),
                false => fk.name.clone(),
            };
            let referenced_schema = fk
                .references_database
                .as_deref()
                .map_or_else(|| schema.to_string(), schema_of);
            let list = |columns: &[String]| columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
            PgForeignKey {
                shown: format!("{shown}.{fk_name}"),
                add: format!(
                    "ALTER TABLE {qualified} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {}.{} ({}){} NOT VALID",
                    quote_ident(&fk_name),
                    list(&fk.columns),
                    quote_ident(&referenced_schema),
                    quote_ident(&fk.references_table),
                    list(&fk.references_columns),
                    match fk.actions.is_empty() {
                        true => String::new(),
                        false => format!(" {}", fk.actions),
                    }
                ),
                validate: format!("ALTER TABLE {qualified} VALIDATE CONSTRAINT {}", quote_ident(&fk_name)),
            }
        })
        .collect();
    for check in &table.checks {
        notes.push(format!("{shown}: not translated: {check}"));
    }
    Ok(PgTable {
        schema: schema.to_string(),
        name: table.name.clone(),
        columns,
        key,
        create: format!("CREATE TABLE {qualified} (\n{}\n)", lines.join(",\n")),
        after_load,
        at_detach,
        notes,
    })
}

impl PgTable {
    /// `COPY … FROM STDIN` of every column, in the copy's order.
    pub fn copy_sql(&self) -> String {
        let columns: Vec<String> = self.columns.iter().map(|c| quote_ident(&c.name)).collect();
        format!(
            "COPY {}.{} ({}) FROM STDIN",
            quote_ident(&self.schema),
            quote_ident(&self.name),
            columns.join(", ")
        )
    }
}

/// A column's definition: name, type, identity, default, nullability, and an enum's check.
pub(super) fn column_sql(
    shown: &str,
    column: &MyColumn,
    mapped: &Mapped,
    notes: &mut Vec<String>,
) -> Result<String, String> {
    let name = quote_ident(&column.name);
    let mut sql = format!("{name} {}", mapped.pg_type);
    if column.auto_increment {
        sql.push_str(" GENERATED BY DEFAULT AS IDENTITY");
    } else if let Some(default) = &column.default {
        match default_sql(default, mapped.kind) {
            Some(Some(value)) => sql.push_str(&format!(" DEFAULT {value}")),
            Some(None) => {}
            None => notes.push(format!("{shown}.{}: default {default} is not translated", column.name)),
        }
    }
    if !column.nullable {
        sql.push_str(" NOT NULL");
    }
    if mapped.kind == Kind::Enum {
        let values = enum_values(column.params.as_deref().unwrap_or_default())
            .map_err(|e| format!("table {shown}, column {}: {e}", column.name))?;
        // MySQL stores a value outside the list as '' (index 0) outside strict mode, so '' is
        // one of the column's values whatever the list says.
        let mut values: Vec<String> = values.iter().map(|v| quote_literal(v)).collect();
        if !values.iter().any(|v| v == "''") {
            values.push("''".into());
        }
        let values = values.join(", ");
        sql.push_str(&format!(" CHECK ({name} IN ({values}))"));
    }
    Ok(sql)
}

/// A MySQL default as PostgreSQL SQL: `Some(None)` for no default (`NULL`), `None` for one
/// that is not translated.
pub(super) fn default_sql(default: &str, kind: Kind) -> Option<Option<String>> {
    let lower = default.to_ascii_lowercase();
    if lower == "null" {
        return Some(None);
    }
    if (lower == "true" || lower == "false") && matches!(kind, Kind::Integer | Kind::Decimal | Kind::Float) {
        return Some(Some(if lower == "true" { "1" } else { "0" }.into()));
    }
    if lower.starts_with("current_timestamp") || lower.starts_with("now(") || lower == "localtimestamp" {
        return matches!(kind, Kind::DateTime | Kind::Timestamp).then(|| Some("CURRENT_TIMESTAMP".into()));
    }
    if let Some(bits) = lower.strip_prefix("b'").and_then(|b| b.strip_suffix('\'')) {
        let Kind::Bit { bits: width } = kind else {
            return None;
        };
        let value = u64::from_str_radix(bits, 2).ok()?;
        return Some(Some(format!("B'{value:0width$b}'", width = width as usize)));
    }
    if default.starts_with('\'') {
        let (text, rest) = mysql_string(default)?;
        if !rest.is_empty() || text.starts_with("0000-00-00") {
            // A zero date has no PostgreSQL value.
            return None;
        }
        return match kind {
            Kind::Bytes | Kind::Spatial => Some(Some(format!("'\\x{}'::bytea", hex(text.as_bytes())))),
            Kind::Bit { .. } => None,
            // The copy read it in UTC; the target would read it in its own TimeZone.
            Kind::Timestamp => Some(Some(quote_literal(&format!("{text}+00")))),
            _ => Some(Some(quote_literal(&text))),
        };
    }
    let numeric = !default.is_empty() && default.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c));
    (numeric && !matches!(kind, Kind::Bytes | Kind::Spatial | Kind::Bit { .. })).then(|| Some(default.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The name a PostgreSQL index of MySQL index `index` of `table` has when no other name took it
/// first (what a logged `DROP INDEX` drops).
pub(super) fn pg_index_name(table: &str, index: &str) -> String {
    let name = format!("{table}_{index}");
    fit(&name, &name)
}

/// A PostgreSQL index name for MySQL index `index` of `table` (index names are per schema in
/// PostgreSQL, per table in MySQL), within the 63 bytes PostgreSQL keeps, and unlike the names
/// in `taken` (`a_b` + `c` and `a` + `b_c` meet; so do long names cut to 63 bytes).
///
/// Names can still meet another table's index or a table of the same schema; PostgreSQL then
/// refuses the `CREATE INDEX`, naming it, rather than changing anything.
fn index_name(table: &str, index: &str, taken: &mut std::collections::BTreeSet<String>) -> String {
    let name = format!("{table}_{index}");
    let mut candidate = fit(&name, &name);
    let mut n = 1;
    while !taken.insert(candidate.clone()) {
        n += 1;
        candidate = fit(&format!("{name}_{n}"), &format!("{name}\0{n}"));
    }
    candidate
}

/// `name` within 63 bytes: cut, with 8 hex digits of the MD5 of `seed` so cut names stay apart.
fn fit(name: &str, seed: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let digest = crate::storage::md5_hex(seed.as_bytes());
    let mut cut = 54;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{}", &name[..cut], &digest[..8])
}

#[cfg(test)]
mod tests;
