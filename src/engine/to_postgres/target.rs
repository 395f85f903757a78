//! A PostgreSQL database as the target of a MySQL/MariaDB full copy (`cairn restore` of a MySQL
//! source into a `postgres://` URL): each MySQL database becomes a schema, each table its
//! translation, the rows are loaded through the mapping, then indexes, identities and foreign
//! keys are made. What was not translated is reported as warnings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::catalog::{Definition, Translated, target_key, translate_all};
use super::ddl::PgTable;
use super::ddl_log::LiveCatalog;
use super::load::{Loaded, worker};
use super::replay::{Mapping, PROGRESS_TABLE, record_start, recorded, replay};
use super::rows::RowTranslator;
use crate::engine::filter::Filters;
use crate::engine::pool::Queue;
use crate::engine::postgres::{Pg, quote_ident};
use crate::engine::{RestoreInput, RestoreReport, SourceError, SourceUrl, TableDigest, TableToDigest, Target};
use crate::progress::Progress;
use crate::repo::reader::data_files;

/// What a restore creates and loads.
struct Plan {
    schemas: Vec<String>,
    tables: BTreeMap<(String, String), PgTable>,
    /// MySQL database → PostgreSQL schema.
    schema_map: BTreeMap<String, String>,
    /// The copy's tables as it recorded them, kept in the target for a replica's applier.
    definitions: Vec<Definition>,
    /// Each database's default character set, which tables created later in the log take.
    charsets: BTreeMap<String, String>,
    files: Vec<crate::repo::reader::StoredFile>,
}

/// A PostgreSQL database receiving a MySQL copy.
#[derive(Clone)]
pub struct MysqlIntoPostgres {
    pg: Pg,
}

impl MysqlIntoPostgres {
    pub fn new(url: SourceUrl) -> Self {
        MysqlIntoPostgres { pg: Pg::new(url) }
    }

    /// The target schemas, each table translated (by MySQL database and table), and the files.
    async fn plan(&self, input: &RestoreInput) -> Result<Plan, SourceError> {
        refuse_what_is_not_built(input)?;
        let manifest = &input.manifests[0];
        let (schema, files) = crate::engine::mysql::copy_schema(input).await?;
        let renames: BTreeMap<&str, &str> = input
            .mysql
            .rename_databases
            .iter()
            .map(|(from, to)| (from.as_str(), to.as_str()))
            .collect();
        let schema_of = |database: &str| renames.get(database).map_or(database, |to| *to).to_string();
        let definitions: Vec<Definition> = schema
            .tables
            .iter()
            .map(|table| Definition {
                database: table.database.clone(),
                name: table.name.clone(),
                create: table.create.clone(),
                added: table.indexes.iter().chain(&table.foreign_keys).cloned().collect(),
            })
            .collect();
        let Translated { tables, .. } = translate_all(&definitions, &schema_of, &format!("copy {}", manifest.copy.id))?;
        // Every database of the copy becomes a schema, tables or not.
        let mut schemas: Vec<String> = schema.databases.iter().map(|d| schema_of(&d.name)).collect();
        schemas.extend(tables.values().map(|t| t.schema.clone()));
        schemas.sort();
        schemas.dedup();
        let schema_map = schema
            .databases
            .iter()
            .map(|d| (d.name.clone(), schema_of(&d.name)))
            .collect();
        Ok(Plan {
            schemas,
            tables,
            schema_map,
            definitions,
            charsets: schema
                .databases
                .iter()
                .map(|d| (d.name.clone(), d.charset.clone()))
                .collect(),
            files,
        })
    }

