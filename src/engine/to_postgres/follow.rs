//! cairn's applier following a MySQL/MariaDB source's live binary log into a PostgreSQL replica
//! (`cairn replica run`): the replica's lease taken, the tables' definitions read from the
//! target's catalog, then each source transaction's row changes translated and applied by the
//! PostgreSQL applier with the position recorded in the same transaction — the replay's path,
//! fed by the live stream. Reconnects with backoff, stops after the transaction in flight.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::catalog;
use super::ddl_log::LiveCatalog;
use super::follow_state::{self as state, Setup};
use super::reload_window::Windows;
use super::replay::{apply_change, record_sql};
use super::rows::RowTranslator;
use super::validate::{Validation, validate};
use crate::engine::change::{Change, Commit};
use crate::engine::follow::{Ended, FollowOptions, FollowReport, reconnect_policy, reconnects_after};
use crate::engine::mysql::{LiveFeed, Wanted};
use crate::engine::postgres::Pg;
use crate::engine::postgres::apply::Applier;
use crate::engine::{SourceError, SourceSpec};

/// How often the applier records its heartbeat and looks for a stop request.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How often a start-up validation that could not compare yet is tried again.
const VALIDATION_EVERY: Duration = Duration::from_secs(10);

/// Source transactions per target transaction, at most (as the PostgreSQL replica's applier).
const GROUP: u64 = 200;

/// Follows `source`'s live log into the replica in `pg` until stopped.
///
/// # Errors
/// A target not seeded for the applier, another applier running, a source that is another server
/// or whose log no longer reaches the replica's position, a statement or value that is not
/// translated, a row the replica does not hold as the source did, or a lost connection after the
/// reconnection limit.
pub async fn follow(pg: &Pg, source: &SourceSpec, options: &FollowOptions) -> Result<FollowReport, SourceError> {
    let control = pg.connect("replica run").await?;
    let setup = state::load(pg, &control, &source.name).await?;
    if !options.dry_run {
        state::acquire(pg, &control, &setup).await?;
    }
    let mut report = FollowReport {
        source: source.name.clone(),
        target: pg.name.clone(),
        ..FollowReport::default()
    };
    let mut retry = reconnect_policy(options);
    let mut validated = false;
    let outcome = loop {
        let before = report.transactions;
        let session = Session {
            pg,
            source,
            setup: &setup,
            options,
            control: &control,
        };
        match session.run(&mut report, &mut validated).await {
            Ok(ended) => break Ok(ended),
            Err(error) if reconnects_after(&error) && !options.dry_run && !options.stop.is_cancelled() => {
                tracing::warn!("{}: the applier lost a connection: {error}; reconnecting", source.name);
                if report.transactions > before {
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
                state::record_error(pg, &control, &setup, &error.to_string()).await;
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
                state::record_error(pg, &control, &setup, &error.to_string()).await;
            }
            Err(error)
        }
    }
}

/// One connected session of the applier: from the replica's recorded position until it stops or
/// a connection is lost.
struct Session<'a> {
    pg: &'a Pg,
    source: &'a SourceSpec,
    setup: &'a Setup,
    options: &'a FollowOptions,
    control: &'a Client,
}

