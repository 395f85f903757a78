//! MySQL/MariaDB binary log bytes: how events are framed and checked (CRC32), the stored form of
//! an incremental copy's log files, where transactions begin and end, and GTID positions.
//!
//! Stored files are real binary logs (`\xfebin`, the format description event, then the server's
//! events unchanged), so `mysqlbinlog` reads them once decoded (`zstd -d` today).

use std::fmt;

use tokio::io::AsyncRead;

use crate::streams::fill;

mod gtid;
#[cfg(test)]
mod tests;

pub use gtid::{Gtid, GtidState};

/// The first four bytes of every binary log file.
pub const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
/// Length of the common event header (binlog version 4).
pub const HEADER_LEN: usize = 19;
/// Length of the CRC32 that ends an event when checksums are on.
const CRC_LEN: usize = 4;
/// An event claiming to be larger than this is damage: the server never writes one.
const MAX_EVENT: usize = 1 << 30;

/// Event type codes cairn acts on.
pub mod kind {
    pub const QUERY: u8 = 2;
    pub const STOP: u8 = 3;
    pub const ROTATE: u8 = 4;
    pub const INTVAR: u8 = 5;
    pub const RAND: u8 = 13;
    pub const USER_VAR: u8 = 14;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const WRITE_ROWS_V1: u8 = 23;
    pub const UPDATE_ROWS_V1: u8 = 24;
    pub const DELETE_ROWS_V1: u8 = 25;
    pub const HEARTBEAT: u8 = 27;
    pub const MYSQL_ROWS_QUERY: u8 = 29;
    pub const WRITE_ROWS: u8 = 30;
    pub const UPDATE_ROWS: u8 = 31;
    pub const DELETE_ROWS: u8 = 32;
    pub const MYSQL_GTID: u8 = 33;
    pub const MYSQL_ANONYMOUS_GTID: u8 = 34;
    pub const MYSQL_PARTIAL_UPDATE_ROWS: u8 = 39;
    pub const MYSQL_TRANSACTION_PAYLOAD: u8 = 40;
    pub const MARIADB_ANNOTATE_ROWS: u8 = 160;
    pub const MARIADB_GTID: u8 = 162;
    pub const MARIADB_QUERY_COMPRESSED: u8 = 165;
    pub const MARIADB_ROWS_COMPRESSED_FIRST: u8 = 166;
    pub const MARIADB_ROWS_COMPRESSED_LAST: u8 = 171;
}

/// Header flag: the file was not closed properly (set on the format event of the active file).
const FLAG_IN_USE: u16 = 0x1;
/// Header flag: the server made this event up for the stream; it is not in any file.
pub const FLAG_ARTIFICIAL: u16 = 0x20;

/// One event, its bytes exactly as the server has them in its file.
#[derive(Clone, PartialEq, Eq)]
pub struct RawEvent {
    bytes: Vec<u8>,
}

impl fmt::Debug for RawEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RawEvent(type {}, {} bytes, end {})",
            self.kind(),
            self.bytes.len(),
            self.log_pos()
        )
    }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

impl RawEvent {
    /// Takes the bytes of one whole event.
    ///
    /// # Errors
    /// A sentence when the bytes are not one event (too short, or the size field disagrees).
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < HEADER_LEN {
            return Err(format!("an event of {} bytes is shorter than its header", bytes.len()));
        }
        let size = le_u32(&bytes, 9) as usize;
        if size != bytes.len() {
            return Err(format!("an event says it has {size} bytes but has {}", bytes.len()));
        }
        Ok(RawEvent { bytes })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Seconds since the epoch at which the statement that wrote the event started.
    pub fn timestamp(&self) -> u32 {
        le_u32(&self.bytes, 0)
    }

    pub fn kind(&self) -> u8 {
        self.bytes[4]
    }

    pub fn server_id(&self) -> u32 {
        le_u32(&self.bytes, 5)
    }

    /// Where the next event starts in the server's file; 0 for events the server made up.
    pub fn log_pos(&self) -> u64 {
        u64::from(le_u32(&self.bytes, 13))
    }

