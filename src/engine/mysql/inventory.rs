//! What a MySQL copy reads: tables with their columns and keys, and how big tables are split.

use std::collections::BTreeMap;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::{My, quote_ident};
use crate::engine::SourceError;
use crate::engine::filter::Filters;

/// Databases that belong to the server.
pub const SYSTEM_DATABASES: &str = "'mysql', 'information_schema', 'performance_schema', 'sys'";

/// How a column travels through the `LOAD DATA` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    /// As the server prints it.
    Text,
    /// FLOAT, read as DOUBLE so no digit is lost in the text.
    Float,
    /// BIT, read as an unsigned number and loaded back through `CAST`.
    Bit,
    /// Types whose binary form differs from their text (MariaDB INET4, INET6, UUID): loaded
    /// back through `CONVERT(… USING utf8mb4)` so the server parses the text.
    Textual,
}

/// A column that is copied (generated columns are recomputed by the server).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    pub name: String,
    pub transfer: Transfer,
}

impl Column {
    /// The expression reading the column.
    pub fn select(&self) -> String {
        let name = quote_ident(&self.name);
        match self.transfer {
            Transfer::Text => name,
            Transfer::Float => format!("{name} + 0e0"),
            Transfer::Bit => format!("CAST({name} AS UNSIGNED)"),
            Transfer::Textual => name,
        }
    }
}

/// A table whose rows a copy holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub database: String,
    pub name: String,
    pub engine: String,
    pub columns: Vec<Column>,
    pub int_key: Option<String>,
    pub bytes: u64,
}

impl Table {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.database), quote_ident(&self.name))
    }

    /// Whether its rows are only consistent while the global read lock is held.
    pub fn transactional(&self) -> bool {
        matches!(
            self.engine.to_ascii_lowercase().as_str(),
            "innodb" | "rocksdb" | "tokudb" | ""
        )
    }
}

/// A column's name, lowercase data type and `EXTRA` from information_schema.
type ColumnInfo = (String, String, String);

const INTEGER_TYPES: [&str; 5] = ["tinyint", "smallint", "mediumint", "int", "bigint"];

/// Base tables of the databases the filters keep.
///
/// # Errors
/// Query errors.
pub async fn tables(my: &My, conn: &mut Conn, filters: &Filters) -> Result<Vec<Table>, SourceError> {
    let listed: Vec<(String, String, Option<String>, u64)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE, CAST(COALESCE(DATA_LENGTH, 0) AS UNSIGNED)
             FROM information_schema.TABLES
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ({SYSTEM_DATABASES})
             ORDER BY TABLE_SCHEMA, TABLE_NAME"
        ))
        .await
        .map_err(|e| my.error("listing tables", e))?;
    let columns: Vec<(String, String, String, String, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, EXTRA FROM information_schema.COLUMNS
             WHERE TABLE_SCHEMA NOT IN ({SYSTEM_DATABASES}) ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
        ))
        .await
        .map_err(|e| my.error("listing columns", e))?;
    let primary: Vec<(String, String, String, u64)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, MIN(COLUMN_NAME), COUNT(*) FROM information_schema.STATISTICS
             WHERE INDEX_NAME = 'PRIMARY' AND TABLE_SCHEMA NOT IN ({SYSTEM_DATABASES}) GROUP BY TABLE_SCHEMA, TABLE_NAME"
        ))
        .await
        .map_err(|e| my.error("listing primary keys", e))?;
    let mut by_table: BTreeMap<(String, String), Vec<ColumnInfo>> = BTreeMap::new();
    for (db, table, column, data_type, extra) in columns {
        by_table
            .entry((db, table))
            .or_default()
            .push((column, data_type.to_ascii_lowercase(), extra));
    }
    let primary: BTreeMap<(String, String), (String, u64)> =
        primary.into_iter().map(|(db, t, c, n)| ((db, t), (c, n))).collect();
    let mut out = Vec::new();
    for (database, name, engine, bytes) in listed {
        if !filters.data_included(&database, &name) {
            continue;
        }
        let key = (database.clone(), name.clone());
        let table_columns = by_table.get(&key).cloned().unwrap_or_default();
        let int_key = primary.get(&key).and_then(|(column, count)| {
            let integer = table_columns
                .iter()
                .any(|(c, t, _)| c == column && INTEGER_TYPES.contains(&t.as_str()));
            (*count == 1 && integer).then(|| column.clone())
        });
        let columns = table_columns
            .into_iter()
            .filter(|(_, _, extra)| {
                let extra = extra.to_ascii_uppercase();
                !(extra.contains("VIRTUAL GENERATED")
                    || extra.contains("STORED GENERATED")
                    || extra.contains("PERSISTENT GENERATED"))
            })
            .map(|(name, data_type, _)| Column {
                name,
                transfer: match data_type.as_str() {
                    "float" => Transfer::Float,
                    "bit" => Transfer::Bit,
                    "inet4" | "inet6" | "uuid" => Transfer::Textual,
                    _ => Transfer::Text,
                },
            })
            .collect();
        out.push(Table {
            database,
            name,
            engine: engine.unwrap_or_default(),
            columns,
            int_key,
            bytes,
        });
    }
    Ok(out)
}

