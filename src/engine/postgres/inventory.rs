//! What a PostgreSQL copy reads: the tables with data, their columns and keys, sequences and
//! materialized views, and how big tables are split into chunks.

use tokio_postgres::Client;

use super::{Pg, quote_ident, quote_literal};
use crate::engine::SourceError;
use crate::engine::filter::Filters;

/// Schemas that belong to the server, never to a copy.
/// Schemas no copy holds: the server's, and cairn's own DDL log (`_cairn`, see `ddl.rs`).
const SYSTEM_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', '_cairn') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

/// A table whose rows a copy holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// Columns COPY reads and writes: not dropped, not generated.
    pub columns: Vec<String>,
    /// A single-column integer primary key, for chunking by key range.
    pub int_key: Option<String>,
    /// Size on disk, for ordering and chunking.
    pub bytes: u64,
}

impl Table {
    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// The column list for COPY, empty for a table without columns.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Tables with data to copy, in the current snapshot if a transaction is open.
///
/// With `sizes`, each table's size is read too; that takes a lock on the table, so ask for it
/// only once the copy holds its own locks (a pending DDL would block the listing, not the lock,
/// and the error could not name the table).
///
/// # Errors
/// Query errors.
pub async fn tables(pg: &Pg, client: &Client, sizes: bool, filters: &Filters) -> Result<Vec<Table>, SourceError> {
    let size = if sizes {
        "pg_relation_size(c.oid)::int8"
    } else {
        "0::int8"
    };
    let sql = format!(
        "SELECT c.oid, n.nspname::text, c.relname::text, {size},
           ARRAY(SELECT a.attname::text FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                 ORDER BY a.attnum),
           (SELECT a.attname::text FROM pg_index i
              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnatts = 1
               AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype))
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND c.relpersistence <> 't' AND {SYSTEM_SCHEMAS}
           AND NOT EXISTS (SELECT 1 FROM pg_depend d
                           WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
         ORDER BY n.nspname, c.relname"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| pg.error("listing tables", e))?;
    Ok(rows
        .into_iter()
        .filter(|row| filters.data_included(row.get(1), row.get(2)))
        .map(|row| Table {
            oid: row.get(0),
            schema: row.get(1),
            name: row.get(2),
            bytes: row.get::<_, i64>(3).max(0) as u64,
            columns: row.get(4),
            int_key: row.get(5),
        })
        .collect())
}

/// `SELECT setval(…)` statements restoring every readable sequence's current value.
///
/// Sequences are not transactional: the value read is the one at this moment, which is never
/// behind the snapshot, so restored sequences never hand out a value already used.
///
/// # Errors
/// Query errors.
pub async fn sequence_values(pg: &Pg, client: &Client, filters: &Filters) -> Result<String, SourceError> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, has_sequence_privilege(c.oid, 'SELECT')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'S' AND {SYSTEM_SCHEMAS}
           AND NOT EXISTS (SELECT 1 FROM pg_depend d
                           WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
         ORDER BY 1, 2"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| pg.error("listing sequences", e))?;
    let mut out = String::new();
    for row in rows {
        let (schema, name, readable): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        if !filters.table_included(&schema, &name) {
            continue;
        }
        let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
        if !readable {
            tracing::warn!("sequence {qualified} is not readable by this user; its value is not copied");
            continue;
        }
        let value = client
            .query_one(&format!("SELECT last_value, is_called FROM {qualified}"), &[])
            .await
            .map_err(|e| pg.error(&format!("reading sequence {qualified}"), e))?;
        let (last, called): (i64, bool) = (value.get(0), value.get(1));
        out.push_str(&format!(
            "SELECT pg_catalog.setval({}, {last}, {called});\n",
            quote_literal(&qualified)
        ));
    }
    Ok(out)
}

/// `REFRESH MATERIALIZED VIEW` statements for the populated materialized views, in creation order.
///
/// # Errors
/// Query errors.
pub async fn materialized_view_refreshes(pg: &Pg, client: &Client, filters: &Filters) -> Result<String, SourceError> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'm' AND c.relispopulated AND {SYSTEM_SCHEMAS} ORDER BY c.oid"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| pg.error("listing materialized views", e))?;
    Ok(rows
        .into_iter()
        .filter(|row| filters.table_included(row.get(0), row.get(1)))
        .map(|row| {
            let (schema, name): (String, String) = (row.get(0), row.get(1));
            format!(
                "REFRESH MATERIALIZED VIEW {}.{};\n",
                quote_ident(&schema),
                quote_ident(&name)
            )
        })
        .collect())
}

/// pg_dump arguments that make its schema match `filters`, naming the matching schemas and
/// relations exactly (pg_dump's own pattern rules differ from cairn's).
///
/// # Errors
/// Query errors.
pub async fn pg_dump_filter_args(pg: &Pg, client: &Client, filters: &Filters) -> Result<Vec<String>, SourceError> {
    // cairn's DDL log is the source's bookkeeping, not its data.
    let mut args = vec![format!("--exclude-schema={}", super::ddl::CAIRN_SCHEMA)];
    if filters.is_empty() {
        return Ok(args);
    }
    let schemas = client
        .query(
            &format!("SELECT n.nspname::text FROM pg_namespace n WHERE {SYSTEM_SCHEMAS} ORDER BY 1"),
            &[],
        )
        .await
        .map_err(|e| pg.error("listing schemas", e))?;
    let mut included = 0;
    for row in schemas {
        let schema: String = row.get(0);
        if filters.schema_included(&schema) {
            included += 1;
            if !filters.include_schemas.is_empty() {
                args.push(format!("--schema={}", quote_ident(&schema)));
            }
        } else if filters.include_schemas.is_empty() {
            args.push(format!("--exclude-schema={}", quote_ident(&schema)));
        }
    }
    if included == 0 {
        return Err(SourceError::Unsupported(format!(
            "{}: no schema matches the filters {:?}",
            pg.name, filters
        )));
    }
    let relations = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {SYSTEM_SCHEMAS} ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .map_err(|e| pg.error("listing relations", e))?;
    for row in relations {
        let (schema, name): (String, String) = (row.get(0), row.get(1));
        if filters.schema_included(&schema) && !filters.table_included(&schema, &name) {
            args.push(format!(
                "--exclude-table={}.{}",
                quote_ident(&schema),
                quote_ident(&name)
            ));
        }
    }
    Ok(args)
}

/// One piece of a table that one worker reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub table: Table,
    /// Position of this chunk in its table, from 0.
    pub index: usize,
    /// `WHERE` condition selecting the chunk's rows; `None` for the whole table.
    pub condition: Option<String>,
    /// Estimated bytes, for largest-first ordering.
    pub estimate: u64,
}

