//! PostgreSQL incrementals: the source's logical replication slot and publication, created
//! before a full copy's snapshot; and an incremental copy, which reads the slot's changes since
//! its parent ended (without consuming them), stores them as a change file, and leaves the slot
//! where the parent ended — the next incremental moves it there first, so a crash anywhere
//! leaves the slot where the last recorded copy ended.

use futures::{StreamExt, pin_mut};
use serde_json::{Map, json};
use tokio::io::AsyncWriteExt;
use tokio_postgres::Client;

use super::changes_file;
use super::pgoutput::{self, Decoder};
use super::{Pg, inventory, put_sql, quote_ident};
use crate::engine::change::Change;
use crate::engine::{CopyOptions, SourceError, TakenCopy};
use crate::repo::file_kind::{FileKind, PgChangesFile};
use crate::repo::status::{CopyRecord, LogPosition, LogRange};
use crate::repo::writer::CopyWriter;

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

/// What an incremental counted.
#[derive(Debug, Default)]
struct Counts {
    transactions: u64,
    changes: u64,
    first_lsn: Option<String>,
    last_lsn: Option<String>,
    first_commit: Option<String>,
    last_commit: Option<String>,
}

/// Takes the incremental after `parent`: the slot's changes since the parent ended.
///
/// # Errors
/// [`SourceError::LogGap`] when the slot is gone, lost its WAL or moved past the parent.
pub async fn incremental_copy(
    pg: &Pg,
    source_name: &str,
    writer: &CopyWriter,
    options: &CopyOptions,
    parent: &CopyRecord,
) -> Result<TakenCopy, SourceError> {
    let client = pg.connect("incremental").await?;
    let (slot, parent_lsn) = check_slot(pg, &client, source_name, parent).await?;
    let (slot, parent_lsn) = (&slot, &parent_lsn);
    let timeline = match &parent.log_range.end {
        LogPosition::Postgres { timeline, .. } => *timeline,
        LogPosition::Mysql { .. } => None,
    };
    // The parent is recorded: what it holds need not be kept any longer.
    client
        .execute(
            "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&slot, &parent_lsn],
        )
        .await
        .map_err(|e| pg.error(&format!("moving replication slot {slot} to {parent_lsn}"), e))?;

    let (pipe_writer, pipe_reader) = tokio::io::duplex(1 << 20);
    // The file's details are known once every change was read, which is before the writer asks.
    let file_details = std::sync::Arc::new(std::sync::Mutex::new(Map::new()));
    let shared = file_details.clone();
    let upload = writer.put_file("changes/00000.pgoutput", pipe_reader, move || {
        std::mem::take(&mut *shared.lock().expect("details lock poisoned"))
    });
    // The reading side owns the pipe's writing end: however it ends, the upload sees the end.
    let read = {
        let (client, file_details) = (&client, file_details.clone());
        async move {
            let mut pipe_writer = pipe_writer;
            let rows = client
                .query_raw(
                    "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', \
                 '1', 'publication_names', $2)",
                    [slot.as_str(), slot.as_str()],
                )
                .await
                .map_err(|e| pg.error(&format!("reading the changes of replication slot {slot}"), e))?;
            pin_mut!(rows);
            let write_error = |e: std::io::Error| SourceError::Damaged(format!("writing the change file: {e}"));
            changes_file::write_header(&mut pipe_writer)
                .await
                .map_err(write_error)?;
            let mut decoder = Decoder::default();
            let mut counts = Counts::default();
            while let Some(row) = rows.next().await {
                let row = row.map_err(|e| pg.error(&format!("reading the changes of replication slot {slot}"), e))?;
                let (lsn, data): (String, Vec<u8>) = (row.get(0), row.get(1));
                let at = pgoutput::parse_lsn(&lsn).map_err(SourceError::Damaged)?;
                // Decoded here too, so a message this build cannot replay fails the copy, not a restore.
                match decoder
                    .decode(&lsn, &data)
                    .map_err(|e| SourceError::Damaged(format!("at {lsn}: {e}")))?
                {
                    Some(Change::Begin { committed_at, .. }) => {
                        let time = committed_at.map(|t| t.to_rfc3339());
                        counts.first_commit = counts.first_commit.or(time.clone());
                        counts.last_commit = time;
                        counts.first_lsn.get_or_insert(lsn.clone());
                    }
                    Some(Change::Rows(_) | Change::Truncate(_)) => counts.changes += 1,
                    Some(Change::Commit(commit)) => {
                        counts.transactions += 1;
                        if let LogPosition::Postgres { lsn, .. } = commit.position {
                            counts.last_lsn = Some(lsn);
                        }
                    }
                    _ => {}
                }
                changes_file::write_record(&mut pipe_writer, at, &data)
                    .await
                    .map_err(write_error)?;
            }
            *file_details.lock().expect("details lock poisoned") = FileKind::PgChanges(PgChangesFile {
                transactions: Some(counts.transactions),
                changes: Some(counts.changes),
            })
            .into_details();
            pipe_writer.shutdown().await.map_err(write_error)?;
            Ok::<Counts, SourceError>(counts)
        }
    };
    let (uploaded, read) = tokio::join!(upload, read);
    let counts = read?;
    uploaded?;
    let end_lsn = counts.last_lsn.clone().unwrap_or_else(|| parent_lsn.clone());
    let sequences = inventory::sequence_values(pg, &client, &options.filters).await?;
    put_sql(writer, "schema/sequences.sql", FileKind::Sequences, sequences).await?;
    tracing::info!(
        "{source_name}: {} with {} stored from slot {slot}, up to {end_lsn}",
        crate::text::count(counts.transactions, "transaction"),
        crate::text::count(counts.changes, "change")
    );
    let mut details = Map::new();
    details.insert("slot".into(), json!(slot));
    details.insert("transactions".into(), json!(counts.transactions));
    details.insert("changes".into(), json!(counts.changes));
    details.insert("first_lsn".into(), json!(counts.first_lsn));
    details.insert("last_lsn".into(), json!(counts.last_lsn));
    details.insert("first_commit_at".into(), json!(counts.first_commit));
    details.insert("last_commit_at".into(), json!(counts.last_commit));
    Ok(TakenCopy {
        log_range: LogRange {
            start: parent.log_range.end.clone(),
            end: LogPosition::Postgres {
                lsn: end_lsn,
                timeline,
                slot: Some(slot.clone()),
            },
        },
        server: parent.server.clone(),
        details,
    })
}
