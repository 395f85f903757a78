//! Replay of PostgreSQL incrementals onto a restored full copy (docs/postgres.md,
//! "Incrementals"): every change file fetched, its MD5 checked and every message decoded
//! before anything is applied; then the changes applied in commit order,
//! one target transaction per source transaction, leaving out the transactions the full copy's
//! snapshot already holds. Each applied transaction records its source position in a
//! replication origin, in the same commit.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;
use tokio_postgres::Client;

use super::Pg;
use super::apply::Applier;
use super::changes_file::{ReadError, Records};
use super::pgoutput::{Decoder, lsn_text};
use super::visibility::Snapshot;
use crate::engine::change::Change;
use crate::engine::{RestoreInput, SourceError};
use crate::repo::file_kind::FileKind;
use crate::repo::model::LogPosition;
use crate::repo::reader::{StoredFile, files_of, one_of, open_verified, read_text};

/// One incremental's change file, fetched and checked.
struct LocalChanges {
    copy: String,
    path: PathBuf,
    key: String,
    /// Its sequences' values at the incremental's end.
    sequences: StoredFile,
}

/// The chain checked and fetched.
pub(super) struct Checked {
    _work: tempfile::TempDir,
    files: Vec<LocalChanges>,
    snapshot: Snapshot,
    pub in_chain: u64,
}

fn damaged(copy: &str, key: &str, problem: impl std::fmt::Display) -> SourceError {
    SourceError::Damaged(format!("copy {copy}: {key}: {problem}"))
}

/// Fetches and checks every change file of `input`'s incrementals.
///
/// # Errors
/// A damaged or missing file, a hole in the chain, or a stop point (PostgreSQL chains replay to
/// their end for now).
pub(super) async fn check(input: &RestoreInput) -> Result<Checked, SourceError> {
    let full = &input.manifests[0];
    let snapshot = full
        .copy
        .details
        .get("snapshot")
        .and_then(|s| s.as_str())
        .ok_or_else(|| SourceError::Damaged(format!("copy {}: the snapshot is not recorded", full.copy.id)))
        .and_then(|text| Snapshot::parse(text).map_err(SourceError::Damaged))?;
    if let Some(until) = &input.until {
        return Err(SourceError::Unsupported(format!(
            "PostgreSQL chains replay to their end; stopping at {until} is not available yet"
        )));
    }
    crate::engine::check_chain(&input.manifests)?;
    let work = tempfile::Builder::new()
        .prefix("cairn-replay-")
        .tempdir()
        .map_err(|e| SourceError::Damaged(format!("creating a work folder for the replay: {e}")))?;
    let mut files = Vec::new();
    for manifest in &input.manifests[1..] {
        let copy = &manifest.copy.id;
        let stored = files_of(&input.source, manifest)?;
        let changes = stored
            .iter()
            .find(|f| matches!(f.kind, FileKind::PgChanges(_)))
            .cloned()
            .ok_or_else(|| SourceError::Damaged(format!("copy {copy} has no change file in its manifest")))?;
        let sequences = one_of(&stored, FileKind::Sequences, copy)?;
        let path = work.path().join(format!("{:05}.pgoutput", files.len()));
        let mut body = open_verified(&input.destination, &changes).await?;
        let mut out = tokio::fs::File::create(&path)
            .await
            .map_err(|e| SourceError::Damaged(format!("creating {}: {e}", path.display())))?;
        tokio::io::copy(&mut body, &mut out)
            .await
            .map_err(SourceError::from_read)?;
        out.flush()
            .await
            .map_err(|e| SourceError::Damaged(format!("writing {}: {e}", path.display())))?;
        files.push(LocalChanges {
            copy: copy.clone(),
            path,
            key: changes.key.clone(),
            sequences,
        });
    }
    // Every message decodes; count the transactions the replay applies.
    let mut in_chain = 0u64;
    for file in &files {
        let mut records = open(file).await?;
        let mut decoder = Decoder::default();
        while let Some((lsn, message)) = next(&mut records, file).await? {
            let change = decoder
                .decode(&lsn_text(lsn), &message)
                .map_err(|e| damaged(&file.copy, &file.key, e))?;
            if let Some(Change::Begin { transaction, .. }) = change
                && !transaction.is_some_and(|xid| snapshot.holds(xid as u32))
            {
                in_chain += 1;
            }
        }
    }
    Ok(Checked {
        _work: work,
        files,
        snapshot,
        in_chain,
    })
}

