//! One stored log file of an incremental copy while it is written: events go into blocks that
//! an upload streams to the destination, and the file's range, counts and the byte ranges the
//! scope filter left out become its manifest details.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::binlog::{self, Gtid, GtidState, RawEvent};
use super::scope::Skip;
use crate::engine::SourceError;
use crate::repo::manifest::ManifestFile;
use crate::repo::writer::CopyWriter;
use crate::storage::DestinationError;

/// Bytes of events gathered before they go to the copy writer.
const BLOCK: usize = 256 * 1024;
/// Blocks in flight between the reader and the upload of one file.
const BLOCKS_IN_FLIGHT: usize = 8;

/// One stored log file being written: the upload runs while events arrive.
pub(super) struct Segment {
    server_file: String,
    start: u64,
    end: u64,
    /// Where the stored events reach in the server's file.
    stored_end: u64,
    /// Byte ranges left out (other databases' events), and the one still growing.
    skips: Vec<Skip>,
    skipping: Option<Skip>,
    skipped_transactions: u64,
    annotations_left_out: u64,
    events: u64,
    /// Transactions stored in the file.
    pub(super) transactions: u64,
    first_at: u32,
    last_at: u32,
    raw_bytes: u64,
    block: Vec<u8>,
    sender: mpsc::Sender<std::io::Result<Bytes>>,
    details: Arc<Mutex<Map<String, Value>>>,
    upload: JoinHandle<Result<ManifestFile, DestinationError>>,
}

impl Segment {
    pub(super) fn open(
        writer: &CopyWriter,
        folder: &str,
        sequence: usize,
        server_file: &str,
        start: u64,
        format: &RawEvent,
    ) -> Self {
        let (sender, mut receiver) = mpsc::channel::<std::io::Result<Bytes>>(BLOCKS_IN_FLIGHT);
        let body = tokio_util::io::StreamReader::new(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)));
        let details = Arc::new(Mutex::new(Map::new()));
        let path = format!("binlog/{folder}/{sequence:05}-{}", key_safe(server_file));
        let (writer, shared) = (writer.clone(), details.clone());
        let upload = tokio::spawn(async move {
            writer
                .put_file(&path, body, move || {
                    std::mem::take(&mut *shared.lock().expect("details lock poisoned"))
                })
                .await
        });
        let mut block = Vec::with_capacity(BLOCK);
        block.extend_from_slice(&binlog::MAGIC);
        block.extend_from_slice(format.bytes());
        let mut segment = Segment {
            server_file: server_file.to_string(),
            start,
            end: start,
            stored_end: start,
            skips: Vec::new(),
            skipping: None,
            skipped_transactions: 0,
            annotations_left_out: 0,
            events: 0,
            transactions: 0,
            first_at: 0,
            last_at: 0,
            raw_bytes: 0,
            block,
            sender,
            details,
            upload,
        };
        segment.details_insert("sequence", json!(sequence));
        segment
    }

    fn details_insert(&mut self, key: &str, value: Value) {
        self.details
            .lock()
            .expect("details lock poisoned")
            .insert(key.into(), value);
    }

    /// Notes that the scope filter left events out since the last stored one, and the
    /// transaction it left out whole, if it did.
    pub(super) fn left_out(&mut self, events: u64, transaction: Option<Option<&Gtid>>) {
        if events == 0 && transaction.is_none() {
            return;
        }
        let skip = self.skipping.get_or_insert_with(|| Skip {
            from: self.stored_end,
            to: self.stored_end,
            transactions: 0,
            gtids: GtidState::default(),
        });
        if let Some(gtid) = transaction {
            skip.transactions += 1;
            self.skipped_transactions += 1;
            if let Some(gtid) = gtid {
                skip.gtids.add(gtid);
            }
        }
    }

    /// Ends the skip in progress at `at`, where the next stored event (or the file) starts.
    fn end_skip(&mut self, at: u64) {
        if let Some(mut skip) = self.skipping.take() {
            skip.to = at;
            self.skips.push(skip);
        }
    }

    pub(super) async fn push(&mut self, event: &RawEvent) -> Result<(), SourceError> {
        if event.start() != self.stored_end {
            if self.skipping.is_some() {
                self.end_skip(event.start());
            } else {
                // Nothing was left out here: the gap is an annotation the server did not send.
                self.annotations_left_out += 1;
            }
        }
        self.stored_end = event.log_pos();
        if self.events == 0 {
            self.first_at = event.timestamp();
        }
        self.last_at = event.timestamp();
        self.events += 1;
        self.raw_bytes += event.bytes().len() as u64;
        self.end = event.log_pos();
        self.block.extend_from_slice(event.bytes());
        if self.block.len() >= BLOCK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SourceError> {
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        if self.sender.send(Ok(Bytes::from(block))).await.is_err() {
            // The upload stopped early; its own error says why.
            return Ok(());
        }
        Ok(())
    }

    /// Gives up the file: its upload stops and stores nothing.
    pub(super) fn abandon(self) {
        drop(self.sender);
        self.upload.abort();
    }

    /// Ends the file at `end` (the server position after the last event read from it, stored
    /// or left out) and waits for its upload.
    pub(super) async fn close(mut self, end: u64, sequence_details: &mut Vec<Value>) -> Result<(), SourceError> {
        if !self.block.is_empty() {
            self.flush().await?;
        }
        self.end_skip(end);
        self.end = end;
        let details = Map::from_iter([
            ("kind".to_string(), json!("binlog")),
            ("server_file".to_string(), json!(self.server_file)),
            ("start".to_string(), json!(self.start)),
            ("end".to_string(), json!(self.end)),
            ("events".to_string(), json!(self.events)),
            ("transactions".to_string(), json!(self.transactions)),
            ("skipped_transactions".to_string(), json!(self.skipped_transactions)),
            ("annotations_left_out".to_string(), json!(self.annotations_left_out)),
            ("first_event_at".to_string(), json!(self.first_at)),
            ("last_event_at".to_string(), json!(self.last_at)),
            ("raw_bytes".to_string(), json!(self.raw_bytes)),
        ]);
        {
            // The skips go to the manifest only: the status file holds the counts.
            let mut manifest = self.details.lock().expect("details lock poisoned");
            manifest.extend(details.clone());
            manifest.insert(
                "skipped".into(),
                Value::Array(self.skips.iter().map(Skip::to_json).collect()),
            );
        }
        sequence_details.push(Value::Object(details));
        drop(self.sender);
        match self.upload.await {
            Ok(result) => result.map(|_| ()).map_err(SourceError::from),
            Err(e) => Err(SourceError::Damaged(format!("storing {}: {e}", self.server_file))),
        }
    }
}

fn key_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
