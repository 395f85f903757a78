//! MySQL and MariaDB: consistent, parallel full copies and their restore (see docs/mysql.md).
//!
//! The copy blocks DDL for its whole length (MariaDB `BACKUP STAGE BLOCK_DDL`, MySQL `LOCK
//! INSTANCE FOR BACKUP`), takes the global read lock only while it reads the binary log
//! coordinates and every worker starts `START TRANSACTION WITH CONSISTENT SNAPSHOT`, then
//! releases it: writes stall for milliseconds, and every worker reads the same point in time.
//! Rows travel in the `LOAD DATA` text format, streamed through zstd and MD5 to the destination.

mod attribution;
pub mod binlog;
mod capture;
mod format;
mod inventory;
mod preflight;
mod replay;
mod schema;
mod scope;
mod segment;
mod target;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row, Value};
use serde_json::{Map, json};
use tokio::io::AsyncWriteExt;

use crate::engine::pool::{self, Queue};
use crate::engine::{CopyOptions, Source, SourceError, SourceSpec, SourceUrl, TakenCopy};
use crate::progress::Progress;
use crate::repo::reader as stored;
use crate::repo::status::{LogPosition, LogRange, ServerIdentity};
use crate::repo::writer::CopyWriter;
use crate::retry::Retry;
use crate::streams::{Counters, Counting};

pub use target::MysqlTarget;

/// How often long work logs a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How long one request for the global read lock may wait before it is withdrawn and retried.
const FTWRL_ATTEMPT: Duration = Duration::from_secs(1);
/// Bytes of formatted rows a worker gathers before handing them to the compressor.
const ROW_BLOCK: usize = 256 * 1024;

/// `` `identifier` ``, with embedded backticks doubled.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `'literal'` for SQL text, escaping what MySQL's default sql_mode treats specially.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// A server cairn talks to, for connecting and for naming it in errors.
#[derive(Debug, Clone)]
pub struct My {
    url: SourceUrl,
    name: String,
}

impl My {
    pub fn new(url: SourceUrl) -> Self {
        let name = url.to_string();
        My { url, name }
    }

    /// Opens a session; `database` overrides the URL's.
    ///
    /// # Errors
    /// [`SourceError::Unreachable`], [`SourceError::Authentication`] or a database error.
    pub async fn connect(&self, database: Option<&str>) -> Result<Conn, SourceError> {
        self.connect_tuned(database, |builder| builder).await
    }

