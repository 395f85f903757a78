//! What a source keeps on its server for cairn's incrementals (a PostgreSQL replication slot
//! pins WAL until the next incremental moves it): read for `cairn status`, with a warning above
//! the source's threshold, and dropped by `cairn slot drop`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::engine::{LogHold, LogReach, SourceError};
use crate::repo::kinds::RunType;
use crate::repo::status::{CopyRecord, LogPosition};

/// Why the slot of a source could not be read or dropped.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// What a source keeps, and what that means for the person reading `cairn status`.
#[derive(Debug, Clone, Serialize)]
pub struct HoldReport {
    #[serde(flatten)]
    pub hold: LogHold,
    /// When it last moved: the start of the newest copy that ends on it (a full copy creates
    /// the slot; each incremental first moves it to its parent's end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_advanced: Option<DateTime<Utc>>,
    /// Why someone should act, when they should.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// What the configured source `source` keeps on its server for incrementals; `None` when it
/// keeps nothing, or is not configured (a status read from a destination alone).
///
/// # Errors
/// Login or the server's error.
pub async fn hold_of(config: &Config, source: &str, copies: &[CopyRecord]) -> Result<Option<HoldReport>, SlotError> {
    if !config.settings.sources.contains_key(source) {
        return Ok(None);
    }
    let engine = crate::engine::open(&config.source(source)?)?;
    let Some(hold) = engine.log_hold().await? else {
        return Ok(None);
    };
    let last_advanced = copies
        .iter()
        .filter(|c| matches!(&c.log_range.end, LogPosition::Postgres { slot: Some(s), .. } if *s == hold.name))
        .map(|c| c.started_at)
        .max();
    let limit = config.slot_warning_bytes_of(source);
    let warning = if hold.state == "lost" {
        Some(format!(
            "{} {} lost the WAL it needed: the next incremental has a log gap; take a full copy (--type full)",
            hold.kind, hold.name
        ))
    } else if hold.retained_bytes > limit {
        Some(format!(
            "{} {} keeps {} of WAL on the source, more than slot-warning-mib ({}): take an incremental to move it, \
             or, if this source's backups stopped, drop it with `cairn slot drop --source {source}`",
            hold.kind,
            hold.name,
            crate::text::bytes(hold.retained_bytes),
            crate::text::bytes(limit)
        ))
    } else {
        None
    };
    Ok(Some(HoldReport {
        hold,
        last_advanced,
        warning,
    }))
}

/// How far back a source's log reaches from its latest copy, and why someone should act.
#[derive(Debug, Clone, Serialize)]
pub struct ReachReport {
    #[serde(flatten)]
    pub reach: LogReach,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Whether the configured source's log still reaches back to where its next incremental starts
/// (MySQL/MariaDB binary logs); `None` when it is not configured, takes only full copies, or
/// its engine keeps the log for cairn instead (see [`hold_of`]).
///
/// # Errors
/// Login or the server's error.
pub async fn reach_of(config: &Config, source: &str, copies: &[CopyRecord]) -> Result<Option<ReachReport>, SlotError> {
    if !config.settings.sources.contains_key(source) || config.full_backup_of(source) == RunType::Hourly {
        return Ok(None);
    }
    let Some(latest) = copies.iter().max_by_key(|c| (c.finished_at, &c.id)) else {
        return Ok(None);
    };
    if !matches!(latest.log_range.end, LogPosition::Mysql { .. }) {
        return Ok(None);
    }
    let engine = crate::engine::open(&config.source(source)?)?;
    let Some(reach) = engine.log_reach(&latest.log_range.end).await? else {
        return Ok(None);
    };
    let warning = (!reach.reaches).then(|| {
        format!(
            "the server's binary logs start at {}, after {} where the latest copy ended: the next incremental has a \
             log gap; take a full copy (--type full), or set on-log-gap = \"full\"",
            reach.oldest, reach.from
        )
    });
    Ok(Some(ReachReport { reach, warning }))
}

/// Drops what the configured source `source` keeps on its server; returns what it held.
///
/// # Errors
/// Login, privileges, or the server's error.
pub async fn drop_hold(config: &Config, source: &str) -> Result<Option<LogHold>, SlotError> {
    let engine = crate::engine::open(&config.source(source)?)?;
    Ok(engine.drop_log_hold().await?)
}
