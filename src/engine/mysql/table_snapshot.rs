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
    /// Whether its rows are read (else only its definition).
    pub rows: bool,
    inventory: inventory::Table,
}

/// An open snapshot of chosen tables and the log position it matches.
pub(crate) struct TableSnapshot {
    my: My,
    conn: Conn,
    pub position: LogPosition,
    pub tables: Vec<SnapshotTable>,
    /// Every base table the source has, as (database, table), chosen or not.
    pub listed: Vec<(String, String)>,
}

/// The session the definitions are read in: names quoted, text as UTF-8.
const DEFINITION_SESSION: &str = "SET SESSION sql_mode = '', NAMES utf8mb4, SESSION sql_quote_show_create = 1";

impl TableSnapshot {
    /// Opens a snapshot of the base tables of `source` that `pick` chooses (by database and
    /// table: `Some(true)` with their rows, `Some(false)` their definition only); the server
    /// must be `identity_expected`, the one the replica was seeded from.
    ///
    /// # Errors
    /// Another server, a server without a binary log, a table changed while the snapshot was
    /// taken ([`SourceError::Locked`]: run again), login or the server's error.
    pub(crate) async fn open(
        source: &SourceSpec,
        identity_expected: &str,
        pick: &(dyn Fn(&str, &str) -> Option<bool> + Sync),
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
        let everything = crate::engine::filter::Filters::default();
        let all = inventory::tables(&my, &mut conn, &everything).await?;
        let listed: Vec<(String, String)> = all.iter().map(|t| (t.database.clone(), t.name.clone())).collect();
        let chosen: Vec<(inventory::Table, bool)> = all
            .into_iter()
            .filter_map(|t| pick(&t.database, &t.name).map(|rows| (t, rows)))
            .collect();
        let mut before = Vec::new();
        for (table, _) in &chosen {
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
        let mut definitions = Vec::new();
        for ((table, _), before) in chosen.iter().zip(before) {
            // Reading the table in the snapshot holds its metadata lock until the end: no DDL
            // changes it from here on, so the definition read now is the rows' — unless DDL came
            // between the snapshot and this read, which the first reading shows.
            conn.query_drop(format!("SELECT 1 FROM {} LIMIT 0", table.qualified()))
                .await
                .map_err(|e| my.error(&format!("reading {} in the snapshot", table.qualified()), e))?;
            let now = show_create(&my, &mut conn, table).await?;
            if without_counter(&now) != without_counter(&before) {
                return Err(SourceError::Locked {
                    database: my.name.clone(),
                    doing: format!("reloading {}.{}", table.database, table.name),
                    detail: "its definition changed while the snapshot was taken; run the reload again".into(),
                });
            }
            definitions.push(now);
        }
        // The columns as the locked tables have them now (the first listing may predate a change).
        let now = inventory::tables(&my, &mut conn, &everything).await?;
        let mut tables = Vec::new();
        for ((table, rows), definition) in chosen.into_iter().zip(definitions) {
            let Some(table) = now
                .iter()
                .find(|t| t.database == table.database && t.name == table.name)
                .cloned()
            else {
                return Err(SourceError::Locked {
                    database: my.name.clone(),
                    doing: format!("reloading {}.{}", table.database, table.name),
                    detail: "it was dropped while the snapshot was taken; run the reload again".into(),
                });
            };
            let (create, indexes, foreign_keys) = schema::split_create_table(&definition);
            tables.push(SnapshotTable {
                database: table.database.clone(),
                name: table.name.clone(),
                create,
                added: indexes.into_iter().chain(foreign_keys).collect(),
                columns: table.columns.iter().map(|c| c.name.clone()).collect(),
                rows,
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
            listed,
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

/// A definition without its `AUTO_INCREMENT=n` option, which every insert moves.
fn without_counter(create: &str) -> String {
    let upper = create.to_ascii_uppercase();
    match upper.rfind(" AUTO_INCREMENT=") {
        Some(at) if upper[at..].find(')').is_none() => {
            let end = create[at + 16..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(create.len(), |n| at + 16 + n);
            format!("{}{}", &create[..at], &create[end..])
        }
        _ => create.to_string(),
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_counter_of_a_busy_table_does_not_count_as_a_change() {
        let a = "CREATE TABLE `t` (\n  `id` int NOT NULL AUTO_INCREMENT,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=17 DEFAULT CHARSET=latin1";
        let b = a.replace("=17", "=1024");
        assert_eq!(super::without_counter(a), super::without_counter(&b));
        assert!(
            super::without_counter(a).contains("NOT NULL AUTO_INCREMENT,"),
            "the column keeps it"
        );
        let c = a.replace("int NOT NULL", "bigint NOT NULL");
        assert_ne!(super::without_counter(a), super::without_counter(&c));
    }
}
