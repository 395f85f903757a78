//! The source's binary log as it is written, read over the replication protocol (blocking: the
//! server pushes each event as it commits): every event's CRC32 checked, every event starting
//! where the last one ended, rotations followed — and decoded into the change model by the same
//! decoder as a replay's stored files.

use std::collections::VecDeque;

use futures::{FutureExt, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};

use super::super::events::{EventDecoder, Place};
use crate::engine::SourceError;
use crate::engine::change::Change;
use crate::engine::mysql::My;
use crate::engine::mysql::binlog::{GtidState, RawEvent, kind};
use crate::engine::mysql::capture_read::reencode;

/// How often an idle source is asked to send a heartbeat event.
const SOURCE_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the stream may stay silent before the connection counts as lost.
const SILENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// What a change's `Commit` names as its copy: the applier read it live, not from a copy.
pub(super) const LIVE: &str = "live";

/// Which tables' rows are applied (database, table).
pub(crate) type Wanted = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// The live log of the source, decoded.
pub(super) struct Live {
    source_name: String,
    my: My,
    stream: BinlogStream,
    mariadb: bool,
    /// The server file being read, and where its next event starts.
    file: String,
    expected: u64,
    events: EventDecoder,
    gtids: GtidState,
    pending: VecDeque<Change>,
    wanted: Wanted,
    /// When the last event read was written on the source (seconds since the epoch).
    pub last_timestamp: Option<u32>,
    /// Where the last event decoded starts: the changes queued came from it.
    event_start: u64,
    /// The server ended the stream.
    ended: bool,
}

