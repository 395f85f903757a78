//! Restoring a MySQL full copy: databases (optionally renamed), tables without their secondary
//! indexes and foreign keys, data with `LOAD DATA LOCAL` (or batched `INSERT` when the server
//! refuses it) fed straight from the verified stream, then indexes, foreign keys, views,
//! routines, triggers and events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use async_trait::async_trait;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::inventory::Column;
use super::schema::{Object, Schema};
use super::{My, quote_ident, quote_literal, replay};
use crate::engine::pool::{self, Queue};
use crate::engine::{RestoreInput, RestoreReport, SourceError, SourceUrl, TableDigest, TableToDigest, Target};
use crate::progress::Progress;
use crate::repo::file_kind::FileKind;
use crate::repo::reader::{StoredFile, data_files, files_of, one_of, read_text};

use super::load_sql::LOAD_SESSION;

/// Writes a copy into a MySQL or MariaDB server.
#[derive(Debug, Clone)]
pub struct MysqlTarget {
    pub(super) my: My,
    pub(super) url: SourceUrl,
}

impl MysqlTarget {
    pub fn new(url: SourceUrl) -> Self {
        MysqlTarget {
            my: My::new(url.clone()),
            url,
        }
    }
}

/// Where each database of the copy goes.
fn database_map(
    input: &RestoreInput,
    schema: &Schema,
    target: &SourceUrl,
) -> Result<BTreeMap<String, String>, SourceError> {
    let mut map: BTreeMap<String, String> = schema
        .databases
        .iter()
        .map(|d| (d.name.clone(), d.name.clone()))
        .collect();
    for (from, to) in &input.mysql.rename_databases {
        let Some(entry) = map.get_mut(from) else {
            return Err(SourceError::Unsupported(format!(
                "--rename-db {from}={to}: the copy has no database {from} (it has {})",
                map.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        *entry = to.clone();
    }
    if input.mysql.rename_databases.is_empty()
        && let Some(database) = target.database()
    {
        match schema.databases.as_slice() {
            [only] => {
                map.insert(only.name.clone(), database);
            }
            _ => {
                return Err(SourceError::Unsupported(format!(
                    "the target URL names database {database} but the copy holds {} databases; leave the database \
                     out of the URL, or map them with --rename-db FROM=TO",
                    schema.databases.len()
                )));
            }
        }
    }
    Ok(map)
}

impl MysqlTarget {
    /// The server and the databases a restore writes, for messages about an incomplete target.
    pub(super) fn label(&self, map: &BTreeMap<String, String>) -> String {
        format!(
            "{} ({})",
            self.my.name,
            map.values().cloned().collect::<Vec<_>>().join(", ")
        )
    }

    /// Creates a view, routine, trigger or event under the session it was defined in.
    async fn create_object(
        &self,
        conn: &mut Conn,
        object: &Object,
        database: &str,
        sql: &str,
    ) -> Result<(), mysql_async::Error> {
        conn.query_drop(format!("USE {}", quote_ident(database))).await?;
        conn.query_drop(object.session_sql()).await?;
        conn.query_drop(sql).await
    }

    /// Creates `schema`'s tables, loads `data` (the tables `renamed` names — by the copy's
    /// database and table — under their new names), then makes indexes, foreign keys and the
    /// other objects.
    pub(super) async fn write(
        &self,
        input: &RestoreInput,
        schema: &Schema,
        map: &BTreeMap<String, String>,
        data: Vec<StoredFile>,
        admin: &mut Conn,
        renamed: &BTreeMap<(String, String), String>,
    ) -> Result<(u64, u64, u64), SourceError> {
        let my = &self.my;
        let target_of = |db: &str| map.get(db).cloned().unwrap_or_else(|| db.to_string());
        for table in &schema.tables {
            let database = target_of(&table.database);
            admin
                .query_drop(format!("USE {}", quote_ident(&database)))
                .await
                .map_err(|e| my.error(&format!("using database {database}"), e))?;
            admin
                .query_drop(&table.create)
                .await
                .map_err(|e| my.error(&format!("creating table {}.{}", database, table.name), e))?;
        }

        let file_count = data.len() as u64;
        let tables: std::collections::BTreeSet<(String, String)> = data
            .iter()
            .map(|f| {
                (
                    f.data().map(|d| d.container().to_string()).unwrap_or_default(),
                    f.data().map(|d| d.table.clone()).unwrap_or_default(),
                )
            })
            .collect();
        let queue = Queue::new(data);
        let by_insert = Arc::new(AtomicBool::new(false));
        let progress = Progress::new("restore: data files (stored size)", file_count);
        let _reporter = progress.report_every(super::PROGRESS_EVERY);
        let rows: u64 = pool::run("loading data", 0..input.jobs.max(1), |_| {
            let (this, destination, queue, by_insert, progress, map, renamed) = (
                self.clone(),
                input.destination.clone(),
                queue.clone(),
                by_insert.clone(),
                progress.clone(),
                map.clone(),
                renamed.clone(),
            );
            let no_binlog = input.mysql.no_binlog;
            async move {
                let mut conn = this.my.connect(None).await?;
                conn.query_drop(LOAD_SESSION)
                    .await
                    .map_err(|e| this.my.error("preparing a loader", e))?;
                this.out_of_binlog(&mut conn, no_binlog).await?;
                let mut rows = 0;
                while let Some(stored) = queue.next() {
                    let Some(data) = stored.data() else {
                        return Err(SourceError::Damaged(format!(
                            "{}: the manifest does not describe it as a data file",
                            stored.key
                        )));
                    };
                    let database = data.container();
                    let name = renamed
                        .get(&(database.to_string(), data.table.clone()))
                        .unwrap_or(&data.table);
                    let database = map.get(database).cloned().unwrap_or_else(|| database.to_string());
                    let table = format!("{}.{}", quote_ident(&database), quote_ident(name));
                    let columns: Vec<Column> = serde_json::from_value(data.columns.clone()).unwrap_or_default();
                    rows += this
                        .load_file_retrying(&mut conn, &destination, &stored, &table, &columns, &by_insert)
                        .await?;
                    progress.done(stored.file.size);
                }
                let _ = conn.disconnect().await;
                Ok::<u64, SourceError>(rows)
            }
        })
        .await?
        .into_iter()
        .sum();

        // Secondary indexes (a bounded number of tables at a time), then foreign keys: one ALTER
        // per table each.
        let alters = |clauses: fn(&super::schema::TableDef) -> &Vec<String>| -> Vec<String> {
            schema
                .tables
                .iter()
                .filter(|t| !clauses(t).is_empty())
                .map(|t| {
                    let table = format!("{}.{}", quote_ident(&target_of(&t.database)), quote_ident(&t.name));
                    format!("ALTER TABLE {table} {}", clauses(t).join(", "))
                })
                .collect()
        };
        let no_binlog = input.mysql.no_binlog;
        self.run_parallel(
            alters(|t| &t.indexes),
            input.jobs as usize,
            no_binlog,
            "building indexes",
        )
        .await?;
        self.run_parallel(alters(|t| &t.foreign_keys), 1, no_binlog, "adding foreign keys")
            .await?;

        // Views may use other views: create what can be, and retry the rest until nothing moves.
        let rename = |sql: &str| {
            map.iter()
                .filter(|(from, to)| from != to)
                .fold(sql.to_string(), |sql, (from, to)| {
                    sql.replace(&format!("{}.", quote_ident(from)), &format!("{}.", quote_ident(to)))
                })
        };
        let mut pending: Vec<&Object> = schema.objects.iter().filter(|o| o.kind == "view").collect();
        while !pending.is_empty() {
            let mut failed = Vec::new();
            let mut last_error = None;
            for object in &pending {
                if let Err(e) = self
                    .create_object(admin, object, &target_of(&object.database), &rename(&object.create))
                    .await
                {
                    last_error = Some((object.name.clone(), e));
                    failed.push(*object);
                }
            }
            if failed.len() == pending.len() {
                let (name, error) = last_error.expect("a failed view has an error");
                return Err(my.error(&format!("creating view {name}"), error));
            }
            pending = failed;
        }
        for object in schema.objects.iter().filter(|o| o.kind != "view") {
            self.create_object(admin, object, &target_of(&object.database), &rename(&object.create))
                .await
                .map_err(|e| my.error(&format!("creating {} {}", object.kind, object.name), e))?;
        }
        if input.mysql.verify_checksums {
            self.verify_checksums(input, map, admin).await?;
        }
        Ok((tables.len() as u64, rows, file_count))
    }

    /// Compares `CHECKSUM TABLE` of every restored table with the value the copy recorded.
    async fn verify_checksums(
        &self,
        input: &RestoreInput,
        map: &BTreeMap<String, String>,
        admin: &mut Conn,
    ) -> Result<(), SourceError> {
        let copy = &input.manifests[0].copy;
        let recorded: BTreeMap<String, BTreeMap<String, u64>> = copy
            .details
            .get("checksums")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| {
                SourceError::Unsupported(format!(
                    "copy {} holds no table checksums; take copies with `cairn backup --checksum` (or checksums = true) \
                     to compare them",
                    copy.id
                ))
            })?;
        let mut differ = Vec::new();
        let mut compared = 0;
        for (database, tables) in &recorded {
            let target = map.get(database).cloned().unwrap_or_else(|| database.clone());
            for (table, expected) in tables {
                let qualified = format!("{}.{}", quote_ident(&target), quote_ident(table));
                let row: Option<(Vec<u8>, Option<u64>)> = admin
                    .query_first(format!("CHECKSUM TABLE {qualified}"))
                    .await
                    .map_err(|e| self.my.error(&format!("checksumming {qualified}"), e))?;
                let actual = row.and_then(|(_, v)| v);
                if actual != Some(*expected) {
                    differ.push(format!("{qualified} (copy {expected}, restored {actual:?})"));
                }
                compared += 1;
            }
        }
        if !differ.is_empty() {
            return Err(SourceError::Damaged(format!(
                "CHECKSUM TABLE differs from the copy for {} of {compared} tables: {}",
                differ.len(),
                differ.join(", ")
            )));
        }
        tracing::info!("CHECKSUM TABLE of all {compared} restored tables matches the copy");
        Ok(())
    }
}

#[async_trait]
impl Target for MysqlTarget {
    async fn digest_tables(&self, tables: &[TableToDigest]) -> Result<Vec<TableDigest>, SourceError> {
        super::digest::digest_tables(&self.my, tables).await
    }

    async fn drop_databases(&self, names: &[String]) -> Result<(), SourceError> {
        super::digest::drop_databases(&self.my, names).await
    }

    async fn server_id(&self) -> Result<Option<String>, SourceError> {
        super::replica::server_id(&self.my).await.map(Some)
    }

    async fn check_not_replicating(&self) -> Result<(), SourceError> {
        super::replica::check_not_replicating(&self.my).await
    }

    async fn hand_over(
        &self,
        handover: &crate::engine::NativeHandover<'_>,
    ) -> Result<crate::engine::ReplicationState, SourceError> {
        super::replica::hand_over(&self.my, handover).await
    }

    async fn prepare_follow(&self, setup: &crate::engine::follow::FollowSetup<'_>) -> Result<(), SourceError> {
        replay::record_setup(&self.my, setup).await
    }

    async fn follow(
        &self,
        source: &crate::engine::SourceSpec,
        options: &crate::engine::follow::FollowOptions,
    ) -> Result<crate::engine::follow::FollowReport, SourceError> {
        replay::follow(&self.my, source, options).await
    }

    async fn replicas(&self) -> Result<Vec<crate::engine::follow::ReplicaState>, SourceError> {
        replay::states(&self.my).await
    }

    async fn request_stop(&self, source: &str) -> Result<Option<crate::engine::follow::ReplicaState>, SourceError> {
        replay::request_stop(&self.my, source).await
    }

    async fn preflight(&self, input: &RestoreInput) -> Result<Vec<String>, SourceError> {
        let (schema, _) = self.schema_of(input).await?;
        let map = database_map(input, &schema, &self.url)?;
        let mut notes = Vec::new();
        if !input.selection.is_empty() {
            notes.extend(self.preflight_selected(input, &schema, &map).await?);
        } else if input.resume {
            self.check_resume(input, &map).await?;
            notes.push(format!(
                "--resume: {} holds a replay of this chain to continue",
                self.label(&map)
            ));
        } else {
            let mut admin = self.admin(false).await?;
            for (database, objects) in self.check_empty(&mut admin, input, &schema, &map).await? {
                notes.push(match objects {
                    0 => format!("database {database}: empty or absent, restored into"),
                    n => format!("database {database}: --clean drops its {n} tables, views, routines or events"),
                });
            }
        }
        if input.mysql.no_binlog {
            // Session-only: proves the privilege without changing anything.
            let mut conn = self.my.connect(Some("")).await?;
            conn.query_drop("SET SESSION sql_log_bin = 0").await.map_err(|e| {
                self.my
                    .error("leaving the restore out of the binary log (--no-binlog)", e)
            })?;
        }
        Ok(notes)
    }

    async fn preview(&self, input: &RestoreInput) -> Result<Vec<String>, SourceError> {
        if input.resume {
            let (schema, _) = self.schema_of(input).await?;
            let map = database_map(input, &schema, &self.url)?;
            self.check_resume(input, &map).await?;
        }
        if input.manifests.len() < 2 {
            return Ok(Vec::new());
        }
        replay::preview(input).await
    }

    async fn restore(&self, input: &RestoreInput) -> Result<RestoreReport, SourceError> {
        let started = Instant::now();
        let manifest = &input.manifests[0];
        let (schema, files) = self.schema_of(input).await?;
        let map = database_map(input, &schema, &self.url)?;
        if input.resume {
            self.check_resume(input, &map).await?;
        }
        // Every log file is fetched and checked, and the stop point found, before the target is
        // touched: a damaged file or a point the chain does not hold fails with nothing loaded.
        let checked = match input.manifests.len() {
            1 => None,
            _ => Some(replay::check(input).await?),
        };

        // The copy's accounts, when the restore makes them: read (and a missing file refused)
        // before anything is restored, made once the data is in place.
        let elsewhere = !input.mysql.rename_databases.is_empty() || !input.selection.is_empty();
        // Also on --resume: what an interrupted first run made is kept, the rest made.
        let accounts = crate::engine::accounts::to_create(input, elsewhere).await?;

        // A selective restore's tables, as the target has them: only their changes replay.
        let restored = match input.selection.is_empty() {
            true => None,
            false => Some(self.restored_tables(input, &schema, &map)?),
        };
        let mut report = if restored.is_some() {
            self.restore_selected(input, &schema, &map, &files).await?
        } else if input.resume {
            tracing::info!("--resume: the full copy {} is already in the target", manifest.copy.id);
            RestoreReport {
                target: self.my.name.clone(),
                ..Default::default()
            }
        } else {
            self.restore_full(input, &schema, &map, &files).await?
        };
        report.position = Some(manifest.copy.log_range.end.clone());
        report.databases = map.clone();
        if let Some(accounts) = &accounts {
            report.accounts = super::accounts::restore(&self.my, input, accounts, &map).await?;
        }
        if let Some(checked) = checked {
            let replayed = replay::replay(&self.my, input, &map, checked, restored)
                .await
                .map_err(|cause| SourceError::ReplayStopped {
                    target: self.label(&map),
                    progress: format!("{}.progress", replay::PROGRESS_DATABASE),
                    cause: Box::new(cause),
                })?;
            report.incrementals = input.manifests.len() as u64 - 1;
            report.transactions = replayed.transactions;
            report.row_changes = replayed.row_changes;
            report.position = replayed.position;
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

impl MysqlTarget {
    /// The target databases with the objects each holds (`0` for an empty or absent one);
    /// [`SourceError::TargetNotEmpty`] for one that holds some, unless `--clean` drops them.
    async fn check_empty(
        &self,
        admin: &mut Conn,
        input: &RestoreInput,
        schema: &Schema,
        map: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, u64)>, SourceError> {
        let mut found = Vec::new();
        for database in &schema.databases {
            let name = &map[&database.name];
            let (objects,): (u64,) = admin
                .query_first(format!(
                    "SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {n})
                          + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {n})
                          + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {n})",
                    n = quote_literal(name)
                ))
                .await
                .map_err(|e| self.my.error("inspecting the target", e))?
                .unwrap_or((0,));
            if objects > 0 && !input.clean {
                return Err(SourceError::TargetNotEmpty {
                    database: format!("{name} on {}", self.my.name),
                    detail: format!("{objects} tables, views, routines or events"),
                });
            }
            found.push((name.clone(), objects));
        }
        Ok(found)
    }

    async fn schema_of(&self, input: &RestoreInput) -> Result<(Schema, Vec<StoredFile>), SourceError> {
        copy_schema(input).await
    }

    /// Refuses `--resume` unless the target holds a replay of this chain to continue.
    async fn check_resume(&self, input: &RestoreInput, map: &BTreeMap<String, String>) -> Result<(), SourceError> {
        if input.manifests.len() < 2 {
            return Err(SourceError::Unsupported(format!(
                "--resume continues the replay of incremental copies; copy {} is a full copy with nothing to replay",
                input.manifests[0].copy.id
            )));
        }
        replay::check_resumable(&self.my, input, map, &self.label(map)).await
    }

    /// Restores the full copy of a chain: databases, tables, data, then the other objects.
    async fn restore_full(
        &self,
        input: &RestoreInput,
        schema: &Schema,
        map: &BTreeMap<String, String>,
        files: &[StoredFile],
    ) -> Result<RestoreReport, SourceError> {
        let started = Instant::now();
        let mut admin = self.admin(input.mysql.no_binlog).await?;
        // Every target database is checked before any is dropped or created.
        let contents = self.check_empty(&mut admin, input, schema, map).await?;
        for (database, (name, objects)) in schema.databases.iter().zip(contents) {
            if objects > 0 {
                admin
                    .query_drop(format!("DROP DATABASE {}", quote_ident(&name)))
                    .await
                    .map_err(|e| self.my.error(&format!("dropping database {name} (--clean)"), e))?;
                tracing::warn!("--clean: dropped database {name} on {}", self.my.name);
            }
            admin
                .query_drop(format!(
                    "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET {} COLLATE {}",
                    quote_ident(&name),
                    database.charset,
                    database.collation
                ))
                .await
                .map_err(|e| self.my.error(&format!("creating database {name}"), e))?;
        }
        let data = data_files(files);
        let (tables, rows, file_count) = self
            .write(input, schema, map, data, &mut admin, &BTreeMap::new())
            .await
            .map_err(|cause| SourceError::Incomplete {
                target: self.label(map),
                cause: Box::new(cause),
            })?;
        Ok(RestoreReport {
            target: self.my.name.clone(),
            tables,
            rows,
            files: file_count,
            seconds: started.elapsed().as_secs_f64(),
            ..Default::default()
        })
    }
}

/// The schema file of the chain's full copy, and the copy's files (also read by the restore of a
/// MySQL copy into PostgreSQL).
///
/// # Errors
/// A manifest without a schema file, the destination's error, or a file that is not a schema.
pub(crate) async fn copy_schema(input: &RestoreInput) -> Result<(Schema, Vec<StoredFile>), SourceError> {
    let manifest = &input.manifests[0];
    let files = files_of(&input.source, manifest)?;
    let schema_file = one_of(&files, FileKind::Schema, &manifest.copy.id)?;
    let text = read_text(&input.destination, &schema_file).await?;
    let schema: Schema = serde_json::from_str(&text)
        .map_err(|e| SourceError::Damaged(format!("{} does not hold a MySQL schema: {e}", schema_file.key)))?;
    Ok((schema, files))
}
