//! Loading a MySQL copy's data files into PostgreSQL: workers that each stream the next file,
//! read its `LOAD DATA` rows, write them as `COPY` text through the mapping, one transaction per
//! file, with the file's MD5 checked while it streams and its row count compared with the
//! manifest's.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::SinkExt;

use super::ddl::PgTable;
use super::values::{ColumnRule, Written, copy_field};
use crate::engine::SourceError;
use crate::engine::mysql::format::parse_rows;
use crate::engine::pool::Queue;
use crate::engine::postgres::{Pg, quote_ident};
use crate::progress::Progress;
use crate::repo::reader::{StoredFile, open_verified};
use crate::storage::Destination;

/// Bytes read from a stored file at a time, and `COPY` text sent at a time.
const BLOCK: usize = 256 * 1024;

/// What the workers loaded: rows, and zero dates written as NULL or `-infinity` per column.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub rows: u64,
    pub zero_dates: BTreeMap<String, u64>,
}

/// One worker: loads files from `queue` until it is empty.
pub(super) async fn worker(
    pg: Pg,
    destination: Arc<dyn Destination>,
    queue: Queue<StoredFile>,
    tables: Arc<BTreeMap<(String, String), PgTable>>,
    progress: Arc<Progress>,
) -> Result<Loaded, SourceError> {
    let client = pg.connect("restore worker").await?;
    client
        .batch_execute("SET synchronous_commit = off; SET statement_timeout = 0")
        .await
        .map_err(|e| pg.error("preparing a loader", e))?;
    let mut loaded = Loaded::default();
    while let Some(stored) = queue.next() {
        let Some(data) = stored.data() else {
            return Err(SourceError::Damaged(format!(
                "{}: the manifest does not describe it as a data file",
                stored.key
            )));
        };
        let key = (data.container().to_string(), data.table.clone());
        let Some(table) = tables.get(&key) else {
            return Err(SourceError::Damaged(format!(
                "{}: table {}.{} is not in the copy's schema",
                stored.key, key.0, key.1
            )));
        };
        // The file's columns, in its order (generated columns are not in a copy).
        let names: Vec<String> = serde_json::from_value::<Vec<serde_json::Value>>(data.columns.clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.get("name").and_then(|n| n.as_str()).map(str::to_string))
            .collect();
        let mut rules = Vec::new();
        for name in &names {
            let column = table.columns.iter().find(|c| &c.name == name).ok_or_else(|| {
                SourceError::Damaged(format!(
                    "{}: column {name} is not in table {}.{} of the copy's schema",
                    stored.key, key.0, key.1
                ))
            })?;
            rules.push(column.rule.clone());
        }
        let list: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
        let sql = format!(
            "COPY {}.{} ({}) FROM STDIN",
            quote_ident(&table.schema),
            quote_ident(&table.name),
            list.join(", ")
        );
        let doing = format!("loading {}.{} from {}", table.schema, table.name, stored.key);
        let rows = load_file(&pg, &client, &destination, &stored, &sql, &rules, &doing, &mut loaded).await?;
        if let Some(expected) = stored.rows()
            && expected != rows
        {
            return Err(SourceError::Damaged(format!(
                "{doing}: loaded {rows} rows where the manifest records {expected}"
            )));
        }
        loaded.rows += rows;
        progress.done(stored.file.size);
    }
    Ok(loaded)
}

/// Loads one file in one transaction; returns the rows loaded.
#[allow(clippy::too_many_arguments)]
async fn load_file(
    pg: &Pg,
    client: &tokio_postgres::Client,
    destination: &Arc<dyn Destination>,
    stored: &StoredFile,
    sql: &str,
    rules: &[ColumnRule],
    doing: &str,
    loaded: &mut Loaded,
) -> Result<u64, SourceError> {
    client.batch_execute("BEGIN").await.map_err(|e| pg.error(doing, e))?;
    let result = async {
        let reader = open_verified(destination, stored).await?;
        copy_rows(pg, client, reader, sql, rules, doing, loaded).await
    }
    .await;
    match result {
        Ok(rows) => {
            client.batch_execute("COMMIT").await.map_err(|e| pg.error(doing, e))?;
            Ok(rows)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Streams `LOAD DATA` rows from `reader` through the mapping into `COPY` (`sql`), in the
/// transaction the caller holds; returns the rows loaded. A failure leaves the `COPY` aborted
/// (its sink dropped unfinished), so the caller's transaction fails.
pub(super) async fn copy_rows(
    pg: &Pg,
    client: &tokio_postgres::Client,
    mut reader: impl tokio::io::AsyncRead + Unpin,
    sql: &str,
    rules: &[ColumnRule],
    doing: &str,
    loaded: &mut Loaded,
) -> Result<u64, SourceError> {
    let sink = client.copy_in::<_, Bytes>(sql).await.map_err(|e| pg.error(doing, e))?;
    let mut sink = Box::pin(sink);
    let mut input: Vec<u8> = Vec::new();
    let mut block = vec![0u8; BLOCK];
    let mut out: Vec<u8> = Vec::with_capacity(BLOCK * 2);
    let mut rows_read = 0u64;
    loop {
        let n = crate::streams::fill(&mut reader, &mut block)
            .await
            .map_err(SourceError::from_read)?;
        input.extend_from_slice(&block[..n]);
        let (rows, used) = parse_rows(&input);
        input.drain(..used);
        for row in rows {
            rows_read += 1;
            if row.len() != rules.len() {
                return Err(SourceError::Damaged(format!(
                    "{doing}: row {rows_read} has {} fields where the copy lists {} columns",
                    row.len(),
                    rules.len()
                )));
            }
            for (i, (field, rule)) in row.iter().zip(rules).enumerate() {
                if i > 0 {
                    out.push(b'\t');
                }
                let written = copy_field(&mut out, rule, field.as_deref())
                    .map_err(|e| SourceError::Unsupported(format!("{doing}: row {rows_read}: {e}")))?;
                if written == Written::ZeroDate {
                    *loaded.zero_dates.entry(rule.name.clone()).or_default() += 1;
                }
            }
            out.push(b'\n');
        }
        if out.len() >= BLOCK || (n == 0 && !out.is_empty()) {
            sink.send(Bytes::from(std::mem::take(&mut out)))
                .await
                .map_err(|e| pg.error(doing, e))?;
        }
        if n == 0 {
            if !input.is_empty() {
                return Err(SourceError::Damaged(format!("{doing}: the file ends inside a row")));
            }
            return sink.as_mut().finish().await.map_err(|e| pg.error(doing, e));
        }
    }
}
