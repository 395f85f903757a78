//! Replay of incremental copies: the stored binary logs applied to a restored database as SQL,
//! transaction by transaction, up to a chosen point, with the applied position recorded in the
//! target in the same transaction as the data (docs/mysql.md, "Replay").
//!
//! Before anything is applied, every file of every incremental is fetched, its MD5 and every
//! event's CRC32 checked, and the stop point located; a damaged file or an unknown stop point
//! fails the replay with the target untouched by it.

use super::attribution::{find_unquoted_qualifier, is_account_statement, statement_database};
use super::scope::{Skip, Tiling};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use mysql_async::binlog::BinlogVersion;
use mysql_async::binlog::events::{
    Event, EventData, FormatDescriptionEvent, QueryEvent, RowsEventData, StatusVarVal, TableMapEvent,
};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};
use tokio::io::AsyncWriteExt;

use super::binlog::{self, EventReader, Gtid, GtidState, RawEvent, Statement, Step, Transactions, kind};
use super::{My, quote_ident, quote_literal};
use crate::engine::filter::Filters;
use crate::engine::{RestoreInput, SourceError, Until};
use crate::progress::Progress;
use crate::repo::manifest::Manifest;
use crate::repo::reader::{StoredFile, files_of, open_verified};
use crate::repo::status::LogPosition;

/// The database holding replay progress and set-aside triggers on the target.
pub const PROGRESS_DATABASE: &str = "cairn_replay";
/// How often a long replay logs a progress line.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Rows changed by one `INSERT` at most.
const INSERT_ROWS: usize = 100;
/// Session of the applying connection: row images carry bytes as stored and times in UTC.
const ROW_SESSION: &str = "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO', SESSION time_zone = '+00:00', NAMES binary";

/// `information_schema.COLUMNS` as read: name, data type, column type, key, extra, generation.
type ColumnRow = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Option<Vec<u8>>);
/// `information_schema.TRIGGERS` as read: schema, name, table, action order.
type TriggerRow = (Vec<u8>, Vec<u8>, Vec<u8>, u64);
/// A trigger set aside: database, name, table, sql_mode, statement, client charset, collation.
type KeptTrigger = (String, String, String, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// One stored log file, fetched and checked.
#[derive(Debug)]
struct LocalLog {
    copy: String,
    server_file: String,
    path: PathBuf,
    stored_key: String,
    /// The server file's range the stored file covers, and what capture left out of it.
    start: u64,
    end: u64,
    skips: Vec<Skip>,
    mariadb: bool,
}

impl LocalLog {
    /// The check that the file's events and recorded skips cover its range exactly.
    fn tiling(&self) -> Tiling {
        Tiling::new(self.start, self.end, self.skips.clone(), self.mariadb)
    }

    fn damaged(&self, problem: String) -> SourceError {
        SourceError::Damaged(format!("copy {}: {}: {problem}", self.copy, self.stored_key))
    }
}

/// A transaction boundary in the chain: which file, and the server position after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Boundary {
    log: usize,
    /// Transactions of the chain up to and including this one.
    count: u64,
    server_file: String,
    position: u64,
    gtids: GtidState,
    copy: String,
}

/// How far the replay goes.
#[derive(Debug, Clone)]
enum Limit {
    /// No transaction of the incrementals: the point is before the first one.
    Nothing,
    /// Up to and including the transaction ending at this boundary.
    After(Boundary),
}

/// What the replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    pub transactions: u64,
    pub row_changes: u64,
    pub position: Option<LogPosition>,
}

/// A target table's columns, in order, as the apply needs them.
#[derive(Debug)]
struct TableInfo {
    qualified: String,
    columns: Vec<ColumnInfo>,
    /// Indexes of the primary key's columns; empty: rows are found by their whole image.
    key: Vec<usize>,
}

#[derive(Debug)]
struct ColumnInfo {
    name: String,
    data_type: String,
    unsigned: bool,
    generated: bool,
}

/// Where an event is, for errors.
fn place(log: &LocalLog, event: &RawEvent) -> String {
    format!(
        "copy {}, {} at {} ({})",
        log.copy,
        log.server_file,
        event.start(),
        log.stored_key
    )
}

/// Fetches every log file of the incrementals into `work`, checking MD5s, CRC32s and that each
/// copy starts where the one before it ended.
async fn fetch(input: &RestoreInput, work: &std::path::Path) -> Result<Vec<LocalLog>, SourceError> {
    let mut logs = Vec::new();
    for pair in input.manifests.windows(2) {
        let (before, after) = (&pair[0].copy, &pair[1].copy);
        if after.log_range.start != before.log_range.end {
            return Err(SourceError::Damaged(format!(
                "copy {} starts at {:?} but its parent {} ended at {:?}: the chain has a hole",
                after.id, after.log_range.start, before.id, before.log_range.end
            )));
        }
    }
    let total: usize = input.manifests[1..]
        .iter()
        .map(|m| {
            m.files
                .iter()
                .filter(|f| f.details.get("kind").and_then(|k| k.as_str()) == Some("binlog"))
                .count()
        })
        .sum();
    let progress = Progress::new(format!("{}: replay, fetching log files", input.source), total as u64);
    let _reporter = progress.report_every(PROGRESS_EVERY);
    for manifest in &input.manifests[1..] {
        let mut files: Vec<StoredFile> = files_of(&input.source, manifest)
            .into_iter()
            .filter(|f| f.detail("kind") == Some("binlog"))
            .collect();
        files.sort_by_key(|f| {
            f.file
                .details
                .get("sequence")
                .and_then(|s| s.as_u64())
                .unwrap_or(u64::MAX)
        });
        for stored in files {
            let path = work.join(format!("{:05}.binlog", logs.len()));
            let mut body = open_verified(&input.destination, &stored).await?;
            let mut out = tokio::fs::File::create(&path)
                .await
                .map_err(|e| SourceError::Damaged(format!("creating {}: {e}", path.display())))?;
            tokio::io::copy(&mut body, &mut out)
                .await
                .map_err(|e| match SourceError::from_read(e) {
                    SourceError::Damaged(e) => {
                        SourceError::Damaged(format!("copy {}: {}: {e}", manifest.copy.id, stored.key))
                    }
                    unreachable => unreachable,
                })?;
            out.flush()
                .await
                .map_err(|e| SourceError::Damaged(format!("writing {}: {e}", path.display())))?;
            progress.done(stored.file.size);
            let number = |name: &str| stored.file.details.get(name).and_then(|v| v.as_u64());
            let (Some(start), Some(end)) = (number("start"), number("end")) else {
                return Err(SourceError::Damaged(format!(
                    "copy {}: {}: the manifest records no start and end",
                    manifest.copy.id, stored.key
                )));
            };
            let skips = match stored.file.details.get("skipped") {
                Some(serde_json::Value::Array(skips)) => skips
                    .iter()
                    .map(Skip::from_json)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        SourceError::Damaged(format!(
                            "copy {}: {}: recorded skips: {e}",
                            manifest.copy.id, stored.key
                        ))
                    })?,
                _ => Vec::new(),
            };
            logs.push(LocalLog {
                copy: manifest.copy.id.clone(),
                server_file: stored.detail("server_file").unwrap_or_default().to_string(),
                path,
                stored_key: stored.key.clone(),
                start,
                end,
                skips,
                mariadb: manifest.copy.details.get("vendor").and_then(|v| v.as_str()) == Some("mariadb"),
            });
        }
    }
    Ok(logs)
}

