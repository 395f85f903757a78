//! The applier's start-up validation: per table, the row count, the first and last key and the
//! first and last rows by key compared between the source and the target — only at a moment
//! when the source holds no transaction the target lacks (its position equal to the target's
//! and unchanged across the comparison), so that a difference means the target diverged.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::state::Setup;
use crate::engine::SourceError;
use crate::engine::follow::TableSample;
use crate::engine::mysql::binlog::GtidState;
use crate::engine::mysql::snapshot::{Server, coordinates};
use crate::engine::mysql::{My, quote_ident};
use crate::repo::model::LogPosition;

/// What a validation found.
#[derive(Debug)]
pub(super) enum Validation {
    /// Every table compared equal; one line per table.
    Equal(Vec<String>),
    /// The source is not at the target's position (or moved while comparing): nothing compared.
    SourceAhead,
}

/// Whether the source at `source` holds exactly the transactions the target at `target` has.
pub(super) fn same_point(source: &LogPosition, target: &LogPosition) -> bool {
    let (
        LogPosition::Mysql {
            file: sf,
            position: sp,
            gtid: sg,
        },
        LogPosition::Mysql {
            file: tf,
            position: tp,
            gtid: tg,
        },
    ) = (source, target)
    else {
        return false;
    };
    if sf == tf && sp == tp {
        return true;
    }
    // With GTIDs, the states say it exactly (events without transactions, such as a rotation,
    // move the file position but not the state).
    match (sg.as_deref(), tg.as_deref()) {
        (Some(s), Some(t)) if !s.is_empty() => match (GtidState::parse(s), GtidState::parse(t)) {
            (Ok(s), Ok(t)) => s.to_string() == t.to_string(),
            _ => false,
        },
        _ => false,
    }
}

/// Compares every table the replica applies to, if the source is at `target_at` now.
///
/// # Errors
/// [`SourceError::Diverged`] listing every table that differs; either server's error.
pub(super) async fn validate(
    source: &My,
    server: &Server,
    target: &My,
    setup: &Setup,
    target_at: &LogPosition,
    sample_rows: u32,
) -> Result<Validation, SourceError> {
    let mut source_conn = utc_session(source, None).await?;
    let before = coordinates(source, &mut source_conn, server).await?;
    if !same_point(&before, target_at) {
        return Ok(Validation::SourceAhead);
    }
    let mut target_conn = utc_session(target, Some("")).await?;
    let mut lines = Vec::new();
    let mut differences = Vec::new();
    for (source_db, target_db) in &setup.databases {
        for table in tables(source, &mut source_conn, source_db).await? {
            if !setup.filters.data_included(source_db, &table) {
                continue;
            }
            let (columns, key) = columns(source, &mut source_conn, source_db, &table).await?;
            let name = format!("{source_db}.{table}");
            let on_source =
                Side::read(source, &mut source_conn, source_db, &table, &columns, &key, sample_rows).await?;
            let on_target = Side::read(target, &mut target_conn, target_db, &table, &columns, &key, sample_rows).await;
            let on_target = match on_target {
                Ok(side) => side,
                Err(e) => {
                    differences.push(format!("{name}: cannot be read on the target: {e}"));
                    continue;
                }
            };
            match on_source.differs(&on_target) {
                Some(what) => differences.push(format!("{name}: {what}")),
                None => lines.push(on_source.equal_line(&name, !key.is_empty())),
            }
        }
    }
    let after = coordinates(source, &mut source_conn, server).await?;
    let _ = source_conn.disconnect().await;
    let _ = target_conn.disconnect().await;
    if after != before {
        return Ok(Validation::SourceAhead);
    }
    if !differences.is_empty() {
        return Err(SourceError::Diverged(format!(
            "the replica {} of source {} no longer holds what the source holds at the same position ({target_at}):\n  \
             {}\nnothing was applied; seed the replica again (cairn replica seed --clean --handover cairn), or fix \
             the target by hand",
            target.name,
            setup.source,
            differences.join("\n  ")
        )));
    }
    Ok(Validation::Equal(lines))
}

/// A session whose times read in UTC, so that both servers show the same TIMESTAMP values
/// whatever their own time zones.
async fn utc_session(my: &My, database: Option<&str>) -> Result<Conn, SourceError> {
    let mut conn = my.connect(database).await?;
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .map_err(|e| my.error("preparing the validation", e))?;
    Ok(conn)
}

