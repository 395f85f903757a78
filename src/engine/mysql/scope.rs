//! Which events of the binary log a source's incrementals keep, and how what they leave out is
//! recorded and checked: a source that names one database stores only that database's
//! transactions and statements, and every byte range it leaves out is recorded with the
//! transactions and GTIDs in it, so a replay can prove the stored events and the recorded gaps
//! cover the server's log without a hole.
//!
//! Pure logic over [`RawEvent`]s; capture and replay do the I/O.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::attribution::{is_account_statement, statement_database};
use super::binlog::{self, Gtid, GtidState, RawEvent, Statement, Step, Transactions, kind};

/// How a transaction of the log ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Something of it was stored.
    Kept,
    /// It belongs to other databases only: none of it was stored.
    Dropped(Option<Gtid>),
}

/// What one event led to.
#[derive(Debug, Default)]
pub struct Pushed {
    /// Events to store now, in log order (held ones first).
    pub store: Vec<RawEvent>,
    /// Events left out for good.
    pub dropped: u64,
    /// The transaction this event ended, if it ended one.
    pub ended: Option<Ended>,
}

/// Keeps the events of `databases` and what they need (their transaction's GTID and BEGIN, the
/// table maps of their rows), in log order, holding back only a transaction's head and the
/// table maps of the statement in progress — never a whole transaction.
///
/// Rules (docs/mysql.md, "Incremental copies"): a transaction of other databases only is left
/// out whole; in a transaction that touches ours, the statements of other databases are left
/// out; a statement whose rows span ours and others (a multi-table update, a cascade) is kept
/// whole; logged statements are attributed by the rule replay uses; account statements are left
/// out; anything not understood inside a transaction (XA) keeps it.
#[derive(Debug)]
pub struct ScopeFilter {
    databases: BTreeSet<String>,
    transactions: Transactions,
    /// The open transaction's GTID and BEGIN, until something of it is kept.
    head: Vec<RawEvent>,
    /// Events that belong to the next statement (variables, annotations, table maps), with
    /// whether a table map is ours.
    attached: Vec<(RawEvent, Option<bool>)>,
    /// Whether the rows statement in progress is kept, once its first rows event decided it.
    statement: Option<bool>,
    /// Something of the open transaction was stored.
    kept: bool,
    gtid: Option<Gtid>,
    /// Statements kept whole although some of their rows belong to other databases.
    pub mixed_statements: u64,
}

impl ScopeFilter {
    pub fn new(databases: BTreeSet<String>) -> Self {
        ScopeFilter {
            databases,
            transactions: Transactions::default(),
            head: Vec::new(),
            attached: Vec::new(),
            statement: None,
            kept: false,
            gtid: None,
            mixed_statements: 0,
        }
    }

    /// Nothing is held back: the log is between transactions.
    pub fn idle(&self) -> bool {
        !self.transactions.is_open() && self.head.is_empty() && self.attached.is_empty()
    }

    /// Decides about one event of the log (not a format description, rotation or artificial
    /// event); `checksums` says whether events end with a CRC.
    pub fn push(&mut self, event: RawEvent, checksums: bool) -> Pushed {
        let was_open = self.transactions.is_open();
        let step = self.transactions.step(&event, checksums);
        let mut pushed = Pushed::default();
        let kind = event.kind();
        if matches!(kind, kind::MARIADB_GTID | kind::MYSQL_GTID | kind::MYSQL_ANONYMOUS_GTID) {
            self.start(event.gtid(checksums));
            self.head.push(event);
            return pushed;
        }
        if !was_open && !self.transactions.is_open() && step == Step::Within {
            // Between transactions and not starting one: the log's own events (stop, incident,
            // GTID lists, checkpoints) hold no rows and say where the log is.
            pushed.store.push(event);
            return pushed;
        }
        match kind {
            kind::QUERY => {
                let Some((schema, text)) = event
                    .query(checksums)
                    .map(|(s, t)| (s, String::from_utf8_lossy(t).into_owned()))
                else {
                    self.keep(event, &mut pushed);
                    return self.maybe_end(step, pushed);
                };
                match binlog::statement_kind(text.as_bytes()) {
                    Statement::Begin => {
                        if !was_open {
                            self.start(None);
                        }
                        self.head.push(event);
                    }
                    Statement::Commit if step == Step::Ends => {
                        self.keep_if_kept(event, &mut pushed);
                    }
                    _ => {
                        let xa = text
                            .trim_start()
                            .get(..3)
                            .is_some_and(|w| w.eq_ignore_ascii_case("XA "));
                        let ours = xa
                            || (statement_database(&text, &schema, &self.databases).is_some()
                                && !is_account_statement(&text));
                        if ours {
                            self.keep(event, &mut pushed);
                        } else {
                            pushed.dropped += 1 + self.attached.len() as u64;
                            self.attached.clear();
                        }
                    }
                }
            }
            kind::XID => self.keep_if_kept(event, &mut pushed),
            kind::INTVAR | kind::RAND | kind::USER_VAR | kind::MYSQL_ROWS_QUERY | kind::MARIADB_ANNOTATE_ROWS => {
                self.attached.push((event, None));
            }
            kind::TABLE_MAP => {
                let ours = event
                    .table_map_database(checksums)
                    .is_none_or(|db| self.databases.contains(&db));
                self.attached.push((event, Some(ours)));
            }
            k if binlog::is_rows(k) => {
                let keep = *self.statement.get_or_insert_with(|| {
                    let maps: Vec<bool> = self.attached.iter().filter_map(|(_, ours)| *ours).collect();
                    let all_ours = maps.iter().all(|ours| *ours);
                    let none_ours = maps.iter().all(|ours| !*ours);
                    if !all_ours && !none_ours {
                        self.mixed_statements += 1;
                    }
                    maps.is_empty() || !none_ours
                });
                if event.rows_statement_end(checksums).unwrap_or(true) {
                    self.statement = None;
                }
                if keep {
                    self.keep(event, &mut pushed);
                } else {
                    pushed.dropped += 1 + self.attached.len() as u64;
                    self.attached.clear();
                }
            }
            // Anything else inside a transaction (XA PREPARE, events this build does not know):
            // kept, with the transaction.
            _ => self.keep(event, &mut pushed),
        }
        self.maybe_end(step, pushed)
    }