    /// [`My::connect`] with driver options adjusted by `tune`.
    ///
    /// # Errors
    /// As [`My::connect`].
    pub async fn connect_tuned(
        &self,
        database: Option<&str>,
        tune: impl FnOnce(OptsBuilder) -> OptsBuilder,
    ) -> Result<Conn, SourceError> {
        let (mut url, ssl) = ssl_opts(self.url.without_password())
            .map_err(|e| SourceError::Unsupported(format!("{}: {e}", self.name)))?;
        // The driver only knows mysql://; mariadb:// is the same protocol.
        let _ = url.set_scheme("mysql");
        let opts = Opts::from_url(url.as_str())
            .map_err(|e| SourceError::Unsupported(format!("{}: not a usable MySQL URL: {e}", self.name)))?;
        if ssl.is_some() {
            // The driver's TLS asks rustls for the process's crypto provider; there are two in
            // the build, so name one. Installing twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut builder = OptsBuilder::from_opts(opts)
            .ssl_opts(ssl)
            .pass(self.url.password.as_ref().map(|p| p.expose().to_string()))
            .prefer_socket(false)
            .wait_timeout(Some(28_800));
        if let Some(database) = database {
            builder = builder.db_name((!database.is_empty()).then(|| database.to_string()));
        }
        match Conn::new(tune(builder)).await {
            Ok(conn) => Ok(conn),
            Err(e) => Err(crate::engine::explain_unreachable(&self.url, self.classify("connecting", true, e)).await),
        }
    }

    /// Classifies a driver error by server error code and names the server and the work.
    pub fn error(&self, doing: &str, error: mysql_async::Error) -> SourceError {
        self.classify(doing, false, error)
    }

    /// [`My::error`], for an error while `connecting` or on an established session.
    fn classify(&self, doing: &str, connecting: bool, error: mysql_async::Error) -> SourceError {
        let database = self.name.clone();
        let doing = doing.to_string();
        match error {
            mysql_async::Error::Server(server) => {
                let detail = format!("{} (error {})", server.message, server.code);
                match server.code {
                    1045 => SourceError::Authentication { database, detail },
                    1044 | 1142 | 1143 | 1227 | 1370 | 1419 => SourceError::Privilege {
                        database,
                        doing,
                        detail,
                    },
                    1205 | 1213 | 1223 => SourceError::Locked {
                        database,
                        doing,
                        detail,
                    },
                    1049 => SourceError::NoDatabase { database, detail },
                    1040 | 1203 => SourceError::Unreachable { database, detail },
                    _ => SourceError::Database {
                        database,
                        doing,
                        detail,
                    },
                }
            }
            mysql_async::Error::Io(mysql_async::IoError::Tls(e)) => SourceError::Tls {
                database,
                detail: e.to_string(),
            },
            // rustls reports certificate problems as I/O errors wrapping its own error.
            mysql_async::Error::Io(mysql_async::IoError::Io(e))
                if e.get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
            {
                SourceError::Tls {
                    database,
                    detail: e.to_string(),
                }
            }
            mysql_async::Error::Io(e) if connecting => SourceError::Unreachable {
                database,
                detail: match match &e {
                    mysql_async::IoError::Io(io) => crate::engine::io_hint(io),
                    _ => None,
                } {
                    Some(hint) => format!("{e} ({hint})"),
                    None => e.to_string(),
                },
            },
            mysql_async::Error::Driver(e) if connecting => SourceError::Unreachable {
                database,
                detail: e.to_string(),
            },
            other => SourceError::Database {
                database,
                doing,
                detail: other.to_string(),
            },
        }
    }
}

/// TLS settings in MySQL's client terms, taken out of the URL: `ssl-mode=DISABLED|REQUIRED|
/// VERIFY_CA|VERIFY_IDENTITY` and `ssl-ca=/path/ca.pem` (default: no TLS). `REQUIRED` encrypts
/// without checking the certificate, as the mysql client does.
fn ssl_opts(url: &url::Url) -> Result<(url::Url, Option<mysql_async::SslOpts>), String> {
    let mut mode: Option<String> = None;
    let mut ca: Option<std::path::PathBuf> = None;
    let mut kept: Vec<(String, String)> = Vec::new();
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "ssl-mode" | "ssl_mode" => mode = Some(value.to_ascii_uppercase()),
            "ssl-ca" | "ssl_ca" => ca = Some(value.as_ref().into()),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    let mut plain = url.clone();
    if kept.is_empty() {
        plain.set_query(None);
    } else {
        plain.query_pairs_mut().clear().extend_pairs(kept);
    }
    let roots = |opts: mysql_async::SslOpts| match &ca {
        Some(path) => opts.with_root_certs(vec![path.clone().into()]),
        None => opts,
    };
    let ssl = match mode.as_deref() {
        None | Some("DISABLED") => None,
        Some("PREFERRED") => return Err("ssl-mode=PREFERRED is not supported: use REQUIRED or VERIFY_IDENTITY".into()),
        Some("REQUIRED") => Some(
            mysql_async::SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        Some("VERIFY_CA") => Some(roots(mysql_async::SslOpts::default()).with_danger_skip_domain_validation(true)),
        Some("VERIFY_IDENTITY") => Some(roots(mysql_async::SslOpts::default())),
        Some(other) => {
            return Err(format!(
                "ssl-mode={other}: expected DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY"
            ));
        }
    };
    Ok((plain, ssl))
}

/// The server's flavour, which decides the statements a copy uses.
#[derive(Debug, Clone)]
struct Server {
    version: String,
    mariadb: bool,
    /// (major, minor) of the version.
    release: (u32, u32),
    server_id: u64,
    uuid: Option<String>,
    log_bin: bool,
}

async fn server(my: &My, conn: &mut Conn) -> Result<Server, SourceError> {
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
async fn coordinates(my: &My, conn: &mut Conn, server: &Server) -> Result<LogPosition, SourceError> {
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
async fn guard_long_queries(my: &My, conn: &mut Conn, limit: Duration) -> Result<(), SourceError> {
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
async fn locked_snapshot(
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
async fn lock_free_snapshot(my: &My, conn: &mut Conn, server: &Server) -> Result<LogPosition, SourceError> {
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

/// Reads a MySQL or MariaDB source.
#[derive(Debug, Clone)]
pub struct MysqlSource {
    spec: SourceSpec,
    my: My,
}

impl MysqlSource {
    pub fn new(spec: SourceSpec) -> Self {
        let my = My::new(spec.url.clone());
        MysqlSource { spec, my }
    }
}

/// Session settings of every dump connection: times in UTC, bytes as stored.
const DUMP_SESSION: [&str; 2] = [
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SET SESSION time_zone = '+00:00', NAMES binary, SESSION net_write_timeout = 3600, SESSION net_read_timeout = 3600",
];

impl MysqlSource {
    async fn worker(
        &self,
        mut conn: Conn,
        queue: Queue<inventory::Chunk>,
        writer: CopyWriter,
        progress: Arc<Progress>,
        checksums: Arc<Mutex<Checksums>>,
    ) -> Result<(u64, u64), SourceError> {
        let my = &self.my;
        let (mut rows, mut bytes) = (0u64, 0u64);
        while let Some(chunk) = queue.next() {
            let doing = format!("reading {} (chunk {})", chunk.table.qualified(), chunk.index);
            let (pipe_writer, pipe_reader) = tokio::io::duplex(ROW_BLOCK * 2);
            let counters = Counters::default();
            let path = format!(
                "data/{}/{:05}.tsv",
                stored::table_folder(
                    &crate::storage::md5_hex(format!("{}.{}", chunk.table.database, chunk.table.name).as_bytes())[..8],
                    &chunk.table.database,
                    &chunk.table.name,
                ),
                chunk.index
            );
            let table = chunk.table.clone();
            let condition = chunk.condition.clone();
            let counted = counters.clone();
            let upload = writer.put_file(&path, Counting::new(pipe_reader, counters.clone()), move || {
                stored::data_details(
                    ("database", &table.database),
                    &table.name,
                    json!(table.columns),
                    &counted,
                    condition,
                )
            });
            let read = read_rows(my, &mut conn, &chunk, pipe_writer, &doing);
            let (uploaded, read) = tokio::join!(upload, read);
            read?;
            uploaded?;
            rows += counters.newlines();
            bytes += counters.bytes();
            progress.done(counters.bytes());
        }
        // Still in the copy's snapshot: CHECKSUM TABLE there sees exactly the rows copied.
        loop {
            let Some(table) = checksums
                .lock()
                .expect("checksum queue lock poisoned")
                .pending
                .pop_front()
            else {
                break;
            };
            let doing = format!("checksumming {}", table.qualified());
            let row: Option<(Vec<u8>, Option<u64>)> = conn
                .query_first(format!("CHECKSUM TABLE {}", table.qualified()))
                .await
                .map_err(|e| my.error(&doing, e))?;
            let value = row.and_then(|(_, value)| value).ok_or_else(|| SourceError::Database {
                database: my.name.clone(),
                doing,
                detail: "the server gave no checksum".into(),
            })?;
            checksums
                .lock()
                .expect("checksum queue lock poisoned")
                .values
                .entry(table.database.clone())
                .or_default()
                .insert(table.name.clone(), value);
        }
        conn.query_drop("COMMIT")
            .await
            .map_err(|e| my.error("ending a worker's snapshot", e))?;
        let _ = conn.disconnect().await;
        Ok((rows, bytes))
    }
}

/// Tables still to checksum, and the checksums taken (database → table → value).
#[derive(Debug, Default)]
struct Checksums {
    pending: VecDeque<inventory::Table>,
    values: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
}

/// Streams a chunk's rows, formatted, into `out`; closes it at the end.
async fn read_rows(
    my: &My,
    conn: &mut Conn,
    chunk: &inventory::Chunk,
    mut out: tokio::io::DuplexStream,
    doing: &str,
) -> Result<(), SourceError> {
    let mut result = conn
        .query_iter(chunk.select_sql())
        .await
        .map_err(|e| my.error(doing, e))?;
    let mut block = Vec::with_capacity(ROW_BLOCK + 4096);
    let no_columns = chunk.table.columns.is_empty();
    while let Some(row) = result.next().await.map_err(|e| my.error(doing, e))? {
        let values = row.unwrap();
        if no_columns {
            block.push(b'\n');
        } else {
            format::write_row(
                &mut block,
                values.iter().map(|v| match v {
                    Value::NULL => None,
                    Value::Bytes(bytes) => Some(bytes.as_slice()),
                    // The text protocol sends every value as bytes.
                    _ => None,
                }),
            );
        }
        if block.len() >= ROW_BLOCK {
            out.write_all(&block).await.map_err(|e| SourceError::Database {
                database: my.name.clone(),
                doing: doing.to_string(),
                detail: format!("the upload stopped: {e}"),
            })?;
            block.clear();
        }
    }
    out.write_all(&block).await.map_err(|e| SourceError::Database {
        database: my.name.clone(),
        doing: doing.to_string(),
        detail: format!("the upload stopped: {e}"),
    })?;
    out.shutdown().await.ok();
    Ok(())
}

async fn read_schema(
    my: &My,
    conn: &mut Conn,
    tables: &[inventory::Table],
    filters: &crate::engine::filter::Filters,
) -> Result<schema::Schema, SourceError> {
    conn.query_drop("SET SESSION sql_mode = '', NAMES utf8mb4, SESSION sql_quote_show_create = 1")
        .await
        .map_err(|e| my.error("preparing the schema session", e))?;
    let mut out = schema::Schema::default();
    let (sql_mode, time_zone): (String, String) = conn
        .query_first("SELECT @@GLOBAL.sql_mode, @@GLOBAL.time_zone")
        .await
        .map_err(|e| my.error("reading sql_mode", e))?
        .unwrap_or_default();
    out.sql_mode = sql_mode;
    out.time_zone = time_zone;
    let databases: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA
             WHERE SCHEMA_NAME NOT IN ({}) ORDER BY SCHEMA_NAME",
            inventory::SYSTEM_DATABASES
        ))
        .await
        .map_err(|e| my.error("listing databases", e))?;
    for (name, charset, collation) in databases {
        if filters.schema_included(&name) {
            out.databases.push(schema::Database {
                name,
                charset,
                collation,
            });
        }
    }
    let mut all_tables: Vec<(String, String)> = tables.iter().map(|t| (t.database.clone(), t.name.clone())).collect();
    // Tables whose data is left out keep their definition.
    let listed: Vec<(String, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'
             AND TABLE_SCHEMA NOT IN ({}) ORDER BY 1, 2",
            inventory::SYSTEM_DATABASES
        ))
        .await
        .map_err(|e| my.error("listing tables", e))?;
    for (db, name) in listed {
        if filters.table_included(&db, &name) && !all_tables.contains(&(db.clone(), name.clone())) {
            all_tables.push((db, name));
        }
    }
    all_tables.sort();
    for (db, name) in all_tables {
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let row: Option<(String, String)> = conn
            .query_first(format!("SHOW CREATE TABLE {qualified}"))
            .await
            .map_err(|e| my.error(&format!("reading the definition of {qualified}"), e))?;
        let create = row.map(|(_, create)| create).unwrap_or_default();
        let (create, indexes, foreign_keys) = schema::split_create_table(&create);
        out.tables.push(schema::TableDef {
            database: db,
            name,
            create,
            indexes,
            foreign_keys,
        });
    }
    let views: Vec<(String, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA NOT IN ({}) ORDER BY 1, 2",
            inventory::SYSTEM_DATABASES
        ))
        .await
        .map_err(|e| my.error("listing views", e))?;
    for (db, name) in views.into_iter().filter(|(db, name)| filters.table_included(db, name)) {
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let row: Option<Row> = conn
            .query_first(format!("SHOW CREATE VIEW {qualified}"))
            .await
            .map_err(|e| my.error(&format!("reading the definition of view {qualified}"), e))?;
        if let Some(row) = row {
            out.objects.push(schema::Object {
                database: db,
                kind: "view".into(),
                name,
                create: row.get(1).unwrap_or_default(),
                sql_mode: String::new(),
                character_set_client: row.get(2).unwrap_or_else(|| "utf8mb4".into()),
                collation_connection: row.get(3).unwrap_or_else(|| "utf8mb4_general_ci".into()),
                time_zone: None,
            });
        }
    }
    let routines: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT ROUTINE_SCHEMA, ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES
             WHERE ROUTINE_SCHEMA NOT IN ({}) ORDER BY ROUTINE_TYPE DESC, 1, 3",
            inventory::SYSTEM_DATABASES
        ))
        .await
        .map_err(|e| my.error("listing routines", e))?;
    for (db, kind, name) in routines.into_iter().filter(|(db, _, _)| filters.schema_included(db)) {
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let row: Option<Row> = conn
            .query_first(format!("SHOW CREATE {kind} {qualified}"))
            .await
            .map_err(|e| my.error(&format!("reading {} {qualified}", kind.to_lowercase()), e))?;
        if let Some(row) = row {
            out.objects.push(schema::Object {
                database: db,
                kind: kind.to_lowercase(),
                name,
                sql_mode: row.get(1).unwrap_or_default(),
                create: row.get::<Option<String>, _>(2).flatten().unwrap_or_default(),
                character_set_client: row.get(3).unwrap_or_else(|| "utf8mb4".into()),
                collation_connection: row.get(4).unwrap_or_else(|| "utf8mb4_general_ci".into()),
                time_zone: None,
            });
        }
    }
    let triggers: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS
             WHERE TRIGGER_SCHEMA NOT IN ({}) ORDER BY 1, EVENT_OBJECT_TABLE, ACTION_ORDER",
            inventory::SYSTEM_DATABASES
        ))
        .await
        .map_err(|e| my.error("listing triggers", e))?;
    for (db, name, table) in triggers
        .into_iter()
        .filter(|(db, _, table)| filters.table_included(db, table))
    {
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let row: Option<Row> = conn
            .query_first(format!("SHOW CREATE TRIGGER {qualified}"))
            .await
            .map_err(|e| my.error(&format!("reading trigger {qualified} on {table}"), e))?;
        if let Some(row) = row {
            out.objects.push(schema::Object {
                database: db,
                kind: "trigger".into(),
                name,
                sql_mode: row.get(1).unwrap_or_default(),
                create: row.get(2).unwrap_or_default(),
                character_set_client: row.get(3).unwrap_or_else(|| "utf8mb4".into()),
                collation_connection: row.get(4).unwrap_or_else(|| "utf8mb4_general_ci".into()),
                time_zone: None,
            });
        }
    }
    let events: Vec<(String, String)> = conn
        .query(format!(
            "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA NOT IN ({}) ORDER BY 1, 2",
            inventory::SYSTEM_DATABASES
        ))
        .await
        .map_err(|e| my.error("listing events", e))?;
    for (db, name) in events.into_iter().filter(|(db, _)| filters.schema_included(db)) {
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let row: Option<Row> = conn
            .query_first(format!("SHOW CREATE EVENT {qualified}"))
            .await
            .map_err(|e| my.error(&format!("reading event {qualified}"), e))?;
        if let Some(row) = row {
            out.objects.push(schema::Object {
                database: db,
                kind: "event".into(),
                name,
                sql_mode: row.get(1).unwrap_or_default(),
                time_zone: row.get(2),
                create: row.get(3).unwrap_or_default(),
                character_set_client: row.get(4).unwrap_or_else(|| "utf8mb4".into()),
                collation_connection: row.get(5).unwrap_or_else(|| "utf8mb4_general_ci".into()),
            });
        }
    }
    Ok(out)
}