impl Chunk {
    /// The `COPY … TO STDOUT` statement reading this chunk.
    pub fn copy_out_sql(&self) -> String {
        let table = self.table.qualified();
        let columns = self.table.column_list();
        match (&self.condition, columns.is_empty()) {
            (None, true) => format!("COPY {table} TO STDOUT"),
            (None, false) => format!("COPY {table} ({columns}) TO STDOUT"),
            (Some(condition), _) => format!("COPY (SELECT {columns} FROM {table} WHERE {condition}) TO STDOUT"),
        }
    }
}

/// Splits `[min, max]` into `parts` key ranges; the first and last are open so no row can fall
/// outside them.
pub fn key_ranges(key: &str, min: i64, max: i64, parts: u64) -> Vec<String> {
    let key = quote_ident(key);
    let span = (max as i128 - min as i128 + 1).max(1);
    let parts = (parts as i128).clamp(1, span);
    let bounds: Vec<i128> = (1..parts).map(|k| min as i128 + span * k / parts).collect();
    let mut conditions = Vec::new();
    for i in 0..parts as usize {
        let lower = (i > 0).then(|| bounds[i - 1]);
        let upper = bounds.get(i).copied();
        conditions.push(match (lower, upper) {
            (None, None) => "true".to_string(),
            (None, Some(u)) => format!("{key} < {u}"),
            (Some(l), None) => format!("{key} >= {l}"),
            (Some(l), Some(u)) => format!("{key} >= {l} AND {key} < {u}"),
        });
    }
    conditions
}

/// Splits `pages` heap pages into `parts` ctid ranges; the last is open.
pub fn page_ranges(pages: u64, parts: u64) -> Vec<String> {
    let parts = parts.clamp(1, pages.max(1));
    let bounds: Vec<u64> = (1..parts).map(|k| pages * k / parts).collect();
    (0..parts as usize)
        .map(|i| {
            let lower = if i == 0 { 0 } else { bounds[i - 1] };
            match bounds.get(i) {
                Some(upper) => format!("ctid >= '({lower},0)'::tid AND ctid < '({upper},0)'::tid"),
                None => format!("ctid >= '({lower},0)'::tid"),
            }
        })
        .collect()
}

