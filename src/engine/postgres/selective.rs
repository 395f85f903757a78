//! A selective restore of a PostgreSQL full copy (`cairn restore --table SCHEMA.TABLE`): only
//! the chosen tables — their pg_dump entries (table, its sequences, defaults, comments and
//! grants; its keys, indexes and triggers), their rows and sequence values — into a database
//! that may hold everything else already. The chosen tables must not exist there; nothing else
//! is touched. Types, functions and schemas they use are expected in the target.

use std::collections::BTreeSet;

use super::schema::{self, Entry, Script};
use crate::engine::selection::Selection;
use crate::engine::{RestoreInput, SourceError};

type Key = (String, String);

/// A name as pg_dump writes it (`a`, `"A b"`), and what follows it.
fn identifier(text: &str) -> Option<(String, &str)> {
    crate::engine::sql_name::identifier(text, '"')
}

/// What a selection takes of a copy's schema.
pub(super) struct Selected {
    /// The chosen tables by the copy's names, and as the target gets them.
    pub tables: BTreeSet<Key>,
    pub made: BTreeSet<Key>,
    /// `--into-schema`: where the rows go.
    pub into: Option<String>,
    /// Sequence names as the copy's values name them → as the target has them.
    pub moves: Vec<(String, String)>,
    pub pre: Vec<Entry>,
    pub post: Vec<Entry>,
    /// Sequences of the chosen tables, as `"schema"."name"`.
    pub sequences: BTreeSet<String>,
    /// What is left out, one line each.
    pub left_out: Vec<String>,
    /// Tables a kept foreign key references that are not restored (the target must have them),
    /// with the key.
    pub needs: Vec<(Key, String)>,
}

/// `schema.name` at the start of `text` (pg_dump always qualifies).
fn qualified_at(text: &str) -> Option<Key> {
    let (schema, rest) = identifier(text.trim_start())?;
    let (name, _) = identifier(rest.strip_prefix('.')?)?;
    Some((schema, name))
}

/// The table after the first of `markers` (in their order: a longer one first) that `sql` holds.
fn table_after(sql: &str, markers: &[&str]) -> Option<Key> {
    markers
        .iter()
        .find_map(|marker| sql.find(marker).map(|at| at + marker.len()))
        .and_then(|at| qualified_at(&sql[at..]))
}

/// The table of pg_dump's `CREATE [UNIQUE] INDEX name ON [ONLY] schema.table …`, read past the
/// index's name (a quoted name may itself hold " ON ").
fn index_table(sql: &str) -> Option<Key> {
    let at = sql.find("INDEX ")? + "INDEX ".len();
    let (_, rest) = identifier(&sql[at..])?;
    let rest = rest.strip_prefix(" ON ")?;
    qualified_at(rest.strip_prefix("ONLY ").unwrap_or(rest))
}

/// The table an entry belongs to, if it belongs to one.
pub(super) fn entry_table(entry: &Entry) -> Option<Key> {
    let sql = entry.sql.as_str();
    match entry.kind.as_str() {
        "TABLE" => table_after(sql, &["CREATE TABLE ", "CREATE UNLOGGED TABLE "]),
        "DEFAULT" | "CONSTRAINT" | "FK CONSTRAINT" | "CHECK CONSTRAINT" => {
            table_after(sql, &["ALTER TABLE ONLY ", "ALTER TABLE "])
        }
        "INDEX" => index_table(sql).or_else(|| table_after(sql, &[" ON ONLY ", " ON "])),
        "TRIGGER" => table_after(sql, &[" ON "]),
        "SEQUENCE" => table_after(sql, &["ALTER TABLE ONLY ", "ALTER TABLE "]),
        "SEQUENCE OWNED BY" => table_after(sql, &["OWNED BY "]),
        "COMMENT" => table_after(sql, &["COMMENT ON TABLE ", "COMMENT ON COLUMN "]),
        "ACL" => table_after(sql, &[" ON TABLE "]),
        // Row security goes with its table: grants without the policies would show every row.
        "ROW SECURITY" => table_after(sql, &["ALTER TABLE ONLY ", "ALTER TABLE "]),
        "POLICY" => table_after(sql, &[" ON "]),
        _ => None,
    }
}

