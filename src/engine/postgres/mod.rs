//! PostgreSQL: consistent, parallel full copies and their restore (see docs/postgres.md).
//!
//! A copy is one snapshot shared by every connection: the leader locks the tables (ACCESS
//! SHARE, so concurrent DDL cannot change them under the copy), exports its snapshot, and keeps
//! its transaction open while pg_dump (schema) and the workers (data, `COPY … TO STDOUT` per
//! chunk) import it. Each chunk is streamed to the copy writer, straight on to the destination.

mod accounts;
pub mod apply;
mod capture;
pub mod changes_file;
mod ddl;
mod digest;
pub mod event_table;
mod follow;
mod handover;
mod inventory;
mod load;
pub mod pgoutput;
mod post_data;
mod quote;
mod read;
mod replay;
pub(crate) mod replica_row;
mod row_sql;
mod schedule;
mod schema;
mod selective;
mod slot;
mod snapshot;
mod target;
mod tls;
mod to_sql;
pub mod visibility;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::TryStreamExt;
use serde_json::{Map, json};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::engine::pool::{self, Queue};
use crate::engine::{CopyOptions, Source, SourceError, SourceSpec, SourceUrl, TakenCopy};
use crate::progress::Progress;
use crate::repo::file_kind::FileKind;
use crate::repo::reader as stored;
use crate::repo::status::{CopyRecord, LogPosition, LogRange, ServerIdentity};
use crate::repo::writer::CopyWriter;
use crate::streams::{Counters, Counting};
use snapshot::{lock_tables, take_snapshot};

pub use quote::{quote_ident, quote_literal};
pub use target::PostgresTarget;
pub(crate) use target::open_database;
pub(crate) use to_sql::write_script;

/// How often long work logs a progress line.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A database cairn talks to, for connecting and for naming it in errors.
#[derive(Debug, Clone)]
pub struct Pg {
    url: SourceUrl,
    /// How messages name it: the URL without password.
    pub(crate) name: String,
}

impl Pg {
    pub fn new(url: SourceUrl) -> Self {
        let name = url.to_string();
        Pg { url, name }
    }

    /// The same server, another database.
    pub fn with_database(&self, database: &str) -> Pg {
        let mut url = self.url.clone();
        url.set_database(database);
        Pg::new(url)
    }

    /// The database name in the URL.
    pub fn database(&self) -> String {
        self.url.database().unwrap_or_else(|| "postgres".into())
    }

    /// Opens a session; its connection task runs until the client is dropped.
    ///
    /// # Errors
    /// [`SourceError::Unreachable`], [`SourceError::Authentication`] or a database error.
    pub async fn connect(&self, purpose: &str) -> Result<Client, SourceError> {
        self.connect_with(purpose, None).await
    }

