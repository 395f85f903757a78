//! The leader's part of a PostgreSQL full copy: the tables locked against DDL (naming who holds
//! a lock it cannot get) and the snapshot every connection imports.

use tokio_postgres::Client;

use super::{Pg, inventory};
use crate::engine::SourceError;

/// What the leader learned at the snapshot.
pub(super) struct SnapshotPoint {
    pub exported: String,
    pub visibility: String,
    pub lsn: String,
    pub system_identifier: Option<String>,
    pub timeline: Option<u32>,
    pub version: String,
    pub version_num: i32,
    /// The WAL insert position at the snapshot: every commit at or after it is not in it.
    pub insert_lsn: String,
}

pub(super) async fn take_snapshot(pg: &Pg, leader: &Client) -> Result<SnapshotPoint, SourceError> {
    // pg_control_* need privileges a backup user may lack; ask first, since an error would abort
    // the snapshot's transaction.
    let row = leader
        .query_one(
            "SELECT pg_export_snapshot(), pg_current_snapshot()::text,
                    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text,
                    CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE')
                         THEN (SELECT system_identifier::text FROM pg_control_system()) END,
                    CASE WHEN has_function_privilege('pg_control_checkpoint()', 'EXECUTE')
                         THEN (SELECT timeline_id FROM pg_control_checkpoint()) END,
                    current_setting('server_version'), current_setting('server_version_num')::int,
                    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)::text",
            &[],
        )
        .await
        .map_err(|e| pg.error("exporting the snapshot", e))?;
    Ok(SnapshotPoint {
        exported: row.get(0),
        visibility: row.get(1),
        lsn: row.get(2),
        system_identifier: row.get(3),
        timeline: row.get::<_, Option<i32>>(4).map(|t| t as u32),
        version: row.get(5),
        version_num: row.get(6),
        insert_lsn: row.get(7),
    })
}

/// `LOCK TABLE … IN ACCESS SHARE MODE` for `tables`, in statements of bounded length. When a
/// lock cannot be had in time, the error names the tables other sessions hold and what those
/// sessions are doing.
pub(super) async fn lock_tables(pg: &Pg, leader: &Client, tables: &[inventory::Table]) -> Result<(), SourceError> {
    for group in tables.chunks(500) {
        let names: Vec<String> = group.iter().map(inventory::Table::qualified).collect();
        let Err(e) = leader
            .batch_execute(&format!("LOCK TABLE {} IN ACCESS SHARE MODE", names.join(", ")))
            .await
        else {
            continue;
        };
        let error = pg.error("locking the tables to copy", e);
        let SourceError::Locked { database, detail, .. } = error else {
            return Err(error);
        };
        let oids: Vec<u32> = group.iter().map(|t| t.oid).collect();
        let holders = blockers(pg, &oids).await.unwrap_or_else(|| "another session".into());
        return Err(SourceError::Locked {
            database,
            doing: format!("locking the tables to copy ({holders})"),
            detail,
        });
    }
    Ok(())
}

/// Who holds exclusive locks on these tables, read from a separate session.
async fn blockers(pg: &Pg, oids: &[u32]) -> Option<String> {
    let client = pg.connect("backup diagnostics").await.ok()?;
    let oids: Vec<i64> = oids.iter().map(|o| i64::from(*o)).collect();
    let rows = client
        .query(
            // A prepared transaction holds its locks without a session: no pid.
            "SELECT format('%I.%I', n.nspname, c.relname),
                    coalesce('pid ' || l.pid, 'a prepared transaction (pg_prepared_xacts)'),
                    coalesce(left(a.query, 120), '')
             FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.granted AND l.mode = 'AccessExclusiveLock' AND l.relation::int8 = ANY($1)",
            &[&oids],
        )
        .await
        .ok()?;
    let found: Vec<String> = rows
        .iter()
        .map(|r| {
            let (table, holder, query): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            match query.is_empty() {
                true => format!("table {table} is locked by {holder}"),
                false => format!("table {table} is locked by {holder} ({query})"),
            }
        })
        .collect();
    (!found.is_empty()).then(|| found.join("; "))
}
