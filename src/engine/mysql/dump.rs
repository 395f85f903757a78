//! The data of a full copy: workers that each take the next chunk of a table, read its rows in
//! the snapshot and stream them, formatted, to the copy; and table checksums on request.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// Bytes of formatted rows a worker gathers before handing them to the copy writer.
pub(super) const ROW_BLOCK: usize = 256 * 1024;

/// Session settings of every dump connection: times in UTC, bytes as stored.
pub(super) const DUMP_SESSION: [&str; 2] = [
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SET SESSION time_zone = '+00:00', NAMES binary, SESSION net_write_timeout = 3600, SESSION net_read_timeout = 3600",
];

impl MysqlSource {
    pub(super) async fn worker(
        &self,
        mut conn: Conn,
        queue: Queue<inventory::Chunk>,
        writer: CopyWriter,
        progress: Arc<Progress>,
        checksums: Arc<Mutex<Checksums>>,
    ) -> Result<(u64, u64), SourceError> {
        let my = &self.my;
        let (mut rows, mut bytes) = (0u64, 0u64);
        while let Some(chunk) = queue.next() {
            let doing = format!("reading {} (chunk {})", chunk.table.qualified(), chunk.index);
            // Blocks of formatted rows go to the compressor as they are, one zstd frame each.
            let (blocks, formatted) = tokio::sync::mpsc::channel(1);
            let counters = Counters::default();
            let path = format!(
                "data/{}/{:05}.tsv",
                stored::table_folder(
                    &crate::storage::md5_hex(format!("{}.{}", chunk.table.database, chunk.table.name).as_bytes())[..8],
                    &chunk.table.database,
                    &chunk.table.name,
                ),
                chunk.index
            );
            let table = chunk.table.clone();
            let condition = chunk.condition.clone();
            let counted = counters.clone();
            let ended = Arc::new(SinkEnd::default());
            let upload = writer.put_blocks(&path, frames_of(formatted, ended.clone()), move || {
                stored::data_details(
                    ("database", &table.database),
                    &table.name,
                    json!(table.columns),
                    &counted,
                    condition,
                )
            });
            let sink = FrameSink {
                blocks,
                counters: counters.clone(),
                ended: ended.clone(),
            };
            let read = read_rows(my, &mut conn, &chunk, sink, &doing);
            let (uploaded, read) = tokio::join!(upload, read);
            match (read, uploaded) {
                (Ok(()), uploaded) => {
                    uploaded?;
                }
                // The upload failed first and the reader only found it gone: its cause is the one.
                (Err(_), Err(upload)) if ended.upload_stopped.load(Ordering::SeqCst) => return Err(upload.into()),
                (Err(read), _) => return Err(read),
            }
            rows += counters.newlines();
            bytes += counters.bytes();
            progress.done(counters.bytes());
        }
        // Still in the copy's snapshot: CHECKSUM TABLE there sees exactly the rows copied.
        loop {
            let Some(table) = checksums
                .lock()
                .expect("checksum queue lock poisoned")
                .pending
                .pop_front()
            else {
                break;
            };
            let doing = format!("checksumming {}", table.qualified());
            let row: Option<(Vec<u8>, Option<u64>)> = conn
                .query_first(format!("CHECKSUM TABLE {}", table.qualified()))
                .await
                .map_err(|e| my.error(&doing, e))?;
            let value = row.and_then(|(_, value)| value).ok_or_else(|| SourceError::Database {
                database: my.name.clone(),
                doing,
                detail: "the server gave no checksum".into(),
            })?;
            checksums
                .lock()
                .expect("checksum queue lock poisoned")
                .values
                .entry(table.database.clone())
                .or_default()
                .insert(table.name.clone(), value);
        }
        conn.query_drop("COMMIT")
            .await
            .map_err(|e| my.error("ending a worker's snapshot", e))?;
        let _ = conn.disconnect().await;
        Ok((rows, bytes))
    }
}

/// Tables still to checksum, and the checksums taken (database → table → value).
#[derive(Debug, Default)]
pub(super) struct Checksums {
    pub(super) pending: VecDeque<inventory::Table>,
    pub(super) values: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
}

/// Where a reader's formatted rows go, a block at a time.
pub(super) trait RowSink {
    /// Bytes of rows gathered before a block is handed on.
    const BLOCK: usize;
    /// Hands `block` on; returns an empty buffer for the next block.
    async fn put(&mut self, block: Vec<u8>) -> std::io::Result<Vec<u8>>;
    /// Ends the stream.
    async fn finish(self) -> std::io::Result<()>;
}

/// Rows written into a pipe, in blocks of [`ROW_BLOCK`].
impl RowSink for tokio::io::DuplexStream {
    const BLOCK: usize = ROW_BLOCK;

    async fn put(&mut self, mut block: Vec<u8>) -> std::io::Result<Vec<u8>> {
        self.write_all(&block).await?;
        block.clear();
        Ok(block)
    }