#[async_trait]
impl Source for MysqlSource {
    fn supports_incremental(&self) -> bool {
        true
    }

    async fn preflight(
        &self,
        options: &CopyOptions,
        planned: crate::engine::Planned<'_>,
    ) -> Result<Vec<String>, SourceError> {
        match planned {
            crate::engine::Planned::Full => {
                let mut conn = self.my.connect(None).await?;
                let server = server(&self.my, &mut conn).await?;
                let (_, notes) = preflight::check_full(&self.my, &self.spec, &mut conn, &server, options).await?;
                Ok(notes)
            }
            crate::engine::Planned::Incremental { parent } => {
                let checked = capture::check_incremental(&self.my, &self.spec.name, options, parent).await?;
                Ok(vec![format!(
                    "the binary log still reaches back to {}:{}; it is read as replica server id {}",
                    checked.file, checked.position, checked.replica_id
                )])
            }
        }
    }

    async fn incremental_copy(
        &self,
        writer: &CopyWriter,
        options: &CopyOptions,
        parent: &crate::repo::status::CopyRecord,
    ) -> Result<TakenCopy, SourceError> {
        capture::incremental_copy(&self.my, &self.spec.name, writer, options, parent).await
    }

    async fn full_copy(&self, writer: &CopyWriter, options: &CopyOptions) -> Result<TakenCopy, SourceError> {
        let my = &self.my;
        let mut leader = my.connect(None).await?;
        let server = server(my, &mut leader).await?;
        let lock_wait = options.lock_wait.as_secs().max(1);
        leader
            .query_drop(format!("SET SESSION lock_wait_timeout = {lock_wait}"))
            .await
            .map_err(|e| my.error("preparing the session", e))?;
        guard_long_queries(my, &mut leader, options.lock_wait).await?;
        let (tables, _) = preflight::check_full(my, &self.spec, &mut leader, &server, options).await?;
        let filters = preflight::copy_filters(&self.spec, options);
        for table in tables.iter().filter(|t| !t.transactional()) {
            tracing::warn!(
                "{}: {} uses {}, which has no snapshots: its rows are read after the global read lock is released \
                 and may not match the other tables",
                self.spec.name,
                table.qualified(),
                table.engine
            );
        }

        // DDL stays blocked for the whole copy where the server can do that.
        let ddl_block = if server.mariadb && server.release >= (10, 4) {
            Some((
                &["BACKUP STAGE START", "BACKUP STAGE BLOCK_DDL"][..],
                "BACKUP STAGE END",
            ))
        } else if !server.mariadb && server.release >= (8, 0) {
            Some((&["LOCK INSTANCE FOR BACKUP"][..], "UNLOCK INSTANCE"))
        } else {
            None
        };
        let mut ddl_blocked = false;
        if let Some((block, _)) = ddl_block {
            let mut blocked = Ok(());
            for statement in block {
                blocked = leader.query_drop(*statement).await;
                if blocked.is_err() {
                    break;
                }
            }
            match blocked {
                Ok(()) => ddl_blocked = true,
                Err(e) => {
                    let error = my.error("blocking DDL for the copy", e);
                    if matches!(error, SourceError::Privilege { .. }) {
                        tracing::warn!("{}: DDL is not blocked during the copy: {error}", self.spec.name);
                    } else {
                        return Err(error);
                    }
                }
            }
        }

        // Lock-free: one connection whose snapshot reports its own binlog position (MariaDB).
        let jobs = if options.lock_free {
            1
        } else {
            options.jobs.max(1) as usize
        };
        let mut workers = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            let mut conn = my.connect(None).await?;
            for statement in DUMP_SESSION {
                conn.query_drop(statement)
                    .await
                    .map_err(|e| my.error("preparing a worker", e))?;
            }
            workers.push(conn);
        }
        let (position, write_stall) = if options.lock_free {
            (lock_free_snapshot(my, &mut workers[0], &server).await?, Duration::ZERO)
        } else {
            locked_snapshot(my, &server, &mut workers, lock_wait).await?
        };
        tracing::info!(
            "{}: snapshot at {} (writes blocked for {:.3} ms) covering {}",
            self.spec.name,
            match &position {
                LogPosition::Mysql { file, position, .. } => format!("{file}:{position}"),
                other => format!("{other:?}"),
            },
            write_stall.as_secs_f64() * 1000.0,
            crate::text::count(tables.len() as u64, "table")
        );

