//! Replay of PostgreSQL incrementals onto a restored full copy (docs/postgres.md,
//! "Incrementals"): every change file fetched, its MD5 checked and every message decoded
//! and the stop point located before anything is applied; then the changes applied in commit
//! order, one target transaction per source transaction, leaving out the transactions the full
//! copy's snapshot already holds. Each applied transaction records its source position in a
//! replication origin, in the same commit, so `--resume` continues exactly after it.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;
use tokio_postgres::Client;

use super::Pg;
use super::apply::Applier;
use super::changes_file::{ReadError, Records};
use super::pgoutput::{Decoder, lsn_text, parse_lsn};
use super::visibility::Snapshot;
use crate::engine::change::Change;
use crate::engine::filter::Filters;
use crate::engine::{RestoreInput, SourceError, Until};
use crate::repo::file_kind::FileKind;
use crate::repo::model::CopyInfo;
use crate::repo::model::LogPosition;
use crate::repo::reader::{StoredFile, files_of, one_of, open_verified, read_text};
use chain::ChainChanges;

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
    /// Transactions of the chain the full copy does not hold.
    pub in_chain: u64,
    pub stop: Stop,
}

/// Where the replay stops, located by the check.
pub(super) struct Stop {
    /// The commit LSN of the first transaction left out; `None`: none is.
    before: Option<u64>,
    /// Transactions applied up to the stop.
    pub applying: u64,
    /// The source's position the target holds once the replay reached the stop.
    pub position: LogPosition,
    /// The change file whose sequences are set: the one the stop falls in, whose values are at
    /// or past the stop (a sequence may skip values, never repeat one).
    sequences_of: usize,
    /// The last transaction applied, described for the dry run.
    pub last: Option<String>,
}

impl Stop {
    /// One line for the dry run.
    pub fn describe(&self, in_chain: u64) -> String {
        let after = match &self.last {
            Some(last) => format!("after {last}"),
            None => "before the first transaction: the full copy's own point".into(),
        };
        format!(
            "stop: {after}; {} of {} applied; restored position {}",
            self.applying,
            crate::text::count(in_chain, "transaction"),
            self.position.coordinates()
        )
    }
}

/// The name of the replication origin that records a replay of `full_copy` into `database`:
/// origins are the server's, not one database's, so the database is part of the name.
pub(super) fn origin_name(database: &str, full_copy: &str) -> String {
    format!("cairn_{full_copy}_{database}")
}

/// One transaction of the stream, as its Begin describes it.
struct Begun {
    xid: u32,
    held: bool,
    committed_at: Option<chrono::DateTime<chrono::Utc>>,
    commit_lsn: u64,
}

fn damaged(copy: &str, key: &str, problem: impl std::fmt::Display) -> SourceError {
    SourceError::Damaged(format!("copy {copy}: {key}: {problem}"))
}

