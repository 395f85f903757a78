//! MySQL DDL from the binary log applied to a PostgreSQL replica: the replica's catalog of MySQL
//! table definitions changed as the statement changed the table, the PostgreSQL DDL that makes
//! the replica's table match, and the catalog's row, all run in the source transaction's target
//! transaction. Translated: `CREATE TABLE` with a column list, `DROP TABLE`, `RENAME TABLE` and
//! `ALTER TABLE … RENAME`, `ALTER TABLE … ADD [COLUMN]` / `DROP [COLUMN]` / `ADD PRIMARY KEY`
//! and table options, `TRUNCATE`, and index statements (`ddl_log::indexes`). Anything else stops
//! the replica with the statement named.

use std::collections::{BTreeMap, BTreeSet};

use self::columns::drop_constraints_sql;
use self::text::{
    after_table_name, column_clause, column_name_after, entries_of, entry_name, first_paren, index_as_alter,
    insert_column, names_an_object, replace_column, split_name, starts_with_index_word, strip_clause_words,
    strip_if_not_exists, strip_leading_comments, table_names, words,
};
use super::catalog::{Definition, delete_sql, translate_all, upsert_sql};
use super::ddl::{PgTable, pg_index_name, translate};
use super::mysql_ddl::{
    MyTable, entry_column, entry_key_columns, join_create, parse_table, split_create, split_top_level,
};
use super::rows::Shape;
use crate::engine::SourceError;
use crate::engine::change::Statement;
use crate::engine::filter::Filters;
use crate::engine::mysql::{first_words, is_account_statement, statement_database};
use crate::engine::postgres::quote_ident;

type Key = (String, String);

/// What a logged statement does to the replica.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing.
    PassOver,
    /// Statements to run in the target transaction, and the tables whose shape changed (`None`:
    /// dropped).
    Apply {
        sql: Vec<String>,
        shapes: Vec<(Key, Option<Shape>)>,
    },
}

/// The MySQL tables of a replica as the log has changed them so far.
#[derive(Debug, Clone)]
pub struct LiveCatalog {
    definitions: BTreeMap<Key, Definition>,
    /// MySQL database → its default character set.
    charsets: BTreeMap<String, String>,
    /// MySQL database → PostgreSQL schema.
    schemas: BTreeMap<String, String>,
    targets: String,
    filters: Filters,
}

impl LiveCatalog {
    pub fn new(
        definitions: Vec<Definition>,
        charsets: BTreeMap<String, String>,
        schemas: BTreeMap<String, String>,
        targets: String,
        filters: Filters,
    ) -> Self {
        let definitions = definitions
            .into_iter()
            .map(|d| ((d.database.clone(), d.name.clone()), d))
            .collect();
        LiveCatalog {
            definitions,
            charsets,
            schemas,
            targets,
            filters,
        }
    }

    /// The shape of every table, for the row translator.
    ///
    /// # Errors
    /// A definition that does not translate.
    pub fn shapes(&self) -> Result<BTreeMap<Key, Shape>, SourceError> {
        let definitions: Vec<Definition> = self.definitions.values().cloned().collect();
        let schemas = &self.schemas;
        let schema_of = |database: &str| schemas.get(database).cloned().unwrap_or_else(|| database.to_string());
        Ok(translate_all(&definitions, &schema_of, "the replica's table definitions")?.shapes)
    }

    /// Every table with its MySQL definition read and its translation, for a validation.
    ///
    /// # Errors
    /// A definition that does not translate.
    pub fn tables(&self) -> Result<Vec<(Key, MyTable, PgTable)>, SourceError> {
        let definitions: Vec<Definition> = self.definitions.values().cloned().collect();
        let schemas = &self.schemas;
        let schema_of = |database: &str| schemas.get(database).cloned().unwrap_or_else(|| database.to_string());
        let mut translated = translate_all(&definitions, &schema_of, "the replica's table definitions")?.tables;
        let mut tables = Vec::new();
        for definition in definitions {
            let key = (definition.database.clone(), definition.name.clone());
            let parsed = parse_table(&definition.create, &definition.added)
                .map_err(|e| SourceError::Damaged(format!("the replica's definition of {}.{}: {e}", key.0, key.1)))?;
            if let Some(pg) = translated.remove(&key) {
                tables.push((key, parsed, pg));
            }
        }
        Ok(tables)
    }

