//! PostgreSQL's logical replication messages (pgoutput, protocol version 1) decoded into the
//! change model (`engine::change`): Begin, Relation, Insert, Update, Delete, Truncate, Commit.
//!
//! Column values arrive as text (their type's output form) or as "unchanged TOAST", which the
//! model keeps as [`Value::Unchanged`] so an applier never overwrites what the change does not
//! carry. Relation messages describe a table once per session (and again after it changes); the
//! decoder keeps them to name the rows that follow.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};

use crate::engine::change::{Change, Commit, Ending, RowChange, Rows, Truncate, Value};
use crate::repo::model::LogPosition;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A table as a Relation message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub schema: String,
    pub table: String,
    /// `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// Part of the replica identity.
    pub key: bool,
}

/// Decodes one session's pgoutput messages, in order.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
    /// The LSN of the commit record of the transaction last begun.
    commit_lsn: u64,
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "the message ends at byte {} where {n} more were expected",
                self.at
            ));
        };
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("two bytes")))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("four bytes")))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("four bytes")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }

    /// A null-terminated string.
    fn string(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.at..];
        let Some(end) = rest.iter().position(|b| *b == 0) else {
            return Err(format!("a string at byte {} has no terminating zero", self.at));
        };
        let text = String::from_utf8(rest[..end].to_vec())
            .map_err(|_| format!("a string at byte {} is not UTF-8", self.at))?;
        self.at += end + 1;
        Ok(text)
    }

    fn done(&self) -> Result<(), String> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            extra => Err(format!("{extra} bytes follow the message")),
        }
    }
}

/// An LSN as PostgreSQL writes it (`16/B374D848`).
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Reads `16/B374D848`.
///
/// # Errors
/// A sentence naming the text.
pub fn parse_lsn(text: &str) -> Result<u64, String> {
    let parsed = text
        .split_once('/')
        .and_then(|(high, low)| Some((u64::from_str_radix(high, 16).ok()?, u64::from_str_radix(low, 16).ok()?)));
    match parsed {
        Some((high, low)) if high <= u64::from(u32::MAX) && low <= u64::from(u32::MAX) => Ok(high << 32 | low),
        _ => Err(format!(
            "{text:?} is not an LSN (expected two hexadecimal numbers, like 16/B374D848)"
        )),
    }
}

fn timestamp(micros: u64) -> Option<DateTime<Utc>> {
    let since_unix = (micros as i64).checked_add(POSTGRES_EPOCH_MICROS)?;
    Utc.timestamp_micros(since_unix).single()
}

impl Decoder {
    /// Where the commit record of the transaction last begun is: Begin says it before the
    /// changes, so a replay decides at Begin whether to apply the transaction.
    pub fn commit_lsn(&self) -> u64 {
        self.commit_lsn
    }

    /// The table a relation id names, as the last Relation message described it.
    pub fn relation(&self, id: u32) -> Option<&Relation> {
        self.relations.get(&id)
    }

