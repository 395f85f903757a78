//! Loading one data file of a MySQL copy into its table: `LOAD DATA LOCAL` fed from the
//! verified stream, or batched `INSERT`s when the server refuses it, retried when a lock gets in
//! the way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::io::AsyncReadExt;

use super::inventory::{Column, Transfer};
use super::load_sql::{INSERT_BATCH, hex_literal, load_columns};
use super::{MysqlTarget, format, quote_ident};
use crate::engine::SourceError;
use crate::repo::reader::{StoredFile, open_verified};
use crate::retry::Retry;
use crate::storage::Destination;

impl MysqlTarget {
    /// [`MysqlTarget::load_file`], again when it lost a deadlock or a lock wait: parallel bulk
    /// loads into one InnoDB table can deadlock, and the failed file's transaction was rolled
    /// back, so loading it again from its start is safe.
    pub(super) async fn load_file_retrying(
        &self,
        conn: &mut Conn,
        destination: &Arc<dyn Destination>,
        stored: &StoredFile,
        table: &str,
        columns: &[Column],
        by_insert: &AtomicBool,
    ) -> Result<u64, SourceError> {
        const ATTEMPTS: u32 = 5;
        let mut retry = Retry::exponential(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(2),
            ATTEMPTS as usize - 1,
        );
        loop {
            let error = match self
                .load_file(conn, destination, stored, table, columns, by_insert)
                .await
            {
                Err(error @ SourceError::Locked { .. }) if retry.failed() + 1 < ATTEMPTS => error,
                result => return result,
            };
            if let SourceError::Locked { detail, .. } = &error {
                tracing::warn!(
                    "loading {table} from {} (attempt {} of {ATTEMPTS}): {detail}; loading it again",
                    stored.key,
                    retry.failed() + 1
                );
            }
            if !retry.wait().await {
                return Err(error);
            }
        }
    }

