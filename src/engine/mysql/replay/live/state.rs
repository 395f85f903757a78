//! The replica's row on the target (`cairn_replay.replica`): what a seed recorded for the
//! applier (databases, filters, source server), the applier's lease (a named lock held by its
//! control session), its heartbeat, a stop request and the last error — what `replica status`
//! and `replica stop` read and write.

use std::collections::BTreeMap;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::super::triggers::progress_tables;
use super::super::{PROGRESS_DATABASE, target_key};
use crate::engine::SourceError;
use crate::engine::filter::Filters;
use crate::engine::follow::{FollowSetup, ReplicaState};
use crate::engine::mysql::My;
use crate::repo::model::LogPosition;

/// What the applier follows, as the seed recorded it.
#[derive(Debug, Clone)]
pub(super) struct Setup {
    pub source: String,
    /// The progress row's key: the target databases, sorted and joined.
    pub targets: String,
    pub databases: BTreeMap<String, String>,
    pub filters: Filters,
    pub full_copy: String,
    pub server_identity: String,
}

fn replica_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {PROGRESS_DATABASE}.replica (source VARCHAR(191) NOT NULL, \
         target_databases VARCHAR(300) NOT NULL, databases_map TEXT NOT NULL, filters TEXT NOT NULL, \
         full_copy VARCHAR(64) NOT NULL, server_identity VARCHAR(255) NOT NULL, \
         seeded_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), applier VARCHAR(300), \
         heartbeat_at TIMESTAMP(6) NULL, applied_event_at TIMESTAMP(6) NULL, stop_requested TINYINT NOT NULL DEFAULT 0, \
         last_error TEXT, last_error_at TIMESTAMP(6) NULL, idle_file VARCHAR(255) NULL, idle_position BIGINT UNSIGNED NULL, \
         PRIMARY KEY (source, target_databases)) ENGINE=InnoDB"
    )
}

/// The named lock an applier holds for as long as its control session lives: a second applier
/// of the same replica cannot take it, and a killed applier's lock goes with its session.
pub(super) fn lease_name(source: &str, targets: &str) -> String {
    let digest = crate::storage::md5_hex(format!("{source}\n{targets}").as_bytes());
    format!("cairn_replica_{}", &digest[..32])
}

/// Records what the applier needs, and the position it continues from, on the target.
pub(in crate::engine::mysql) async fn record_setup(my: &My, setup: &FollowSetup<'_>) -> Result<(), SourceError> {
    let LogPosition::Mysql { file, position, gtid } = setup.position else {
        return Err(SourceError::Unsupported(format!(
            "{}: {} is not a binary log position",
            my.name, setup.position
        )));
    };
    if file.is_empty() {
        return Err(SourceError::Unsupported(format!(
            "copy {} recorded no binary log position (the source's binary log was off): cairn's applier cannot \
             follow it",
            setup.full_copy
        )));
    }
    let mut conn = my.connect(Some("")).await?;
    let doing = "recording the replica for cairn's applier";
    for statement in progress_tables().into_iter().chain([replica_table()]) {
        conn.query_drop(statement).await.map_err(|e| my.error(doing, e))?;
    }
    let targets = target_key(setup.databases);
    let map = serde_json::to_string(setup.databases).unwrap_or_default();
    let filters = serde_json::to_string(setup.filters).unwrap_or_default();
    // One replica of a source per target server: a new seed replaces what an earlier one left.
    conn.exec_drop(
        format!("DELETE FROM {PROGRESS_DATABASE}.replica WHERE source = ?"),
        (setup.source,),
    )
    .await
    .map_err(|e| my.error(doing, e))?;
    conn.exec_drop(
        format!(
            "REPLACE INTO {PROGRESS_DATABASE}.replica (source, target_databases, databases_map, filters, full_copy, \
             server_identity) VALUES (?, ?, ?, ?, ?, ?)"
        ),
        (
            setup.source,
            &targets,
            map,
            filters,
            setup.full_copy,
            setup.server_identity,
        ),
    )
    .await
    .map_err(|e| my.error(doing, e))?;
    conn.exec_drop(
        format!(
            "REPLACE INTO {PROGRESS_DATABASE}.progress (source, target_databases, full_copy, copy_id, server_file, \
             position, gtid, transactions, connection_id) VALUES (?, ?, ?, 'seed', ?, ?, ?, 0, 0)"
        ),
        (
            setup.source,
            &targets,
            setup.full_copy,
            file,
            position,
            gtid.clone().unwrap_or_default(),
        ),
    )
    .await
    .map_err(|e| my.error(doing, e))?;
    let _ = conn.disconnect().await;
    Ok(())
}

/// A session on the target for the replica's row: times in UTC, as the row keeps them.
pub(super) async fn session(my: &My) -> Result<Conn, SourceError> {
    let mut conn = my.connect(Some("")).await?;
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .map_err(|e| my.error("preparing the applier's control session", e))?;
    Ok(conn)
}