    fn start(&mut self, gtid: Option<Gtid>) {
        self.head.clear();
        self.attached.clear();
        self.statement = None;
        self.kept = false;
        self.gtid = gtid;
    }

    /// Stores `event` with everything held for it.
    fn keep(&mut self, event: RawEvent, pushed: &mut Pushed) {
        pushed.store.append(&mut self.head);
        pushed.store.extend(self.attached.drain(..).map(|(e, _)| e));
        pushed.store.push(event);
        self.kept = true;
    }

    /// A transaction's end: stored when something of it was, left out with it otherwise.
    fn keep_if_kept(&mut self, event: RawEvent, pushed: &mut Pushed) {
        if self.kept {
            pushed.store.extend(self.attached.drain(..).map(|(e, _)| e));
            pushed.store.push(event);
        } else {
            pushed.dropped += 1;
        }
    }

    fn maybe_end(&mut self, step: Step, mut pushed: Pushed) -> Pushed {
        if step == Step::Ends {
            pushed.ended = Some(if self.kept {
                Ended::Kept
            } else {
                pushed.dropped += (self.head.len() + self.attached.len()) as u64;
                Ended::Dropped(self.gtid.clone())
            });
            self.start(None);
        }
        pushed
    }
}

/// A byte range of a server file that an incremental left out, with the transactions wholly
/// inside it and their GTIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub from: u64,
    pub to: u64,
    pub transactions: u64,
    pub gtids: GtidState,
}

impl Skip {
    /// The compact form in a stored file's manifest details: `[from, to, transactions, gtids]`.
    pub fn to_json(&self) -> Value {
        json!([self.from, self.to, self.transactions, self.gtids.to_string()])
    }

    /// Reads [`Skip::to_json`]'s form.
    ///
    /// # Errors
    /// A sentence saying what is wrong.
    pub fn from_json(value: &Value) -> Result<Skip, String> {
        let parts = value
            .as_array()
            .filter(|p| p.len() == 4)
            .ok_or("expected [from, to, transactions, gtids]")?;
        let number = |i: usize| {
            parts[i]
                .as_u64()
                .ok_or_else(|| format!("{value}: item {i} is not a number"))
        };
        Ok(Skip {
            from: number(0)?,
            to: number(1)?,
            transactions: number(2)?,
            gtids: GtidState::parse(parts[3].as_str().unwrap_or_default())?,
        })
    }
}

/// Checks that a stored file's events and its recorded skips cover the server file's range
/// `[start, end)` exactly: every event starts where the previous one (or a recorded skip)
/// ended. MariaDB leaves annotations out unless asked (docs/mysql.md); such a gap stands only
/// just before a table map.
#[derive(Debug)]
pub struct Tiling {
    at: u64,
    end: u64,
    skips: std::collections::VecDeque<Skip>,
    mariadb: bool,
    pub annotations: u64,
}

impl Tiling {
    pub fn new(start: u64, end: u64, skips: Vec<Skip>, mariadb: bool) -> Self {
        Tiling {
            at: start,
            end,
            skips: skips.into(),
            mariadb,
            annotations: 0,
        }
    }

    /// Checks the next stored event; returns the skip that lies just before it, if one does.
    ///
    /// # Errors
    /// A sentence naming the hole or the overlap.
    pub fn next(&mut self, event: &RawEvent) -> Result<Option<Skip>, String> {
        let mut skipped = None;
        if self.skips.front().is_some_and(|s| s.from == self.at) {
            let skip = self.skips.pop_front().expect("checked");
            if skip.to > event.start() {
                return Err(format!(
                    "a recorded skip {}..{} overlaps the event at {}",
                    skip.from,
                    skip.to,
                    event.start()
                ));
            }
            self.at = skip.to;
            skipped = Some(skip);
        }
        if event.start() != self.at {
            let annotation_left_out = self.mariadb && event.kind() == kind::TABLE_MAP && event.start() > self.at;
            if !annotation_left_out {
                return Err(format!(
                    "the event at {} does not follow what came before, which ended at {}: {}",
                    event.start(),
                    self.at,
                    if event.start() > self.at {
                        "bytes are missing that no recorded skip accounts for"
                    } else {
                        "events overlap"
                    }
                ));
            }
            self.annotations += 1;
        }
        self.at = event.log_pos();
        Ok(skipped)
    }

    /// Checks the end of the file; returns the skip that ends it, if one does.
    ///
    /// # Errors
    /// A sentence when the file stops short of its recorded end or skips are left over.
    pub fn finish(&mut self) -> Result<Option<Skip>, String> {
        let mut skipped = None;
        if self.skips.front().is_some_and(|s| s.from == self.at) {
            let skip = self.skips.pop_front().expect("checked");
            self.at = skip.to;
            skipped = Some(skip);
        }
        if self.at != self.end || !self.skips.is_empty() {
            return Err(format!(
                "the stored events and recorded skips reach {}, but the file was recorded up to {}{}",
                self.at,
                self.end,
                if self.skips.is_empty() {
                    ""
                } else {
                    ", with skips left over"
                }
            ));
        }
        Ok(skipped)
    }
}

#[cfg(test)]
mod tests;