/// Fetches and checks every change file of `input`'s incrementals.
///
/// # Errors
/// A damaged or missing file, a hole in the chain, or a stop point the chain does not hold.
pub(super) async fn check(input: &RestoreInput) -> Result<Checked, SourceError> {
    let full = &input.manifests[0];
    let snapshot = full
        .copy
        .details
        .get("snapshot")
        .and_then(|s| s.as_str())
        .ok_or_else(|| SourceError::Damaged(format!("copy {}: the snapshot is not recorded", full.copy.id)))
        .and_then(|text| Snapshot::parse(text).map_err(SourceError::Damaged))?
        .ending_at(
            full.copy
                .details
                .get("snapshot_insert_lsn")
                .and_then(|l| l.as_str())
                .and_then(|l| parse_lsn(l).ok()),
        );
    let full_end = &full.copy.log_range.end;
    if let (Some(Until::Lsn(lsn)), LogPosition::Postgres { lsn: end, .. }) = (&input.until, full_end)
        && parse_lsn(end).is_ok_and(|end| *lsn < end)
    {
        return Err(SourceError::Unsupported(format!(
            "--until-lsn {}: is before full copy {}'s position {end}; restore an older copy (--copy)",
            lsn_text(*lsn),
            full.copy.id
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
    let chain_end = input.manifests[input.manifests.len() - 1].copy.log_range.end.clone();
    let (in_chain, stop) = locate(&files, &snapshot, input.until.as_ref(), &full.copy, chain_end).await?;
    Ok(Checked {
        _work: work,
        files,
        snapshot,
        in_chain,
        stop,
    })
}

/// Decodes every message of the chain and finds where `until` stops: after the last whole
/// transaction it lets through.
async fn locate(
    files: &[LocalChanges],
    snapshot: &Snapshot,
    until: Option<&Until>,
    full: &CopyInfo,
    chain_end: LogPosition,
) -> Result<(u64, Stop), SourceError> {
    let (full_end, full_id) = (&full.log_range.end, &full.id);
    let slot = match &chain_end {
        LogPosition::Postgres { slot, .. } => slot.clone(),
        LogPosition::Mysql { .. } => None,
    };
    let mut stop = Stop {
        before: None,
        applying: 0,
        position: full_end.clone(),
        sequences_of: files.len().saturating_sub(1),
        last: None,
    };
    let wanted_xid = match until {
        Some(Until::Xid(xid)) => Some(*xid),
        _ => None,
    };
    let (mut in_chain, mut decided, mut found_xid) = (0u64, false, false);
    for (index, file) in files.iter().enumerate() {
        let mut records = open(file).await?;
        let mut decoder = Decoder::default();
        let mut begun = None::<Begun>;
        while let Some((lsn, message)) = next(&mut records, file).await? {
            let change = decoder
                .decode(&lsn_text(lsn), &message)
                .map_err(|e| damaged(&file.copy, &file.key, e))?;
            let commit = match change {
                Some(Change::Begin {
                    transaction,
                    committed_at,
                    ..
                }) => {
                    let xid = transaction.unwrap_or_default() as u32;
                    begun = Some(Begun {
                        xid,
                        held: snapshot.holds(xid, decoder.commit_lsn()),
                        committed_at,
                        commit_lsn: decoder.commit_lsn(),
                    });
                    continue;
                }
                Some(Change::Commit(commit)) => commit,
                _ => continue,
            };
            let txn = begun.take().ok_or_else(|| {
                damaged(
                    &file.copy,
                    &file.key,
                    format!("{}: a commit without its begin", commit.at),
                )
            })?;
            let end = match &commit.position {
                LogPosition::Postgres { lsn, .. } => parse_lsn(lsn).map_err(|e| damaged(&file.copy, &file.key, e))?,
                LogPosition::Mysql { .. } => 0,
            };
            in_chain += u64::from(!txn.held);
            if decided {
                continue;
            }
            let take = match until {
                Some(Until::Time(time)) => txn.committed_at.is_none_or(|at| at <= *time),
                Some(Until::Lsn(lsn)) => end <= *lsn,
                Some(Until::Xid(_)) => !found_xid,
                _ => true,
            };
            if !take && txn.held {
                return Err(SourceError::Unsupported(format!(
                    "the stop point falls before the full copy's snapshot (transaction {} committed {} is already \
                     in copy {}): the full copy cannot be restored to an earlier point; restore an older chain \
                     (--copy), or stop later",
                    txn.xid,
                    txn.committed_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "at an unknown time".into()),
                    full_id
                )));
            }
            if !take {
                decided = true;
                stop.before = Some(txn.commit_lsn);
                stop.sequences_of = index;
                continue;
            }
            if wanted_xid.is_some_and(|wanted| snapshot.names(txn.xid, wanted)) {
                if txn.held {
                    return Err(SourceError::Unsupported(format!(
                        "--until-xid {}: the full copy's snapshot already holds this transaction; restore the full \
                         copy alone (--copy {}), or stop at a later transaction",
                        wanted_xid.unwrap_or_default(),
                        file.copy
                    )));
                }
                found_xid = true;
            }
            stop.applying += u64::from(!txn.held);
            stop.position = LogPosition::Postgres {
                lsn: lsn_text(end),
                timeline: None,
                slot: slot.clone(),
            };
            stop.last = Some(format!(
                "transaction {} committed {} (copy {}, ends at {})",
                txn.xid,
                txn.committed_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "at an unknown time".into()),
                file.copy,
                lsn_text(end)
            ));
        }
    }
    if let Some(wanted) = wanted_xid
        && !found_xid
    {
        return Err(SourceError::Unsupported(format!(
            "--until-xid {wanted}: no transaction of the chain has this id (the chain ends at {}); nothing was applied",
            chain_end.coordinates()
        )));
    }
    if !decided && !found_xid {
        // Nothing was left out: the target is at the chain's end.
        stop.position = chain_end;
    }
    Ok((in_chain, stop))
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

mod chain;
mod script;

pub(super) use script::write_changes;

/// What the replay did.
pub(super) struct Replayed {
    pub transactions: u64,
    pub row_changes: u64,
    pub position: LogPosition,
}

/// The filters the chain's full copy was taken with.
fn recorded_filters(input: &RestoreInput) -> Result<Filters, SourceError> {
    let full = &input.manifests[0].copy;
    match full.details.get("filters") {
        Some(recorded) => serde_json::from_value(recorded.clone())
            .map_err(|e| SourceError::Damaged(format!("copy {}: the recorded filters do not parse: {e}", full.id))),
        None => Ok(Filters::default()),
    }
}

/// The position a replay of `input`'s full copy recorded in the target, when the target holds
/// one: `Some(None)` when the replay began but applied nothing yet.
///
/// # Errors
/// The target's error.
pub(super) async fn progress(
    pg: &Pg,
    client: &Client,
    input: &RestoreInput,
) -> Result<Option<Option<u64>>, SourceError> {
    let origin = origin_name(&pg.database(), &input.manifests[0].copy.id);
    let row = client
        .query_opt(
            "SELECT pg_replication_origin_progress(roname, true)::text FROM pg_replication_origin WHERE roname = $1",
            &[&origin],
        )
        .await
        .map_err(|e| pg.error("reading the replay's progress", e))?;
    let Some(row) = row else { return Ok(None) };
    let recorded: Option<String> = row.get(0);
    match recorded {
        Some(text) => parse_lsn(&text)
            .map(|lsn| Some(Some(lsn)))
            .map_err(|e| SourceError::Damaged(format!("replication origin {origin}: {e}"))),
        None => Ok(Some(None)),
    }
}

/// Drops the replication origin of a replay of `input`'s full copy into this database, if one
/// is left.
///
/// # Errors
/// The target's error (the origin is in use by a replay still running).
pub(super) async fn forget(pg: &Pg, client: &Client, input: &RestoreInput) -> Result<(), SourceError> {
    let origin = origin_name(&pg.database(), &input.manifests[0].copy.id);
    client
        .execute(
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1",
            &[&origin],
        )
        .await
        .map_err(|e| pg.error("dropping an earlier replay's replication origin", e))?;
    Ok(())
}

/// What a selective restore lets through of a replay: the chosen tables' changes, and their
/// sequences' values.
pub(super) trait Only: Sync {
    /// The change as the restored tables take it; `None` to pass it over.
    ///
    /// # Errors
    /// A change the selective restore cannot apply.
    fn admit(&self, change: Change) -> Result<Option<Change>, SourceError>;

    /// The lines of an incremental's sequence values that the restored tables' sequences take.
    fn sequence_values(&self, sql: &str) -> String;
}

/// Applies the checked chain to `client`'s database, which holds the full copy; with `resumed`,
/// the position a stopped replay recorded, it continues after it.
///
/// # Errors
/// A change the target cannot apply (a row it does not hold as the source did), or its error.
pub(super) async fn replay(
    pg: &Pg,
    client: &Client,
    input: &RestoreInput,
    checked: Checked,
    resumed: Option<u64>,
    only: Option<&dyn Only>,
) -> Result<Replayed, SourceError> {
    let mut origin = origin_name(&pg.database(), &input.manifests[0].copy.id);
    if only.is_some() {
        // A selective restore's own: a whole restore's stopped replay in this database keeps
        // its origin.
        origin.push_str("_selected");
        client
            .execute(
                "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1",
                &[&origin],
            )
            .await
            .map_err(|e| pg.error("dropping an earlier selective restore's replication origin", e))?;
    } else if !input.resume {
        forget(pg, client, input).await?;
    }
    if !input.resume {
        client
            .execute("SELECT pg_replication_origin_create($1)", &[&origin])
            .await
            .map_err(|e| pg.error("creating the replay's replication origin", e))?;
    }
    client
        .execute("SELECT pg_replication_origin_session_setup($1)", &[&origin])
        .await
        .map_err(|e| {
            let full = e
                .as_db_error()
                .is_some_and(|d| d.message().contains("free replication state slot"));
            pg.error(
                match full {
                    true => {
                        "using the replay's replication origin (each stopped replay keeps one until it is resumed; \
                         raise max_replication_slots, or drop those of abandoned restores: SELECT \
                         pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname LIKE 'cairn\\_%')"
                    }
                    false => "using the replay's replication origin",
                },
                e,
            )
        })?;
    let mut applier = Applier::new(pg, client).await?;
    let stop = &checked.stop;
    let mut changes = ChainChanges::new(input, &checked, resumed, only)?;
    while let Some(change) = changes.next().await? {
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
    // Every transaction sent was answered (the first failure is the error).
    let done = applier.finish().await?;
    // Sequences are not decoded: each incremental recorded their values at its end.
    if let Some(file) = checked.files.get(stop.sequences_of) {
        let sql = read_text(&input.destination, &file.sequences).await?;
        // A selective restore sets its own tables' sequences only.
        let sql = match only {
            Some(only) => only.sequence_values(&sql),
            None => sql,
        };
        // One `setval` per line. With captured DDL, a sequence created after the stop point
        // does not exist in the target: there is nothing to set.
        for statement in sql.lines().filter(|l| !l.trim().is_empty()) {
            match client.batch_execute(statement).await {
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                    tracing::debug!("{statement}: the sequence does not exist at the stop point");
                }
                other => other.map_err(|e| pg.error("setting sequences after the replay", e))?,
            }
        }
    }
    // The replay is complete: nothing is left to resume, and the origin would hold one of the
    // server's few replication state slots for good.
    client
        .batch_execute(&format!(
            "SELECT pg_replication_origin_session_reset(); SELECT pg_replication_origin_drop({})",
            super::quote_literal(&origin)
        ))
        .await
        .map_err(|e| pg.error("dropping the replay's replication origin", e))?;
    Ok(Replayed {
        transactions: done.transactions,
        row_changes: done.row_changes,
        position: stop.position.clone(),
    })
}
