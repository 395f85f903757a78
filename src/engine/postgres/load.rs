//! Loading a PostgreSQL copy's data files: workers that each stream the next file into COPY,
//! with the file's MD5 checked while it streams and its row count compared with the manifest's
//! (and, in a whole restore, build each table's indexes once its rows are in).

use std::sync::Arc;

use bytes::Bytes;
use futures::SinkExt;
use tokio::io::AsyncReadExt;
use tokio_postgres::Client;

use super::schedule::{Schedule, Work};
use super::target::PostgresTarget;
use super::{quote_ident, schema};
use crate::engine::SourceError;
use crate::engine::pool::Queue;
use crate::progress::Progress;
use crate::repo::reader::{StoredFile, open_verified};
use crate::storage::Destination;

const COPY_BLOCK: usize = 256 * 1024;

/// How streaming one file into COPY ended.
enum Pumped {
    Done(u64),
    /// The stored file is damaged.
    Damaged(std::io::Error),
    /// The server refused the data.
    Refused(tokio_postgres::Error),
}

impl PostgresTarget {
    pub(super) async fn load_worker(
        &self,
        destination: Arc<dyn Destination>,
        queue: Queue<StoredFile>,
        progress: Arc<Progress>,
        into: Option<String>,
    ) -> Result<u64, SourceError> {
        let client = self.loader().await?;
        let mut total = 0;
        while let Some(stored) = queue.next() {
            total += self
                .load_stored(&client, &destination, &stored, into.as_deref())
                .await?;
            progress.done(stored.file.size);
        }
        Ok(total)
    }

    /// A worker of a whole restore's data phase: takes data files and, once a table's rows are
    /// all in, its indexes and keys, as `schedule` hands them out; returns the rows it loaded.
    ///
    /// Builds run on the loading connection (no second connection per worker), after pg_dump's
    /// session settings (`preamble`) are applied to it at the first: pg_restore loads its data
    /// under the same settings, and the statements of later loads name everything in full.
    pub(super) async fn scheduled_worker(
        &self,
        destination: Arc<dyn Destination>,
        schedule: Schedule,
        progress: Arc<Progress>,
        preamble: String,
    ) -> Result<u64, SourceError> {
        let client = self.loader().await?;
        let mut prepared = false;
        let (mut total, mut last) = (0, None);
        while let Some(work) = schedule.next(last).await {
            match work {
                Work::Load { table, file } => {
                    total += self.load_stored(&client, &destination, &file, None).await?;
                    progress.done(file.file.size);
                    schedule.loaded(table);
                    last = Some(table);
                }
                Work::Build { table, entry } => {
                    if !prepared {
                        self.prepare_post_data(&client, &preamble).await?;
                        prepared = true;
                    }
                    self.run_entry(&client, &entry).await?;
                    schedule.built(table);
                }
            }
        }
        Ok(total)
    }

    /// A connection for loading files.
    async fn loader(&self) -> Result<Client, SourceError> {
        let client = self.pg.connect("restore worker").await?;
        // Each file is one transaction; losing the last ones to a crash only means restoring again.
        client
            .batch_execute("SET synchronous_commit = off; SET statement_timeout = 0")
            .await
            .map_err(|e| self.pg.error("preparing a loader", e))?;
        Ok(client)
    }

    /// Loads one data file into its table (in schema `into` when given); returns its rows.
    async fn load_stored(
        &self,
        client: &Client,
        destination: &Arc<dyn Destination>,
        stored: &StoredFile,
        into: Option<&str>,
    ) -> Result<u64, SourceError> {
        let Some(data) = stored.data() else {
            return Err(SourceError::Damaged(format!(
                "{}: the manifest does not describe it as a data file",
                stored.key
            )));
        };
        // `--into-schema` moves the table; else it goes where the copy had it.
        let (schema_name, table_name) = (into.unwrap_or(data.container()), data.table.as_str());
        let table = schema::qualified(schema_name, table_name);
        let columns: Vec<String> = serde_json::from_value(data.columns.clone()).unwrap_or_default();
        let column_list = if columns.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ")
            )
        };
        let doing = format!("loading {table} from {}", stored.key);
        self.load_file(client, destination, stored, &table, &column_list, &doing)
            .await
    }

    /// Loads one file in one transaction. When the COPY fails, the rest of the file is read to
    /// find out whether damage caused it, since that is the cause to report.
    async fn load_file(
        &self,
        client: &Client,
        destination: &Arc<dyn Destination>,
        stored: &StoredFile,
        table: &str,
        column_list: &str,
        doing: &str,
    ) -> Result<u64, SourceError> {
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| self.pg.error(doing, e))?;
        let mut reader = open_verified(destination, stored).await?;
        let sink = client
            .copy_in::<_, Bytes>(&format!("COPY {table}{column_list} FROM STDIN"))
            .await
            .map_err(|e| self.pg.error(doing, e))?;
        let mut sink = Box::pin(sink);
        let pumped = loop {
            match next_block(&mut reader).await {
                Err(damage) => break Pumped::Damaged(damage),
                Ok(block) if block.is_empty() => {
                    break match sink.as_mut().finish().await {
                        Ok(rows) => Pumped::Done(rows),
                        Err(e) => Pumped::Refused(e),
                    };
                }
                Ok(block) => {
                    if let Err(e) = sink.send(block).await {
                        break Pumped::Refused(e);
                    }
                }
            }
        };
        let rows = match pumped {
            Pumped::Done(rows) => rows,
            Pumped::Damaged(damage) => {
                // Dropping the unfinished sink aborts the COPY; the rollback keeps nothing of the file.
                drop(sink);
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(SourceError::from_read(damage));
            }
            Pumped::Refused(copy_error) => {
                drop(sink);
                let _ = client.batch_execute("ROLLBACK").await;
                let mut buffer = vec![0u8; COPY_BLOCK];
                loop {
                    match reader.read(&mut buffer).await {
                        Ok(0) => break,
                        Ok(_) => continue,
                        Err(damage) => return Err(SourceError::from_read(damage)),
                    }
                }
                return Err(self.pg.error(doing, copy_error));
            }
        };
        let expected = stored.rows();
        if let Some(expected) = expected
            && expected != rows
        {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(SourceError::Damaged(format!(
                "{doing}: loaded {rows} rows where the manifest records {expected}"
            )));
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| self.pg.error(doing, e))?;
        Ok(rows)
    }
}

/// Up to [`COPY_BLOCK`] bytes of `reader` in a buffer of their own, which the driver sends
/// without copying it again (empty at the end).
async fn next_block(reader: &mut (impl tokio::io::AsyncRead + Unpin + ?Sized)) -> std::io::Result<Bytes> {
    let mut block = bytes::BytesMut::with_capacity(COPY_BLOCK);
    while block.len() < COPY_BLOCK {
        if reader.read_buf(&mut block).await? == 0 {
            break;
        }
    }
    Ok(block.freeze())
}
