//! The chain's checked binary log files decoded into the change model (`engine::change`): each
//! event decoded once, source transactions delimited, the GTID state carried across what capture
//! left out, and the stream ended right after the stop point.

use std::collections::VecDeque;

use super::events::{EventDecoder, Place};
use super::fetch::{LocalLog, LogReader, open_log, place};
use crate::engine::SourceError;
use crate::engine::change::Change;
use crate::engine::mysql::binlog::{GtidState, Step, kind};
use crate::engine::mysql::scope::Tiling;

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
    events: EventDecoder,
    tiling: Tiling,
}

/// Turns the chain's log files into a stream of [`Change`]s.
pub(crate) struct Decoder<'a> {
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
        }
    }

    /// The next change, or `None` after the last.
    ///
    /// # Errors
    /// A damaged event, a statement that is not text, partial JSON updates, or a resume position
    /// that is not a transaction end of the chain.
    pub(crate) async fn next(&mut self) -> Result<Option<Change>, SourceError> {
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
                events: EventDecoder::default(),
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
        let Some(read) = open.events.read(&raw, checksums, &at)? else {
            return Ok(());
        };
        let step = read.step;
        if let Some(resume) = &self.resume_after {
            if step == Step::Ends {
                let at_stop = self.stop == Some((open.index, raw.log_pos()));
                if log.copy == resume.copy && log.server_file == resume.server_file && raw.log_pos() == resume.position
                {
                    self.resume_after = None;
                    open.events.bytes = 0;
                    self.finished = at_stop;
                } else if at_stop {
                    return Err(past_stop(resume));
                }
            }
            return Ok(());
        }
        let place = Place {
            at,
            copy: &log.copy,
            server_file: &log.server_file,
        };
        open.events.changes(
            &raw,
            read,
            checksums,
            place,
            &mut self.gtids,
            self.wanted,
            &mut self.pending,
        )?;
        if step == Step::Ends && self.stop == Some((open.index, raw.log_pos())) {
            self.finished = true;
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