async fn open(file: &LocalChanges) -> Result<Records<tokio::io::BufReader<tokio::fs::File>>, SourceError> {
    let opened = tokio::fs::File::open(&file.path)
        .await
        .map_err(|e| SourceError::Damaged(format!("opening {}: {e}", file.path.display())))?;
    Ok(Records::new(tokio::io::BufReader::with_capacity(1 << 20, opened)))
}

async fn next(
    records: &mut Records<tokio::io::BufReader<tokio::fs::File>>,
    file: &LocalChanges,
) -> Result<Option<(u64, Vec<u8>)>, SourceError> {
    records.next().await.map_err(|e| match e {
        ReadError::Format(problem) => damaged(&file.copy, &file.key, problem),
        ReadError::Io(io) => damaged(&file.copy, &file.key, io),
    })
}

/// What the replay did.
pub(super) struct Replayed {
    pub transactions: u64,
    pub row_changes: u64,
    pub position: LogPosition,
}

/// Applies the checked chain to `client`'s database, which holds the full copy.
///
/// # Errors
/// A change the target cannot apply (a row it does not hold as the source did), or its error.
pub(super) async fn replay(
    pg: &Pg,
    client: &Client,
    input: &RestoreInput,
    checked: Checked,
) -> Result<Replayed, SourceError> {
    let origin = format!("cairn_{}", input.manifests[0].copy.id);
    client
        .execute(
            "SELECT pg_replication_origin_create($1) WHERE NOT EXISTS \
             (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
            &[&origin],
        )
        .await
        .map_err(|e| pg.error("creating the replay's replication origin", e))?;
    client
        .execute("SELECT pg_replication_origin_session_setup($1)", &[&origin])
        .await
        .map_err(|e| pg.error("using the replay's replication origin", e))?;
    let mut applier = Applier::new(pg, client).await?;
    for file in &checked.files {
        let mut records = open(file).await?;
        let mut decoder = Decoder::default();
        let mut skipping = false;
        while let Some((lsn, message)) = next(&mut records, file).await? {
            let Some(change) = decoder
                .decode(&lsn_text(lsn), &message)
                .map_err(|e| damaged(&file.copy, &file.key, e))?
            else {
                continue;
            };
            if let Change::Begin { transaction, .. } = &change {
                skipping = transaction.is_some_and(|xid| checked.snapshot.holds(xid as u32));
            }
            if skipping {
                if matches!(change, Change::Commit(_)) {
                    skipping = false;
                }
                continue;
            }
            let record = match &change {
                Change::Commit(commit) => match &commit.position {
                    LogPosition::Postgres { lsn, .. } => {
                        format!("SELECT pg_replication_origin_xact_setup('{lsn}'::pg_lsn, now())")
                    }
                    LogPosition::Mysql { .. } => String::new(),
                },
                _ => String::new(),
            };
            applier.apply(change, &record).await?;
        }
    }
    // Sequences are not decoded: each incremental recorded their values at its end.
    if let Some(last) = checked.files.last() {
        let sql = read_text(&input.destination, &last.sequences).await?;
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| pg.error("setting sequences after the replay", e))?;
    }
    // The whole chain was applied: its end is exact.
    let position = input.manifests[input.manifests.len() - 1].copy.log_range.end.clone();
    let done = applier.applied();
    Ok(Replayed {
        transactions: done.transactions,
        row_changes: done.row_changes,
        position,
    })
}
