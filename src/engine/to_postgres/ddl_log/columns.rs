//! Column changes of a logged `ALTER TABLE` in PostgreSQL: an added column (with MySQL's
//! implicit default for the rows already there), and a modified one.

use super::super::catalog::Definition;
use super::super::ddl::{column_sql, default_sql};
use super::super::mysql_ddl::{MyColumn, entry_key_columns, join_create, parse_table};
use super::super::types::{Kind, enum_values, map_type};
use super::{Key, LiveCatalog};
use crate::engine::postgres::{quote_ident, quote_literal};

impl LiveCatalog {
    /// The PostgreSQL statements adding column `entry` to `key`'s table: with MySQL's implicit
    /// default for the rows already there when it is `NOT NULL` without a default.
    pub(super) fn add_column(
        &self,
        key: &Key,
        definition: &Definition,
        entry: &str,
        qualified: &str,
    ) -> Result<Vec<String>, String> {
        let parsed = parse_table(&join_create(&key.1, &[entry.to_string()], ""), &[])?;
        let mut column = parsed.columns.into_iter().next().ok_or("no column")?;
        if column.generated.is_some() || column.auto_increment {
            return Err(format!(
                "column {}: generated and AUTO_INCREMENT columns added later",
                column.name
            ));
        }
        if column.charset.is_none() {
            column.charset = parse_table(&definition.create, &definition.added)?.charset;
        }
        let shown = format!("{}.{}", self.schema_of(&key.0), key.1);
        let mapped = map_type(&shown, &column)?;
        // The rows already there take the default in MySQL: it must mean the same in PostgreSQL.
        if let Some(default) = &column.default {
            let lower = default.to_ascii_lowercase();
            let clock = lower.starts_with("current_timestamp") || lower.starts_with("now(");
            match default_sql(default, mapped.kind) {
                _ if clock => {
                    return Err(format!(
                        "column {}: DEFAULT {default} fills the rows already there with the source's clock at the \
                         ALTER, which the replica cannot know,",
                        column.name
                    ));
                }
                Some(Some(_)) if mapped.kind == Kind::Timestamp => {
                    return Err(format!(
                        "column {}: a TIMESTAMP default is read in the ALTER's session time zone,",
                        column.name
                    ));
                }
                None => return Err(format!("column {}: default {default} is not translated,", column.name)),
                _ => {}
            }
        }
        let implicit = match (column.nullable, &column.default, mapped.kind) {
            (false, None, Kind::Integer | Kind::Decimal | Kind::Float | Kind::Year) => Some("0".to_string()),
            (false, None, Kind::Text | Kind::Set) => Some("''".to_string()),
            (false, None, Kind::Enum) => {
                let members = enum_values(column.params.as_deref().unwrap_or_default())?;
                Some(quote_literal(members.first().map_or("", String::as_str)))
            }
            (false, None, _) => {
                return Err(format!(
                    "column {}: NOT NULL without a default, whose implicit MySQL value has no PostgreSQL counterpart",
                    column.name
                ));
            }
            _ => None,
        };
        let mut notes = Vec::new();
        let mut sql = vec![format!(
            "ALTER TABLE {qualified} ADD COLUMN {}{}",
            column_sql(&shown, &column, &mapped, &mut notes)?,
            implicit.as_ref().map_or(String::new(), |d| format!(" DEFAULT {d}"))
        )];
        if implicit.is_some() {
            sql.push(format!(
                "ALTER TABLE {qualified} ALTER COLUMN {} DROP DEFAULT",
                quote_ident(&column.name)
            ));
        }
        for note in notes {
            tracing::warn!("not translated: {note}");
        }
        Ok(sql)
    }

    /// A column renamed must not be part of a key: the recorded key entries name it.
    pub(super) fn check_unkeyed(&self, entries: &[String], column: &str) -> Result<(), String> {
        match entries.iter().any(|e| entry_key_columns(e).iter().any(|c| c == column)) {
            true => Err(format!("renaming column {column}, which is part of a key")),
            false => Ok(()),
        }
    }

