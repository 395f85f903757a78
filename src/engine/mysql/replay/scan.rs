//! The check before a replay: every event of the chain read once (framing and CRC32), every
//! stored file's range tiled, and the transaction where the stop point falls found.

use super::fetch::{LocalLog, open_log};
use super::{Boundary, Limit};
use crate::engine::mysql::binlog::{self, Gtid, GtidState, Step, Transactions, kind};
use crate::engine::{SourceError, Until};
use crate::repo::model::LogPosition;

/// Reads every event once, checking it, and finds how far `until` lets the replay go.
pub(super) async fn scan(
    logs: &[LocalLog],
    start_gtids: &GtidState,
    until: Option<&Until>,
    full_ended: &LogPosition,
) -> Result<(Limit, u64), SourceError> {
    let mut gtids = start_gtids.clone();
    let mut limit = Limit::Nothing;
    let mut decided = false;
    let mut transactions_total = 0u64;
    let mut found_gtid = false;
    let wanted_gtid = match until {
        Some(Until::Gtid(text)) => Some(Gtid::parse(text).map_err(SourceError::Unsupported)?),
        _ => None,
    };
    if let (
        Some(Until::Position { file, position }),
        LogPosition::Mysql {
            file: f, position: p, ..
        },
    ) = (until, full_ended)
        && (binlog::file_order(file), *position) < (binlog::file_order(f), *p)
    {
        return Err(SourceError::Unsupported(format!(
            "--until-position {file}:{position} is before the full copy's position {f}:{p}; restore an older copy \
             (--copy)"
        )));
    }
    for (index, log) in logs.iter().enumerate() {
        let mut reader = open_log(log).await?;
        let mut transactions = Transactions::default();
        let mut started_at = None::<u32>;
        let mut current_gtid = None::<Gtid>;
        let mut tiling = log.tiling();
        while let Some(event) = reader
            .next()
            .await
            .map_err(|e| SourceError::Damaged(format!("copy {}: {}: {e}", log.copy, log.stored_key)))?
        {
            if event.kind() == kind::FORMAT_DESCRIPTION {
                continue;
            }
            // Transactions of other databases that capture left out still move the position.
            if let Some(skip) = tiling.next(&event).map_err(|e| log.damaged(e))? {
                gtids.merge(&skip.gtids);
            }
            let checksums = reader.checksums();
            if !transactions.is_open() {
                started_at = Some(event.timestamp());
            }
            if let Some(gtid) = event.gtid(checksums) {
                current_gtid = Some(gtid);
            }
            if transactions.step(&event, checksums) != Step::Ends {
                continue;
            }
            transactions_total += 1;
            if let Some(gtid) = current_gtid.take() {
                gtids.add(&gtid);
                if let Some(wanted) = &wanted_gtid
                    && wanted.same(&gtid)
                {
                    found_gtid = true;
                }
            }
            let boundary = Boundary {
                log: index,
                count: transactions_total,
                server_file: log.server_file.clone(),
                position: event.log_pos(),
                gtids: gtids.clone(),
                copy: log.copy.clone(),
            };
            if decided {
                continue;
            }
            let take = match until {
                // PostgreSQL's stop points are refused for MySQL chains before a replay.
                None | Some(Until::Lsn(_) | Until::Xid(_)) => true,
                Some(Until::Time(time)) => i64::from(started_at.unwrap_or(0)) <= time.timestamp(),
                Some(Until::Gtid(_)) => true,
                Some(Until::Position { file, position }) => {
                    (binlog::file_order(&log.server_file), event.log_pos()) <= (binlog::file_order(file), *position)
                }
            };
            if take {
                limit = Limit::After(boundary);
                decided = found_gtid;
            } else {
                decided = true;
            }
        }
        if transactions.is_open() {
            return Err(SourceError::Damaged(format!(
                "copy {}: {} ends inside a transaction",
                log.copy, log.stored_key
            )));
        }
        if let Some(skip) = tiling.finish().map_err(|e| log.damaged(e))? {
            gtids.merge(&skip.gtids);
        }
    }
    if let Some(wanted) = &wanted_gtid
        && !found_gtid
    {
        return Err(SourceError::Unsupported(format!(
            "--until-gtid {wanted}: no transaction of the chain has this GTID (the chain's incrementals end at GTID \
             position {gtids}); nothing was applied"
        )));
    }
    Ok((limit, transactions_total))
}
