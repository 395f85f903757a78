//! The MySQL applier: the change stream applied to the target over one session. Whole source
//! transactions are applied in one target transaction that also records the position after the
//! last of them; their statements are queued and sent many at a time (`batch.rs`), the commit
//! with them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};

use super::PROGRESS_DATABASE;
use super::batch::{Batch, Check, Doing, Mark};
use super::render::{self, LONGEST_STATEMENT};
use super::values::{ColumnInfo, TableInfo, values};
use crate::engine::SourceError;
use crate::engine::change::{Change, Commit, Ending, RowChange, Rows};
use crate::engine::filter::Filters;
use crate::engine::mysql::{My, quote_ident, quote_literal};
use crate::progress::Progress;
use crate::repo::model::LogPosition;

/// Rows changed by one `INSERT` at most.
const INSERT_ROWS: usize = 100;
/// Queued statements are sent once they reach this size…
const SEND_BYTES: usize = 512 << 10;
/// …and the target transaction is committed at the first source transaction end after a send,
/// or after this many source transactions.
const MOST_TRANSACTIONS: u64 = 1000;
/// Session of the applying connection: row images carry bytes as stored and times in UTC.
pub(super) const ROW_SESSION: &str =
    "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO', SESSION time_zone = '+00:00', NAMES binary";

/// `information_schema.COLUMNS` as read: name, data type, column type, key, extra, generation.
type ColumnRow = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// Applies events to the target over one session.
pub(super) struct Applier<'a> {
    pub(super) my: &'a My,
    pub(super) conn: Conn,
    pub(super) source: String,
    /// The target databases, sorted and joined by commas: with the source, what a progress row
    /// belongs to.
    pub(super) targets: String,
    /// Source database → target database, for every database the full copy holds.
    pub(super) databases: &'a BTreeMap<String, String>,
    pub(super) filters: Filters,
    pub(super) tables: HashMap<(String, String), Arc<TableInfo>>,
    pub(super) statements: HashMap<(String, usize), String>,
    pub(super) foreign_key_checks: bool,
    /// A target transaction is open (its `BEGIN` sent or queued).
    pub(super) open: bool,
    /// Statements queued, not sent yet.
    batch: Batch,
    /// Source transactions applied in the open target transaction, not committed yet, and the
    /// end of the last of them, which its commit records.
    completed: u64,
    last: Option<Commit>,
    /// Where the source transaction being applied starts in the batch; `None` between source
    /// transactions.
    started: Option<Mark>,
    pub(super) transactions: u64,
    pub(super) row_changes: u64,
    /// A statement applied created a trigger, which is to be set aside.
    pub(super) trigger_created: bool,
    /// A selective restore's tables: only their changes apply.
    pub(super) only: Option<only::Only>,
}

impl<'a> Applier<'a> {
    /// An applier of `source`'s changes to `databases` over `conn`.
    pub(super) fn new(
        my: &'a My,
        conn: Conn,
        source: String,
        targets: String,
        databases: &'a BTreeMap<String, String>,
        filters: Filters,
    ) -> Self {
        Applier {
            my,
            conn,
            source,
            targets,
            databases,
            filters,
            tables: HashMap::new(),
            statements: HashMap::new(),
            foreign_key_checks: true,
            open: false,
            batch: Batch::default(),
            completed: 0,
            last: None,
            started: None,
            transactions: 0,
            row_changes: 0,
            trigger_created: false,
            only: None,
        }
    }
}

