//! The restore itself of a selective PostgreSQL restore: the target checked (every relation it
//! makes absent, every table a kept key references present), the chosen tables' pre-data in one
//! transaction, their rows, keys and indexes, sequence values, then their changes in the
//! incrementals.

use std::collections::BTreeSet;

use super::super::schema::{self, Entry, Script};
use super::{Key, selected};
use crate::engine::{RestoreInput, SourceError};

impl super::super::target::PostgresTarget {
    /// Whether the target has a relation `schema`.`table`.
    async fn exists(&self, client: &tokio_postgres::Client, schema: &str, table: &str) -> Result<bool, SourceError> {
        Ok(client
            .query_one(
                "SELECT to_regclass(quote_ident($1) || '.' || quote_ident($2)) IS NOT NULL",
                &[&schema, &table],
            )
            .await
            .map_err(|e| self.pg.error("inspecting the target", e))?
            .get(0))
    }

    /// Refuses, before anything is created, when a kept foreign key references a table the
    /// target lacks.
    async fn check_referenced(
        &self,
        client: &tokio_postgres::Client,
        needs: &[(Key, String)],
    ) -> Result<(), SourceError> {
        for ((schema, table), key) in needs {
            if !self.exists(client, schema, table).await? {
                return Err(SourceError::Unsupported(format!(
                    "--keep-foreign-keys: foreign key {key} references {schema}.{table}, which the target does not \
                     have; restore that table too, or leave the key out (without --keep-foreign-keys) — nothing was \
                     restored"
                )));
            }
        }
        Ok(())
    }

    /// Refuses, before anything is created, when the target has any of the tables.
    async fn check_absent(&self, client: &tokio_postgres::Client, tables: &BTreeSet<Key>) -> Result<(), SourceError> {
        let mut present = Vec::new();
        for (schema, table) in tables {
            if self.exists(client, schema, table).await? {
                present.push(format!("{schema}.{table}"));
            }
        }
        if present.is_empty() {
            return Ok(());
        }
        Err(SourceError::TargetNotEmpty {
            database: self.pg.name.clone(),
            detail: format!(
                "it has {} already (a table, or a name the restored tables' sequences or indexes take); drop or \
                 rename it first, or restore beside it with --into-schema — nothing was restored",
                present.join(", ")
            ),
        })
    }

    /// What a selective restore would create (`--dry-run`, and before a restore).
    pub(in crate::engine::postgres) async fn preflight_selected(
        &self,
        input: &RestoreInput,
    ) -> Result<Vec<String>, SourceError> {
        let (selected, _, _) = selected(input).await?;
        let client = self.pg.connect("restore").await?;
        self.check_absent(&client, &selected.relations()).await?;
        self.check_referenced(&client, &selected.needs).await?;
        let mut notes: Vec<String> = selected
            .made
            .iter()
            .map(|(s, t)| format!("table {s}.{t}: absent, restored"))
            .collect();
        notes.extend(selected.left_out.iter().map(|line| format!("left out: {line}")));
        Ok(notes)
    }

