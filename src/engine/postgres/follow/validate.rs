//! The PostgreSQL applier's start-up validation: per table, the row count and the first and last
//! rows by primary key compared between the source and the target — only while the replica's
//! slot holds no transaction the target lacks (none pending before and after the comparison).

use tokio_postgres::{Client, SimpleQueryMessage};

use super::state::Setup;
use crate::engine::SourceError;
use crate::engine::follow::TableSample;
use crate::engine::postgres::apply::OUTPUT_SETTINGS;
use crate::engine::postgres::{Pg, quote_ident};

/// What a validation found.
#[derive(Debug)]
pub(super) enum Validation {
    /// Every table compared equal; one line per table.
    Equal(Vec<String>),
    /// The slot holds transactions the target has not applied: nothing compared.
    SourceAhead,
}

/// Moves the slot to `applied` (what the target holds), so the server keeps no WAL for it any
/// longer and what the slot streams next is only what the target lacks; a slot already past it
/// stays where it is.
pub(super) async fn advance(source: &Pg, client: &Client, setup: &Setup, applied: u64) -> Result<(), SourceError> {
    let lsn = crate::engine::postgres::pgoutput::lsn_text(applied);
    client
        .execute(
            "SELECT pg_replication_slot_advance(slot_name, $2::text::pg_lsn) FROM pg_replication_slots \
             WHERE slot_name = $1 AND confirmed_flush_lsn < $2::text::pg_lsn",
            &[&setup.slot, &lsn],
        )
        .await
        .map_err(|e| source.error(&format!("moving replication slot {} to {lsn}", setup.slot), e))?;
    Ok(())
}

/// Whether the slot holds a committed transaction the target has not applied. `moving`: the
/// slot is first moved to what the target holds (not in a dry run, which changes nothing).
pub(super) async fn pending(
    source: &Pg,
    client: &Client,
    setup: &Setup,
    applied: u64,
    moving: bool,
) -> Result<bool, SourceError> {
    if moving {
        advance(source, client, setup, applied).await?;
    }
    let rows = client
        .query(
            "SELECT lsn::text FROM pg_logical_slot_peek_binary_changes($1, NULL, 1, 'proto_version', '1', \
             'publication_names', $2)",
            &[&setup.slot, &setup.publication],
        )
        .await
        .map_err(|e| source.error(&format!("reading replication slot {}", setup.slot), e))?;
    // Without the move, a transaction the target holds may come first: only one past it counts.
    Ok(rows.iter().any(|row| {
        crate::engine::postgres::pgoutput::parse_lsn(&row.get::<_, String>(0)).is_ok_and(|lsn| lsn >= applied)
    }))
}

/// Compares every table the replica applies to, if the slot holds nothing the target lacks.
///
/// # Errors
/// [`SourceError::Diverged`] listing every table that differs; either server's error.
pub(super) async fn validate(
    source: &Pg,
    target: &Pg,
    setup: &Setup,
    applied: u64,
    sample_rows: u32,
    moving: bool,
) -> Result<Validation, SourceError> {
    let source_client = source.connect("replica validation").await?;
    if pending(source, &source_client, setup, applied, moving).await? {
        return Ok(Validation::SourceAhead);
    }
    let target_client = target.connect("replica validation").await?;
    for (pg, client) in [(source, &source_client), (target, &target_client)] {
        client
            .batch_execute(OUTPUT_SETTINGS)
            .await
            .map_err(|e| pg.error("preparing the validation", e))?;
    }
    let mut lines = Vec::new();
    let mut differences = Vec::new();
    for (schema, table) in tables(source, &source_client).await? {
        if !setup.filters.data_included(&schema, &table) {
            continue;
        }
        let name = format!("{schema}.{table}");
        let key = primary_key(source, &source_client, &schema, &table).await?;
        let on_source = Side::read(source, &source_client, &schema, &table, &key, sample_rows).await?;
        let on_target = match Side::read(target, &target_client, &schema, &table, &key, sample_rows).await {
            Ok(side) => side,
            Err(e) => {
                differences.push(format!("{name}: cannot be read on the target: {e}"));
                continue;
            }
        };
        match on_source.differs(&on_target) {
            Some(what) => differences.push(format!("{name}: {what}")),
            None => lines.push(on_source.equal_line(&name, !key.is_empty())),
        }
    }
    // Logical decoding reads WAL only up to where it is flushed, while a commit is visible as soon
    // as it is written (`synchronous_commit = off`): a transaction the comparison saw must be
    // flushed before the slot can say it holds nothing new.
    wait_flushed(source, &source_client).await?;
    if pending(source, &source_client, setup, applied, moving).await? {
        return Ok(Validation::SourceAhead);
    }
    if !differences.is_empty() {
        return Err(SourceError::Diverged(format!(
            "the replica {} of source {} no longer holds what the source holds at the same position:\n  {}\nnothing \
             was applied; seed the replica again (cairn replica seed --clean --handover cairn), or fix the target by \
             hand",
            target.name,
            setup.source,
            differences.join("\n  ")
        )));
    }
    Ok(Validation::Equal(lines))
}

