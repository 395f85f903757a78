//! The consistent point of a full copy: the server's settings, its binary log coordinates, and
//! the snapshot every worker starts there (under a brief global read lock, or MariaDB's
//! lock-free consistent snapshot).

use super::*;

/// How long one request for the global read lock may wait before it is withdrawn and retried.
pub(super) const FTWRL_ATTEMPT: Duration = Duration::from_secs(1);

/// The server's flavour, which decides the statements a copy uses.
#[derive(Debug, Clone)]
pub(super) struct Server {
    pub(super) version: String,
    pub(super) mariadb: bool,
    /// (major, minor) of the version.
    pub(super) release: (u32, u32),
    pub(super) server_id: u64,
    pub(super) uuid: Option<String>,
    pub(super) log_bin: bool,
}

pub(super) async fn server(my: &My, conn: &mut Conn) -> Result<Server, SourceError> {
    let (version, comment, server_id, log_bin): (String, String, u64, u64) = conn
        .query_first("SELECT VERSION(), @@version_comment, @@server_id, @@log_bin")
        .await
        .map_err(|e| my.error("reading the server's version", e))?
        .ok_or_else(|| SourceError::Unsupported("the server returned no version".into()))?;
    let mariadb = version.contains("MariaDB") || comment.contains("MariaDB");
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let release = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let uuid = if mariadb {
        None
    } else {
        conn.query_first::<String, _>("SELECT @@server_uuid")
            .await
            .ok()
            .flatten()
    };
    Ok(Server {
        version,
        mariadb,
        release,
        server_id,
        uuid,
        log_bin: log_bin == 1,
    })
}

/// Binary log coordinates and GTID state, read while commits are blocked.
pub(super) async fn coordinates(my: &My, conn: &mut Conn, server: &Server) -> Result<LogPosition, SourceError> {
    if !server.log_bin {
        tracing::warn!(
            "{}: the binary log is off: the copy records no log position, and incremental copies and replicas cannot continue from it",
            my.name
        );
        return Ok(LogPosition::Mysql {
            file: String::new(),
            position: 0,
            gtid: None,
        });
    }
    // MySQL 8.2 renamed the statement; MariaDB keeps the old name.
    let statement = if !server.mariadb && server.release >= (8, 2) {
        "SHOW BINARY LOG STATUS"
    } else {
        "SHOW MASTER STATUS"
    };
    let row: Option<Row> = conn
        .query_first(statement)
        .await
        .map_err(|e| my.error("reading the binary log position", e))?;
    let row = row.ok_or_else(|| SourceError::Database {
        database: my.name.clone(),
        doing: "reading the binary log position".into(),
        detail: format!("{statement} returned nothing"),
    })?;
    let file: String = row.get(0).unwrap_or_default();
    let position: u64 = row.get(1).unwrap_or_default();
    let gtid_query = if server.mariadb {
        "SELECT @@gtid_binlog_pos"
    } else {
        "SELECT @@gtid_executed"
    };
    let gtid: Option<String> = conn
        .query_first(gtid_query)
        .await
        .map_err(|e| my.error("reading the GTID state", e))?;
    Ok(LogPosition::Mysql {
        file,
        position,
        gtid: gtid.filter(|g| !g.is_empty()),
    })
}

/// Refuses to start while a query runs longer than `limit`: the global read lock would wait for
/// it, and every writer would wait for the lock.
pub(super) async fn guard_long_queries(my: &My, conn: &mut Conn, limit: Duration) -> Result<(), SourceError> {
    let running: Vec<(u64, String, u64, Option<String>)> = conn
        .query(format!(
            "SELECT ID, USER, TIME, LEFT(INFO, 200) FROM information_schema.PROCESSLIST
             WHERE COMMAND NOT IN ('Sleep', 'Binlog Dump', 'Binlog Dump GTID', 'Daemon', 'Slave_IO', 'Slave_SQL')
               AND INFO IS NOT NULL AND ID <> CONNECTION_ID() AND TIME >= {}",
            limit.as_secs()
        ))
        .await
        .map_err(|e| my.error("checking for long-running queries", e))?;
    if running.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = running
        .iter()
        .map(|(id, user, time, info)| format!("id {id} of {user} running {time}s: {}", info.as_deref().unwrap_or("")))
        .collect();
    Err(SourceError::Locked {
        database: my.name.clone(),
        doing: "checking for long-running queries before the global read lock".into(),
        detail: format!(
            "{}; the lock would stall every writer until they end (the limit is lock-wait-seconds = {})",
            list.join("; "),
            limit.as_secs()
        ),
    })
}

