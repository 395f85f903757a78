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
        let mut reader = open_verified(destination, stored).await?;
        let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let prefix = format!("INSERT INTO {table} ({}) VALUES ", names.join(", "));
        let mut pending: Vec<u8> = Vec::new();
        let mut buffer = vec![0u8; 256 * 1024];
        let mut statement = String::new();
        let mut rows = 0u64;
        loop {
            let n = reader.read(&mut buffer).await.map_err(SourceError::from_read)?;
            pending.extend_from_slice(&buffer[..n]);
            let (parsed, used) = format::parse_rows(&pending);
            pending.drain(..used);
            for row in parsed {
                let values: Vec<String> = row
                    .iter()
                    .zip(columns)
                    .map(|(value, column)| match (value, column.transfer) {
                        (None, _) => "NULL".to_string(),
                        (Some(bytes), Transfer::Bit) => format!("CAST({} AS UNSIGNED)", hex_literal(bytes)),
                        (Some(bytes), Transfer::Textual) => format!("CONVERT({} USING utf8mb4)", hex_literal(bytes)),
                        (Some(bytes), _) => hex_literal(bytes),
                    })
                    .collect();
                if statement.is_empty() {
                    statement.push_str(&prefix);
                } else {
                    statement.push(',');
                }
                statement.push_str(&format!("({})", values.join(",")));
                if statement.len() >= INSERT_BATCH {
                    conn.query_drop(std::mem::take(&mut statement))
                        .await
                        .map_err(|e| self.my.error(doing, e))?;
                    rows += conn.affected_rows();
                }
            }
            if n == 0 {
                break;
            }
        }
        if !pending.is_empty() {
            return Err(SourceError::Damaged(format!(
                "{doing}: the file ends in the middle of a row"
            )));
        }
        if !statement.is_empty() {
            conn.query_drop(statement).await.map_err(|e| self.my.error(doing, e))?;
            rows += conn.affected_rows();
        }
        Ok(rows)
    }
}