    /// What `statement` does to the replica.
    ///
    /// # Errors
    /// DDL that is not translated, naming the statement, its position and what to do.
    pub fn statement(&mut self, statement: &Statement) -> Result<Outcome, SourceError> {
        let text = strip_leading_comments(statement.text.trim());
        let at = &statement.at;
        let Some(database) = statement_database(text, &statement.database, self.schemas.keys()) else {
            tracing::debug!(
                "{at}: passed over (it touches no replicated database): {}",
                first_words(text)
            );
            return Ok(Outcome::PassOver);
        };
        if is_account_statement(text) {
            tracing::info!("{at}: passed over an account or server statement");
            return Ok(Outcome::PassOver);
        }
        let words = words(text, 12);
        let word = |i: usize| words.get(i).map(|(_, w)| w.to_ascii_uppercase()).unwrap_or_default();
        let first = word(0);
        // Savepoints inside a row-format transaction: the rows the log holds are what stayed.
        if first == "SAVEPOINT"
            || (first == "RELEASE" && word(1) == "SAVEPOINT")
            || (first == "ROLLBACK" && word(1) == "TO")
        {
            return Ok(Outcome::PassOver);
        }
        if matches!(first.as_str(), "CREATE" | "DROP" | "ALTER") && names_an_object(text) {
            tracing::warn!(
                "{at}: not translated (views, routines, triggers and events are not): {}",
                first_words(text)
            );
            return Ok(Outcome::PassOver);
        }
        if (1..4).any(|i| word(i) == "TEMPORARY") {
            return Ok(Outcome::PassOver);
        }
        let refuse = |why: &str| {
            SourceError::Unsupported(format!(
                "{at}: {} on {database}: {why}: not translated into PostgreSQL (docs/mysql-to-postgres.md) — a \
                 replica: copy the table again after it (cairn replica reload --table DATABASE.TABLE) and run on; a \
                 restore: stop before it (--until), or restore a copy taken after it",
                first_words(text)
            ))
        };
        let index_statement = matches!(first.as_str(), "CREATE" | "DROP")
            && (1..3).any(|i| word(i) == "INDEX")
            && !(1..3).any(|i| word(i) == "TABLE");
        // Unqualified names are of the session's database, not of one the statement mentions.
        let session = statement.database.as_str();
        if index_statement && first == "DROP" {
            // A unique index left in place would refuse rows MySQL now accepts.
            return self.drop_index(text, session, at).map_err(|why| refuse(&why));
        }
        if index_statement {
            // As the ALTER TABLE … ADD INDEX it is equivalent to.
            return match index_as_alter(text) {
                Some(alter) => self.alter(&alter, session, at).map_err(|why| refuse(&why)),
                None => Err(refuse("a CREATE INDEX that does not read")),
            };
        }
        let result = match first.as_str() {
            "TRUNCATE" => self.truncate(text, session),
            "CREATE" if (1..4).any(|i| word(i) == "TABLE") => self.create(text, session, at),
            "DROP" if word(1) == "TABLE" => self.drop_tables(text, session),
            "RENAME" if word(1) == "TABLE" => self.rename_statement(text, session),
            "ALTER" if (1..3).any(|i| word(i) == "TABLE") => self.alter(text, session, at),
            _ => Err("a statement of this kind".to_string()),
        };
        result.map_err(|why| refuse(&why))
    }

    fn schema_of(&self, database: &str) -> String {
        self.schemas
            .get(database)
            .cloned()
            .unwrap_or_else(|| database.to_string())
    }

    fn qualified(&self, (database, table): &Key) -> String {
        format!("{}.{}", quote_ident(&self.schema_of(database)), quote_ident(table))
    }

