//! `restore --to-sql` past a full copy: the chain's changes up to the stop point written into the
//! script as the replay would apply them — row changes as `INSERT`/`UPDATE`/`DELETE` with literal
//! values inside the source's transactions, logged statements under the session they ran in.
//!
//! There is no target to read columns from: they come from the copy's table definitions. A
//! logged statement that changes a table's definition (other than `TRUNCATE`) therefore ends what
//! the script can say about that table's rows: a later row change of it stops the script,
//! naming the statement. Trigger and event statements are held back until after the copy's
//! triggers and events, which the script creates after the changes, so that no trigger fires on
//! a logged row change (the log already holds what triggers did).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::apply::ROW_SESSION;
use super::apply::only::{Only, Verdict, rows_target};
use super::apply::statement::{creates_trigger, session_of, statement_kind};
use super::render;
use super::sql::{dropped_trigger, first_words, rename_references, statement_table};
use super::values::{ColumnInfo, TableInfo, values};
use super::{Checked, Restored, copy_filters};
use crate::engine::change::{Change, Ending, RowChange, Rows, Statement};
use crate::engine::mysql::attribution::{is_account_statement, statement_database};
use crate::engine::mysql::create_table::{IndexKind, MyTable};
use crate::engine::mysql::quote_ident;
use crate::engine::mysql::statement_text::statement_tables;
use crate::engine::{RestoreInput, SourceError};
use crate::repo::model::LogPosition;

/// What a script ends its statements with in the replay part: logged statements (routines,
/// triggers) may hold `;`.
pub(crate) const DELIMITER: &str = ";;";

/// How many bytes of one table's consecutive inserts go into one `INSERT`.
const INSERT_BYTES: usize = 256 * 1024;

/// What the replay part of a script did.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub transactions: u64,
    pub row_changes: u64,
    /// The source's position after the last transaction written; `None`: none was.
    pub position: Option<LogPosition>,
    /// Trigger and event statements of the log, each under its session, to follow the copy's.
    pub held_back: Vec<String>,
}

/// The tables of the full copy, read from their definitions (or why one does not read): by the
/// copy's (database, table).
pub(crate) type Definitions = BTreeMap<(String, String), Result<MyTable, String>>;

