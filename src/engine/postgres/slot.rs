//! The source's logical replication slot and publication (docs/postgres.md, "Incremental
//! copies"): the checks before they are created, created before a full copy's snapshot, checked
//! before each incremental, reported with the WAL they pin, and dropped.

use tokio_postgres::Client;

use super::{Pg, quote_ident};
use crate::engine::{LogHold, SourceError};
use crate::repo::status::{CopyRecord, LogPosition};

/// The slot and publication of a source: `cairn_`, the source name and a hash of the database
/// (slots are shared by the whole server, so two databases must not share one).
pub fn slot_name(source: &str, database: &str) -> String {
    let safe: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("cairn_{safe}_{}", &crate::storage::md5_hex(database.as_bytes())[..8])
}

/// What incrementals need of the source, checked before anything is created: logical WAL,
/// and every table able to say which row an update or delete changed (a publication for all
/// tables makes the server refuse those on a table that cannot).
///
/// # Errors
/// [`SourceError::Unsupported`] naming the setting or the tables and the fix.
pub async fn check_source(pg: &Pg, client: &Client) -> Result<(), SourceError> {
    let wal_level: String = client
        .query_one("SELECT current_setting('wal_level')", &[])
        .await
        .map_err(|e| pg.error("reading wal_level", e))?
        .get(0);
    if wal_level != "logical" {
        return Err(SourceError::Unsupported(format!(
            "{}: incrementals need wal_level = logical (it is {wal_level}); set it and restart the server, or turn \
             incrementals off for this source",
            pg.name
        )));
    }
    let without_identity: Vec<String> = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
                AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS
                      (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
              ORDER BY 1 LIMIT 20",
            &[],
        )
        .await
        .map_err(|e| pg.error("looking for tables without a replica identity", e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !without_identity.is_empty() {
        return Err(SourceError::Unsupported(format!(
            "{}: incrementals need every table to identify its rows, and {} cannot (no primary key): give each a \
             primary key or run ALTER TABLE … REPLICA IDENTITY FULL, or turn incrementals off for this source",
            pg.name,
            without_identity.join(", ")
        )));
    }
    Ok(())
}

/// Creates the source's publication (when missing) and a new slot, replacing an earlier one: a
/// full copy starts a new chain. Must run before the copy's snapshot is taken.
///
/// # Errors
/// The server's error (creating a publication for all tables needs a superuser, or create it
/// beforehand; a slot needs REPLICATION).
pub async fn create_slot(pg: &Pg, client: &Client, slot: &str) -> Result<String, SourceError> {
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
            &[&slot],
        )
        .await
        .map_err(|e| pg.error("looking for the publication", e))?
        .get(0);
    if !exists {
        client
            .batch_execute(&format!("CREATE PUBLICATION {} FOR ALL TABLES", quote_ident(slot)))
            .await
            .map_err(|e| pg.error(&format!("creating publication {slot} (FOR ALL TABLES)"), e))?;
    }
    // A killed incremental's server session may still hold the slot.
    free(pg, client, slot).await?;
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| pg.error(&format!("dropping the earlier slot {slot}"), e))?;
    let lsn: String = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .map_err(|e| pg.error(&format!("creating replication slot {slot}"), e))?
        .get(0);
    Ok(lsn)
}

/// Checks that the slot `parent` recorded still holds every change since the parent ended;
/// returns the slot's name and the parent's end.
///
/// # Errors
/// [`SourceError::LogGap`] when the slot is gone, lost its WAL or moved past the parent.
pub async fn check_slot(
    pg: &Pg,
    client: &Client,
    source_name: &str,
    parent: &CopyRecord,
) -> Result<(String, String), SourceError> {
    let LogPosition::Postgres {
        lsn: parent_lsn,
        slot: Some(slot),
        ..
    } = &parent.log_range.end
    else {
        return Err(SourceError::Unsupported(format!(
            "copy {} recorded no replication slot (it was taken without incrementals); take a full copy",
            parent.id
        )));
    };
    let gap = |detail: String| SourceError::LogGap {
        source_name: source_name.to_string(),
        parent: parent.id.clone(),
        needed: format!("slot {slot} at {parent_lsn}"),
        detail,
    };
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, coalesce(wal_status, ''), confirmed_flush_lsn > $2::text::pg_lsn
               FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
            &[&slot, &parent_lsn],
        )
        .await
        .map_err(|e| pg.error("reading the replication slot", e))?;
    let Some(row) = row else {
        return Err(gap(format!("replication slot {slot} does not exist (was it dropped?)")));
    };
    let (confirmed, wal_status, past): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
    if wal_status == "lost" {
        return Err(gap(format!(
            "replication slot {slot} lost the WAL it needed (max_slot_wal_keep_size)"
        )));
    }
    if past {
        return Err(gap(format!(
            "replication slot {slot} was moved to {confirmed}, past where the copy ended"
        )));
    }
    Ok((slot.clone(), parent_lsn.clone()))
}

