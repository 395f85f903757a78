//! MySQL incrementals replayed into PostgreSQL after their full copy was restored there: the
//! chain's binary logs decoded as for a MySQL target, each row change translated
//! (`rows::RowTranslator`) and applied by the PostgreSQL applier, one target transaction per
//! source transaction, with the source position recorded in `cairn_replay.mysql_progress` in the
//! same transaction. Logged statements are classified: what touches no replicated table, account
//! statements and objects that are not translated (views, routines, triggers, events) are passed
//! over; `TRUNCATE` is translated; other DDL stops the replay naming the statement.

use std::collections::BTreeMap;

use super::catalog::target_key;
use super::rows::RowTranslator;
use crate::engine::change::{Change, Commit, Statement, Truncate};
use crate::engine::filter::Filters;
use crate::engine::mysql::{
    ChainResume, CheckedChain, first_words, is_account_statement, statement_database, statement_table,
};
use crate::engine::postgres::apply::Applier;
use crate::engine::postgres::{Pg, quote_literal};
use crate::engine::{RestoreInput, SourceError};
use crate::progress::Progress;
use crate::repo::model::LogPosition;

/// Where the target records how far a replay of MySQL changes went.
pub const PROGRESS_TABLE: &str = "cairn_replay.mysql_progress";

const PROGRESS_DDL: &str = "CREATE SCHEMA IF NOT EXISTS cairn_replay;
    CREATE TABLE IF NOT EXISTS cairn_replay.mysql_progress (
      source text NOT NULL, target_schemas text NOT NULL, full_copy text NOT NULL, copy_id text NOT NULL,
      log_file text NOT NULL, log_position bigint NOT NULL, gtid text,
      transactions bigint NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (source, target_schemas))";

/// What the replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    pub transactions: u64,
    pub row_changes: u64,
    pub position: Option<LogPosition>,
    /// Zero dates written as NULL or `-infinity`, per column.
    pub zero_dates: BTreeMap<String, u64>,
}

/// Which MySQL databases go where, and which tables the copy held.
pub struct Mapping<'a> {
    /// MySQL database → PostgreSQL schema.
    pub schemas: &'a BTreeMap<String, String>,
    pub filters: &'a Filters,
    pub translator: RowTranslator,
}

/// Replays the checked chain of `input` into `pg`, whose full copy was just restored.
///
/// # Errors
/// A statement that is not translated, a row the target does not hold as the source did, a
/// value PostgreSQL cannot hold, or the target's error.
pub async fn replay(
    pg: &Pg,
    input: &RestoreInput,
    checked: CheckedChain,
    resume: Option<ChainResume>,
    mut mapping: Mapping<'_>,
) -> Result<Replayed, SourceError> {
    let client = pg.connect("replaying MySQL changes").await?;
    let targets = target_key(mapping.schemas);
    let (in_chain, to_apply) = checked.counts();
    tracing::info!(
        "replay into PostgreSQL: {} of {} in the chain",
        crate::text::count(to_apply, "transaction"),
        in_chain
    );
    let progress = Progress::new(format!("{}: replay, transactions", input.source), to_apply);
    let _reporter = progress.report_every(std::time::Duration::from_secs(10));
    let (schemas, filters) = (mapping.schemas, mapping.filters);
    let wanted = |database: &str, table: &str| schemas.contains_key(database) && filters.data_included(database, table);
    let mut decoder = checked.changes(input, resume.as_ref(), &wanted)?;
    let mut applier = Applier::new(pg, &client).await?;
    let mut replayed = Replayed::default();
    while let Some(change) = decoder.next().await? {
        match change {
            Change::Rows(rows) => {
                let rows = mapping.translator.translate(rows)?;
                applier.apply(Change::Rows(rows), "").await?;
            }
            Change::Statement(statement) => {
                if let Some(truncate) = classify(&statement, schemas, filters)? {
                    applier.apply(Change::Truncate(truncate), "").await?;
                }
            }
            Change::Commit(commit) => {
                let record = record_sql(&commit, &input.source, &targets);
                replayed.position = Some(commit.position.clone());
                let bytes = commit.bytes;
                applier.apply(Change::Commit(commit), &record).await?;
                progress.done(bytes);
            }
            change @ (Change::Begin { .. } | Change::Truncate(_)) => applier.apply(change, "").await?,
        }
    }
    let applied = applier.finish().await?;
    replayed.transactions = applied.transactions;
    replayed.row_changes = applied.row_changes;
    replayed.zero_dates = std::mem::take(&mut mapping.translator.zero_dates);
    Ok(replayed)
}