async fn open_log(log: &LocalLog) -> Result<EventReader<tokio::io::BufReader<tokio::fs::File>>, SourceError> {
    let file = tokio::fs::File::open(&log.path)
        .await
        .map_err(|e| SourceError::Damaged(format!("opening {}: {e}", log.path.display())))?;
    EventReader::open(tokio::io::BufReader::with_capacity(1 << 20, file))
        .await
        .map_err(|e| SourceError::Damaged(format!("copy {}: {}: {e}", log.copy, log.stored_key)))
}

/// Reads every event once, checking it, and finds how far `until` lets the replay go.
async fn scan(
    logs: &[LocalLog],
    start_gtids: &GtidState,
    until: Option<&Until>,
    full_ended: &LogPosition,
) -> Result<(Limit, u64), SourceError> {
    let mut gtids = start_gtids.clone();
    let mut limit = Limit::Nothing;
    let mut decided = false;
    let mut transactions_total = 0u64;
    let mut found_gtid = false;
    let wanted_gtid = match until {
        Some(Until::Gtid(text)) => Some(Gtid::parse(text).map_err(SourceError::Unsupported)?),
        _ => None,
    };
    if let (
        Some(Until::Position { file, position }),
        LogPosition::Mysql {
            file: f, position: p, ..
        },
    ) = (until, full_ended)
        && (binlog::file_order(file), *position) < (binlog::file_order(f), *p)
    {
        return Err(SourceError::Unsupported(format!(
            "--until-position {file}:{position} is before the full copy's position {f}:{p}; restore an older copy \
             (--copy)"
        )));
    }
    for (index, log) in logs.iter().enumerate() {
        let mut reader = open_log(log).await?;
        let mut transactions = Transactions::default();
        let mut started_at = None::<u32>;
        let mut current_gtid = None::<Gtid>;
        let mut tiling = log.tiling();
        while let Some(event) = reader
            .next()
            .await
            .map_err(|e| SourceError::Damaged(format!("copy {}: {}: {e}", log.copy, log.stored_key)))?
        {
            if event.kind() == kind::FORMAT_DESCRIPTION {
                continue;
            }
            // Transactions of other databases that capture left out still move the position.
            if let Some(skip) = tiling.next(&event).map_err(|e| log.damaged(e))? {
                gtids.merge(&skip.gtids);
            }
            let checksums = reader.checksums();
            if !transactions.is_open() {
                started_at = Some(event.timestamp());
            }
            if let Some(gtid) = event.gtid(checksums) {
                current_gtid = Some(gtid);
            }
            if transactions.step(&event, checksums) != Step::Ends {
                continue;
            }
            transactions_total += 1;
            if let Some(gtid) = current_gtid.take() {
                gtids.add(&gtid);
                if let Some(wanted) = &wanted_gtid
                    && wanted.same(&gtid)
                {
                    found_gtid = true;
                }
            }
            let boundary = Boundary {
                log: index,
                count: transactions_total,
                server_file: log.server_file.clone(),
                position: event.log_pos(),
                gtids: gtids.clone(),
                copy: log.copy.clone(),
            };
            if decided {
                continue;
            }
            let take = match until {
                None => true,
                Some(Until::Time(time)) => i64::from(started_at.unwrap_or(0)) <= time.timestamp(),
                Some(Until::Gtid(_)) => true,
                Some(Until::Position { file, position }) => {
                    (binlog::file_order(&log.server_file), event.log_pos()) <= (binlog::file_order(file), *position)
                }
            };
            if take {
                limit = Limit::After(boundary);
                decided = found_gtid;
            } else {
                decided = true;
            }
        }
        if transactions.is_open() {
            return Err(SourceError::Damaged(format!(
                "copy {}: {} ends inside a transaction",
                log.copy, log.stored_key
            )));
        }
        if let Some(skip) = tiling.finish().map_err(|e| log.damaged(e))? {
            gtids.merge(&skip.gtids);
        }
    }
    if let Some(wanted) = &wanted_gtid
        && !found_gtid
    {
        return Err(SourceError::Unsupported(format!(
            "--until-gtid {wanted}: no transaction of the chain has this GTID (the chain's incrementals end at GTID \
             position {gtids}); nothing was applied"
        )));
    }
    Ok((limit, transactions_total))
}

/// Applies events to the target over one session.
struct Applier<'a> {
    my: &'a My,
    conn: Conn,
    source: String,
    /// The target databases, sorted and joined by commas: with the source, what a progress row
    /// belongs to.
    targets: String,
    /// Source database → target database, for every database the full copy holds.
    databases: &'a BTreeMap<String, String>,
    filters: Filters,
    tables: HashMap<(String, String), Arc<TableInfo>>,
    statements: HashMap<(String, usize), String>,
    foreign_key_checks: bool,
    /// A target transaction is open (started ahead of the next source transaction).
    open: bool,
    gtids: GtidState,
    transactions: u64,
    row_changes: u64,
}

