//! The read of the binary log during an incremental: each event from the server checked (CRC32,
//! and that it starts where the previous one ended), kept in its stored file or left out by the
//! copy's scope, and counted; positions and GTIDs follow every event, kept or not.

use std::collections::BTreeSet;

use mysql_async::binlog::events::Event;
use serde_json::Value;

use super::binlog::{self, GtidState, RawEvent, Step, Transactions, kind};
use super::scope::{Ended, ScopeFilter};
use super::segment::Segment;
use super::snapshot::identity_folder;
use super::{My, Server};
use crate::engine::SourceError;
use crate::repo::writer::CopyWriter;

/// What the read counted.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub events: u64,
    pub committed: u64,
    pub raw_bytes: u64,
    /// MariaDB annotations the server left out.
    pub omitted: u64,
    pub skipped_transactions: u64,
    pub skipped_events: u64,
    pub first_at: Option<u32>,
    pub last_at: Option<u32>,
}

/// What an ended read leaves: where the log was read up to, the GTID state there, the stored
/// files' details and the counts.
pub(super) struct Read {
    pub file: String,
    pub position: u64,
    pub gtids: GtidState,
    pub files: Vec<Value>,
    pub counts: Counts,
    /// Statements touching several databases kept whole; `None` without a scope.
    pub mixed_statements: Option<u64>,
}

/// One incremental's read of the log, event by event.
pub(super) struct Capture<'a> {
    source_name: &'a str,
    writer: &'a CopyWriter,
    mariadb: bool,
    folder: String,
    scope: Option<ScopeFilter>,
    gtids: GtidState,
    current_file: String,
    /// Where the next event must start.
    expected: u64,
    format: Option<RawEvent>,
    segment: Option<Segment>,
    sequence: usize,
    files: Vec<Value>,
    transactions: Transactions,
    counts: Counts,
}

impl<'a> Capture<'a> {
    pub(super) fn new(
        source_name: &'a str,
        writer: &'a CopyWriter,
        server: &Server,
        databases: Option<BTreeSet<String>>,
        gtids: GtidState,
        start_file: String,
        start_position: u64,
    ) -> Self {
        Capture {
            source_name,
            writer,
            mariadb: server.mariadb,
            folder: identity_folder(server),
            scope: databases.map(ScopeFilter::new),
            gtids,
            current_file: start_file,
            expected: start_position,
            format: None,
            segment: None,
            sequence: 0,
            files: Vec::new(),
            transactions: Transactions::default(),
            counts: Counts::default(),
        }
    }

    fn place(&self, at: u64) -> String {
        format!("{}:{at}", self.current_file)
    }

    /// Takes one event from the server.
    ///
    /// # Errors
    /// A damaged event, a hole or overlap, compressed events, or the destination's error.
    pub(super) async fn read(&mut self, event: &Event) -> Result<(), SourceError> {
        let (raw, crc) = self.reencode(event)?;
        match raw.kind() {
            kind::ROTATE => return self.rotate(raw, crc).await,
            kind::FORMAT_DESCRIPTION => return self.format_description(raw),
            kind::MARIADB_QUERY_COMPRESSED | kind::MYSQL_TRANSACTION_PAYLOAD => {
                return Err(SourceError::Unsupported(format!(
                    "source {}: the binary log holds compressed events (at {}); turn off log_bin_compress / \
                     binlog_transaction_compression",
                    self.source_name,
                    self.place(raw.log_pos())
                )));
            }
            k if (kind::MARIADB_ROWS_COMPRESSED_FIRST..=kind::MARIADB_ROWS_COMPRESSED_LAST).contains(&k) => {
                return Err(SourceError::Unsupported(format!(
                    "source {}: the binary log holds compressed row events; turn off log_bin_compress",
                    self.source_name
                )));
            }
            _ => {}
        }
        if raw.is_artificial() {
            return Ok(());
        }
        self.event(raw, crc).await
    }

    /// The event as the server's log holds it, its CRC32 checked, and whether its bytes end
    /// with a CRC.
    fn reencode(&self, event: &Event) -> Result<(RawEvent, bool), SourceError> {
        reencode(self.source_name, &self.current_file, event)
    }

