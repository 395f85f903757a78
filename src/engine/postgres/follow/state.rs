//! The replica's row in the target database (`cairn_replay.replica`): what a seed recorded for
//! the applier (slot, publication, replication origin, filters, source server), the applier's
//! lease (an advisory lock held by its control session), its heartbeat, a stop request and the
//! last error — what `replica status` and `replica stop` read and write.

use tokio_postgres::Client;

use super::super::replica_row::THIS_DATABASE;
use super::super::{Pg, quote_literal};
use crate::engine::SourceError;
use crate::engine::filter::Filters;
use crate::engine::follow::{FollowSetup, ReplicaState};
use crate::engine::postgres::pgoutput::lsn_text;
use crate::repo::model::LogPosition;

/// The first key of every replica lease (`cair`): the second is the source's.
const LEASE_CLASS: i32 = 0x6361_6972;

/// What the applier follows, as the seed recorded it.
#[derive(Debug, Clone)]
pub(super) struct Setup {
    pub source: String,
    pub slot: String,
    pub publication: String,
    /// The replication origin that records, in each applied transaction, the source position.
    pub origin: String,
    pub filters: Filters,
    pub full_copy: String,
    pub server_identity: String,
}

/// The replication origin of `source`'s replica in `database` (origins are the server's).
fn origin_name(source: &str, database: &str) -> String {
    let digest = crate::storage::md5_hex(format!("{source}\n{database}").as_bytes());
    format!("cairn_replica_{}", &digest[..16])
}

use super::super::replica_row::lease_key;

const TABLE: &str = "CREATE SCHEMA IF NOT EXISTS cairn_replay; \
     CREATE TABLE IF NOT EXISTS cairn_replay.replica (source text PRIMARY KEY, slot text NOT NULL, \
     publication text NOT NULL, origin text NOT NULL, filters text NOT NULL, full_copy text NOT NULL, \
     server_identity text NOT NULL, seeded_at timestamptz NOT NULL DEFAULT now(), applier text, \
     heartbeat_at timestamptz, applied_event_at timestamptz, stop_requested boolean NOT NULL DEFAULT false, \
     transactions bigint NOT NULL DEFAULT 0, last_error text, last_error_at timestamptz, idle_lsn pg_lsn)";

/// Records what the applier needs on the target, and the position it continues from in a
/// replication origin.
pub(in crate::engine::postgres) async fn record_setup(pg: &Pg, setup: &FollowSetup<'_>) -> Result<(), SourceError> {
    let (Some(slot), Some(publication)) = (setup.slot, setup.publication) else {
        return Err(SourceError::Unsupported(
            "cairn's applier for PostgreSQL needs the replica's slot and publication".into(),
        ));
    };
    let LogPosition::Postgres { lsn, .. } = setup.position else {
        return Err(SourceError::Unsupported(format!(
            "{}: {} is not a WAL position",
            pg.name, setup.position
        )));
    };
    let client = pg.connect("replica seed").await?;
    let doing = "recording the replica for cairn's applier";
    client.batch_execute(TABLE).await.map_err(|e| pg.error(doing, e))?;
    let origin = origin_name(setup.source, &pg.database());
    let filters = serde_json::to_string(setup.filters).unwrap_or_default();
    client
        .execute("DELETE FROM cairn_replay.replica WHERE source = $1", &[&setup.source])
        .await
        .map_err(|e| pg.error(doing, e))?;
    client
        .execute(
            "INSERT INTO cairn_replay.replica (source, slot, publication, origin, filters, full_copy, server_identity) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &setup.source,
                &slot,
                &publication,
                &origin,
                &filters,
                &setup.full_copy,
                &setup.server_identity,
            ],
        )
        .await
        .map_err(|e| pg.error(doing, e))?;
    client
        .batch_execute(&format!(
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = {origin}; \
             SELECT pg_replication_origin_create({origin}); \
             SELECT pg_replication_origin_advance({origin}, {lsn}::pg_lsn)",
            origin = quote_literal(&origin),
            lsn = quote_literal(lsn)
        ))
        .await
        .map_err(|e| pg.error("recording the replica's position in its replication origin", e))?;
    Ok(())
}