        // Definitions are read while DDL is blocked, so they match the data.
        let schema = read_schema(my, &mut leader, &tables, &filters).await?;
        let schema_json = serde_json::to_vec(&schema).expect("schemas serialize");
        writer
            .put_file("schema/schema.json", std::io::Cursor::new(schema_json), || {
                Map::from_iter([("kind".to_string(), json!("schema"))])
            })
            .await?;

        let chunks = inventory::plan_chunks(my, &mut workers[0], &tables, options.chunk_bytes).await?;
        let chunk_count = chunks.len();
        let queue = Queue::new(chunks);
        let progress = Progress::new(format!("{}: copy, chunks", self.spec.name), chunk_count as u64);
        let _reporter = progress.report_every(PROGRESS_EVERY);
        let checksums = Arc::new(Mutex::new(Checksums {
            pending: if options.checksums {
                tables.iter().cloned().collect()
            } else {
                VecDeque::new()
            },
            values: Default::default(),
        }));
        let (rows, raw_bytes) = pool::run("reading data", workers, |conn| {
            let (this, queue, writer, progress, checksums) = (
                self.clone(),
                queue.clone(),
                writer.clone(),
                progress.clone(),
                checksums.clone(),
            );
            async move { this.worker(conn, queue, writer, progress, checksums).await }
        })
        .await?
        .into_iter()
        .fold((0u64, 0u64), |(rows, bytes), (r, b)| (rows + r, bytes + b));
        if ddl_blocked && let Some((_, release)) = ddl_block {
            leader
                .query_drop(release)
                .await
                .map_err(|e| my.error("releasing the DDL block", e))?;
        }
        let _ = leader.disconnect().await;