impl Applier<'_> {
    fn error(&self, doing: &str, e: mysql_async::Error) -> SourceError {
        self.my.error(doing, e)
    }

    async fn exec(&mut self, doing: &str, sql: &str) -> Result<(), SourceError> {
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
        let info = Arc::new(TableInfo {
            qualified: format!("{}.{}", quote_ident(database), quote_ident(table)),
            columns,
            key: primary,
        });
        self.tables.insert(key, info.clone());
        Ok(info)
    }

    /// Records the position after a transaction, inside it when one is open.
    /// The progress update of `boundary` as SQL text with literals.
    fn record_sql(&self, boundary: &Boundary) -> String {
        format!(
            "UPDATE {PROGRESS_DATABASE}.progress SET copy_id = {}, server_file = {}, position = {}, gtid = {}, \
             transactions = transactions + 1 WHERE source = {} AND target_databases = {}",
            quote_literal(&boundary.copy),
            quote_literal(&boundary.server_file),
            boundary.position,
            quote_literal(&boundary.gtids.to_string()),
            quote_literal(&self.source),
            quote_literal(&self.targets)
        )
    }

    /// Records `boundary` inside the open transaction, commits it and opens the next one, in one
    /// round trip.
    async fn commit(&mut self, boundary: &Boundary, at: &str) -> Result<(), SourceError> {
        let sql = format!("{}; COMMIT; BEGIN", self.record_sql(boundary));
        self.exec(&format!("{at}: committing"), &sql).await?;
        self.open = true;
        Ok(())
    }

    /// Commits the open (empty) transaction before a statement that must run on its own.
    async fn close(&mut self, at: &str) -> Result<(), SourceError> {
        if self.open {
            self.exec(&format!("{at}: committing"), "COMMIT").await?;
            self.open = false;
        }
        Ok(())
    }

    async fn record(&mut self, boundary: &Boundary) -> Result<(), SourceError> {
        let result = self
            .conn
            .exec_drop(
                format!(
                    "UPDATE {PROGRESS_DATABASE}.progress SET copy_id = ?, server_file = ?, position = ?, gtid = ?, \
                     transactions = transactions + 1 WHERE source = ? AND target_databases = ?"
                ),
                (
                    &boundary.copy,
                    &boundary.server_file,
                    boundary.position,
                    boundary.gtids.to_string(),
                    &self.source,
                    &self.targets,
                ),
            )
            .await;
        result.map_err(|e| self.error("recording the replay position", e))
    }

    async fn apply_rows(
        &mut self,
        event: &Event,
        table_maps: &HashMap<u64, TableMapEvent<'static>>,
        at: &str,
    ) -> Result<(), SourceError> {
        let data = match event.read_data() {
            Ok(Some(EventData::RowsEvent(data))) => data,
            Ok(_) => return Ok(()),
            Err(e) => return Err(SourceError::Damaged(format!("{at}: a row event does not decode: {e}"))),
        };
        let Some(map) = table_maps.get(&data.table_id()) else {
            return Err(SourceError::Damaged(format!(
                "{at}: a row event for table id {} comes without its table map",
                data.table_id()
            )));
        };
        let source_db = map.database_name().into_owned();
        let table = map.table_name().into_owned();
        let Some(target_db) = self.databases.get(&source_db).cloned() else {
            return Ok(());
        };
        if !self.filters.data_included(&source_db, &table) {
            return Ok(());
        }
        let no_fk_checks = data
            .flags()
            .contains(mysql_async::binlog::RowsEventFlags::NO_FOREIGN_KEY_CHECKS);
        if no_fk_checks == self.foreign_key_checks {
            self.foreign_key_checks = !no_fk_checks;
            let value = u8::from(self.foreign_key_checks);
            self.exec(
                "setting foreign_key_checks",
                &format!("SET SESSION foreign_key_checks = {value}"),
            )
            .await?;
        }
        let info = self.table(&target_db, &table).await?;
        if info.columns.len() as u64 != map.columns_count() {
            return Err(SourceError::Damaged(format!(
                "{at}: {} has {} columns on the target but {} in the binary log; the target's schema differs from \
                 the source's",
                info.qualified,
                info.columns.len(),
                map.columns_count()
            )));
        }
        let is_insert = matches!(
            data,
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_)
        );
        let is_update = matches!(
            data,
            RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_)
        );
        let mut pending: Vec<Vec<Value>> = Vec::new();
        for row in data.rows(map) {
            let (before, after) = row.map_err(|e| SourceError::Damaged(format!("{at}: a row does not decode: {e}")))?;
            let before = before.map(|r| values(r, &info, at)).transpose()?;
            let after = after.map(|r| values(r, &info, at)).transpose()?;
            self.row_changes += 1;
            if is_insert {
                let Some(after) = after else { continue };
                pending.push(after);
                if pending.len() == INSERT_ROWS.min(60_000 / info.columns.len().max(1)).max(1) {
                    self.insert(&info, std::mem::take(&mut pending), at).await?;
                }
            } else if is_update {
                let (Some(before), Some(after)) = (before, after) else {
                    return Err(SourceError::Damaged(format!("{at}: an update without both row images")));
                };
                self.update(&info, before, after, at).await?;
            } else if let Some(before) = before {
                self.delete(&info, before, at).await?;
            }
        }
        if !pending.is_empty() {
            self.insert(&info, pending, at).await?;
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

    /// Runs a statement the source logged as text (DDL), under the session it ran in.
    async fn statement(&mut self, event: &Event, raw: &RawEvent, checksums: bool, at: &str) -> Result<(), SourceError> {
        let Some((schema, text)) = raw.query(checksums) else {
            return Ok(());
        };
        let Ok(text) = std::str::from_utf8(text) else {
            return Err(SourceError::Unsupported(format!(
                "{at}: a statement in the binary log is not UTF-8 text; cairn cannot replay it"
            )));
        };
        let Some(source_db) = statement_database(text, &schema, self.databases.keys()) else {
            tracing::debug!("{at}: skipped (it touches no restored database): {text}");
            return Ok(());
        };
        let target_db = self.databases[&source_db].clone();
        if is_account_statement(text) {
            tracing::info!("{at}: skipped an account or server statement: {}", first_words(text));
            return Ok(());
        }
        if let Some((database, table)) = statement_table(text)
            && !self
                .filters
                .table_included(database.as_deref().unwrap_or(&source_db), &table)
        {
            tracing::info!(
                "{at}: skipped (table {table} is left out by the copy's filters): {}",
                first_words(text)
            );
            return Ok(());
        }
        if let Some((database, name)) = dropped_trigger(text, &schema) {
            let target = self.databases.get(&database).cloned().unwrap_or(database);
            self.conn
                .exec_drop(
                    format!(
                        "DELETE FROM {PROGRESS_DATABASE}.deferred_triggers WHERE source = ? AND target_databases = ? AND db = ? AND name = ?"
                    ),
                    (&self.source, &self.targets, &target, &name),
                )
                .await
                .map_err(|e| self.my.error("forgetting a dropped trigger", e))?;
            return Ok(());
        }
        let mut session = vec![format!("USE {}", quote_ident(&target_db))];
        if let Ok(query) = event.read_event::<QueryEvent>() {
            for var in query.status_vars().iter() {
                match var.get_value() {
                    Ok(StatusVarVal::SqlMode(mode)) => session.push(format!("SET SESSION sql_mode = {}", mode.0)),
                    Ok(StatusVarVal::Charset {
                        charset_client,
                        collation_connection,
                        collation_server,
                    }) => session.push(format!(
                        "SET SESSION character_set_client = {charset_client}, SESSION collation_connection = \
                         {collation_connection}, SESSION collation_server = {collation_server}"
                    )),
                    Ok(StatusVarVal::TimeZone(zone)) if !zone.as_bytes().is_empty() => session.push(format!(
                        "SET SESSION time_zone = {}",
                        quote_literal(&String::from_utf8_lossy(zone.as_bytes()))
                    )),
                    _ => {}
                }
            }
        }
        for statement in session {
            self.exec(&format!("{at}: preparing the session for a statement"), &statement)
                .await?;
        }
        let text = rename_references(text, self.databases);
        let result = self.conn.query_drop(text.as_str()).await;
        result.map_err(|e| self.error(&format!("{at}: running {}", first_words(&text)), e))?;
        self.exec("restoring the row session", ROW_SESSION).await?;
        self.tables.clear();
        self.statements.clear();
        Ok(())
    }
}

fn first_words(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().take(6).collect();
    words.join(" ")
}