    pub fn flags(&self) -> u16 {
        u16::from_le_bytes([self.bytes[17], self.bytes[18]])
    }

    /// Where this event starts in the server's file.
    pub fn start(&self) -> u64 {
        self.log_pos().saturating_sub(self.bytes.len() as u64)
    }

    /// Not in any file: a fake rotate, a heartbeat, a resent format event.
    pub fn is_artificial(&self) -> bool {
        self.flags() & FLAG_ARTIFICIAL != 0 || self.log_pos() == 0 || self.kind() == kind::HEARTBEAT
    }

    /// The event's data after the header, without the CRC.
    pub fn body(&self, checksums: bool) -> &[u8] {
        let end = if checksums || self.kind() == kind::FORMAT_DESCRIPTION {
            self.bytes.len().saturating_sub(CRC_LEN).max(HEADER_LEN)
        } else {
            self.bytes.len()
        };
        &self.bytes[HEADER_LEN..end]
    }

    /// For a format description event: whether the events after it end with a CRC32.
    ///
    /// # Errors
    /// A sentence naming an unknown checksum algorithm.
    pub fn checksum_algorithm(&self) -> Result<bool, String> {
        // Servers since 5.6.1 end the format event with the algorithm byte and a checksum.
        let at = self.bytes.len().checked_sub(CRC_LEN + 1).filter(|at| *at >= HEADER_LEN);
        match at.map(|at| self.bytes[at]) {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(other) => Err(format!("unknown binlog checksum algorithm {other}")),
            None => Err("a format description event too short to name its checksum".into()),
        }
    }

    /// Checks the event's CRC32 when `checksums` says events carry one (format events carry it
    /// whenever their own algorithm says so).
    ///
    /// # Errors
    /// A sentence giving both checksums.
    pub fn verify(&self, checksums: bool) -> Result<(), String> {
        let is_format = self.kind() == kind::FORMAT_DESCRIPTION;
        let on = if is_format {
            self.checksum_algorithm()?
        } else {
            checksums
        };
        if !on {
            return Ok(());
        }
        if self.bytes.len() < HEADER_LEN + CRC_LEN {
            return Err("an event too short to hold its CRC32".into());
        }
        let end = self.bytes.len() - CRC_LEN;
        let stored = le_u32(&self.bytes, end);
        let mut hasher = crc32fast::Hasher::new();
        if is_format && self.flags() & FLAG_IN_USE != 0 {
            // The server computes the format event's checksum as the file will be when closed.
            let mut header = self.bytes[..HEADER_LEN].to_vec();
            let flags = self.flags() & !FLAG_IN_USE;
            header[17..19].copy_from_slice(&flags.to_le_bytes());
            hasher.update(&header);
            hasher.update(&self.bytes[HEADER_LEN..end]);
        } else {
            hasher.update(&self.bytes[..end]);
        }
        let computed = hasher.finalize();
        if computed == stored {
            Ok(())
        } else {
            Err(format!("CRC32 mismatch (stored {stored:08x}, computed {computed:08x})"))
        }
    }

    /// A rotate event's next file and position.
    pub fn rotate_target(&self, checksums: bool) -> Option<(String, u64)> {
        let body = self.body(checksums);
        (self.kind() == kind::ROTATE && body.len() >= 8)
            .then(|| (String::from_utf8_lossy(&body[8..]).into_owned(), le_u64(body, 0)))
    }

    /// A query event's default database and statement text.
    pub fn query(&self, checksums: bool) -> Option<(String, &[u8])> {
        if self.kind() != kind::QUERY {
            return None;
        }
        let body = self.body(checksums);
        // thread id 4, exec time 4, schema length 1, error code 2, status vars length 2.
        if body.len() < 13 {
            return None;
        }
        let schema_len = body[8] as usize;
        let status_len = u16::from_le_bytes([body[11], body[12]]) as usize;
        let schema_at = 13 + status_len;
        let query_at = schema_at + schema_len + 1;
        if body.len() < query_at {
            return None;
        }
        let schema = String::from_utf8_lossy(&body[schema_at..schema_at + schema_len]).into_owned();
        Some((schema, &body[query_at..]))
    }

