//! One binary-log event turned into the change model: the format description kept, table maps
//! remembered, source transactions delimited (`Begin` … `Commit`), rows and statements decoded.
//! Shared by the replay of stored files (`decode.rs`) and the live follower (`follow/`).

use std::collections::{HashMap, VecDeque};

use mysql_async::binlog::BinlogVersion;
use mysql_async::binlog::events::{
    Event, EventData, FormatDescriptionEvent, QueryEvent, RowsEventData, StatusVarVal, TableMapEvent,
};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;

use super::values::from_binlog;
use crate::engine::SourceError;
use crate::engine::change::{Change, Commit, Ending, RowChange, Rows, Session, Statement};
use crate::engine::mysql::binlog::{
    self, Gtid, GtidState, RawEvent, Statement as StatementKind, Step, Transactions, kind,
};
use crate::repo::model::LogPosition;

/// An event read, before its changes are taken: the decoded event, whether a `BEGIN` was open
/// before it, and what it did to the transaction.
pub(in crate::engine::mysql) struct Read {
    event: Event,
    inside_begin: bool,
    pub step: Step,
}

/// Where the changes of an event are: for errors, and the position a commit records.
pub(in crate::engine::mysql) struct Place<'a> {
    pub at: String,
    /// The copy the event was stored in (`live` for the follower).
    pub copy: &'a str,
    pub server_file: &'a str,
}

/// The decoding state of one log: the format, table maps, the open transaction.
pub(in crate::engine::mysql) struct EventDecoder {
    format: FormatDescriptionEvent<'static>,
    table_maps: HashMap<u64, TableMapEvent<'static>>,
    pub transactions: Transactions,
    gtid: Option<Gtid>,
    /// Log bytes read since the last transaction end.
    pub bytes: u64,
}

impl Default for EventDecoder {
    fn default() -> Self {
        EventDecoder {
            format: FormatDescriptionEvent::new(BinlogVersion::Version4),
            table_maps: HashMap::new(),
            transactions: Transactions::default(),
            gtid: None,
            bytes: 0,
        }
    }
}

impl EventDecoder {
    /// Decodes `raw` and steps the transaction; `None` for a format description, which is
    /// kept for the events after it.
    ///
    /// # Errors
    /// An event that does not decode.
    pub(in crate::engine::mysql) fn read(
        &mut self,
        raw: &RawEvent,
        checksums: bool,
        at: &str,
    ) -> Result<Option<Read>, SourceError> {
        self.bytes += raw.bytes().len() as u64;
        let event = Event::read(&self.format, raw.bytes())
            .map_err(|e| SourceError::Damaged(format!("{at}: an event does not decode: {e}")))?;
        if raw.kind() == kind::FORMAT_DESCRIPTION {
            self.format = event
                .read_event::<FormatDescriptionEvent>()
                .map_err(|e| SourceError::Damaged(format!("{at}: the format description does not decode: {e}")))?
                .into_owned()
                .with_footer(event.footer());
            return Ok(None);
        }
        let inside_begin = self.transactions == Transactions::Open;
        let step = self.transactions.step(raw, checksums);
        Ok(Some(Read {
            event,
            inside_begin,
            step,
        }))
    }

    /// Queues the changes of an event [`EventDecoder::read`] returned; at a transaction's end,
    /// its `Commit` with the position after it and the GTID state `gtids` moved on.
    ///
    /// # Errors
    /// Rows or statements that do not decode, or that cairn cannot replay.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::engine::mysql) fn changes(
        &mut self,
        raw: &RawEvent,
        read: Read,
        checksums: bool,
        place: Place<'_>,
        gtids: &mut GtidState,
        wanted: &(dyn Fn(&str, &str) -> bool + Sync),
        pending: &mut VecDeque<Change>,
    ) -> Result<(), SourceError> {
        let Read {
            event,
            inside_begin,
            step,
        } = read;
        let at = place.at;
        if let Some(gtid) = raw.gtid(checksums) {
            self.gtid = Some(gtid);
        }
        // A source transaction began (BEGIN, or MariaDB's GTID event that stands for it).
        if self.transactions == Transactions::Open && !inside_begin {
            pending.push_back(Change::Begin {
                at: at.clone(),
                transaction: None,
                committed_at: None,
            });
        }
        match raw.kind() {
            kind::TABLE_MAP => {
                let map = event
                    .read_event::<TableMapEvent>()
                    .map_err(|e| SourceError::Damaged(format!("{at}: a table map does not decode: {e}")))?;
                self.table_maps.insert(map.table_id(), map.into_owned());
            }
            kind::WRITE_ROWS
            | kind::UPDATE_ROWS
            | kind::DELETE_ROWS
            | kind::WRITE_ROWS_V1
            | kind::UPDATE_ROWS_V1
            | kind::DELETE_ROWS_V1 => {
                if let Some(rows) = rows(&event, &self.table_maps, wanted, &at)? {
                    pending.push_back(Change::Rows(rows));
                }
            }
            kind::MYSQL_PARTIAL_UPDATE_ROWS => {
                return Err(SourceError::Unsupported(format!(
                    "{at}: partial JSON updates are not supported; set binlog_row_value_options = ''"
                )));
            }
            kind::QUERY => match raw.query(checksums).map(|(_, q)| binlog::statement_kind(q)) {
                Some(StatementKind::Begin) => {}
                Some(StatementKind::Commit) if inside_begin => {}
                _ => {
                    if let Some(statement) = statement(&event, raw, checksums, !inside_begin, &at)? {
                        pending.push_back(Change::Statement(statement));
                    }
                }
            },
            _ => {}
        }
        if step == Step::Ends {
            if let Some(gtid) = self.gtid.take() {
                gtids.add(&gtid);
            }
            let rollback = raw.kind() == kind::QUERY
                && raw
                    .query(checksums)
                    .is_some_and(|(_, q)| String::from_utf8_lossy(q).trim().eq_ignore_ascii_case("ROLLBACK"));
            let ending = match (rollback, inside_begin) {
                (true, _) => Ending::Rollback,
                (false, true) => Ending::Commit,
                (false, false) => Ending::Standalone,
            };
            pending.push_back(Change::Commit(Commit {
                at,
                copy: place.copy.to_string(),
                position: LogPosition::Mysql {
                    file: place.server_file.to_string(),
                    position: raw.log_pos(),
                    gtid: Some(gtids.to_string()),
                },
                ending,
                bytes: std::mem::take(&mut self.bytes),
            }));
        }
        Ok(())
    }
}

