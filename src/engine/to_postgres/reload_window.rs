//! What a `cairn replica reload` leaves for the applier (`cairn_replay.mysql_reloads`): each
//! reloaded table — or `*`, every table of a reloaded database — with the log position its rows
//! were copied at. Until the applier passes that position, the table's changes in the log are
//! already in its rows and are passed over, the statement that stopped the replica among them;
//! from there on they apply as usual. A window the replica's position has passed is removed.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::engine::SourceError;
use crate::engine::change::Change;
use crate::engine::mysql::binlog::file_order;
use crate::engine::mysql::first_words;
use crate::engine::mysql::statement_text::statement_tables;
use crate::engine::postgres::{Pg, quote_literal};
use crate::repo::model::LogPosition;

/// Every table of a reloaded database.
pub const EVERY_TABLE: &str = "*";

pub const WINDOWS_DDL: &str = "CREATE SCHEMA IF NOT EXISTS cairn_replay;
    CREATE TABLE IF NOT EXISTS cairn_replay.mysql_reloads (
      target_schemas text NOT NULL, database text NOT NULL, name text NOT NULL,
      log_file text NOT NULL, log_position bigint NOT NULL, reloaded_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (target_schemas, database, name))";

/// The statement recording that `database`.`name` (or [`EVERY_TABLE`]) holds the source's rows
/// as of `file`:`position`.
pub fn record_sql(targets: &str, database: &str, name: &str, file: &str, position: u64) -> String {
    format!(
        "INSERT INTO cairn_replay.mysql_reloads (target_schemas, database, name, log_file, log_position) \
         VALUES ({targets}, {database}, {name}, {file}, {position}) ON CONFLICT (target_schemas, database, name) \
         DO UPDATE SET log_file = excluded.log_file, log_position = excluded.log_position, reloaded_at = now()",
        targets = quote_literal(targets),
        database = quote_literal(database),
        name = quote_literal(name),
        file = quote_literal(file),
    )
}

/// A place in the source's log: the file's order, and the offset.
type Place = ((String, u64), u64);

fn place(file: &str, position: u64) -> Place {
    (file_order(file), position)
}

/// The reloaded tables whose changes the applier passes over, up to where each was copied.
#[derive(Debug, Default)]
pub struct Windows {
    /// (database, table or `*`) → where its rows were copied.
    until: BTreeMap<(String, String), (Place, String)>,
    /// Changes passed over so far.
    pub passed_over: u64,
}

impl Windows {
    /// The windows of the replica keyed `targets` that reach past `at`, the replica's position;
    /// the others are removed.
    ///
    /// # Errors
    /// The target's error.
    pub async fn load(pg: &Pg, client: &Client, targets: &str, at: &LogPosition) -> Result<Windows, SourceError> {
        let doing = "reading the reloaded tables (cairn_replay.mysql_reloads)";
        let exists: bool = client
            .query_one("SELECT to_regclass('cairn_replay.mysql_reloads') IS NOT NULL", &[])
            .await
            .map_err(|e| pg.error(doing, e))?
            .get(0);
        let LogPosition::Mysql { file, position, .. } = at else {
            return Ok(Windows::default());
        };
        if !exists {
            return Ok(Windows::default());
        }
        let rows = client
            .query(
                "SELECT database, name, log_file, log_position FROM cairn_replay.mysql_reloads \
                 WHERE target_schemas = $1",
                &[&targets],
            )
            .await
            .map_err(|e| pg.error(doing, e))?;
        let mut windows = Windows::default();
        let now = place(file, *position);
        for row in rows {
            let (database, name, log_file): (String, String, String) = (row.get(0), row.get(1), row.get(2));
            let log_position = u64::try_from(row.get::<_, i64>(3)).unwrap_or_default();
            let until = place(&log_file, log_position);
            if until <= now {
                client
                    .execute(
                        "DELETE FROM cairn_replay.mysql_reloads WHERE target_schemas = $1 AND database = $2 AND name = $3",
                        &[&targets, &database, &name],
                    )
                    .await
                    .map_err(|e| pg.error("removing a reload the replica has passed", e))?;
                continue;
            }
            tracing::info!(
                "{database}.{name} was reloaded at {log_file}:{log_position}: its changes before that are passed over"
            );
            windows
                .until
                .insert((database, name), (until, format!("{log_file}:{log_position}")));
        }
        Ok(windows)
    }

    /// Whether a change to `database`.`table` read at `at` (file, offset) is in its table's rows
    /// already.
    fn covers(&self, database: &str, table: &str, at: &Place) -> bool {
        [table, EVERY_TABLE].iter().any(|name| {
            self.until
                .get(&(database.to_string(), name.to_string()))
                .is_some_and(|(until, _)| at < until)
        })
    }