/// Chunks of every table, largest first. Tables above `chunk_bytes` are split by heap page
/// ranges; with `by_key` (servers before PostgreSQL 14, which cannot scan TID ranges), tables
/// with a single-column integer primary key are split by key range instead (bounds read in the
/// snapshot) and tables without one are read whole.
///
/// # Errors
/// Query errors while reading key bounds.
pub async fn plan_chunks(
    pg: &Pg,
    client: &Client,
    tables: &[Table],
    chunk_bytes: u64,
    by_key: bool,
) -> Result<Vec<Chunk>, SourceError> {
    let mut chunks = Vec::new();
    for table in tables {
        let parts = table.bytes.div_ceil(chunk_bytes.max(1)).max(1);
        let key = table.int_key.as_ref().filter(|_| by_key);
        let conditions: Vec<Option<String>> = if parts <= 1 {
            vec![None]
        } else if let Some(key) = key {
            let bounds = client
                .query_one(
                    &format!(
                        "SELECT min({k})::int8, max({k})::int8 FROM {t}",
                        k = quote_ident(key),
                        t = table.qualified()
                    ),
                    &[],
                )
                .await
                .map_err(|e| pg.error(&format!("reading the key range of {}", table.qualified()), e))?;
            match (bounds.get::<_, Option<i64>>(0), bounds.get::<_, Option<i64>>(1)) {
                (Some(min), Some(max)) => key_ranges(key, min, max, parts).into_iter().map(Some).collect(),
                _ => vec![None],
            }
        } else if by_key {
            // Before PostgreSQL 14 a ctid condition scans the whole table: read it in one piece.
            vec![None]
        } else {
            page_ranges(table.bytes / 8192 + 1, parts)
                .into_iter()
                .map(Some)
                .collect()
        };
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
    chunks.sort_by(|a, b| {
        b.estimate
            .cmp(&a.estimate)
            .then(a.table.oid.cmp(&b.table.oid))
            .then(a.index.cmp(&b.index))
    });
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ranges_cover_everything_without_overlap() {
        assert_eq!(key_ranges("id", 1, 100, 1), ["true"]);
        assert_eq!(
            key_ranges("id", 1, 100, 4),
            [
                "\"id\" < 26",
                "\"id\" >= 26 AND \"id\" < 51",
                "\"id\" >= 51 AND \"id\" < 76",
                "\"id\" >= 76"
            ]
        );
        // More parts than keys: one key per part at most.
        assert_eq!(key_ranges("k", 5, 6, 10).len(), 2);
        // Extremes of int8 do not overflow.
        let wide = key_ranges("k", i64::MIN, i64::MAX, 3);
        assert_eq!(wide.len(), 3);
        assert!(wide[0].starts_with("\"k\" < -"));
    }

    #[test]
    fn page_ranges_cover_every_page_and_beyond() {
        assert_eq!(page_ranges(10, 1), ["ctid >= '(0,0)'::tid"]);
        assert_eq!(
            page_ranges(10, 3),
            [
                "ctid >= '(0,0)'::tid AND ctid < '(3,0)'::tid",
                "ctid >= '(3,0)'::tid AND ctid < '(6,0)'::tid",
                "ctid >= '(6,0)'::tid"
            ]
        );
    }

    #[test]
    fn copy_statements_name_columns_and_skip_generated_ones() {
        let table = Table {
            oid: 1,
            schema: "Sales".into(),
            name: "order \"lines\"".into(),
            columns: vec!["id".into(), "select".into()],
            int_key: Some("id".into()),
            bytes: 0,
        };
        let whole = Chunk {
            table: table.clone(),
            index: 0,
            condition: None,
            estimate: 0,
        };
        assert_eq!(
            whole.copy_out_sql(),
            r#"COPY "Sales"."order ""lines""" ("id", "select") TO STDOUT"#
        );
        let part = Chunk {
            condition: Some("\"id\" < 5".into()),
            ..whole
        };
        assert_eq!(
            part.copy_out_sql(),
            r#"COPY (SELECT "id", "select" FROM "Sales"."order ""lines""" WHERE "id" < 5) TO STDOUT"#
        );
    }
}