    /// Whether the replica holds `key`'s rows (a replicated database, not filtered out).
    fn replicated(&self, (database, table): &Key) -> bool {
        self.schemas.contains_key(database) && self.filters.data_included(database, table)
    }

    fn shape_of(&self, definition: &Definition) -> Result<Shape, String> {
        let parsed = parse_table(&definition.create, &definition.added)?;
        let pg = translate(
            &parsed,
            &self.schema_of(&definition.database),
            &|d: &str| self.schema_of(d),
            &mut BTreeSet::new(),
        )?;
        Shape::new(&parsed, &pg)
    }

    fn truncate(&self, text: &str, database: &str) -> Result<Outcome, String> {
        let names = table_names(text, &["TRUNCATE", "TABLE"], database);
        let mut sql = Vec::new();
        for key in names.iter().filter(|k| self.replicated(k)) {
            sql.push(format!("TRUNCATE {}", self.qualified(key)));
        }
        Ok(Outcome::Apply {
            sql,
            shapes: Vec::new(),
        })
    }

    fn create(&mut self, text: &str, database: &str, at: &str) -> Result<Outcome, String> {
        let names = table_names(
            text,
            &["CREATE", "OR", "REPLACE", "TABLE", "IF", "NOT", "EXISTS"],
            database,
        );
        let Some(key) = names.into_iter().next() else {
            return Err("a CREATE TABLE whose table name does not read".into());
        };
        if !self.replicated(&key) {
            return Ok(Outcome::PassOver);
        }
        let upper = text.to_ascii_uppercase();
        if self.definitions.contains_key(&key) {
            if upper.contains("IF NOT EXISTS") {
                return Ok(Outcome::PassOver);
            }
            return Err(format!("table {} is already in the replica's catalog", key.1));
        }
        let open = first_paren(text).ok_or("CREATE TABLE … LIKE or … SELECT, without a column list")?;
        let (_, entries, mut options) = split_create(&format!("CREATE TABLE `x` {}", &text[open..]))?;
        if options.to_ascii_uppercase().contains("SELECT") || options.to_ascii_uppercase().contains(" LIKE ") {
            return Err("CREATE TABLE … SELECT".into());
        }
        if !options.to_ascii_uppercase().contains("CHARSET") && !options.to_ascii_uppercase().contains("COLLATE") {
            let charset = self.charsets.get(&key.0).cloned().unwrap_or_else(|| "utf8mb4".into());
            options = format!("{options} DEFAULT CHARSET={charset}");
        }
        let definition = Definition {
            database: key.0.clone(),
            name: key.1.clone(),
            create: join_create(&key.1, &entries, &options),
            added: Vec::new(),
        };
        let parsed = parse_table(&definition.create, &[])?;
        let schema = self.schema_of(&key.0);
        let mut taken: BTreeSet<String> = self
            .definitions
            .keys()
            .filter(|(d, _)| self.schema_of(d) == schema)
            .flat_map(|(_, t)| [t.clone(), format!("{t}_pkey")])
            .collect();
        let pg = translate(&parsed, &schema, &|d: &str| self.schema_of(d), &mut taken)?;
        for note in &pg.notes {
            tracing::warn!("{at}: not translated: {note}");
        }
        if !pg.at_detach.is_empty() {
            tracing::warn!(
                "{at}: the foreign keys of {schema}.{} are not created on the replica",
                key.1
            );
        }
        let mut sql = vec![pg.create.clone()];
        sql.extend(pg.after_load.iter().cloned());
        sql.push(upsert_sql(&self.targets, &definition));
        let shape = Shape::new(&parsed, &pg)?;
        self.definitions.insert(key.clone(), definition);
        Ok(Outcome::Apply {
            sql,
            shapes: vec![(key, Some(shape))],
        })
    }

    fn drop_tables(&mut self, text: &str, database: &str) -> Result<Outcome, String> {
        let names = table_names(text, &["DROP", "TABLE", "IF", "EXISTS"], database);
        let (mut sql, mut shapes) = (Vec::new(), Vec::new());
        let names: Vec<Key> = names.into_iter().filter(|k| self.replicated(k)).collect();
        for key in names {
            sql.push(format!("DROP TABLE IF EXISTS {}", self.qualified(&key)));
            sql.push(delete_sql(&self.targets, &key.0, &key.1));
            self.definitions.remove(&key);
            shapes.push((key, None));
        }
        Ok(Outcome::Apply { sql, shapes })
    }

