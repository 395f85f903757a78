//! MySQL and MariaDB: consistent, parallel full copies and their restore (see docs/mysql.md).
//!
//! The copy blocks DDL for its whole length (MariaDB `BACKUP STAGE BLOCK_DDL`, MySQL `LOCK
//! INSTANCE FOR BACKUP`), takes the global read lock only while it reads the binary log
//! coordinates and every worker starts `START TRANSACTION WITH CONSISTENT SNAPSHOT`, then
//! releases it: writes stall for milliseconds, and every worker reads the same point in time.
//! Rows travel in the `LOAD DATA` text format, streamed to the copy writer (which encodes and
//! checksums them on their way to the destination).

mod accounts;
mod attribution;
pub mod binlog;
mod capture;
mod capture_read;
mod connection;
pub mod create_table;
mod digest;
mod dump;
pub mod event_table;
pub(crate) mod format;
mod inventory;
mod load;
mod load_sql;
mod preflight;
mod reach;
mod replay;
mod replica;
mod restore_session;
pub(crate) mod schema;
mod schema_dump;
mod scope;
mod segment;
mod selective;
mod snapshot;
pub(crate) mod statement_text;
mod table_snapshot;
mod target;
mod to_sql;

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
use crate::repo::file_kind::FileKind;
use crate::repo::reader as stored;
use crate::repo::status::{LogPosition, LogRange, ServerIdentity};
use crate::repo::writer::CopyWriter;
use crate::retry::Retry;
use crate::streams::Counters;

pub use connection::My;
pub use target::MysqlTarget;
pub(crate) use target::copy_schema;
// What MySQL → PostgreSQL uses of the replay: the checked chain, its changes, and what a logged
// statement names.
pub(crate) use attribution::{is_account_statement, statement_database};
pub(crate) use replay::{ChainResume, Checked as CheckedChain, check as check_chain, preview as preview_chain};
pub(crate) use replay::{LiveFeed, Wanted, first_words};
pub(crate) use table_snapshot::{SnapshotTable, TableSnapshot};
pub(crate) use to_sql::write_script;

use dump::{Checksums, DUMP_SESSION};
use schema_dump::read_schema;
use snapshot::{Server, coordinates, guard_long_queries, lock_free_snapshot, locked_snapshot, server};

/// How often long work logs a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// `` `identifier` ``, with embedded backticks doubled.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `'literal'` for SQL text, escaping what MySQL's default sql_mode treats specially.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
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

#[async_trait]
impl Source for MysqlSource {
    fn supports_incremental(&self, _options: &CopyOptions) -> bool {
        true
    }

    async fn log_reach(&self, from: &LogPosition) -> Result<Option<crate::engine::LogReach>, SourceError> {
        reach::log_reach(&self.my, from).await.map(Some)
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
        let jobs = if options.mysql.lock_free {
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
        let (position, write_stall) = if options.mysql.lock_free {
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
                FileKind::Schema.into_details()
            })
            .await?;

        // A whole server's copy holds its accounts unless `users = false`; one database's on
        // request.
        let database = self.spec.url.database();
        if options.users.unwrap_or(database.is_none()) {
            let accounts = accounts::capture(
                my,
                &mut leader,
                database.as_deref(),
                server.mariadb,
                options.mysql.users_include_root,
            )
            .await?;
            tracing::info!(
                "{}: recorded {}",
                self.spec.name,
                crate::text::count(accounts.accounts.len() as u64, "account")
            );
            crate::engine::accounts::store(writer, &accounts).await?;
        }

        let chunks = inventory::plan_chunks(my, &mut workers[0], &tables, options.chunk_bytes).await?;
        let chunk_count = chunks.len();
        let queue = Queue::new(chunks);
        let progress = Progress::new(format!("{}: copy, chunks", self.spec.name), chunk_count as u64);
        let _reporter = progress.report_every(PROGRESS_EVERY);
        let checksums = Arc::new(Mutex::new(Checksums {
            pending: if options.mysql.checksums {
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
        if options.mysql.checksums {
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

/// Reads back a chain's change logs as a restore does before it replays (`engine::check_logs`).
pub(crate) async fn check_logs(input: &crate::engine::RestoreInput) -> Result<(), SourceError> {
    replay::check(input).await.map(|_| ())
}
