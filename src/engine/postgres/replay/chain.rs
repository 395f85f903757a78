//! The changes of a checked PostgreSQL chain as a replay takes them: in commit order, up to the
//! stop point, without the transactions the full copy's snapshot (or a stopped replay) already
//! holds, without what the copy's filters left out, and — for a selective restore — only what
//! its tables admit. The replay applies them; `restore --to-sql` writes them.

use tokio::fs::File;
use tokio::io::BufReader;

use super::super::changes_file::Records;
use super::super::pgoutput::{Decoder, lsn_text};
use super::{Checked, Only, damaged, next, open, recorded_filters};
use crate::engine::change::Change;
use crate::engine::filter::Filters;
use crate::engine::{RestoreInput, SourceError};

/// The chain's changes, read one at a time: memory does not grow with a transaction.
pub(in crate::engine::postgres) struct ChainChanges<'a> {
    checked: &'a Checked,
    filters: Filters,
    /// The position a stopped replay recorded: transactions committed before it are applied.
    resumed: Option<u64>,
    only: Option<&'a dyn Only>,
    /// The change file being read, and where.
    file: usize,
    records: Option<Records<BufReader<File>>>,
    decoder: Decoder,
    /// Inside a transaction that is passed over.
    skipping: bool,
    /// The stop point was reached.
    done: bool,
}

impl<'a> ChainChanges<'a> {
    /// The changes of `checked`, the chain of `input`.
    ///
    /// # Errors
    /// Recorded filters that do not read.
    pub(in crate::engine::postgres) fn new(
        input: &RestoreInput,
        checked: &'a Checked,
        resumed: Option<u64>,
        only: Option<&'a dyn Only>,
    ) -> Result<Self, SourceError> {
        Ok(ChainChanges {
            checked,
            filters: recorded_filters(input)?,
            resumed,
            only,
            file: 0,
            records: None,
            decoder: Decoder::default(),
            skipping: false,
            done: false,
        })
    }

    /// The next change to apply; `None` at the stop point or the chain's end.
    ///
    /// # Errors
    /// A damaged change file, or a change a selective restore cannot take.
    pub(in crate::engine::postgres) async fn next(&mut self) -> Result<Option<Change>, SourceError> {
        while !self.done {
            let Some(file) = self.checked.files.get(self.file) else {
                self.done = true;
                break;
            };
            let records = match &mut self.records {
                Some(records) => records,
                None => {
                    self.decoder = Decoder::default();
                    self.skipping = false;
                    self.records.insert(open(file).await?)
                }
            };
            let Some((lsn, message)) = next(records, file).await? else {
                self.records = None;
                self.file += 1;
                continue;
            };
            let Some(change) = self
                .decoder
                .decode(&lsn_text(lsn), &message)
                .map_err(|e| damaged(&file.copy, &file.key, e))?
            else {
                continue;
            };
            if let Change::Begin { transaction, .. } = &change {
                let commit_lsn = self.decoder.commit_lsn();
                if self.checked.stop.before.is_some_and(|before| commit_lsn >= before) {
                    self.done = true;
                    break;
                }
                // Transactions commit in this order, each after the one before ended: one
                // whose commit lies before the recorded end was applied already.
                self.skipping = transaction.is_some_and(|xid| self.checked.snapshot.holds(xid as u32, commit_lsn))
                    || self.resumed.is_some_and(|done| commit_lsn < done);
            }
            if self.skipping {
                if matches!(change, Change::Commit(_)) {
                    self.skipping = false;
                }
                continue;
            }
            // What the full copy left out (its filters) the replay leaves out too.
            let change = match change {
                Change::Rows(rows) if !self.filters.data_included(&rows.database, &rows.table) => continue,
                Change::Truncate(mut truncate) => {
                    truncate
                        .tables
                        .retain(|(schema, table)| self.filters.data_included(schema, table));
                    if truncate.tables.is_empty() {
                        continue;
                    }
                    Change::Truncate(truncate)
                }
                change => change,
            };
            let change = match self.only {
                Some(only) => match only.admit(change)? {
                    Some(change) => change,
                    None => continue,
                },
                None => change,
            };
            return Ok(Some(change));
        }
        Ok(None)
    }
}
