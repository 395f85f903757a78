//! Handing a seeded PostgreSQL target over to native logical replication (what
//! `pg_createsubscriber` does): a slot on the source whose start is the position the restore
//! stops at, and a disabled subscription on the target, its origin advanced there, then enabled.

use std::time::Duration;

use super::{Pg, quote_ident};
use crate::engine::{NativeHandover, ReplicationState, SourceError, SourceUrl};
use crate::repo::status::LogPosition;

/// A libpq connection string value, quoted.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The connection string the target's subscription reaches its source with.
pub(super) fn conninfo(source: &SourceUrl) -> Result<String, SourceError> {
    let url = source.without_password();
    let host = url
        .host_str()
        .ok_or_else(|| SourceError::Unsupported(format!("source {source} has no host to subscribe to")))?;
    let mut parts = vec![
        format!("host={}", conninfo_value(host)),
        format!("port={}", url.port().unwrap_or(5432)),
        format!(
            "dbname={}",
            conninfo_value(&source.database().unwrap_or_else(|| "postgres".into()))
        ),
        format!("user={}", conninfo_value(url.username())),
    ];
    if let Some(password) = &source.password {
        parts.push(format!("password={}", conninfo_value(password.expose())));
    }
    for (key, value) in url.query_pairs() {
        if matches!(key.as_ref(), "sslmode" | "sslrootcert") {
            parts.push(format!("{key}={}", conninfo_value(&value)));
        }
    }
    Ok(parts.join(" "))
}

/// Creates the slot a replica's subscription streams from; returns where it starts: changes
/// committed after it are streamed, so the restore must stop exactly there.
pub(super) async fn create_slot(pg: &Pg, publication: &str, slot: &str) -> Result<LogPosition, SourceError> {
    let client = pg.connect("replica seed").await?;
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
            &[&publication],
        )
        .await
        .map_err(|e| pg.error("looking for the publication", e))?
        .get(0);
    if !exists {
        return Err(SourceError::Unsupported(format!(
            "{}: publication {publication} does not exist; a native handover needs the source's incrementals \
             (incrementals = true and a full copy taken since)",
            pg.name
        )));
    }
    let lsn: String = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .map_err(|e| pg.error(&format!("creating replication slot {slot} for the replica"), e))?
        .get(0);
    Ok(LogPosition::Postgres {
        lsn,
        timeline: None,
        slot: Some(slot.to_string()),
    })
}

/// Drops a replica's slot after a seed that failed before its subscription used it.
pub(super) async fn drop_slot(pg: &Pg, slot: &str) -> Result<(), SourceError> {
    let client = pg.connect("replica seed").await?;
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| pg.error(&format!("dropping replication slot {slot}"), e))?;
    Ok(())
}

/// Creates the subscription on the target, starting at `handover.position`, and waits until
/// its worker runs.
pub(super) async fn hand_over(target: &Pg, handover: &NativeHandover<'_>) -> Result<ReplicationState, SourceError> {
    let (Some(slot), Some(publication)) = (handover.slot.as_deref(), handover.publication.as_deref()) else {
        return Err(SourceError::Unsupported(
            "a PostgreSQL handover needs its slot and publication".into(),
        ));
    };
    let LogPosition::Postgres { lsn, .. } = handover.position else {
        return Err(SourceError::Unsupported(format!(
            "{} is not a WAL position",
            handover.position
        )));
    };
    let client = target.connect("replica seed").await?;
    let name = slot;
    // The statement holds the source's password: errors name the step, never the text.
    client
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (create_slot = false, slot_name = {}, \
             copy_data = false, enabled = false)",
            quote_ident(name),
            super::quote_literal(&conninfo(handover.source)?),
            quote_ident(publication),
            super::quote_literal(slot)
        ))
        .await
        .map_err(|e| target.error(&format!("creating subscription {name}"), e))?;
    // Subscription names are unique per database; pg_subscription lists the server's. From
    // here on the subscription is known by its oid.
    let subscription: tokio_postgres::types::Oid = client
        .query_one(
            "SELECT oid FROM pg_subscription WHERE subname = $1 \
             AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&name],
        )
        .await
        .map_err(|e| target.error("finding the subscription's origin", e))?
        .try_get(0)
        .map_err(|e| target.error("finding the subscription's origin", e))?;
    let origin = format!("pg_{subscription}");
    client
        .execute(
            "SELECT pg_replication_origin_advance($1, $2::text::pg_lsn)",
            &[&origin, &lsn.as_str()],
        )
        .await
        .map_err(|e| target.error("advancing the subscription's origin to the restored position", e))?;
    client
        .batch_execute(&format!("ALTER SUBSCRIPTION {} ENABLE", quote_ident(name)))
        .await
        .map_err(|e| target.error(&format!("enabling subscription {name}"), e))?;
    let mut state = ReplicationState::default();
    for _ in 0..60 {
        let running: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_subscription WHERE subid = $1 AND pid IS NOT NULL)",
                &[&subscription],
            )
            .await
            .map_err(|e| target.error("reading the subscription's state", e))?
            .get(0);
        if running {
            state.io_running = true;
            state.sql_running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !state.io_running {
        state.error = Some(format!(
            "subscription {name} has no running worker after 30s; see the target's server log"
        ));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_string_quotes_every_value() {
        let mut source = SourceUrl::parse("postgres://backup@db1:5433/app?sslmode=verify-full").unwrap();
        source.password = Some(crate::secret::Secret::new("it's \\ here"));
        assert_eq!(
            conninfo(&source).unwrap(),
            "host='db1' port=5433 dbname='app' user='backup' password='it\\'s \\\\ here' sslmode='verify-full'"
        );
    }
}