/// Waits until the source's WAL is flushed up to where it was written when this was called.
async fn wait_flushed(pg: &Pg, client: &Client) -> Result<(), SourceError> {
    let doing = "waiting for the source's WAL to be flushed";
    let written: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(|e| pg.error(doing, e))?
        .get(0);
    for _ in 0..100 {
        let flushed: bool = client
            .query_one("SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn", &[&written])
            .await
            .map_err(|e| pg.error(doing, e))?
            .get(0);
        if flushed {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(SourceError::Locked {
        database: pg.name.clone(),
        doing: doing.into(),
        detail: format!("the WAL written up to {written} was not flushed within 5 s"),
    })
}

async fn tables(pg: &Pg, client: &Client) -> Result<Vec<(String, String)>, SourceError> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'cairn_replay', '_cairn') \
             AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| pg.error("listing the tables", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn primary_key(pg: &Pg, client: &Client, schema: &str, table: &str) -> Result<Vec<String>, SourceError> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = \
             ANY (i.indkey) WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND \
             i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&schema, &table],
        )
        .await
        .map_err(|e| pg.error(&format!("reading the primary key of {schema}.{table}"), e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

type Rows = Vec<Vec<Option<String>>>;

async fn text_rows(pg: &Pg, client: &Client, sql: &str, doing: &str) -> Result<Rows, SourceError> {
    let messages = client.simple_query(sql).await.map_err(|e| pg.error(doing, e))?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect())
}

/// One side's view of a table.
type Side = TableSample<Vec<Option<String>>>;

impl Side {
    async fn read(
        pg: &Pg,
        client: &Client,
        schema: &str,
        table: &str,
        key: &[String],
        sample_rows: u32,
    ) -> Result<Side, SourceError> {
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
        let doing = format!("reading {qualified} for the validation");
        let count = text_rows(pg, client, &format!("SELECT count(*) FROM {qualified}"), &doing).await?;
        let mut side = Side {
            count: count
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            first: Vec::new(),
            last: Vec::new(),
        };
        if key.is_empty() || sample_rows == 0 {
            return Ok(side);
        }
        let order = |direction: &str| {
            key.iter()
                .map(|c| format!("{} {direction}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        side.first = text_rows(
            pg,
            client,
            &format!(
                "SELECT * FROM {qualified} ORDER BY {} LIMIT {sample_rows}",
                order("ASC")
            ),
            &doing,
        )
        .await?;
        side.last = text_rows(
            pg,
            client,
            &format!(
                "SELECT * FROM {qualified} ORDER BY {} LIMIT {sample_rows}",
                order("DESC")
            ),
            &doing,
        )
        .await?;
        Ok(side)
    }
}
