//! A PostgreSQL replica of a MySQL/MariaDB source, as the target records it
//! (`cairn_replay.mysql_replica`): what a seed recorded for the applier (the database → schema
//! map, the copy's filters, the source server), the applier's lease (an advisory lock held by its
//! control session), its heartbeat, a stop request and the last error. The position is the
//! replay's (`cairn_replay.mysql_progress`), written with each applied transaction.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::catalog::target_key;
use super::replay::PROGRESS_TABLE;
use crate::engine::SourceError;
use crate::engine::filter::Filters;
use crate::engine::follow::{FollowSetup, ReplicaState};
use crate::engine::postgres::Pg;
use crate::engine::postgres::replica_row::{self, THIS_DATABASE, utc};
use crate::repo::model::LogPosition;

/// The first key of every MySQL replica's lease (`cmyr`): the second is the source's.
const LEASE_CLASS: i32 = 0x636d_7972;

const TABLE: &str = "CREATE SCHEMA IF NOT EXISTS cairn_replay; \
     CREATE TABLE IF NOT EXISTS cairn_replay.mysql_replica (source text PRIMARY KEY, databases text NOT NULL, \
     filters text NOT NULL, full_copy text NOT NULL, server_identity text NOT NULL, \
     seeded_at timestamptz NOT NULL DEFAULT now(), applier text, heartbeat_at timestamptz, \
     applied_event_at timestamptz, stop_requested boolean NOT NULL DEFAULT false, \
     transactions bigint NOT NULL DEFAULT 0, last_error text, last_error_at timestamptz, idle_file text, \
     idle_position bigint)";

/// What the applier follows, as the seed recorded it.
#[derive(Debug, Clone)]
pub struct Setup {
    pub source: String,
    /// MySQL database → PostgreSQL schema.
    pub databases: BTreeMap<String, String>,
    /// The key of the replica's rows in `mysql_progress` and `mysql_tables`.
    pub targets: String,
    pub filters: Filters,
    pub full_copy: String,
    pub server_identity: String,
}

/// Records what the applier needs; the restore recorded the position and the tables.
///
/// # Errors
/// The target's error.
pub async fn record_setup(pg: &Pg, setup: &FollowSetup<'_>) -> Result<(), SourceError> {
    let client = pg.connect("replica seed").await?;
    let doing = "recording the replica for cairn's applier";
    client.batch_execute(TABLE).await.map_err(|e| pg.error(doing, e))?;
    let databases = serde_json::to_string(setup.databases).unwrap_or_default();
    let filters = serde_json::to_string(setup.filters).unwrap_or_default();
    client
        .execute(
            "DELETE FROM cairn_replay.mysql_replica WHERE source = $1",
            &[&setup.source],
        )
        .await
        .map_err(|e| pg.error(doing, e))?;
    client
        .execute(
            "INSERT INTO cairn_replay.mysql_replica (source, databases, filters, full_copy, server_identity) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &setup.source,
                &databases,
                &filters,
                &setup.full_copy,
                &setup.server_identity,
            ],
        )
        .await
        .map_err(|e| pg.error(doing, e))?;
    Ok(())
}

async fn has_table(pg: &Pg, client: &Client) -> Result<bool, SourceError> {
    Ok(client
        .query_one("SELECT to_regclass('cairn_replay.mysql_replica') IS NOT NULL", &[])
        .await
        .map_err(|e| pg.error("looking for cairn's replicas", e))?
        .get(0))
}

/// The setup the seed recorded for `source`.
///
/// # Errors
/// [`SourceError::Unsupported`] naming the seed to run when there is none.
pub async fn load(pg: &Pg, client: &Client, source: &str) -> Result<Setup, SourceError> {
    let not_seeded = || {
        SourceError::Unsupported(format!(
            "{} holds no replica of MySQL source {source} for cairn's applier: seed it first with `cairn replica seed \
             --source {source} --handover cairn --target …`",
            pg.name
        ))
    };
    if !has_table(pg, client).await? {
        return Err(not_seeded());
    }
    let row = client
        .query_opt(
            "SELECT databases, filters, full_copy, server_identity FROM cairn_replay.mysql_replica WHERE source = $1",
            &[&source],
        )
        .await
        .map_err(|e| pg.error("reading the replica's setup", e))?
        .ok_or_else(not_seeded)?;
    let damaged = |what: &str, e: serde_json::Error| {
        SourceError::Damaged(format!(
            "{}: cairn_replay.mysql_replica: the {what} of source {source} do not parse ({e}); seed the replica again",
            pg.name
        ))
    };
    let (databases, filters): (String, String) = (row.get(0), row.get(1));
    let databases: BTreeMap<String, String> = serde_json::from_str(&databases).map_err(|e| damaged("databases", e))?;
    Ok(Setup {
        source: source.to_string(),
        targets: target_key(&databases),
        databases,
        filters: serde_json::from_str(&filters).map_err(|e| damaged("filters", e))?,
        full_copy: row.get(2),
        server_identity: row.get(3),
    })
}

/// Takes the replica's lease on `client`, the applier's control session.
///
/// # Errors
/// [`SourceError::Locked`] naming the applier that holds it.
pub async fn acquire(pg: &Pg, client: &Client, setup: &Setup) -> Result<(), SourceError> {
    replica_row::take_lease(pg, client, "cairn_replay.mysql_replica", LEASE_CLASS, &setup.source).await
}