/// Records in the target that it holds `input`'s full copy and nothing after it, in schemas
/// `schemas` (after a full restore; a chain's replay and a replica's applier go on from there).
///
/// # Errors
/// A copy that is not MySQL's, or the target's error.
pub async fn record_start(
    pg: &Pg,
    input: &RestoreInput,
    schemas: &BTreeMap<String, String>,
) -> Result<(), SourceError> {
    let full = &input.manifests[0];
    let LogPosition::Mysql { file, position, gtid } = &full.copy.log_range.end else {
        return Err(SourceError::Unsupported(format!(
            "copy {} is not a MySQL copy",
            full.copy.id
        )));
    };
    let start = format!(
        "{PROGRESS_DDL};
        INSERT INTO {PROGRESS_TABLE} (source, target_schemas, full_copy, copy_id, log_file, log_position, gtid)
          VALUES ({source}, {targets}, {copy}, {copy}, {file}, {position}, {gtid})
          ON CONFLICT (source, target_schemas) DO UPDATE SET full_copy = excluded.full_copy,
            copy_id = excluded.copy_id, log_file = excluded.log_file, log_position = excluded.log_position,
            gtid = excluded.gtid, transactions = 0, updated_at = now()",
        source = quote_literal(&input.source),
        targets = quote_literal(&target_key(schemas)),
        copy = quote_literal(&full.copy.id),
        file = quote_literal(file),
        gtid = quote_literal(gtid.as_deref().unwrap_or_default()),
    );
    let client = pg.connect("recording the restored position").await?;
    client
        .batch_execute(&start)
        .await
        .map_err(|e| pg.error(&format!("recording the restored position in {PROGRESS_TABLE}"), e))
}

/// Where the replay an earlier restore of this chain into the target stopped (`--resume`).
///
/// # Errors
/// [`SourceError::NothingToResume`] when the target holds no replay of this chain's full copy.
pub async fn recorded(
    pg: &Pg,
    input: &RestoreInput,
    schemas: &BTreeMap<String, String>,
) -> Result<ChainResume, SourceError> {
    let full = &input.manifests[0].copy.id;
    let targets = target_key(schemas);
    let nothing = |detail: String| SourceError::NothingToResume {
        target: pg.name.clone(),
        detail,
    };
    let client = match pg.connect("reading the replay progress").await {
        Ok(client) => client,
        Err(SourceError::NoDatabase { .. }) => {
            return Err(nothing("the database does not exist; restore without --resume".into()));
        }
        Err(e) => return Err(e),
    };
    let row = client
        .query_opt(
            &format!(
                "SELECT full_copy, copy_id, log_file, log_position, coalesce(gtid, '') FROM {PROGRESS_TABLE} \
                 WHERE source = $1 AND target_schemas = $2"
            ),
            &[&input.source, &targets.as_str()],
        )
        .await;
    let row = match row {
        Ok(row) => row,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
        Err(e) => return Err(pg.error("reading the replay progress", e)),
    };
    let Some(row) = row else {
        return Err(nothing(format!(
            "no replay of source {} into schemas {targets} was recorded there (the full restore did not finish); \
             restore again with --clean",
            input.source
        )));
    };
    let recorded_full: String = row.get(0);
    if &recorded_full != full {
        return Err(nothing(format!(
            "it holds a replay of full copy {recorded_full}, not {full}; resume that chain (--copy), or restore again \
             with --clean"
        )));
    }
    let resume = ChainResume {
        copy: row.get(1),
        file: row.get(2),
        position: u64::try_from(row.get::<_, i64>(3)).unwrap_or_default(),
        gtid: row.get(4),
    };
    tracing::info!(
        "--resume: the target has everything up to {}:{} (copy {})",
        resume.file,
        resume.position,
        resume.copy
    );
    Ok(resume)
}

