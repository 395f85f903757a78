//! An event table on MySQL/MariaDB (`cairn replica events`): its largest key, its first row,
//! rows after a key read with the binary protocol (values keep their types), and batches
//! inserted in one transaction.

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};

use super::{My, quote_ident};
use crate::engine::event_tables::{Batch, EventStore};
use crate::engine::{SourceError, SourceUrl};

/// Rows per `INSERT` statement (well under the protocol's 65,535 placeholders).
const ROWS_PER_INSERT: usize = 200;

/// One session on one database's event table.
pub struct MysqlEvents {
    my: My,
    conn: Conn,
    name: String,
    qualified: String,
    key: String,
    /// How a key given as text is compared: exactly, as a decimal, for integer keys.
    key_param: &'static str,
    columns: Vec<String>,
}

impl MysqlEvents {
    /// Opens `database.table` on `url`'s server, checking that the table and `key` exist.
    ///
    /// # Errors
    /// A missing table or key column, or the server's error.
    pub async fn open(url: &SourceUrl, database: &str, table: &str, key: &str) -> Result<Self, SourceError> {
        let my = My::new(url.clone());
        let mut conn = my.connect(None).await?;
        let doing = format!("reading the columns of {database}.{table}");
        let columns: Vec<(String, String)> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND \
                 TABLE_NAME = ? AND EXTRA NOT LIKE '%GENERATED%' ORDER BY ORDINAL_POSITION",
                (database, table),
            )
            .await
            .map_err(|e| my.error(&doing, e))?;
        let Some((_, key_type)) = columns.iter().find(|(name, _)| name == key) else {
            return Err(SourceError::Unsupported(format!(
                "{}: table {database}.{table} {}",
                my.name,
                match columns.is_empty() {
                    true => "does not exist".to_string(),
                    false => format!("has no column {key} (--key)"),
                }
            )));
        };
        let integer =
            ["tinyint", "smallint", "mediumint", "int", "bigint"].contains(&key_type.to_ascii_lowercase().as_str());
        conn.query_drop("SET SESSION time_zone = '+00:00'")
            .await
            .map_err(|e| my.error("preparing the event table's session", e))?;
        Ok(MysqlEvents {
            name: format!("{}/{database}.{table}", my.name),
            qualified: format!("{}.{}", quote_ident(database), quote_ident(table)),
            key: quote_ident(key),
            key_param: if integer { "CAST(? AS DECIMAL(65,0))" } else { "?" },
            columns: columns.into_iter().map(|(name, _)| name).collect(),
            my,
            conn,
        })
    }

    fn list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[async_trait]
impl EventStore for MysqlEvents {
    fn name(&self) -> &str {
        &self.name
    }

    async fn max_key(&mut self) -> Result<Option<String>, SourceError> {
        let sql = format!("SELECT CAST(MAX({}) AS CHAR) FROM {}", self.key, self.qualified);
        let max: Option<Option<String>> = self
            .conn
            .query_first(sql)
            .await
            .map_err(|e| self.my.error(&format!("reading the largest key of {}", self.name), e))?;
        Ok(max.flatten())
    }

    async fn first_row(&mut self) -> Result<Option<String>, SourceError> {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {} LIMIT 1",
            self.list(),
            self.qualified,
            self.key
        );
        let row: Option<mysql_async::Row> = self
            .conn
            .exec_first(sql, ())
            .await
            .map_err(|e| self.my.error(&format!("reading the first row of {}", self.name), e))?;
        Ok(row.map(|row| {
            row.unwrap()
                .iter()
                .map(|v| v.as_sql(false))
                .collect::<Vec<_>>()
                .join(", ")
        }))
    }

    async fn count_upto(&mut self, max: &str) -> Result<u64, SourceError> {
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE {} <= {}",
            self.qualified, self.key, self.key_param
        );
        let count: Option<u64> = self
            .conn
            .exec_first(sql, (max,))
            .await
            .map_err(|e| self.my.error(&format!("counting the rows of {}", self.name), e))?;
        Ok(count.unwrap_or(0))
    }

    async fn read_after(&mut self, after: Option<&str>, limit: u32) -> Result<Batch, SourceError> {
        let (filter, params) = match after {
            Some(after) => (
                format!("WHERE {} > {}", self.key, self.key_param),
                Params::Positional(vec![Value::from(after)]),
            ),
            None => (String::new(), Params::Empty),
        };
        let sql = format!(
            "SELECT {}, CAST({} AS CHAR) FROM {} {filter} ORDER BY {} LIMIT {limit}",
            self.list(),
            self.key,
            self.qualified,
            self.key
        );
        let read: Vec<mysql_async::Row> = self
            .conn
            .exec(sql, params)
            .await
            .map_err(|e| self.my.error(&format!("reading new rows of {}", self.name), e))?;
        let mut rows = Vec::with_capacity(read.len());
        let mut last_key = None;
        for row in read {
            let mut values = row.unwrap();
            let key_text = values.pop();
            last_key = key_text.map(|v| match v {
                Value::Bytes(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                other => other.as_sql(true),
            });
            rows.push(values);
        }
        Ok(Batch::Mysql {
            columns: self.columns.clone(),
            rows,
            last_key,
        })
    }

    async fn insert(&mut self, batch: &Batch) -> Result<(), SourceError> {
        let Batch::Mysql { columns, rows, .. } = batch else {
            return Err(SourceError::Unsupported(format!(
                "{}: rows of another engine cannot be inserted",
                self.name
            )));
        };
        let doing = format!("inserting new rows into {}", self.name);
        let list = columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
        let placeholders = format!("({})", vec!["?"; columns.len()].join(", "));
        let mut tx = self
            .conn
            .start_transaction(Default::default())
            .await
            .map_err(|e| self.my.error(&doing, e))?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO {} ({list}) VALUES {}",
                self.qualified,
                vec![placeholders.as_str(); chunk.len()].join(", ")
            );
            let params: Vec<Value> = chunk.iter().flatten().cloned().collect();
            tx.exec_drop(sql, Params::Positional(params))
                .await
                .map_err(|e| self.my.error(&doing, e))?;
        }
        tx.commit().await.map_err(|e| self.my.error(&doing, e))
    }
}
