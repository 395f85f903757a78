//! The PostgreSQL applier: the change stream applied to a target database, one target
//! transaction per source transaction, under `session_replication_role = replica` (the source's
//! triggers and foreign keys already did their work). Rows are found by the columns that
//! identify them; a value the change does not carry is never written.

use tokio_postgres::{Client, SimpleQueryMessage};

use super::{Pg, quote_ident, quote_literal};
use crate::engine::SourceError;
use crate::engine::change::{Change, Commit, RowChange, Rows, Statement, Truncate, Value};

/// What the applier did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub transactions: u64,
    pub row_changes: u64,
}

/// Applies changes over one session of the target.
pub struct Applier<'a> {
    pg: &'a Pg,
    client: &'a Client,
    open: bool,
    applied: Applied,
}

impl<'a> Applier<'a> {
    /// Prepares the session: the source's triggers and foreign keys are not run again.
    ///
    /// # Errors
    /// The target's error (`session_replication_role` needs a superuser or the role's grant).
    pub async fn new(pg: &'a Pg, client: &'a Client) -> Result<Applier<'a>, SourceError> {
        client
            .batch_execute("SET session_replication_role = replica; SET standard_conforming_strings = on")
            .await
            .map_err(|e| pg.error("preparing the replay session (session_replication_role)", e))?;
        Ok(Applier {
            pg,
            client,
            open: false,
            applied: Applied::default(),
        })
    }

    /// What was applied so far.
    pub fn applied(&self) -> Applied {
        self.applied
    }

    /// Applies one change; `record` is SQL run inside the transaction just before its commit
    /// (the replay's progress), or empty.
    ///
    /// # Errors
    /// A row the target does not hold as the source did, a change this applier cannot apply,
    /// or the target's error.
    pub async fn apply(&mut self, change: Change, record: &str) -> Result<(), SourceError> {
        match change {
            Change::Begin { at, .. } => {
                if !self.open {
                    self.exec(&format!("{at}: BEGIN"), "BEGIN").await?;
                    self.open = true;
                }
            }
            Change::Rows(rows) => self.rows(rows).await?,
            Change::Truncate(truncate) => self.truncate(truncate).await?,
            Change::Statement(statement) => self.statement(statement).await?,
            Change::Commit(commit) => self.commit(commit, record).await?,
        }
        Ok(())
    }

    /// Runs literal SQL in one round trip; returns the rows the last statement changed.
    async fn exec(&self, doing: &str, sql: &str) -> Result<u64, SourceError> {
        let messages = self
            .client
            .simple_query(sql)
            .await
            .map_err(|e| self.pg.error(doing, e))?;
        Ok(messages
            .iter()
            .rev()
            .find_map(|m| match m {
                SimpleQueryMessage::CommandComplete(rows) => Some(*rows),
                _ => None,
            })
            .unwrap_or(0))
    }

    /// Records the position (in the transaction) and commits, in one round trip.
    async fn commit(&mut self, commit: Commit, record: &str) -> Result<(), SourceError> {
        let sql = match (self.open, record.is_empty()) {
            (true, true) => "COMMIT".to_string(),
            (true, false) => format!("{record}; COMMIT"),
            (false, true) => String::new(),
            (false, false) => record.to_string(),
        };
        if !sql.is_empty() {
            self.exec(&format!("{}: committing", commit.at), &sql).await?;
        }
        self.open = false;
        self.applied.transactions += 1;
        Ok(())
    }

    async fn rows(&mut self, rows: Rows) -> Result<(), SourceError> {
        if rows.names.len() as u64 != rows.columns {
            return Err(SourceError::Unsupported(format!(
                "{}: the change of {}.{} does not name its columns; it cannot be applied to PostgreSQL",
                rows.at, rows.database, rows.table
            )));
        }
        let table = format!("{}.{}", quote_ident(&rows.database), quote_ident(&rows.table));
        for change in &rows.changes {
            let sql = match change {
                RowChange::Insert { after } => {
                    let (names, values): (Vec<String>, Vec<String>) = rows
                        .names
                        .iter()
                        .zip(after)
                        .filter(|(_, value)| **value != Value::Unchanged)
                        .map(|(name, value)| Ok((quote_ident(name), literal(value, &rows.at)?)))
                        .collect::<Result<Vec<_>, SourceError>>()?
                        .into_iter()
                        .unzip();
                    format!(
                        "INSERT INTO {table} ({}) VALUES ({})",
                        names.join(", "),
                        values.join(", ")
                    )
                }
                RowChange::Update { before, after } => {
                    let sets = rows
                        .names
                        .iter()
                        .zip(after)
                        .filter(|(_, value)| **value != Value::Unchanged)
                        .map(|(name, value)| Ok(format!("{} = {}", quote_ident(name), literal(value, &rows.at)?)))
                        .collect::<Result<Vec<_>, SourceError>>()?;
                    if sets.is_empty() {
                        continue;
                    }
                    format!(
                        "UPDATE {table} SET {} WHERE ctid = (SELECT ctid FROM {table} WHERE {} LIMIT 1)",
                        sets.join(", "),
                        locate(&rows, before)?
                    )
                }
                RowChange::Delete { before } => format!(
                    "DELETE FROM {table} WHERE ctid = (SELECT ctid FROM {table} WHERE {} LIMIT 1)",
                    locate(&rows, before)?
                ),
            };
            let changed = self.exec(&format!("{}: changing {table}", rows.at), &sql).await?;
            if changed != 1 {
                return Err(SourceError::Damaged(format!(
                    "{}: {table}: no row matches the change: the target differs from the source at this point (was \
                     it changed after the restore?)",
                    rows.at
                )));
            }
            self.applied.row_changes += 1;
        }
        Ok(())
    }

    /// DDL the source recorded (`on-ddl = "capture"`), run in the transaction it came with,
    /// under the `search_path` it ran under (carried as the statement's database).
    async fn statement(&mut self, statement: Statement) -> Result<(), SourceError> {
        let command = super::ddl::replayable(&statement.text)
            .map_err(|why| SourceError::Unsupported(format!("{}: {why}", statement.at)))?;
        let path = match statement.database.trim() {
            "" | "\"\"" => "''".to_string(),
            path => path.to_string(),
        };
        let sql = format!("SET LOCAL search_path TO {path}; {command}");
        self.exec(&format!("{}: running the recorded DDL {command:?}", statement.at), &sql)
            .await?;
        Ok(())
    }

    async fn truncate(&mut self, truncate: Truncate) -> Result<(), SourceError> {
        let tables: Vec<String> = truncate
            .tables
            .iter()
            .map(|(schema, table)| format!("{}.{}", quote_ident(schema), quote_ident(table)))
            .collect();
        let sql = format!(
            "TRUNCATE {}{}{}",
            tables.join(", "),
            if truncate.restart_identity {
                " RESTART IDENTITY"
            } else {
                ""
            },
            if truncate.cascade { " CASCADE" } else { "" }
        );
        self.exec(&format!("{}: {sql}", truncate.at), &sql).await?;
        Ok(())
    }
}