    /// [`Pg::connect`], with the channel names of the session's notifications (`LISTEN`) sent
    /// to `notifications`.
    ///
    /// # Errors
    /// As [`Pg::connect`].
    pub async fn connect_with(
        &self,
        purpose: &str,
        notifications: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Client, SourceError> {
        let unusable = |e: String| SourceError::Unsupported(format!("{}: {e}", self.name));
        let (plain, tls) = tls::split_url(self.url.without_password()).map_err(unusable)?;
        let mut config: tokio_postgres::Config = plain
            .as_str()
            .parse()
            .map_err(|e: tokio_postgres::Error| unusable(format!("not a usable PostgreSQL URL: {e}")))?;
        if let Some(password) = &self.url.password {
            config.password(password.expose());
        }
        config.ssl_mode(tls.ssl_mode());
        config.application_name(format!("cairn {purpose}"));
        config.connect_timeout(std::time::Duration::from_secs(15));
        let connector = tls.connector().map_err(|detail| SourceError::Tls {
            database: self.name.clone(),
            detail,
        })?;
        let (client, connection) = match config.connect(connector).await {
            Ok(connected) => connected,
            Err(e) => {
                return Err(crate::engine::explain_unreachable(&self.url, self.classify("connecting", true, e)).await);
            }
        };
        match notifications {
            None => {
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("PostgreSQL connection ended: {e}");
                    }
                });
            }
            Some(sender) => {
                let mut connection = connection;
                // Polling the messages also drives the session's requests.
                tokio::spawn(async move {
                    while let Some(message) = futures::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(note)) => {
                                let _ = sender.send(note.channel().to_string());
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::debug!("PostgreSQL connection ended: {e}");
                                break;
                            }
                        }
                    }
                });
            }
        }
        Ok(client)
    }

    /// Classifies a driver error by SQLSTATE and names the database and what was being done.
    pub fn error(&self, doing: &str, error: tokio_postgres::Error) -> SourceError {
        self.classify(doing, false, error)
    }

    /// [`Pg::error`], for an error while `connecting` or on an established session.
    fn classify(&self, doing: &str, connecting: bool, error: tokio_postgres::Error) -> SourceError {
        let database = self.name.clone();
        let doing = doing.to_string();
        let Some(db) = error.as_db_error() else {
            // No SQLSTATE: the connection itself failed (refused, reset, timed out, TLS).
            let mut detail = error.to_string();
            if let Some(source) = std::error::Error::source(&error) {
                detail = format!("{detail}: {source}");
            }
            if tls::tls_failed(&error) {
                return SourceError::Tls { database, detail };
            }
            let from_network = std::iter::successors(std::error::Error::source(&error), |e| e.source())
                .any(|e| e.is::<std::io::Error>());
            if connecting && !from_network && !error.is_closed() {
                // The driver refused before any network I/O: its configuration (a password the
                // server asks for and none was given) is the user's to fix.
                return SourceError::Authentication { database, detail };
            }
            if let Some(hint) = crate::engine::io_hint(&error) {
                detail = format!("{detail} ({hint})");
            }
            return if connecting || error.is_closed() {
                SourceError::Unreachable { database, detail }
            } else if from_network {
                SourceError::Disconnected {
                    database,
                    doing,
                    detail,
                }
            } else {
                SourceError::Database {
                    database,
                    doing,
                    detail,
                }
            };
        };
        let detail = match db.detail() {
            Some(extra) => format!("{} ({extra})", db.message()),
            None => db.message().to_string(),
        };
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            SourceError::Authentication { database, detail }
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            SourceError::Privilege {
                database,
                doing,
                detail,
            }
        } else if *code == SqlState::LOCK_NOT_AVAILABLE || *code == SqlState::T_R_DEADLOCK_DETECTED {
            SourceError::Locked {
                database,
                doing,
                detail,
            }
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            SourceError::NoDatabase { database, detail }
        } else if *code == SqlState::CANNOT_CONNECT_NOW || *code == SqlState::TOO_MANY_CONNECTIONS {
            SourceError::Unreachable { database, detail }
        } else if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CRASH_SHUTDOWN {
            // The server ended the session (pg_terminate_backend, a shutdown or a crash).
            SourceError::Disconnected {
                database,
                doing,
                detail,
            }
        } else {
            SourceError::Database {
                database,
                doing,
                detail,
            }
        }
    }
}

/// Reads a PostgreSQL source.
#[derive(Debug, Clone)]
pub struct PostgresSource {
    spec: SourceSpec,
    pg: Pg,
}

impl PostgresSource {
    pub fn new(spec: SourceSpec) -> Self {
        let pg = Pg::new(spec.url.clone());
        PostgresSource { spec, pg }
    }
}

impl PostgresSource {
    /// The slot and publication this source's incrementals use.
    fn slot_name(&self) -> String {
        slot::slot_name(&self.spec.name, &self.pg.database())
    }

    /// With incrementals turned off, the slot a full copy kept for them would pin WAL for
    /// nothing: it goes, with its publication. A failure to drop it does not fail the copy.
    async fn retire_slot(&self, client: &Client) {
        match slot::drop(&self.pg, client, &self.slot_name()).await {
            Ok(Some(held)) => tracing::warn!(
                "{}: incrementals are off for this source: dropped its {} {} (it held {} of WAL) and its publication",
                self.spec.name,
                held.kind,
                held.name,
                crate::text::bytes(held.retained_bytes)
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "{}: incrementals are off for this source, but its slot could not be dropped: {e}; drop it with `cairn \
                 slot drop --source {}`",
                self.spec.name,
                self.spec.name
            ),
        }
    }
}

