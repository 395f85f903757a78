//! `cairn verify --deep` on PostgreSQL: each table of a scratch restore read back with COPY
//! under the copy's output settings, its rows counted and digested as the backup did.

use futures::StreamExt;

use super::{Pg, quote_ident};
use crate::engine::{SourceError, TableDigest, TableToDigest};
use crate::streams::RowDigest;

/// Digests each table of `tables` in the database of `pg`.
pub(super) async fn digest_tables(pg: &Pg, tables: &[TableToDigest]) -> Result<Vec<TableDigest>, SourceError> {
    let client = pg.connect("verify --deep").await?;
    client
        .batch_execute(&format!(
            "SET statement_timeout = 0; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {}",
            super::apply::OUTPUT_SETTINGS
        ))
        .await
        .map_err(|e| pg.error("preparing to read the scratch database", e))?;
    let mut digests = Vec::new();
    for table in tables {
        let columns: Vec<String> = serde_json::from_value(table.columns.clone()).map_err(|e| {
            SourceError::Unsupported(format!(
                "the copy describes the columns of {}.{} in a form this cairn does not read: {e}",
                table.container, table.table
            ))
        })?;
        let qualified = format!("{}.{}", quote_ident(&table.container), quote_ident(&table.table));
        let sql = match columns.is_empty() {
            true => format!("COPY {qualified} TO STDOUT"),
            false => format!(
                "COPY {qualified} ({}) TO STDOUT",
                columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ")
            ),
        };
        let doing = format!("reading {qualified} back");
        let stream = client.copy_out(sql.as_str()).await.map_err(|e| pg.error(&doing, e))?;
        let mut stream = std::pin::pin!(stream);
        let (mut digest, mut rows) = (RowDigest::default(), 0u64);
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| pg.error(&doing, e))?;
            rows += piece.iter().filter(|b| **b == b'\n').count() as u64;
            digest.update(&piece);
        }
        digests.push(TableDigest {
            rows,
            digest: digest.hex(),
        });
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| pg.error("finishing the read", e))?;
    Ok(digests)
}

/// Drops scratch databases of this server; sessions still in them are ended.
pub(super) async fn drop_databases(pg: &Pg, names: &[String]) -> Result<(), SourceError> {
    let maintenance = pg.with_database("postgres");
    let client = maintenance.connect("dropping a scratch database").await?;
    for name in names {
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name)))
            .await
            .map_err(|e| maintenance.error(&format!("dropping scratch database {name}"), e))?;
    }
    Ok(())
}
