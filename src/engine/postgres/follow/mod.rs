//! cairn's own continuous applier for PostgreSQL (`cairn replica run`): the replica's logical
//! slot on the source read in batches of whole transactions (`pg_logical_slot_peek_binary_changes`),
//! decoded by the same pgoutput decoder and applied by the same applier as a replay — whole
//! source transactions grouped per target transaction, the last one's position recorded in the
//! replica's replication origin in the same commit — and the slot moved past what the target holds after each batch.
//! Waits grow while the slot is idle; lost connections are retried; a stop ends it between
//! transactions.

mod state;
mod validate;

use std::time::{Duration, Instant};

use futures::{StreamExt, pin_mut};
use tokio_postgres::Client;

use self::state::Setup;
use self::validate::{Validation, advance, validate};
use super::Pg;
use super::apply::{Applier, OUTPUT_SETTINGS};
use super::pgoutput::{Decoder, parse_lsn};
use crate::engine::change::Change;
use crate::engine::follow::{Ended, FollowOptions, FollowReport, reconnect_policy, reconnects_after};
use crate::engine::{SourceError, SourceSpec};
use crate::repo::model::LogPosition;

pub(super) use state::{record_setup, request_stop, states};

/// How often the applier records its heartbeat and looks for a stop request.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Changes read from the slot per batch (whole transactions: the server ends a batch at a commit).
const BATCH_CHANGES: u32 = 50_000;
/// Whole source transactions applied in one target transaction, at most.
const GROUP_TRANSACTIONS: u64 = 200;
/// The longest sleep while the slot has nothing new.
const MAX_IDLE: Duration = Duration::from_secs(2);

/// Follows `source`'s replica slot into the target `target` until stopped.
///
/// # Errors
/// A target not seeded for the applier, another applier running, a dropped or lost slot, a
/// diverged target, a transaction that fails to apply, or a lost connection after the
/// reconnection limit.
pub(super) async fn follow(
    target: &Pg,
    source: &SourceSpec,
    options: &FollowOptions,
) -> Result<FollowReport, SourceError> {
    let source_pg = Pg::new(source.url.clone());
    let mut control = target.connect("replica run").await?;
    let setup = state::load(target, &control, &source.name).await?;
    let mut control_pid = match options.dry_run {
        true => 0,
        false => state::acquire(target, &control, &setup, None).await?,
    };
    let mut report = FollowReport {
        source: source.name.clone(),
        target: target.name.clone(),
        ..FollowReport::default()
    };
    let mut retry = reconnect_policy(options);
    let mut validated = false;
    let outcome = loop {
        let session = Session {
            target,
            source: &source_pg,
            setup: &setup,
            options,
        };
        let before = report.transactions;
        match session.run(&control, &mut report, &mut validated).await {
            Ok(ended) => break Ok(ended),
            Err(error) if reconnects_after(&error) && !options.dry_run && !options.stop.is_cancelled() => {
                tracing::warn!("{}: the applier lost a connection: {error}; reconnecting", source.name);
                if report.transactions > before {
                    // The session made progress: the waits start short again.
                    retry = reconnect_policy(options);
                }
                let waited = tokio::select! {
                    more = retry.wait() => more,
                    () = options.stop.cancelled() => break Ok(Ended::Signal),
                };
                if !waited {
                    break Err(error);
                }
                report.reconnections += 1;
                if control.is_closed() || control.simple_query("SELECT 1").await.is_err() {
                    // The lease went with the control session: take it again on a new one. A
                    // target that is not back yet is one more lost connection to wait for.
                    let reopened = async {
                        let client = target.connect("replica run").await?;
                        let pid = state::acquire(target, &client, &setup, Some(control_pid)).await?;
                        Ok::<_, SourceError>((client, pid))
                    }
                    .await;
                    match reopened {
                        Ok((client, pid)) => (control, control_pid) = (client, pid),
                        Err(e) if reconnects_after(&e) => continue,
                        Err(e) => break Err(e),
                    }
                }
                state::record_error(target, &control, &setup, &error.to_string()).await;
            }
            Err(error) => break Err(error),
        }
    };
    match outcome {
        Ok(ended) => {
            report.stopped = ended.describe().to_string();
            Ok(report)
        }
        Err(error) => {
            if !options.dry_run {
                state::record_error(target, &control, &setup, &error.to_string()).await;
            }
            Err(error)
        }
    }
}

