//! Incremental copies: the binary log since the parent copy ended, read over the replication
//! protocol and stored as real binlog files, one per server file the range touches.
//!
//! Every event is checked on arrival: its CRC32, and that it starts exactly where the previous
//! one ended, so a copy can have neither a hole nor an overlap. The copy ends at the server's
//! current end of log, which is always a transaction boundary; if it were not, the run fails
//! rather than record a position inside a transaction.

use std::collections::BTreeSet;

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Row};
use serde_json::{Map, Value, json};

use super::binlog::GtidState;
use super::capture_read::Capture;
use super::{My, Server, server};
use crate::engine::filter::Filters;
use crate::engine::{CopyOptions, SourceError, TakenCopy};
use crate::repo::kinds::CopyKind;
use crate::repo::status::{CopyRecord, LogPosition, LogRange, ServerIdentity};
use crate::repo::writer::CopyWriter;

/// The server id cairn reads the log with when none is configured: in a range real replicas
/// rarely use, and different for each source name, so two sources on one server don't collide.
pub fn default_replica_server_id(source: &str) -> u32 {
    let hash = source
        .bytes()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    4_000_000_000 + hash % 200_000_000
}

/// The identity recorded in copies (the same text full copies record).
pub fn identity(server: &Server) -> String {
    server
        .uuid
        .clone()
        .unwrap_or_else(|| format!("server_id {}", server.server_id))
}

/// Checks that the server can serve an incremental from `file:position`.
async fn preflight(
    my: &My,
    conn: &mut Conn,
    server: &Server,
    source_name: &str,
    parent: &CopyRecord,
    file: &str,
    position: u64,
) -> Result<(), SourceError> {
    let settings: Row = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image")
        .await
        .map_err(|e| my.error("reading the binary log settings", e))?
        .ok_or_else(|| SourceError::Damaged("the server returned no binary log settings".into()))?;
    let log_bin: i64 = settings.get(0).unwrap_or(0);
    let format: String = settings.get(1).unwrap_or_default();
    let image: String = settings.get(2).unwrap_or_default();
    let mut wrong = Vec::new();
    if log_bin != 1 {
        wrong.push("log_bin is OFF (start the server with log-bin)".to_string());
    }
    if !format.eq_ignore_ascii_case("ROW") {
        wrong.push(format!("binlog_format is {format}, needs ROW"));
    }
    if !image.eq_ignore_ascii_case("FULL") {
        wrong.push(format!("binlog_row_image is {image}, needs FULL"));
    }
    if server.mariadb {
        let compressed: Option<i64> = conn.query_first("SELECT @@log_bin_compress").await.ok().flatten();
        if compressed == Some(1) {
            wrong.push("log_bin_compress is ON; cairn reads uncompressed binary logs only".into());
        }
    }
    if !wrong.is_empty() {
        return Err(SourceError::Unsupported(format!(
            "source {source_name} ({}): cannot take incremental copies: {}",
            my.name,
            wrong.join("; ")
        )));
    }
    let recorded = &parent.server.id;
    if *recorded != identity(server) {
        return Err(SourceError::LogGap {
            source_name: source_name.to_string(),
            parent: parent.id.clone(),
            needed: format!("{file}:{position} on {recorded}"),
            detail: format!(
                "the source is now {} (a failover or a rebuilt server); its log files are not the parent's",
                identity(server)
            ),
        });
    }
    let logs: Vec<(String, u64)> = conn
        .query_map("SHOW BINARY LOGS", |row: Row| {
            (
                row.get::<String, _>(0).unwrap_or_default(),
                row.get::<u64, _>(1).unwrap_or(0),
            )
        })
        .await
        .map_err(|e| my.error("listing the binary logs (SHOW BINARY LOGS needs REPLICATION CLIENT)", e))?;
    match logs.iter().find(|(name, _)| name == file) {
        None => Err(SourceError::LogGap {
            source_name: source_name.to_string(),
            parent: parent.id.clone(),
            needed: format!("{file}:{position}"),
            detail: format!(
                "{file} is no longer on the server (it has {})",
                match (logs.first(), logs.last()) {
                    (Some(first), Some(last)) => format!("{} to {}", first.0, last.0),
                    _ => "no binary logs".to_string(),
                }
            ),
        }),
        Some((_, size)) if *size < position => Err(SourceError::LogGap {
            source_name: source_name.to_string(),
            parent: parent.id.clone(),
            needed: format!("{file}:{position}"),
            detail: format!("{file} holds only {size} bytes: it is not the file the parent read"),
        }),
        Some(_) => Ok(()),
    }
}