async fn put_sql(writer: &CopyWriter, path: &str, kind: FileKind, sql: String) -> Result<(), SourceError> {
    let counters = Counters::default();
    writer
        .put_file(
            path,
            Counting::new(std::io::Cursor::new(sql.into_bytes()), counters),
            move || kind.into_details(),
        )
        .await?;
    Ok(())
}

#[async_trait]
impl Source for PostgresSource {
    async fn create_replica_slot(&self, name: &str) -> Result<Option<(String, LogPosition)>, SourceError> {
        let publication = self.slot_name();
        let start = handover::create_slot(&self.pg, &publication, name).await?;
        Ok(Some((publication, start)))
    }

    async fn drop_replica_slot(&self, name: &str) -> Result<(), SourceError> {
        handover::drop_slot(&self.pg, name).await
    }

    async fn log_written_since(&self, from: &LogPosition) -> Result<Option<u64>, SourceError> {
        let LogPosition::Postgres { lsn, .. } = from else {
            return Ok(None);
        };
        let client = self.pg.connect("replica status").await?;
        let written: i64 = client
            .query_one(
                "SELECT greatest(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn), 0)::bigint",
                &[lsn],
            )
            .await
            .map_err(|e| self.pg.error("reading the source's WAL position", e))?
            .get(0);
        Ok(Some(u64::try_from(written).unwrap_or(0)))
    }

    fn supports_incremental(&self, options: &CopyOptions) -> bool {
        options.postgres.incrementals
    }

    fn single_position(&self, options: &CopyOptions) -> bool {
        options.postgres.incrementals
    }

