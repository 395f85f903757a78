//! Statements queued for the target and sent together: many statements in one round trip, the
//! result of each checked in order (a row change must change exactly the rows it names), and a
//! failure reported against the statement that failed.

use std::sync::Arc;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::values::TableInfo;
use crate::engine::SourceError;
use crate::engine::mysql::My;

/// What one queued statement is, for its check and for errors.
pub(super) enum Check {
    /// Session and transaction statements: nothing to count.
    Plain(&'static str),
    /// A row change that must report `rows` rows changed (found, with `CLIENT_FOUND_ROWS`).
    Rows {
        at: Arc<str>,
        table: Arc<TableInfo>,
        doing: Doing,
        rows: u64,
    },
}

/// What a row change does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Doing {
    Insert,
    Update,
    Delete,
}

impl Doing {
    fn verb(self) -> &'static str {
        match self {
            Doing::Insert => "inserting into",
            Doing::Update => "updating",
            Doing::Delete => "deleting from",
        }
    }
}

impl Check {
    fn doing(&self) -> String {
        match self {
            Check::Plain(doing) => (*doing).to_string(),
            Check::Rows { at, table, doing, .. } => format!("{at}: {} {}", doing.verb(), table.qualified),
        }
    }

    /// The statement's result against what it had to do.
    fn verify(&self, affected: u64) -> Result<(), SourceError> {
        let Check::Rows { at, table, doing, rows } = self else {
            return Ok(());
        };
        if affected == *rows {
            return Ok(());
        }
        Err(SourceError::Damaged(match doing {
            Doing::Insert => format!(
                "{at}: inserting {rows} rows into {} changed {affected}",
                table.qualified
            ),
            _ => format!(
                "{at}: {} {} found no matching row: the target differs from the source at this point (was it changed \
                 after the restore?)",
                doing.verb(),
                table.qualified
            ),
        }))
    }
}

/// Where a batch stood at some point, to split it there later.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Mark {
    sql: usize,
    checks: usize,
}

/// An insert statement at the end of the batch that more rows of its table may join.
struct OpenInsert {
    table: Arc<TableInfo>,
    rows: u64,
}

/// Statements not sent yet.
#[derive(Default)]
pub(super) struct Batch {
    sql: Vec<u8>,
    checks: Vec<Check>,
    insert: Option<OpenInsert>,
}

impl Batch {
    pub(super) fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// The size of the statements queued, in bytes.
    pub(super) fn size(&self) -> usize {
        self.sql.len()
    }

    pub(super) fn mark(&self) -> Mark {
        Mark {
            sql: self.sql.len(),
            checks: self.checks.len(),
        }
    }

    /// Queues a whole statement.
    pub(super) fn push(&mut self, statement: &[u8], check: Check) {
        self.separate();
        self.insert = None;
        self.sql.extend_from_slice(statement);
        self.checks.push(check);
    }

    fn separate(&mut self) {
        if !self.sql.is_empty() {
            self.sql.extend_from_slice(b";\n");
        }
    }

    /// Whether a row of `table` can join the insert at the end of the batch (fewer than `most`
    /// rows so far).
    pub(super) fn insert_open(&self, table: &Arc<TableInfo>, most: u64) -> bool {
        self.insert
            .as_ref()
            .is_some_and(|open| Arc::ptr_eq(&open.table, table) && open.rows < most)
    }

    /// Adds a row (`(…)`, rendered) to the insert at the end of the batch, or starts one with
    /// `head` (`INSERT INTO … VALUES `).
    pub(super) fn insert_row(&mut self, head: &[u8], row: &[u8], at: &Arc<str>, table: &Arc<TableInfo>, most: u64) {
        if self.insert_open(table, most) {
            self.sql.extend_from_slice(b", ");
            self.sql.extend_from_slice(row);
            if let (Some(open), Some(Check::Rows { rows, .. })) = (self.insert.as_mut(), self.checks.last_mut()) {
                open.rows += 1;
                *rows += 1;
            }
            return;
        }
        self.separate();
        self.sql.extend_from_slice(head);
        self.sql.extend_from_slice(row);
        self.checks.push(Check::Rows {
            at: at.clone(),
            table: table.clone(),
            doing: Doing::Insert,
            rows: 1,
        });
        self.insert = Some(OpenInsert {
            table: table.clone(),
            rows: 1,
        });
    }

    /// Ends the insert at the end of the batch: the next row starts a statement of its own.
    pub(super) fn end_insert(&mut self) {
        self.insert = None;
    }

    /// Takes out what was queued after `mark`.
    pub(super) fn split_off(&mut self, mark: Mark) -> Batch {
        self.insert = None;
        let mut sql = self.sql.split_off(mark.sql);
        if !self.sql.is_empty() && sql.starts_with(b";\n") {
            sql.drain(..2);
        }
        Batch {
            sql,
            checks: self.checks.split_off(mark.checks),
            insert: None,
        }
    }

    /// Queues `other`'s statements after these.
    pub(super) fn append(&mut self, other: Batch) {
        if other.is_empty() {
            return;
        }
        self.separate();
        self.sql.extend_from_slice(&other.sql);
        self.checks.extend(other.checks);
        self.insert = other.insert;
    }

    /// Sends every queued statement in one round trip and checks each one's result in order.
    ///
    /// # Errors
    /// The first statement that fails or changes other than the rows it names; the ones after it
    /// did not run (the server stops a multi-statement at an error), or are left to the
    /// transaction's rollback.
    pub(super) async fn send(self, my: &My, conn: &mut Conn) -> Result<(), SourceError> {
        let Batch { sql, checks, .. } = self;
        let Some(first) = checks.first() else {
            return Ok(());
        };
        let mut result = conn.query_iter(sql).await.map_err(|e| my.error(&first.doing(), e))?;
        for (i, check) in checks.iter().enumerate() {
            if i > 0 {
                // Moves past the previous statement's result to this one's, which may be the
                // error that ended the statements.
                let moved = result.next().await.map_err(|e| my.error(&check.doing(), e))?;
                if moved.is_some() {
                    return Err(SourceError::Damaged(format!(
                        "{}: the statement before it returned rows",
                        check.doing()
                    )));
                }
                if result.columns().is_none() {
                    let error = result.next().await.err();
                    return Err(match error {
                        Some(e) => my.error(&check.doing(), e),
                        None => SourceError::Damaged(format!("{}: the server returned no result", check.doing())),
                    });
                }
            }
            check.verify(result.affected_rows())?;
        }
        result.drop_result().await.map_err(|e| my.error("ending a batch", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_batch_joins_back_into_the_same_statements() {
        let mut batch = Batch::default();
        batch.push(b"BEGIN", Check::Plain("a"));
        batch.push(b"UPDATE a", Check::Plain("b"));
        let mark = batch.mark();
        batch.push(b"UPDATE b", Check::Plain("c"));
        batch.push(b"UPDATE c", Check::Plain("d"));
        let tail = batch.split_off(mark);
        assert_eq!(batch.sql, b"BEGIN;\nUPDATE a");
        assert_eq!(tail.sql, b"UPDATE b;\nUPDATE c");
        assert_eq!((batch.checks.len(), tail.checks.len()), (2, 2));
        batch.push(b"COMMIT", Check::Plain("e"));
        batch.append(tail);
        assert_eq!(batch.sql, b"BEGIN;\nUPDATE a;\nCOMMIT;\nUPDATE b;\nUPDATE c");
        assert_eq!(batch.checks.len(), 5);
    }
}