    /// Decodes one message; `at` says where it is, for errors and positions. Relation, Type and
    /// Origin messages give no change.
    ///
    /// # Errors
    /// A sentence saying what is wrong with the message.
    pub fn decode(&mut self, at: &str, message: &[u8]) -> Result<Option<Change>, String> {
        let mut r = Reader { bytes: message, at: 0 };
        let change = match r.u8()? {
            b'B' => {
                self.commit_lsn = r.u64()?;
                let committed = r.u64()?;
                let xid = r.u32()?;
                Some(Change::Begin {
                    at: at.to_string(),
                    transaction: Some(u64::from(xid)),
                    committed_at: timestamp(committed),
                })
            }
            b'C' => {
                let _flags = r.u8()?;
                let _commit_lsn = r.u64()?;
                let end_lsn = r.u64()?;
                let _committed = r.u64()?;
                Some(Change::Commit(Commit {
                    at: at.to_string(),
                    copy: String::new(),
                    position: LogPosition::Postgres {
                        lsn: lsn_text(end_lsn),
                        timeline: None,
                        slot: None,
                    },
                    ending: Ending::Commit,
                    bytes: 0,
                }))
            }
            b'O' => {
                let _lsn = r.u64()?;
                let _origin = r.string()?;
                None
            }
            b'Y' => {
                let _oid = r.u32()?;
                let _schema = r.string()?;
                let _name = r.string()?;
                None
            }
            b'R' => {
                let id = r.u32()?;
                let schema = r.string()?;
                let table = r.string()?;
                let replica_identity = r.u8()?;
                let count = r.i16()?;
                let mut columns = Vec::with_capacity(count.max(0) as usize);
                for _ in 0..count {
                    let flags = r.u8()?;
                    let name = r.string()?;
                    let type_oid = r.u32()?;
                    let _modifier = r.i32()?;
                    columns.push(Column {
                        name,
                        type_oid,
                        key: flags & 1 == 1,
                    });
                }
                self.relations.insert(
                    id,
                    Relation {
                        schema,
                        table,
                        replica_identity,
                        columns,
                    },
                );
                None
            }
            b'I' => {
                let relation = self.known(r.u32()?)?;
                expect(&mut r, b'N', "an insert's new row")?;
                let after = tuple(&mut r, relation)?;
                Some(rows(at, relation, RowChange::Insert { after }))
            }
            b'U' => {
                let relation = self.known(r.u32()?)?;
                let old = match r.u8()? {
                    kind @ (b'K' | b'O') => {
                        let old = tuple(&mut r, relation)?;
                        expect(&mut r, b'N', "an update's new row")?;
                        Some((kind, old))
                    }
                    b'N' => None,
                    other => {
                        return Err(format!(
                            "an update has part {:?} where K, O or N was expected",
                            other as char
                        ));
                    }
                };
                let after = tuple(&mut r, relation)?;
                // Without an old image the key did not change: the new row's key finds the row.
                let before = match old {
                    Some((_, old)) => old,
                    None => key_only(relation, &after),
                };
                Some(rows(at, relation, RowChange::Update { before, after }))
            }
            b'D' => {
                let relation = self.known(r.u32()?)?;
                match r.u8()? {
                    b'K' | b'O' => {}
                    other => {
                        return Err(format!(
                            "a delete has part {:?} where K or O was expected",
                            other as char
                        ));
                    }
                }
                let before = tuple(&mut r, relation)?;
                Some(rows(at, relation, RowChange::Delete { before }))
            }
            b'T' => {
                let count = r.u32()?;
                let options = r.u8()?;
                let mut tables = Vec::with_capacity(count.min(1024) as usize);
                for _ in 0..count {
                    let relation = self.known(r.u32()?)?;
                    tables.push((relation.schema.clone(), relation.table.clone()));
                }
                Some(Change::Truncate(Truncate {
                    at: at.to_string(),
                    tables,
                    cascade: options & 1 == 1,
                    restart_identity: options & 2 == 2,
                }))
            }
            other => {
                return Err(format!(
                    "message type {:?} is not one pgoutput version 1 sends",
                    other as char
                ));
            }
        };
        r.done()?;
        // Inserts into cairn's DDL log are the DDL statements they record.
        Ok(change.and_then(super::ddl::from_log))
    }

    fn known(&self, id: u32) -> Result<&Relation, String> {
        self.relations
            .get(&id)
            .ok_or_else(|| format!("a change of relation {id} comes before its Relation message"))
    }
}

fn expect(r: &mut Reader<'_>, wanted: u8, what: &str) -> Result<(), String> {
    match r.u8()? {
        got if got == wanted => Ok(()),
        got => Err(format!(
            "{what} starts with {:?}, not {:?}",
            got as char, wanted as char
        )),
    }
}

/// A row's values, in the relation's column order.
fn tuple(r: &mut Reader<'_>, relation: &Relation) -> Result<Vec<Value>, String> {
    let count = r.i16()?;
    if count < 0 || count as usize != relation.columns.len() {
        return Err(format!(
            "a row of {}.{} has {count} columns where its Relation message has {}",
            relation.schema,
            relation.table,
            relation.columns.len()
        ));
    }
    let mut values = Vec::with_capacity(count as usize);
    for _ in 0..count {
        values.push(match r.u8()? {
            b'n' => Value::Null,
            b'u' => Value::Unchanged,
            b't' => {
                let len = r.i32()?;
                let len = usize::try_from(len).map_err(|_| format!("a value has length {len}"))?;
                Value::Bytes(r.take(len)?.to_vec())
            }
            other => {
                return Err(format!(
                    "a value has kind {:?} where n, u or t was expected",
                    other as char
                ));
            }
        });
    }
    Ok(values)
}

/// The old image an update without one stands for: the new row's key columns, nothing else.
fn key_only(relation: &Relation, after: &[Value]) -> Vec<Value> {
    relation
        .columns
        .iter()
        .zip(after)
        .map(|(column, value)| if column.key { value.clone() } else { Value::Unchanged })
        .collect()
}

fn rows(at: &str, relation: &Relation, change: RowChange) -> Change {
    Change::Rows(Rows {
        at: at.to_string(),
        database: relation.schema.clone(),
        table: relation.table.clone(),
        columns: relation.columns.len() as u64,
        names: relation.columns.iter().map(|c| c.name.clone()).collect(),
        // With REPLICA IDENTITY FULL every column is flagged: the whole row identifies it, and
        // no column alone is a key.
        key: match relation.replica_identity {
            b'f' => Vec::new(),
            _ => relation
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.key)
                .map(|(i, _)| i)
                .collect(),
        },
        key_unique: true,
        foreign_key_checks: true,
        changes: vec![change],
    })
}

#[cfg(test)]
mod tests;