/// Writes the changes of `checked` (the chain of `input`) into `out`, for the databases `databases`
/// maps (copy's name → script's); `restored`: a selective restore's tables, whose changes only
/// are written.
///
/// # Errors
/// A row change of a table whose columns the script cannot know, a value without a literal, a
/// damaged log, or a failed write.
pub(crate) async fn write_changes(
    input: &RestoreInput,
    checked: &Checked,
    databases: &BTreeMap<String, String>,
    definitions: &Definitions,
    restored: Option<Restored>,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<Written, SourceError> {
    let full = &input.manifests[0];
    let filters = copy_filters(full)?;
    let selection = &input.selection;
    let wanted = |database: &str, table: &str| {
        databases.contains_key(database)
            && filters.data_included(database, table)
            && selection.selected(database, table)
    };
    let mut decoder = checked.changes(input, None, &wanted)?;
    let only = restored.map(|restored| Only::new(input.selection.clone(), restored));
    let mut script = ScriptChanges {
        out,
        databases,
        definitions,
        filters: filters.clone(),
        only,
        tables: HashMap::new(),
        changed: HashMap::new(),
        open: false,
        foreign_key_checks: None,
        written: Written::default(),
    };
    script
        .line(&format!(
            "-- The changes of {} up to {}\nDELIMITER {DELIMITER}\n{ROW_SESSION}{DELIMITER}",
            crate::text::count(input.manifests.len() as u64 - 1, "incremental"),
            input
                .until
                .as_ref()
                .map_or("the end of the chain".to_string(), |u| u.to_string())
        ))
        .await?;
    while let Some(change) = decoder.next().await? {
        script.change(change).await?;
    }
    if script.open {
        // The stop point ends a transaction; a chain never stops inside one.
        script.line(&format!("COMMIT{DELIMITER}")).await?;
    }
    script.line("DELIMITER ;").await?;
    Ok(script.written)
}

struct ScriptChanges<'a, 'o> {
    out: &'o mut (dyn AsyncWrite + Unpin + Send),
    databases: &'a BTreeMap<String, String>,
    definitions: &'a Definitions,
    filters: crate::engine::filter::Filters,
    only: Option<Only>,
    /// Tables by (target database, target name), read from the copy's definitions.
    tables: HashMap<(String, String), Arc<TableInfo>>,
    /// Tables (by the copy's names) whose definition a logged statement changed: where, and what.
    changed: HashMap<(String, String), String>,
    open: bool,
    foreign_key_checks: Option<bool>,
    written: Written,
}

impl ScriptChanges<'_, '_> {
    async fn line(&mut self, text: &str) -> Result<(), SourceError> {
        self.bytes(text.as_bytes()).await
    }

    async fn bytes(&mut self, text: &[u8]) -> Result<(), SourceError> {
        let result = async {
            self.out.write_all(text).await?;
            self.out.write_all(b"\n").await
        }
        .await;
        result.map_err(|e| SourceError::Database {
            database: "the script".into(),
            doing: "writing the script".into(),
            detail: e.to_string(),
        })
    }

    async fn change(&mut self, change: Change) -> Result<(), SourceError> {
        match change {
            Change::Begin { .. } => {
                if !self.open {
                    self.line(&format!("BEGIN{DELIMITER}")).await?;
                    self.open = true;
                }
            }
            Change::Rows(rows) => self.rows(rows).await?,
            Change::Truncate(truncate) => {
                return Err(SourceError::Unsupported(format!(
                    "{}: a TRUNCATE from another engine's log cannot be written as MySQL",
                    truncate.at
                )));
            }
            Change::Statement(statement) => {
                if statement.standalone && self.open {
                    self.line(&format!("COMMIT{DELIMITER}")).await?;
                    self.open = false;
                }
                self.statement(statement).await?;
            }
            Change::Commit(commit) => {
                if self.open {
                    let end = match commit.ending {
                        Ending::Rollback => "ROLLBACK",
                        Ending::Commit | Ending::Standalone => "COMMIT",
                    };
                    self.line(&format!("{end}{DELIMITER}\n-- {}", commit.position)).await?;
                    self.open = false;
                }
                self.written.transactions += 1;
                self.written.position = Some(commit.position);
            }
        }
        Ok(())
    }

    /// The columns of the script's `database`.`table`, restored from the copy's
    /// `copy_database`.`copy_table`.
    fn table(
        &mut self,
        at: &str,
        (copy_database, copy_table): (&str, &str),
        (database, table): (&str, &str),
    ) -> Result<Arc<TableInfo>, SourceError> {
        let copy_key = (copy_database.to_string(), copy_table.to_string());
        if let Some(statement) = self.changed.get(&copy_key) {
            return Err(SourceError::Unsupported(format!(
                "{at}: rows of {copy_database}.{copy_table} follow {statement}, which changed its definition; a \
                 script takes each table's columns from the full copy and cannot follow it there — write the script \
                 up to a point before it (--until), or restore into a database (--target), which replays it"
            )));
        }
        let key = (database.to_string(), table.to_string());
        if let Some(info) = self.tables.get(&key) {
            return Ok(info.clone());
        }
        let definition = match self.definitions.get(&copy_key) {
            Some(Ok(definition)) => definition,
            Some(Err(e)) => {
                return Err(SourceError::Unsupported(format!(
                    "{at}: rows of {copy_database}.{copy_table}, whose definition in the full copy cairn cannot \
                     read ({e}); restore into a database (--target), which replays them"
                )));
            }
            None => {
                return Err(SourceError::Unsupported(format!(
                    "{at}: rows of {copy_database}.{copy_table}, which the full copy does not hold (a logged \
                     statement created it); a script takes each table's columns from the full copy — restore into \
                     a database (--target), which replays them"
                )));
            }
        };
        let info = Arc::new(table_info(database, table, definition));
        self.tables.insert(key, info.clone());
        Ok(info)
    }

    async fn rows(&mut self, rows: Rows) -> Result<(), SourceError> {
        let Rows {
            at,
            database: source_db,
            table: source_table,
            columns,
            foreign_key_checks,
            changes,
            ..
        } = rows;
        let Some((target_db, table)) = rows_target(
            self.databases,
            &self.filters,
            self.only.as_ref(),
            &source_db,
            &source_table,
        ) else {
            return Ok(());
        };
        // As the replay: a selective one checks no keys (a restored table's key would judge old
        // rows by today's); a whole one checks them as the source did.
        let foreign_key_checks = foreign_key_checks && self.only.is_none();
        if self.foreign_key_checks != Some(foreign_key_checks) {
            self.foreign_key_checks = Some(foreign_key_checks);
            let value = u8::from(foreign_key_checks);
            self.line(&format!("SET SESSION foreign_key_checks = {value}{DELIMITER}"))
                .await?;
        }
        let info = self.table(&at, (&source_db, &source_table), (&target_db, &table))?;
        if info.columns.len() as u64 != columns {
            return Err(SourceError::Damaged(format!(
                "{at}: {} has {} columns in the full copy but {columns} in the binary log; a logged statement the \
                 script could not see changed it",
                info.qualified,
                info.columns.len(),
            )));
        }
        let no_literal = || {
            SourceError::Unsupported(format!(
                "{at}: a value of {} has no SQL literal (a floating-point value that is not a number); restore into \
                 a database (--target), which sends it as a parameter",
                info.qualified
            ))
        };
        let mut text = Vec::new();
        let mut inserts: Vec<u8> = Vec::new();
        for change in changes {
            self.written.row_changes += 1;
            text.clear();
            match change {
                RowChange::Insert { after } => {
                    let row = values(after, &info, &at)?;
                    if !render::insert_row(&mut text, &info, &row) {
                        return Err(no_literal());
                    }
                    if inserts.is_empty() {
                        inserts.extend_from_slice(&info.insert_head);
                    } else {
                        inserts.extend_from_slice(b", ");
                    }
                    inserts.extend_from_slice(&text);
                    if inserts.len() >= INSERT_BYTES {
                        self.inserts(&mut inserts).await?;
                    }
                    continue;
                }
                RowChange::Update { before, after } => {
                    let (before, after) = (values(before, &info, &at)?, values(after, &info, &at)?);
                    if !render::update(&mut text, &info, &before, &after) {
                        return Err(no_literal());
                    }
                }
                RowChange::Delete { before } => {
                    let before = values(before, &info, &at)?;
                    if !render::delete(&mut text, &info, &before) {
                        return Err(no_literal());
                    }
                }
            }
            self.inserts(&mut inserts).await?;
            text.extend_from_slice(DELIMITER.as_bytes());
            self.bytes(&text).await?;
        }
        self.inserts(&mut inserts).await
    }

    /// Writes the inserts gathered, if any.
    async fn inserts(&mut self, inserts: &mut Vec<u8>) -> Result<(), SourceError> {
        if inserts.is_empty() {
            return Ok(());
        }
        inserts.extend_from_slice(DELIMITER.as_bytes());
        self.bytes(inserts).await?;
        inserts.clear();
        Ok(())
    }

    /// A statement the source logged as text, under its session, as the replay would run it.
    async fn statement(&mut self, statement: Statement) -> Result<(), SourceError> {
        let Statement {
            at,
            database: schema,
            text,
            session,
            ..
        } = statement;
        let Some(source_db) = statement_database(&text, &schema, self.databases.keys()) else {
            return Ok(());
        };
        if is_account_statement(&text) {
            // Only the kind: an account statement may carry a password in clear.
            let kind = statement_kind(&text);
            return self
                .line(&format!("-- {at}: an account or server statement ({kind}) is left out"))
                .await;
        }
        let tables = statement_tables(&text, &schema);
        if let Some(only) = &self.only
            && only.statement(&at, &text, &tables)? == Verdict::Skip
        {
            return Ok(());
        }
        if let Some((database, table)) = statement_table(&text)
            && !self
                .filters
                .table_included(database.as_deref().unwrap_or(&source_db), &table)
        {
            return Ok(());
        }
        let target_db = &self.databases[&source_db];
        let mut block: Vec<String> = session_of(target_db, &session)
            .into_iter()
            .map(|s| format!("{s}{DELIMITER}"))
            .collect();
        block.push(format!("{}{DELIMITER}", rename_references(&text, self.databases)));
        block.push(format!("{ROW_SESSION}{DELIMITER}"));
        let block = format!("-- {at}\n{}", block.join("\n"));
        if dropped_trigger(&text, &schema).is_some() || creates_trigger(&text) || names_event(&text) {
            self.written.held_back.push(block);
            return Ok(());
        }
        self.line(&block).await?;
        if changes_columns(&text) {
            for key in tables {
                self.tables.clear();
                self.changed.insert(key, format!("{} at {at}", first_words(&text)));
            }
        }
        Ok(())
    }
}

/// Whether a statement creates, changes or drops an event (`CREATE [DEFINER=…] EVENT`, …): the
/// script's events come after the changes.
fn names_event(text: &str) -> bool {
    let words: Vec<String> = first_words(text)
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    matches!(words.first().map(String::as_str), Some("CREATE" | "ALTER" | "DROP")) && words.iter().any(|w| w == "EVENT")
}

/// Whether a statement naming tables may change their columns or key: all but `TRUNCATE` and
/// `CREATE`/`DROP INDEX` (which cannot touch a primary key's columns).
fn changes_columns(text: &str) -> bool {
    let words: Vec<String> = first_words(text)
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let word = |i: usize| words.get(i).map_or("", String::as_str);
    let index = word(1) == "INDEX" || (matches!(word(1), "UNIQUE" | "FULLTEXT" | "SPATIAL") && word(2) == "INDEX");
    !(word(0) == "TRUNCATE" || (matches!(word(0), "CREATE" | "DROP") && index))
}

/// A table of the copy as the row rendering needs it: its columns and primary key, read from its
/// definition, under the script's names.
fn table_info(database: &str, table: &str, definition: &MyTable) -> TableInfo {
    let columns: Vec<ColumnInfo> = definition
        .columns
        .iter()
        .map(|c| ColumnInfo {
            name: c.name.clone(),
            data_type: c.type_name.clone(),
            unsigned: c.unsigned,
            generated: c.generated.is_some(),
        })
        .collect();
    let key = definition
        .indexes
        .iter()
        .find(|i| i.kind == IndexKind::Primary)
        .map(|primary| {
            primary
                .columns
                .iter()
                .filter_map(|name| columns.iter().position(|c| &c.name == name))
                .collect()
        })
        .unwrap_or_default();
    let mut info = TableInfo {
        qualified: format!("{}.{}", quote_ident(database), quote_ident(table)),
        quoted: columns.iter().map(|c| quote_ident(&c.name)).collect(),
        columns,
        key,
        insert_head: Vec::new(),
        printable: true,
    };
    info.insert_head = render::insert_head(&info);
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_statements_and_truncate_keep_a_tables_columns() {
        assert!(!changes_columns("TRUNCATE TABLE t"));
        assert!(!changes_columns("create unique index i on t (a)"));
        assert!(!changes_columns("DROP INDEX i ON t"));
        assert!(changes_columns("ALTER TABLE t ADD COLUMN c INT"));
        assert!(changes_columns("DROP TABLE t"));
        assert!(changes_columns("CREATE TABLE t (a INT)"));
    }

    #[test]
    fn a_definition_gives_columns_and_primary_key() {
        let definition = crate::engine::mysql::create_table::parse_table(
            "CREATE TABLE `t` (\n  `a` int(10) unsigned NOT NULL,\n  `b` varchar(5) DEFAULT NULL,\n  `c` int(11) \
             GENERATED ALWAYS AS (`a` + 1) VIRTUAL,\n  PRIMARY KEY (`b`,`a`)\n) ENGINE=InnoDB",
            &[],
        )
        .unwrap();
        let info = table_info("d", "t2", &definition);
        assert_eq!(info.qualified, "`d`.`t2`");
        assert_eq!(info.key, vec![1, 0]);
        assert!(info.columns[0].unsigned && info.columns[2].generated && !info.columns[1].generated);
        assert_eq!(info.columns[1].data_type, "varchar");
        assert_eq!(
            String::from_utf8(info.insert_head).unwrap(),
            "INSERT INTO `d`.`t2` (`a`, `b`) VALUES "
        );
    }
}