/// A value as an SQL literal the target reads with the column's input function.
fn literal(value: &Value, at: &str) -> Result<String, SourceError> {
    match value {
        Value::Null => Ok("NULL".into()),
        Value::Bytes(bytes) | Value::Json(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Ok(quote_literal(text)),
            Err(_) => Err(SourceError::Damaged(format!("{at}: a value is not UTF-8 text"))),
        },
        Value::Int(v) => Ok(v.to_string()),
        Value::UInt(v) => Ok(v.to_string()),
        Value::Float(v) => Ok(quote_literal(&v.to_string())),
        Value::Double(v) => Ok(quote_literal(&v.to_string())),
        Value::DateTime { .. } | Value::Time { .. } | Value::Unchanged => Err(SourceError::Unsupported(format!(
            "{at}: a value of another engine's log cannot be written to PostgreSQL yet"
        ))),
    }
}

/// The condition that finds the row `before` describes: its identifying columns when the log
/// names them, else every column it carries. Compared as text when the whole row identifies it
/// (`REPLICA IDENTITY FULL`), since some types (json, point) have no equality.
fn locate(rows: &Rows, before: &[Value]) -> Result<String, SourceError> {
    let by_key = !rows.key.is_empty() && rows.key.len() < rows.names.len();
    let mut conditions = Vec::new();
    for (i, (name, value)) in rows.names.iter().zip(before).enumerate() {
        if *value == Value::Unchanged || (by_key && !rows.key.contains(&i)) {
            continue;
        }
        let column = if by_key {
            quote_ident(name)
        } else {
            format!("{}::text", quote_ident(name))
        };
        conditions.push(format!("{column} IS NOT DISTINCT FROM {}", literal(value, &rows.at)?));
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