/// One connected session of the applier.
struct Session<'a> {
    target: &'a Pg,
    source: &'a Pg,
    setup: &'a Setup,
    options: &'a FollowOptions,
}

/// What the session keeps between batches.
struct Applying<'a> {
    applier: Applier<'a>,
    /// The end of the last source transaction the target holds.
    done: u64,
    /// Transactions applied since the last heartbeat, and when the last one committed.
    since_heartbeat: i64,
    committed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The source's WAL position before the last read of the slot that found nothing new: the
    /// target holds everything of the slot up to there (`replica status` measures lag from it).
    idle: Option<u64>,
}

impl Session<'_> {
    async fn run(
        &self,
        control: &Client,
        report: &mut FollowReport,
        validated: &mut bool,
    ) -> Result<Ended, SourceError> {
        let (source, setup, options) = (self.source, self.setup, self.options);
        let source_client = source.connect("replica run").await?;
        // Values are decoded into text under the settings the applier finds rows with.
        source_client
            .batch_execute(OUTPUT_SETTINGS)
            .await
            .map_err(|e| source.error("preparing the session that reads the slot", e))?;
        self.check_source(&source_client).await?;
        let client = self.target.connect("replica run").await?;
        // The origin first: an earlier session's last commits, still running on the server,
        // must end before the position is read.
        if !options.dry_run {
            self.use_origin(&client).await?;
        }
        let applied = state::position(self.target, &client, setup).await?;
        report.started_at.get_or_insert_with(|| state::at(applied, setup));
        report.position = Some(state::at(applied, setup));
        self.check_slot_behind(&source_client, applied).await?;
        let end_at_start = current_lsn(source, &source_client).await?;
        if !options.dry_run {
            // What the target holds is not streamed again (a crash after a commit, before the
            // slot moved, leaves it in the slot).
            advance(source, &source_client, setup, applied).await?;
        }
        if !*validated {
            match validate(
                source,
                self.target,
                setup,
                applied,
                options.sample_rows,
                !options.dry_run,
            )
            .await?
            {
                Validation::Equal(lines) => {
                    *validated = true;
                    report.validation = lines;
                }
                Validation::SourceAhead => {
                    report.validation = vec![format!(
                        "the slot holds transactions after {}: the tables are compared when the applier first \
                         catches up",
                        state::at(applied, setup)
                    )];
                }
            }
        }
        if options.dry_run {
            return Ok(Ended::DryRun);
        }
        tracing::info!(
            "{}: applying slot {} from {} to {}",
            setup.source,
            setup.slot,
            state::at(applied, setup),
            self.target.name
        );
        let mut applier = Applier::new(self.target, &client).await?;
        applier.group_transactions(GROUP_TRANSACTIONS);
        applier.expect_position(crate::engine::postgres::pgoutput::lsn_text(applied));
        // The slot moves past a transaction once its commit is acknowledged: the commit must be
        // durable by then, whatever the target's default.
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(|e| self.target.error("preparing the applier's session", e))?;
        let mut applying = Applying {
            applier,
            done: applied,
            since_heartbeat: 0,
            committed_at: None,
            idle: None,
        };
        let mut idle = Duration::from_millis(100);
        let mut last_beat = Instant::now();
        let ended = loop {
            if options.stop.is_cancelled() {
                break Ended::Signal;
            }
            if last_beat.elapsed() >= HEARTBEAT {
                last_beat = Instant::now();
                let stop = state::heartbeat(
                    self.target,
                    control,
                    setup,
                    applying.committed_at.take(),
                    std::mem::take(&mut applying.since_heartbeat),
                    applying.idle.take(),
                )
                .await?;
                if stop {
                    tracing::info!("{}: a stop was requested", setup.source);
                    break Ended::StopRequested;
                }
            }
            // Read first: what the slot holds up to here is decodable by the read below.
            let flushed = current_lsn(source, &source_client).await?;
            let applied_now = self.batch(&source_client, &mut applying).await?;
            // A stop breaks off a read at its first transaction: then the slot was not empty.
            if applied_now == 0 && !options.stop.is_cancelled() {
                applying.idle = Some(flushed);
            }
            report.transactions += applied_now;
            report.position = Some(state::at(applying.done, setup));
            if applied_now > 0 && !(options.catch_up && applying.done >= end_at_start) {
                idle = Duration::from_millis(100);
                continue;
            }
            // Nothing pending: the target holds everything the source committed.
            if !*validated
                && let Validation::Equal(lines) =
                    validate(source, self.target, setup, applying.done, options.sample_rows, true).await?
            {
                tracing::info!("{}: caught up; the validation found the tables equal", setup.source);
                *validated = true;
                report.validation = lines;
            }
            if options.catch_up {
                break Ended::CaughtUp;
            }
            tokio::select! {
                () = tokio::time::sleep(idle) => {}
                () = options.stop.cancelled() => {}
            }
            idle = (idle * 2).min(MAX_IDLE);
        };
        let done = applying.applier.finish().await?;
        report.row_changes += done.row_changes;
        self.copy_sequences(&source_client, &client).await?;
        let _ = state::heartbeat(
            self.target,
            control,
            setup,
            applying.committed_at,
            applying.since_heartbeat,
            applying.idle,
        )
        .await;
        let _ = client
            .batch_execute("SELECT pg_replication_origin_session_reset()")
            .await;
        Ok(ended)
    }

    /// The source must be the server the copies came from, and its slot must still be there.
    async fn check_source(&self, client: &Client) -> Result<(), SourceError> {
        let (source, setup) = (self.source, self.setup);
        let identity: Option<String> = client
            .query_one("SELECT system_identifier::text FROM pg_control_system()", &[])
            .await
            .ok()
            .map(|row| row.get(0));
        if let Some(identity) = identity
            && !setup.server_identity.starts_with("unknown")
            && identity != setup.server_identity
        {
            return Err(SourceError::Unsupported(format!(
                "source {} is now system {identity}, not {} the replica was seeded from (a failover or a rebuilt \
                 server): seed the replica again",
                setup.source, setup.server_identity
            )));
        }
        let slot: Option<Option<String>> = client
            .query_opt(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                &[&setup.slot],
            )
            .await
            .map_err(|e| source.error("reading the replica's slot", e))?
            .map(|row| row.get(0));
        let problem = match slot {
            None => "the replica's slot was dropped",
            Some(Some(status)) if status == "lost" => "the server removed WAL the replica's slot needed",
            Some(_) => return Ok(()),
        };
        Err(SourceError::LogGap {
            source_name: setup.source.clone(),
            parent: format!("the replica's position ({})", setup.full_copy),
            needed: format!("slot {}", setup.slot),
            detail: format!(
                "{problem}; the replica cannot continue — seed it again from a newer copy (cairn replica seed --clean \
                 --handover cairn), or run with --auto-resync"
            ),
        })
    }

    /// A slot that moved past what the target holds lost transactions (a target that crashed
    /// after the slot moved): the replica cannot continue.
    async fn check_slot_behind(&self, client: &Client, applied: u64) -> Result<(), SourceError> {
        let confirmed: Option<String> = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.setup.slot],
            )
            .await
            .map_err(|e| self.source.error("reading the replica's slot", e))?
            .and_then(|row| row.get(0));
        let Some(confirmed) = confirmed.and_then(|c| parse_lsn(&c).ok()) else {
            return Ok(());
        };
        if confirmed <= applied {
            return Ok(());
        }
        Err(SourceError::LogGap {
            source_name: self.setup.source.clone(),
            parent: format!("the replica's position ({})", self.setup.full_copy),
            needed: format!("slot {} from {}", self.setup.slot, state::at(applied, self.setup)),
            detail: format!(
                "the slot has moved on to {} past what the target holds: transactions were lost (the target lost \
                 commits?); seed the replica again (cairn replica seed --clean --handover cairn), or run with \
                 --auto-resync",
                crate::engine::postgres::pgoutput::lsn_text(confirmed)
            ),
        })
    }

    /// Sets the target's sequences to the source's current values (logical decoding does not
    /// carry them; a sequence may skip values, never repeat one).
    async fn copy_sequences(&self, source_client: &Client, client: &Client) -> Result<(), SourceError> {
        let sql = super::inventory::sequence_values(self.source, source_client, &self.setup.filters).await?;
        for statement in sql.lines().filter(|l| !l.trim().is_empty()) {
            match client.batch_execute(statement).await {
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {}
                other => other.map_err(|e| self.target.error("setting the replica's sequences", e))?,
            }
        }
        Ok(())
    }

    /// Records every applied transaction's source position in the replica's origin; waits for
    /// an earlier session of this applier to let go of it.
    async fn use_origin(&self, client: &Client) -> Result<(), SourceError> {
        let mut attempts = 0;
        loop {
            match client
                .execute("SELECT pg_replication_origin_session_setup($1)", &[&self.setup.origin])
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) && attempts < 150 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // Still in use: another session the server has not ended yet; a retry later may do.
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                    return Err(SourceError::Locked {
                        database: self.target.name.clone(),
                        doing: "using the replica's replication origin".into(),
                        detail: e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default(),
                    });
                }
                Err(e) => return Err(self.target.error("using the replica's replication origin", e)),
            }
        }
    }

    /// Applies the whole transactions the slot holds past what the target holds (up to a batch),
    /// then moves the slot past them; returns how many were applied.
    async fn batch(&self, source_client: &Client, applying: &mut Applying<'_>) -> Result<u64, SourceError> {
        let (source, setup) = (self.source, self.setup);
        let reading = format!("reading replication slot {}", setup.slot);
        let rows = source_client
            .query_raw(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $3::text::int, \
                 'proto_version', '1', 'publication_names', $2)",
                [setup.slot.clone(), setup.publication.clone(), BATCH_CHANGES.to_string()],
            )
            .await
            .map_err(|e| source.error(&reading, e))?;
        pin_mut!(rows);
        let mut decoder = Decoder::default();
        let mut skipping = false;
        let mut applied = 0;
        let mut committed_at = None;
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| source.error(&reading, e))?;
            let (lsn, data): (String, Vec<u8>) = (row.get(0), row.get(1));
            let Some(change) = decoder
                .decode(&lsn, &data)
                .map_err(|e| SourceError::Damaged(format!("slot {} at {lsn}: {e}", setup.slot)))?
            else {
                continue;
            };
            if let Change::Begin { committed_at: at, .. } = &change {
                // A stop ends the applier between transactions.
                if self.options.stop.is_cancelled() {
                    break;
                }
                // A transaction that ends before what the target holds was applied already (a
                // crash after its commit, before the slot moved).
                skipping = decoder.commit_lsn() < applying.done;
                committed_at = *at;
            }
            if skipping {
                if matches!(change, Change::Commit(_)) {
                    skipping = false;
                }
                continue;
            }
            // What the copy left out (its filters) the replica leaves out too.
            let change = match change {
                Change::Rows(rows) if !setup.filters.data_included(&rows.database, &rows.table) => continue,
                Change::Truncate(mut truncate) => {
                    truncate
                        .tables
                        .retain(|(schema, table)| setup.filters.data_included(schema, table));
                    if truncate.tables.is_empty() {
                        continue;
                    }
                    Change::Truncate(truncate)
                }
                change => change,
            };
            let end = match &change {
                Change::Commit(commit) => match &commit.position {
                    LogPosition::Postgres { lsn, .. } => {
                        Some((parse_lsn(lsn).map_err(SourceError::Damaged)?, lsn.clone()))
                    }
                    LogPosition::Mysql { .. } => None,
                },
                _ => None,
            };
            let record = match &end {
                Some((_, lsn)) => format!("SELECT pg_replication_origin_xact_setup('{lsn}'::pg_lsn, now())"),
                None => String::new(),
            };
            applying.applier.apply(change, &record).await?;
            if let Some((end, _)) = end {
                applying.done = end;
                applied += 1;
                applying.since_heartbeat += 1;
                applying.committed_at = committed_at;
            }
        }
        // Every transaction sent was committed and answered before the slot moves past it.
        applying.applier.end_group().await?;
        applying.applier.finish().await?;
        if applied > 0 {
            advance(source, source_client, setup, applying.done).await?;
        }
        Ok(applied)
    }
}

/// Where the source's WAL ends now: `--catch-up` stops once the target holds everything to here.
async fn current_lsn(pg: &Pg, client: &Client) -> Result<u64, SourceError> {
    let text: String = client
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .await
        .map_err(|e| pg.error("reading the source's WAL position", e))?
        .get(0);
    parse_lsn(&text).map_err(SourceError::Damaged)
}
