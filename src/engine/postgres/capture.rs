//! A PostgreSQL incremental copy: it reads the source slot's changes since its parent ended
//! (without consuming them), stores them as a change file, and leaves the slot where the parent
//! ended — the next incremental moves it there first, so a crash anywhere leaves the slot where
//! the last recorded copy ended.

use futures::{StreamExt, pin_mut};
use serde_json::{Map, json};
use tokio::io::AsyncWriteExt;

use super::changes_file;
use super::pgoutput::{self, Decoder};
use super::slot::check_slot;
use super::{Pg, ddl, inventory, put_sql};
use crate::engine::change::Change;
use crate::engine::{CopyOptions, SourceError, TakenCopy};
use crate::repo::file_kind::{FileKind, PgChangesFile};
use crate::repo::status::{CopyRecord, LogPosition, LogRange};
use crate::repo::writer::CopyWriter;

/// What an incremental counted.
#[derive(Debug, Default)]
struct Counts {
    transactions: u64,
    changes: u64,
    /// DDL statements the source recorded (`on-ddl = "capture"`).
    ddl: u64,
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
    // Values are decoded into text under fixed settings, the ones the replay finds rows with.
    client
        .batch_execute(super::apply::OUTPUT_SETTINGS)
        .await
        .map_err(|e| pg.error("preparing the session that reads the slot", e))?;
    let (slot, parent_lsn) = check_slot(pg, &client, source_name, parent).await?;
    let (slot, parent_lsn) = (&slot, &parent_lsn);
    super::slot::free(pg, &client, slot).await?;
    let timeline = match &parent.log_range.end {
        LogPosition::Postgres { timeline, .. } => *timeline,
        LogPosition::Mysql { .. } => None,
    };
    // Logical decoding carries no DDL: the schema must be the parent's before and after the
    // read, or the changes would not restore (docs/postgres.md, "Schema changes").
    let before = ddl::fingerprint(pg, &client).await?;
    if !options.postgres.capture_ddl {
        ddl::check_unchanged(source_name, parent, &before, "since")?;
    }
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
                    // Recorded DDL (on-ddl = "capture") that a replay could not run exactly
                    // fails the copy now, not a restore later.
                    Some(Change::Statement(statement)) => {
                        counts.changes += 1;
                        counts.ddl += 1;
                        if let Err(why) = ddl::replayable(&statement.text) {
                            return Err(SourceError::SchemaChanged {
                                source_name: source_name.to_string(),
                                parent: parent.id.clone(),
                                detail: format!("at {lsn}: {why}"),
                            });
                        }
                    }
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
    let after = ddl::fingerprint(pg, &client).await?;
    if after != before && !options.postgres.capture_ddl {
        return Err(SourceError::SchemaChanged {
            source_name: source_name.to_string(),
            parent: parent.id.clone(),
            detail: "the schema changed while this incremental was read".into(),
        });
    }
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
    details.insert(ddl::FINGERPRINT.into(), json!(after));
    details.insert("transactions".into(), json!(counts.transactions));
    details.insert("changes".into(), json!(counts.changes));
    if counts.ddl > 0 {
        details.insert("ddl_statements".into(), json!(counts.ddl));
    }
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