/// The databases whose events an incremental after `parent` keeps; `None` keeps all.
///
/// Only the database the URL names, and only when the chain holds nothing else: the parent is
/// a full copy of that database alone, or an incremental that kept only its events. A source of
/// a whole server, or a chain whose full copy holds more, keeps everything.
fn log_scope(url_database: Option<String>, parent: &CopyRecord) -> Option<BTreeSet<String>> {
    let database = url_database.filter(|d| !d.contains(['*', '?']))?;
    let narrow = match parent.kind {
        CopyKind::Full => parent
            .details
            .get("filters")
            .and_then(|f| serde_json::from_value::<Filters>(f.clone()).ok())
            .is_some_and(|f| f.include_schemas == [database.clone()]),
        CopyKind::Incremental => parent.details.get("databases") == Some(&json!([database])),
    };
    narrow.then(|| BTreeSet::from([database]))
}

/// Where an incremental continues, with the session that checked it.
pub(super) struct Checked {
    pub conn: Conn,
    pub server: Server,
    pub file: String,
    pub position: u64,
    pub gtids: GtidState,
    pub replica_id: u32,
}

/// Everything an incremental checks before it reads the log: the parent's position, the
/// server's settings and identity, the parent's log file still there, the replica server id
/// free. Read-only; shared by the copy and by dry runs.
///
/// # Errors
/// [`SourceError::LogGap`], [`SourceError::Unsupported`] or the server's error.
pub(super) async fn check_incremental(
    my: &My,
    source_name: &str,
    options: &CopyOptions,
    parent: &CopyRecord,
) -> Result<Checked, SourceError> {
    let LogPosition::Mysql {
        file: start_file,
        position: start_position,
        gtid: start_gtid,
    } = &parent.log_range.end
    else {
        return Err(SourceError::Unsupported(format!(
            "copy {} is not a MySQL/MariaDB copy; an incremental cannot continue from it",
            parent.id
        )));
    };
    if start_file.is_empty() {
        return Err(SourceError::Unsupported(format!(
            "source {source_name}: copy {} recorded no binary log position (the binary log was off when it was \
             taken); take a full copy",
            parent.id
        )));
    }
    let mut conn = my.connect(None).await?;
    let server = server(my, &mut conn).await?;
    preflight(my, &mut conn, &server, source_name, parent, start_file, *start_position).await?;
    let gtids = GtidState::parse(start_gtid.as_deref().unwrap_or_default())
        .map_err(|e| SourceError::Damaged(format!("copy {}: recorded GTID position: {e}", parent.id)))?;
    let replica_id = options
        .mysql
        .replica_server_id
        .unwrap_or_else(|| default_replica_server_id(source_name));
    if u64::from(replica_id) == server.server_id {
        return Err(SourceError::Unsupported(format!(
            "source {source_name}: replica-server-id {replica_id} is the source's own server_id; choose another"
        )));
    }
    // A real replica with the same id would be disconnected by the server when cairn connects.
    if let Ok(replicas) = conn.query::<Row, _>("SHOW SLAVE HOSTS").await {
        for replica in replicas {
            let id: u64 = replica.get(0).unwrap_or(0);
            if id == u64::from(replica_id) {
                let host: String = replica.get(1).unwrap_or_default();
                return Err(SourceError::Unsupported(format!(
                    "source {source_name}: replica-server-id {replica_id} is used by a replica of this server ({host}); \
                     set another replica-server-id for this source"
                )));
            }
        }
    }
    Ok(Checked {
        conn,
        server,
        file: start_file.clone(),
        position: *start_position,
        gtids,
        replica_id,
    })
}