    fn rename_statement(&mut self, text: &str, database: &str) -> Result<Outcome, String> {
        let names = table_names(text, &["RENAME", "TABLE"], database);
        let (mut sql, mut shapes) = (Vec::new(), Vec::new());
        for pair in names.chunks(2) {
            let [from, to] = pair else {
                return Err("a RENAME TABLE whose names do not read".into());
            };
            self.rename(from, to, &mut sql, &mut shapes)?;
        }
        Ok(Outcome::Apply { sql, shapes })
    }

    fn rename(
        &mut self,
        from: &Key,
        to: &Key,
        sql: &mut Vec<String>,
        shapes: &mut Vec<(Key, Option<Shape>)>,
    ) -> Result<(), String> {
        if !self.replicated(from) && !self.replicated(to) {
            return Ok(());
        }
        if from.0 != to.0 || !self.replicated(from) || !self.replicated(to) {
            return Err("a rename into or out of what the replica holds".into());
        }
        let Some(mut definition) = self.definitions.remove(from) else {
            return Err(format!("table {} is not in the replica's catalog", from.1));
        };
        let (_, entries, options) = entries_of(&definition)?;
        definition.name = to.1.clone();
        definition.create = join_create(&to.1, &entries, &options);
        definition.added.clear();
        sql.push(format!(
            "ALTER TABLE {} RENAME TO {}",
            self.qualified(from),
            quote_ident(&to.1)
        ));
        sql.push(delete_sql(&self.targets, &from.0, &from.1));
        sql.push(upsert_sql(&self.targets, &definition));
        shapes.push((from.clone(), None));
        shapes.push((to.clone(), Some(self.shape_of(&definition)?)));
        self.definitions.insert(to.clone(), definition);
        Ok(())
    }

