//! The start-up validation of a PostgreSQL replica of a MySQL source: per table, the row count,
//! and the first and last rows by primary key read on the source as a copy reads them,
//! converted through the mapping and looked up in PostgreSQL by every column (compared by type)
//! — only while the source is at the replica's position and stays there, so that a difference
//! means the replica diverged.

use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::ddl_log::LiveCatalog;
use super::follow_state::Setup;
use super::rows::unescape_copy;
use super::values::copy_field;
use crate::engine::SourceError;
use crate::engine::mysql::LiveFeed;
use crate::engine::postgres::{Pg, quote_ident};
use crate::repo::model::LogPosition;

/// What a validation found.
#[derive(Debug)]
pub enum Validation {
    /// Every table compared equal; one line per table.
    Equal(Vec<String>),
    /// The source is not at the replica's position (or moved while comparing).
    SourceAhead,
}

/// Compares every replicated table, if the source is at `applied` now.
///
/// # Errors
/// [`SourceError::Diverged`] listing every table that differs; either server's error.
pub async fn validate(
    feed: &LiveFeed,
    pg: &Pg,
    client: &Client,
    setup: &Setup,
    catalog: &LiveCatalog,
    applied: &LogPosition,
    sample_rows: u32,
) -> Result<Validation, SourceError> {
    let Some(before) = feed.at_point(applied).await? else {
        return Ok(Validation::SourceAhead);
    };
    let (mut lines, mut differences) = (Vec::new(), Vec::new());
    for ((database, table), my, target) in catalog.tables()? {
        let name = format!("{database}.{table}");
        let kept: Vec<_> = my.columns.iter().filter(|c| c.generated.is_none()).collect();
        // As a copy reads them: floats as doubles, bits as numbers.
        let select: Vec<String> = kept
            .iter()
            .map(|c| {
                let quoted = crate::engine::mysql::quote_ident(&c.name);
                match c.type_name.as_str() {
                    "float" | "double" | "real" => format!("{quoted} + 0e0"),
                    "bit" => format!("CAST({quoted} AS UNSIGNED)"),
                    _ => quoted,
                }
            })
            .collect();
        let (count, sampled) = feed
            .sample(&database, &table, &select, &target.key, sample_rows)
            .await?;
        let qualified = format!("{}.{}", quote_ident(&target.schema), quote_ident(&target.name));
        let theirs: i64 = match client
            .query_one(&format!("SELECT count(*) FROM ONLY {qualified}"), &[])
            .await
        {
            Ok(row) => row.get(0),
            Err(e) => {
                differences.push(format!("{name}: cannot be read on the replica: {}", pg.error("", e)));
                continue;
            }
        };
        if count != theirs as u64 {
            differences.push(format!("{name}: {count} rows on the source, {theirs} on the replica"));
            continue;
        }
        if sampled.is_empty() {
            lines.push(match target.key.is_empty() {
                true => format!("{name}: {count} rows (no primary key: rows counted only)"),
                false => format!("{name}: {count} rows"),
            });
            continue;
        }
        let mut params: Vec<Option<String>> = Vec::new();
        for row in &sampled {
            for (field, column) in row.iter().zip(&target.columns) {
                let mut text = Vec::new();
                copy_field(&mut text, &column.rule, field.as_deref()).map_err(SourceError::Unsupported)?;
                params.push(unescape_copy(&text));
            }
        }
        let width = target.columns.len();
        let rows: Vec<String> = (0..sampled.len())
            .map(|r| {
                let values: Vec<String> = (0..width).map(|c| format!("${}::text", r * width + c + 1)).collect();
                format!("({})", values.join(", "))
            })
            .collect();
        let aliases: Vec<String> = (0..width).map(|c| format!("c{c}")).collect();
        let conditions: Vec<String> = target
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("x.{} IS NOT DISTINCT FROM v.c{i}::{}", quote_ident(&c.name), c.pg_type))
            .collect();
        let sql = format!(
            "SELECT count(*) FROM (VALUES {}) AS v({}) WHERE EXISTS (SELECT 1 FROM ONLY {qualified} x WHERE {})",
            rows.join(", "),
            aliases.join(", "),
            conditions.join(" AND ")
        );
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let found: i64 = client
            .query_one(&sql, &refs)
            .await
            .map_err(|e| pg.error(&format!("comparing the rows of {name}"), e))?
            .get(0);
        match found as usize == sampled.len() {
            true => lines.push(format!(
                "{name}: {count} rows, the first and last {} rows by key equal",
                sampled.len().div_ceil(2)
            )),
            false => differences.push(format!(
                "{name}: {} of the first and last {} rows by key on the source are not on the replica",
                sampled.len() - found as usize,
                sampled.len()
            )),
        }
    }
    if feed.at_point(&before).await?.is_none() {
        return Ok(Validation::SourceAhead);
    }
    if !differences.is_empty() {
        return Err(SourceError::Diverged(format!(
            "the replica {} of source {} no longer holds what the source holds at the same position ({applied}):\n  \
             {}\nnothing more was applied; seed the replica again (cairn replica seed --clean --handover cairn), or \
             fix the replica by hand",
            pg.name,
            setup.source,
            differences.join("\n  ")
        )));
    }
    Ok(Validation::Equal(lines))
}
