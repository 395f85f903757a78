//! The change model between decoding a log and applying it: what the source's transactions did,
//! in order, as a stream that a decoder produces (stored binary logs today; a live stream and
//! PostgreSQL logical decoding next) and an applier consumes (MySQL today; PostgreSQL next).
//!
//! A transaction is `Begin`, its operations, then `Commit`, rather than one value holding all of
//! its rows: a source transaction may change millions of rows, and memory must not grow with it.

use crate::repo::model::LogPosition;

/// A column value as the source's log carries it. Types the log leaves ambiguous (an unsigned
/// integer logged as signed, a `SET` as its bit map) are settled by the applier, which knows its
/// target column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    /// Text and binary strings, decimals and bit maps, as the bytes the log holds.
    Bytes(Vec<u8>),
    /// A date and time of day without a time zone.
    DateTime {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        micros: u32,
    },
    /// A duration (MySQL `TIME`): days, hours, minutes, seconds and microseconds, and its sign.
    Time {
        negative: bool,
        days: u32,
        hours: u8,
        minutes: u8,
        seconds: u8,
        micros: u32,
    },
    /// A JSON document, as text.
    Json(Vec<u8>),
    /// A value the change does not carry (PostgreSQL leaves unchanged TOASTed values out of
    /// updates, and non-key columns out of a key-only old image): never written.
    Unchanged,
}

/// What happened to one row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange {
    Insert { after: Vec<Value> },
    Update { before: Vec<Value>, after: Vec<Value> },
    Delete { before: Vec<Value> },
}

/// Row changes of one table, in the order the source made them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// Where in the log, for errors.
    pub at: String,
    pub database: String,
    pub table: String,
    /// Columns the source's table had when it logged the rows.
    pub columns: u64,
    /// Their names, when the log gives them (PostgreSQL); empty: by position (MySQL).
    pub names: Vec<String>,
    /// Positions of the columns that identify a row, when the log says (PostgreSQL's replica
    /// identity); empty: the applier finds them on its target (MySQL), or the whole row
    /// identifies it (PostgreSQL's `REPLICA IDENTITY FULL`).
    pub key: Vec<usize>,
    /// Whether `key` identifies one row. `false`: the key is every column of a table that has no
    /// key (a MySQL table without a primary key, replicated into PostgreSQL), compared by type,
    /// and a change takes any one of the equal rows (they are interchangeable).
    pub key_unique: bool,
    /// Whether the source checked foreign keys when it made these changes.
    pub foreign_key_checks: bool,
    pub changes: Vec<RowChange>,
}

/// The session a statement ran in on the source, as far as it changes what the statement does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    pub sql_mode: Option<u64>,
    /// Client character set, connection collation and server collation, as numbers.
    pub charset: Option<(u16, u16, u16)>,
    pub time_zone: Option<String>,
    /// The role it ran as, when the log says (PostgreSQL's captured DDL): objects it creates
    /// are that role's.
    pub role: Option<String>,
}

/// A statement the source logged as text (DDL, or a statement of a statement-based log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Where in the log, for errors.
    pub at: String,
    /// The default database it ran under (`USE`), empty for none.
    pub database: String,
    pub text: String,
    pub session: Session,
    /// It committed by itself (DDL): nothing of the applier's may be open when it runs.
    pub standalone: bool,
}

/// How a source transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `COMMIT` of a transaction that began with `BEGIN`.
    Commit,
    /// `ROLLBACK`: the source undid the transaction's transactional part.
    Rollback,
    /// A statement that committed by itself.
    Standalone,
}

/// The end of a source transaction, with the position after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Where in the log, for errors.
    pub at: String,
    /// The copy whose log held the transaction.
    pub copy: String,
    /// The source's position after the transaction, with its GTID state.
    pub position: LogPosition,
    pub ending: Ending,
    /// Bytes of the log the transaction took, for progress.
    pub bytes: u64,
}

/// Tables emptied by one `TRUNCATE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Where in the log, for errors.
    pub at: String,
    /// (schema or database, table) of each table.
    pub tables: Vec<(String, String)>,
    pub cascade: bool,
    pub restart_identity: bool,
}

/// One item of the change stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A source transaction began: its id on the source and its commit time, when the log
    /// gives them before its changes (PostgreSQL does; MySQL's come with the events).
    Begin {
        at: String,
        transaction: Option<u64>,
        committed_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    Rows(Rows),
    Statement(Statement),
    Truncate(Truncate),
    Commit(Commit),
}