/// One piece of a table for one worker.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub table: Table,
    pub index: usize,
    pub condition: Option<String>,
    pub estimate: u64,
}

impl Chunk {
    pub fn select_sql(&self) -> String {
        let columns: Vec<String> = self.table.columns.iter().map(Column::select).collect();
        let list = if columns.is_empty() {
            "1".to_string()
        } else {
            columns.join(", ")
        };
        match &self.condition {
            Some(condition) => format!("SELECT {list} FROM {} WHERE {condition}", self.table.qualified()),
            None => format!("SELECT {list} FROM {}", self.table.qualified()),
        }
    }
}

/// Chunks of every table, largest first: tables above `chunk_bytes` with a single-column
/// integer primary key are split by key range (InnoDB stores rows in key order, so each range
/// is one sequential read), others are read whole.
///
/// # Errors
/// Query errors while reading key bounds (in the worker's snapshot).
pub async fn plan_chunks(
    my: &My,
    conn: &mut Conn,
    tables: &[Table],
    chunk_bytes: u64,
) -> Result<Vec<Chunk>, SourceError> {
    let mut chunks = Vec::new();
    for table in tables {
        let parts = table.bytes.div_ceil(chunk_bytes.max(1)).max(1);
        let mut conditions = vec![None];
        if parts > 1
            && let Some(key) = &table.int_key
        {
            let k = quote_ident(key);
            let bounds: Option<(Option<i128>, Option<i128>)> = conn
                .query_first(format!("SELECT MIN({k}), MAX({k}) FROM {}", table.qualified()))
                .await
                .map_err(|e| my.error(&format!("reading the key range of {}", table.qualified()), e))?;
            if let Some((Some(min), Some(max))) = bounds {
                conditions = key_ranges(&k, min, max, parts).into_iter().map(Some).collect();
            }
        }
        let count = conditions.len() as u64;
        for (index, condition) in conditions.into_iter().enumerate() {
            chunks.push(Chunk {
                table: table.clone(),
                index,
                condition,
                estimate: table.bytes / count,
            });
        }
    }
    chunks.sort_by(|a, b| b.estimate.cmp(&a.estimate).then(a.index.cmp(&b.index)));
    Ok(chunks)
}

/// `parts` ranges over `[min, max]` of an (already quoted) key; the outer ones are open.
pub fn key_ranges(key: &str, min: i128, max: i128, parts: u64) -> Vec<String> {
    let span = (max - min + 1).max(1);
    let parts = (parts as i128).clamp(1, span);
    let bounds: Vec<i128> = (1..parts).map(|k| min + span * k / parts).collect();
    (0..parts as usize)
        .map(|i| {
            let lower = (i > 0).then(|| bounds[i - 1]);
            match (lower, bounds.get(i)) {
                (None, None) => "1".to_string(),
                (None, Some(u)) => format!("{key} < {u}"),
                (Some(l), None) => format!("{key} >= {l}"),
                (Some(l), Some(u)) => format!("{key} >= {l} AND {key} < {u}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_bigint_ranges_do_not_overflow() {
        let ranges = key_ranges("`id`", 0, u64::MAX as i128, 4);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0], "`id` < 4611686018427387904");
        assert!(ranges[3].starts_with("`id` >= 13835058055282163712"));
    }

    #[test]
    fn columns_are_read_so_that_nothing_is_lost() {
        let float = Column {
            name: "f`x".into(),
            transfer: Transfer::Float,
        };
        assert_eq!(float.select(), "`f``x` + 0e0");
        let bit = Column {
            name: "b".into(),
            transfer: Transfer::Bit,
        };
        assert_eq!(bit.select(), "CAST(`b` AS UNSIGNED)");
    }
}
