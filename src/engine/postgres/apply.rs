//! The PostgreSQL applier: the change stream applied to a target database, one target
//! transaction per source transaction (or per group of whole ones, for the replica's applier),
//! under `session_replication_role = replica` (the source's
//! triggers and foreign keys already did their work). Rows are found by the columns that
//! identify them; a value the change does not carry is never written.
//!
//! A transaction goes to the target as one batch of statements ending in its `COMMIT` (split
//! at 1 MiB), and several transactions' batches are in flight at once. Correctness does not
//! depend on their answers: a row change that finds no row raises an error in the server,
//! which rolls its transaction back, and each pipelined transaction first checks that the one
//! before it committed (the session's replication origin is at its end), so after a failure
//! nothing later commits.

use tokio_postgres::Client;

use super::{Pg, quote_ident, quote_literal, row_sql};
use crate::engine::SourceError;
use crate::engine::change::{Change, Commit, Rows, Statement, Truncate};

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

/// Batches sent and not yet answered, at most.
const IN_FLIGHT: usize = 32;

/// Raises `no_data_found` with the message unless the condition holds: how a statement fails
/// its transaction in the server, so no answer is needed before the `COMMIT` that follows.
const EXPECT_FUNCTION: &str = "CREATE FUNCTION pg_temp.cairn_expect(ok boolean, message text) RETURNS void
    LANGUAGE plpgsql AS $f$ BEGIN IF ok IS NOT TRUE THEN
      RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = message; END IF; END $f$";

/// A batch on its way, and where its first statement comes from.
type InFlight<'a> = (
    String,
    futures::future::BoxFuture<'a, Result<(), tokio_postgres::Error>>,
);

/// Prepared statements kept per session, at most (the shapes of row changes: table, columns
/// changed, NULLs in the key).
const PREPARED: usize = 4096;

/// Applies changes over one session of the target.
pub struct Applier<'a> {
    pg: &'a Pg,
    client: &'a Client,
    open: bool,
    applied: Applied,
    /// Statements not sent yet, each ended by `;` on its own line.
    batch: String,
    /// Where the first queued statement comes from, for errors.
    batch_at: String,
    in_flight: std::collections::VecDeque<InFlight<'a>>,
    /// The source position the previous transaction of this session recorded, which the next
    /// one checks before it changes anything.
    previous: Option<String>,
    /// Row-change statements prepared in this session, by their SQL.
    prepared: std::collections::HashMap<String, tokio_postgres::Statement>,
    /// Whole source transactions per target transaction, at most (1: each its own).
    group: u64,
    /// Source transactions applied in the open target transaction, and the last one's end,
    /// which the target transaction's commit records.
    grouped: u64,
    held: Option<HeldCommit>,
}

