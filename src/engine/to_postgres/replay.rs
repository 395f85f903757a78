//! MySQL incrementals replayed into PostgreSQL after their full copy was restored there: the
//! chain's binary logs decoded as for a MySQL target, each row change translated
//! (`rows::RowTranslator`) and applied by the PostgreSQL applier, one target transaction per
//! source transaction, with the source position recorded in `cairn_replay.mysql_progress` in the
//! same transaction. Logged statements go through the replica's catalog (`ddl_log`): table DDL
//! it translates changes the PostgreSQL table and the catalog in that transaction; other DDL
//! stops the replay naming the statement.

use std::collections::BTreeMap;

use super::catalog::target_key;
use super::ddl_log::{LiveCatalog, Outcome};
use super::rows::RowTranslator;
use crate::engine::change::{Change, Commit};
use crate::engine::filter::Filters;
use crate::engine::mysql::{ChainResume, CheckedChain};
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

/// Which MySQL databases go where, and the tables as the log has changed them so far.
pub struct Mapping<'a> {
    /// MySQL database → PostgreSQL schema.
    pub schemas: &'a BTreeMap<String, String>,
    pub filters: &'a Filters,
    pub catalog: LiveCatalog,
    pub translator: RowTranslator,
}

/// Applies one change of a MySQL source to the PostgreSQL replica: rows translated, statements
/// through the catalog, the position recorded with each commit (`record`).
///
/// # Errors
/// What the translation refuses, or the target's error.
pub(super) async fn apply_change(
    applier: &mut Applier<'_>,
    catalog: &mut LiveCatalog,
    translator: &mut RowTranslator,
    change: Change,
    record: impl FnOnce(&Commit) -> String,
) -> Result<(), SourceError> {
    match change {
        Change::Rows(rows) => applier.apply(Change::Rows(translator.translate(rows)?), "").await,
        Change::Statement(statement) => match catalog.statement(&statement).map_err(|e| (e, statement.standalone)) {
            Err((error, standalone)) => {
                // DDL commits by itself on MySQL: the whole transactions grouped before it are
                // committed before it stops the applier.
                if standalone {
                    applier.end_group().await?;
                }
                Err(error)
            }
            Ok(outcome) => match outcome {
                Outcome::PassOver => Ok(()),
                Outcome::Apply { sql, shapes } => {
                    for statement_sql in sql {
                        applier.run_in_transaction(&statement.at, statement_sql).await?;
                    }
                    for (key, shape) in shapes {
                        translator.set_shape(key, shape);
                    }
                    Ok(())
                }
            },
        },
        Change::Commit(commit) if commit.ending == crate::engine::change::Ending::Rollback => {
            // MySQL logs such a transaction for its non-transactional tables' changes, with the
            // transactional ones that the ROLLBACK undid; which is which, the log does not say.
            Err(SourceError::Unsupported(format!(
                "{}: a source transaction that ended in ROLLBACK (it changed non-transactional tables, such as \
                 MyISAM): cairn does not replicate it into PostgreSQL; convert those tables to InnoDB and seed the \
                 replica again",
                commit.at
            )))
        }
        Change::Commit(commit) => {
            let record = record(&commit);
            applier.apply(Change::Commit(commit), &record).await
        }
        change @ (Change::Begin { .. } | Change::Truncate(_)) => applier.apply(change, "").await,
    }
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
        let commit = match &change {
            Change::Commit(commit) => Some((commit.position.clone(), commit.bytes)),
            _ => None,
        };
        let record = |commit: &Commit| record_sql(commit, &input.source, &targets);
        apply_change(
            &mut applier,
            &mut mapping.catalog,
            &mut mapping.translator,
            change,
            record,
        )
        .await?;
        if let Some((position, bytes)) = commit {
            replayed.position = Some(position);
            progress.done(bytes);
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
    // The position only moves forward: a transaction at or before the recorded one was applied
    // already (by another applier that took over, or an earlier run), and applying it again
    // would change rows twice — the check fails the target transaction instead.
    let file = quote_literal(file);
    format!(
        "WITH moved AS (UPDATE {PROGRESS_TABLE} SET copy_id = {}, log_file = {file}, log_position = {position}, \
         gtid = {}, transactions = transactions + 1, updated_at = now() WHERE source = {} AND target_schemas = {} \
         AND (length(log_file), log_file, log_position) < (length({file}), {file}, {position}) RETURNING 1) \
         SELECT pg_temp.cairn_expect(count(*) = 1, {}) FROM moved",
        quote_literal(&commit.copy),
        gtid.as_deref().map_or("NULL".into(), quote_literal),
        quote_literal(source),
        quote_literal(targets),
        quote_literal(&format!(
            "{}: the replica's recorded position is already at or past this transaction: another applier applied \
             it (stop it), or the replica was changed by hand",
            commit.at
        ))
    )
}
