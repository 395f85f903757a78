//! `cairn replica detach` of a PostgreSQL replica of a MySQL source: with the replica's lease
//! held (no applier runs), every identity sequence is set past its column's largest value (the
//! applier writes the source's ids and never moves them), every foreign key of the tables'
//! MySQL definitions is added where missing and validated (left `NOT VALID`, with a warning,
//! when rows reference nothing), and cairn's bookkeeping for the replica is removed: what is
//! left is a standalone database.

use super::catalog::{self, translate_all};
use super::follow_state as state;
use crate::engine::SourceError;
use crate::engine::follow::Detached;
use crate::engine::postgres::{Pg, quote_literal};

/// Detaches `source`'s replica in `pg`.
///
/// # Errors
/// No such replica, a running applier ([`SourceError::Locked`]), a foreign key that cannot be
/// added, or the target's error.
pub async fn detach(pg: &Pg, source: &str) -> Result<Detached, SourceError> {
    let control = pg.connect("replica detach").await?;
    let setup = state::load(pg, &control, source).await?;
    state::acquire(pg, &control, &setup).await?;
    let reading = "reading the replica's table definitions (cairn_replay.mysql_tables)";
    let definitions = catalog::load(&control, &setup.targets)
        .await
        .map_err(|e| pg.error(reading, e))?;
    let schema_of = |database: &str| {
        setup
            .databases
            .get(database)
            .cloned()
            .unwrap_or_else(|| database.to_string())
    };
    let tables = translate_all(&definitions, &schema_of, "the replica's table definitions")?.tables;
    let mut detached = Detached {
        source: source.to_string(),
        target: pg.name.clone(),
        ..Detached::default()
    };
    for table in tables.values() {
        for statement in table
            .after_load
            .iter()
            .filter(|s| s.starts_with("SELECT pg_catalog.setval"))
        {
            control
                .batch_execute(statement)
                .await
                .map_err(|e| pg.error(&format!("setting the sequence of {}.{}", table.schema, table.name), e))?;
            detached.sequences += 1;
        }
    }
    for table in tables.values() {
        for key in &table.at_detach {
            let name = key.shown.rsplit('.').next().unwrap_or_default();
            let found = control
                .query_opt(
                    "SELECT convalidated FROM pg_constraint WHERE conname = $1 AND conrelid = \
                     (quote_ident($2) || '.' || quote_ident($3))::regclass",
                    &[&name, &table.schema, &table.name],
                )
                .await
                .map_err(|e| pg.error(&format!("looking up foreign key {}", key.shown), e))?
                .map(|row| row.get::<_, bool>(0));
            let validated = match found {
                Some(validated) => validated,
                None => {
                    control
                        .batch_execute(&key.add)
                        .await
                        .map_err(|e| pg.error(&format!("adding foreign key {}", key.shown), e))?;
                    detached.foreign_keys_added += 1;
                    false
                }
            };
            if validated {
                continue;
            }
            if let Err(e) = control.batch_execute(&key.validate).await {
                tracing::warn!(
                    "foreign key {}: left NOT VALID: {}; fix the rows, then run: {}",
                    key.shown,
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |db| db.message().to_string()),
                    key.validate
                );
                detached.foreign_keys_not_valid.push(key.shown.clone());
            }
        }
    }
    let (source_literal, targets) = (quote_literal(source), quote_literal(&setup.targets));
    control
        .batch_execute(&format!(
            "BEGIN;
             DELETE FROM cairn_replay.mysql_replica WHERE source = {source_literal};
             DELETE FROM {progress} WHERE source = {source_literal} AND target_schemas = {targets};
             DELETE FROM cairn_replay.mysql_tables WHERE target_schemas = {targets};
             DELETE FROM cairn_replay.mysql_databases WHERE target_schemas = {targets};
             {windows};
             DELETE FROM cairn_replay.mysql_reloads WHERE target_schemas = {targets};
             COMMIT",
            windows = super::reload_window::WINDOWS_DDL,
            progress = super::replay::PROGRESS_TABLE
        ))
        .await
        .map_err(|e| pg.error("removing the replica's bookkeeping (cairn_replay)", e))?;
    // The schema goes when no replica of any kind is left in it.
    let left: bool = control
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM cairn_replay.mysql_replica) OR EXISTS (SELECT 1 FROM cairn_replay.mysql_progress) \
             OR (to_regclass('cairn_replay.replica') IS NOT NULL)",
            &[],
        )
        .await
        .map_err(|e| pg.error("looking at what is left in cairn_replay", e))?
        .get(0);
    if !left {
        control
            .batch_execute("DROP SCHEMA cairn_replay CASCADE")
            .await
            .map_err(|e| pg.error("dropping the schema cairn_replay", e))?;
    }
    Ok(detached)
}
