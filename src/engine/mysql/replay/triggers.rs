//! What a replay keeps on the target besides the data: its progress table, the triggers it
//! sets aside while rows are applied (and puts back after), and the session of an interrupted
//! replay that must end before a resumed one starts.

use mysql_async::prelude::Queryable;

use super::PROGRESS_DATABASE;
use super::apply::{Applier, ROW_SESSION};
use crate::engine::SourceError;
use crate::engine::mysql::{quote_ident, quote_literal};
use crate::retry::Retry;

/// `information_schema.TRIGGERS` as read: schema, name, table, action order.
type TriggerRow = (Vec<u8>, Vec<u8>, Vec<u8>, u64);
/// A trigger set aside: database, name, table, sql_mode, statement, client charset, collation.
type KeptTrigger = (String, String, String, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// Sets the target's triggers aside while rows are replayed (row events already hold what the
/// source's triggers did), keeping their definitions in the progress database.
pub(super) async fn set_aside_triggers(applier: &mut Applier<'_>) -> Result<(), SourceError> {
    let targets: Vec<String> = applier.databases.values().cloned().collect();
    if targets.is_empty() {
        return Ok(());
    }
    let list = targets.iter().map(|d| quote_literal(d)).collect::<Vec<_>>().join(", ");
    let found: Vec<TriggerRow> = applier
        .conn
        .query(format!(
            "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_ORDER FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA IN ({list})"
        ))
        .await
        .map_err(|e| applier.my.error("listing the target's triggers", e))?;
    for (db, name, table, order) in found {
        let (db, name, table) = (
            String::from_utf8_lossy(&db).into_owned(),
            String::from_utf8_lossy(&name).into_owned(),
            String::from_utf8_lossy(&table).into_owned(),
        );
        // A selective restore sets aside only its own tables' triggers: the live tables beside
        // them keep theirs.
        if applier.only.as_ref().is_some_and(|only| !only.restored(&db, &table)) {
            continue;
        }
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let shown: Option<mysql_async::Row> = applier
            .conn
            .query_first(format!("SHOW CREATE TRIGGER {qualified}"))
            .await
            .map_err(|e| applier.my.error(&format!("reading trigger {qualified}"), e))?;
        let Some(shown) = shown else { continue };
        let sql_mode: Vec<u8> = shown.get(1).unwrap_or_default();
        let statement: Vec<u8> = shown.get(2).unwrap_or_default();
        let charset: Vec<u8> = shown.get(3).unwrap_or_default();
        let collation: Vec<u8> = shown.get(4).unwrap_or_default();
        applier
            .conn
            .exec_drop(
                format!(
                    "REPLACE INTO {PROGRESS_DATABASE}.deferred_triggers (source, target_databases, db, name, table_name, \
                     action_order, sql_mode, statement, character_set_client, collation_connection) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    &applier.source,
                    &applier.targets,
                    &db,
                    &name,
                    &table,
                    order,
                    sql_mode,
                    statement,
                    charset,
                    collation,
                ),
            )
            .await
            .map_err(|e| applier.my.error(&format!("keeping trigger {qualified} aside"), e))?;
        applier
            .exec(
                &format!("setting trigger {qualified} aside"),
                &format!("DROP TRIGGER {qualified}"),
            )
            .await?;
        tracing::debug!("trigger {qualified} set aside for the replay");
    }
    Ok(())
}

/// Creates the triggers set aside again, in their order; a trigger whose table the replay
/// dropped is reported and forgotten.
pub(super) async fn restore_triggers(applier: &mut Applier<'_>) -> Result<(), SourceError> {
    let kept: Vec<KeptTrigger> = applier
        .conn
        .exec(
            format!(
                "SELECT db, name, table_name, sql_mode, statement, character_set_client, collation_connection \
                 FROM {PROGRESS_DATABASE}.deferred_triggers WHERE source = ? AND target_databases = ? ORDER BY db, table_name, action_order"
            ),
            (&applier.source, &applier.targets),
        )
        .await
        .map_err(|e| applier.my.error("reading the triggers set aside", e))?;
    for (db, name, table, sql_mode, statement, charset, collation) in kept {
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let exists: Option<u64> = applier
            .conn
            .exec_first(
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&db, &table),
            )
            .await
            .map_err(|e| applier.my.error("checking a trigger's table", e))?;
        if exists.is_some() {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            applier
                .exec(
                    &format!("recreating trigger {qualified}"),
                    &format!(
                        "USE {}; SET SESSION sql_mode = {}, SESSION character_set_client = {}, SESSION \
                         collation_connection = {}",
                        quote_ident(&db),
                        quote_literal(&text(&sql_mode)),
                        quote_literal(&text(&charset)),
                        quote_literal(&text(&collation))
                    ),
                )
                .await?;
            let statement = text(&statement);
            applier
                .exec(&format!("recreating trigger {qualified}"), &statement)
                .await?;
        } else {
            tracing::warn!("trigger {qualified} was not recreated: the replay dropped its table {table}");
        }
        applier
            .conn
            .exec_drop(
                format!("DELETE FROM {PROGRESS_DATABASE}.deferred_triggers WHERE source = ? AND target_databases = ? AND db = ? AND name = ?"),
                (&applier.source, &applier.targets, &db, &name),
            )
            .await
            .map_err(|e| applier.my.error("forgetting a recreated trigger", e))?;
    }
    applier.exec("restoring the row session", ROW_SESSION).await
}

