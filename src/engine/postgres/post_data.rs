//! Post-data work on a restore's connections: pg_dump's post-data entries (indexes, keys,
//! foreign keys, triggers) run on several connections at once, and the planner's statistics
//! gathered the same way.

use tokio_postgres::Client;

use super::schema::{self, Entry};
use super::target::PostgresTarget;
use crate::engine::SourceError;
use crate::engine::pool::{self, Queue};

impl PostgresTarget {
    /// Runs entries on `jobs` connections at once, each first applying pg_dump's session settings.
    pub(super) async fn run_entries(
        &self,
        entries: Vec<Entry>,
        preamble: &str,
        jobs: usize,
    ) -> Result<(), SourceError> {
        if entries.is_empty() {
            return Ok(());
        }
        let queue = Queue::new(entries);
        let workers = jobs.max(1).min(queue.len());
        pool::run("creating post-data objects", 0..workers, |_| {
            let (this, queue, preamble) = (self.clone(), queue.clone(), preamble.to_string());
            async move {
                let client = this.post_data_session(&preamble).await?;
                while let Some(entry) = queue.next() {
                    this.run_entry(&client, &entry).await?;
                }
                Ok::<(), SourceError>(())
            }
        })
        .await?;
        Ok(())
    }

    /// A connection for post-data entries, with pg_dump's session settings (`preamble`) applied.
    async fn post_data_session(&self, preamble: &str) -> Result<Client, SourceError> {
        let client = self.pg.connect("restore post-data").await?;
        self.prepare_post_data(&client, preamble).await?;
        Ok(client)
    }

    /// Applies pg_dump's session settings (`preamble`) to `client`, for post-data entries.
    pub(super) async fn prepare_post_data(&self, client: &Client, preamble: &str) -> Result<(), SourceError> {
        client
            .batch_execute(&format!("{preamble}\nSET statement_timeout = 0;"))
            .await
            .map_err(|e| self.pg.error("preparing a post-data session", e))
    }

    /// Runs one post-data entry on a [`PostgresTarget::post_data_session`].
    pub(super) async fn run_entry(&self, client: &Client, entry: &Entry) -> Result<(), SourceError> {
        client
            .batch_execute(&entry.sql)
            .await
            .map_err(|e| self.pg.error(&entry_doing(entry), e))
    }
}

/// What running a post-data entry is, for its error.
fn entry_doing(entry: &Entry) -> String {
    match entry.kind.as_str() {
        "ANALYZE" => format!("analyzing {}", schema::qualified(&entry.schema, &entry.name)),
        kind => format!("creating {kind} {}", entry.name),
    }
}

impl PostgresTarget {
    /// Gathers the planner's statistics of every table and materialized view, largest first, one
    /// relation per statement on `jobs` connections at once: a database-wide `ANALYZE` works
    /// through them one by one on one core, and took a third of the index phase's time.
    pub(super) async fn analyze(&self, client: &Client, jobs: usize) -> Result<(), SourceError> {
        let relations = client
            .query(
                // Partitions are left to their partitioned table, whose ANALYZE also analyzes
                // each of them (and which has no size of its own: it goes first). Other
                // sessions' temporary tables are not the restore's.
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'm', 'p') AND NOT c.relispartition AND c.relpersistence <> 't' \
                 AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
                 ORDER BY c.relkind = 'p' DESC, pg_total_relation_size(c.oid) DESC",
                &[],
            )
            .await
            .map_err(|e| self.pg.error("listing the tables to analyze", e))?;
        let entries = relations
            .into_iter()
            .map(|row| {
                let (schema_name, name): (String, String) = (row.get(0), row.get(1));
                Entry {
                    kind: "ANALYZE".into(),
                    sql: format!("ANALYZE {}", schema::qualified(&schema_name, &name)),
                    name,
                    schema: schema_name,
                }
            })
            .collect();
        self.run_entries(entries, "", jobs).await
    }
}