impl Live {
    /// Asks the source for its log from `file:position` (a transaction end the target recorded),
    /// with `gtids` the GTID state there.
    ///
    /// # Errors
    /// Login, a refused request (privileges, a purged file), the server's error.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn open(
        my: &My,
        source_name: &str,
        mariadb: bool,
        replica_id: u32,
        file: &str,
        position: u64,
        gtids: GtidState,
        wanted: Wanted,
    ) -> Result<Self, SourceError> {
        let mut conn = my.connect(None).await?;
        if mariadb {
            // Without it, MariaDB replaces its own events (GTIDs, annotations) by dummies.
            conn.query_drop("SET @mariadb_slave_capability = 4")
                .await
                .map_err(|e| my.error("preparing to read the binary log", e))?;
        }
        // An idle source sends a heartbeat event this often, so a connection that died without
        // a word is noticed (`SILENCE`).
        conn.query_drop(format!(
            "SET @master_heartbeat_period = {}",
            SOURCE_HEARTBEAT.as_nanos()
        ))
        .await
        .map_err(|e| my.error("preparing to read the binary log", e))?;
        let request = BinlogStreamRequest::new(replica_id)
            .with_filename(file.as_bytes())
            .with_pos(position);
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| my.error("requesting the binary log (needs REPLICATION SLAVE)", e))?;
        Ok(Live {
            source_name: source_name.to_string(),
            my: my.clone(),
            stream,
            mariadb,
            file: file.to_string(),
            expected: position,
            events: EventDecoder::default(),
            gtids,
            pending: VecDeque::new(),
            wanted,
            last_timestamp: None,
            event_start: 0,
            ended: false,
        })
    }

    /// Where the log was read up to: the server file and the end of the last event.
    pub(super) fn received(&self) -> (&str, u64) {
        (&self.file, self.expected)
    }

    /// Where the event the last change handed out came from starts: changes are queued only
    /// when none are, so every queued change is the last decoded event's.
    pub(super) fn change_at(&self) -> (&str, u64) {
        (&self.file, self.event_start)
    }

    /// Whether a source transaction is part way: its changes not all handed out yet.
    pub(super) fn in_transaction(&self) -> bool {
        self.events.transactions.is_open() || !self.pending.is_empty()
    }

    /// The next change; `None` when the server ended the stream. Cancel-safe: what was read
    /// stays queued.
    ///
    /// # Errors
    /// A damaged event, a hole or overlap, events cairn cannot replay, a lost connection.
    pub(super) async fn next(&mut self) -> Result<Option<Change>, SourceError> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(Some(change));
            }
            if self.ended {
                return Ok(None);
            }
            let next = match tokio::time::timeout(SILENCE, self.stream.next()).await {
                Ok(Some(next)) => next,
                Ok(None) => return Ok(None),
                Err(_) => {
                    return Err(SourceError::Disconnected {
                        database: self.my.name.clone(),
                        doing: "reading the binary log".into(),
                        detail: format!("neither an event nor a heartbeat came for {} s", SILENCE.as_secs()),
                    });
                }
            };
            let event = next.map_err(|e| self.my.error("reading the binary log", e))?;
            self.take(&event)?;
        }
    }

    /// Whether a change can be had without waiting: one is queued, or events the server already
    /// sent decode into one (they are taken and queued).
    ///
    /// # Errors
    /// As [`Live::next`].
    pub(super) fn ready(&mut self) -> Result<bool, SourceError> {
        while self.pending.is_empty() && !self.ended {
            match self.stream.next().now_or_never() {
                None => return Ok(false),
                Some(None) => self.ended = true,
                Some(Some(event)) => {
                    let event = event.map_err(|e| self.my.error("reading the binary log", e))?;
                    self.take(&event)?;
                }
            }
        }
        Ok(true)
    }

    fn place(&self, at: u64) -> String {
        format!("source {}, {}:{at}", self.source_name, self.file)
    }

    /// Checks one event from the server and queues its changes.
    fn take(&mut self, event: &mysql_async::binlog::events::Event) -> Result<(), SourceError> {
        let (raw, crc) = reencode(&self.source_name, &self.file, event)?;
        match raw.kind() {
            kind::ROTATE => return self.rotate(&raw, crc),
            kind::FORMAT_DESCRIPTION => {
                if raw.log_pos() != 0 && raw.start() == 4 && self.expected == 4 {
                    self.expected = raw.log_pos();
                }
                let at = self.place(raw.start());
                self.events.read(&raw, crc, &at)?;
                return Ok(());
            }
            kind::MARIADB_QUERY_COMPRESSED | kind::MYSQL_TRANSACTION_PAYLOAD => {
                return Err(SourceError::Unsupported(format!(
                    "{}: the binary log holds compressed events; turn off log_bin_compress / \
                     binlog_transaction_compression",
                    self.place(raw.start())
                )));
            }
            k if (kind::MARIADB_ROWS_COMPRESSED_FIRST..=kind::MARIADB_ROWS_COMPRESSED_LAST).contains(&k) => {
                return Err(SourceError::Unsupported(format!(
                    "{}: the binary log holds compressed row events; turn off log_bin_compress",
                    self.place(raw.start())
                )));
            }
            _ => {}
        }
        if raw.is_artificial() {
            return Ok(());
        }
        // MariaDB leaves out Annotate_rows events unless asked; they stand just before a table
        // map, and nothing else may be missing.
        let annotation_left_out = self.mariadb && raw.kind() == kind::TABLE_MAP && raw.start() > self.expected;
        if raw.start() != self.expected && !annotation_left_out {
            return Err(SourceError::Damaged(format!(
                "source {}: the binary log event at {}:{} does not follow the previous one, which ended at {}; \
                 nothing of it was applied",
                self.source_name,
                self.file,
                raw.start(),
                self.expected
            )));
        }
        self.expected = raw.log_pos();
        self.last_timestamp = Some(raw.timestamp());
        self.event_start = raw.start();
        self.decode(&raw, crc)
    }

    fn decode(&mut self, raw: &RawEvent, crc: bool) -> Result<(), SourceError> {
        let at = self.place(raw.start());
        let Some(read) = self.events.read(raw, crc, &at)? else {
            return Ok(());
        };
        let place = Place {
            at,
            copy: LIVE,
            server_file: &self.file,
        };
        self.events.changes(
            raw,
            read,
            crc,
            place,
            &mut self.gtids,
            self.wanted.as_ref(),
            &mut self.pending,
        )
    }

    /// A rotate event: the end of a file (real), or where the server reads from (artificial).
    fn rotate(&mut self, raw: &RawEvent, crc: bool) -> Result<(), SourceError> {
        let Some((next_file, next_position)) = raw.rotate_target(crc) else {
            return Err(SourceError::Damaged(format!(
                "{}: a rotate event without a file name",
                self.place(raw.start())
            )));
        };
        if !raw.is_artificial() {
            if raw.start() != self.expected {
                return Err(SourceError::Damaged(format!(
                    "{}: the rotate event does not follow the previous event, which ended at {}",
                    self.place(raw.start()),
                    self.expected
                )));
            }
            if self.events.transactions.is_open() {
                return Err(SourceError::Damaged(format!(
                    "source {}: {} ends inside a transaction",
                    self.source_name, self.file
                )));
            }
        } else if next_file != self.file && self.events.transactions.is_open() {
            return Err(SourceError::Damaged(format!(
                "source {}: the server moved from {} to {next_file} inside a transaction; nothing of it was applied",
                self.source_name,
                self.place(self.expected)
            )));
        } else if next_file == self.file && next_position > 4 && next_position != self.expected {
            return Err(SourceError::Damaged(format!(
                "source {}: the server reads {} from {next_position}, not from {} where the target is",
                self.source_name, self.file, self.expected
            )));
        }
        if next_file != self.file || !raw.is_artificial() {
            self.file = next_file;
            self.expected = next_position.max(4);
        }
        Ok(())
    }
}