    /// The PostgreSQL statements changing column `old_entry` of `key`'s table into `new_entry`
    /// (`MODIFY`, `CHANGE`, after any rename): its type, where the values convert the same way in
    /// both servers, its `NOT NULL`, its default and an `ENUM`'s check.
    pub(super) fn modify_column(
        &self,
        key: &Key,
        definition: &Definition,
        old_entry: &str,
        new_entry: &str,
        qualified: &str,
    ) -> Result<Vec<String>, String> {
        let table_charset = parse_table(&definition.create, &definition.added)?.charset;
        let read = |entry: &str| -> Result<MyColumn, String> {
            let mut column = parse_table(&join_create(&key.1, &[entry.to_string()], ""), &[])?
                .columns
                .into_iter()
                .next()
                .ok_or("no column")?;
            if column.charset.is_none() {
                column.charset = table_charset.clone();
            }
            Ok(column)
        };
        let (old, new) = (read(old_entry)?, read(new_entry)?);
        if old.generated.is_some() || new.generated.is_some() || old.auto_increment != new.auto_increment {
            return Err(format!(
                "column {}: changing a generated or AUTO_INCREMENT column",
                new.name
            ));
        }
        let shown = format!("{}.{}", self.schema_of(&key.0), key.1);
        let (was, will) = (map_type(&shown, &old)?, map_type(&shown, &new)?);
        // YEAR is apart: MySQL reads 24 as 2024.
        let numeric = |k: Kind| matches!(k, Kind::Integer | Kind::Decimal | Kind::Float);
        let textual = |k: Kind| matches!(k, Kind::Text | Kind::Enum | Kind::Set);
        let dated = |k: Kind| matches!(k, Kind::Date | Kind::DateTime);
        let converts = match (was.kind, will.kind) {
            // BINARY(n) pads to its width in MySQL; PostgreSQL's bytea has none.
            (Kind::Bytes, Kind::Bytes) => {
                !(old.type_name == "binary" || new.type_name == "binary") || old.params == new.params
            }
            (a, b) if a == b => !matches!(a, Kind::Bit { .. }),
            (a, b) => {
                (numeric(a) && numeric(b))
                    || (textual(a) && textual(b))
                    || (numeric(a) && textual(b))
                    || (dated(a) && dated(b))
            }
        };
        if !converts {
            return Err(format!(
                "column {}: {} to {}, whose values MySQL and PostgreSQL convert differently,",
                new.name, old.type_name, new.type_name
            ));
        }
        let name = quote_ident(&new.name);
        let mut sql = Vec::new();
        if was.kind == Kind::Enum {
            // By what the constraint checks, not by a name guessed from the table's: a rename
            // leaves PostgreSQL's names as they were.
            sql.push(drop_constraints_sql(qualified, 'c', Some(&new.name)));
        }
        if was.pg_type != will.pg_type {
            sql.push(format!(
                "ALTER TABLE {qualified} ALTER COLUMN {name} TYPE {0} USING {name}::{0}",
                will.pg_type
            ));
        }
        if will.kind == Kind::Enum {
            let mut notes = Vec::new();
            let definition = column_sql(&shown, &new, &will, &mut notes)?;
            if let Some(at) = definition.find(" CHECK (") {
                sql.push(format!("ALTER TABLE {qualified} ADD{}", &definition[at..]));
            }
        }
        if old.nullable != new.nullable {
            sql.push(format!(
                "ALTER TABLE {qualified} ALTER COLUMN {name} {} NOT NULL",
                if new.nullable { "DROP" } else { "SET" }
            ));
        }
        if !new.auto_increment {
            match new.default.as_deref().map(|d| default_sql(d, will.kind)) {
                Some(Some(Some(value))) => sql.push(format!(
                    "ALTER TABLE {qualified} ALTER COLUMN {name} SET DEFAULT {value}"
                )),
                Some(None) => {
                    tracing::warn!(
                        "{shown}.{}: default {} is not translated",
                        new.name,
                        new.default.as_deref().unwrap_or_default()
                    );
                    sql.push(format!("ALTER TABLE {qualified} ALTER COLUMN {name} DROP DEFAULT"));
                }
                _ => sql.push(format!("ALTER TABLE {qualified} ALTER COLUMN {name} DROP DEFAULT")),
            }
        }
        Ok(sql)
    }
}

/// SQL dropping every constraint of kind `kind` (`p` primary key, `c` check) of table
/// `qualified` — of column `column` alone, when given — whatever PostgreSQL named them.
pub(super) fn drop_constraints_sql(qualified: &str, kind: char, column: Option<&str>) -> String {
    let table = quote_literal(qualified);
    let of_column = column.map_or(String::new(), |column| {
        format!(
            " AND conkey = ARRAY[(SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = {table}::regclass \
             AND attname = {})]::int2[]",
            quote_literal(column)
        )
    });
    format!(
        "DO $cairn$ DECLARE c text; BEGIN FOR c IN SELECT conname FROM pg_catalog.pg_constraint WHERE conrelid = \
         {table}::regclass AND contype = '{kind}'{of_column} LOOP EXECUTE format({}, c); END LOOP; END $cairn$",
        quote_literal(&format!("ALTER TABLE {qualified} DROP CONSTRAINT %I"))
    )
}