impl Session<'_> {
    async fn run(&self, report: &mut FollowReport, validated: &mut bool) -> Result<Ended, SourceError> {
        let (pg, setup, options) = (self.pg, self.setup, self.options);
        let at = state::position(pg, self.control, setup).await?;
        // The tables as the target's catalog has them: what a failed transaction changed in
        // memory was rolled back there too.
        let reading = "reading the replica's table definitions (cairn_replay.mysql_tables)";
        let definitions = catalog::load(self.control, &setup.targets)
            .await
            .map_err(|e| pg.error(reading, e))?;
        let charsets = catalog::load_charsets(self.control, &setup.targets)
            .await
            .map_err(|e| pg.error(reading, e))?;
        let mut tables = LiveCatalog::new(
            definitions,
            charsets,
            setup.databases.clone(),
            setup.targets.clone(),
            setup.filters.clone(),
        );
        let mut translator = RowTranslator::new(tables.shapes()?);
        let mut windows = Windows::load(pg, self.control, &setup.targets, &at).await?;
        report.started_at.get_or_insert_with(|| at.clone());
        report.position = Some(at.clone());
        let wanted: Wanted = {
            let (databases, filters) = (setup.databases.clone(), setup.filters.clone());
            Box::new(move |database: &str, table: &str| {
                databases.contains_key(database) && filters.data_included(database, table)
            })
        };
        let mut feed = LiveFeed::open(
            self.source,
            &setup.server_identity,
            &setup.targets,
            options.replica_server_id,
            &at,
            wanted,
        )
        .await?;
        if !*validated {
            match validate(&feed, pg, self.control, setup, &tables, &at, options.sample_rows).await? {
                Validation::Equal(lines) => {
                    *validated = true;
                    report.validation = lines;
                }
                Validation::SourceAhead => {
                    report.validation = vec![format!(
                        "the source has moved on since {at}: the tables are compared when the applier first catches up"
                    )]
                }
            }
        }
        if options.dry_run {
            return Ok(Ended::DryRun);
        }
        tracing::info!(
            "{}: applying the source's log from {at} to {} (schemas {})",
            setup.source,
            pg.name,
            setup.targets
        );
        let client = pg.connect("replica run").await?;
        let mut applier = Applier::new(pg, &client).await?;
        // Whole source transactions per target transaction, committed as soon as the source has
        // nothing more ready: the position recorded is the last one's.
        applier.group_transactions(GROUP);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut stopping, mut applied_event_at, mut since_heartbeat) = (None, None, 0i64);
        let mut last_validation: Option<Instant> = None;
        let ended = loop {
            if let Some(ended) = stopping
                && !feed.in_transaction()
            {
                break ended;
            }
            if !feed.in_transaction() && !feed.ready()? {
                applier.end_group().await?;
            }
            tokio::select! {
                biased;
                () = options.stop.cancelled(), if stopping.is_none() => {
                    tracing::info!("{}: stopping after the transaction in flight", setup.source);
                    stopping = Some(Ended::Signal);
                }
                _ = heartbeat.tick() => {
                    if !feed.in_transaction() {
                        // What the heartbeat reports as applied is committed.
                        applier.end_group().await?;
                    }
                    // Everything read is committed when no transaction is in flight.
                    let idle = (!feed.in_transaction()).then(|| feed.received());
                    let stop = state::heartbeat(
                        pg,
                        self.control,
                        setup,
                        applied_event_at.take(),
                        std::mem::take(&mut since_heartbeat),
                        idle.as_ref().map(|(f, p)| (f.as_str(), *p)),
                    )
                    .await?;
                    if stop && stopping.is_none() {
                        tracing::info!("{}: a stop was requested; stopping after the transaction in flight", setup.source);
                        stopping = Some(Ended::StopRequested);
                    }
                    if feed.in_transaction() {
                        continue;
                    }
                    let catch_up_now = options.catch_up && stopping.is_none() && feed.reached_end_at_start();
                    // Each comparison counts every table on the source: at most every
                    // VALIDATION_EVERY while the source keeps moving.
                    let due = !*validated
                        && (catch_up_now || last_validation.is_none_or(|at: Instant| at.elapsed() >= VALIDATION_EVERY));
                    if due && let Some(now) = feed.caught_up().await? {
                        last_validation = Some(Instant::now());
                        if let Validation::Equal(lines) =
                            validate(&feed, pg, self.control, setup, &tables, &now, options.sample_rows).await?
                        {
                            tracing::info!("{}: caught up; the validation found the tables equal", setup.source);
                            *validated = true;
                            report.validation = lines;
                        }
                    }
                    if catch_up_now {
                        stopping = Some(Ended::CaughtUp);
                    }
                }
                change = feed.next() => {
                    let Some(change) = change? else {
                        return Err(SourceError::Disconnected {
                            database: self.source.name.clone(),
                            doing: "reading the binary log".into(),
                            detail: "the server ended the stream".into(),
                        });
                    };
                    let at = feed.change_at();
                    let Some(change) = windows.admit(change, (&at.0, at.1))? else {
                        continue;
                    };
                    let commit = match &change {
                        Change::Commit(commit) => Some(commit.position.clone()),
                        _ => None,
                    };
                    let record = |commit: &Commit| record_sql(commit, &setup.source, &setup.targets);
                    apply_change(&mut applier, &mut tables, &mut translator, change, record).await?;
                    if let Some(position) = commit {
                        report.transactions += 1;
                        since_heartbeat += 1;
                        applied_event_at = feed.last_timestamp();
                        report.position = Some(position);
                    }
                }
            }
        };
        applier.end_group().await?;
        let applied = applier.finish().await?;
        report.row_changes += applied.row_changes;
        if windows.passed_over > 0 {
            tracing::info!(
                "{}: {} of reloaded tables passed over (their rows were copied after them)",
                setup.source,
                crate::text::count(windows.passed_over, "change")
            );
        }
        for (column, count) in &translator.zero_dates {
            tracing::warn!("{column}: {count} zero dates in the applied changes became NULL or -infinity");
        }
        let idle = feed.received();
        let _ = state::heartbeat(
            pg,
            self.control,
            setup,
            applied_event_at,
            since_heartbeat,
            Some((idle.0.as_str(), idle.1)),
        )
        .await;
        Ok(ended)
    }
}
