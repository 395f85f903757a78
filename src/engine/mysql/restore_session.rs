//! The sessions a MySQL restore writes through: the one that makes databases, tables and
//! objects, and the connections that build indexes and foreign keys, each with the restore's
//! session settings (and, with `--no-binlog`, out of the binary log).

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::target::MysqlTarget;
use crate::engine::SourceError;
use crate::engine::pool::{self, Queue};

impl MysqlTarget {
    /// The session that makes databases, tables, views and routines (`no_binlog`: out of the
    /// binary log).
    pub(super) async fn admin(&self, no_binlog: bool) -> Result<Conn, SourceError> {
        // No default database: the one in the URL may not exist yet.
        let mut conn = self.my.connect(Some("")).await?;
        conn.query_drop(
            "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO', SESSION foreign_key_checks = 0, NAMES utf8mb4",
        )
        .await
        .map_err(|e| self.my.error("preparing the restore session", e))?;
        self.out_of_binlog(&mut conn, no_binlog).await?;
        Ok(conn)
    }

    /// With `--no-binlog`, leaves what `conn` does out of the binary log: every connection that
    /// writes in a restore (schema, rows, indexes, keys, views, routines) — a replica of the
    /// target must get none of it, not the tables without their rows.
    pub(super) async fn out_of_binlog(&self, conn: &mut Conn, no_binlog: bool) -> Result<(), SourceError> {
        if no_binlog {
            conn.query_drop("SET SESSION sql_log_bin = 0").await.map_err(|e| {
                self.my
                    .error("turning the binary log off for the restore (--no-binlog)", e)
            })?;
        }
        Ok(())
    }

    /// Runs `statements` on `jobs` connections at once (indexes, foreign keys: one `ALTER
    /// TABLE` per table each).
    pub(super) async fn run_parallel(
        &self,
        statements: Vec<String>,
        jobs: usize,
        no_binlog: bool,
        doing: &'static str,
    ) -> Result<(), SourceError> {
        if statements.is_empty() {
            return Ok(());
        }
        let queue = Queue::new(statements);
        pool::run(doing, 0..jobs.max(1), |_| {
            let (this, queue) = (self.clone(), queue.clone());
            async move {
                let mut conn = this.my.connect(None).await?;
                conn.query_drop("SET SESSION foreign_key_checks = 0, SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'")
                    .await
                    .map_err(|e| this.my.error(doing, e))?;
                this.out_of_binlog(&mut conn, no_binlog).await?;
                while let Some(statement) = queue.next() {
                    conn.query_drop(&statement)
                        .await
                        .map_err(|e| this.my.error(&format!("{doing}: {statement}"), e))?;
                }
                Ok::<(), SourceError>(())
            }
        })
        .await?;
        Ok(())
    }
}