    /// The target schemas, and which of them already hold something.
    async fn occupied(&self, client: &tokio_postgres::Client, schemas: &[String]) -> Result<Vec<String>, SourceError> {
        let rows = client
            .query(
                "SELECT n.nspname FROM pg_namespace n WHERE n.nspname = ANY($1) AND EXISTS \
                 (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid)",
                &[&schemas],
            )
            .await
            .map_err(|e| self.pg.error("reading the target's schemas", e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}

impl MysqlIntoPostgres {
    /// Creates the schemas and tables, loads the full copy's rows, then makes the indexes,
    /// identities and foreign keys.
    async fn restore_full(
        &self,
        input: &RestoreInput,
        schemas: &[String],
        tables: BTreeMap<(String, String), PgTable>,
        files: Vec<crate::repo::reader::StoredFile>,
    ) -> Result<RestoreReport, SourceError> {
        let client = crate::engine::postgres::open_database(&self.pg).await?;
        let occupied = self.occupied(&client, schemas).await?;
        if !occupied.is_empty() && !input.clean {
            return Err(SourceError::TargetNotEmpty {
                database: self.pg.name.clone(),
                detail: format!("schema {} already holds tables", occupied.join(", ")),
            });
        }
        for name in schemas {
            // Only a schema that holds tables, and only with --clean (checked above), is dropped:
            // an empty one that exists may hold the owner's grants or functions.
            let sql = match occupied.contains(name) {
                true => {
                    tracing::warn!("--clean: dropping schema {name} on {}", self.pg.name);
                    format!("DROP SCHEMA {0} CASCADE; CREATE SCHEMA {0}", quote_ident(name))
                }
                false => format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(name)),
            };
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| self.pg.error(&format!("creating schema {name}"), e))?;
        }
        for table in tables.values() {
            client.batch_execute(&table.create).await.map_err(|e| {
                self.pg
                    .error(&format!("creating table {}.{}", table.schema, table.name), e)
            })?;
            for note in &table.notes {
                tracing::warn!("not translated: {note}");
            }
        }
        let data = data_files(&files);
        let file_count = data.len() as u64;
        let progress = Progress::new("restore: data files (stored size)", file_count);
        let _reporter = progress.report_every(std::time::Duration::from_secs(5));
        let (queue, shared) = (Queue::new(data), Arc::new(tables));
        let loaded: Vec<Loaded> = crate::engine::pool::run("loading data", 0..input.jobs.max(1), |_| {
            worker(
                self.pg.clone(),
                input.destination.clone(),
                queue.clone(),
                shared.clone(),
                progress.clone(),
            )
        })
        .await
        .map_err(|cause| SourceError::Incomplete {
            target: self.pg.name.clone(),
            cause: Box::new(cause),
        })?;
        let mut zero_dates: BTreeMap<String, u64> = BTreeMap::new();
        for part in &loaded {
            for (column, count) in &part.zero_dates {
                *zero_dates.entry(column.clone()).or_default() += count;
            }
        }
        for (column, count) in &zero_dates {
            tracing::warn!(
                "{column}: {count} zero dates (or dates with a zero part) became NULL, or -infinity where the column \
                 is NOT NULL"
            );
        }
        // Indexes and identities once the rows are in; the foreign keys last, every table whole.
        let after = shared.values().flat_map(|t| t.after_load.iter());
        let keys: Vec<_> = shared.values().flat_map(|t| t.at_detach.iter()).collect();
        for statement in after.chain(keys.iter().map(|k| &k.add)) {
            client
                .batch_execute(statement)
                .await
                .map_err(|e| self.pg.error(&format!("finishing the tables ({statement})"), e))?;
        }
        for key in keys {
            if let Err(e) = client.batch_execute(&key.validate).await {
                tracing::warn!(
                    "foreign key {}: left NOT VALID: {} (MySQL had foreign_key_checks off for some rows); fix the \
                     rows, then run: {}",
                    key.shown,
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |db| db.message().to_string()),
                    key.validate
                );
            }
        }
        Ok(RestoreReport {
            target: self.pg.name.clone(),
            tables: shared.len() as u64,
            rows: loaded.iter().map(|l| l.rows).sum(),
            files: file_count,
            position: Some(input.manifests[0].copy.log_range.end.clone()),
            ..Default::default()
        })
    }
}

