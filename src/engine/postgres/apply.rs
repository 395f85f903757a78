//! The PostgreSQL applier: the change stream applied to a target database, one target
//! transaction per source transaction, under `session_replication_role = replica` (the source's
//! triggers and foreign keys already did their work). Rows are found by the columns that
//! identify them; a value the change does not carry is never written. A transaction's
//! statements go to the target in batches (one round trip per batch of up to 1 MiB), and each
//! row change must have changed exactly one row before the transaction commits.

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

/// The settings values are turned into text under, on the source while its changes are decoded
/// and on the target while a row is found by that text: a time zone, date and interval styles
/// and float and bytea formats fixed, so the same value gives the same text on both servers.
pub const OUTPUT_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
                                   SET extra_float_digits = 1; SET bytea_output = 'hex'";

/// Statements queued beyond this many bytes are sent before more are queued.
const BATCH_BYTES: usize = 1 << 20;

/// Applies changes over one session of the target.
pub struct Applier<'a> {
    pg: &'a Pg,
    client: &'a Client,
    open: bool,
    applied: Applied,
    /// Statements not sent yet, each ended by `;`.
    batch: String,
    /// Per queued statement: for a row change, what it changes (it must change one row).
    checks: Vec<Option<String>>,
    /// Where the first queued statement comes from, for errors.
    batch_at: String,
}

impl<'a> Applier<'a> {
    /// Prepares the session: the source's triggers and foreign keys are not run again.
    ///
    /// # Errors
    /// The target's error (`session_replication_role` needs a superuser or the role's grant).
    pub async fn new(pg: &'a Pg, client: &'a Client) -> Result<Applier<'a>, SourceError> {
        client
            .batch_execute(&format!(
                "SET session_replication_role = replica; SET standard_conforming_strings = on; \
                 SET search_path = pg_catalog; {OUTPUT_SETTINGS}"
            ))
            .await
            .map_err(|e| pg.error("preparing the replay session (session_replication_role)", e))?;
        Ok(Applier {
            pg,
            client,
            open: false,
            applied: Applied::default(),
            batch: String::new(),
            checks: Vec::new(),
            batch_at: String::new(),
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
                    self.queue(&at, "BEGIN".into(), None).await?;
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

    /// Queues one statement; `check` names what a row change changes. Sends the batch once it
    /// is large, so memory does not grow with the source's transaction.
    async fn queue(&mut self, at: &str, sql: String, check: Option<String>) -> Result<(), SourceError> {
        if self.batch.is_empty() {
            self.batch_at = at.to_string();
        }
        self.batch.push_str(&sql);
        // On a line of its own: a statement may end in a `--` comment.
        self.batch.push_str("\n;\n");
        self.checks.push(check);
        if self.batch.len() >= BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the queued statements in one round trip and checks that each row change changed
    /// exactly one row.
    async fn flush(&mut self) -> Result<(), SourceError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let checks = std::mem::take(&mut self.checks);
        let messages = self.client.simple_query(&batch).await.map_err(|e| {
            self.pg
                .error(&format!("{}: applying the transaction", self.batch_at), e)
        })?;
        let counts = messages.iter().filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(rows) => Some(*rows),
            _ => None,
        });
        for (check, changed) in checks.iter().zip(counts) {
            if let Some(what) = check
                && changed != 1
            {
                return Err(SourceError::Damaged(format!(
                    "{what}: no row matches the change: the target differs from the source at this point (was it \
                     changed after the restore?)"
                )));
            }
        }
        Ok(())
    }