    async fn finish(mut self) -> std::io::Result<()> {
        self.shutdown().await
    }
}

/// Rows handed to the copy writer's compressor a frame at a time, counted and digested on the
/// way: no pipe between the reader and the compressor, so the rows are not copied again.
pub(super) struct FrameSink {
    blocks: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
    counters: Counters,
    ended: Arc<SinkEnd>,
}

/// How a [`FrameSink`]'s stream ended, told to both sides.
#[derive(Debug, Default)]
pub(super) struct SinkEnd {
    /// The reader reached the end of the rows: a stream that closes without it was cut short.
    finished: AtomicBool,
    /// The upload stopped taking blocks before the reader was done.
    upload_stopped: AtomicBool,
}

impl RowSink for FrameSink {
    const BLOCK: usize = crate::repo::codec::FRAME;

    async fn put(&mut self, block: Vec<u8>) -> std::io::Result<Vec<u8>> {
        self.counters.observe(&block);
        if self.blocks.send(Ok(block)).await.is_err() {
            self.ended.upload_stopped.store(true, Ordering::SeqCst);
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the copy writer stopped reading",
            ));
        }
        Ok(Vec::with_capacity(Self::BLOCK + 4096))
    }

    async fn finish(self) -> std::io::Result<()> {
        self.ended.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// The blocks a [`FrameSink`] sends, as a stream that fails instead of ending when the reader
/// stopped before the end of the rows, so a cut-short chunk is never stored as a whole file.
fn frames_of(
    mut blocks: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    ended: Arc<SinkEnd>,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    let mut failed = false;
    futures::stream::poll_fn(move |cx| match blocks.poll_recv(cx) {
        std::task::Poll::Ready(None) if !failed && !ended.finished.load(Ordering::SeqCst) => {
            failed = true;
            std::task::Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "reading the rows stopped before their end",
            ))))
        }
        other => other,
    })
}

/// Streams a chunk's rows, formatted, into `out`; ends it at the end.
pub(super) async fn read_rows<S: RowSink>(
    my: &My,
    conn: &mut Conn,
    chunk: &inventory::Chunk,
    mut out: S,
    doing: &str,
) -> Result<(), SourceError> {
    let stopped = |e: std::io::Error| SourceError::Database {
        database: my.name.clone(),
        doing: doing.to_string(),
        detail: format!("the upload stopped: {e}"),
    };
    let mut result = conn
        .query_iter(chunk.select_sql())
        .await
        .map_err(|e| my.error(doing, e))?;
    let mut block = Vec::with_capacity(S::BLOCK + 4096);
    let no_columns = chunk.table.columns.is_empty();
    while let Some(row) = result.next().await.map_err(|e| my.error(doing, e))? {
        let values = row.unwrap();
        if no_columns {
            block.push(b'\n');
        } else {
            format::write_row(
                &mut block,
                values.iter().map(|v| match v {
                    Value::NULL => None,
                    Value::Bytes(bytes) => Some(bytes.as_slice()),
                    // The text protocol sends every value as bytes.
                    _ => None,
                }),
            );
        }
        if block.len() >= S::BLOCK {
            block = out.put(block).await.map_err(stopped)?;
        }
    }
    if !block.is_empty() {
        out.put(block).await.map_err(stopped)?;
    }
    out.finish().await.map_err(stopped)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn sink() -> (FrameSink, impl futures::Stream<Item = std::io::Result<Vec<u8>>>) {
        let (blocks, formatted) = tokio::sync::mpsc::channel(1);
        let ended = Arc::new(SinkEnd::default());
        let stream = frames_of(formatted, ended.clone());
        let sink = FrameSink {
            blocks,
            counters: Counters::default(),
            ended,
        };
        (sink, stream)
    }

    #[tokio::test]
    async fn a_reader_that_stops_before_the_end_fails_the_stream_instead_of_ending_it() {
        let (mut cut, stream) = sink();
        let collected = tokio::spawn(stream.collect::<Vec<_>>());
        cut.put(b"1\ta\n".to_vec()).await.unwrap();
        drop(cut);
        let items = collected.await.unwrap();
        assert_eq!(items.len(), 2, "the block, then the error");
        assert_eq!(items[0].as_ref().unwrap(), b"1\ta\n");
        assert_eq!(items[1].as_ref().unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);

        let (mut whole, stream) = sink();
        let collected = tokio::spawn(stream.collect::<Vec<_>>());
        whole.put(b"1\ta\n".to_vec()).await.unwrap();
        whole.finish().await.unwrap();
        let items = collected.await.unwrap();
        assert_eq!(items.len(), 1, "a finished reader ends the stream cleanly");

        let (mut orphan, stream) = sink();
        let ended = orphan.ended.clone();
        drop(stream);
        assert!(orphan.put(b"x\n".to_vec()).await.is_err());
        assert!(
            ended.upload_stopped.load(Ordering::SeqCst),
            "the upload is named as the cause"
        );
    }
}
