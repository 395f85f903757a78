//! `cairn restore --to-sql`: a MySQL full copy — or the tables a selection chooses — written as
//! a plain SQL script the `mysql`/`mariadb` client loads (databases, tables, rows as batched
//! `INSERT`s of hex literals, indexes, foreign keys, then triggers and the other objects between
//! `DELIMITER` lines), for inspection, for loading elsewhere, for a ticket. Every data file is
//! checked against its MD5 as it is read.

use std::collections::BTreeMap;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::create_table::parse_table;
use super::inventory::Column;
use super::load::Inserts;
use super::load_sql::LOAD_SESSION;
use super::quote_ident;
use super::replay::{Definitions, SCRIPT_DELIMITER, Written, write_changes};
use super::schema::Object;
use crate::engine::{RestoreInput, RestoreReport, SourceError};
use crate::repo::reader::data_files;

/// What a script's statements end with where an object's body holds `;`.
const DELIMITER: &str = ";;";

/// Writes the script of `input`'s full copy (its selection) to `out`.
///
/// # Errors
/// A selection that chooses nothing, a damaged file, or a failed write.
pub(crate) async fn write_script(
    input: &RestoreInput,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<RestoreReport, SourceError> {
    let started = std::time::Instant::now();
    let copy = &input.manifests[0].copy;
    let (full, files) = super::copy_schema(input).await?;
    // Every log file is fetched and checked, and the stop point found, before a line is written.
    let checked = match input.manifests.len() {
        1 => None,
        _ => Some(super::replay::check(input).await?),
    };
    let definitions: Definitions = full
        .tables
        .iter()
        .map(|t| {
            let key = (t.database.clone(), t.name.clone());
            (key, parse_table(&t.create, &t.indexes))
        })
        .collect();
    let (schema, renamed, selected) = match input.selection.is_empty() {
        true => (full, BTreeMap::new(), None),
        false => {
            let selected = super::selective::select(input, &full)?;
            for line in &selected.left_out {
                tracing::warn!("not in the script: {line}");
            }
            (selected.schema.clone(), selected.renamed.clone(), Some(selected))
        }
    };
    let mut map: BTreeMap<String, String> = schema
        .databases
        .iter()
        .map(|d| (d.name.clone(), d.name.clone()))
        .collect();
    for (from, to) in &input.mysql.rename_databases {
        match map.get_mut(from) {
            Some(name) => *name = to.clone(),
            None => {
                return Err(SourceError::Unsupported(format!(
                    "--rename-db {from}={to}: the script has no database {from}"
                )));
            }
        }
    }
    let failed = |e: std::io::Error| SourceError::Database {
        database: "the script".into(),
        doing: "writing the script".into(),
        detail: e.to_string(),
    };
    let mut script = Script { out, failed: &failed };
    script
        .line(&format!(
            "-- cairn restore --to-sql: source {}, copy {} ({} at {})\n{LOAD_SESSION};",
            input.source, copy.id, copy.kind, copy.log_range.end
        ))
        .await?;
    for database in &schema.databases {
        script
            .line(&format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET {} COLLATE {};",
                quote_ident(&map[&database.name]),
                database.charset,
                database.collation
            ))
            .await?;
    }
    for table in &schema.tables {
        script
            .line(&format!(
                "USE {};\n{};",
                quote_ident(&map[&table.database]),
                table.create
            ))
            .await?;
    }
    let mut rows = 0u64;
    let data = data_files(&files);
    let wanted: Vec<_> = data
        .iter()
        .filter_map(|f| f.data().map(|d| (f, d)))
        .filter(|(_, d)| {
            let name = renamed
                .get(&(d.container().to_string(), d.table.clone()))
                .unwrap_or(&d.table);
            schema
                .tables
                .iter()
                .any(|t| t.database == d.container() && &t.name == name)
        })
        .collect();
    for (stored, data) in &wanted {
        let database = &map[data.container()];
        let name = renamed
            .get(&(data.container().to_string(), data.table.clone()))
            .unwrap_or(&data.table);
        let table = format!("{}.{}", quote_ident(database), quote_ident(name));
        let columns: Vec<Column> = serde_json::from_value(data.columns.clone()).unwrap_or_default();
        let doing = format!("writing the rows of {table} from {}", stored.key);
        let mut inserts = Inserts::open(&input.destination, stored, &table, &columns, &doing).await?;
        while let Some(statement) = inserts.next().await? {
            script.line(&format!("{statement};")).await?;
        }
        rows += inserts.rows;
    }
    for table in &schema.tables {
        let qualified = format!("{}.{}", quote_ident(&map[&table.database]), quote_ident(&table.name));
        for clauses in [&table.indexes, &table.foreign_keys] {
            if !clauses.is_empty() {
                script
                    .line(&format!("ALTER TABLE {qualified} {};", clauses.join(", ")))
                    .await?;
            }
        }
    }
    // Views and routines before the changes (the log may change them); triggers and events
    // after (a trigger would fire on logged rows, which already hold what it did).
    let (early, late): (Vec<&Object>, Vec<&Object>) = schema
        .objects
        .iter()
        .partition(|o| !matches!(o.kind.as_str(), "trigger" | "event"));
    // Qualified names follow renamed databases, as in a restore.
    let rename = |sql: &str| {
        map.iter()
            .filter(|(from, to)| from != to)
            .fold(sql.to_string(), |sql, (from, to)| {
                sql.replace(&format!("{}.", quote_ident(from)), &format!("{}.", quote_ident(to)))
            })
    };
    script.objects(&early, &map, &rename).await?;
    let mut written = Written::default();
    if let Some(checked) = &checked {
        let restored = selected.as_ref().map(|s| s.restored(&map));
        written = write_changes(input, checked, &map, &definitions, restored, script.out).await?;
    }
    script.objects(&late, &map, &rename).await?;
    if !written.held_back.is_empty() {
        script
            .line(&format!(
                "-- Trigger and event statements of the log, after the copy's: no trigger fired on a logged \
                 row change\nDELIMITER {SCRIPT_DELIMITER}\n{}\nDELIMITER ;",
                written.held_back.join("\n")
            ))
            .await?;
    }
    script.out.flush().await.map_err(failed)?;
    Ok(RestoreReport {
        target: "the script".into(),
        tables: schema.tables.len() as u64,
        rows,
        files: wanted.len() as u64,
        incrementals: input.manifests.len() as u64 - 1,
        transactions: written.transactions,
        row_changes: written.row_changes,
        position: Some(written.position.unwrap_or_else(|| copy.log_range.end.clone())),
        databases: map,
        seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    })
}