    /// Sends what is queued with the position record, checks it, then commits: a transaction
    /// in which a change found no row is never committed.
    async fn commit(&mut self, commit: Commit, record: &str) -> Result<(), SourceError> {
        if !record.is_empty() {
            self.queue(&commit.at, record.to_string(), None).await?;
        }
        self.flush().await?;
        if self.open {
            self.client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| self.pg.error(&format!("{}: committing", commit.at), e))?;
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
                    // The source's value, also for `GENERATED ALWAYS AS IDENTITY` columns.
                    format!(
                        "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES ({})",
                        names.join(", "),
                        values.join(", ")
                    )
                }
                RowChange::Update { before, after } => {
                    // Columns the change does not carry, or whose value it does not change, are
                    // left alone (an identity column `GENERATED ALWAYS` may not be set at all).
                    let sets = rows
                        .names
                        .iter()
                        .zip(after)
                        .zip(before)
                        .filter(|((_, value), old)| **value != Value::Unchanged && value != old)
                        .map(|((name, value), _)| Ok(format!("{} = {}", quote_ident(name), literal(value, &rows.at)?)))
                        .collect::<Result<Vec<_>, SourceError>>()?;
                    if sets.is_empty() {
                        continue;
                    }
                    format!(
                        "UPDATE ONLY {table} SET {} WHERE ctid = (SELECT ctid FROM ONLY {table} WHERE {} LIMIT 1)",
                        sets.join(", "),
                        locate(&rows, before)?
                    )
                }
                RowChange::Delete { before } => format!(
                    "DELETE FROM ONLY {table} WHERE ctid = (SELECT ctid FROM ONLY {table} WHERE {} LIMIT 1)",
                    locate(&rows, before)?
                ),
            };
            self.queue(&rows.at, sql, Some(format!("{}: {table}", rows.at))).await?;
            self.applied.row_changes += 1;
        }
        Ok(())
    }

    /// DDL the source recorded (`on-ddl = "capture"`), run in the transaction it came with,
    /// under the `search_path` it ran under (carried as the statement's database).
    async fn statement(&mut self, statement: Statement) -> Result<(), SourceError> {
        let command = super::ddl::replayable(&statement.text)
            .map_err(|why| SourceError::Unsupported(format!("{}: {why}", statement.at)))?;
        let path = search_path(&statement.database);
        // As the role that ran it, so what it creates is that role's, when the target has it.
        let role = match &statement.session.role {
            Some(role) => {
                self.flush().await?;
                let exists = self
                    .client
                    .query_opt("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[role])
                    .await
                    .map_err(|e| self.pg.error("looking up the role of a recorded DDL statement", e))?
                    .is_some();
                if !exists {
                    tracing::warn!(
                        "{}: role {role} does not exist on the target: the recorded DDL runs as the restoring role",
                        statement.at
                    );
                }
                exists.then(|| quote_ident(role))
            }
            None => None,
        };
        self.queue(&statement.at, format!("SET LOCAL search_path TO {path}"), None)
            .await?;
        if let Some(role) = &role {
            self.queue(&statement.at, format!("SET LOCAL ROLE {role}"), None)
                .await?;
        }
        self.queue(&statement.at, command, None).await?;
        if role.is_some() {
            self.queue(&statement.at, "RESET ROLE".into(), None).await?;
        }
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
        self.queue(&truncate.at, sql, None).await
    }
}

/// A `search_path` as `current_setting('search_path')` gave it, with every schema quoted: the
/// text came from the source, and an unquoted element may hold anything but commas and spaces.
fn search_path(recorded: &str) -> String {
    let mut schemas = Vec::new();
    let mut rest = recorded.trim();
    while !rest.is_empty() {
        let (schema, after) = match rest.strip_prefix('"') {
            Some(quoted) => {
                // A quoted name ends at a quote that is not doubled.
                let mut end = 0;
                let bytes = quoted.as_bytes();
                while end < bytes.len() && !(bytes[end] == b'"' && bytes.get(end + 1) != Some(&b'"')) {
                    end += if bytes[end] == b'"' { 2 } else { 1 };
                }
                (
                    quoted[..end.min(quoted.len())].replace("\"\"", "\""),
                    &quoted[(end + 1).min(quoted.len())..],
                )
            }
            None => match rest.split_once(',') {
                Some((schema, after)) => (schema.trim().to_string(), after),
                None => (rest.to_string(), ""),
            },
        };
        if !schema.is_empty() {
            schemas.push(quote_ident(&schema));
        }
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    match schemas.is_empty() {
        true => "''".into(),
        false => schemas.join(", "),
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
/// names them, else every column it carries. Compared as the output function's text when the
/// whole row identifies it (`REPLICA IDENTITY FULL`), since some types (json, point) have no
/// equality.
fn locate(rows: &Rows, before: &[Value]) -> Result<String, SourceError> {
    let by_key = !rows.key.is_empty() && rows.key.len() < rows.names.len();
    let mut conditions = Vec::new();
    for (i, (name, value)) in rows.names.iter().zip(before).enumerate() {
        if *value == Value::Unchanged || (by_key && !rows.key.contains(&i)) {
            continue;
        }
        let column = quote_ident(name);
        conditions.push(match (by_key, value) {
            (_, Value::Null) => format!("{column} IS NULL"),
            (true, value) => format!("{column} = {}", literal(value, &rows.at)?),
            // The text the type's output function gives, as the source's decoding did under
            // the same settings (OUTPUT_SETTINGS); a `::text` cast is not always that text
            // (booleans, inet, char(n)).
            (false, value) => format!("pg_catalog.format('%s', {column}) = {}", literal(value, &rows.at)?),
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

#[cfg(test)]
mod tests {
    use super::search_path;

    #[test]
    fn a_recorded_search_path_is_quoted_schema_by_schema() {
        assert_eq!(search_path("\"$user\", public"), "\"$user\", \"public\"");
        assert_eq!(
            search_path("public;DROP/**/TABLE/**/t;--"),
            "\"public;DROP/**/TABLE/**/t;--\""
        );
        assert_eq!(
            search_path("\"we\"\"ird, name\",other"),
            "\"we\"\"ird, name\", \"other\""
        );
        assert_eq!(search_path(""), "''");
        assert_eq!(search_path("\"\""), "''");
    }
}