    /// `change`, read from the event at `at` (file, offset), unless it changes only reloaded
    /// tables before they were copied; a truncation loses the tables that were.
    ///
    /// # Errors
    /// A statement that changes reloaded tables before their copy and others too: it cannot be
    /// applied in part.
    pub fn admit(&mut self, change: Change, at: (&str, u64)) -> Result<Option<Change>, SourceError> {
        if self.until.is_empty() {
            return Ok(Some(change));
        }
        let at = place(at.0, at.1);
        match change {
            Change::Rows(rows) if self.covers(&rows.database, &rows.table, &at) => {
                self.passed_over += 1;
                Ok(None)
            }
            Change::Truncate(mut truncate) => {
                let before = truncate.tables.len();
                truncate
                    .tables
                    .retain(|(database, table)| !self.covers(database, table, &at));
                if truncate.tables.len() < before {
                    self.passed_over += 1;
                }
                Ok((!truncate.tables.is_empty()).then_some(Change::Truncate(truncate)))
            }
            Change::Statement(statement) => {
                let tables = statement_tables(&statement.text, &statement.database);
                let (covered, others): (Vec<_>, Vec<_>) = tables
                    .iter()
                    .partition(|(database, table)| self.covers(database, table, &at));
                if covered.is_empty() {
                    return Ok(Some(Change::Statement(statement)));
                }
                let shown = |keys: &[&(String, String)]| {
                    keys.iter()
                        .map(|(d, t)| format!("{d}.{t}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if !others.is_empty() {
                    return Err(SourceError::Unsupported(format!(
                        "{}: {} changes {}, reloaded after it, and {} too, which were not: reload those as well \
                         (cairn replica reload --table …), or the whole database (--table DATABASE.*)",
                        statement.at,
                        first_words(&statement.text),
                        shown(&covered),
                        shown(&others)
                    )));
                }
                tracing::info!(
                    "{}: passed over ({} was reloaded after it): {}",
                    statement.at,
                    shown(&covered),
                    first_words(&statement.text)
                );
                self.passed_over += 1;
                Ok(None)
            }
            change => Ok(Some(change)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::change::{Session, Statement};

    fn windows() -> Windows {
        let mut windows = Windows::default();
        windows.until.insert(
            ("bank".into(), "accounts".into()),
            (place("log.000002", 500), "log.000002:500".into()),
        );
        windows.until.insert(
            ("shop".into(), EVERY_TABLE.into()),
            (place("log.000002", 900), String::new()),
        );
        windows
    }

    fn statement(text: &str) -> Change {
        Change::Statement(Statement {
            at: "here".into(),
            database: "bank".into(),
            text: text.into(),
            session: Session::default(),
            standalone: true,
        })
    }

    #[test]
    fn a_reloaded_tables_statements_before_its_copy_are_passed_over_and_after_it_applied() {
        let mut w = windows();
        let alter = "ALTER TABLE accounts ADD COLUMN doubled BIGINT AS (balance * 2) VIRTUAL";
        assert!(w.admit(statement(alter), ("log.000002", 400)).unwrap().is_none());
        assert!(w.admit(statement(alter), ("log.000001", 90000)).unwrap().is_none());
        assert!(w.admit(statement(alter), ("log.000002", 500)).unwrap().is_some());
        assert!(w.admit(statement(alter), ("log.000010", 4)).unwrap().is_some());
        assert!(
            w.admit(statement("ALTER TABLE history ADD c INT"), ("log.000002", 400))
                .unwrap()
                .is_some()
        );
        assert!(
            w.admit(statement("CREATE TABLE shop.new (id INT)"), ("log.000002", 800))
                .unwrap()
                .is_none()
        );
        assert!(
            w.admit(statement("DROP INDEX i ON `accounts`"), ("log.000002", 10))
                .unwrap()
                .is_none()
        );
        let commented = "/* app=billing */ CREATE INDEX i\nON accounts (balance)";
        assert!(w.admit(statement(commented), ("log.000002", 10)).unwrap().is_none());
        assert_eq!(w.passed_over, 5);
    }

    #[test]
    fn a_statement_on_reloaded_tables_and_others_before_the_copy_stops_the_applier() {
        let mut w = windows();
        let error = w
            .admit(
                statement("RENAME TABLE accounts TO old, history TO accounts"),
                ("log.000002", 10),
            )
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("bank.history") && error.contains("reload those as well"),
            "{error}"
        );
        let error = w
            .admit(statement("ALTER TABLE accounts RENAME TO kept"), ("log.000002", 10))
            .unwrap_err()
            .to_string();
        assert!(error.contains("bank.kept"), "{error}");
    }
}