async fn has_table(pg: &Pg, client: &Client) -> Result<bool, SourceError> {
    Ok(client
        .query_one("SELECT to_regclass('cairn_replay.replica') IS NOT NULL", &[])
        .await
        .map_err(|e| pg.error("looking for cairn's replicas", e))?
        .get(0))
}

/// The setup the seed recorded for `source`.
///
/// # Errors
/// [`SourceError::Unsupported`] naming the seed to run when there is none.
pub(super) async fn load(pg: &Pg, client: &Client, source: &str) -> Result<Setup, SourceError> {
    let not_seeded = || {
        SourceError::Unsupported(format!(
            "{} holds no replica of source {source} for cairn's applier: seed it first with `cairn replica seed \
             --source {source} --handover cairn …`",
            pg.name
        ))
    };
    if !has_table(pg, client).await? {
        return Err(not_seeded());
    }
    let row = client
        .query_opt(
            "SELECT slot, publication, origin, filters, full_copy, server_identity FROM cairn_replay.replica \
             WHERE source = $1",
            &[&source],
        )
        .await
        .map_err(|e| pg.error("reading the replica's setup", e))?
        .ok_or_else(not_seeded)?;
    let filters: String = row.get(3);
    Ok(Setup {
        source: source.to_string(),
        slot: row.get(0),
        publication: row.get(1),
        origin: row.get(2),
        filters: serde_json::from_str(&filters).map_err(|e| {
            SourceError::Damaged(format!(
                "{}: cairn_replay.replica: the filters of source {source} do not parse ({e}); seed the replica again",
                pg.name
            ))
        })?,
        full_copy: row.get(4),
        server_identity: row.get(5),
    })
}

/// Takes the replica's lease on `client`, the applier's control session, and returns the
/// session's backend pid. `stale`: this applier's earlier control session, ended when it still
/// holds the lease (a connection lost without the server noticing).
///
/// # Errors
/// [`SourceError::Locked`] naming the applier that holds it.
pub(super) async fn acquire(pg: &Pg, client: &Client, setup: &Setup, stale: Option<i32>) -> Result<i32, SourceError> {
    let doing = "taking the replica's lease";
    let key = lease_key(&setup.source);
    if let Some(stale) = stale {
        let holder: Option<i32> = client
            .query_opt(
                &format!(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::int::oid AND \
                     objid = $2::int::oid AND objsubid = 2 AND granted AND {THIS_DATABASE}"
                ),
                &[&LEASE_CLASS, &key],
            )
            .await
            .map_err(|e| pg.error(doing, e))?
            .and_then(|row| row.get::<_, Option<i32>>(0));
        if holder == Some(stale) {
            tracing::warn!(
                "{}: ending this applier's earlier control session (pid {stale})",
                pg.name
            );
            client
                .execute("SELECT pg_terminate_backend($1, 5000)", &[&stale])
                .await
                .map_err(|e| pg.error(doing, e))?;
        }
    }
    super::super::replica_row::take_lease(pg, client, "cairn_replay.replica", LEASE_CLASS, &setup.source).await?;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(|e| pg.error(doing, e))?
        .get(0);
    Ok(pid)
}

/// The applier's sign of life, with when the last applied source transaction committed, how
/// many were applied since the last one, and the source's WAL position up to which the slot was
/// last found to hold nothing the target lacks (`idle`); returns whether a stop was requested.
pub(super) async fn heartbeat(
    pg: &Pg,
    client: &Client,
    setup: &Setup,
    applied_event_at: Option<chrono::DateTime<chrono::Utc>>,
    transactions: i64,
    idle: Option<u64>,
) -> Result<bool, SourceError> {
    let idle = idle.map(crate::engine::postgres::pgoutput::lsn_text);
    let row = client
        .query_one(
            "UPDATE cairn_replay.replica SET heartbeat_at = now(), \
             applied_event_at = coalesce($1::text::timestamptz, applied_event_at), \
             transactions = transactions + $2, idle_lsn = coalesce($4::text::pg_lsn, idle_lsn) \
             WHERE source = $3 RETURNING stop_requested",
            &[
                &applied_event_at.map(|t| t.to_rfc3339()),
                &transactions,
                &setup.source,
                &idle,
            ],
        )
        .await
        .map_err(|e| pg.error("recording the applier's heartbeat", e))?;
    Ok(row.get(0))
}