/// Takes the incremental copy after `parent`.
pub(super) async fn incremental_copy(
    my: &My,
    source_name: &str,
    writer: &CopyWriter,
    options: &CopyOptions,
    parent: &CopyRecord,
) -> Result<TakenCopy, SourceError> {
    let Checked {
        mut conn,
        server,
        file: start_file,
        position: start_position,
        gtids,
        replica_id,
    } = check_incremental(my, source_name, options, parent).await?;
    if server.mariadb {
        // Without it, MariaDB replaces its own events (GTIDs, annotations) by dummies.
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(|e| my.error("preparing to read the binary log", e))?;
    }
    tracing::info!(
        "{source_name}: reading the binary log from {start_file}:{start_position} as replica server id {replica_id}"
    );
    let request = BinlogStreamRequest::new(replica_id)
        .with_filename(start_file.as_bytes())
        .with_pos(start_position)
        .with_non_blocking();
    let mut stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| my.error("requesting the binary log (needs REPLICATION SLAVE)", e))?;

    let databases = log_scope(my.url.database(), parent);
    match &databases {
        Some(names) => tracing::info!(
            "{source_name}: keeping the events of {} only",
            names.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        None => tracing::info!("{source_name}: keeping the events of every database"),
    }
    let mut capture = Capture::new(
        source_name,
        writer,
        &server,
        databases.clone(),
        gtids,
        start_file,
        start_position,
    );
    while let Some(next) = stream.next().await {
        let event = next.map_err(|e| my.error("reading the binary log", e))?;
        capture.read(&event).await?;
    }
    let _ = stream.close().await;
    let read = capture.finish(my).await?;
    tracing::info!(
        "{source_name}: {} stored, {} of other databases left out, up to {}:{}",
        crate::text::count(read.counts.committed, "transaction"),
        crate::text::count(read.counts.skipped_transactions, "transaction"),
        read.file,
        read.position
    );
    let counts = &read.counts;
    let end = LogPosition::Mysql {
        file: read.file.clone(),
        position: read.position,
        gtid: (!read.gtids.is_empty()).then(|| read.gtids.to_string()),
    };
    let mut details = Map::new();
    details.insert("vendor".into(), json!(if server.mariadb { "mariadb" } else { "mysql" }));
    details.insert("server_id".into(), json!(server.server_id));
    details.insert("replica_server_id".into(), json!(replica_id));
    details.insert("events".into(), json!(counts.events));
    details.insert("transactions".into(), json!(counts.committed));
    details.insert("raw_bytes".into(), json!(counts.raw_bytes));
    details.insert("annotations_left_out".into(), json!(counts.omitted));
    if let Some(mixed) = read.mixed_statements {
        details.insert("databases".into(), json!(databases));
        details.insert("skipped_transactions".into(), json!(counts.skipped_transactions));
        details.insert("skipped_events".into(), json!(counts.skipped_events));
        details.insert("mixed_statements".into(), json!(mixed));
    }
    if let (Some(first), Some(last)) = (counts.first_at, counts.last_at) {
        details.insert("first_event_at".into(), json!(timestamp(first)));
        details.insert("last_event_at".into(), json!(timestamp(last)));
    }
    details.insert("binlog_files".into(), Value::Array(read.files));
    Ok(TakenCopy {
        log_range: LogRange {
            start: parent.log_range.end.clone(),
            end,
        },
        server: ServerIdentity {
            id: identity(&server),
            version: server.version.clone(),
        },
        details,
    })
}

/// Seconds since the epoch as RFC 3339.
pub fn timestamp(seconds: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(seconds), 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}