/// The progress record of a source transaction, run in its target transaction.
pub(super) fn record_sql(commit: &Commit, source: &str, targets: &str) -> String {
    let LogPosition::Mysql { file, position, gtid } = &commit.position else {
        return String::new();
    };
    format!(
        "UPDATE {PROGRESS_TABLE} SET copy_id = {}, log_file = {}, log_position = {position}, gtid = {}, \
         transactions = transactions + 1, updated_at = now() WHERE source = {} AND target_schemas = {}",
        quote_literal(&commit.copy),
        quote_literal(file),
        gtid.as_deref().map_or("NULL".into(), quote_literal),
        quote_literal(source),
        quote_literal(targets)
    )
}

/// What a statement the source logged does to the replica: nothing (it touches no replicated
/// table, or is of a kind the copy does not translate either), a `TRUNCATE`, or an error naming
/// the statement, for DDL that is not translated yet.
pub(super) fn classify(
    statement: &Statement,
    schemas: &BTreeMap<String, String>,
    filters: &Filters,
) -> Result<Option<Truncate>, SourceError> {
    let text = statement.text.trim();
    let at = &statement.at;
    let Some(database) = statement_database(text, &statement.database, schemas.keys()) else {
        tracing::debug!(
            "{at}: passed over (it touches no replicated database): {}",
            first_words(text)
        );
        return Ok(None);
    };
    if is_account_statement(text) {
        tracing::info!("{at}: passed over an account or server statement");
        return Ok(None);
    }
    let upper: Vec<String> = text.split_whitespace().take(8).map(str::to_ascii_uppercase).collect();
    let names = |kinds: &[&str]| upper.iter().any(|w| kinds.contains(&w.as_str()));
    let creates_or_drops = matches!(upper.first().map(String::as_str), Some("CREATE" | "DROP" | "ALTER"));
    if creates_or_drops && names(&["VIEW", "TRIGGER", "PROCEDURE", "FUNCTION", "EVENT"]) {
        // Not part of a translated copy either (docs/mysql-to-postgres.md).
        tracing::warn!(
            "{at}: not translated (views, routines, triggers and events are not): {}",
            first_words(text)
        );
        return Ok(None);
    }
    let table = statement_table(text);
    if let Some((db, table)) = &table {
        let db = db.as_deref().unwrap_or(&database);
        if !schemas.contains_key(db) || !filters.table_included(db, table) {
            tracing::info!(
                "{at}: passed over (table {db}.{table} is not replicated): {}",
                first_words(text)
            );
            return Ok(None);
        }
        if upper.first().map(String::as_str) == Some("TRUNCATE") {
            return Ok(Some(Truncate {
                at: at.clone(),
                tables: vec![(schemas[db].clone(), table.clone())],
                cascade: false,
                restart_identity: false,
            }));
        }
    }
    Err(SourceError::Unsupported(format!(
        "{at}: {} on {database}: translating MySQL DDL into PostgreSQL is not built yet (issue #14); restore up \
         to a point before it (--until), or take a new full copy after it",
        match &table {
            Some((_, table)) => format!("{} (table {table})", first_words(text)),
            None => first_words(text),
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(text: &str) -> Statement {
        Statement {
            at: "binlog.000002:120".into(),
            database: "shop".into(),
            text: text.into(),
            session: Default::default(),
            standalone: true,
        }
    }

    #[test]
    fn logged_statements_are_passed_over_translated_or_refused() {
        let schemas: BTreeMap<String, String> = [("shop".to_string(), "shop_pg".to_string())].into();
        let filters = Filters::default();
        let classify = |text: &str| classify(&statement(text), &schemas, &filters);
        let truncate = classify("TRUNCATE TABLE `orders`").unwrap().unwrap();
        assert_eq!(truncate.tables, [("shop_pg".to_string(), "orders".to_string())]);
        assert!(classify("CREATE VIEW v AS SELECT 1").unwrap().is_none());
        assert!(classify("GRANT SELECT ON shop.* TO x").unwrap().is_none());
        let mut elsewhere = statement("CREATE TABLE t (a int)");
        elsewhere.database = "other".into();
        assert!(super::classify(&elsewhere, &schemas, &filters).unwrap().is_none());
        let err = classify("ALTER TABLE orders ADD COLUMN x int").unwrap_err().to_string();
        assert!(
            err.contains("binlog.000002:120") && err.contains("table orders") && err.contains("--until"),
            "{err}"
        );
    }
}