/// Whether the target has the replica table at all.
async fn has_table(my: &My, conn: &mut Conn) -> Result<bool, SourceError> {
    let found: Option<u8> = conn
        .exec_first(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'replica'",
            (PROGRESS_DATABASE,),
        )
        .await
        .map_err(|e| my.error("looking for cairn's replicas", e))?;
    Ok(found.is_some())
}

/// The setup the seed recorded for `source`.
///
/// # Errors
/// [`SourceError::Unsupported`] naming the seed to run when there is none (or more than one).
pub(super) async fn load(my: &My, conn: &mut Conn, source: &str) -> Result<Setup, SourceError> {
    let not_seeded = || {
        SourceError::Unsupported(format!(
            "{} holds no replica of source {source} for cairn's applier: seed it first with `cairn replica seed \
             --source {source} --handover cairn …`",
            my.name
        ))
    };
    if !has_table(my, conn).await? {
        return Err(not_seeded());
    }
    let rows: Vec<(String, String, String, String, String)> = conn
        .exec(
            format!(
                "SELECT target_databases, databases_map, filters, full_copy, server_identity FROM \
                 {PROGRESS_DATABASE}.replica WHERE source = ?"
            ),
            (source,),
        )
        .await
        .map_err(|e| my.error("reading the replica's setup", e))?;
    let mut rows = rows.into_iter();
    let (Some((targets, map, filters, full_copy, server_identity)), None) = (rows.next(), rows.next()) else {
        return Err(not_seeded());
    };
    let damaged = |what: &str, e: serde_json::Error| {
        SourceError::Damaged(format!(
            "{}: {PROGRESS_DATABASE}.replica: the {what} of source {source} do not parse ({e}); seed the replica again",
            my.name
        ))
    };
    Ok(Setup {
        source: source.to_string(),
        targets,
        databases: serde_json::from_str(&map).map_err(|e| damaged("databases", e))?,
        filters: serde_json::from_str(&filters).map_err(|e| damaged("filters", e))?,
        full_copy,
        server_identity,
    })
}

/// Takes the replica's lease on `conn`, the applier's control session, and returns the
/// session's id. `stale`: this applier's earlier control session, which is ended when it still
/// holds the lease (a connection lost without the server noticing).
///
/// # Errors
/// [`SourceError::Locked`] naming the applier that holds it.
pub(super) async fn acquire(my: &My, conn: &mut Conn, setup: &Setup, stale: Option<u64>) -> Result<u64, SourceError> {
    let name = lease_name(&setup.source, &setup.targets);
    let doing = "taking the replica's lease";
    let holder: Option<Option<u64>> = conn
        .exec_first("SELECT IS_USED_LOCK(?)", (&name,))
        .await
        .map_err(|e| my.error(doing, e))?;
    if let (Some(holder), Some(stale)) = (holder.flatten(), stale)
        && holder == stale
    {
        tracing::warn!("{}: ending this applier's earlier control session {stale}", my.name);
        if let Err(e) = conn.query_drop(format!("KILL {stale}")).await {
            tracing::warn!("{}: ending session {stale}: {}", my.name, my.error(doing, e));
        }
    }
    // A killed session lets go of its lock as it ends: wait a little for it.
    let got: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, ?)", (&name, if stale.is_some() { 5 } else { 0 }))
        .await
        .map_err(|e| my.error(doing, e))?;
    let id: Option<u64> = conn
        .query_first("SELECT CONNECTION_ID()")
        .await
        .map_err(|e| my.error(doing, e))?;
    if got.flatten() == Some(1) {
        let applier = format!("{} pid {}", crate::repo::lock::host_name(), std::process::id());
        conn.exec_drop(
            format!(
                "UPDATE {PROGRESS_DATABASE}.replica SET applier = ?, stop_requested = 0, heartbeat_at = UTC_TIMESTAMP(6) \
                 WHERE source = ? AND target_databases = ?"
            ),
            (applier, &setup.source, &setup.targets),
        )
        .await
        .map_err(|e| my.error("recording the applier", e))?;
        return Ok(id.unwrap_or(0));
    }
    let holder: Option<String> = conn
        .exec_first(
            format!("SELECT applier FROM {PROGRESS_DATABASE}.replica WHERE source = ? AND target_databases = ?"),
            (&setup.source, &setup.targets),
        )
        .await
        .map_err(|e| my.error("reading the replica's applier", e))?
        .flatten();
    Err(SourceError::Locked {
        database: my.name.clone(),
        doing: format!("starting the applier of source {}", setup.source),
        detail: format!(
            "another applier runs for this replica ({}); stop it first with `cairn replica stop`",
            holder.unwrap_or_else(|| "unknown".into())
        ),
    })
}

