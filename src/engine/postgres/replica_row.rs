//! What cairn's appliers into PostgreSQL keep in a replica's row of a `cairn_replay` table
//! (`replica` for PostgreSQL sources, `mysql_replica` for MySQL ones): the lease — an advisory
//! lock (class, key) held by the applier's control session, with the applier's host and pid in
//! the row — the last error, and timestamps as `replica status` shows them.

use tokio_postgres::Client;

use super::Pg;
use crate::engine::SourceError;

/// The condition on `pg_locks` that keeps to this database: an advisory lock belongs to one
/// database, so the same lease taken in another database of the server (a replica of another
/// source of the same name) is not this replica's applier.
pub const THIS_DATABASE: &str = "database = (SELECT oid FROM pg_database WHERE datname = current_database())";

/// The second key of `source`'s lease.
pub fn lease_key(source: &str) -> i32 {
    let digest = crate::storage::md5_hex(source.as_bytes());
    i32::from_str_radix(&digest[..7], 16).unwrap_or(0)
}

/// Takes the lease (`class`, `source`) on `client` and records this applier in `table`'s row of
/// `source`, clearing an old stop request.
///
/// # Errors
/// [`SourceError::Locked`] naming the applier that holds it; the target's error.
pub async fn take_lease(pg: &Pg, client: &Client, table: &str, class: i32, source: &str) -> Result<(), SourceError> {
    let doing = "taking the replica's lease";
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&class, &lease_key(source)])
        .await
        .map_err(|e| pg.error(doing, e))?
        .get(0);
    if got {
        let applier = format!("{} pid {}", crate::repo::lock::host_name(), std::process::id());
        client
            .execute(
                &format!(
                    "UPDATE {table} SET applier = $1, stop_requested = false, heartbeat_at = now() WHERE source = $2"
                ),
                &[&applier, &source],
            )
            .await
            .map_err(|e| pg.error("recording the applier", e))?;
        return Ok(());
    }
    let holder: Option<String> = client
        .query_opt(&format!("SELECT applier FROM {table} WHERE source = $1"), &[&source])
        .await
        .map_err(|e| pg.error("reading the replica's applier", e))?
        .and_then(|row| row.get(0));
    Err(SourceError::Locked {
        database: pg.name.clone(),
        doing: format!("starting the applier of source {source}"),
        detail: format!(
            "another applier runs for this replica ({}); stop it first with `cairn replica stop`",
            holder.unwrap_or_else(|| "unknown".into())
        ),
    })
}

/// Records in `table`'s row of `source` why the applier stopped or reconnected; a failure to
/// is a warning (the error itself is what the run reports).
pub async fn record_error(pg: &Pg, client: &Client, table: &str, source: &str, error: &str) {
    let result = client
        .execute(
            &format!("UPDATE {table} SET last_error = $1, last_error_at = now() WHERE source = $2"),
            &[&error, &source],
        )
        .await;
    if let Err(e) = result {
        tracing::warn!("{}: the applier's error was not recorded: {}", pg.name, pg.error("", e));
    }
}

/// A timestamp column as RFC 3339 text in UTC.
pub fn utc(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
}