    async fn preflight(
        &self,
        options: &CopyOptions,
        planned: crate::engine::Planned<'_>,
    ) -> Result<Vec<String>, SourceError> {
        let pg = &self.pg;
        if let crate::engine::Planned::Incremental { parent } = planned {
            if !options.postgres.incrementals {
                return Err(SourceError::Unsupported(format!(
                    "incremental copies after {} need incrementals = true for this source",
                    parent.id
                )));
            }
            let client = pg.connect("incremental").await?;
            let (slot, lsn) = slot::check_slot(pg, &client, &self.spec.name, parent).await?;
            if !options.postgres.capture_ddl {
                let now = ddl::fingerprint(pg, &client).await?;
                ddl::check_unchanged(&self.spec.name, parent, &now, "since")?;
            }
            return Ok(vec![format!("replication slot {slot} holds the changes since {lsn}")]);
        }
        let client = pg.connect("backup").await?;
        let mut notes = Vec::new();
        if options.postgres.incrementals {
            slot::check_source(pg, &client).await?;
            if options.postgres.capture_ddl {
                notes.push(ddl::check_can_install(pg, &client).await?);
            }
        } else if let Some(held) = slot::state(pg, &client, &self.slot_name()).await? {
            notes.push(format!(
                "incrementals are off: the copy drops {} {} (it holds {} of WAL)",
                held.kind,
                held.name,
                crate::text::bytes(held.retained_bytes)
            ));
        }
        let version_num: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| pg.error("reading the server's version", e))?
            .get(0);
        let dump = schema::find_pg_dump((version_num / 10000) as u32).await?;
        let tables = inventory::tables(pg, &client, false, &options.filters).await?;
        let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
        let unreadable: Vec<String> = client
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = ANY($1) AND NOT (has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'))
                  ORDER BY 1 LIMIT 10",
                &[&oids],
            )
            .await
            .map_err(|e| pg.error("checking the privileges on the tables to copy", e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if !unreadable.is_empty() {
            return Err(SourceError::Privilege {
                database: pg.name.clone(),
                doing: "checking the privileges on the tables to copy".into(),
                detail: format!("this role may not read {}", unreadable.join(", ")),
            });
        }
        notes.insert(
            0,
            format!(
                "PostgreSQL {}, {} to copy, pg_dump {} at {}",
                version_num,
                crate::text::count(tables.len() as u64, "table"),
                dump.version,
                dump.path.display()
            ),
        );
        Ok(notes)
    }

    async fn log_hold(&self) -> Result<Option<crate::engine::LogHold>, SourceError> {
        let client = self.pg.connect("status").await?;
        slot::state(&self.pg, &client, &self.slot_name()).await
    }

    async fn drop_log_hold(&self) -> Result<Option<crate::engine::LogHold>, SourceError> {
        let client = self.pg.connect("dropping the slot").await?;
        slot::drop(&self.pg, &client, &self.slot_name()).await
    }

    async fn incremental_copy(
        &self,
        writer: &CopyWriter,
        options: &CopyOptions,
        parent: &CopyRecord,
    ) -> Result<TakenCopy, SourceError> {
        capture::incremental_copy(&self.pg, &self.spec.name, writer, options, parent).await
    }

    async fn full_copy(&self, writer: &CopyWriter, options: &CopyOptions) -> Result<TakenCopy, SourceError> {
        let pg = &self.pg;
        let started = Instant::now();
        let leader = pg.connect("backup").await?;
        leader
            .batch_execute(&format!(
                "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET lock_timeout = {}",
                options.lock_wait.as_millis().max(1)
            ))
            .await
            .map_err(|e| pg.error("preparing the session", e))?;
        // With incrementals, the slot exists before the snapshot: every change the snapshot does
        // not hold is in the slot (docs/postgres.md, "Incrementals").
        let slot = match options.postgres.incrementals {
            true => {
                slot::check_source(pg, &leader).await?;
                // The DDL log exists before the slot, so every DDL after the snapshot is in it.
                match options.postgres.capture_ddl {
                    true => ddl::install(pg, &leader).await?,
                    false => ddl::uninstall_quietly(pg, &leader, &self.spec.name).await,
                }
                let slot = self.slot_name();
                let lsn = slot::create_slot(pg, &leader, &slot).await?;
                Some((slot, lsn))
            }
            false => {
                self.retire_slot(&leader).await;
                None
            }
        };
        // Lock first, then take the snapshot: LOCK takes no snapshot, so every change committed
        // before the locks were granted is in the snapshot and no DDL can follow it.
        let filters = &options.filters;
        let listed = inventory::tables(pg, &leader, false, filters).await?;
        leader
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| pg.error("starting the snapshot transaction", e))?;
        lock_tables(pg, &leader, &listed).await?;
        let point = take_snapshot(pg, &leader).await?;
        // Tables created between the listing and the snapshot: lock them too.
        let tables = inventory::tables(pg, &leader, true, filters).await?;
        let locked: BTreeSet<u32> = listed.iter().map(|t| t.oid).collect();
        let late: Vec<inventory::Table> = tables.iter().filter(|t| !locked.contains(&t.oid)).cloned().collect();
        lock_tables(pg, &leader, &late).await?;
        // In the snapshot: the schema the full copy holds, which incrementals compare against.
        let schema_fingerprint = match &slot {
            Some(_) => Some(ddl::fingerprint(pg, &leader).await?),
            None => None,
        };
        let lock_wait_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            "{}: snapshot {} at WAL {} covering {}",
            self.spec.name,
            point.exported,
            point.lsn,
            crate::text::count(tables.len() as u64, "table")
        );

        let dump = schema::find_pg_dump((point.version_num / 10000) as u32).await?;
        let large_objects: i64 = leader
            .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
            .await
            .map_err(|e| pg.error("counting large objects", e))?
            .get(0);
        if large_objects > 0 {
            tracing::warn!(
                "{}: {large_objects} large objects (pg_largeobject) are not part of cairn copies; back them up separately",
                self.spec.name
            );
        }
        // Heap pages are read once each by TID range scans (PostgreSQL 14+); key ranges would
        // plan as index or filtered sequential scans. Older servers get key ranges.
        let by_key = point.version_num < 140000;
        let chunks = inventory::plan_chunks(pg, &leader, &tables, options.chunk_bytes, by_key).await?;
        let chunk_count = chunks.len();

