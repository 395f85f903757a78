//! What a status file records about each copy, and how older status versions are upgraded.

use std::collections::BTreeMap;
use std::ops::Deref;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::repo::kinds::{CopyKind, RunType};

/// The `format` member of every status file.
pub const STATUS_FORMAT: &str = "cairn-status";
/// The status version this build writes; it reads this one and every older one.
pub const STATUS_VERSION: u32 = 4;

/// A position in the source's change log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "engine", rename_all = "lowercase", deny_unknown_fields)]
pub enum LogPosition {
    /// A PostgreSQL WAL position, with the logical slot that continues from it, if any.
    Postgres {
        lsn: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeline: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<String>,
    },
    /// MySQL/MariaDB binary log coordinates and the GTID state at that point.
    Mysql {
        file: String,
        position: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gtid: Option<String>,
    },
}

impl LogPosition {
    /// The coordinates alone: `FILE:POS` of a binary log, the LSN of a WAL.
    pub fn coordinates(&self) -> String {
        match self {
            LogPosition::Postgres { lsn, .. } => lsn.clone(),
            LogPosition::Mysql { file, position, .. } => format!("{file}:{position}"),
        }
    }
}

impl std::fmt::Display for LogPosition {
    /// The position as messages show it: coordinates and, for MySQL, the GTID state.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogPosition::Mysql { file, position, gtid } => {
                write!(f, "{file}:{position}")?;
                match gtid {
                    Some(gtid) => write!(f, " (GTID {gtid})"),
                    None => Ok(()),
                }
            }
            LogPosition::Postgres { lsn, .. } => write!(f, "LSN {lsn}"),
        }
    }
}

/// The part of the source's log a copy covers: a full copy's start and end are its snapshot
/// point; an incremental starts exactly where its parent ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRange {
    pub start: LogPosition,
    pub end: LogPosition,
}

/// Which server a copy was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerIdentity {
    /// PostgreSQL system identifier, MySQL `server_uuid`, or MariaDB `server_id`.
    pub id: String,
    /// The server's version string.
    pub version: String,
}

/// Everything known about one copy; the manifest holds this too, so the status can be rebuilt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyInfo {
    pub id: String,
    pub kind: CopyKind,
    pub run_type: RunType,
    /// The copy this one continues from; `None` exactly for full copies.
    pub parent: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub log_range: LogRange,
    pub server: ServerIdentity,
    /// Bytes stored for the copy's files (compressed), manifest excluded.
    pub bytes: u64,
    /// Number of files, manifest excluded.
    pub files: u64,
    pub cairn_version: String,
    /// Engine-specific facts (snapshot, write stall, counts) that queries do not depend on.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

/// Where a copy's manifest is and what its bytes hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRef {
    /// Key of the manifest, relative to the destination.
    pub path: String,
    pub md5: String,
}

/// One entry of the status: a copy and its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyRecord {
    #[serde(flatten)]
    pub info: CopyInfo,
    pub manifest: ManifestRef,
}

impl Deref for CopyRecord {
    type Target = CopyInfo;

    fn deref(&self) -> &CopyInfo {
        &self.info
    }
}

/// The checksummed content of a status file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    pub source: String,
    /// Copies in the order they were recorded.
    pub copies: Vec<CopyRecord>,
    /// The latest verifications, oldest first (at most [`VERIFICATIONS_KEPT`]).
    #[serde(default)]
    pub verifications: Vec<VerificationRecord>,
    /// The latest runs of any command against this source, oldest first (at most [`RUNS_KEPT`]).
    #[serde(default)]
    pub runs: Vec<RunRecord>,
}

/// Runs a status keeps: at an hourly schedule, four days of history.
pub const RUNS_KEPT: usize = 100;

/// The outcome of one run of `backup`, `restore`, `verify` or `purge` against a source: what
/// monitoring and `cairn status --errors` read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// `backup`, `restore`, `verify` or `purge`.
    pub command: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The process exit code this run's outcome deserved (docs/exit-codes.md): 0 is success.
    pub exit_code: u8,
    /// Why it failed, secrets masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes written (backup), read (restore, verify) or freed (purge).
    #[serde(default)]
    pub bytes: u64,
    /// The copy the run took, restored or verified (the newest one, when several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
    /// The host the run ran on.
    pub host: String,
    pub cairn_version: String,
}