/// The applier's sign of life, with when the last applied source transaction was written and,
/// when no source transaction is part way, the end of the log read (everything before it is
/// applied, including events that end no transaction); returns whether a stop was requested.
pub(super) async fn heartbeat(
    my: &My,
    conn: &mut Conn,
    setup: &Setup,
    applied_event_at: Option<u32>,
    idle_at: Option<(&str, u64)>,
) -> Result<bool, SourceError> {
    let (idle_file, idle_position) = idle_at.unzip();
    conn.exec_drop(
        format!(
            "UPDATE {PROGRESS_DATABASE}.replica SET heartbeat_at = UTC_TIMESTAMP(6), \
             applied_event_at = COALESCE(FROM_UNIXTIME(?), applied_event_at), \
             idle_file = COALESCE(?, idle_file), idle_position = COALESCE(?, idle_position) \
             WHERE source = ? AND target_databases = ?"
        ),
        (
            applied_event_at,
            idle_file,
            idle_position,
            &setup.source,
            &setup.targets,
        ),
    )
    .await
    .map_err(|e| my.error("recording the applier's heartbeat", e))?;
    let stop: Option<i64> = conn
        .exec_first(
            format!("SELECT stop_requested FROM {PROGRESS_DATABASE}.replica WHERE source = ? AND target_databases = ?"),
            (&setup.source, &setup.targets),
        )
        .await
        .map_err(|e| my.error("reading the replica's stop request", e))?;
    Ok(stop == Some(1))
}

/// Records why the applier stopped or reconnected (already free of secrets: errors never hold
/// passwords).
pub(super) async fn record_error(my: &My, conn: &mut Conn, setup: &Setup, error: &str) {
    let result = conn
        .exec_drop(
            format!(
                "UPDATE {PROGRESS_DATABASE}.replica SET last_error = ?, last_error_at = UTC_TIMESTAMP(6) \
                 WHERE source = ? AND target_databases = ?"
            ),
            (error, &setup.source, &setup.targets),
        )
        .await;
    if let Err(e) = result {
        tracing::warn!("{}: the applier's error was not recorded: {}", my.name, my.error("", e));
    }
}

/// Every replica on the target, with whether an applier holds its lease now.
pub(in crate::engine::mysql) async fn states(my: &My) -> Result<Vec<ReplicaState>, SourceError> {
    let mut conn = session(my).await?;
    if !has_table(my, &mut conn).await? {
        return Ok(Vec::new());
    }
    type Row = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<u64>,
        String,
    );
    let doing = "reading cairn's replicas";
    let rows: Vec<Row> = conn
        .query(format!(
            "SELECT source, target_databases, full_copy, applier, \
             DATE_FORMAT(heartbeat_at, '%Y-%m-%dT%H:%i:%sZ'), DATE_FORMAT(applied_event_at, '%Y-%m-%dT%H:%i:%sZ'), \
             stop_requested, last_error, DATE_FORMAT(last_error_at, '%Y-%m-%dT%H:%i:%sZ'), idle_file, idle_position, databases_map \
             FROM {PROGRESS_DATABASE}.replica ORDER BY source, target_databases"
        ))
        .await
        .map_err(|e| my.error(doing, e))?;
    let mut states = Vec::new();
    for row in rows {
        let (
            source,
            targets,
            full_copy,
            applier,
            heartbeat_at,
            applied_event_at,
            stop,
            last_error,
            last_error_at,
            idle_file,
            idle_position,
            map,
        ) = row;
        let renamed = serde_json::from_str::<BTreeMap<String, String>>(&map)
            .unwrap_or_default()
            .into_iter()
            .filter(|(from, to)| from != to)
            .collect();
        let used: Option<Option<i64>> = conn
            .exec_first("SELECT IS_USED_LOCK(?)", (lease_name(&source, &targets),))
            .await
            .map_err(|e| my.error(doing, e))?;
        let progress: Option<(String, u64, Option<String>, u64)> = conn
            .exec_first(
                format!(
                    "SELECT server_file, position, gtid, transactions FROM {PROGRESS_DATABASE}.progress \
                     WHERE source = ? AND target_databases = ?"
                ),
                (&source, &targets),
            )
            .await
            .map_err(|e| my.error(doing, e))?;
        states.push(ReplicaState {
            running: used.flatten().is_some(),
            applied: progress.as_ref().map(|(file, position, gtid, _)| LogPosition::Mysql {
                file: file.clone(),
                position: *position,
                gtid: gtid.clone().filter(|g| !g.is_empty()),
            }),
            transactions: progress.map_or(0, |p| p.3),
            caught_up_to: idle_file.zip(idle_position).map(|(file, position)| LogPosition::Mysql {
                file,
                position,
                gtid: None,
            }),
            source,
            databases: targets,
            renamed,
            full_copy,
            applier,
            applied_event_at,
            heartbeat_at,
            last_error,
            last_error_at,
            stop_requested: stop == 1,
        });
    }
    let _ = conn.disconnect().await;
    Ok(states)
}

/// Asks the applier of `source`'s replica to stop; the replica's state after the request.
pub(in crate::engine::mysql) async fn request_stop(my: &My, source: &str) -> Result<Option<ReplicaState>, SourceError> {
    let mut conn = my.connect(Some("")).await?;
    if !has_table(my, &mut conn).await? {
        return Ok(None);
    }
    conn.exec_drop(
        format!("UPDATE {PROGRESS_DATABASE}.replica SET stop_requested = 1 WHERE source = ?"),
        (source,),
    )
    .await
    .map_err(|e| my.error("asking the applier to stop", e))?;
    let _ = conn.disconnect().await;
    Ok(states(my).await?.into_iter().find(|s| s.source == source))
}
