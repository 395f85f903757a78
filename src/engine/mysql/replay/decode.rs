//! The chain's checked binary log files decoded into the change model (`engine::change`): each
//! event decoded once, source transactions delimited, the GTID state carried across what capture
//! left out, and the stream ended right after the stop point.

use std::collections::{HashMap, VecDeque};

use mysql_async::binlog::BinlogVersion;
use mysql_async::binlog::events::{
    Event, EventData, FormatDescriptionEvent, QueryEvent, RowsEventData, StatusVarVal, TableMapEvent,
};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;

use super::fetch::{LocalLog, LogReader, open_log, place};
use super::values::from_binlog;
use crate::engine::SourceError;
use crate::engine::change::{Change, Commit, Ending, RowChange, Rows, Session, Statement};
use crate::engine::mysql::binlog::{self, Gtid, GtidState, Statement as StatementKind, Step, Transactions, kind};
use crate::engine::mysql::scope::Tiling;
use crate::repo::model::LogPosition;

/// Where a resumed replay continues: after the transaction that ended at this position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ResumeAfter {
    pub copy: String,
    pub server_file: String,
    pub position: u64,
}

/// The log being read, with what decoding its events needs.
struct OpenLog {
    index: usize,
    reader: LogReader,
    format: FormatDescriptionEvent<'static>,
    table_maps: HashMap<u64, TableMapEvent<'static>>,
    transactions: Transactions,
    gtid: Option<Gtid>,
    tiling: Tiling,
}

/// Turns the chain's log files into a stream of [`Change`]s.
pub(super) struct Decoder<'a> {
    logs: &'a [LocalLog],
    next_log: usize,
    open: Option<OpenLog>,
    pending: VecDeque<Change>,
    /// The source's GTID state after the last transaction decoded.
    gtids: GtidState,
    /// The last transaction to decode: its log and end position; `None`: to the end.
    stop: Option<(usize, u64)>,
    /// Transactions up to and including this one were applied earlier and are passed over.
    resume_after: Option<ResumeAfter>,
    finished: bool,
    /// Which tables' rows are wanted (database, table); others are not decoded.
    wanted: &'a (dyn Fn(&str, &str) -> bool + Sync),
    /// Log bytes read since the last transaction end.
    bytes: u64,
}

impl<'a> Decoder<'a> {
    /// A decoder of `logs` starting with the source's GTID state `gtids`. `nothing`: the stop
    /// point is before the first transaction, so the stream is empty.
    pub(super) fn new(
        logs: &'a [LocalLog],
        gtids: GtidState,
        stop: Option<(usize, u64)>,
        nothing: bool,
        resume_after: Option<ResumeAfter>,
        wanted: &'a (dyn Fn(&str, &str) -> bool + Sync),
    ) -> Self {
        Decoder {
            logs,
            next_log: 0,
            open: None,
            pending: VecDeque::new(),
            gtids,
            stop,
            resume_after,
            finished: nothing,
            wanted,
            bytes: 0,
        }
    }