    /// A table map event's database (its post-header is the table id, 6 bytes, and flags, 2).
    pub fn table_map_database(&self, checksums: bool) -> Option<String> {
        if self.kind() != kind::TABLE_MAP {
            return None;
        }
        let body = self.body(checksums);
        let length = *body.get(8)? as usize;
        let name = body.get(9..9 + length)?;
        Some(String::from_utf8_lossy(name).into_owned())
    }

    /// Whether this is a rows event, and the last of its statement (flag `STMT_END_F` after the
    /// 6-byte table id of its post-header).
    pub fn rows_statement_end(&self, checksums: bool) -> Option<bool> {
        if !is_rows(self.kind()) {
            return None;
        }
        let body = self.body(checksums);
        let flags = u16::from_le_bytes([*body.get(6)?, *body.get(7)?]);
        Some(flags & 0x0001 != 0)
    }

    /// A GTID event's transaction id, as the server writes it in its GTID positions.
    pub fn gtid(&self, checksums: bool) -> Option<Gtid> {
        let body = self.body(checksums);
        match self.kind() {
            kind::MARIADB_GTID if body.len() >= 13 => Some(Gtid::Mariadb {
                domain: le_u32(body, 8),
                server: self.server_id(),
                sequence: le_u64(body, 0),
                standalone: body[12] & 1 != 0,
            }),
            kind::MYSQL_GTID if body.len() >= 25 => {
                let sid = &body[1..17];
                let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
                let uuid = format!(
                    "{}-{}-{}-{}-{}",
                    &hex[0..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..32]
                );
                Some(Gtid::Mysql {
                    uuid,
                    number: le_u64(body, 17),
                })
            }
            _ => None,
        }
    }
}

/// Whether events of `kind` carry rows of a table map.
pub fn is_rows(kind: u8) -> bool {
    matches!(
        kind,
        kind::WRITE_ROWS_V1
            | kind::UPDATE_ROWS_V1
            | kind::DELETE_ROWS_V1
            | kind::WRITE_ROWS
            | kind::UPDATE_ROWS
            | kind::DELETE_ROWS
            | kind::MYSQL_PARTIAL_UPDATE_ROWS
    )
}

/// What an event does to the transaction around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Outside or inside a transaction, nothing changes.
    Within,
    /// The event completes a transaction: after it, the log is at a transaction boundary.
    Ends,
}

/// Follows transactions through a stream of events, so positions are only ever taken at
/// boundaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transactions {
    #[default]
    Between,
    /// After a GTID event, before the statement or BEGIN.
    AfterGtid,
    /// Inside BEGIN … COMMIT.
    Open,
}

impl Transactions {
    pub fn is_open(&self) -> bool {
        *self != Transactions::Between
    }

    /// Advances past `event`.
    pub fn step(&mut self, event: &RawEvent, checksums: bool) -> Step {
        match event.kind() {
            // MariaDB's GTID event stands for BEGIN, unless the transaction is one statement.
            kind::MARIADB_GTID => {
                let standalone = matches!(event.gtid(checksums), Some(Gtid::Mariadb { standalone: true, .. }));
                *self = if standalone {
                    Transactions::AfterGtid
                } else {
                    Transactions::Open
                };
                Step::Within
            }
            kind::MYSQL_GTID | kind::MYSQL_ANONYMOUS_GTID => {
                *self = Transactions::AfterGtid;
                Step::Within
            }
            kind::XID => {
                *self = Transactions::Between;
                Step::Ends
            }
            kind::QUERY => {
                let Some((_, query)) = event.query(checksums) else {
                    return Step::Within;
                };
                match (*self, statement_kind(query)) {
                    (_, Statement::Begin) => {
                        *self = Transactions::Open;
                        Step::Within
                    }
                    (Transactions::Open, Statement::Commit) => {
                        *self = Transactions::Between;
                        Step::Ends
                    }
                    (Transactions::Open, _) => Step::Within,
                    (_, _) => {
                        *self = Transactions::Between;
                        Step::Ends
                    }
                }
            }
            _ => Step::Within,
        }
    }
}

