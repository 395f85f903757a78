//! A few tables read consistently at a known binary log position, outside a copy: what
//! `cairn replica reload` copies again into a PostgreSQL replica. The snapshot is a copy's
//! (MariaDB's lock-free one, or a brief global read lock on MySQL); each table's definition is
//! read again once the snapshot holds the table, and a table changed in between fails the reload
//! rather than pairing rows with a definition they were not written under.

use super::*;

/// A table in the snapshot: its definition as a copy records it, and the columns read.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotTable {
    pub database: String,
    pub name: String,
    /// `SHOW CREATE TABLE` without what `added` holds.
    pub create: String,
    /// The secondary indexes and foreign keys, as `ADD …` clauses.
    pub added: Vec<String>,
    /// The columns the rows hold, in order (generated columns are not read).
    pub columns: Vec<String>,
    inventory: inventory::Table,
}

/// An open snapshot of chosen tables and the log position it matches.
pub(crate) struct TableSnapshot {
    my: My,
    conn: Conn,
    pub position: LogPosition,
    pub tables: Vec<SnapshotTable>,
}

/// The session the definitions are read in: names quoted, text as UTF-8.
const DEFINITION_SESSION: &str = "SET SESSION sql_mode = '', NAMES utf8mb4, SESSION sql_quote_show_create = 1";

impl TableSnapshot {
    /// Opens a snapshot of the base tables of `source` that `pick` chooses (by database and
    /// table); the server must be `identity_expected`, the one the replica was seeded from.
    ///
    /// # Errors
    /// Another server, a server without a binary log, a table changed while the snapshot was
    /// taken ([`SourceError::Locked`]: run again), login or the server's error.
    pub(crate) async fn open(
        source: &SourceSpec,
        identity_expected: &str,
        pick: &(dyn Fn(&str, &str) -> bool + Sync),
        lock_wait: Duration,
    ) -> Result<TableSnapshot, SourceError> {
        let my = My::new(source.url.clone());
        let mut conn = my.connect(None).await?;
        let server = server(&my, &mut conn).await?;
        let found = capture::identity(&server);
        if found != identity_expected {
            return Err(SourceError::Unsupported(format!(
                "source {} is now {found}, not {identity_expected} the replica was seeded from: its log positions \
                 mean something else; seed the replica again",
                source.name
            )));
        }
        if !server.log_bin {
            return Err(SourceError::Unsupported(format!(
                "source {}: the binary log is off, so a reloaded table would have no position to rejoin the log at",
                source.name
            )));
        }
        conn.query_drop(DEFINITION_SESSION)
            .await
            .map_err(|e| my.error("preparing the reload session", e))?;
        // Definitions first, then the columns: a change after either shows in the second reading.
        let listed = inventory::tables(&my, &mut conn, &crate::engine::filter::Filters::default()).await?;
        let chosen: Vec<inventory::Table> = listed.into_iter().filter(|t| pick(&t.database, &t.name)).collect();
        let mut before = Vec::new();
        for table in &chosen {
            before.push(show_create(&my, &mut conn, table).await?);
        }
        for statement in DUMP_SESSION {
            conn.query_drop(statement)
                .await
                .map_err(|e| my.error("preparing the reload session", e))?;
        }
        let position = if server.mariadb {
            lock_free_snapshot(&my, &mut conn, &server).await?
        } else {
            let lock_wait = lock_wait.as_secs().max(1);
            locked_snapshot(&my, &server, std::slice::from_mut(&mut conn), lock_wait)
                .await?
                .0
        };
        conn.query_drop(DEFINITION_SESSION)
            .await
            .map_err(|e| my.error("preparing the reload session", e))?;
        let mut tables = Vec::new();
        for (table, before) in chosen.into_iter().zip(before) {
            // Reading the table in the snapshot holds its metadata lock until the end: no DDL
            // changes it from here on, so the definition read now is the rows' — unless DDL came
            // between the snapshot and this read, which the first reading shows.
            conn.query_drop(format!("SELECT 1 FROM {} LIMIT 0", table.qualified()))
                .await
                .map_err(|e| my.error(&format!("reading {} in the snapshot", table.qualified()), e))?;
            let now = show_create(&my, &mut conn, &table).await?;
            if now != before {
                return Err(SourceError::Locked {
                    database: my.name.clone(),
                    doing: format!("reloading {}.{}", table.database, table.name),
                    detail: "its definition changed while the snapshot was taken; run the reload again".into(),
                });
            }
            let (create, indexes, foreign_keys) = schema::split_create_table(&now);
            tables.push(SnapshotTable {
                database: table.database.clone(),
                name: table.name.clone(),
                create,
                added: indexes.into_iter().chain(foreign_keys).collect(),
                columns: table.columns.iter().map(|c| c.name.clone()).collect(),
                inventory: table,
            });
        }
        conn.query_drop("SET NAMES binary")
            .await
            .map_err(|e| my.error("preparing the reload session", e))?;
        Ok(TableSnapshot {
            my,
            conn,
            position,
            tables,
        })
    }

    /// Streams `table`'s rows in the snapshot, in the `LOAD DATA` format of a copy, into `out`.
    ///
    /// # Errors
    /// The server's error, or a reader that stopped.
    pub(crate) async fn read(
        &mut self,
        table: &SnapshotTable,
        out: tokio::io::DuplexStream,
    ) -> Result<(), SourceError> {
        let chunk = inventory::Chunk {
            table: table.inventory.clone(),
            index: 0,
            condition: None,
            estimate: 0,
        };
        let doing = format!("reading {}", table.inventory.qualified());
        dump::read_rows(&self.my, &mut self.conn, &chunk, out, &doing).await
    }

    /// Ends the snapshot.
    pub(crate) async fn finish(mut self) {
        let _ = self.conn.query_drop("COMMIT").await;
        let _ = self.conn.disconnect().await;
    }
}

async fn show_create(my: &My, conn: &mut Conn, table: &inventory::Table) -> Result<String, SourceError> {
    let doing = format!("reading the definition of {}", table.qualified());
    let row: Option<(String, String)> = conn
        .query_first(format!("SHOW CREATE TABLE {}", table.qualified()))
        .await
        .map_err(|e| my.error(&doing, e))?;
    row.map(|(_, create)| create).ok_or_else(|| SourceError::Database {
        database: my.name.clone(),
        doing,
        detail: "SHOW CREATE TABLE returned nothing".into(),
    })
}
