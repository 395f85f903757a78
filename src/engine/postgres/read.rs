//! Reading a PostgreSQL full copy's data: workers that each take the next chunk of a table and
//! stream its rows, in the copy's snapshot and under fixed output settings, to the copy.

use super::*;

impl PostgresSource {
    /// One worker: imports the snapshot, then copies chunks until the queue is empty; returns
    /// the rows and bytes it read.
    pub(super) async fn worker(
        &self,
        snapshot: String,
        queue: Queue<inventory::Chunk>,
        writer: CopyWriter,
        progress: Arc<Progress>,
    ) -> Result<(u64, u64), SourceError> {
        let pg = &self.pg;
        let client = pg.connect("backup worker").await?;
        client
            .batch_execute(&format!(
                "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
                 BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}; {}",
                quote_literal(&snapshot),
                // The copy's text (and row digests) must not depend on the server's defaults.
                apply::OUTPUT_SETTINGS
            ))
            .await
            .map_err(|e| pg.error("importing the copy's snapshot", e))?;
        let (mut rows, mut bytes) = (0u64, 0u64);
        while let Some(chunk) = queue.next() {
            let sql = chunk.copy_out_sql();
            let doing = format!("reading {} (chunk {})", chunk.table.qualified(), chunk.index);
            let stream = client.copy_out(sql.as_str()).await.map_err(|e| pg.error(&doing, e))?;
            let counters = Counters::default();
            // Driver errors travel through the byte stream as io errors; keep the original text.
            let reader = crate::streams::Batched::new(Box::pin(stream.map_err(std::io::Error::other)));
            let body = Counting::new(reader, counters.clone());
            let path = format!(
                "data/{}/{:05}.copy",
                stored::table_folder(&chunk.table.oid.to_string(), &chunk.table.schema, &chunk.table.name),
                chunk.index
            );
            let counted = counters.clone();
            let table = chunk.table.clone();
            let condition = chunk.condition.clone();
            writer
                .put_file(&path, body, move || {
                    stored::data_details(
                        ("schema", &table.schema),
                        &table.name,
                        json!(table.columns),
                        &counted,
                        condition,
                    )
                })
                .await
                .map_err(|e| match e {
                    crate::storage::DestinationError::Body { source, .. } => SourceError::Database {
                        database: pg.name.clone(),
                        doing: doing.clone(),
                        detail: source.to_string(),
                    },
                    other => other.into(),
                })?;
            rows += counters.newlines();
            bytes += counters.bytes();
            progress.done(counters.bytes());
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg.error("finishing a worker", e))?;
        Ok((rows, bytes))
    }
}
