//! Where a replay stops: a point in the source's history, after the last whole transaction
//! before it.

use std::fmt;

use crate::engine::mysql::binlog::{Gtid, file_order};
use crate::engine::postgres::pgoutput::{lsn_text, parse_lsn};
use crate::repo::model::LogPosition;

/// The stop-point arguments as given on the command line; at most one is set.
#[derive(Debug, Clone, Copy, Default)]
pub struct UntilArgs<'a> {
    /// `--until`: a time.
    pub time: Option<&'a str>,
    /// `--until-gtid` (MySQL/MariaDB).
    pub gtid: Option<&'a str>,
    /// `--until-position FILE:POS` (MySQL/MariaDB).
    pub position: Option<&'a str>,
    /// `--until-lsn` (PostgreSQL).
    pub lsn: Option<&'a str>,
    /// `--until-xid` (PostgreSQL).
    pub xid: Option<&'a str>,
}

/// A point in the source's history where a replay stops, after the last whole transaction
/// before it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Until {
    /// Every transaction that started at or before this time.
    Time(chrono::DateTime<chrono::Utc>),
    /// Up to and including this transaction.
    Gtid(String),
    /// Every transaction that ended at or before this position.
    Position { file: String, position: u64 },
    /// Every PostgreSQL transaction whose commit ended at or before this LSN.
    Lsn(#[serde(serialize_with = "lsn_as_text")] u64),
    /// Up to and including this PostgreSQL transaction: its 32-bit id as decoding gives it, or
    /// the 64-bit one `pg_current_xact_id()` shows.
    Xid(u64),
}

fn lsn_as_text<S: serde::Serializer>(lsn: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&lsn_text(*lsn))
}

impl fmt::Display for Until {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Until::Time(time) => write!(f, "the last transaction started at or before {}", time.to_rfc3339()),
            Until::Gtid(gtid) => write!(f, "transaction {gtid}"),
            Until::Position { file, position } => {
                write!(f, "the last transaction ending at or before {file}:{position}")
            }
            Until::Lsn(lsn) => write!(f, "the last transaction ending at or before LSN {}", lsn_text(*lsn)),
            Until::Xid(xid) => write!(f, "transaction {xid}"),
        }
    }
}

/// A time given on the command line to `flag`: RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC.
///
/// # Errors
/// What was expected, naming the flag.
pub fn parse_time(flag: &str, text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").map(|t| t.and_utc()))
        .map_err(|_| {
            format!(
                "{flag} {text:?}: expected a time like 2026-11-21T08:30:00Z, 2026-11-21T09:30:00+01:00 or \
                 \"2026-11-21 08:30:00\" (UTC)"
            )
        })
}

impl Until {
    /// The stop point of the `--until` (a time), `--until-gtid`, `--until-position`,
    /// `--until-lsn` or `--until-xid` argument; at most one is given.
    ///
    /// # Errors
    /// One sentence naming the argument and the form expected.
    pub fn parse(args: UntilArgs<'_>) -> Result<Option<Until>, String> {
        let UntilArgs {
            time,
            gtid,
            position,
            lsn,
            xid,
        } = args;
        if let Some(text) = lsn {
            return parse_lsn(text.trim())
                .map(|lsn| Some(Until::Lsn(lsn)))
                .map_err(|e| format!("--until-lsn {e}"));
        }
        if let Some(text) = xid {
            return match text.trim().parse::<u64>() {
                Ok(xid) if xid >= 3 => Ok(Some(Until::Xid(xid))),
                _ => Err(format!(
                    "--until-xid {text:?}: expected a transaction id, a whole number like 7481 (txid_current() or \
                     xmin on the source)"
                )),
            };
        }
        if let Some(text) = time {
            return Ok(Some(Until::Time(parse_time("--until", text)?)));
        }
        if let Some(text) = gtid {
            Gtid::parse(text).map_err(|e| format!("--until-gtid {e}"))?;
            return Ok(Some(Until::Gtid(text.trim().to_string())));
        }
        if let Some(text) = position {
            let parsed = text
                .rsplit_once(':')
                .and_then(|(file, pos)| Some((file, pos.parse::<u64>().ok()?)))
                .filter(|(file, _)| !file.is_empty());
            let Some((file, position)) = parsed else {
                return Err(format!(
                    "--until-position {text:?}: expected FILE:POS, e.g. binlog.000042:1234"
                ));
            };
            return Ok(Some(Until::Position {
                file: file.to_string(),
                position,
            }));
        }
        Ok(None)
    }

    /// Whether this is a log position beyond `end` (in the same engine's log).
    pub fn is_after(&self, end: &LogPosition) -> bool {
        match (self, end) {
            (
                Until::Position { file, position },
                LogPosition::Mysql {
                    file: end,
                    position: at,
                    ..
                },
            ) => (file_order(file), *position) > (file_order(end), *at),
            (Until::Lsn(lsn), LogPosition::Postgres { lsn: end, .. }) => parse_lsn(end).is_ok_and(|end| *lsn > end),
            _ => false,
        }
    }
}
