//! `cairn replica reload` of a PostgreSQL replica of a MySQL source: chosen tables — or every
//! table of chosen databases — copied again from the source at a new, known log position, in one
//! target transaction with the replica's lease held, so that the replica is as it was or
//! reloaded, never in between. Each table is dropped, created from its definition on the source
//! now, loaded through the mapping and its catalog row replaced; the position is kept
//! (`reload_window`) so the applier passes over the table's earlier changes — the statement
//! that stopped it among them — and rejoins the stream there, as pg_chameleon's `sync_tables`.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_postgres::Client;

use super::catalog::{self, Definition, delete_sql, translate_all, upsert_sql};
use super::follow_state as state;
use super::load::{Loaded, copy_rows};
use super::reload_window::{EVERY_TABLE, WINDOWS_DDL, record_sql};
use crate::engine::follow::Reloaded;
use crate::engine::mysql::{SnapshotTable, TableSnapshot};
use crate::engine::postgres::{Pg, quote_ident};
use crate::engine::{SourceError, SourceSpec};
use crate::repo::model::LogPosition;

/// Bytes of rows in flight between the source's reader and the target's `COPY`.
const PIPE: usize = 512 * 1024;

/// What to reload: a database, and one table of it or every one (`None`).
pub type Selection = (String, Option<String>);