/// Frees `slot` from the server session of an incremental that was killed: the server notices a
/// closed connection only when it next writes to it, so that session may still be reading the
/// slot, and the slot serves one reader at a time. Such a session is ended (the destination's
/// lock means no live run of this source reads it). A slot read by anything else is reported.
///
/// # Errors
/// [`SourceError::Locked`] (retry later) naming the reader, or the server's error.
pub async fn free(pg: &Pg, client: &Client, slot: &str) -> Result<(), SourceError> {
    for _ in 0..100 {
        let row = client
            .query_opt(
                "SELECT s.active_pid, coalesce(a.application_name, '') FROM pg_replication_slots s
                   LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
                  WHERE s.slot_name = $1 AND s.active",
                &[&slot],
            )
            .await
            .map_err(|e| pg.error(&format!("reading replication slot {slot}"), e))?;
        let Some(row) = row else { return Ok(()) };
        let (pid, reader): (i32, String) = (row.get(0), row.get(1));
        if reader != "cairn incremental" {
            return Err(SourceError::Locked {
                database: pg.name.clone(),
                doing: format!("reading replication slot {slot}"),
                detail: format!(
                    "server process {pid} ({reader:?}) is reading it; the slot is cairn's alone: stop that reader"
                ),
            });
        }
        tracing::warn!("replication slot {slot} is still read by server process {pid} of a killed run: ending it");
        client
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .map_err(|e| pg.error(&format!("ending server process {pid}, which holds slot {slot}"), e))?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(SourceError::Locked {
        database: pg.name.clone(),
        doing: format!("reading replication slot {slot}"),
        detail: "a server process still holds it after 10 s".into(),
    })
}

/// What `slot` holds on the source, when it exists in this database.
///
/// # Errors
/// The server's error.
pub async fn state(pg: &Pg, client: &Client, slot: &str) -> Result<Option<LogHold>, SourceError> {
    let row = client
        .query_opt(
            "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), restart_lsn), 0)::bigint,
                    coalesce(confirmed_flush_lsn::text, ''), coalesce(wal_status, ''), active
               FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
            &[&slot],
        )
        .await
        .map_err(|e| pg.error(&format!("reading replication slot {slot}"), e))?;
    Ok(row.map(|row| LogHold {
        kind: "replication slot",
        name: slot.to_string(),
        retained_bytes: row.get::<_, i64>(0).max(0) as u64,
        position: row.get(1),
        state: row.get(2),
        active: row.get(3),
    }))
}

/// Drops `slot` and the publication of the same name, when they exist; returns what the slot
/// held. The publication goes too: one for all tables makes the server refuse updates and
/// deletes of tables without a replica identity.
///
/// # Errors
/// The server's error (dropping a slot needs REPLICATION; a slot in use cannot be dropped).
pub async fn drop(pg: &Pg, client: &Client, slot: &str) -> Result<Option<LogHold>, SourceError> {
    let held = state(pg, client, slot).await?;
    if held.is_some() {
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
            .map_err(|e| pg.error(&format!("dropping replication slot {slot}"), e))?;
    }
    client
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(slot)))
        .await
        .map_err(|e| pg.error(&format!("dropping publication {slot}"), e))?;
    super::ddl::uninstall_quietly(pg, client, slot).await;
    Ok(held)
}
