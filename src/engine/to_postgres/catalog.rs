//! The MySQL table definitions a restore into PostgreSQL translated, and their translation:
//! kept in the target (`cairn_replay.mysql_tables`) so that a replica's applier reads the binary
//! log's rows by the definitions its tables were made from, whatever the source holds by then.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use super::ddl::{PgTable, translate};
use super::mysql_ddl::parse_table;
use super::rows::Shape;
use crate::engine::SourceError;

/// A MySQL table as a copy records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub database: String,
    pub name: String,
    /// `SHOW CREATE TABLE` without what `added` holds.
    pub create: String,
    /// The `ADD …` clauses a copy split off (secondary indexes, foreign keys).
    pub added: Vec<String>,
}

/// Every table translated, by MySQL (database, table).
#[derive(Debug, Default)]
pub struct Translated {
    pub tables: BTreeMap<(String, String), PgTable>,
    pub shapes: BTreeMap<(String, String), Shape>,
}

/// Translates `definitions`, each database into schema `schema_of(database)`; `origin` names
/// where they come from in errors (a copy, the target's catalog).
///
/// # Errors
/// A definition that does not read, or a type without a counterpart.
pub fn translate_all(
    definitions: &[Definition],
    schema_of: &dyn Fn(&str) -> String,
    origin: &str,
) -> Result<Translated, SourceError> {
    // Index names share a schema's namespace with its tables and each other.
    let mut taken: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for table in definitions {
        let names = taken.entry(schema_of(&table.database)).or_default();
        names.insert(table.name.clone());
        names.insert(format!("{}_pkey", table.name));
    }
    let mut translated = Translated::default();
    for table in definitions {
        let shown = format!("{}.{}", table.database, table.name);
        let parsed = parse_table(&table.create, &table.added)
            .map_err(|e| SourceError::Unsupported(format!("{origin}: {shown}: {e}")))?;
        let schema = schema_of(&table.database);
        let names = taken.entry(schema.clone()).or_default();
        let pg = translate(&parsed, &schema, schema_of, names).map_err(SourceError::Unsupported)?;
        let shape = Shape::new(&parsed, &pg).map_err(SourceError::Unsupported)?;
        let key = (table.database.clone(), table.name.clone());
        translated.shapes.insert(key.clone(), shape);
        translated.tables.insert(key, pg);
    }
    Ok(translated)
}

const CATALOG_DDL: &str = "CREATE SCHEMA IF NOT EXISTS cairn_replay;
    CREATE TABLE IF NOT EXISTS cairn_replay.mysql_tables (
      target_schemas text NOT NULL, database text NOT NULL, name text NOT NULL,
      create_sql text NOT NULL, added text[] NOT NULL,
      PRIMARY KEY (target_schemas, database, name));
    CREATE TABLE IF NOT EXISTS cairn_replay.mysql_databases (
      target_schemas text NOT NULL, database text NOT NULL, charset text NOT NULL,
      PRIMARY KEY (target_schemas, database))";

/// Replaces the definitions kept for the replica into `target_schemas` with `definitions`, and
/// the databases' default character sets (which a table created later in the log takes) with
/// `charsets`.
///
/// # Errors
/// The target's error.
pub async fn store(
    client: &Client,
    target_schemas: &str,
    definitions: &[Definition],
    charsets: &BTreeMap<String, String>,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(CATALOG_DDL).await?;
    client
        .execute(
            "DELETE FROM cairn_replay.mysql_tables WHERE target_schemas = $1",
            &[&target_schemas],
        )
        .await?;
    // Reloads of an earlier seed's tables say nothing about this one's: their positions would
    // pass over changes the new copy does not hold.
    client.batch_execute(super::reload_window::WINDOWS_DDL).await?;
    client
        .execute(
            "DELETE FROM cairn_replay.mysql_reloads WHERE target_schemas = $1",
            &[&target_schemas],
        )
        .await?;
    client
        .execute(
            "DELETE FROM cairn_replay.mysql_databases WHERE target_schemas = $1",
            &[&target_schemas],
        )
        .await?;
    for (database, charset) in charsets {
        client
            .execute(
                "INSERT INTO cairn_replay.mysql_databases (target_schemas, database, charset) VALUES ($1, $2, $3)",
                &[&target_schemas, database, charset],
            )
            .await?;
    }
    let insert = client
        .prepare(
            "INSERT INTO cairn_replay.mysql_tables (target_schemas, database, name, create_sql, added) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    for table in definitions {
        client
            .execute(
                &insert,
                &[
                    &target_schemas,
                    &table.database,
                    &table.name,
                    &table.create,
                    &table.added,
                ],
            )
            .await?;
    }
    Ok(())
}

/// The definitions kept for the replica into `target_schemas`.
///
/// # Errors
/// The target's error (a target that was never seeded has no catalog).
pub async fn load(client: &Client, target_schemas: &str) -> Result<Vec<Definition>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT database, name, create_sql, added FROM cairn_replay.mysql_tables WHERE target_schemas = $1 \
             ORDER BY database, name",
            &[&target_schemas],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Definition {
            database: row.get(0),
            name: row.get(1),
            create: row.get(2),
            added: row.get(3),
        })
        .collect())
}

/// The databases' default character sets kept for the replica into `target_schemas`.
///
/// # Errors
/// The target's error.
pub async fn load_charsets(
    client: &Client,
    target_schemas: &str,
) -> Result<BTreeMap<String, String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT database, charset FROM cairn_replay.mysql_databases WHERE target_schemas = $1",
            &[&target_schemas],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// SQL that records `definition` as the table's current one (after DDL), in the transaction
/// that applies the DDL.
pub fn upsert_sql(target_schemas: &str, definition: &Definition) -> String {
    use crate::engine::postgres::quote_literal;
    let added: Vec<String> = definition.added.iter().map(|a| quote_literal(a)).collect();
    format!(
        "INSERT INTO cairn_replay.mysql_tables (target_schemas, database, name, create_sql, added) \
         VALUES ({}, {}, {}, {}, ARRAY[{}]::text[]) ON CONFLICT (target_schemas, database, name) DO UPDATE \
         SET create_sql = excluded.create_sql, added = excluded.added",
        quote_literal(target_schemas),
        quote_literal(&definition.database),
        quote_literal(&definition.name),
        quote_literal(&definition.create),
        added.join(", ")
    )
}

/// SQL that forgets the definition of a dropped table.
pub fn delete_sql(target_schemas: &str, database: &str, name: &str) -> String {
    use crate::engine::postgres::quote_literal;
    format!(
        "DELETE FROM cairn_replay.mysql_tables WHERE target_schemas = {} AND database = {} AND name = {}",
        quote_literal(target_schemas),
        quote_literal(database),
        quote_literal(name)
    )
}

/// The key of a replica's rows in cairn's tables: its target schemas, sorted.
pub fn target_key(schemas: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&str> = schemas.values().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}