    /// A rotate event: the end of a file (real), or where the server reads from (artificial).
    async fn rotate(&mut self, raw: RawEvent, crc: bool) -> Result<(), SourceError> {
        let source_name = self.source_name;
        let Some((next_file, next_position)) = raw.rotate_target(crc) else {
            return Err(SourceError::Damaged("a rotate event without a file name".into()));
        };
        if !raw.is_artificial() {
            // The last event of a file: it belongs to that file, then the log moves on.
            check_follows(source_name, &self.current_file, self.expected, &raw)?;
            if self.scope.as_ref().is_some_and(|filter| !filter.idle()) {
                return Err(SourceError::Damaged(format!(
                    "source {source_name}: {} ends inside a transaction; nothing was recorded",
                    self.current_file
                )));
            }
            if let Some(open) = self.segment.as_mut() {
                open.push(&raw).await?;
            }
            if let Some(done) = self.segment.take() {
                done.close(raw.log_pos(), &mut self.files).await?;
            }
            self.counts.events += 1;
            self.counts.raw_bytes += raw.bytes().len() as u64;
            self.current_file = next_file;
            self.expected = next_position;
            self.format = None;
        } else if next_file == self.current_file {
            // The server says where it reads from: exactly where the last event ended.
            if next_position > 4 && next_position != self.expected {
                return Err(SourceError::Damaged(format!(
                    "source {source_name}: the server reads {} from {next_position}, not from {} where the log was \
                     taken up to; nothing was recorded",
                    self.current_file, self.expected
                )));
            }
        } else {
            if self.segment.is_some() {
                return Err(SourceError::Damaged(format!(
                    "source {source_name}: the server moved from {} to {next_file}:{next_position} without ending \
                     the file; nothing was recorded",
                    self.place(self.expected)
                )));
            }
            self.current_file = next_file;
            self.expected = next_position.max(4);
        }
        Ok(())
    }

    /// A format description: the header of the next stored file.
    fn format_description(&mut self, raw: RawEvent) -> Result<(), SourceError> {
        raw.checksum_algorithm()
            .map_err(|e| SourceError::Damaged(format!("source {}: {e}", self.source_name)))?;
        let is_file_start = raw.log_pos() != 0 && raw.start() == 4 && self.expected == 4;
        if is_file_start {
            self.expected = raw.log_pos();
        }
        if self.segment.is_none() {
            self.format = Some(raw);
        }
        Ok(())
    }

    /// Any other event: checked to follow the last, then stored or left out.
    async fn event(&mut self, raw: RawEvent, crc: bool) -> Result<(), SourceError> {
        let source_name = self.source_name;
        // MariaDB leaves out Annotate_rows events (a statement's text, for people reading the
        // log) unless the replica asks for them, which the driver cannot; they always stand just
        // before a table map, and nothing else may be missing.
        if self.mariadb && raw.kind() == kind::TABLE_MAP && raw.start() > self.expected {
            self.counts.omitted += 1;
        } else {
            check_follows(source_name, &self.current_file, self.expected, &raw)?;
        }
        if self.segment.is_none() {
            let Some(header) = self.format.as_ref() else {
                return Err(SourceError::Damaged(format!(
                    "source {source_name}: the server sent events of {} before its format description",
                    self.current_file
                )));
            };
            self.segment = Some(Segment::open(
                self.writer,
                &self.folder,
                self.sequence,
                &self.current_file,
                self.expected,
                header,
            ));
            self.sequence += 1;
        }
        let open = self.segment.as_mut().expect("opened above");
        self.expected = raw.log_pos();
        // Positions and GTIDs follow every event read, stored or left out: the copy ends
        // exactly where the server's log was read up to.
        if let Some(gtid) = raw.gtid(crc) {
            self.gtids.add(&gtid);
        }
        let ends = self.transactions.step(&raw, crc) == Step::Ends;
        let counts = &mut self.counts;
        let Some(filter) = self.scope.as_mut() else {
            counts.events += 1;
            counts.raw_bytes += raw.bytes().len() as u64;
            counts.first_at.get_or_insert(raw.timestamp());
            counts.last_at = Some(raw.timestamp());
            open.push(&raw).await?;
            if ends {
                counts.committed += 1;
                open.transactions += 1;
            }
            return Ok(());
        };
        let pushed = filter.push(raw, crc);
        counts.skipped_events += pushed.dropped;
        let dropped = match &pushed.ended {
            Some(Ended::Dropped(gtid)) => Some(gtid.as_ref()),
            _ => None,
        };
        open.left_out(pushed.dropped, dropped);
        for event in &pushed.store {
            counts.events += 1;
            counts.raw_bytes += event.bytes().len() as u64;
            counts.first_at.get_or_insert(event.timestamp());
            counts.last_at = Some(event.timestamp());
            open.push(event).await?;
        }
        match pushed.ended {
            Some(Ended::Kept) => {
                counts.committed += 1;
                open.transactions += 1;
            }
            Some(Ended::Dropped(_)) => counts.skipped_transactions += 1,
            None => {}
        }
        Ok(())
    }