/// Starts every worker's snapshot while the global read lock holds commits still, and reads the
/// coordinates under the same lock; returns them and how long writes were blocked.
pub(super) async fn locked_snapshot(
    my: &My,
    server: &Server,
    workers: &mut [Conn],
    lock_wait: u64,
) -> Result<(LogPosition, Duration), SourceError> {
    let mut lock = my.connect(None).await?;
    lock.query_drop(format!("SET SESSION lock_wait_timeout = {lock_wait}"))
        .await
        .map_err(|e| my.error("preparing the lock session", e))?;
    // Flushing first without the lock makes the locked flush quick.
    lock.query_drop("FLUSH NO_WRITE_TO_BINLOG TABLES")
        .await
        .map_err(|e| my.error("flushing tables (needs RELOAD)", e))?;
    // A pending global read lock blocks new statements while it waits for running ones; a
    // running statement waiting for a row lock held by a blocked transaction makes a cycle the
    // server does not detect. Short attempts break it: each timeout lets the writers through.
    // Writers are blocked from the first request on, so the stall is measured from there.
    lock.query_drop(format!("SET SESSION lock_wait_timeout = {}", FTWRL_ATTEMPT.as_secs()))
        .await
        .map_err(|e| my.error("preparing the lock session", e))?;
    let stalled = Instant::now();
    let deadline = stalled + Duration::from_secs(lock_wait);
    let mut retry = Retry::until(deadline, Duration::from_millis(100));
    loop {
        match lock.query_drop("FLUSH TABLES WITH READ LOCK").await {
            Ok(()) => break,
            Err(mysql_async::Error::Server(e)) if e.code == 1205 && Instant::now() < deadline => {
                tracing::info!(
                    "the global read lock was not granted within {}s (attempt {}); trying again",
                    FTWRL_ATTEMPT.as_secs(),
                    retry.failed() + 1
                );
                if !retry.wait().await {
                    return Err(my.error(
                        "taking the global read lock (needs RELOAD)",
                        mysql_async::Error::Server(e),
                    ));
                }
            }
            Err(e) => return Err(my.error("taking the global read lock (needs RELOAD)", e)),
        }
    }
    let snapshot = async {
        let position = coordinates(my, &mut lock, server).await?;
        for conn in workers.iter_mut() {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                .await
                .map_err(|e| my.error("starting a worker's snapshot", e))?;
        }
        Ok::<LogPosition, SourceError>(position)
    }
    .await;
    let unlocked = lock.query_drop("UNLOCK TABLES").await;
    let write_stall = stalled.elapsed();
    let position = snapshot?;
    unlocked.map_err(|e| my.error("releasing the global read lock", e))?;
    let _ = lock.disconnect().await;
    Ok((position, write_stall))
}

/// MariaDB's lock-free snapshot: the transaction itself says which binlog position it matches.
pub(super) async fn lock_free_snapshot(my: &My, conn: &mut Conn, server: &Server) -> Result<LogPosition, SourceError> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(|e| my.error("starting the snapshot", e))?;
    if !server.log_bin {
        return coordinates(my, conn, server).await;
    }
    let status: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(|e| my.error("reading the snapshot's binlog position", e))?;
    let value = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let file = value("binlog_snapshot_file").unwrap_or_default();
    let position: u64 = value("binlog_snapshot_position")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let gtid: Option<String> = conn
        .query_first(format!("SELECT BINLOG_GTID_POS({}, {position})", quote_literal(&file)))
        .await
        .map_err(|e| my.error("reading the snapshot's GTID position", e))?;
    Ok(LogPosition::Mysql {
        file,
        position,
        gtid: gtid.filter(|g| !g.is_empty()),
    })
}

/// The server's identity as a key-safe folder name: log file names restart on another server.
pub fn identity_folder(server: &Server) -> String {
    match &server.uuid {
        Some(uuid) => uuid.clone(),
        None => format!("server-id-{}", server.server_id),
    }
}