/// The parts of MySQL → PostgreSQL that are not built yet, refused before anything is done.
fn refuse_what_is_not_built(input: &RestoreInput) -> Result<(), SourceError> {
    if input.resume && input.manifests.len() < 2 {
        return Err(SourceError::NothingToResume {
            target: "the target".into(),
            detail: format!(
                "copy {} is a full copy without incrementals: there is no replay to resume; restore it again with \
                 --clean",
                input.manifests[0].copy.id
            ),
        });
    }
    if input.mysql.no_binlog || input.mysql.verify_checksums {
        return Err(SourceError::Unsupported(
            "--no-binlog and --checksum are for MySQL targets; a PostgreSQL target takes --rename-db only".into(),
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl Target for MysqlIntoPostgres {
    async fn preflight(&self, input: &RestoreInput) -> Result<Vec<String>, SourceError> {
        let Plan { schemas, tables, .. } = self.plan(input).await?;
        let client = match self.pg.connect("restore preflight").await {
            Ok(client) => client,
            Err(SourceError::NoDatabase { .. }) if input.resume => {
                return Err(SourceError::NothingToResume {
                    target: self.pg.name.clone(),
                    detail: "the database does not exist; restore without --resume".into(),
                });
            }
            Err(SourceError::NoDatabase { .. }) => {
                return Ok(vec![format!(
                    "{}: does not exist; the restore creates it, with schemas {} ({} tables)",
                    self.pg.name,
                    schemas.join(", "),
                    tables.len()
                )]);
            }
            Err(e) => return Err(e),
        };
        let occupied = self.occupied(&client, &schemas).await?;
        // --resume continues in the schemas an earlier restore filled.
        if !occupied.is_empty() && !input.clean && !input.resume {
            return Err(SourceError::TargetNotEmpty {
                database: self.pg.name.clone(),
                detail: format!(
                    "schema {} already holds tables; --rename-db puts the copy's databases in other schemas",
                    occupied.join(", ")
                ),
            });
        }
        let mut notes = vec![format!(
            "MySQL copy into PostgreSQL {}: schemas {} ({} tables), through docs/mysql-to-postgres.md",
            self.pg.name,
            schemas.join(", "),
            tables.len()
        )];
        notes.extend(
            tables
                .values()
                .flat_map(|t| t.notes.iter().map(|n| format!("not translated: {n}"))),
        );
        Ok(notes)
    }

    async fn preview(&self, input: &RestoreInput) -> Result<Vec<String>, SourceError> {
        if input.manifests.len() < 2 {
            return Ok(Vec::new());
        }
        crate::engine::mysql::preview_chain(input).await
    }

    async fn restore(&self, input: &RestoreInput) -> Result<RestoreReport, SourceError> {
        let started = Instant::now();
        let Plan {
            schemas,
            tables,
            schema_map,
            definitions,
            charsets,
            files,
        } = self.plan(input).await?;
        // Every log file is fetched and checked, and the stop point found, before the target is
        // touched.
        let checked = match input.manifests.len() {
            1 => None,
            _ => Some(crate::engine::mysql::check_chain(input).await?),
        };
        let resume = match input.resume {
            true => Some(recorded(&self.pg, input, &schema_map).await?),
            false => None,
        };
        let (mut definitions, mut charsets) = (definitions, charsets);
        let mut report = match input.resume {
            false => {
                let report = self.restore_full(input, &schemas, tables, files).await?;
                // What a replica's applier reads the binary log's rows by.
                let client = self.pg.connect("recording the copy's table definitions").await?;
                super::catalog::store(&client, &target_key(&schema_map), &definitions, &charsets)
                    .await
                    .map_err(|e| {
                        self.pg
                            .error("recording the copy's table definitions (cairn_replay.mysql_tables)", e)
                    })?;
                record_start(&self.pg, input, &schema_map).await?;
                report
            }
            true => {
                tracing::info!(
                    "--resume: the full copy {} is already in the target",
                    input.manifests[0].copy.id
                );
                // The tables as the replayed DDL left them, not as the copy had them.
                let client = self.pg.connect("reading the replica's table definitions").await?;
                let reading = "reading the table definitions (cairn_replay.mysql_tables)";
                definitions = super::catalog::load(&client, &target_key(&schema_map))
                    .await
                    .map_err(|e| self.pg.error(reading, e))?;
                charsets = super::catalog::load_charsets(&client, &target_key(&schema_map))
                    .await
                    .map_err(|e| self.pg.error(reading, e))?;
                RestoreReport {
                    target: self.pg.name.clone(),
                    position: Some(input.manifests[0].copy.log_range.end.clone()),
                    ..Default::default()
                }
            }
        };
        if let Some(checked) = checked {
            let filters = recorded_filters(input)?;
            let catalog = LiveCatalog::new(
                definitions,
                charsets,
                schema_map.clone(),
                target_key(&schema_map),
                filters.clone(),
            );
            let mapping = Mapping {
                schemas: &schema_map,
                filters: &filters,
                translator: RowTranslator::new(catalog.shapes()?),
                catalog,
            };
            let replayed = replay(&self.pg, input, checked, resume, mapping)
                .await
                .map_err(|cause| SourceError::ReplayStopped {
                    target: self.pg.name.clone(),
                    progress: PROGRESS_TABLE.into(),
                    cause: Box::new(cause),
                })?;
            for (column, count) in &replayed.zero_dates {
                tracing::warn!("{column}: {count} zero dates in the replayed changes became NULL or -infinity");
            }
            report.incrementals = input.manifests.len() as u64 - 1;
            report.transactions = replayed.transactions;
            report.row_changes = replayed.row_changes;
            report.position = replayed.position.or(report.position);
        }
        report.databases = schema_map;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    async fn digest_tables(&self, tables: &[TableToDigest]) -> Result<Vec<TableDigest>, SourceError> {
        let _ = tables;
        Err(SourceError::Unsupported(
            "row digests of a MySQL copy restored into PostgreSQL are not compared".into(),
        ))
    }

    async fn drop_databases(&self, names: &[String]) -> Result<(), SourceError> {
        let _ = names;
        Err(SourceError::Unsupported(
            "a MySQL copy restored into PostgreSQL is not a scratch restore".into(),
        ))
    }

    async fn prepare_follow(&self, setup: &crate::engine::follow::FollowSetup<'_>) -> Result<(), SourceError> {
        super::follow_state::record_setup(&self.pg, setup).await
    }

    async fn follow(
        &self,
        source: &crate::engine::SourceSpec,
        options: &crate::engine::follow::FollowOptions,
    ) -> Result<crate::engine::follow::FollowReport, SourceError> {
        super::follow::follow(&self.pg, source, options).await
    }

    async fn replicas(&self) -> Result<Vec<crate::engine::follow::ReplicaState>, SourceError> {
        super::follow_state::states(&self.pg).await
    }

    async fn request_stop(&self, source: &str) -> Result<Option<crate::engine::follow::ReplicaState>, SourceError> {
        super::follow_state::request_stop(&self.pg, source).await
    }

    async fn detach(&self, source: &str) -> Result<crate::engine::follow::Detached, SourceError> {
        super::detach::detach(&self.pg, source).await
    }

    async fn reload(
        &self,
        source: &crate::engine::SourceSpec,
        selection: &[(String, Option<String>)],
        lock_wait: std::time::Duration,
    ) -> Result<crate::engine::follow::Reloaded, SourceError> {
        super::reload::reload(&self.pg, source, selection, lock_wait).await
    }
}

/// The filters the chain's full copy was taken with: the replay leaves out what the copy did.
fn recorded_filters(input: &RestoreInput) -> Result<Filters, SourceError> {
    let full = &input.manifests[0].copy;
    match full.details.get("filters") {
        Some(recorded) => serde_json::from_value(recorded.clone())
            .map_err(|e| SourceError::Damaged(format!("copy {}: the recorded filters do not parse: {e}", full.id))),
        None => Ok(Filters::default()),
    }
}
