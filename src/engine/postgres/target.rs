//! Restoring a PostgreSQL full copy: pre-data, data loaded in parallel with every file's MD5
//! checked while it streams, post-data in phases (indexes and keys in parallel, then foreign keys,
//! then triggers and the rest), sequences, materialized views, ANALYZE.

use std::collections::BTreeSet;
use std::time::Instant;

use async_trait::async_trait;
use tokio_postgres::Client;

use super::schedule::Schedule;
use super::schema;
use super::{Pg, quote_ident};
use crate::engine::pool;
use crate::engine::{RestoreInput, RestoreReport, SourceError, SourceUrl, TableDigest, TableToDigest, Target};
use crate::progress::Progress;
use crate::repo::file_kind::FileKind;
use crate::repo::model::LogPosition;
use crate::repo::reader::{StoredFile, data_files, files_of, one_of, read_text};

/// Writes a copy into a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    pub(super) pg: Pg,
}

impl PostgresTarget {
    pub fn new(url: SourceUrl) -> Self {
        PostgresTarget { pg: Pg::new(url) }
    }
}

impl PostgresTarget {
    /// Connects to the target database, creating it when it does not exist.
    async fn open_database(&self) -> Result<Client, SourceError> {
        open_database(&self.pg).await
    }

    /// What the database holds besides what every new database has.
    async fn contents(&self, client: &Client) -> Result<Option<String>, SourceError> {
        let row = client
            .query_one(
                "SELECT
                   (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'),
                   (SELECT count(*) FROM pg_namespace
                     WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public')
                       AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp\\_%'),
                   (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')),
                   (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'),
                   (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                       AND n.nspname NOT LIKE 'pg\\_toast%' AND t.typrelid = 0 AND t.typelem = 0)",
                &[],
            )
            .await
            .map_err(|e| self.pg.error("inspecting the target", e))?;
        let counts: Vec<(i64, &str)> = (0..5)
            .map(|i| row.get::<_, i64>(i))
            .zip(["relations", "schemas", "functions", "extensions", "types"])
            .filter(|(n, _)| *n > 0)
            .collect();
        Ok((!counts.is_empty()).then(|| {
            counts
                .iter()
                .map(|(n, what)| format!("{n} {what}"))
                .collect::<Vec<_>>()
                .join(", ")
        }))
    }

    /// Drops every schema (with what is in it), extension, event trigger and publication.
    async fn clean(&self, client: &Client) -> Result<(), SourceError> {
        let rows = client
            .query(
                "SELECT 'DROP SCHEMA ' || quote_ident(nspname) || ' CASCADE' FROM pg_namespace
                  WHERE nspname NOT IN ('pg_catalog', 'information_schema')
                    AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp\\_%'
                 UNION ALL SELECT 'DROP EXTENSION IF EXISTS ' || quote_ident(extname) || ' CASCADE'
                  FROM pg_extension WHERE extname <> 'plpgsql'
                 UNION ALL SELECT 'DROP EVENT TRIGGER ' || quote_ident(evtname) FROM pg_event_trigger
                 UNION ALL SELECT 'DROP PUBLICATION ' || quote_ident(pubname) FROM pg_publication",
                &[],
            )
            .await
            .map_err(|e| self.pg.error("listing what --clean drops", e))?;
        let mut sql: Vec<String> = rows.into_iter().map(|r| r.get::<_, String>(0)).collect();
        sql.push("CREATE SCHEMA IF NOT EXISTS public AUTHORIZATION pg_database_owner".into());
        sql.push("GRANT USAGE ON SCHEMA public TO PUBLIC".into());
        client
            .batch_execute(&sql.join(";\n"))
            .await
            .map_err(|e| self.pg.error("dropping the target's contents (--clean)", e))?;
        tracing::warn!("--clean: dropped the contents of {}", self.pg.name);
        Ok(())
    }
}

/// The full copy of the chain a PostgreSQL restore takes.
fn only_copy(input: &RestoreInput) -> Result<&crate::repo::manifest::Manifest, SourceError> {
    let full = input
        .manifests
        .first()
        .ok_or_else(|| SourceError::Damaged("the chain has no full copy".into()))?;
    // A chain's incrementals continue the slot its full copy created.
    let has_slot = matches!(&full.copy.log_range.end, LogPosition::Postgres { slot: Some(_), .. });
    if input.manifests.len() > 1 && !has_slot {
        return Err(SourceError::Unsupported(format!(
            "copy {} was taken without incrementals (it kept no replication slot), so the incrementals after it \
             cannot be replayed; restore it alone (--copy {})",
            full.copy.id, full.copy.id
        )));
    }
    Ok(full)
}

#[async_trait]
impl Target for PostgresTarget {
    async fn digest_tables(&self, tables: &[TableToDigest]) -> Result<Vec<TableDigest>, SourceError> {
        super::digest::digest_tables(&self.pg, tables).await
    }

    async fn drop_databases(&self, names: &[String]) -> Result<(), SourceError> {
        super::digest::drop_databases(&self.pg, names).await
    }

    async fn hand_over(
        &self,
        handover: &crate::engine::NativeHandover<'_>,
    ) -> Result<crate::engine::ReplicationState, SourceError> {
        super::handover::hand_over(&self.pg, handover).await
    }

    async fn check_not_replicating(&self) -> Result<(), SourceError> {
        let client = match self.pg.connect("replica seed").await {
            Ok(client) => client,
            // A database that does not exist yet replicates nothing.
            Err(SourceError::NoDatabase { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let subscription: Option<String> = client
            .query_opt(
                "SELECT subname::text FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE \
                 datname = current_database()) LIMIT 1",
                &[],
            )
            .await
            .map_err(|e| self.pg.error("reading the target's subscriptions", e))?
            .map(|row| row.get(0));
        if let Some(name) = subscription {
            return Err(SourceError::Unsupported(format!(
                "{} already replicates: it has subscription {name}; drop it first (DROP SUBSCRIPTION)",
                self.pg.name
            )));
        }
        if let Some(running) = super::follow::states(&self.pg).await?.into_iter().find(|s| s.running) {
            return Err(SourceError::Unsupported(format!(
                "cairn's applier of source {} runs on {} ({}); stop it first with `cairn replica stop`",
                running.source,
                self.pg.name,
                running.applier.unwrap_or_else(|| "unknown".into())
            )));
        }
        Ok(())
    }

    async fn prepare_follow(&self, setup: &crate::engine::follow::FollowSetup<'_>) -> Result<(), SourceError> {
        super::follow::record_setup(&self.pg, setup).await
    }

    async fn follow(
        &self,
        source: &crate::engine::SourceSpec,
        options: &crate::engine::follow::FollowOptions,
    ) -> Result<crate::engine::follow::FollowReport, SourceError> {
        super::follow::follow(&self.pg, source, options).await
    }

    async fn replicas(&self) -> Result<Vec<crate::engine::follow::ReplicaState>, SourceError> {
        super::follow::states(&self.pg).await
    }

    async fn request_stop(&self, source: &str) -> Result<Option<crate::engine::follow::ReplicaState>, SourceError> {
        super::follow::request_stop(&self.pg, source).await
    }

    async fn preview(&self, input: &RestoreInput) -> Result<Vec<String>, SourceError> {
        only_copy(input)?;
        if input.manifests.len() == 1 {
            return Ok(Vec::new());
        }
        let checked = super::replay::check(input).await?;
        Ok(vec![
            format!(
                "checked: {} with {} (MD5 and every message decoded)",
                crate::text::count(input.manifests.len() as u64 - 1, "incremental"),
                crate::text::count(checked.in_chain, "transaction")
            ),
            checked.stop.describe(checked.in_chain),
        ])
    }

    async fn preflight(&self, input: &RestoreInput) -> Result<Vec<String>, SourceError> {
        only_copy(input)?;
        if !input.selection.is_empty() {
            return self.preflight_selected(input).await;
        }
        if input.resume {
            let (_, note) = self.resumable(input).await?;
            return Ok(vec![note]);
        }
        match self.pg.connect("restore").await {
            Ok(client) => match self.contents(&client).await? {
                Some(contents) if !input.clean => Err(SourceError::TargetNotEmpty {
                    database: self.pg.name.clone(),
                    detail: contents,
                }),
                Some(contents) => Ok(vec![format!("{}: --clean drops its {contents}", self.pg.name)]),
                None => Ok(vec![format!("{}: exists and is empty", self.pg.name)]),
            },
            Err(SourceError::NoDatabase { .. }) => {
                let admin = self.pg.with_database("postgres");
                let client = admin.connect("restore").await?;
                let may_create: bool = client
                    .query_one(
                        "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user",
                        &[],
                    )
                    .await
                    .map_err(|e| admin.error("reading the role's attributes", e))?
                    .get(0);
                if !may_create {
                    return Err(SourceError::Privilege {
                        database: self.pg.name.clone(),
                        doing: format!("creating database {}", self.pg.database()),
                        detail: "the role may not create databases (CREATEDB); create it yourself first".into(),
                    });
                }
                Ok(vec![format!(
                    "database {} does not exist: it is created",
                    self.pg.database()
                )])
            }
            Err(e) => Err(e),
        }
    }

    async fn restore(&self, input: &RestoreInput) -> Result<RestoreReport, SourceError> {
        let started = Instant::now();
        let manifest = only_copy(input)?;
        // The copy's roles, when the restore makes them: read (and a missing file refused)
        // before anything is restored, made before the schema that names them.
        let accounts = crate::engine::accounts::to_create(input, !input.selection.is_empty()).await?;
        if !input.selection.is_empty() {
            // Roles only: the live database's owner and grants are not the selection's.
            let made = match &accounts {
                Some(accounts) => {
                    let client = self.open_database().await?;
                    super::accounts::restore(&self.pg, &client, input, accounts, false).await?
                }
                None => Vec::new(),
            };
            let mut report = self.restore_selected_chain(input, started).await?;
            report.accounts = made;
            return Ok(report);
        }
        let resumed = match input.resume {
            true => Some(self.resumable(input).await?.0),
            false => None,
        };
        // The incrementals are fetched and checked, and the stop point located, before anything
        // is restored.
        let checked = match input.manifests.len() {
            1 => None,
            _ => Some(super::replay::check(input).await?),
        };
        if let (Some(Some(done)), Some(checked)) = (resumed, &checked)
            && let LogPosition::Postgres { lsn, .. } = &checked.stop.position
            && super::pgoutput::parse_lsn(lsn).is_ok_and(|stop| done > stop)
        {
            return Err(SourceError::Unsupported(format!(
                "--resume: {} already holds transactions up to {}, past the stop point ({lsn}); a replay cannot go \
                 back. Restore again with --clean to stop earlier",
                self.pg.name,
                super::pgoutput::lsn_text(done)
            )));
        }
        let (client, mut report) = match resumed {
            Some(_) => {
                tracing::info!("--resume: the full copy {} is already in the target", manifest.copy.id);
                let client = self.pg.connect("restore").await?;
                // What an interrupted first run made is kept; what it did not reach is made.
                let made = match &accounts {
                    Some(accounts) => super::accounts::restore(&self.pg, &client, input, accounts, true).await?,
                    None => Vec::new(),
                };
                let report = RestoreReport {
                    target: self.pg.name.clone(),
                    position: Some(manifest.copy.log_range.end.clone()),
                    accounts: made,
                    ..Default::default()
                };
                (client, report)
            }
            None => self.restore_full(input, accounts.as_ref()).await?,
        };
        if let Some(checked) = checked {
            tracing::info!(
                "restoring into {}: replaying {} of {}",
                self.pg.name,
                crate::text::count(checked.stop.applying, "transaction"),
                crate::text::count(checked.in_chain, "transaction")
            );
            let replayed = super::replay::replay(&self.pg, &client, input, checked, resumed.flatten(), None)
                .await
                .map_err(|cause| SourceError::ReplayStopped {
                    target: self.pg.name.clone(),
                    progress: format!(
                        "replication origin {}",
                        super::replay::origin_name(&self.pg.database(), &manifest.copy.id)
                    ),
                    cause: Box::new(cause),
                })?;
            report.incrementals = input.manifests.len() as u64 - 1;
            report.transactions = replayed.transactions;
            report.row_changes = replayed.row_changes;
            report.position = Some(replayed.position);
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

impl PostgresTarget {
    /// Checks, reading only, that the target holds a replay of this chain's full copy that
    /// `--resume` can continue: its recorded position (`None`: nothing applied yet), and a note
    /// for the dry run.
    ///
    /// # Errors
    /// [`SourceError::NothingToResume`] saying what to do instead, or the target's error.
    async fn resumable(&self, input: &RestoreInput) -> Result<(Option<u64>, String), SourceError> {
        let full = &input.manifests[0].copy.id;
        let nothing = |detail: String| SourceError::NothingToResume {
            target: self.pg.name.clone(),
            detail,
        };
        let client = match self.pg.connect("restore").await {
            Ok(client) => client,
            Err(SourceError::NoDatabase { .. }) => {
                return Err(nothing("the database does not exist; restore without --resume".into()));
            }
            Err(e) => return Err(e),
        };
        match super::replay::progress(&self.pg, &client, input).await? {
            Some(done) => Ok((
                done,
                format!(
                    "{}: holds full copy {full} with its replay applied up to {}; it continues from there",
                    self.pg.name,
                    done.map(super::pgoutput::lsn_text)
                        .unwrap_or_else(|| "its start".into())
                ),
            )),
            None => Err(nothing(format!(
                "no unfinished replay of full copy {full} is recorded there (the full restore did not finish, the \
                 replay already finished, or another copy was restored); restore again with --clean"
            ))),
        }
    }

    /// Restores the full copy into an empty (or `--clean`ed) database.
    async fn restore_full(
        &self,
        input: &RestoreInput,
        accounts: Option<&crate::engine::accounts::Accounts>,
    ) -> Result<(Client, RestoreReport), SourceError> {
        let manifest = &input.manifests[0];
        let copy = &manifest.copy.id;
        let files = files_of(&input.source, manifest)?;
        let destination = &input.destination;
        let pre = one_of(&files, FileKind::PreData, copy)?;
        let post = one_of(&files, FileKind::PostData, copy)?;
        let sequences = one_of(&files, FileKind::Sequences, copy)?;
        let refresh = one_of(&files, FileKind::Refresh, copy)?;

        let client = self.open_database().await?;
        // A replay that stopped in an earlier restore into this database recorded a position
        // that means nothing once the full copy is restored again: a later --resume must not
        // trust it (replication origins belong to the server, not to the database).
        super::replay::forget(&self.pg, &client, input).await?;
        if let Some(contents) = self.contents(&client).await? {
            if !input.clean {
                return Err(SourceError::TargetNotEmpty {
                    database: self.pg.name.clone(),
                    detail: contents,
                });
            }
            self.clean(&client).await?;
        }
        let made = match accounts {
            Some(accounts) => super::accounts::restore(&self.pg, &client, input, accounts, true).await?,
            None => Vec::new(),
        };

        // Schema files are small and read (and verified) before anything is created.
        let pre_sql = read_text(destination, &pre).await?;
        let post_sql = read_text(destination, &post).await?;
        let sequences_sql = read_text(destination, &sequences).await?;
        let refresh_sql = read_text(destination, &refresh).await?;
        let roles: BTreeSet<String> = client
            .query("SELECT rolname::text FROM pg_roles", &[])
            .await
            .map_err(|e| self.pg.error("listing roles", e))?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let (pre_sql, missing) = schema::keep_known_roles(&pre_sql, &roles);
        let (post_sql, missing_post) = schema::keep_known_roles(&post_sql, &roles);
        let missing: BTreeSet<String> = missing.into_iter().chain(missing_post).collect();
        if !missing.is_empty() {
            tracing::warn!(
                "roles {} do not exist on the target: their ownership and privileges were not restored",
                missing.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        tracing::info!("restoring copy {copy} into {}: schema", self.pg.name);
        let written = async {
            client
                .batch_execute(&pre_sql)
                .await
                .map_err(|e| self.pg.error("creating the schema (pre-data)", e))?;
            self.write(input, &files, &post_sql, &sequences_sql, &refresh_sql, &client)
                .await
        }
        .await;
        let (tables, rows, file_count) = written.map_err(|cause| SourceError::Incomplete {
            target: self.pg.name.clone(),
            cause: Box::new(cause),
        })?;
        let report = RestoreReport {
            target: self.pg.name.clone(),
            tables,
            rows,
            files: file_count,
            position: Some(manifest.copy.log_range.end.clone()),
            accounts: made,
            ..Default::default()
        };
        Ok((client, report))
    }
    /// Everything after the schema exists: data, post-data, sequences, views, statistics.
    async fn write(
        &self,
        input: &RestoreInput,
        files: &[StoredFile],
        post_sql: &str,
        sequences_sql: &str,
        refresh_sql: &str,
        client: &Client,
    ) -> Result<(u64, u64, u64), SourceError> {
        let copy = &input.manifests[0].copy.id;
        let destination = &input.destination;

        let data = data_files(files);
        let tables: BTreeSet<(String, String)> = data
            .iter()
            .map(|f| {
                (
                    f.data().map(|d| d.container().to_string()).unwrap_or_default(),
                    f.data().map(|d| d.table.clone()).unwrap_or_default(),
                )
            })
            .collect();
        let file_count = data.len() as u64;
        tracing::info!(
            "restoring copy {copy}: {} of {} with {}",
            crate::text::count(file_count, "data file"),
            crate::text::count(tables.len() as u64, "table"),
            crate::text::count(input.jobs, "job")
        );
        let publication = match &input.manifests[0].copy.log_range.end {
            LogPosition::Postgres { slot, .. } => slot.as_deref(),
            LogPosition::Mysql { .. } => None,
        };
        let script = schema::without_cairn_objects(schema::split(post_sql), publication);
        let [keys, foreign, rest] = schema::post_data_phases(&script);
        let jobs = input.jobs.max(1) as usize;
        // Each table's indexes and keys are built as soon as its rows are in, beside other
        // tables' loads (schedule.rs); what belongs to no loaded table comes after.
        let (schedule, later) = Schedule::new(data, keys, jobs);
        let progress = Progress::new(format!("restore of {copy}: data files (stored size)"), file_count);
        let _reporter = progress.report_every(super::PROGRESS_EVERY);
        let rows: u64 = pool::run("loading data", 0..jobs, |_| {
            let (this, destination, schedule, progress, preamble) = (
                self.clone(),
                destination.clone(),
                schedule.clone(),
                progress.clone(),
                script.preamble.clone(),
            );
            async move { this.scheduled_worker(destination, schedule, progress, preamble).await }
        })
        .await?
        .into_iter()
        .sum();

        tracing::info!("restoring copy {copy}: foreign keys, triggers and the rest of the post-data");
        self.run_entries(later, &script.preamble, jobs).await?;
        self.run_entries(foreign, &script.preamble, jobs).await?;
        self.run_entries(rest, &script.preamble, 1).await?;
        client
            .batch_execute(sequences_sql)
            .await
            .map_err(|e| self.pg.error("setting sequences", e))?;
        client
            .batch_execute(refresh_sql)
            .await
            .map_err(|e| self.pg.error("refreshing materialized views", e))?;
        self.analyze(client, jobs).await?;
        Ok((tables.len() as u64, rows, file_count))
    }
}

/// Connects to `pg`'s database, creating it when it does not exist (also the target of a MySQL
/// copy restored into PostgreSQL).
///
/// # Errors
/// Login, or a database this user may not create.
pub(crate) async fn open_database(pg: &Pg) -> Result<Client, SourceError> {
    match pg.connect("restore").await {
        Ok(client) => return Ok(client),
        Err(SourceError::NoDatabase { .. }) => {}
        Err(e) => return Err(e),
    }
    let database = pg.database();
    let admin = pg.with_database("postgres");
    let client = admin.connect("restore").await?;
    // template0: a clean database, whatever was added to template1.
    client
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE template0",
            quote_ident(&database)
        ))
        .await
        .map_err(|e| {
            admin.error(
                &format!("creating database {database} (create it yourself if this user may not)"),
                e,
            )
        })?;
    tracing::info!("created database {database}");
    pg.connect("restore").await
}