/// Reloads `selection` of `source`'s replica in `pg`.
///
/// # Errors
/// No such replica, a running applier ([`SourceError::Locked`]), a database the replica does not
/// hold or a table the source does not have, a table changed during the reload (run again), a
/// view or other object on the replica that depends on a reloaded table, or either server's
/// error. Nothing of the replica changes then.
pub async fn reload(
    pg: &Pg,
    source: &SourceSpec,
    selection: &[Selection],
    lock_wait: Duration,
) -> Result<Reloaded, SourceError> {
    // One session holds the lease and runs the transaction: if it is lost, so is the
    // transaction, and no applier can start on a half-replaced replica.
    let client = pg.connect("replica reload").await?;
    let setup = state::load(pg, &client, &source.name).await?;
    state::acquire(pg, &client, &setup).await?;
    for (database, table) in selection {
        if !setup.databases.contains_key(database) {
            return Err(SourceError::Unsupported(format!(
                "the replica of source {} holds databases {}, not {database}",
                source.name,
                setup.databases.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        if let Some(table) = table
            && !setup.filters.table_included(database, table)
        {
            return Err(SourceError::Unsupported(format!(
                "{database}.{table}: the replica leaves it out (the seed's filters)"
            )));
        }
    }
    // What the seed kept of each table: its rows, or (filtered) its definition only.
    let pick = |database: &str, table: &str| {
        let chosen = selection
            .iter()
            .any(|(d, t)| d == database && t.as_deref().is_none_or(|t| t == table));
        (chosen && setup.filters.table_included(database, table)).then(|| setup.filters.data_included(database, table))
    };
    let mut snapshot = TableSnapshot::open(source, &setup.server_identity, &pick, lock_wait).await?;
    let tables = std::mem::take(&mut snapshot.tables);
    for (database, table) in selection {
        if let Some(table) = table
            && !tables.iter().any(|t| &t.database == database && &t.name == table)
        {
            snapshot.finish().await;
            return Err(SourceError::Unsupported(format!(
                "source {} has no table {database}.{table} (a view, or not there): nothing was reloaded",
                source.name
            )));
        }
    }
    let position = snapshot.position.clone();
    let result = replace(pg, &client, &setup, selection, &tables, &mut snapshot, &position).await;
    snapshot.finish().await;
    let (rows, dropped, foreign_keys_dropped) = result?;
    Ok(Reloaded {
        source: source.name.clone(),
        target: pg.name.clone(),
        tables: tables.iter().map(|t| format!("{}.{}", t.database, t.name)).collect(),
        rows,
        position,
        dropped,
        foreign_keys_dropped,
    })
}

/// Replaces the tables in one target transaction; returns the rows loaded, the tables dropped
/// (of a reloaded database, gone from the source) and the foreign keys dropped with them.
#[allow(clippy::too_many_arguments)]
async fn replace(
    pg: &Pg,
    client: &Client,
    setup: &state::Setup,
    selection: &[Selection],
    tables: &[SnapshotTable],
    snapshot: &mut TableSnapshot,
    position: &LogPosition,
) -> Result<(u64, Vec<String>, Vec<String>), SourceError> {
    let LogPosition::Mysql { file, position, .. } = position else {
        return Err(SourceError::Unsupported(format!(
            "{position} is not a binary log position"
        )));
    };
    // The catalog with the reloaded tables as the source has them now: every table is translated
    // together so that index names stay unique in each schema.
    let reading = "reading the replica's table definitions (cairn_replay.mysql_tables)";
    let mut definitions: BTreeMap<(String, String), Definition> = catalog::load(client, &setup.targets)
        .await
        .map_err(|e| pg.error(reading, e))?
        .into_iter()
        .map(|d| ((d.database.clone(), d.name.clone()), d))
        .collect();
    let whole: Vec<&String> = selection.iter().filter(|(_, t)| t.is_none()).map(|(d, _)| d).collect();
    // Gone: the source no longer has it at all (a table the filters keep out was never in the
    // catalog).
    let gone: Vec<(String, String)> = definitions
        .keys()
        .filter(|key| whole.contains(&&key.0) && !snapshot.listed.contains(key))
        .cloned()
        .collect();
    for key in &gone {
        definitions.remove(key);
    }
    for table in tables {
        let definition = Definition {
            database: table.database.clone(),
            name: table.name.clone(),
            create: table.create.clone(),
            added: table.added.clone(),
        };
        definitions.insert((table.database.clone(), table.name.clone()), definition);
    }
    let all: Vec<Definition> = definitions.values().cloned().collect();
    let schema_of = |database: &str| {
        setup
            .databases
            .get(database)
            .cloned()
            .unwrap_or_else(|| database.to_string())
    };
    let translated = translate_all(&all, &schema_of, "the reloaded tables")?.tables;

    let doing = "starting the reload transaction";
    client
        .batch_execute(&format!("BEGIN; SET LOCAL statement_timeout = 0; {WINDOWS_DDL}"))
        .await
        .map_err(|e| pg.error(doing, e))?;
    let result = async {
        let (mut rows, mut dropped, mut keys) = (0u64, Vec::new(), Vec::new());
        for (database, table) in &gone {
            let schema = schema_of(database);
            keys.extend(drop_foreign_keys_to(pg, client, &schema, table).await?);
            let sql = format!(
                "DROP TABLE IF EXISTS {}.{}; {}",
                quote_ident(&schema),
                quote_ident(table),
                delete_sql(&setup.targets, database, table)
            );
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| pg.error(&format!("dropping {schema}.{table}, gone from the source"), e))?;
            dropped.push(format!("{schema}.{table}"));
        }
        for table in tables {
            let key = (table.database.clone(), table.name.clone());
            let pg_table = translated
                .get(&key)
                .ok_or_else(|| SourceError::Damaged(format!("{}.{}: not translated", key.0, key.1)))?;
            let shown = format!("{}.{}", pg_table.schema, pg_table.name);
            keys.extend(drop_foreign_keys_to(pg, client, &pg_table.schema, &pg_table.name).await?);
            let drop = format!(
                "DROP TABLE IF EXISTS {}.{}",
                quote_ident(&pg_table.schema),
                quote_ident(&pg_table.name)
            );
            client
                .batch_execute(&format!("{drop}; {}", pg_table.create))
                .await
                .map_err(|e| {
                    pg.error(
                        &format!("replacing {shown} (an object that depends on it, such as a view, must go first)"),
                        e,
                    )
                })?;
            for note in &pg_table.notes {
                tracing::warn!("not translated: {note}");
            }
            let mut rules = Vec::new();
            for name in &table.columns {
                let column =
                    pg_table.columns.iter().find(|c| &c.name == name).ok_or_else(|| {
                        SourceError::Unsupported(format!("{shown}: column {name} has no translation"))
                    })?;
                rules.push(column.rule.clone());
            }
            let list: Vec<String> = table.columns.iter().map(|n| quote_ident(n)).collect();
            let copy = format!(
                "COPY {}.{} ({}) FROM STDIN",
                quote_ident(&pg_table.schema),
                quote_ident(&pg_table.name),
                list.join(", ")
            );
            let doing = format!("loading {shown} from source {}", setup.source);
            let mut loaded = Loaded::default();
            let copied = match table.rows {
                false => 0,
                true => {
                    let (writer, reader) = tokio::io::duplex(PIPE);
                    let (read, copied) = tokio::join!(
                        snapshot.read(table, writer),
                        copy_rows(pg, client, reader, &copy, &rules, &doing, &mut loaded)
                    );
                    // The side that failed first: a source read cut short ends the rows early
                    // (PostgreSQL then sees a truncated row); a target that refused stops the read.
                    match (read, copied) {
                        (Ok(()), copied) => copied?,
                        (Err(read), Err(SourceError::Damaged(_)) | Ok(_)) => return Err(read),
                        (Err(_), Err(copied)) => return Err(copied),
                    }
                }
            };
            rows += copied;
            for (column, count) in &loaded.zero_dates {
                tracing::warn!("{column}: {count} zero dates became NULL, or -infinity where the column is NOT NULL");
            }
            for statement in &pg_table.after_load {
                client
                    .batch_execute(statement)
                    .await
                    .map_err(|e| pg.error(&format!("finishing {shown} ({statement})"), e))?;
            }
            let definition = &definitions[&key];
            let record = format!(
                "{}; {}",
                upsert_sql(&setup.targets, definition),
                record_sql(&setup.targets, &key.0, &key.1, file, *position)
            );
            client
                .batch_execute(&record)
                .await
                .map_err(|e| pg.error(&format!("recording the reload of {shown}"), e))?;
            tracing::info!("{shown}: reloaded, {}", crate::text::count(copied, "row"));
        }
        for database in &whole {
            client
                .batch_execute(&record_sql(&setup.targets, database, EVERY_TABLE, file, *position))
                .await
                .map_err(|e| pg.error(&format!("recording the reload of {database}"), e))?;
        }
        Ok::<_, SourceError>((rows, dropped, keys))
    }
    .await;
    match result {
        Ok(done) => {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| pg.error("committing the reload", e))?;
            Ok(done)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Drops the foreign keys of other tables that reference `schema`.`table` (a drop without
/// CASCADE refuses while they exist); `replica detach` makes them again from the catalog.
async fn drop_foreign_keys_to(pg: &Pg, client: &Client, schema: &str, table: &str) -> Result<Vec<String>, SourceError> {
    let doing = format!("finding the foreign keys that reference {schema}.{table}");
    let found = client
        .query(
            "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c \
             WHERE c.contype = 'f' AND c.conrelid <> c.confrelid AND c.confrelid = \
             to_regclass(quote_ident($1) || '.' || quote_ident($2))",
            &[&schema, &table],
        )
        .await
        .map_err(|e| pg.error(&doing, e))?;
    let mut dropped = Vec::new();
    for row in found {
        let (on, name): (String, String) = (row.get(0), row.get(1));
        client
            .batch_execute(&format!("ALTER TABLE {on} DROP CONSTRAINT {}", quote_ident(&name)))
            .await
            .map_err(|e| pg.error(&format!("dropping foreign key {name} of {on}"), e))?;
        dropped.push(format!("{on}.{name}"));
    }
    Ok(dropped)
}