/// How a query event's statement affects the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
    Begin,
    /// COMMIT, or ROLLBACK (a transaction that touched non-transactional tables).
    Commit,
    Other,
}

pub fn statement_kind(query: &[u8]) -> Statement {
    let text = String::from_utf8_lossy(&query[..query.len().min(16)])
        .trim()
        .to_ascii_uppercase();
    let word = text.trim_end_matches(';');
    match word {
        "BEGIN" | "XA START" => Statement::Begin,
        "COMMIT" | "ROLLBACK" => Statement::Commit,
        _ => Statement::Other,
    }
}

/// Reads the events of a stored log file, checking the magic, every event's frame and CRC32.
pub struct EventReader<R> {
    input: R,
    /// Bytes read so far, for naming where damage is.
    offset: u64,
    checksums: bool,
}

/// Damage or a read failure at a place in a stored log file.
#[derive(Debug, thiserror::Error)]
#[error("at byte {offset}: {detail}")]
pub struct ReadError {
    pub offset: u64,
    pub detail: String,
}

impl<R: AsyncRead + Unpin> EventReader<R> {
    /// Reads and checks the magic header.
    ///
    /// # Errors
    /// [`ReadError`] when the file does not start like a binary log.
    pub async fn open(mut input: R) -> Result<Self, ReadError> {
        let mut magic = [0u8; 4];
        let got = fill(&mut input, &mut magic).await.map_err(|e| ReadError {
            offset: 0,
            detail: e.to_string(),
        })?;
        if got != 4 || magic != MAGIC {
            return Err(ReadError {
                offset: 0,
                detail: "not a binary log: the magic header \\xfebin is missing".into(),
            });
        }
        Ok(EventReader {
            input,
            offset: 4,
            checksums: false,
        })
    }

    /// Whether the events so far carry CRC32s (as the last format event said).
    pub fn checksums(&self) -> bool {
        self.checksums
    }

    /// The next event, checked; `None` at the end of the file.
    ///
    /// # Errors
    /// [`ReadError`] for a truncated or damaged event.
    pub async fn next(&mut self) -> Result<Option<RawEvent>, ReadError> {
        let at = self.offset;
        let fail = |detail: String| ReadError { offset: at, detail };
        let mut header = [0u8; HEADER_LEN];
        let got = fill(&mut self.input, &mut header)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_LEN {
            return Err(fail(format!(
                "the file ends inside an event header ({got} of {HEADER_LEN} bytes)"
            )));
        }
        let size = le_u32(&header, 9) as usize;
        if !(HEADER_LEN..=MAX_EVENT).contains(&size) {
            return Err(fail(format!(
                "an event header gives an impossible size of {size} bytes"
            )));
        }
        let mut bytes = vec![0u8; size];
        bytes[..HEADER_LEN].copy_from_slice(&header);
        let got = fill(&mut self.input, &mut bytes[HEADER_LEN..])
            .await
            .map_err(|e| fail(e.to_string()))?;
        if got < size - HEADER_LEN {
            return Err(fail(format!(
                "the file ends inside an event ({} of {size} bytes)",
                got + HEADER_LEN
            )));
        }
        let event = RawEvent::new(bytes).map_err(fail)?;
        event
            .verify(self.checksums)
            .map_err(|e| fail(format!("event of type {}: {e}", event.kind())))?;
        if event.kind() == kind::FORMAT_DESCRIPTION {
            self.checksums = event.checksum_algorithm().map_err(fail)?;
        }
        self.offset += size as u64;
        Ok(Some(event))
    }
}

/// Orders binary log file names: `binlog.000009` before `binlog.000010`, and a counter that
/// grew a digit (`binlog.999999` before `binlog.1000000`).
pub fn file_order(name: &str) -> (String, u64) {
    match name.rsplit_once('.') {
        Some((base, number)) if number.chars().all(|c| c.is_ascii_digit()) => {
            (base.to_string(), number.parse().unwrap_or(u64::MAX))
        }
        _ => (name.to_string(), 0),
    }
}