    fn alter(&mut self, text: &str, database: &str, at: &str) -> Result<Outcome, String> {
        let names = table_names(text, &["ALTER", "ONLINE", "IGNORE", "TABLE", "IF", "EXISTS"], database);
        let Some(key) = names.into_iter().next() else {
            return Err("an ALTER TABLE whose table name does not read".into());
        };
        if !self.replicated(&key) {
            return Ok(Outcome::PassOver);
        }
        let Some(definition) = self.definitions.get(&key).cloned() else {
            return Err(format!("table {} is not in the replica's catalog", key.1));
        };
        let clauses = after_table_name(text).ok_or("an ALTER TABLE without changes")?;
        let (name, mut entries, options) = entries_of(&definition)?;
        let qualified = self.qualified(&key);
        let mut sql = Vec::new();
        let mut renamed_to = None;
        // PostgreSQL indexes this statement drops: one added again under its name is made again.
        let mut dropped_indexes = BTreeSet::new();
        for clause in split_top_level(clauses) {
            let upper = clause.to_ascii_uppercase();
            let head: Vec<&str> = upper.split_whitespace().take(3).collect();
            let first = head.first().copied().unwrap_or_default();
            let second = head.get(1).copied().unwrap_or_default();
            let index_words = [
                "INDEX",
                "KEY",
                "UNIQUE",
                "FULLTEXT",
                "SPATIAL",
                "CONSTRAINT",
                "FOREIGN",
                "CHECK",
            ];
            match first {
                "ADD" if second == "PRIMARY" => {
                    let entry = clause[3..].trim().to_string();
                    let columns = entry_key_columns(&entry);
                    let list: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
                    sql.push(format!("ALTER TABLE {qualified} ADD PRIMARY KEY ({})", list.join(", ")));
                    entries.push(entry);
                }
                "ADD" if index_words.contains(&second) => {
                    match second {
                        "FULLTEXT" | "SPATIAL" => tracing::warn!(
                            "{at}: not applied to PostgreSQL (FULLTEXT and SPATIAL indexes are not translated): {clause}"
                        ),
                        "CONSTRAINT" | "FOREIGN" | "CHECK" => tracing::info!(
                            "{at}: kept for detach (foreign keys are made then; CHECK constraints are not translated): \
                             {clause}"
                        ),
                        _ => {}
                    }
                    let entry = clause[3..].trim().to_string();
                    // MariaDB logs `ADD INDEX IF NOT EXISTS` of an index already there too.
                    if upper.contains("IF NOT EXISTS") {
                        let named = entry_name(&strip_if_not_exists(&entry));
                        if named.is_some() && entries.iter().any(|e| entry_name(e) == named) {
                            continue;
                        }
                    }
                    entries.push(strip_if_not_exists(&entry));
                }
                "ADD" => {
                    let (entry, place) = column_clause(clause)?;
                    let name = entry_column(&entry).ok_or_else(|| format!("{clause}: no column definition"))?;
                    // MariaDB logs `ADD COLUMN IF NOT EXISTS` of a column already there too.
                    if entries
                        .iter()
                        .any(|e| entry_column(e).as_deref() == Some(name.as_str()))
                    {
                        if upper.contains("IF NOT EXISTS") {
                            continue;
                        }
                        return Err(format!("{clause}: column {name} is already in the replica's catalog"));
                    }
                    let added = self.add_column(&key, &definition, &entry, &qualified)?;
                    sql.extend(added);
                    insert_column(&mut entries, entry, place)?;
                }
                "DROP" if second == "PRIMARY" => {
                    sql.push(drop_constraints_sql(&qualified, 'p', None));
                    entries.retain(|e| !e.to_ascii_uppercase().starts_with("PRIMARY"));
                }
                "DROP" if index_words.contains(&second) => {
                    let dropped = column_name_after(
                        clause,
                        &["DROP", "INDEX", "KEY", "FOREIGN", "CONSTRAINT", "CHECK", "IF", "EXISTS"],
                    )
                    .ok_or_else(|| format!("{clause}: no name"))?;
                    match second {
                        // What the replica made of it: an index, a foreign key of the same name.
                        "INDEX" | "KEY" => {
                            sql.push(self.drop_index_sql(&key, &dropped));
                            dropped_indexes.insert(quote_ident(&pg_index_name(&key.1, &dropped)));
                        }
                        "FOREIGN" => sql.push(format!(
                            "ALTER TABLE {qualified} DROP CONSTRAINT IF EXISTS {}",
                            quote_ident(&dropped)
                        )),
                        _ => {}
                    }
                    entries
                        .retain(|e| !(starts_with_index_word(e) && entry_name(e).as_deref() == Some(dropped.as_str())));
                }
                "DROP" => {
                    let column = column_name_after(clause, &["DROP", "COLUMN", "IF", "EXISTS"])
                        .ok_or_else(|| format!("{clause}: no column name"))?;
                    // MariaDB logs `DROP COLUMN IF EXISTS` of a missing column too.
                    if !entries
                        .iter()
                        .any(|e| entry_column(e).as_deref() == Some(column.as_str()))
                    {
                        if upper.contains("IF EXISTS") {
                            continue;
                        }
                        return Err(format!("{clause}: no column {column} in the replica's catalog"));
                    }
                    sql.push(format!("ALTER TABLE {qualified} DROP COLUMN {}", quote_ident(&column)));
                    // MySQL drops a key's column from the key; PostgreSQL drops the index.
                    entries.retain(|e| {
                        entry_column(e).as_deref() != Some(column.as_str()) && !entry_key_columns(e).contains(&column)
                    });
                }
                "MODIFY" | "CHANGE" => {
                    // CHANGE names the column before its new definition (which may rename it).
                    let (old, clause_rest) = match first {
                        "CHANGE" => {
                            split_name(strip_clause_words(clause)).ok_or_else(|| format!("{clause}: no column"))?
                        }
                        _ => (String::new(), clause),
                    };
                    let (entry, place) = column_clause(clause_rest)?;
                    let new = entry_column(&entry).ok_or_else(|| format!("{clause}: no column definition"))?;
                    let old = if old.is_empty() { new.clone() } else { old };
                    let old_entry = entries
                        .iter()
                        .find(|e| entry_column(e).as_deref() == Some(old.as_str()))
                        .cloned()
                        .ok_or_else(|| format!("{clause}: no column {old} in the replica's catalog"))?;
                    if old != new {
                        self.check_unkeyed(&entries, &old)?;
                        sql.push(format!(
                            "ALTER TABLE {qualified} RENAME COLUMN {} TO {}",
                            quote_ident(&old),
                            quote_ident(&new)
                        ));
                    }
                    sql.extend(self.modify_column(&key, &definition, &old_entry, &entry, &qualified)?);
                    replace_column(&mut entries, &old, entry, place)?;
                }
                "RENAME" if second == "COLUMN" => {
                    let rest = clause.trim()[6..].trim_start()[6..].trim_start();
                    let (old, rest) = split_name(rest).ok_or_else(|| format!("{clause}: no column"))?;
                    let rest = rest.trim_start();
                    let rest = match rest.get(..3) {
                        Some(to) if to.eq_ignore_ascii_case("TO ") => &rest[3..],
                        _ => return Err(format!("{clause}: RENAME COLUMN without TO")),
                    };
                    let (new, _) = split_name(rest).ok_or_else(|| format!("{clause}: no new name"))?;
                    self.check_unkeyed(&entries, &old)?;
                    let at = entries
                        .iter()
                        .position(|e| entry_column(e).as_deref() == Some(old.as_str()))
                        .ok_or_else(|| format!("{clause}: no column {old} in the replica's catalog"))?;
                    let (_, definition_rest) = split_name(&entries[at]).ok_or("a column entry without a name")?;
                    entries[at] = format!("`{}`{definition_rest}", new.replace('`', "``"));
                    sql.push(format!(
                        "ALTER TABLE {qualified} RENAME COLUMN {} TO {}",
                        quote_ident(&old),
                        quote_ident(&new)
                    ));
                }
                "RENAME" if !matches!(second, "COLUMN" | "INDEX" | "KEY") => {
                    let (to_database, to) = table_names(clause, &["RENAME", "TO", "AS"], &key.0)
                        .into_iter()
                        .next()
                        .ok_or_else(|| format!("{clause}: no new name"))?;
                    if to_database != key.0 {
                        return Err("a rename into another database".into());
                    }
                    renamed_to = Some(to);
                }
                // Options that rewrite the table without changing its rows or columns.
                _ if [
                    "ENGINE",
                    "COMMENT",
                    "AUTO_INCREMENT",
                    "ROW_FORMAT",
                    "ALGORITHM",
                    "LOCK",
                    "FORCE",
                    "STATS_",
                ]
                .iter()
                .any(|option| first.starts_with(option)) => {}
                _ => {
                    return Err(format!(
                        "{} is not translated",
                        clause.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                    ));
                }
            }
        }
        let indexes_before = self.index_names(&definition)?;
        let changed = Definition {
            create: join_create(&name, &entries, &options),
            added: Vec::new(),
            ..definition
        };
        let shape = self.shape_of(&changed)?;
        // Indexes the change added (PostgreSQL renames columns in indexes by itself, so an
        // index is new by its name). Foreign keys wait for detach, as after a seed.
        for (name, statement) in self.index_statements(&changed)? {
            if !indexes_before.contains(&name) || dropped_indexes.contains(&name) {
                sql.push(statement);
            }
        }
        sql.push(upsert_sql(&self.targets, &changed));
        let mut shapes = vec![(key.clone(), Some(shape))];
        self.definitions.insert(key.clone(), changed);
        if let Some(to) = renamed_to {
            self.rename(&key, &(key.0.clone(), to), &mut sql, &mut shapes)?;
        }
        Ok(Outcome::Apply { sql, shapes })
    }
}

mod columns;
mod indexes;
mod text;

#[cfg(test)]
mod tests;