    /// The next change, or `None` after the last.
    ///
    /// # Errors
    /// A damaged event, a statement that is not text, partial JSON updates, or a resume position
    /// that is not a transaction end of the chain.
    pub(super) async fn next(&mut self) -> Result<Option<Change>, SourceError> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(Some(change));
            }
            if self.finished {
                // The stop point came before the transaction a resumed replay had reached.
                if let Some(resume) = self.resume_after.take() {
                    return Err(past_stop(&resume));
                }
                return Ok(None);
            }
            self.read_event().await?;
        }
    }

    fn skipping(&self) -> bool {
        self.resume_after.is_some()
    }

    /// Reads one event (opening the next log when one ends) and queues what it changes.
    async fn read_event(&mut self) -> Result<(), SourceError> {
        let logs = self.logs;
        if self.open.is_none() {
            let Some(log) = logs.get(self.next_log) else {
                self.finished = true;
                if let Some(resume) = &self.resume_after {
                    return Err(SourceError::Damaged(format!(
                        "--resume: the position the target recorded ({}:{} in copy {}) is not a transaction end \
                         in this chain's files; restore again with --clean",
                        resume.server_file, resume.position, resume.copy
                    )));
                }
                return Ok(());
            };
            self.open = Some(OpenLog {
                index: self.next_log,
                reader: open_log(log).await?,
                format: FormatDescriptionEvent::new(BinlogVersion::Version4),
                table_maps: HashMap::new(),
                transactions: Transactions::default(),
                gtid: None,
                tiling: log.tiling(),
            });
            self.next_log += 1;
        }
        let skipping = self.skipping();
        let open = self.open.as_mut().expect("a log is open");
        let log = &logs[open.index];
        let Some(raw) = open
            .reader
            .next()
            .await
            .map_err(|e| SourceError::Damaged(format!("copy {}: {}: {e}", log.copy, log.stored_key)))?
        else {
            if let Some(skip) = open.tiling.finish().map_err(|e| log.damaged(e))?
                && !skipping
            {
                self.gtids.merge(&skip.gtids);
            }
            self.open = None;
            return Ok(());
        };
        let at = place(log, &raw);
        if raw.kind() != kind::FORMAT_DESCRIPTION
            && let Some(skip) = open.tiling.next(&raw).map_err(|e| log.damaged(e))?
            && !skipping
        {
            // Transactions of other databases, left out by capture, move the GTID state as they
            // did on the source (not while passing over what a resumed replay had applied: the
            // state read from the target already holds them).
            self.gtids.merge(&skip.gtids);
        }
        let checksums = open.reader.checksums();
        self.bytes += raw.bytes().len() as u64;
        let event = Event::read(&open.format, raw.bytes())
            .map_err(|e| SourceError::Damaged(format!("{at}: an event does not decode: {e}")))?;
        if raw.kind() == kind::FORMAT_DESCRIPTION {
            open.format = event
                .read_event::<FormatDescriptionEvent>()
                .map_err(|e| SourceError::Damaged(format!("{at}: the format description does not decode: {e}")))?
                .into_owned()
                .with_footer(event.footer());
            return Ok(());
        }
        let inside_begin = open.transactions == Transactions::Open;
        let step = open.transactions.step(&raw, checksums);
        if let Some(resume) = &self.resume_after {
            if step == Step::Ends {
                let at_stop = self.stop == Some((open.index, raw.log_pos()));
                if log.copy == resume.copy && log.server_file == resume.server_file && raw.log_pos() == resume.position
                {
                    self.resume_after = None;
                    self.bytes = 0;
                    self.finished = at_stop;
                } else if at_stop {
                    return Err(past_stop(resume));
                }
            }
            return Ok(());
        }
        if let Some(gtid) = raw.gtid(checksums) {
            open.gtid = Some(gtid);
        }
        // A source transaction began (BEGIN, or MariaDB's GTID event that stands for it).
        if open.transactions == Transactions::Open && !inside_begin {
            self.pending.push_back(Change::Begin {
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
                open.table_maps.insert(map.table_id(), map.into_owned());
            }
            kind::WRITE_ROWS
            | kind::UPDATE_ROWS
            | kind::DELETE_ROWS
            | kind::WRITE_ROWS_V1
            | kind::UPDATE_ROWS_V1
            | kind::DELETE_ROWS_V1 => {
                if let Some(rows) = rows(&event, &open.table_maps, self.wanted, &at)? {
                    self.pending.push_back(Change::Rows(rows));
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
                    if let Some(statement) = statement(&event, &raw, checksums, !inside_begin, &at)? {
                        self.pending.push_back(Change::Statement(statement));
                    }
                }
            },
            _ => {}
        }
        if step == Step::Ends {
            if let Some(gtid) = open.gtid.take() {
                self.gtids.add(&gtid);
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
            self.pending.push_back(Change::Commit(Commit {
                at,
                copy: log.copy.clone(),
                position: LogPosition::Mysql {
                    file: log.server_file.clone(),
                    position: raw.log_pos(),
                    gtid: Some(self.gtids.to_string()),
                },
                ending,
                bytes: std::mem::take(&mut self.bytes),
            }));
            if self.stop == Some((open.index, raw.log_pos())) {
                self.finished = true;
            }
        }
        Ok(())
    }
}

/// A resumed replay whose target already went past the stop point: a replay cannot go back.
fn past_stop(resume: &ResumeAfter) -> SourceError {
    SourceError::Unsupported(format!(
        "--resume: the target already holds every transaction up to {}:{} (copy {}), which is past the stop \
         point; a replay cannot go back. Restore again with --clean to stop earlier, or resume without --until*",
        resume.server_file, resume.position, resume.copy
    ))
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