        let mut details = Map::new();
        details.insert("vendor".into(), json!(if server.mariadb { "mariadb" } else { "mysql" }));
        details.insert("server_id".into(), json!(server.server_id));
        details.insert(
            "write_stall_ms".into(),
            json!((write_stall.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0),
        );
        details.insert("ddl_blocked".into(), json!(ddl_blocked));
        details.insert("tables".into(), json!(tables.len()));
        details.insert("chunks".into(), json!(chunk_count));
        details.insert("rows".into(), json!(rows));
        details.insert("raw_bytes".into(), json!(raw_bytes));
        details.insert("jobs".into(), json!(jobs));
        details.insert("sql_mode".into(), json!(schema.sql_mode));
        if !filters.is_empty() {
            details.insert("filters".into(), json!(filters));
        }
        if options.checksums {
            let values = std::mem::take(&mut checksums.lock().expect("checksum lock poisoned").values);
            details.insert("checksums".into(), json!(values));
        }
        Ok(TakenCopy {
            log_range: LogRange {
                start: position.clone(),
                end: position,
            },
            server: ServerIdentity {
                id: server
                    .uuid
                    .clone()
                    .unwrap_or_else(|| format!("server_id {}", server.server_id)),
                version: server.version.clone(),
            },
            details,
        })
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    #[test]
    fn ssl_settings_are_taken_out_of_the_url() {
        let url =
            url::Url::parse("mysql://u@h/db?ssl-mode=verify_identity&ssl-ca=/etc/ca.pem&prefer_socket=false").unwrap();
        let (plain, ssl) = ssl_opts(&url).unwrap();
        assert_eq!(plain.as_str(), "mysql://u@h/db?prefer_socket=false");
        let ssl = ssl.expect("TLS asked for");
        assert_eq!(ssl.root_certs().len(), 1);
        assert!(!ssl.skip_domain_validation() && !ssl.accept_invalid_certs());
        assert!(
            ssl_opts(&url::Url::parse("mysql://u@h/db").unwrap())
                .unwrap()
                .1
                .is_none()
        );
        let (_, required) = ssl_opts(&url::Url::parse("mysql://u@h?ssl-mode=REQUIRED").unwrap()).unwrap();
        assert!(required.unwrap().accept_invalid_certs());
        assert!(
            ssl_opts(&url::Url::parse("mysql://u@h?ssl-mode=SOMETIMES").unwrap())
                .unwrap_err()
                .contains("SOMETIMES")
        );
    }
}
