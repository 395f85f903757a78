//! How far back the server's binary logs reach from where the next incremental starts, for
//! `cairn status`: a purged parent log is seen before the next run fails on it.

use mysql_async::prelude::Queryable;

use super::My;
use crate::engine::{LogReach, SourceError};
use crate::repo::status::LogPosition;

/// The server's binary logs seen from `from` (the latest copy's end).
pub(super) async fn log_reach(my: &My, from: &LogPosition) -> Result<LogReach, SourceError> {
    let LogPosition::Mysql { file, position, .. } = from else {
        return Err(SourceError::Unsupported(format!(
            "{}: {from} is not a binary log position",
            my.name
        )));
    };
    let mut conn = my.connect(None).await?;
    let logs: Vec<(String, u64)> = conn
        .query_map("SHOW BINARY LOGS", |row: mysql_async::Row| {
            (
                row.get::<String, _>(0).unwrap_or_default(),
                row.get::<u64, _>(1).unwrap_or(0),
            )
        })
        .await
        .map_err(|e| my.error("listing the binary logs (SHOW BINARY LOGS)", e))?;
    let settings: Vec<(String, String)> = conn
        .query("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('binlog_expire_logs_seconds', 'expire_logs_days')")
        .await
        .map_err(|e| my.error("reading how long binary logs are kept", e))?;
    let setting = |name: &str| {
        settings
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .filter(|v| *v > 0.0)
    };
    let expire_seconds = setting("binlog_expire_logs_seconds")
        .or_else(|| setting("expire_logs_days").map(|days| days * 86_400.0))
        .map(|seconds| seconds as u64);
    let reaches = logs.iter().any(|(name, _)| name == file);
    // File names sort in order (the same base, a zero-padded number).
    let bytes_since = match reaches {
        true => logs
            .iter()
            .filter(|(name, _)| name >= file)
            .map(|(_, size)| *size)
            .sum::<u64>()
            .saturating_sub(*position),
        false => 0,
    };
    Ok(LogReach {
        oldest: logs.first().map(|(name, _)| name.clone()).unwrap_or_default(),
        from: format!("{file}:{position}"),
        reaches,
        bytes_since,
        expire_seconds,
    })
}