    /// Ends the read at the server's end of log, which must be a transaction boundary.
    ///
    /// # Errors
    /// A log that ended inside a transaction (nothing is recorded), or the destination's error.
    pub(super) async fn finish(mut self, my: &My) -> Result<Read, SourceError> {
        if self.transactions.is_open() {
            if let Some(open) = self.segment.take() {
                open.abandon();
            }
            return Err(SourceError::Database {
                database: my.name.clone(),
                doing: "reading the binary log".into(),
                detail: format!(
                    "the log ended inside a transaction at {}; nothing was recorded, run the backup again",
                    self.place(self.expected)
                ),
            });
        }
        if let Some(done) = self.segment.take() {
            done.close(self.expected, &mut self.files).await?;
        }
        Ok(Read {
            file: self.current_file,
            position: self.expected,
            gtids: self.gtids,
            files: self.files,
            counts: self.counts,
            mixed_statements: self.scope.map(|filter| filter.mixed_statements),
        })
    }
}

/// An event must start where the previous one ended: anything else is a hole or an overlap.
fn check_follows(source_name: &str, file: &str, expected: u64, event: &RawEvent) -> Result<(), SourceError> {
    if event.start() == expected {
        return Ok(());
    }
    Err(SourceError::Damaged(format!(
        "source {source_name}: the binary log event at {file}:{} does not follow the previous one, which ended at \
         {expected}; nothing was recorded",
        event.start()
    )))
}

/// The event as the server's log holds it (the driver parsed it; cairn stores and checks the
/// bytes), its CRC32 checked, and whether its bytes end with a CRC.
///
/// # Errors
/// [`SourceError::Damaged`] for a CRC32 mismatch or an event that does not re-encode.
pub(super) fn reencode(source_name: &str, file: &str, event: &Event) -> Result<(RawEvent, bool), SourceError> {
    let mut bytes = Vec::with_capacity(event.data().len() + binlog::HEADER_LEN + 9);
    let alg = event.footer().get_checksum_alg().ok().flatten();
    if alg == Some(mysql_async::binlog::BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)
        && let Some(stored) = event.checksum()
        && u32::from_le_bytes(stored)
            != event.calc_checksum(mysql_async::binlog::BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)
    {
        return Err(SourceError::Damaged(format!(
            "source {source_name}: the binary log event ending at {file}:{} fails its CRC32 check; the server's log \
             or the network is damaging data",
            event.header().log_pos()
        )));
    }
    event
        .write(mysql_async::binlog::BinlogVersion::Version4, &mut bytes)
        .map_err(|e| SourceError::Damaged(format!("re-encoding a binary log event: {e}")))?;
    let raw = RawEvent::new(bytes).map_err(|e| SourceError::Damaged(format!("a binary log event: {e}")))?;
    // Whether this event's bytes end with a CRC (the driver re-encodes what the server sent).
    // Before the first format event the driver cannot know, and leaves the CRC in the data:
    // then a CRC that matches says it is one.
    let crc = raw.kind() != kind::FORMAT_DESCRIPTION
        && (raw.bytes().len() > binlog::HEADER_LEN + event.data().len() || raw.verify(true).is_ok());
    tracing::trace!(
        "binlog event type {} start {} end {} size {} flags {:#x} data {}",
        raw.kind(),
        raw.start(),
        raw.log_pos(),
        raw.bytes().len(),
        raw.flags(),
        event.data().len()
    );
    Ok((raw, crc))
}