impl Applier<'_> {
    fn error(&self, doing: &str, e: mysql_async::Error) -> SourceError {
        self.my.error(doing, e)
    }

    /// Runs `sql` after every statement queued.
    pub(super) async fn exec(&mut self, doing: &str, sql: &str) -> Result<(), SourceError> {
        self.send().await?;
        let result = self.conn.query_drop(sql).await;
        result.map_err(|e| self.error(doing, e))
    }

    async fn table(&mut self, database: &str, table: &str) -> Result<Arc<TableInfo>, SourceError> {
        let key = (database.to_string(), table.to_string());
        if let Some(info) = self.tables.get(&key) {
            return Ok(info.clone());
        }
        let rows: Vec<ColumnRow> = self
            .conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COLUMN_KEY, EXTRA, GENERATION_EXPRESSION \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (database, table),
            )
            .await
            .map_err(|e| self.my.error(&format!("reading the columns of {database}.{table}"), e))?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut columns = Vec::new();
        let mut primary = Vec::new();
        for (i, (name, data_type, column_type, column_key, extra, expression)) in rows.into_iter().enumerate() {
            if column_key == b"PRI" {
                primary.push(i);
            }
            columns.push(ColumnInfo {
                name: text(&name),
                data_type: text(&data_type).to_ascii_lowercase(),
                unsigned: text(&column_type).to_ascii_lowercase().contains("unsigned"),
                generated: text(&extra).to_ascii_uppercase().contains("GENERATED")
                    || expression.is_some_and(|e| !e.is_empty()),
            });
        }
        let mut info = TableInfo {
            qualified: format!("{}.{}", quote_ident(database), quote_ident(table)),
            quoted: columns.iter().map(|c| quote_ident(&c.name)).collect(),
            columns,
            key: primary,
            insert_head: Vec::new(),
            printable: false,
        };
        info.insert_head = render::insert_head(&info);
        let info = Arc::new(info);
        self.tables.insert(key, info.clone());
        Ok(info)
    }

    /// The progress update recording `commit`, the last of `count` source transactions.
    fn record_sql(&self, commit: &Commit, count: u64) -> String {
        let (file, position, gtid) = position_parts(&commit.position);
        format!(
            "UPDATE {PROGRESS_DATABASE}.progress SET copy_id = {}, server_file = {}, position = {position}, gtid = {}, \
             transactions = transactions + {count} WHERE source = {} AND target_databases = {}",
            quote_literal(&commit.copy),
            quote_literal(file),
            quote_literal(gtid),
            quote_literal(&self.source),
            quote_literal(&self.targets)
        )
    }

    /// Queues the commit of the open target transaction, recording the last source transaction
    /// it holds. Only ever at the head of the batch: the server runs every statement of a batch
    /// even when one changed no row, so a `COMMIT` must follow statements already checked.
    fn queue_commit(&mut self) {
        debug_assert!(self.batch.is_empty());
        if let Some(last) = self.last.take() {
            let record = self.record_sql(&last, self.completed);
            self.batch
                .push(record.as_bytes(), Check::Plain("recording the replay position"));
        }
        self.batch.push(b"COMMIT", Check::Plain("committing"));
        self.completed = 0;
        self.open = false;
    }

    /// Sends the statements queued and checks each one's result.
    async fn send_queued(&mut self) -> Result<(), SourceError> {
        std::mem::take(&mut self.batch).send(self.my, &mut self.conn).await
    }

    /// Sends the statements queued, inside the open target transaction. A source transaction
    /// part way is first set apart from the whole ones before it, which are committed: its
    /// `ROLLBACK` must not undo them.
    async fn send(&mut self) -> Result<(), SourceError> {
        if let Some(mark) = self.started
            && self.completed > 0
        {
            let part = self.batch.split_off(mark);
            self.send_queued().await?;
            self.queue_commit();
            self.batch.push(b"BEGIN", Check::Plain("beginning a transaction"));
            self.open = true;
            self.batch.append(part);
        }
        if self.started.is_some() {
            self.started = Some(Mark::default());
        }
        self.send_queued().await
    }

    /// Whether source transactions were applied and not committed yet.
    pub(super) fn unflushed(&self) -> bool {
        self.started.is_none() && (self.completed > 0 || !self.batch.is_empty())
    }

    /// Commits the whole source transactions applied so far, between source transactions: their
    /// statements in one round trip, then — all of them checked — the commit in a second.
    pub(super) async fn flush(&mut self) -> Result<(), SourceError> {
        if self.started.is_some() {
            return Ok(());
        }
        self.send_queued().await?;
        if self.open && self.completed > 0 {
            self.queue_commit();
            self.send_queued().await?;
        }
        Ok(())
    }

    /// Commits everything applied, before a statement that must run on its own or at the end.
    pub(super) async fn close(&mut self) -> Result<(), SourceError> {
        self.send_queued().await?;
        if self.open {
            self.queue_commit();
            self.send_queued().await?;
        }
        Ok(())
    }

    /// Records the position after `commit` on its own.
    async fn record(&mut self, commit: &Commit) -> Result<(), SourceError> {
        self.send().await?;
        let (file, position, gtid) = position_parts(&commit.position);
        let result = self
            .conn
            .exec_drop(
                format!(
                    "UPDATE {PROGRESS_DATABASE}.progress SET copy_id = ?, server_file = ?, position = ?, gtid = ?, \
                     transactions = transactions + 1 WHERE source = ? AND target_databases = ?"
                ),
                (&commit.copy, file, position, gtid, &self.source, &self.targets),
            )
            .await;
        result.map_err(|e| self.error("recording the replay position", e))
    }

    /// Applies one change of the stream.
    pub(super) async fn apply(&mut self, change: Change, progress: &Progress) -> Result<(), SourceError> {
        match change {
            Change::Begin { .. } => {
                if !self.open {
                    self.batch.push(b"BEGIN", Check::Plain("beginning a transaction"));
                    self.open = true;
                }
                self.batch.end_insert();
                self.started = Some(self.batch.mark());
            }
            Change::Rows(rows) => self.apply_rows(rows).await?,
            Change::Truncate(truncate) => {
                // MySQL logs TRUNCATE as a statement; a stream from another engine is not
                // replayed into MySQL by this applier.
                return Err(SourceError::Unsupported(format!(
                    "{}: a TRUNCATE from another engine's log cannot be applied to MySQL",
                    truncate.at
                )));
            }
            Change::Statement(statement) => {
                if statement.standalone {
                    // DDL commits by itself: nothing of ours may be open when it runs.
                    self.close().await?;
                }
                self.statement(statement).await?;
            }
            Change::Commit(commit) => {
                let bytes = commit.bytes;
                match commit.ending {
                    Ending::Rollback => {
                        // The source undid the transaction's transactional part; so does the
                        // target (the whole source transactions before it were committed first).
                        self.exec(&format!("{}: rolling back", commit.at), "ROLLBACK").await?;
                        self.open = false;
                        self.started = None;
                        self.record(&commit).await?;
                    }
                    // A statement that committed by itself (DDL): its position is recorded right
                    // after.
                    _ if !self.open => {
                        self.started = None;
                        self.record(&commit).await?;
                    }
                    Ending::Commit | Ending::Standalone => {
                        self.started = None;
                        self.completed += 1;
                        self.last = Some(commit);
                        if self.batch.size() >= SEND_BYTES || self.completed >= MOST_TRANSACTIONS {
                            self.flush().await?;
                        }
                    }
                }
                self.transactions += 1;
                progress.done(bytes);
            }
        }
        Ok(())
    }

    async fn apply_rows(&mut self, rows: Rows) -> Result<(), SourceError> {
        let Rows {
            at,
            database: source_db,
            table,
            columns,
            foreign_key_checks,
            changes,
            ..
        } = rows;
        let Some((target_db, table)) =
            only::rows_target(self.databases, &self.filters, self.only.as_ref(), &source_db, &table)
        else {
            return Ok(());
        };
        let at: Arc<str> = Arc::from(at);
        // A selective replay checks no keys: a live table's key to a restored one would cascade
        // into the live rows, and a restored table's key would judge old rows by today's.
        let foreign_key_checks = foreign_key_checks && self.only.is_none();
        if foreign_key_checks != self.foreign_key_checks {
            self.foreign_key_checks = foreign_key_checks;
            let value = u8::from(self.foreign_key_checks);
            let set = format!("SET SESSION foreign_key_checks = {value}");
            self.batch
                .push(set.as_bytes(), Check::Plain("setting foreign_key_checks"));
        }
        let info = self.table(&target_db, &table).await?;
        if info.columns.len() as u64 != columns {
            return Err(SourceError::Damaged(format!(
                "{at}: {} has {} columns on the target but {columns} in the binary log; the target's schema differs \
                 from the source's",
                info.qualified,
                info.columns.len(),
            )));
        }
        let most = INSERT_ROWS.min(60_000 / info.columns.len().max(1)).max(1) as u64;
        let check = |doing| Check::Rows {
            at: at.clone(),
            table: info.clone(),
            doing,
            rows: 1,
        };
        let mut text = Vec::new();
        for change in changes {
            self.row_changes += 1;
            text.clear();
            // A change is queued as text; one too long for that (or with a value that has no
            // literal) runs on its own as a prepared statement.
            match change {
                RowChange::Insert { after } => {
                    let row = values(after, &info, &at)?;
                    if render::insert_row(&mut text, &info, &row) && text.len() < LONGEST_STATEMENT {
                        self.batch.insert_row(&info.insert_head, &text, &at, &info, most);
                    } else {
                        self.batch.end_insert();
                        self.send().await?;
                        self.insert(&info, vec![row], &at).await?;
                    }
                }
                RowChange::Update { before, after } => {
                    let (before, after) = (values(before, &info, &at)?, values(after, &info, &at)?);
                    if render::update(&mut text, &info, &before, &after) && text.len() < LONGEST_STATEMENT {
                        self.batch.push(&text, check(Doing::Update));
                    } else {
                        self.send().await?;
                        self.update(&info, before, after, &at).await?;
                    }
                }
                RowChange::Delete { before } => {
                    let before = values(before, &info, &at)?;
                    if render::delete(&mut text, &info, &before) && text.len() < LONGEST_STATEMENT {
                        self.batch.push(&text, check(Doing::Delete));
                    } else {
                        self.send().await?;
                        self.delete(&info, before, &at).await?;
                    }
                }
            }
            if self.batch.size() >= SEND_BYTES {
                self.send().await?;
            }
        }
        Ok(())
    }

    async fn insert(&mut self, info: &TableInfo, rows: Vec<Vec<Value>>, at: &str) -> Result<(), SourceError> {
        let count = rows.len();
        let key = (info.qualified.clone(), count);
        if !self.statements.contains_key(&key) {
            let names: Vec<String> = info
                .columns
                .iter()
                .filter(|c| !c.generated)
                .map(|c| quote_ident(&c.name))
                .collect();
            let one = format!("({})", vec!["?"; names.len()].join(", "));
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {}",
                info.qualified,
                names.join(", "),
                vec![one; count].join(", ")
            );
            self.statements.insert(key.clone(), sql);
        }
        let params: Vec<Value> = rows
            .into_iter()
            .flat_map(|row| {
                row.into_iter()
                    .zip(&info.columns)
                    .filter(|(_, c)| !c.generated)
                    .map(|(v, _)| v)
            })
            .collect();
        let sql = &self.statements[&key];
        let result = self.conn.exec_drop(sql.as_str(), Params::Positional(params)).await;
        result.map_err(|e| self.error(&format!("{at}: inserting into {}", info.qualified), e))?;
        let affected = self.conn.affected_rows();
        if affected != count as u64 {
            return Err(SourceError::Damaged(format!(
                "{at}: inserting {count} rows into {} changed {affected}",
                info.qualified
            )));
        }
        Ok(())
    }

    /// `WHERE` clause finding a row by its key, or by its whole image, and its parameters.
    fn locate(info: &TableInfo, before: Vec<Value>) -> (String, Vec<Value>) {
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        for (i, (value, column)) in before.into_iter().zip(&info.columns).enumerate() {
            let used = if info.key.is_empty() {
                !column.generated
            } else {
                info.key.contains(&i)
            };
            if used {
                conditions.push(format!("{} <=> ?", quote_ident(&column.name)));
                params.push(value);
            }
        }
        (format!("{} LIMIT 1", conditions.join(" AND ")), params)
    }

    async fn update(
        &mut self,
        info: &TableInfo,
        before: Vec<Value>,
        after: Vec<Value>,
        at: &str,
    ) -> Result<(), SourceError> {
        let mut sets = Vec::new();
        let mut params = Vec::new();
        for (value, column) in after.into_iter().zip(&info.columns) {
            if !column.generated {
                sets.push(format!("{} = ?", quote_ident(&column.name)));
                params.push(value);
            }
        }
        let (condition, keys) = Self::locate(info, before);
        params.extend(keys);
        let sql = format!("UPDATE {} SET {} WHERE {condition}", info.qualified, sets.join(", "));
        self.changed_one(&sql, params, info, "updating", at).await
    }

    async fn delete(&mut self, info: &TableInfo, before: Vec<Value>, at: &str) -> Result<(), SourceError> {
        let (condition, params) = Self::locate(info, before);
        let sql = format!("DELETE FROM {} WHERE {condition}", info.qualified);
        self.changed_one(&sql, params, info, "deleting from", at).await
    }

    async fn changed_one(
        &mut self,
        sql: &str,
        params: Vec<Value>,
        info: &TableInfo,
        doing: &str,
        at: &str,
    ) -> Result<(), SourceError> {
        let result = self.conn.exec_drop(sql, Params::Positional(params)).await;
        result.map_err(|e| self.error(&format!("{at}: {doing} {}", info.qualified), e))?;
        if self.conn.affected_rows() != 1 {
            return Err(SourceError::Damaged(format!(
                "{at}: {doing} {} found no matching row: the target differs from the source at this point (was it \
                 changed after the restore?)",
                info.qualified
            )));
        }
        Ok(())
    }
}

/// File, position and GTID state of a MySQL position (empty for another engine's, which a MySQL
/// change stream never holds).
fn position_parts(position: &LogPosition) -> (&str, u64, &str) {
    match position {
        LogPosition::Mysql { file, position, gtid } => (file, *position, gtid.as_deref().unwrap_or_default()),
        LogPosition::Postgres { .. } => ("", 0, ""),
    }
}

pub(super) mod only;
pub(super) mod statement;