/// Records why the applier stopped or reconnected.
pub(super) async fn record_error(pg: &Pg, client: &Client, setup: &Setup, error: &str) {
    super::super::replica_row::record_error(pg, client, "cairn_replay.replica", &setup.source, error).await;
}

use super::super::replica_row::utc;

/// Every replica in the target database, with whether an applier holds its lease now.
pub(in crate::engine::postgres) async fn states(pg: &Pg) -> Result<Vec<ReplicaState>, SourceError> {
    let client = pg.connect("replica status").await?;
    if !has_table(pg, &client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT source, slot, full_copy, applier, {}, {}, stop_requested, transactions, last_error, {}, \
                 pg_replication_origin_progress(origin, true)::text, idle_lsn::text FROM cairn_replay.replica \
                 ORDER BY source",
                utc("heartbeat_at"),
                utc("applied_event_at"),
                utc("last_error_at")
            ),
            &[],
        )
        .await
        .map_err(|e| pg.error("reading cairn's replicas", e))?;
    let mut states = Vec::new();
    for row in rows {
        let source: String = row.get(0);
        let running: bool = client
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::int::oid AND \
                     objid = $2::int::oid AND objsubid = 2 AND granted AND {THIS_DATABASE})"
                ),
                &[&LEASE_CLASS, &lease_key(&source)],
            )
            .await
            .map_err(|e| pg.error("reading the replica's lease", e))?
            .get(0);
        let slot: String = row.get(1);
        let applied: Option<String> = row.get(10);
        let idle: Option<String> = row.get(11);
        let transactions: i64 = row.get(7);
        states.push(ReplicaState {
            running,
            databases: pg.database(),
            renamed: Default::default(),
            full_copy: row.get(2),
            applier: row.get(3),
            heartbeat_at: row.get(4),
            applied_event_at: row.get(5),
            stop_requested: row.get(6),
            transactions: u64::try_from(transactions).unwrap_or(0),
            last_error: row.get(8),
            last_error_at: row.get(9),
            applied: applied.map(|lsn| LogPosition::Postgres {
                lsn,
                timeline: None,
                slot: Some(slot.clone()),
            }),
            caught_up_to: idle.map(|lsn| LogPosition::Postgres {
                lsn,
                timeline: None,
                slot: Some(slot),
            }),
            source,
        });
    }
    Ok(states)
}

/// Asks the applier of `source`'s replica to stop; the replica's state after the request.
pub(in crate::engine::postgres) async fn request_stop(
    pg: &Pg,
    source: &str,
) -> Result<Option<ReplicaState>, SourceError> {
    let client = pg.connect("replica stop").await?;
    if !has_table(pg, &client).await? {
        return Ok(None);
    }
    client
        .execute(
            "UPDATE cairn_replay.replica SET stop_requested = true WHERE source = $1",
            &[&source],
        )
        .await
        .map_err(|e| pg.error("asking the applier to stop", e))?;
    Ok(states(pg).await?.into_iter().find(|s| s.source == source))
}

/// The position the target holds: the origin's progress.
pub(super) async fn position(pg: &Pg, client: &Client, setup: &Setup) -> Result<u64, SourceError> {
    let text: Option<String> = client
        .query_opt(
            "SELECT pg_replication_origin_progress(roname, true)::text FROM pg_replication_origin WHERE roname = $1",
            &[&setup.origin],
        )
        .await
        .map_err(|e| pg.error("reading the replica's position", e))?
        .and_then(|row| row.get(0));
    let Some(text) = text else {
        return Err(SourceError::Unsupported(format!(
            "{}: the replica's replication origin {} holds no position; seed the replica again",
            pg.name, setup.origin
        )));
    };
    crate::engine::postgres::pgoutput::parse_lsn(&text)
        .map_err(|e| SourceError::Damaged(format!("replication origin {}: {e}", setup.origin)))
}

/// The position as the report shows it.
pub(super) fn at(lsn: u64, setup: &Setup) -> LogPosition {
    LogPosition::Postgres {
        lsn: lsn_text(lsn),
        timeline: None,
        slot: Some(setup.slot.clone()),
    }
}