        // The schema is dumped while the workers copy data: both only need the snapshot.
        let schema_files = async {
            let filter_args = inventory::pg_dump_filter_args(pg, &leader, filters).await?;
            let url = &self.spec.url;
            let (pre, post) = tokio::try_join!(
                schema::dump_section(&dump, url, &point.exported, schema::Section::PreData, &filter_args),
                schema::dump_section(&dump, url, &point.exported, schema::Section::PostData, &filter_args),
            )?;
            let sequences = inventory::sequence_values(pg, &leader, filters).await?;
            let refreshes = inventory::materialized_view_refreshes(pg, &leader, filters).await?;
            put_sql(writer, "schema/pre-data.sql", FileKind::PreData, pre).await?;
            put_sql(writer, "schema/post-data.sql", FileKind::PostData, post).await?;
            put_sql(writer, "schema/sequences.sql", FileKind::Sequences, sequences).await?;
            put_sql(writer, "schema/refresh.sql", FileKind::Refresh, refreshes).await?;
            if options.users == Some(true) {
                crate::engine::accounts::store(writer, &accounts::capture(pg, &leader).await?).await?;
            }
            Ok::<(), SourceError>(())
        };
        let workers = (options.jobs.max(1) as usize).min(chunk_count.max(1));
        let data = async {
            let queue = Queue::new(chunks);
            let progress = Progress::new(format!("{}: copy, chunks", self.spec.name), chunk_count as u64);
            let _reporter = progress.report_every(PROGRESS_EVERY);
            let done = pool::run("reading data", 0..workers, |_| {
                let this = self.clone();
                let (snapshot, queue, writer, progress) =
                    (point.exported.clone(), queue.clone(), writer.clone(), progress.clone());
                async move { this.worker(snapshot, queue, writer, progress).await }
            })
            .await?;
            Ok::<(u64, u64), SourceError>(
                done.into_iter()
                    .fold((0u64, 0u64), |(rows, bytes), (r, b)| (rows + r, bytes + b)),
            )
        };
        let ((), (rows, raw_bytes)) = tokio::try_join!(schema_files, data)?;
        // The snapshot was needed until the last worker imported it and finished.
        leader
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg.error("ending the snapshot transaction", e))?;

        // With a slot, the copy ends at the slot's starting point: the first incremental reads
        // from there and leaves out what the snapshot holds.
        let position = LogPosition::Postgres {
            lsn: slot.as_ref().map_or(point.lsn.clone(), |(_, lsn)| lsn.clone()),
            timeline: point.timeline,
            slot: slot.as_ref().map(|(name, _)| name.clone()),
        };
        let mut details = Map::new();
        // The replay of the incrementals leaves out what the full copy left out.
        if !filters.is_empty() {
            details.insert("filters".into(), json!(filters));
        }
        details.insert("snapshot".into(), json!(point.visibility));
        if let Some(fingerprint) = schema_fingerprint {
            details.insert(ddl::FINGERPRINT.into(), json!(fingerprint));
        }
        details.insert("snapshot_lsn".into(), json!(point.lsn));
        details.insert("snapshot_insert_lsn".into(), json!(point.insert_lsn));
        details.insert("tables".into(), json!(tables.len()));
        details.insert("chunks".into(), json!(chunk_count));
        details.insert("rows".into(), json!(rows));
        details.insert("raw_bytes".into(), json!(raw_bytes));
        details.insert("jobs".into(), json!(workers));
        details.insert("lock_and_snapshot_ms".into(), json!(lock_wait_ms));
        details.insert(
            "pg_dump".into(),
            json!(format!("{} {}", dump.path.display(), dump.version)),
        );
        Ok(TakenCopy {
            log_range: LogRange {
                start: position.clone(),
                end: position,
            },
            server: ServerIdentity {
                id: point
                    .system_identifier
                    .unwrap_or_else(|| "unknown (no access to pg_control_system)".into()),
                version: point.version,
            },
            details,
        })
    }
}

/// Reads back a chain's change logs as a restore does before it replays (`engine::check_logs`).
pub(crate) async fn check_logs(input: &crate::engine::RestoreInput) -> Result<(), SourceError> {
    replay::check(input).await.map(|_| ())
}
