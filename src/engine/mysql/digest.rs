//! `cairn verify --deep` on MySQL/MariaDB: each table of a scratch restore read back through
//! the same query and formatting as a copy's workers, its rows counted and digested.

use mysql_async::prelude::Queryable;

use super::dump::{DUMP_SESSION, ROW_BLOCK, read_rows};
use super::inventory::{Chunk, Column, Table};
use super::{My, quote_ident};
use crate::engine::{SourceError, TableDigest, TableToDigest};
use crate::streams::{Counters, Counting};

/// Digests each table of `tables` on the server of `my`.
pub(super) async fn digest_tables(my: &My, tables: &[TableToDigest]) -> Result<Vec<TableDigest>, SourceError> {
    let mut conn = my.connect(None).await?;
    for statement in DUMP_SESSION {
        conn.query_drop(statement)
            .await
            .map_err(|e| my.error("preparing to read the scratch databases", e))?;
    }
    let mut digests = Vec::new();
    for wanted in tables {
        let columns: Vec<Column> = serde_json::from_value(wanted.columns.clone()).map_err(|e| {
            SourceError::Unsupported(format!(
                "the copy describes the columns of {}.{} in a form this cairn does not read: {e}",
                wanted.container, wanted.table
            ))
        })?;
        let chunk = Chunk {
            table: Table {
                database: wanted.container.clone(),
                name: wanted.table.clone(),
                engine: String::new(),
                columns,
                int_key: None,
                bytes: 0,
            },
            index: 0,
            condition: None,
            estimate: 0,
        };
        let doing = format!("reading {} back", chunk.table.qualified());
        let (pipe_writer, pipe_reader) = tokio::io::duplex(ROW_BLOCK * 2);
        let counters = Counters::default();
        let mut counted = Counting::new(pipe_reader, counters.clone());
        let drained = async {
            tokio::io::copy(&mut counted, &mut tokio::io::sink())
                .await
                .map_err(|e| SourceError::Database {
                    database: my.name.clone(),
                    doing: doing.clone(),
                    detail: e.to_string(),
                })
        };
        let (read, drained) = tokio::join!(read_rows(my, &mut conn, &chunk, pipe_writer, &doing), drained);
        read?;
        drained?;
        digests.push(TableDigest {
            rows: counters.newlines(),
            digest: counters.row_digest(),
        });
    }
    Ok(digests)
}

/// Drops the scratch databases `names`.
pub(super) async fn drop_databases(my: &My, names: &[String]) -> Result<(), SourceError> {
    let mut conn = my.connect(None).await?;
    for name in names {
        conn.query_drop(format!("DROP DATABASE IF EXISTS {}", quote_ident(name)))
            .await
            .map_err(|e| my.error(&format!("dropping scratch database {name}"), e))?;
    }
    Ok(())
}