/// The tables of the copy's pre-data that `selection` chooses, and every entry that goes with
/// them.
///
/// # Errors
/// A selection that chooses nothing, or renames tables (PostgreSQL moves them with `--into-schema`).
pub(super) fn select(input: &RestoreInput, pre: &Script, post: &Script) -> Result<Selected, SourceError> {
    let selection: &Selection = &input.selection;
    if !selection.renames.is_empty() {
        return Err(SourceError::Unsupported(
            "--rename-table is for MySQL/MariaDB copies: a PostgreSQL table goes beside the live one with \
             --into-schema NAME (its sequences, keys and indexes keep their names there), or into another database"
                .into(),
        ));
    }
    let all: Vec<Key> = pre
        .entries
        .iter()
        .filter(|e| e.kind == "TABLE")
        .filter_map(entry_table)
        .collect();
    let tables: BTreeSet<Key> = all.iter().filter(|(s, t)| selection.selected(s, t)).cloned().collect();
    if tables.is_empty() {
        let names: Vec<String> = all.iter().take(20).map(|(s, t)| format!("{s}.{t}")).collect();
        return Err(SourceError::Unsupported(format!(
            "the selection (--table / --exclude-table) chooses no table of copy {}; it has {}{}",
            input.manifests[0].copy.id,
            names.join(", "),
            if all.len() > 20 { ", …" } else { "" }
        )));
    }
    // Partitions and inheritance tie a table to others: not built yet, refused by name.
    for entry in pre
        .entries
        .iter()
        .filter(|e| e.kind == "TABLE" || e.kind == "TABLE ATTACH")
    {
        let Some(key) = entry_table(entry).or_else(|| table_after(&entry.sql, &["ALTER TABLE ONLY ", "ALTER TABLE "]))
        else {
            continue;
        };
        let upper = entry.sql.to_ascii_uppercase();
        let tied = entry.kind == "TABLE ATTACH"
            || upper.contains(") PARTITION BY ")
            || upper.contains(" PARTITION OF ")
            || upper.contains("INHERITS (");
        if tied && tables.contains(&key) {
            return Err(SourceError::Unsupported(format!(
                "{}.{}: a partitioned, partition or inheriting table; a selective restore of those is not built yet \
                 (issue #16) — restore the whole copy into another database",
                key.0, key.1
            )));
        }
    }
    // Sequences go with the table that owns them (`OWNED BY`, or an identity's `ALTER TABLE`).
    let mut sequences = BTreeSet::new();
    for entry in &pre.entries {
        if matches!(entry.kind.as_str(), "SEQUENCE" | "SEQUENCE OWNED BY")
            && entry_table(entry).is_some_and(|key| tables.contains(&key))
        {
            sequences.insert((entry.schema.clone(), entry.name.clone()));
        }
    }
    let mut left_out = Vec::new();
    let needs = std::cell::RefCell::new(Vec::new());
    let keep = |entry: &Entry, left_out: &mut Vec<String>| -> bool {
        // A sequence the chosen tables own, its grants and comment.
        let owned_sequence = (entry.kind == "SEQUENCE"
            && sequences.contains(&(entry.schema.clone(), entry.name.clone())))
            || (matches!(entry.kind.as_str(), "ACL" | "COMMENT")
                && table_after(&entry.sql, &[" ON SEQUENCE ", "COMMENT ON SEQUENCE "])
                    .is_some_and(|key| sequences.contains(&key)));
        let belongs = owned_sequence || entry_table(entry).is_some_and(|key| tables.contains(&key));
        if !belongs {
            return false;
        }
        if entry.kind == "FK CONSTRAINT" {
            let referenced = table_after(&entry.sql, &["REFERENCES "]);
            if let Some(key) = &referenced
                && !tables.contains(key)
                && selection.keep_foreign_keys
            {
                needs.borrow_mut().push((key.clone(), entry.name.clone()));
            }
            if !referenced.is_some_and(|key| tables.contains(&key)) && !selection.keep_foreign_keys {
                left_out.push(format!(
                    "foreign key {} (it references a table that is not restored; --keep-foreign-keys keeps it \
                     when the target has that table)",
                    entry.name
                ));
                return false;
            }
        }
        true
    };
    let pre_kept: Vec<Entry> = pre.entries.iter().filter(|e| keep(e, &mut left_out)).cloned().collect();
    let post_kept: Vec<Entry> = post
        .entries
        .iter()
        .filter(|e| keep(e, &mut left_out))
        .cloned()
        .collect();
    let other_kinds: BTreeSet<&str> = pre
        .entries
        .iter()
        .chain(&post.entries)
        .filter(|e| {
            !matches!(
                e.kind.as_str(),
                "TABLE" | "DEFAULT" | "SEQUENCE" | "SEQUENCE OWNED BY" | "COMMENT" | "ACL"
            )
        })
        .filter(|e| {
            !matches!(
                e.kind.as_str(),
                "CONSTRAINT" | "FK CONSTRAINT" | "CHECK CONSTRAINT" | "INDEX" | "TRIGGER"
            )
        })
        .map(|e| e.kind.as_str())
        .collect();
    if !other_kinds.is_empty() {
        left_out.push(format!(
            "objects that are not tables ({}): a selective restore takes tables",
            other_kinds.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    // `--into-schema`: the chosen tables and their sequences are named in the new schema
    // wherever the entries name them (functions and types they use stay where they are).
    let into = selection.into_schema.clone();
    if into.is_some() {
        let mut seen = BTreeSet::new();
        for (schema, table) in &tables {
            if !seen.insert(table) {
                return Err(SourceError::Unsupported(format!(
                    "--into-schema: two chosen tables are named {table} ({schema} and another schema); choose one"
                )));
            }
        }
    }
    let mut names = Vec::new();
    let mut moves = Vec::new();
    if let Some(into) = &into {
        for (s, n) in tables.iter().chain(&sequences) {
            names.push((format!("{}.{}", dump_name(s), dump_name(n)), schema::qualified(into, n)));
        }
        for (s, n) in &sequences {
            moves.push((
                super::quote_literal(&schema::qualified(s, n)),
                super::quote_literal(&schema::qualified(into, n)),
            ));
        }
    }
    let moved = |entries: Vec<Entry>| -> Vec<Entry> {
        entries
            .into_iter()
            .map(|entry| Entry {
                sql: names
                    .iter()
                    .fold(entry.sql.clone(), |sql, (from, to)| replace_name(&sql, from, to)),
                ..entry
            })
            .collect()
    };
    let (pre_moved, post_moved) = (moved(pre_kept), moved(post_kept));
    // Every table and sequence made must be made in the new schema: a name written in a way not
    // followed here would otherwise be created beside the live one.
    if let Some(into) = &into {
        for entry in pre_moved.iter().filter(|e| e.kind == "TABLE" || e.kind == "SEQUENCE") {
            let made = table_after(
                &entry.sql,
                &["CREATE TABLE ", "CREATE UNLOGGED TABLE ", "CREATE SEQUENCE "],
            );
            if made.as_ref().is_some_and(|(schema, _)| schema != into) {
                return Err(SourceError::Unsupported(format!(
                    "--into-schema {into}: {} {} could not be moved (its name is written in a way cairn does not \
                     follow); restore into another database instead — nothing was restored",
                    entry.kind.to_lowercase(),
                    entry.name
                )));
            }
        }
    }
    Ok(Selected {
        made: match &into {
            Some(into) => tables.iter().map(|(_, t)| (into.clone(), t.clone())).collect(),
            None => tables.clone(),
        },
        tables,
        into,
        moves,
        pre: pre_moved,
        post: post_moved,
        sequences: sequences.iter().map(|(s, n)| schema::qualified(s, n)).collect(),
        left_out,
        needs: needs.into_inner(),
    })
}

impl super::replay::Only for Selected {
    fn admit(
        &self,
        change: crate::engine::change::Change,
    ) -> Result<Option<crate::engine::change::Change>, SourceError> {
        Selected::admit(self, change)
    }

    fn sequence_values(&self, sql: &str) -> String {
        Selected::sequence_values(self, sql)
    }
}

impl Selected {
    /// Every relation the restore makes, by schema and name: the tables and sequences, the
    /// indexes, and the indexes of primary keys and unique constraints (their names are the
    /// schema's, so a live table renamed aside keeps them).
    pub fn relations(&self) -> BTreeSet<Key> {
        let schema_of = |entry: &Entry| self.into.clone().unwrap_or_else(|| entry.schema.clone());
        let mut names: BTreeSet<Key> = self.made.clone();
        for entry in &self.pre {
            if entry.kind == "SEQUENCE"
                && let Some(made) = table_after(&entry.sql, &["CREATE SEQUENCE "])
            {
                names.insert(made);
            }
        }
        for entry in &self.post {
            let upper = entry.sql.to_ascii_uppercase();
            match entry.kind.as_str() {
                "INDEX" => {
                    names.insert((schema_of(entry), entry.name.clone()));
                }
                "CONSTRAINT" if upper.contains(" PRIMARY KEY ") || upper.contains(" UNIQUE ") => {
                    if let Some(constraint) = entry.name.split_whitespace().nth(1) {
                        names.insert((schema_of(entry), constraint.to_string()));
                    }
                }
                _ => {}
            }
        }
        names
    }

    /// A change of the replay as the restored tables take it: rows and truncations of the
    /// chosen tables (moved `--into-schema`); `None` for other tables. A captured schema change
    /// that names a chosen table stops the replay (it would change the table by its old name).
    ///
    /// # Errors
    /// A captured statement naming a chosen table.
    pub fn admit(
        &self,
        change: crate::engine::change::Change,
    ) -> Result<Option<crate::engine::change::Change>, SourceError> {
        use crate::engine::change::Change;
        let moved = |schema: String| self.into.clone().unwrap_or(schema);
        Ok(match change {
            Change::Rows(mut rows) => {
                if !self.tables.contains(&(rows.database.clone(), rows.table.clone())) {
                    return Ok(None);
                }
                rows.database = moved(rows.database);
                Some(Change::Rows(rows))
            }
            Change::Truncate(mut truncate) => {
                truncate.tables.retain(|key| self.tables.contains(key));
                if truncate.tables.is_empty() {
                    return Ok(None);
                }
                truncate.tables = truncate.tables.into_iter().map(|(s, t)| (moved(s), t)).collect();
                Some(Change::Truncate(truncate))
            }
            Change::Statement(statement) => {
                let text = statement.text.to_ascii_lowercase();
                let named = self.tables.iter().find(|(_, table)| {
                    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                        .any(|word| word == table.to_ascii_lowercase())
                });
                if let Some((schema, table)) = named {
                    return Err(SourceError::Unsupported(format!(
                        "{}: a schema change names {schema}.{table}, a restored table; the selective restore stops \
                         here rather than apply it — restore up to a point before it (--until)",
                        statement.at
                    )));
                }
                None
            }
            change => Some(change),
        })
    }

    /// The copy's sequence values of the chosen tables, under the names the target has.
    pub fn sequence_values(&self, sql: &str) -> String {
        self.moves
            .iter()
            .fold(sequence_values(sql, &self.sequences), |sql, (from, to)| {
                sql.replace(from, to)
            })
    }
}

/// A name as pg_dump writes it: bare when it can be, else quoted.
fn dump_name(name: &str) -> String {
    let bare = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    match bare {
        true => name.to_string(),
        false => super::quote_ident(name),
    }
}

/// `sql` with the qualified name `from` (whole, not the start of a longer name) as `to`.
fn replace_name(sql: &str, from: &str, to: &str) -> String {
    let is_name = |c: char| c.is_alphanumeric() || c == '_' || c == '$' || c == '"' || c == '.';
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find(from) {
        let before = rest[..at].chars().next_back().or_else(|| out.chars().next_back());
        let after = rest[at + from.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(is_name) || after.is_some_and(|c| is_name(c) && c != '.') {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = &rest[at + from.len()..];
    }
    out.push_str(rest);
    out
}

/// The lines of the copy's sequence values that set `sequences`.
pub(super) fn sequence_values(sql: &str, sequences: &BTreeSet<String>) -> String {
    sql.lines()
        .filter(|line| sequences.iter().any(|name| line.contains(&super::quote_literal(name))))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The copy's schema files read, checked and cut into entries, with the selection taken.
pub(super) async fn selected(input: &RestoreInput) -> Result<(Selected, String, String), SourceError> {
    use crate::repo::file_kind::FileKind;
    use crate::repo::reader::{files_of, one_of, read_text};
    let manifest = &input.manifests[0];
    let copy = &manifest.copy.id;
    let files = files_of(&input.source, manifest)?;
    let pre_sql = read_text(&input.destination, &one_of(&files, FileKind::PreData, copy)?).await?;
    let post_sql = read_text(&input.destination, &one_of(&files, FileKind::PostData, copy)?).await?;
    let sequences_sql = read_text(&input.destination, &one_of(&files, FileKind::Sequences, copy)?).await?;
    let publication = match &manifest.copy.log_range.end {
        crate::repo::model::LogPosition::Postgres { slot, .. } => slot.as_deref(),
        crate::repo::model::LogPosition::Mysql { .. } => None,
    };
    let pre = schema::split(&pre_sql);
    let post = schema::without_cairn_objects(schema::split(&post_sql), publication);
    let preamble = pre.preamble.clone();
    Ok((select(input, &pre, &post)?, preamble, sequences_sql))
}

mod restore;

#[cfg(test)]
mod tests;