struct Script<'a, 'o> {
    out: &'o mut (dyn AsyncWrite + Unpin + Send),
    failed: &'a dyn Fn(std::io::Error) -> SourceError,
}

impl Script<'_, '_> {
    async fn line(&mut self, text: &str) -> Result<(), SourceError> {
        self.out.write_all(text.as_bytes()).await.map_err(self.failed)?;
        self.out.write_all(b"\n").await.map_err(self.failed)
    }

    /// Views, routines, triggers or events, each under the session it was created in, their
    /// database names mapped by `map` (and `rename` in their text).
    async fn objects(
        &mut self,
        objects: &[&Object],
        map: &BTreeMap<String, String>,
        rename: &dyn Fn(&str) -> String,
    ) -> Result<(), SourceError> {
        if objects.is_empty() {
            return Ok(());
        }
        self.line(&format!("DELIMITER {DELIMITER}")).await?;
        for object in objects {
            self.object(object, &map[&object.database], &rename(&object.create))
                .await?;
        }
        self.line("DELIMITER ;").await
    }

    /// A view, routine, trigger or event under the session it was created in.
    async fn object(&mut self, object: &Object, database: &str, create: &str) -> Result<(), SourceError> {
        let session = format!(
            "USE {}{DELIMITER}\n{}{DELIMITER}",
            quote_ident(database),
            object.session_sql()
        );
        self.line(&session).await?;
        self.line(&format!("{create}{DELIMITER}")).await
    }
}