/// The end of a source transaction whose target transaction goes on with the next ones.
struct HeldCommit {
    at: String,
    record: String,
    /// The source's WAL position (PostgreSQL), or `None` for another engine's (the record alone
    /// keeps it).
    lsn: Option<String>,
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
        client
            .batch_execute(EXPECT_FUNCTION)
            .await
            .map_err(|e| pg.error("preparing the replay session (a temporary function)", e))?;
        Ok(Applier {
            pg,
            client,
            open: false,
            applied: Applied::default(),
            batch: String::new(),
            batch_at: String::new(),
            in_flight: std::collections::VecDeque::new(),
            previous: None,
            prepared: std::collections::HashMap::new(),
            group: 1,
            grouped: 0,
            held: None,
        })
    }

    /// Makes the next transaction check first that the session's replication origin is at
    /// `lsn` (what the target held when this applier started), as later ones check their
    /// predecessor: a transaction of an earlier session still committing is caught.
    pub fn expect_position(&mut self, lsn: String) {
        self.previous = Some(lsn);
    }

    /// Applies up to `most` whole source transactions in one target transaction (the replica's
    /// applier; a replay keeps one target transaction per source transaction). Their commit
    /// records the last one's position, so a crash loses or keeps them together; the caller ends
    /// a group early with [`Applier::end_group`].
    pub fn group_transactions(&mut self, most: u64) {
        self.group = most.max(1);
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
                    self.queue(&at, "BEGIN".into()).await?;
                    if let Some(previous) = &self.previous {
                        let check = format!(
                            "SELECT pg_temp.cairn_expect(pg_catalog.pg_replication_origin_session_progress(false) = \
                             {}::pg_lsn, {})",
                            quote_literal(previous),
                            quote_literal(&format!("{at}: the transaction before did not commit"))
                        );
                        self.queue(&at, check).await?;
                    }
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

    /// Runs `sql` in the open target transaction, in order with the changes around it (DDL a
    /// source statement translated into, and the bookkeeping that goes with it). Statements
    /// prepared before are forgotten: a prepared statement keeps the parameter types of when it
    /// was prepared, and DDL may have changed a column's type.
    ///
    /// # Errors
    /// The target's error while sending.
    pub async fn run_in_transaction(&mut self, at: &str, sql: String) -> Result<(), SourceError> {
        self.prepared.clear();
        self.queue(at, sql).await
    }

    /// Queues one statement. Sends the batch once it is large, so memory does not grow with
    /// the source's transaction.
    async fn queue(&mut self, at: &str, sql: String) -> Result<(), SourceError> {
        if self.batch.is_empty() {
            self.batch_at = at.to_string();
        }
        self.batch.push_str(&sql);
        // On a line of its own: a statement may end in a `--` comment.
        self.batch.push_str("\n;\n");
        if self.batch.len() >= BATCH_BYTES {
            self.send().await?;
        }
        Ok(())
    }

    /// Sends the queued statements without waiting for their answer, once fewer than
    /// `IN_FLIGHT` batches are unanswered.
    async fn send(&mut self) -> Result<(), SourceError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        while self.in_flight.len() >= IN_FLIGHT {
            self.receive_one().await?;
        }
        let batch = std::mem::take(&mut self.batch);
        let client = self.client;
        let at = std::mem::take(&mut self.batch_at);
        self.launch(
            at,
            Box::pin(async move { client.simple_query(&batch).await.map(|_| ()) }),
        );
        Ok(())
    }

    /// Sends one row change as a prepared statement (prepared on first use), after what is
    /// queued, without waiting for its answer.
    async fn execute(&mut self, at: &str, statement: row_sql::RowStatement) -> Result<(), SourceError> {
        self.send().await?;
        let prepared = match self.prepared.get(&statement.sql) {
            Some(prepared) => prepared.clone(),
            None => {
                let prepared = self
                    .client
                    .prepare(&statement.sql)
                    .await
                    .map_err(|e| self.pg.error(&format!("{at}: preparing a row change"), e))?;
                if self.prepared.len() >= PREPARED {
                    self.prepared.clear();
                }
                self.prepared.insert(statement.sql, prepared.clone());
                prepared
            }
        };
        while self.in_flight.len() >= IN_FLIGHT {
            self.receive_one().await?;
        }
        let client = self.client;
        let params = statement.params;
        self.launch(
            at.to_string(),
            Box::pin(async move { client.execute_raw(&prepared, params.iter()).await.map(|_| ()) }),
        );
        Ok(())
    }

    /// Starts a request: the first poll hands it to the connection; the answer is awaited later.
    fn launch(&mut self, at: String, mut answer: futures::future::BoxFuture<'a, Result<(), tokio_postgres::Error>>) {
        if let Some(done) = futures::FutureExt::now_or_never(answer.as_mut()) {
            answer = Box::pin(std::future::ready(done));
        }
        self.in_flight.push_back((at, answer));
    }

    /// Waits for the oldest batch's answer.
    async fn receive_one(&mut self) -> Result<(), SourceError> {
        let Some((at, answer)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match answer.await {
            Ok(_) => Ok(()),
            Err(e) => {
                // What the later batches answer does not matter: they failed on our check.
                self.in_flight.clear();
                match e.as_db_error() {
                    Some(db) if db.code() == &tokio_postgres::error::SqlState::NO_DATA_FOUND => {
                        Err(SourceError::Damaged(db.message().to_string()))
                    }
                    _ => Err(self.pg.error(&format!("{at}: applying the transaction"), e)),
                }
            }
        }
    }

    /// Waits until every batch sent was answered; the first failure is the error.
    ///
    /// # Errors
    /// A change that found no row, or the target's error.
    pub async fn finish(&mut self) -> Result<Applied, SourceError> {
        self.send().await?;
        while !self.in_flight.is_empty() {
            self.receive_one().await?;
        }
        Ok(self.applied)
    }

    /// Ends a source transaction: its target transaction commits, or goes on with the next
    /// source transaction while the group is not full.
    async fn commit(&mut self, commit: Commit, record: &str) -> Result<(), SourceError> {
        self.applied.transactions += 1;
        let lsn = match &commit.position {
            crate::repo::model::LogPosition::Postgres { lsn, .. } => Some(lsn.clone()),
            crate::repo::model::LogPosition::Mysql { .. } => None,
        };
        if self.group > 1 && self.open && !record.is_empty() {
            self.grouped += 1;
            self.held = Some(HeldCommit {
                at: commit.at,
                record: record.to_string(),
                lsn: lsn.clone(),
            });
            return match self.grouped < self.group {
                true => Ok(()),
                false => self.end_group().await,
            };
        }
        self.end_transaction(&commit.at, record, lsn).await
    }

    /// Commits the source transactions of an unfinished group; call between source
    /// transactions.
    ///
    /// # Errors
    /// The target's error while sending.
    pub async fn end_group(&mut self) -> Result<(), SourceError> {
        self.grouped = 0;
        match self.held.take() {
            Some(held) => self.end_transaction(&held.at, &held.record, held.lsn).await,
            None => Ok(()),
        }
    }

    /// Queues the position record and `COMMIT` and sends the transaction. Pipelined only when
    /// the position is recorded: then the next transaction can check that this one committed.
    async fn end_transaction(&mut self, at: &str, record: &str, lsn: Option<String>) -> Result<(), SourceError> {
        if !record.is_empty() {
            self.queue(at, record.to_string()).await?;
        }
        if self.open {
            self.queue(at, "COMMIT".into()).await?;
        }
        self.send().await?;
        self.previous = match (lsn, record.is_empty()) {
            (Some(lsn), false) => Some(lsn),
            _ => {
                self.finish().await?;
                None
            }
        };
        self.open = false;
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
            if let Some(statement) = row_sql::statement(&table, &rows, change)? {
                self.execute(&rows.at, statement).await?;
                self.applied.row_changes += 1;
            }
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
                self.finish().await?;
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
        self.queue(&statement.at, format!("SET LOCAL search_path TO {path}"))
            .await?;
        if let Some(role) = &role {
            self.queue(&statement.at, format!("SET LOCAL ROLE {role}")).await?;
        }
        self.queue(&statement.at, command).await?;
        if role.is_some() {
            self.queue(&statement.at, "RESET ROLE".into()).await?;
        }
        Ok(())
    }

    async fn truncate(&mut self, truncate: Truncate) -> Result<(), SourceError> {
        let sql = truncate_sql(&truncate);
        self.queue(&truncate.at, sql).await
    }
}

/// The `TRUNCATE` statement of a logged truncate.
pub(super) fn truncate_sql(truncate: &Truncate) -> String {
    let tables: Vec<String> = truncate
        .tables
        .iter()
        .map(|(schema, table)| format!("{}.{}", quote_ident(schema), quote_ident(table)))
        .collect();
    format!(
        "TRUNCATE {}{}{}",
        tables.join(", "),
        if truncate.restart_identity {
            " RESTART IDENTITY"
        } else {
            ""
        },
        if truncate.cascade { " CASCADE" } else { "" }
    )
}

/// A `search_path` as `current_setting('search_path')` gave it, with every schema quoted: the
/// text came from the source, and an unquoted element may hold anything but commas and spaces.
pub(super) fn search_path(recorded: &str) -> String {
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