impl RunRecord {
    /// Whether the run did everything it was asked to.
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0
    }
}

/// Verifications a status keeps.
pub const VERIFICATIONS_KEPT: usize = 50;

/// The outcome of one `cairn verify`: evidence that copies were readable and whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationRecord {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `files`: manifests, files and logs without a database.
    pub kind: String,
    /// The copies checked.
    pub copies: Vec<String>,
    /// Whether every one of them was intact and restorable.
    pub intact: bool,
    /// How many damaged or missing objects were found.
    pub problems: u64,
}

impl StatusBody {
    /// An empty status for a source that has no copy yet.
    pub fn empty(source: &str) -> Self {
        StatusBody {
            source: source.to_string(),
            copies: Vec::new(),
            verifications: Vec::new(),
            runs: Vec::new(),
        }
    }
}

/// Upgrades a status body of `version` to [`STATUS_VERSION`], one version at a time.
///
/// # Errors
/// A description of what in the old body could not be understood.
pub fn upgrade(version: u32, mut body: Value) -> Result<Value, String> {
    let mut current = version;
    while current < STATUS_VERSION {
        body = match current {
            1 => upgrade_v1(body)?,
            // Version 3 added the verifications, which version 2 bodies have none of.
            2 => body,
            // Version 4 added the run history, which version 3 bodies have none of.
            3 => body,
            other => return Err(format!("no upgrade is known from status version {other}")),
        };
        current += 1;
    }
    Ok(body)
}

/// Version 1, written by the first development builds, kept positions as strings
/// (`"file:pos"` for MySQL, an LSN for PostgreSQL) beside a body-level `engine`, and the server
/// and manifest as flat fields.
fn upgrade_v1(body: Value) -> Result<Value, String> {
    let Value::Object(mut body) = body else {
        return Err("the body is not an object".into());
    };
    let engine = body
        .remove("engine")
        .and_then(|e| e.as_str().map(str::to_string))
        .ok_or("version 1 bodies name their engine")?;
    let copies = body.remove("copies").unwrap_or(Value::Array(Vec::new()));
    let Value::Array(copies) = copies else {
        return Err("copies is not a list".into());
    };
    let mut upgraded = Vec::with_capacity(copies.len());
    for (index, copy) in copies.into_iter().enumerate() {
        let Value::Object(mut copy) = copy else {
            return Err(format!("copy #{index} is not an object"));
        };
        let mut take_str = |name: &str| -> Result<String, String> {
            copy.remove(name)
                .and_then(|v| v.as_str().map(str::to_string))
                .ok_or(format!("copy #{index} has no {name}"))
        };
        let start = position_from_v1(&engine, &take_str("start_position")?)?;
        let end = position_from_v1(&engine, &take_str("end_position")?)?;
        let server_id = take_str("server_id")?;
        let server_version = take_str("server_version")?;
        let manifest_path = take_str("manifest")?;
        let manifest_md5 = take_str("manifest_md5")?;
        copy.insert("log_range".into(), serde_json::json!({"start": start, "end": end}));
        copy.insert(
            "server".into(),
            serde_json::json!({"id": server_id, "version": server_version}),
        );
        copy.insert(
            "manifest".into(),
            serde_json::json!({"path": manifest_path, "md5": manifest_md5}),
        );
        copy.insert("cairn_version".into(), Value::String("0.0.0 (status version 1)".into()));
        upgraded.push(Value::Object(copy));
    }
    body.insert("copies".into(), Value::Array(upgraded));
    Ok(Value::Object(body))
}

fn position_from_v1(engine: &str, text: &str) -> Result<Value, String> {
    match engine {
        "postgres" => Ok(serde_json::json!({"engine": "postgres", "lsn": text})),
        "mysql" => {
            let (file, position) = text
                .rsplit_once(':')
                .ok_or(format!("MySQL position {text:?} is not file:position"))?;
            let position: u64 = position
                .parse()
                .map_err(|_| format!("MySQL position {text:?} has no number"))?;
            Ok(serde_json::json!({"engine": "mysql", "file": file, "position": position}))
        }
        other => Err(format!("unknown engine {other:?}")),
    }
}

/// Copies by id, for lookups that happen many times in one query.
pub(crate) fn index(copies: &[CopyRecord]) -> BTreeMap<&str, &CopyRecord> {
    copies.iter().map(|c| (c.id.as_str(), c)).collect()
}