/// The row changes of a rows event, or `None` for a table that is not wanted.
fn rows(
    event: &Event,
    table_maps: &HashMap<u64, TableMapEvent<'static>>,
    wanted: &(dyn Fn(&str, &str) -> bool + Sync),
    at: &str,
) -> Result<Option<Rows>, SourceError> {
    let data = match event.read_data() {
        Ok(Some(EventData::RowsEvent(data))) => data,
        Ok(_) => return Ok(None),
        Err(e) => return Err(SourceError::Damaged(format!("{at}: a row event does not decode: {e}"))),
    };
    let Some(map) = table_maps.get(&data.table_id()) else {
        return Err(SourceError::Damaged(format!(
            "{at}: a row event for table id {} comes without its table map",
            data.table_id()
        )));
    };
    let database = map.database_name().into_owned();
    let table = map.table_name().into_owned();
    if !wanted(&database, &table) {
        return Ok(None);
    }
    let foreign_key_checks = !data
        .flags()
        .contains(mysql_async::binlog::RowsEventFlags::NO_FOREIGN_KEY_CHECKS);
    let is_insert = matches!(
        data,
        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_)
    );
    let is_update = matches!(
        data,
        RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_)
    );
    let mut changes = Vec::new();
    for row in data.rows(map) {
        let (before, after) = row.map_err(|e| SourceError::Damaged(format!("{at}: a row does not decode: {e}")))?;
        let before = before.map(|r| image(r, at)).transpose()?;
        let after = after.map(|r| image(r, at)).transpose()?;
        changes.push(match (is_insert, is_update, before, after) {
            (true, _, _, Some(after)) => RowChange::Insert { after },
            (true, _, _, None) => continue,
            (_, true, Some(before), Some(after)) => RowChange::Update { before, after },
            (_, true, _, _) => {
                return Err(SourceError::Damaged(format!("{at}: an update without both row images")));
            }
            (_, _, Some(before), _) => RowChange::Delete { before },
            (_, _, None, _) => continue,
        });
    }
    Ok(Some(Rows {
        at: at.to_string(),
        database,
        table,
        columns: map.columns_count(),
        names: Vec::new(),
        key: Vec::new(),
        key_unique: true,
        foreign_key_checks,
        changes,
    }))
}

/// A row image's values, in column order.
fn image(row: BinlogRow, at: &str) -> Result<Vec<crate::engine::change::Value>, SourceError> {
    row.unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, value): (usize, BinlogValue<'static>)| {
            from_binlog(value).map_err(|e| SourceError::Unsupported(format!("{at}: column {}: {e}", i + 1)))
        })
        .collect()
}

/// A statement the source logged as text, with the session it ran in.
fn statement(
    event: &Event,
    raw: &binlog::RawEvent,
    checksums: bool,
    standalone: bool,
    at: &str,
) -> Result<Option<Statement>, SourceError> {
    let Some((database, text)) = raw.query(checksums) else {
        return Ok(None);
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return Err(SourceError::Unsupported(format!(
            "{at}: a statement in the binary log is not UTF-8 text; cairn cannot replay it"
        )));
    };
    let mut session = Session::default();
    if let Ok(query) = event.read_event::<QueryEvent>() {
        for var in query.status_vars().iter() {
            match var.get_value() {
                Ok(StatusVarVal::SqlMode(mode)) => session.sql_mode = Some(mode.0),
                Ok(StatusVarVal::Charset {
                    charset_client,
                    collation_connection,
                    collation_server,
                }) => session.charset = Some((charset_client, collation_connection, collation_server)),
                Ok(StatusVarVal::TimeZone(zone)) if !zone.as_bytes().is_empty() => {
                    session.time_zone = Some(String::from_utf8_lossy(zone.as_bytes()).into_owned());
                }
                _ => {}
            }
        }
    }
    Ok(Some(Statement {
        at: at.to_string(),
        database,
        text: text.to_string(),
        session,
        standalone,
    }))
}