/// Ends the session of an interrupted replay before its position is read: a client that died
/// may have left its last COMMIT in the server's socket buffer, and the server would still run it
/// after the position was read, so that transaction would be applied twice.
pub(super) async fn settle_earlier_replay(applier: &mut Applier<'_>) -> Result<(), SourceError> {
    let earlier: Option<u64> = applier
        .conn
        .exec_first(
            format!("SELECT connection_id FROM {PROGRESS_DATABASE}.progress WHERE source = ? AND target_databases = ?"),
            (&applier.source, &applier.targets),
        )
        .await
        .map_err(|e| applier.my.error("reading the replay progress", e))?;
    let Some(id) = earlier.filter(|id| *id != 0) else {
        return Ok(());
    };
    let mut retry = Retry::constant(std::time::Duration::from_millis(100), 300);
    loop {
        let alive: Option<u64> = applier
            .conn
            .exec_first("SELECT ID FROM information_schema.PROCESSLIST WHERE ID = ?", (id,))
            .await
            .map_err(|e| applier.my.error("looking for the interrupted replay's session", e))?;
        if alive.is_none() {
            return Ok(());
        }
        if retry.failed() == 0 {
            tracing::warn!("--resume: the interrupted replay's session {id} is still on the server; ending it");
            if let Err(e) = applier.conn.query_drop(format!("KILL {id}")).await {
                tracing::warn!("--resume: ending session {id}: {e}");
            }
        }
        if !retry.wait().await {
            break;
        }
    }
    Err(SourceError::Locked {
        database: applier.my.name.clone(),
        doing: "resuming the replay".into(),
        detail: format!("session {id} of the interrupted replay is still running after 30 s"),
    })
}

/// Creates the progress database and tables when missing.
pub(super) async fn prepare_progress(applier: &mut Applier<'_>) -> Result<(), SourceError> {
    for statement in progress_tables() {
        applier.exec("preparing the replay progress table", &statement).await?;
    }
    Ok(())
}

/// The statements that create the progress database and its tables when missing.
pub(super) fn progress_tables() -> [String; 3] {
    [
        format!("CREATE DATABASE IF NOT EXISTS {PROGRESS_DATABASE} CHARACTER SET utf8mb4"),
        format!(
            "CREATE TABLE IF NOT EXISTS {PROGRESS_DATABASE}.progress (source VARCHAR(191) NOT NULL, target_databases VARCHAR(300) NOT NULL, \
             full_copy VARCHAR(64) NOT NULL, copy_id VARCHAR(64) NOT NULL, server_file VARCHAR(255) NOT NULL, \
             position BIGINT UNSIGNED NOT NULL, gtid TEXT, transactions BIGINT UNSIGNED NOT NULL DEFAULT 0, \
             connection_id BIGINT UNSIGNED NOT NULL DEFAULT 0, \
             updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
             PRIMARY KEY (source, target_databases)) \
             ENGINE=InnoDB"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {PROGRESS_DATABASE}.deferred_triggers (source VARCHAR(191) NOT NULL, target_databases VARCHAR(300) NOT NULL, \
             db VARCHAR(64) NOT NULL, name VARCHAR(64) NOT NULL, table_name VARCHAR(64) NOT NULL, \
             action_order BIGINT UNSIGNED NOT NULL, sql_mode TEXT, statement LONGBLOB NOT NULL, \
             character_set_client VARCHAR(64), collation_connection VARCHAR(64), PRIMARY KEY (source, target_databases, db, name)) \
             ENGINE=InnoDB"
        ),
    ]
}
