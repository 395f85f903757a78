//! The replay's progress row on the target: where a replay starts (after the full copy, or
//! after what an interrupted replay committed) and the exact position it ends at.

use mysql_async::prelude::Queryable;

use super::PROGRESS_DATABASE;
use super::apply::Applier;
use super::decode::ResumeAfter;
use super::triggers::settle_earlier_replay;
use crate::engine::mysql::binlog::GtidState;
use crate::engine::mysql::quote_literal;
use crate::engine::{RestoreInput, SourceError};
use crate::repo::manifest::Manifest;
use crate::repo::model::LogPosition;

/// Records where the replay starts and returns the GTID state there, and, for a resumed replay,
/// the transaction after which it continues.
///
/// # Errors
/// `--resume` without a matching progress row, or the target's error.
pub(super) async fn begin(
    applier: &mut Applier<'_>,
    input: &RestoreInput,
    full: &Manifest,
    start_gtids: &GtidState,
) -> Result<(GtidState, Option<ResumeAfter>), SourceError> {
    let (my, targets) = (applier.my, applier.targets.clone());
    let mut gtids = start_gtids.clone();
    let mut resume_after = None;
    if input.resume {
        settle_earlier_replay(applier).await?;
        // A locking read: a replay that was killed while its last COMMIT was still running on
        // the server holds this row until that commit ends, and a plain read would see the
        // position before it and apply that transaction a second time.
        applier.exec("reading the replay progress", "BEGIN").await?;
        let row: Option<(String, String, String, u64, Option<String>)> = applier
            .conn
            .exec_first(
                format!(
                    "SELECT full_copy, copy_id, server_file, position, gtid FROM {PROGRESS_DATABASE}.progress \
                     WHERE source = ? AND target_databases = ? FOR UPDATE"
                ),
                (&input.source, &targets),
            )
            .await
            .map_err(|e| my.error("reading the replay progress", e))?;
        applier.exec("reading the replay progress", "COMMIT").await?;
        applier
            .conn
            .exec_drop(
                format!(
                    "UPDATE {PROGRESS_DATABASE}.progress SET connection_id = CONNECTION_ID() WHERE source = ? AND \
                     target_databases = ?"
                ),
                (&input.source, &targets),
            )
            .await
            .map_err(|e| my.error("recording the replay's session", e))?;
        let Some((full_copy, copy_id, server_file, position, gtid)) = row else {
            return Err(SourceError::Unsupported(format!(
                "--resume: the target has no replay progress for source {} ({PROGRESS_DATABASE}.progress): the replay \
                 never started (the full restore did not finish). Restore again with --clean instead of --resume",
                input.source
            )));
        };
        if full_copy != full.copy.id {
            return Err(SourceError::Unsupported(format!(
                "--resume: the target holds a replay of full copy {full_copy}, not {}; restore that chain, or \
                 restore again with --clean",
                full.copy.id
            )));
        }
        gtids = GtidState::parse(gtid.as_deref().unwrap_or_default())
            .map_err(|e| SourceError::Damaged(format!("the replay progress's GTID position: {e}")))?;
        tracing::info!("--resume: the target has everything up to {server_file}:{position} (copy {copy_id})");
        if copy_id != full.copy.id {
            resume_after = Some(ResumeAfter {
                copy: copy_id,
                server_file,
                position,
            });
        }
    } else {
        let (file, position) = match &full.copy.log_range.end {
            LogPosition::Mysql { file, position, .. } => (file.clone(), *position),
            LogPosition::Postgres { .. } => {
                return Err(SourceError::Unsupported(format!(
                    "copy {} is not a MySQL copy",
                    full.copy.id
                )));
            }
        };
        applier
            .conn
            .exec_drop(
                format!(
                    "REPLACE INTO {PROGRESS_DATABASE}.progress (source, target_databases, full_copy, copy_id, server_file, \
                     position, gtid, transactions, connection_id) VALUES (?, ?, ?, ?, ?, ?, ?, 0, CONNECTION_ID())"
                ),
                (&input.source, &targets, &full.copy.id, &full.copy.id, file, position, start_gtids.to_string()),
            )
            .await
            .map_err(|e| my.error("recording the replay start", e))?;
        applier
            .exec(
                "clearing triggers set aside earlier",
                &format!(
                    "DELETE FROM {PROGRESS_DATABASE}.deferred_triggers WHERE source = {} AND target_databases = {}",
                    quote_literal(&input.source),
                    quote_literal(&targets)
                ),
            )
            .await?;
    }
    Ok((gtids, resume_after))
}

/// Records the position the replay ended at and returns it: the chain's exact end when every
/// transaction was applied, else the position after the last one applied.
///
/// # Errors
/// The target's error.
pub(super) async fn end(applier: &mut Applier<'_>, input: &RestoreInput) -> Result<LogPosition, SourceError> {
    let (my, targets) = (applier.my, applier.targets.clone());
    let full = &input.manifests[0];
    let last = input.manifests.last().unwrap_or(full);
    let position: Option<(String, u64, String)> = applier
        .conn
        .exec_first(
            format!("SELECT server_file, position, gtid FROM {PROGRESS_DATABASE}.progress WHERE source = ? AND target_databases = ?"),
            (&input.source, &targets),
        )
        .await
        .map_err(|e| my.error("reading the replay position", e))?;
    let applied_all = input.until.is_none();
    let position = match (applied_all, position) {
        // Everything was applied: the chain's end is exact, including events after the last
        // transaction (rotations).
        (true, _) => last.copy.log_range.end.clone(),
        (false, Some((file, position, gtid))) => LogPosition::Mysql {
            file,
            position,
            gtid: (!gtid.is_empty()).then_some(gtid),
        },
        (false, None) => full.copy.log_range.end.clone(),
    };
    if let LogPosition::Mysql {
        file,
        position: at,
        gtid,
    } = &position
    {
        applier
            .conn
            .exec_drop(
                format!(
                    "UPDATE {PROGRESS_DATABASE}.progress SET server_file = ?, position = ?, gtid = ? WHERE source = ? AND target_databases = ?"
                ),
                (file, at, gtid.clone().unwrap_or_default(), &input.source, &targets),
            )
            .await
            .map_err(|e| my.error("recording the replay's end", e))?;
    }
    Ok(position)
}