    /// Loads one file in one transaction; returns the rows loaded.
    pub(super) async fn load_file(
        &self,
        conn: &mut Conn,
        destination: &Arc<dyn Destination>,
        stored: &StoredFile,
        table: &str,
        columns: &[Column],
        by_insert: &AtomicBool,
    ) -> Result<u64, SourceError> {
        let doing = format!("loading {table} from {}", stored.key);
        conn.query_drop("BEGIN").await.map_err(|e| self.my.error(&doing, e))?;
        if !by_insert.load(Ordering::Relaxed) {
            let reader = open_verified(destination, stored).await?;
            // The driver wants a Sync future; a Mutex makes the (Send-only) stream shareable.
            let stream = std::sync::Mutex::new(Some(tokio_util::io::ReaderStream::new(reader).boxed()));
            conn.set_infile_handler(async move {
                Ok(stream
                    .lock()
                    .expect("infile stream lock poisoned")
                    .take()
                    .unwrap_or_else(|| futures::stream::empty().boxed()))
            });
            let statement = format!(
                "LOAD DATA LOCAL INFILE 'cairn' INTO TABLE {table} CHARACTER SET binary \
                 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'{}",
                load_columns(columns)
            );
            match conn.query_drop(statement).await {
                Ok(()) => {
                    let rows = conn.affected_rows();
                    self.finish_file(conn, stored, &doing, rows).await?;
                    return Ok(rows);
                }
                // 1148/3948 (MySQL), 4166 (MariaDB): local_infile is off on the server; 2068: refused
                // on this side.
                Err(mysql_async::Error::Server(e)) if matches!(e.code, 1148 | 3948 | 4166 | 2068) => {
                    let _ = conn.query_drop("ROLLBACK").await;
                    if !by_insert.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            "{} refuses LOAD DATA LOCAL ({}); loading with batched INSERT statements instead",
                            self.my.name,
                            e.message
                        );
                    }
                    conn.query_drop("BEGIN").await.map_err(|e| self.my.error(&doing, e))?;
                }
                Err(e) => {
                    let _ = conn.query_drop("ROLLBACK").await;
                    // A damaged file surfaces as the driver's error; say which it was.
                    return Err(match e {
                        mysql_async::Error::Io(mysql_async::IoError::Io(io))
                            if crate::storage::carries_destination_error(&io) =>
                        {
                            SourceError::from_read(io)
                        }
                        other => match crate::repo::codec::damage_in(&other) {
                            Some(damage) => SourceError::Damaged(damage.to_string()),
                            None => self.my.error(&doing, other),
                        },
                    });
                }
            }
        }
        let rows = match self
            .insert_file(conn, destination, stored, table, columns, &doing)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                let _ = conn.query_drop("ROLLBACK").await;
                return Err(e);
            }
        };
        self.finish_file(conn, stored, &doing, rows).await?;
        Ok(rows)
    }

    pub(super) async fn finish_file(
        &self,
        conn: &mut Conn,
        stored: &StoredFile,
        doing: &str,
        rows: u64,
    ) -> Result<(), SourceError> {
        if let Some(expected) = stored.rows()
            && expected != rows
        {
            let _ = conn.query_drop("ROLLBACK").await;
            return Err(SourceError::Damaged(format!(
                "{doing}: loaded {rows} rows where the manifest records {expected}"
            )));
        }
        let warnings = conn.get_warnings();
        if warnings > 0 {
            let shown: Vec<(String, u32, String)> = conn.query("SHOW WARNINGS LIMIT 3").await.unwrap_or_default();
            tracing::warn!(
                "{doing}: the server reported {warnings} warnings, e.g. {}",
                shown
                    .iter()
                    .map(|(_, code, text)| format!("{code}: {text}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        conn.query_drop("COMMIT").await.map_err(|e| self.my.error(doing, e))
    }

    /// The fallback: parses the file and sends multi-row `INSERT`s of bounded size.
    pub(super) async fn insert_file(
        &self,
        conn: &mut Conn,
        destination: &Arc<dyn Destination>,
        stored: &StoredFile,
        table: &str,
        columns: &[Column],
        doing: &str,
    ) -> Result<u64, SourceError> {
        let mut inserts = Inserts::open(destination, stored, table, columns, doing).await?;
        let mut rows = 0u64;
        while let Some(statement) = inserts.next().await? {
            conn.query_drop(statement).await.map_err(|e| self.my.error(doing, e))?;
            rows += conn.affected_rows();
        }
        Ok(rows)
    }
}

/// A stored data file as multi-row `INSERT` statements of bounded size, read as they are needed
/// (the restore's fallback, and `restore --to-sql`).
pub(super) struct Inserts {
    reader: crate::storage::ObjectStream,
    prefix: String,
    columns: Vec<Column>,
    pending: Vec<u8>,
    buffer: Vec<u8>,
    ready: std::collections::VecDeque<String>,
    statement: String,
    doing: String,
    ended: bool,
    /// Rows read so far.
    pub rows: u64,
}

impl Inserts {
    /// Opens `stored` (checked as it streams) for `INSERT`s into `table` (quoted, qualified).
    ///
    /// # Errors
    /// The destination's error.
    pub(super) async fn open(
        destination: &Arc<dyn Destination>,
        stored: &StoredFile,
        table: &str,
        columns: &[Column],
        doing: &str,
    ) -> Result<Inserts, SourceError> {
        let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        Ok(Inserts {
            reader: open_verified(destination, stored).await?,
            prefix: format!("INSERT INTO {table} ({}) VALUES ", names.join(", ")),
            columns: columns.to_vec(),
            pending: Vec::new(),
            buffer: vec![0u8; 256 * 1024],
            ready: std::collections::VecDeque::new(),
            statement: String::new(),
            doing: doing.to_string(),
            ended: false,
            rows: 0,
        })
    }

    /// The next statement; `None` at the end of the file.
    ///
    /// # Errors
    /// A damaged file (its MD5 or size, or a row cut short).
    pub(super) async fn next(&mut self) -> Result<Option<String>, SourceError> {
        while self.ready.is_empty() && !self.ended {
            let n = self
                .reader
                .read(&mut self.buffer)
                .await
                .map_err(SourceError::from_read)?;
            self.pending.extend_from_slice(&self.buffer[..n]);
            let (parsed, used) = format::parse_rows(&self.pending);
            self.pending.drain(..used);
            for row in parsed {
                self.rows += 1;
                let values: Vec<String> = row
                    .iter()
                    .zip(&self.columns)
                    .map(|(value, column)| match (value, column.transfer) {
                        (None, _) => "NULL".to_string(),
                        (Some(bytes), Transfer::Bit) => format!("CAST({} AS UNSIGNED)", hex_literal(bytes)),
                        (Some(bytes), Transfer::Textual) => format!("CONVERT({} USING utf8mb4)", hex_literal(bytes)),
                        (Some(bytes), _) => hex_literal(bytes),
                    })
                    .collect();
                if self.statement.is_empty() {
                    self.statement.push_str(&self.prefix);
                } else {
                    self.statement.push(',');
                }
                self.statement.push_str(&format!("({})", values.join(",")));
                if self.statement.len() >= INSERT_BATCH {
                    self.ready.push_back(std::mem::take(&mut self.statement));
                }
            }
            if n == 0 {
                if !self.pending.is_empty() {
                    return Err(SourceError::Damaged(format!(
                        "{}: the file ends in the middle of a row",
                        self.doing
                    )));
                }
                self.ended = true;
                if !self.statement.is_empty() {
                    self.ready.push_back(std::mem::take(&mut self.statement));
                }
            }
        }
        Ok(self.ready.pop_front())
    }
}