    /// Restores the tables `input.selection` chooses of the chain: the full copy's, then their
    /// changes in the incrementals. Every log is fetched and checked first.
    ///
    /// # Errors
    /// As [`Self::restore_selected`], or a change the replay refuses.
    pub(in crate::engine::postgres) async fn restore_selected_chain(
        &self,
        input: &RestoreInput,
        started: std::time::Instant,
    ) -> Result<crate::engine::RestoreReport, SourceError> {
        let checked = match input.manifests.len() {
            1 => None,
            _ => Some(super::super::replay::check(input).await?),
        };
        let mut report = self.restore_selected(input).await?;
        if let Some(checked) = checked {
            let (selected, _, _) = selected(input).await?;
            let client = self.pg.connect("restore").await?;
            let replayed = super::super::replay::replay(&self.pg, &client, input, checked, None, Some(&selected))
                .await
                .map_err(|cause| SourceError::ReplayStopped {
                    target: self.pg.name.clone(),
                    progress: "the restored tables, as the replay left them".into(),
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

    /// Restores the tables `input.selection` chooses of the full copy.
    ///
    /// # Errors
    /// As [`select`], a chosen table the target has ([`SourceError::TargetNotEmpty`], before
    /// anything is created), a damaged file, or the target's error.
    pub(super) async fn restore_selected(
        &self,
        input: &RestoreInput,
    ) -> Result<crate::engine::RestoreReport, SourceError> {
        use crate::engine::pool::{self, Queue};
        use crate::repo::reader::{data_files, files_of};
        let started = std::time::Instant::now();
        let manifest = &input.manifests[0];
        let (selected, preamble, sequences_sql) = selected(input).await?;
        for line in &selected.left_out {
            tracing::warn!("not restored: {line}");
        }
        let client = super::super::target::open_database(&self.pg).await?;
        self.check_absent(&client, &selected.relations()).await?;
        self.check_referenced(&client, &selected.needs).await?;
        let roles: BTreeSet<String> = client
            .query("SELECT rolname::text FROM pg_roles", &[])
            .await
            .map_err(|e| self.pg.error("listing roles", e))?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let schemas: BTreeSet<&String> = selected.made.iter().map(|(s, _)| s).collect();
        let mut sql = format!("{preamble}\n");
        for schema in schemas {
            sql.push_str(&format!(
                "CREATE SCHEMA IF NOT EXISTS {};\n",
                super::super::quote_ident(schema)
            ));
        }
        for entry in &selected.pre {
            sql.push_str(&entry.sql);
            sql.push('\n');
        }
        let (sql, missing) = schema::keep_known_roles(&sql, &roles);
        if !missing.is_empty() {
            tracing::warn!(
                "roles {} do not exist on the target: their ownership and privileges were not restored",
                missing.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        let written = async {
            client
                .batch_execute(&format!("BEGIN;\n{sql}\nCOMMIT;"))
                .await
                .map_err(|e| self.pg.error("creating the restored tables", e))?;
            let files = files_of(&input.source, manifest)?;
            let data: Vec<_> = data_files(&files)
                .into_iter()
                .filter(|f| {
                    f.data()
                        .is_some_and(|d| selected.tables.contains(&(d.container().to_string(), d.table.clone())))
                })
                .collect();
            let file_count = data.len() as u64;
            let queue = Queue::new(data);
            let progress = crate::progress::Progress::new("restore: data files (stored size)", file_count);
            let rows: u64 = pool::run("loading data", 0..input.jobs.max(1), |_| {
                let (this, destination, queue, progress, into) = (
                    self.clone(),
                    input.destination.clone(),
                    queue.clone(),
                    progress.clone(),
                    selected.into.clone(),
                );
                async move { this.load_worker(destination, queue, progress, into).await }
            })
            .await?
            .into_iter()
            .sum();
            let post: Vec<Entry> = selected
                .post
                .iter()
                .map(|e| Entry {
                    sql: schema::keep_known_roles(&e.sql, &roles).0,
                    ..e.clone()
                })
                .collect();
            let [keys, foreign, rest] = schema::post_data_phases(&Script {
                preamble: preamble.clone(),
                entries: post,
            });
            let jobs = input.jobs as usize;
            self.run_entries(keys, &preamble, jobs).await?;
            self.run_entries(foreign, &preamble, jobs).await?;
            self.run_entries(rest, &preamble, 1).await?;
            client
                .batch_execute(&selected.sequence_values(&sequences_sql))
                .await
                .map_err(|e| self.pg.error("setting sequences", e))?;
            for (schema, table) in &selected.made {
                client
                    .batch_execute(&format!("ANALYZE {}", schema::qualified(schema, table)))
                    .await
                    .map_err(|e| self.pg.error("analyzing", e))?;
            }
            Ok::<_, SourceError>((rows, file_count))
        }
        .await;
        let (rows, files) = written.map_err(|cause| SourceError::Incomplete {
            target: self.pg.name.clone(),
            cause: Box::new(cause),
        })?;
        for (schema, table) in &selected.made {
            tracing::info!("restored {schema}.{table} from copy {}", manifest.copy.id);
        }
        Ok(crate::engine::RestoreReport {
            target: self.pg.name.clone(),
            tables: selected.tables.len() as u64,
            rows,
            files,
            position: Some(manifest.copy.log_range.end.clone()),
            seconds: started.elapsed().as_secs_f64(),
            ..Default::default()
        })
    }
}