async fn tables(my: &My, conn: &mut Conn, database: &str) -> Result<Vec<String>, SourceError> {
    conn.exec(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' \
         ORDER BY TABLE_NAME",
        (database,),
    )
    .await
    .map_err(|e| my.error(&format!("listing the tables of {database}"), e))
}

/// The table's columns (generated ones left out: they follow the others) and its primary key.
async fn columns(
    my: &My,
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<(Vec<String>, Vec<String>), SourceError> {
    let doing = format!("reading the columns of {database}.{table}");
    let columns: Vec<(String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await
        .map_err(|e| my.error(&doing, e))?;
    let key: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND \
             INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (database, table),
        )
        .await
        .map_err(|e| my.error(&doing, e))?;
    let columns = columns
        .into_iter()
        .filter(|(_, extra)| !extra.to_ascii_uppercase().contains("GENERATED"))
        .map(|(name, _)| name)
        .collect();
    Ok((columns, key))
}

/// One side's view of a table.
type Side = TableSample<Vec<Value>>;

impl Side {
    async fn read(
        my: &My,
        conn: &mut Conn,
        database: &str,
        table: &str,
        columns: &[String],
        key: &[String],
        sample_rows: u32,
    ) -> Result<Side, SourceError> {
        let qualified = format!("{}.{}", quote_ident(database), quote_ident(table));
        let doing = format!("reading {qualified} for the validation");
        let count: Option<u64> = conn
            .query_first(format!("SELECT COUNT(*) FROM {qualified}"))
            .await
            .map_err(|e| my.error(&doing, e))?;
        let mut side = Side {
            count: count.unwrap_or(0),
            first: Vec::new(),
            last: Vec::new(),
        };
        if key.is_empty() || sample_rows == 0 {
            return Ok(side);
        }
        let list = columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
        let order = |direction: &str| {
            key.iter()
                .map(|c| format!("{} {direction}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (direction, rows) in [("ASC", &mut side.first), ("DESC", &mut side.last)] {
            let read: Vec<mysql_async::Row> = conn
                .query(format!(
                    "SELECT {list} FROM {qualified} ORDER BY {} LIMIT {sample_rows}",
                    order(direction)
                ))
                .await
                .map_err(|e| my.error(&doing, e))?;
            *rows = read.into_iter().map(mysql_async::Row::unwrap).collect();
        }
        Ok(side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: &str, position: u64, gtid: Option<&str>) -> LogPosition {
        LogPosition::Mysql {
            file: file.into(),
            position,
            gtid: gtid.map(str::to_string),
        }
    }

    #[test]
    fn the_same_point_is_the_same_file_position_or_the_same_gtid_state() {
        assert!(same_point(&at("b.000001", 900, None), &at("b.000001", 900, None)));
        assert!(!same_point(&at("b.000001", 901, None), &at("b.000001", 900, None)));
        // A rotation after the last transaction moves the file, not the GTID state.
        assert!(same_point(
            &at("b.000002", 385, Some("0-1-42")),
            &at("b.000001", 900, Some("0-1-42"))
        ));
        assert!(!same_point(
            &at("b.000002", 385, Some("0-1-43")),
            &at("b.000001", 900, Some("0-1-42"))
        ));
    }

    #[test]
    fn a_changed_row_or_count_is_a_difference() {
        let row = |v: &str| vec![Value::Int(1), Value::Bytes(v.as_bytes().to_vec())];
        let source = Side {
            count: 2,
            first: vec![row("a"), row("b")],
            last: vec![row("b"), row("a")],
        };
        let same = Side {
            count: 2,
            first: vec![row("a"), row("b")],
            last: vec![row("b"), row("a")],
        };
        assert_eq!(source.differs(&same), None);
        let changed = Side {
            count: 2,
            first: vec![row("a"), row("x")],
            last: vec![row("x"), row("a")],
        };
        assert!(source.differs(&changed).unwrap().contains("first rows by key differ"));
        let fewer = Side {
            count: 1,
            first: vec![row("a")],
            last: vec![row("a")],
        };
        assert!(
            source
                .differs(&fewer)
                .unwrap()
                .contains("2 rows on the source, 1 on the target")
        );
    }
}
