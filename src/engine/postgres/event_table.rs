//! An event table on PostgreSQL (`cairn replica events`): its largest key, its first row, rows
//! after a key read as one JSON array and inserted with `json_populate_recordset` in one
//! transaction; the source session may `LISTEN` for a channel that says new rows are there.

use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::Client;

use super::{Pg, quote_ident};
use crate::engine::event_tables::{Batch, EventStore};
use crate::engine::{SourceError, SourceUrl};

/// One session on one database's event table.
pub struct PgEvents {
    pg: Pg,
    client: Client,
    name: String,
    qualified: String,
    key: String,
    /// The key's type, which a key given as text is cast to.
    key_type: String,
    notifications: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
}

impl PgEvents {
    /// Opens `schema.table` in `url`'s database, checking that the table and `key` exist;
    /// with `channel`, the session listens for it.
    ///
    /// # Errors
    /// A missing table or key column, or the server's error.
    pub async fn open(
        url: &SourceUrl,
        schema: &str,
        table: &str,
        key: &str,
        channel: Option<&str>,
    ) -> Result<Self, SourceError> {
        let pg = Pg::new(url.clone());
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let client = match channel {
            Some(_) => pg.connect_with("replica events", Some(sender)).await?,
            None => pg.connect("replica events").await?,
        };
        client
            .batch_execute(super::apply::OUTPUT_SETTINGS)
            .await
            .map_err(|e| pg.error("preparing the event table's session", e))?;
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
        let key_type: Option<String> = client
            .query_opt(
                "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = \
                 to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
                &[&qualified, &key],
            )
            .await
            .map_err(|e| pg.error(&format!("reading the columns of {schema}.{table}"), e))?
            .map(|row| row.get(0));
        let Some(key_type) = key_type else {
            return Err(SourceError::Unsupported(format!(
                "{}: table {schema}.{table} does not exist or has no column {key} (--key)",
                pg.name
            )));
        };
        if let Some(channel) = channel {
            client
                .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
                .await
                .map_err(|e| pg.error(&format!("listening on channel {channel}"), e))?;
        }
        Ok(PgEvents {
            name: format!("{}/{schema}.{table}", pg.name),
            qualified,
            key: quote_ident(key),
            key_type,
            notifications: channel.map(|_| receiver),
            pg,
            client,
        })
    }

    async fn text(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        doing: &str,
    ) -> Result<Option<String>, SourceError> {
        Ok(self
            .client
            .query_opt(sql, params)
            .await
            .map_err(|e| self.pg.error(&format!("{doing} {}", self.name), e))?
            .and_then(|row| row.get(0)))
    }
}

#[async_trait]
impl EventStore for PgEvents {
    fn name(&self) -> &str {
        &self.name
    }

    async fn max_key(&mut self) -> Result<Option<String>, SourceError> {
        let sql = format!("SELECT max({})::text FROM {}", self.key, self.qualified);
        self.text(&sql, &[], "reading the largest key of").await
    }

    async fn first_row(&mut self) -> Result<Option<String>, SourceError> {
        let sql = format!(
            "SELECT row_to_json(t)::text FROM (SELECT * FROM {} ORDER BY {} LIMIT 1) t",
            self.qualified, self.key
        );
        self.text(&sql, &[], "reading the first row of").await
    }

    async fn count_upto(&mut self, max: &str) -> Result<u64, SourceError> {
        let sql = format!(
            "SELECT count(*)::text FROM {} WHERE {} <= $1::text::{}",
            self.qualified, self.key, self.key_type
        );
        let count = self.text(&sql, &[&max], "counting the rows of").await?;
        Ok(count.and_then(|c| c.parse().ok()).unwrap_or(0))
    }

    async fn read_after(&mut self, after: Option<&str>, limit: u32) -> Result<Batch, SourceError> {
        let filter = match after {
            Some(_) => format!("WHERE {} > $1::text::{}", self.key, self.key_type),
            None => "WHERE $1::text IS NULL".to_string(),
        };
        let sql = format!(
            "SELECT coalesce(json_agg(t ORDER BY cairn_event_key), '[]')::text, count(*)::text, \
             max(cairn_event_key)::text FROM (SELECT *, {key} AS cairn_event_key FROM {} {filter} ORDER BY {key} \
             LIMIT {limit}) t",
            self.qualified,
            key = self.key
        );
        let row = self
            .client
            .query_one(&sql, &[&after])
            .await
            .map_err(|e| self.pg.error(&format!("reading new rows of {}", self.name), e))?;
        let (json, rows, last_key): (String, String, Option<String>) = (row.get(0), row.get(1), row.get(2));
        Ok(Batch::Postgres {
            json,
            rows: rows.parse().unwrap_or(0),
            last_key,
        })
    }

    async fn insert(&mut self, batch: &Batch) -> Result<(), SourceError> {
        let Batch::Postgres { json, .. } = batch else {
            return Err(SourceError::Unsupported(format!(
                "{}: rows of another engine cannot be inserted",
                self.name
            )));
        };
        // The JSON carries an extra `cairn_event_key` (the key again), which `json_populate_recordset`
        // ignores: it fills the table's own columns by name.
        let sql = format!(
            "INSERT INTO {q} SELECT * FROM json_populate_recordset(NULL::{q}, $1::text::json)",
            q = self.qualified
        );
        self.client
            .execute(&sql, &[json])
            .await
            .map_err(|e| self.pg.error(&format!("inserting new rows into {}", self.name), e))?;
        Ok(())
    }

    async fn wait_for_news(&mut self, wait: Duration) {
        match self.notifications.as_mut() {
            Some(notifications) => {
                let _ = tokio::time::timeout(wait, notifications.recv()).await;
            }
            None => tokio::time::sleep(wait).await,
        }
    }
}