/// The table a table statement names first (`ALTER TABLE [db.]t`, `CREATE TABLE IF NOT EXISTS t`,
/// `DROP TABLE t`, `TRUNCATE t`, `RENAME TABLE t …`, `CREATE INDEX i ON t`), with its database
/// when it is qualified.
fn statement_table(text: &str) -> Option<(Option<String>, String)> {
    let tokens = sql_tokens(text, 24);
    let word = |i: usize| match tokens.get(i) {
        Some((false, t)) => t.to_ascii_uppercase(),
        _ => String::new(),
    };
    let skip = [
        "OR",
        "REPLACE",
        "ONLINE",
        "IGNORE",
        "TEMPORARY",
        "IF",
        "NOT",
        "EXISTS",
        "UNIQUE",
        "FULLTEXT",
        "SPATIAL",
    ];
    let skip_from = |mut i: usize| {
        while skip.contains(&word(i).as_str()) {
            i += 1;
        }
        i
    };
    let first = word(0);
    if !matches!(first.as_str(), "ALTER" | "CREATE" | "DROP" | "RENAME" | "TRUNCATE") {
        return None;
    }
    let i = skip_from(1);
    let name_at = match word(i).as_str() {
        "TABLE" => skip_from(i + 1),
        "INDEX" => (i..tokens.len()).find(|&j| word(j) == "ON")? + 1,
        _ if first == "TRUNCATE" => i,
        _ => return None,
    };
    let is_name = |i: usize| matches!(tokens.get(i), Some((quoted, t)) if *quoted || t.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$'));
    if !is_name(name_at) {
        return None;
    }
    let name = tokens[name_at].1.clone();
    if tokens.get(name_at + 1).is_some_and(|(quoted, t)| !quoted && t == ".") && is_name(name_at + 2) {
        return Some((Some(name), tokens[name_at + 2].1.clone()));
    }
    Some((None, name))
}

/// The first `limit` tokens of SQL text: (quoted, text) for `` `identifiers` `` (unquoted), bare
/// words, and single punctuation characters.
fn sql_tokens(text: &str, limit: usize) -> Vec<(bool, String)> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while tokens.len() < limit {
        let Some(c) = chars.next() else { break };
        if c.is_whitespace() {
            continue;
        }
        if c == '`' {
            let mut name = String::new();
            while let Some(c) = chars.next() {
                if c == '`' {
                    if chars.peek() == Some(&'`') {
                        chars.next();
                    } else {
                        break;
                    }
                }
                name.push(c);
            }
            tokens.push((true, name));
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let mut word = c.to_string();
            while let Some(&next) = chars.peek() {
                if next.is_alphanumeric() || next == '_' || next == '$' {
                    word.push(next);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push((false, word));
        } else {
            tokens.push((false, c.to_string()));
        }
    }
    tokens
}

/// `DROP TRIGGER [IF EXISTS] [db.]name`: the database and trigger it names.
fn dropped_trigger(text: &str, default_db: &str) -> Option<(String, String)> {
    let mut words = text.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("DROP") || !words.next()?.eq_ignore_ascii_case("TRIGGER") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("IF") {
        words.next()?;
        name = words.next()?;
    }
    let name = name.trim_end_matches(';');
    let unquote = |s: &str| s.trim_matches('`').replace("``", "`");
    match name.split_once("`.`").or_else(|| name.split_once('.')) {
        Some((db, trigger)) => Some((unquote(db), unquote(trigger))),
        None => Some((default_db.to_string(), unquote(name))),
    }
}

/// Rewrites references to renamed databases (`` `from`. ``, `from.`, and a database statement's
/// name).
fn rename_references(text: &str, databases: &BTreeMap<String, String>) -> String {
    let mut text = text.to_string();
    for (from, to) in databases.iter().filter(|(from, to)| from != to) {
        text = text.replace(&format!("{}.", quote_ident(from)), &format!("{}.", quote_ident(to)));
        while let Some(at) = find_unquoted_qualifier(&text, from) {
            text.replace_range(at..at + from.len() + 1, &format!("{}.", quote_ident(to)));
        }
    }
    text
}

/// A row image as statement parameters, each value in the form the target column takes.
fn values(row: BinlogRow, info: &TableInfo, at: &str) -> Result<Vec<Value>, SourceError> {
    if row.len() != info.columns.len() {
        return Err(SourceError::Unsupported(format!(
            "{at}: a row image of {} holds {} of {} columns; replay needs binlog_row_image = FULL",
            info.qualified,
            row.len(),
            info.columns.len()
        )));
    }
    row.unwrap()
        .into_iter()
        .zip(&info.columns)
        .map(|(value, column)| {
            convert(value, column).map_err(|e| SourceError::Unsupported(format!("{at}: {}: {e}", column.name)))
        })
        .collect()
}

/// Adjusts what the binary log decoding gives to what an `INSERT` of the column expects.
fn convert(value: BinlogValue<'static>, column: &ColumnInfo) -> Result<Value, String> {
    let value = match value {
        BinlogValue::Value(value) => value,
        BinlogValue::Jsonb(_) => return Value::try_from(value).map_err(|e| e.to_string()),
        BinlogValue::JsonDiff(_) => {
            return Err("partial JSON updates are not supported; set binlog_row_value_options = ''".into());
        }
    };
    if value == Value::NULL {
        return Ok(value);
    }
    Ok(match (column.data_type.as_str(), value) {
        // TIMESTAMP arrives as seconds since the epoch; the session is in UTC.
        ("timestamp", Value::Bytes(text)) => {
            let text = String::from_utf8_lossy(&text).into_owned();
            let (seconds, micros) = text.split_once('.').unwrap_or((&text, "0"));
            let seconds: i64 = seconds.parse().map_err(|_| format!("bad TIMESTAMP {text:?}"))?;
            let micros: u32 = micros.parse().map_err(|_| format!("bad TIMESTAMP {text:?}"))?;
            timestamp_text(seconds, micros)
        }
        ("timestamp", Value::Int(seconds)) => timestamp_text(seconds, 0),
        // YEAR arrives as 1900 + the stored byte, where 0 stands for the year 0000.
        ("year", Value::Bytes(text)) => {
            let year: i64 = String::from_utf8_lossy(&text)
                .parse()
                .map_err(|_| "bad YEAR".to_string())?;
            Value::Int(if year == 1900 { 0 } else { year })
        }
        // SET arrives as its bitmap, little-endian.
        ("set", Value::Bytes(bits)) => {
            let mut mask = 0u64;
            for (i, byte) in bits.iter().enumerate().take(8) {
                mask |= u64::from(*byte) << (8 * i);
            }
            Value::UInt(mask)
        }
        // A signed MEDIUMINT decodes without its sign extended.
        ("mediumint", Value::Int(v)) if !column.unsigned && v > 0x7f_ffff => Value::Int(v - 0x100_0000),
        // MariaDB's fixed-size binary types leave trailing zero bytes out of the log.
        ("uuid" | "inet6" | "inet4", Value::Bytes(mut bytes)) => {
            let size = if column.data_type == "inet4" { 4 } else { 16 };
            if bytes.len() < size {
                bytes.resize(size, 0);
            }
            Value::Bytes(bytes)
        }
        // Unsigned columns decode as signed when the log does not say they are unsigned.
        (kind, Value::Int(v)) if column.unsigned && v < 0 => {
            let bits = match kind {
                "tinyint" => 8,
                "smallint" => 16,
                "mediumint" => 24,
                "int" | "integer" => 32,
                _ => 64,
            };
            let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
            Value::UInt((v as u64) & mask)
        }
        (_, other) => other,
    })
}

fn timestamp_text(seconds: i64, micros: u32) -> Value {
    if seconds == 0 && micros == 0 {
        return Value::Bytes(b"0000-00-00 00:00:00".to_vec());
    }
    let text = chrono::DateTime::from_timestamp(seconds, micros * 1000)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        .unwrap_or_default();
    Value::Bytes(text.into_bytes())
}

/// Sets the target's triggers aside while rows are replayed (row events already hold what the
/// source's triggers did), keeping their definitions in the progress database.
async fn set_aside_triggers(applier: &mut Applier<'_>) -> Result<(), SourceError> {
    let targets: Vec<String> = applier.databases.values().cloned().collect();
    if targets.is_empty() {
        return Ok(());
    }
    let list = targets.iter().map(|d| quote_literal(d)).collect::<Vec<_>>().join(", ");
    let found: Vec<TriggerRow> = applier
        .conn
        .query(format!(
            "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_ORDER FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA IN ({list})"
        ))
        .await
        .map_err(|e| applier.my.error("listing the target's triggers", e))?;
    for (db, name, table, order) in found {
        let (db, name, table) = (
            String::from_utf8_lossy(&db).into_owned(),
            String::from_utf8_lossy(&name).into_owned(),
            String::from_utf8_lossy(&table).into_owned(),
        );
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let shown: Option<mysql_async::Row> = applier
            .conn
            .query_first(format!("SHOW CREATE TRIGGER {qualified}"))
            .await
            .map_err(|e| applier.my.error(&format!("reading trigger {qualified}"), e))?;
        let Some(shown) = shown else { continue };
        let sql_mode: Vec<u8> = shown.get(1).unwrap_or_default();
        let statement: Vec<u8> = shown.get(2).unwrap_or_default();
        let charset: Vec<u8> = shown.get(3).unwrap_or_default();
        let collation: Vec<u8> = shown.get(4).unwrap_or_default();
        applier
            .conn
            .exec_drop(
                format!(
                    "REPLACE INTO {PROGRESS_DATABASE}.deferred_triggers (source, target_databases, db, name, table_name, \
                     action_order, sql_mode, statement, character_set_client, collation_connection) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    &applier.source,
                    &applier.targets,
                    &db,
                    &name,
                    &table,
                    order,
                    sql_mode,
                    statement,
                    charset,
                    collation,
                ),
            )
            .await
            .map_err(|e| applier.my.error(&format!("keeping trigger {qualified} aside"), e))?;
        applier
            .exec(
                &format!("setting trigger {qualified} aside"),
                &format!("DROP TRIGGER {qualified}"),
            )
            .await?;
        tracing::debug!("trigger {qualified} set aside for the replay");
    }
    Ok(())
}

/// Creates the triggers set aside again, in their order; a trigger whose table the replay
/// dropped is reported and forgotten.
async fn restore_triggers(applier: &mut Applier<'_>) -> Result<(), SourceError> {
    let kept: Vec<KeptTrigger> = applier
        .conn
        .exec(
            format!(
                "SELECT db, name, table_name, sql_mode, statement, character_set_client, collation_connection \
                 FROM {PROGRESS_DATABASE}.deferred_triggers WHERE source = ? AND target_databases = ? ORDER BY db, table_name, action_order"
            ),
            (&applier.source, &applier.targets),
        )
        .await
        .map_err(|e| applier.my.error("reading the triggers set aside", e))?;
    for (db, name, table, sql_mode, statement, charset, collation) in kept {
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let exists: Option<u64> = applier
            .conn
            .exec_first(
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&db, &table),
            )
            .await
            .map_err(|e| applier.my.error("checking a trigger's table", e))?;
        if exists.is_some() {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            applier
                .exec(
                    &format!("recreating trigger {qualified}"),
                    &format!(
                        "USE {}; SET SESSION sql_mode = {}, SESSION character_set_client = {}, SESSION \
                         collation_connection = {}",
                        quote_ident(&db),
                        quote_literal(&text(&sql_mode)),
                        quote_literal(&text(&charset)),
                        quote_literal(&text(&collation))
                    ),
                )
                .await?;
            let statement = text(&statement);
            applier
                .exec(&format!("recreating trigger {qualified}"), &statement)
                .await?;
        } else {
            tracing::warn!("trigger {qualified} was not recreated: the replay dropped its table {table}");
        }
        applier
            .conn
            .exec_drop(
                format!("DELETE FROM {PROGRESS_DATABASE}.deferred_triggers WHERE source = ? AND target_databases = ? AND db = ? AND name = ?"),
                (&applier.source, &applier.targets, &db, &name),
            )
            .await
            .map_err(|e| applier.my.error("forgetting a recreated trigger", e))?;
    }
    applier.exec("restoring the row session", ROW_SESSION).await
}

/// Ends the session of an interrupted replay before its position is read: a client that died
/// may have left its last COMMIT in the server's socket buffer, and the server would still run it
/// after the position was read, so that transaction would be applied twice.
async fn settle_earlier_replay(applier: &mut Applier<'_>) -> Result<(), SourceError> {
    let earlier: Option<u64> = applier
        .conn
        .exec_first(
            format!("SELECT connection_id FROM {PROGRESS_DATABASE}.progress WHERE source = ? AND target_databases = ?"),
            (&applier.source, &applier.targets),
        )
        .await
        .map_err(|e| applier.my.error("reading the replay progress", e))?;
    let Some(id) = earlier.filter(|id| *id != 0) else {
        return Ok(());
    };
    for attempt in 0..300 {
        let alive: Option<u64> = applier
            .conn
            .exec_first("SELECT ID FROM information_schema.PROCESSLIST WHERE ID = ?", (id,))
            .await
            .map_err(|e| applier.my.error("looking for the interrupted replay's session", e))?;
        if alive.is_none() {
            return Ok(());
        }
        if attempt == 0 {
            tracing::warn!("--resume: the interrupted replay's session {id} is still on the server; ending it");
            if let Err(e) = applier.conn.query_drop(format!("KILL {id}")).await {
                tracing::warn!("--resume: ending session {id}: {e}");
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(SourceError::Locked {
        database: applier.my.name.clone(),
        doing: "resuming the replay".into(),
        detail: format!("session {id} of the interrupted replay is still running after 30 s"),
    })
}

/// Creates the progress database and tables when missing.
async fn prepare_progress(applier: &mut Applier<'_>) -> Result<(), SourceError> {
    for statement in [
        format!("CREATE DATABASE IF NOT EXISTS {PROGRESS_DATABASE} CHARACTER SET utf8mb4"),
        format!(
            "CREATE TABLE IF NOT EXISTS {PROGRESS_DATABASE}.progress (source VARCHAR(191) NOT NULL, target_databases VARCHAR(300) NOT NULL, \
             full_copy VARCHAR(64) NOT NULL, copy_id VARCHAR(64) NOT NULL, server_file VARCHAR(255) NOT NULL, \
             position BIGINT UNSIGNED NOT NULL, gtid TEXT, transactions BIGINT UNSIGNED NOT NULL DEFAULT 0, \
             connection_id BIGINT UNSIGNED NOT NULL DEFAULT 0, \
             updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
             PRIMARY KEY (source, target_databases)) \
             ENGINE=InnoDB"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {PROGRESS_DATABASE}.deferred_triggers (source VARCHAR(191) NOT NULL, target_databases VARCHAR(300) NOT NULL, \
             db VARCHAR(64) NOT NULL, name VARCHAR(64) NOT NULL, table_name VARCHAR(64) NOT NULL, \
             action_order BIGINT UNSIGNED NOT NULL, sql_mode TEXT, statement LONGBLOB NOT NULL, \
             character_set_client VARCHAR(64), collation_connection VARCHAR(64), PRIMARY KEY (source, target_databases, db, name)) \
             ENGINE=InnoDB"
        ),
    ] {
        applier.exec("preparing the replay progress table", &statement).await?;
    }
    Ok(())
}

/// What a replay of `input` would do: its files fetched and checked, and the exact stop point.
pub(super) async fn preview(input: &RestoreInput) -> Result<Vec<String>, SourceError> {
    let full = &input.manifests[0];
    let start_gtids = full_gtids(full)?;
    let work = work_folder()?;
    let logs = fetch(input, work.path()).await?;
    let (limit, in_chain) = scan(&logs, &start_gtids, input.until.as_ref(), &full.copy.log_range.end).await?;
    let mut lines = vec![format!(
        "checked: {} of {}, {} (MD5 and every event's CRC32)",
        crate::text::count(logs.len() as u64, "log file"),
        crate::text::count(input.manifests.len() as u64 - 1, "incremental"),
        crate::text::count(in_chain, "transaction")
    )];
    lines.push(match (&limit, &input.until) {
        (_, None) => format!("stop: at the end of the chain, after transaction {in_chain} of {in_chain}"),
        (Limit::Nothing, Some(until)) => {
            format!("stop: {until} comes before the first transaction; only the full copy would be restored")
        }
        (Limit::After(b), Some(until)) => format!(
            "stop: {until} is the transaction ending at {}:{} (copy {}), transaction {} of {in_chain}; GTID position \
             {}",
            b.server_file, b.position, b.copy, b.count, b.gtids
        ),
    });
    Ok(lines)
}

/// The GTID position the full copy of a chain recorded.
fn full_gtids(full: &Manifest) -> Result<GtidState, SourceError> {
    let LogPosition::Mysql { gtid, .. } = &full.copy.log_range.end else {
        return Err(SourceError::Unsupported(format!(
            "copy {} is not a MySQL copy",
            full.copy.id
        )));
    };
    GtidState::parse(gtid.as_deref().unwrap_or_default())
        .map_err(|e| SourceError::Damaged(format!("copy {}: recorded GTID position: {e}", full.copy.id)))
}

/// A folder for the chain's log files, removed when dropped.
fn work_folder() -> Result<tempfile::TempDir, SourceError> {
    tempfile::Builder::new()
        .prefix("cairn-replay-")
        .tempdir()
        .map_err(|e| SourceError::Damaged(format!("creating a work folder for the replay: {e}")))
}

/// The key of a replay's progress row: the target databases, sorted.
fn target_key(databases: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&str> = databases.values().map(String::as_str).collect();
    names.sort_unstable();
    names.join(",")
}

/// Checks, reading only, that the target holds a replay of this chain's full copy that
/// `--resume` can continue; says in one sentence what to do when it does not.
///
/// # Errors
/// [`SourceError::NothingToResume`], or a database error.
pub(super) async fn check_resumable(
    my: &My,
    input: &RestoreInput,
    databases: &BTreeMap<String, String>,
    target: &str,
) -> Result<(), SourceError> {
    let full = &input.manifests[0].copy.id;
    let mut conn = my.connect(Some("")).await?;
    let doing = "reading the replay progress";
    let has_table: Option<u8> = conn
        .exec_first(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'progress'",
            (PROGRESS_DATABASE,),
        )
        .await
        .map_err(|e| my.error(doing, e))?;
    let recorded: Option<String> = match has_table {
        Some(_) => conn
            .exec_first(
                format!("SELECT full_copy FROM {PROGRESS_DATABASE}.progress WHERE source = ? AND target_databases = ?"),
                (&input.source, target_key(databases)),
            )
            .await
            .map_err(|e| my.error(doing, e))?,
        None => None,
    };
    let detail = match recorded {
        Some(recorded) if &recorded == full => return Ok(()),
        Some(recorded) => format!(
            "it holds a replay of full copy {recorded}, not {full}; resume that chain (--copy), or restore again with \
             --clean"
        ),
        None => {
            let mut existing = 0usize;
            for database in databases.values() {
                let found: Option<u8> = conn
                    .exec_first(
                        "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                        (database,),
                    )
                    .await
                    .map_err(|e| my.error(doing, e))?;
                existing += usize::from(found.is_some());
            }
            if existing == 0 {
                "the target databases do not exist; restore without --resume".to_string()
            } else {
                format!(
                    "no replay of source {} was recorded there (the full restore did not finish); restore again with \
                     --clean",
                    input.source
                )
            }
        }
    };
    Err(SourceError::NothingToResume {
        target: target.to_string(),
        detail,
    })
}

/// The incrementals of a chain fetched into a work folder, every file checked (MD5, each
/// event's CRC32) and the stop point found: what a replay needs before it touches the target.
pub(super) struct Checked {
    _work: tempfile::TempDir,
    logs: Vec<LocalLog>,
    limit: Limit,
    in_chain: u64,
}

/// Fetches and checks the incrementals of `input` and finds where `until` stops, so a damaged
/// file or a point the chain does not hold fails before anything is restored.
///
/// # Errors
/// Damaged files, or an `until` the chain does not hold.
pub(super) async fn check(input: &RestoreInput) -> Result<Checked, SourceError> {
    let full: &Manifest = &input.manifests[0];
    let start_gtids = full_gtids(full)?;
    let work = work_folder()?;
    let logs = fetch(input, work.path()).await?;
    let (limit, in_chain) = scan(&logs, &start_gtids, input.until.as_ref(), &full.copy.log_range.end).await?;
    Ok(Checked {
        _work: work,
        logs,
        limit,
        in_chain,
    })
}

/// Replays the checked incrementals of `input` into the target, after its full copy was
/// restored (or, with `resume`, from where an earlier replay stopped).
pub(super) async fn replay(
    my: &My,
    input: &RestoreInput,
    databases: &BTreeMap<String, String>,
    checked: Checked,
) -> Result<Replayed, SourceError> {
    let full: &Manifest = &input.manifests[0];
    let last = input.manifests.last().expect("a chain has a full copy");
    let start_gtids = full_gtids(full)?;
    let Checked {
        logs, limit, in_chain, ..
    } = &checked;
    let (logs, limit, in_chain) = (logs, limit, *in_chain);
    let stop = match limit {
        Limit::Nothing => None,
        Limit::After(boundary) => Some(boundary.clone()),
    };
    tracing::info!(
        "replay: {} of {} checked, {}; applying {}",
        crate::text::count(logs.len() as u64, "log file"),
        crate::text::count(input.manifests.len() as u64 - 1, "incremental"),
        crate::text::count(in_chain, "transaction"),
        match (&input.until, &stop) {
            (None, _) => "all of them".to_string(),
            (Some(until), Some(b)) => format!("up to {until}: {}:{}", b.server_file, b.position),
            (Some(until), None) => format!("none of them ({until} is before the first)"),
        }
    );

    let filters: Filters = match full.copy.details.get("filters") {
        Some(recorded) => serde_json::from_value(recorded.clone()).map_err(|e| {
            SourceError::Damaged(format!("copy {}: the recorded filters do not parse: {e}", full.copy.id))
        })?,
        None => Filters::default(),
    };
    let targets = target_key(databases);
    let conn = my
        .connect_tuned(Some(""), |builder| builder.client_found_rows(true).stmt_cache_size(512))
        .await?;
    let mut applier = Applier {
        my,
        conn,
        source: input.source.clone(),
        targets: targets.clone(),
        databases,
        filters,
        tables: HashMap::new(),
        statements: HashMap::new(),
        foreign_key_checks: true,
        open: false,
        gtids: start_gtids.clone(),
        transactions: 0,
        row_changes: 0,
    };
    if input.no_binlog {
        applier
            .exec(
                "leaving the replay out of the binary log",
                "SET SESSION sql_log_bin = 0",
            )
            .await?;
    }
    prepare_progress(&mut applier).await?;
    applier.exec("preparing the replay session", ROW_SESSION).await?;
    applier
        .exec("preparing the replay session", "SET SESSION foreign_key_checks = 1")
        .await?;

    // Where to start: after the full copy, or after what an interrupted replay committed.
    let mut skip_to: Option<(String, String, u64)> = None;
    if input.resume {
        settle_earlier_replay(&mut applier).await?;
        // A locking read: a replay that was killed while its last COMMIT was still running on
        // the server holds this row until that commit ends, and a plain read would see the
        // position before it and apply that transaction a second time.
        applier.exec("reading the replay progress", "BEGIN").await?;
        let row: Option<(String, String, String, u64, Option<String>)> = applier
            .conn
            .exec_first(
                format!(
                    "SELECT full_copy, copy_id, server_file, position, gtid FROM {PROGRESS_DATABASE}.progress \
                     WHERE source = ? AND target_databases = ? FOR UPDATE"
                ),
                (&input.source, &targets),
            )
            .await
            .map_err(|e| my.error("reading the replay progress", e))?;
        applier.exec("reading the replay progress", "COMMIT").await?;
        applier
            .conn
            .exec_drop(
                format!(
                    "UPDATE {PROGRESS_DATABASE}.progress SET connection_id = CONNECTION_ID() WHERE source = ? AND \
                     target_databases = ?"
                ),
                (&input.source, &targets),
            )
            .await
            .map_err(|e| my.error("recording the replay's session", e))?;
        let Some((full_copy, copy_id, server_file, position, gtid)) = row else {
            return Err(SourceError::Unsupported(format!(
                "--resume: the target has no replay progress for source {} ({PROGRESS_DATABASE}.progress): the replay \
                 never started (the full restore did not finish). Restore again with --clean instead of --resume",
                input.source
            )));
        };
        if full_copy != full.copy.id {
            return Err(SourceError::Unsupported(format!(
                "--resume: the target holds a replay of full copy {full_copy}, not {}; restore that chain, or \
                 restore again with --clean",
                full.copy.id
            )));
        }
        applier.gtids = GtidState::parse(gtid.as_deref().unwrap_or_default())
            .map_err(|e| SourceError::Damaged(format!("the replay progress's GTID position: {e}")))?;
        tracing::info!("--resume: the target has everything up to {server_file}:{position} (copy {copy_id})");
        if copy_id != full.copy.id {
            skip_to = Some((copy_id, server_file, position));
        }
    } else {
        let (file, position) = match &full.copy.log_range.end {
            LogPosition::Mysql { file, position, .. } => (file.clone(), *position),
            LogPosition::Postgres { .. } => unreachable!("checked above"),
        };
        applier
            .conn
            .exec_drop(
                format!(
                    "REPLACE INTO {PROGRESS_DATABASE}.progress (source, target_databases, full_copy, copy_id, server_file, \
                     position, gtid, transactions, connection_id) VALUES (?, ?, ?, ?, ?, ?, ?, 0, CONNECTION_ID())"
                ),
                (&input.source, &targets, &full.copy.id, &full.copy.id, file, position, start_gtids.to_string()),
            )
            .await
            .map_err(|e| my.error("recording the replay start", e))?;
        applier
            .exec(
                "clearing triggers set aside earlier",
                &format!(
                    "DELETE FROM {PROGRESS_DATABASE}.deferred_triggers WHERE source = {} AND target_databases = {}",
                    quote_literal(&input.source),
                    quote_literal(&targets)
                ),
            )
            .await?;
    }
    set_aside_triggers(&mut applier).await?;

    let finished = stop.is_none() && input.until.is_some();
    let to_apply = stop.as_ref().map_or(in_chain, |s| s.count);
    let progress = Progress::new(format!("{}: replay, transactions", input.source), to_apply);
    let _reporter = progress.report_every(PROGRESS_EVERY);
    let mut pending_bytes = 0u64;
    let mut skipping = skip_to.is_some();
    'logs: for (index, log) in logs.iter().enumerate() {
        if finished {
            break;
        }
        let mut reader = open_log(log).await?;
        let mut format = FormatDescriptionEvent::new(BinlogVersion::Version4);
        let mut table_maps: HashMap<u64, TableMapEvent<'static>> = HashMap::new();
        let mut transactions = Transactions::default();
        let mut current_gtid = None::<Gtid>;
        let mut tiling = log.tiling();
        while let Some(raw) = reader
            .next()
            .await
            .map_err(|e| SourceError::Damaged(format!("copy {}: {}: {e}", log.copy, log.stored_key)))?
        {
            let at = place(log, &raw);
            if raw.kind() != kind::FORMAT_DESCRIPTION
                && let Some(skip) = tiling.next(&raw).map_err(|e| log.damaged(e))?
                && !skipping
            {
                // Transactions of other databases, left out by capture, move the GTID state
                // as they did on the source (not while skipping what a resumed replay had
                // applied: the state read from the target already holds them).
                applier.gtids.merge(&skip.gtids);
            }
            let checksums = reader.checksums();
            pending_bytes += raw.bytes().len() as u64;
            let event = Event::read(&format, raw.bytes())
                .map_err(|e| SourceError::Damaged(format!("{at}: an event does not decode: {e}")))?;
            if raw.kind() == kind::FORMAT_DESCRIPTION {
                format = event
                    .read_event::<FormatDescriptionEvent>()
                    .map_err(|e| SourceError::Damaged(format!("{at}: the format description does not decode: {e}")))?
                    .into_owned()
                    .with_footer(event.footer());
                continue;
            }
            let inside_begin = transactions == Transactions::Open;
            let step = transactions.step(&raw, checksums);
            if skipping {
                if step == Step::Ends
                    && let Some((copy, file, position)) = &skip_to
                    && &log.copy == copy
                    && &log.server_file == file
                    && raw.log_pos() == *position
                {
                    skipping = false;
                }
                continue;
            }
            if let Some(gtid) = raw.gtid(checksums) {
                current_gtid = Some(gtid);
            }
            // A source transaction began (BEGIN, or MariaDB's GTID event that stands for it).
            if transactions == Transactions::Open && !inside_begin && !applier.open {
                applier.exec(&format!("{at}: BEGIN"), "BEGIN").await?;
                applier.open = true;
            }
            match raw.kind() {
                kind::TABLE_MAP => {
                    let map = event
                        .read_event::<TableMapEvent>()
                        .map_err(|e| SourceError::Damaged(format!("{at}: a table map does not decode: {e}")))?;
                    table_maps.insert(map.table_id(), map.into_owned());
                }
                kind::WRITE_ROWS
                | kind::UPDATE_ROWS
                | kind::DELETE_ROWS
                | kind::WRITE_ROWS_V1
                | kind::UPDATE_ROWS_V1
                | kind::DELETE_ROWS_V1 => {
                    applier.apply_rows(&event, &table_maps, &at).await?;
                }
                kind::MYSQL_PARTIAL_UPDATE_ROWS => {
                    return Err(SourceError::Unsupported(format!(
                        "{at}: partial JSON updates are not supported; set binlog_row_value_options = ''"
                    )));
                }
                kind::QUERY => {
                    let statement = raw.query(checksums).map(|(_, q)| binlog::statement_kind(q));
                    match statement {
                        Some(Statement::Begin) => {}
                        Some(Statement::Commit) if inside_begin => {}
                        _ if inside_begin => applier.statement(&event, &raw, checksums, &at).await?,
                        _ => {
                            // DDL commits by itself: nothing of ours may be open when it runs.
                            applier.close(&at).await?;
                            applier.statement(&event, &raw, checksums, &at).await?;
                        }
                    }
                }
                _ => {}
            }
            if step == Step::Ends {
                if let Some(gtid) = current_gtid.take() {
                    applier.gtids.add(&gtid);
                }
                let boundary = Boundary {
                    log: index,
                    count: 0,
                    server_file: log.server_file.clone(),
                    position: raw.log_pos(),
                    gtids: applier.gtids.clone(),
                    copy: log.copy.clone(),
                };
                let rollback = raw.kind() == kind::QUERY
                    && raw
                        .query(checksums)
                        .is_some_and(|(_, q)| String::from_utf8_lossy(q).trim().eq_ignore_ascii_case("ROLLBACK"));
                if rollback {
                    // The source undid the transaction's transactional part; so does the target.
                    applier.exec(&format!("{at}: rolling back"), "ROLLBACK").await?;
                    applier.open = false;
                    applier.record(&boundary).await?;
                } else if inside_begin {
                    applier.commit(&boundary, &at).await?;
                } else {
                    // A statement that committed by itself: its position is recorded right after.
                    applier.record(&boundary).await?;
                }
                applier.transactions += 1;
                progress.done(std::mem::take(&mut pending_bytes));
                if stop
                    .as_ref()
                    .is_some_and(|s| s.log == index && s.position == boundary.position)
                {
                    break 'logs;
                }
            }
        }
        if let Some(skip) = tiling.finish().map_err(|e| log.damaged(e))?
            && !skipping
        {
            applier.gtids.merge(&skip.gtids);
        }
    }
    applier.close("ending the replay").await?;
    if skipping && let Some((copy, file, position)) = &skip_to {
        return Err(SourceError::Damaged(format!(
            "--resume: the position the target recorded ({file}:{position} in copy {copy}) is not a transaction end \
             in this chain's files; restore again with --clean"
        )));
    }
    restore_triggers(&mut applier).await?;
    let position: Option<(String, u64, String)> = applier
        .conn
        .exec_first(
            format!("SELECT server_file, position, gtid FROM {PROGRESS_DATABASE}.progress WHERE source = ? AND target_databases = ?"),
            (&input.source, &targets),
        )
        .await
        .map_err(|e| my.error("reading the replay position", e))?;
    let applied_all = input.until.is_none();
    let position = match (applied_all, position) {
        // Everything was applied: the chain's end is exact, including events after the last
        // transaction (rotations).
        (true, _) => last.copy.log_range.end.clone(),
        (false, Some((file, position, gtid))) => LogPosition::Mysql {
            file,
            position,
            gtid: (!gtid.is_empty()).then_some(gtid),
        },
        (false, None) => full.copy.log_range.end.clone(),
    };
    if let LogPosition::Mysql {
        file,
        position: at,
        gtid,
    } = &position
    {
        applier
            .conn
            .exec_drop(
                format!(
                    "UPDATE {PROGRESS_DATABASE}.progress SET server_file = ?, position = ?, gtid = ? WHERE source = ? AND target_databases = ?"
                ),
                (file, at, gtid.clone().unwrap_or_default(), &input.source, &targets),
            )
            .await
            .map_err(|e| my.error("recording the replay's end", e))?;
    }
    let _ = applier.conn.disconnect().await;
    Ok(Replayed {
        transactions: applier.transactions,
        row_changes: applier.row_changes,
        position: Some(position),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(data_type: &str, unsigned: bool) -> ColumnInfo {
        ColumnInfo {
            name: "c".into(),
            data_type: data_type.into(),
            unsigned,
            generated: false,
        }
    }

    #[test]
    fn binlog_values_become_what_the_column_takes() {
        let v = |x: Value| BinlogValue::Value(x);
        assert_eq!(
            convert(v(Value::Int(-1)), &column("tinyint", true)).unwrap(),
            Value::UInt(255)
        );
        assert_eq!(
            convert(v(Value::Int(-1)), &column("bigint", true)).unwrap(),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            convert(v(Value::Int(-1)), &column("int", false)).unwrap(),
            Value::Int(-1)
        );
        assert_eq!(
            convert(v(Value::Bytes(b"1900".to_vec())), &column("year", false)).unwrap(),
            Value::Int(0)
        );
        assert_eq!(
            convert(v(Value::Bytes(vec![5, 1])), &column("set", false)).unwrap(),
            Value::UInt(261)
        );
        assert_eq!(
            convert(v(Value::Bytes(b"1.000001".to_vec())), &column("timestamp", false)).unwrap(),
            Value::Bytes(b"1970-01-01 00:00:01.000001".to_vec())
        );
        assert_eq!(
            convert(v(Value::Bytes(b"0".to_vec())), &column("timestamp", false)).unwrap(),
            Value::Bytes(b"0000-00-00 00:00:00".to_vec())
        );
    }

    #[test]
    fn dropped_triggers_are_named() {
        assert_eq!(
            dropped_trigger("DROP TRIGGER IF EXISTS `app`.`t1`", "x"),
            Some(("app".into(), "t1".into()))
        );
        assert_eq!(
            dropped_trigger("drop trigger t2", "app"),
            Some(("app".into(), "t2".into()))
        );
        assert_eq!(dropped_trigger("DROP TABLE t", "app"), None);
        let table = |text| statement_table(text);
        assert_eq!(
            table("ALTER TABLE app.t ADD c INT"),
            Some((Some("app".into()), "t".into()))
        );
        assert_eq!(
            table("CREATE TABLE IF NOT EXISTS `tmp x`(a INT)"),
            Some((None, "tmp x".into()))
        );
        assert_eq!(
            table("drop temporary table if exists t1, t2"),
            Some((None, "t1".into()))
        );
        assert_eq!(table("TRUNCATE t"), Some((None, "t".into())));
        assert_eq!(
            table("CREATE UNIQUE INDEX i ON `app`.`t` (a)"),
            Some((Some("app".into()), "t".into()))
        );
        assert_eq!(table("CREATE VIEW v AS SELECT 1"), None);
        assert_eq!(table("INSERT INTO t VALUES (1)"), None);
        assert!(is_account_statement("GRANT SELECT ON *.* TO x"));
        let databases = BTreeMap::from([("app".to_string(), "app_copy".to_string())]);
        assert_eq!(
            statement_database("CREATE TABLE app.t (a int)", "", databases.keys()).as_deref(),
            Some("app")
        );
        assert_eq!(
            statement_database("CREATE TABLE t (a int)", "app", databases.keys()).as_deref(),
            Some("app")
        );
        assert_eq!(
            statement_database("DROP DATABASE IF EXISTS `app`", "", databases.keys()).as_deref(),
            Some("app")
        );
        assert_eq!(
            statement_database("CREATE TABLE myapp.t (a int)", "", databases.keys()),
            None
        );
        assert_eq!(
            rename_references("ALTER TABLE app.t ADD c INT, ALGORITHM=INPLACE; -- `app`.x", &databases),
            "ALTER TABLE `app_copy`.t ADD c INT, ALGORITHM=INPLACE; -- `app_copy`.x"
        );
        assert!(!is_account_statement("CREATE TABLE grants (a int)"));
    }
}