/// The applier's sign of life, with when the last applied source transaction was written
/// (seconds since the epoch), how many were applied since the last one, and the end of the log
/// read when everything read is committed (`idle`: no transaction in flight, so events that end
/// none, like a rotation, do not show as lag); returns whether a stop was requested.
///
/// # Errors
/// The target's error.
pub async fn heartbeat(
    pg: &Pg,
    client: &Client,
    setup: &Setup,
    applied_event_at: Option<u32>,
    transactions: i64,
    idle: Option<(&str, u64)>,
) -> Result<bool, SourceError> {
    let (idle_file, idle_position) = (
        idle.map(|(f, _)| f),
        idle.map(|(_, p)| i64::try_from(p).unwrap_or(i64::MAX)),
    );
    let row = client
        .query_one(
            "UPDATE cairn_replay.mysql_replica SET heartbeat_at = now(), \
             applied_event_at = coalesce(to_timestamp($1::text::float8), applied_event_at), \
             transactions = transactions + $2, idle_file = coalesce($4, idle_file), \
             idle_position = coalesce($5, idle_position) WHERE source = $3 RETURNING stop_requested",
            &[
                &applied_event_at.map(|t| t.to_string()),
                &transactions,
                &setup.source,
                &idle_file,
                &idle_position,
            ],
        )
        .await
        .map_err(|e| pg.error("recording the applier's heartbeat", e))?;
    Ok(row.get(0))
}

/// Records why the applier stopped or reconnected.
pub async fn record_error(pg: &Pg, client: &Client, setup: &Setup, error: &str) {
    replica_row::record_error(pg, client, "cairn_replay.mysql_replica", &setup.source, error).await;
}

/// The position the target holds.
///
/// # Errors
/// No recorded position (seed again), or the target's error.
pub async fn position(pg: &Pg, client: &Client, setup: &Setup) -> Result<LogPosition, SourceError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT log_file, log_position, gtid FROM {PROGRESS_TABLE} WHERE source = $1 AND target_schemas = $2"
            ),
            &[&setup.source, &setup.targets],
        )
        .await
        .map_err(|e| pg.error("reading the replica's position", e))?
        .ok_or_else(|| {
            SourceError::Unsupported(format!(
                "{}: {PROGRESS_TABLE} holds no position for source {}; seed the replica again",
                pg.name, setup.source
            ))
        })?;
    let gtid: Option<String> = row.get(2);
    Ok(LogPosition::Mysql {
        file: row.get(0),
        position: u64::try_from(row.get::<_, i64>(1)).unwrap_or_default(),
        gtid: gtid.filter(|g| !g.is_empty()),
    })
}

/// Every MySQL replica in the target database, with whether an applier holds its lease now.
///
/// # Errors
/// The target's error.
pub async fn states(pg: &Pg) -> Result<Vec<ReplicaState>, SourceError> {
    let client = pg.connect("replica status").await?;
    if !has_table(pg, &client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT r.source, r.databases, r.full_copy, r.applier, {}, {}, r.stop_requested, r.transactions, \
                 r.last_error, {}, r.idle_file, r.idle_position, \
                 EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = $1::int::oid AND \
                   l.objid = (('x' || substr(md5(r.source), 1, 7))::bit(28)::int)::oid AND l.objsubid = 2 AND \
                   l.granted AND l.{THIS_DATABASE}) \
                 FROM cairn_replay.mysql_replica r ORDER BY r.source",
                utc("r.heartbeat_at"),
                utc("r.applied_event_at"),
                utc("r.last_error_at")
            ),
            &[&LEASE_CLASS],
        )
        .await
        .map_err(|e| pg.error("reading cairn's replicas", e))?;
    let mut states = Vec::new();
    for row in rows {
        let source: String = row.get(0);
        let databases: String = row.get(1);
        let renamed: BTreeMap<String, String> = serde_json::from_str(&databases).unwrap_or_default();
        let setup = Setup {
            source: source.clone(),
            targets: target_key(&renamed),
            databases: renamed.clone(),
            filters: Filters::default(),
            full_copy: row.get(2),
            server_identity: String::new(),
        };
        let transactions: i64 = row.get(7);
        let (idle_file, idle_position): (Option<String>, Option<i64>) = (row.get(10), row.get(11));
        states.push(ReplicaState {
            running: row.get(12),
            caught_up_to: idle_file.zip(idle_position).map(|(file, position)| LogPosition::Mysql {
                file,
                position: u64::try_from(position).unwrap_or(0),
                gtid: None,
            }),
            databases: format!("{} (schemas {})", pg.database(), setup.targets),
            applied: position(pg, &client, &setup).await.ok(),
            renamed,
            full_copy: setup.full_copy,
            applier: row.get(3),
            heartbeat_at: row.get(4),
            applied_event_at: row.get(5),
            stop_requested: row.get(6),
            transactions: u64::try_from(transactions).unwrap_or(0),
            last_error: row.get(8),
            last_error_at: row.get(9),
            source,
        });
    }
    Ok(states)
}

/// Asks the applier of `source`'s replica to stop; the replica's state after the request.
///
/// # Errors
/// The target's error.
pub async fn request_stop(pg: &Pg, source: &str) -> Result<Option<ReplicaState>, SourceError> {
    let client = pg.connect("replica stop").await?;
    if !has_table(pg, &client).await? {
        return Ok(None);
    }
    client
        .execute(
            "UPDATE cairn_replay.mysql_replica SET stop_requested = true WHERE source = $1",
            &[&source],
        )
        .await
        .map_err(|e| pg.error("asking the applier to stop", e))?;
    Ok(states(pg).await?.into_iter().find(|s| s.source == source))
}
