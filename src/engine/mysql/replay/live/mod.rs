//! cairn's own continuous applier for MySQL/MariaDB (`cairn replica run`): the source's live
//! binary log applied to a seeded target by the replay's applier — whole source transactions
//! per target transaction with the position recorded in it — under a lease, with a heartbeat, a
//! start-up validation, reconnection with backoff after a lost connection, and a clean stop
//! after the transaction in flight.

mod feed;
mod state;
mod stream;
mod validate;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use self::state::Setup;
use self::stream::Live;
pub(crate) use self::stream::Wanted;
use self::validate::{Validation, validate};
use super::apply::{Applier, ROW_SESSION};
use super::triggers::{prepare_progress, restore_triggers, set_aside_triggers, settle_earlier_replay};
use super::{PROGRESS_DATABASE, PROGRESS_EVERY};
use crate::engine::change::Change;
use crate::engine::follow::{Ended, FollowOptions, FollowReport, reconnect_policy, reconnects_after};
use crate::engine::mysql::My;
use crate::engine::mysql::binlog::GtidState;
use crate::engine::mysql::capture::{default_replica_server_id, identity};
use crate::engine::mysql::snapshot::{Server, coordinates, server};
use crate::engine::{SourceError, SourceSpec};
use crate::progress::Progress;
use crate::repo::model::LogPosition;

pub(crate) use feed::LiveFeed;
pub(in crate::engine::mysql) use state::{record_setup, request_stop, states};

/// How often the applier records its heartbeat and looks for a stop request.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often a start-up validation that could not compare yet is tried again.
const VALIDATION_EVERY: Duration = Duration::from_secs(10);

/// Follows `source`'s live log into the target `target` until stopped.
///
/// # Errors
/// A target not seeded for the applier, another applier running, a source that is another server
/// or whose log no longer reaches the target's position, a diverged target, a transaction that
/// fails to apply, or a lost connection after the reconnection limit.
pub(in crate::engine::mysql) async fn follow(
    target: &My,
    source: &SourceSpec,
    options: &FollowOptions,
) -> Result<FollowReport, SourceError> {
    let source_my = My::new(source.url.clone());
    let mut control = state::session(target).await?;
    let setup = state::load(target, &mut control, &source.name).await?;
    let mut control_id = match options.dry_run {
        true => 0,
        false => state::acquire(target, &mut control, &setup, None).await?,
    };
    let mut report = FollowReport {
        source: source.name.clone(),
        target: target.name.clone(),
        ..FollowReport::default()
    };
    let replica_id = options
        .replica_server_id
        .unwrap_or_else(|| default_replica_server_id(&format!("{}\n{}", source.name, setup.targets)));
    let mut retry = reconnect_policy(options);
    let mut validated = false;
    let outcome = loop {
        let session = Session {
            target,
            source: &source_my,
            setup: &setup,
            options,
            replica_id,
        };
        let before = report.transactions;
        match session.run(&mut control, &mut report, &mut validated).await {
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
                if control.ping().await.is_err() {
                    // The lease went with the control session: take it again on a new one. A
                    // target that is not back yet is one more lost connection to wait for.
                    match reopen_control(target, &setup, control_id).await {
                        Ok((conn, id)) => (control, control_id) = (conn, id),
                        Err(e) if reconnects_after(&e) => continue,
                        Err(e) => break Err(e),
                    }
                }
                state::record_error(target, &mut control, &setup, &error.to_string()).await;
            }
            Err(error) => break Err(error),
        }
    };
    if !options.dry_run {
        put_back_triggers(target, &setup).await;
    }
    match outcome {
        Ok(ended) => {
            report.stopped = ended.describe().to_string();
            let _ = control.disconnect().await;
            Ok(report)
        }
        Err(error) => {
            if !options.dry_run {
                state::record_error(target, &mut control, &setup, &error.to_string()).await;
            }
            let _ = control.disconnect().await;
            Err(error)
        }
    }
}

/// A new control session holding the lease; the stale one of this applier (`stale`, a session
/// the server has not noticed is gone) is ended if it still holds it.
async fn reopen_control(target: &My, setup: &Setup, stale: u64) -> Result<(mysql_async::Conn, u64), SourceError> {
    let mut control = state::session(target).await?;
    let id = state::acquire(target, &mut control, setup, Some(stale)).await?;
    Ok((control, id))
}

/// Puts back the triggers a session set aside, whatever ended the run: a replica that stops
/// (to be promoted, say) must have its triggers. Failing to is a warning: the next run or
/// `restore --resume` puts them back.
async fn put_back_triggers(target: &My, setup: &Setup) {
    let result = async {
        let mut applier = new_applier(target, setup).await?;
        restore_triggers(&mut applier).await?;
        let _ = applier.conn.disconnect().await;
        Ok::<_, SourceError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!("{}: the triggers set aside were not put back: {e}", setup.source);
    }
}

/// The applying session, prepared as a replay's.
async fn new_applier<'a>(target: &'a My, setup: &'a Setup) -> Result<Applier<'a>, SourceError> {
    let conn = target
        .connect_tuned(Some(""), |builder| builder.client_found_rows(true).stmt_cache_size(512))
        .await?;
    let mut applier = Applier::new(
        target,
        conn,
        setup.source.clone(),
        setup.targets.clone(),
        &setup.databases,
        setup.filters.clone(),
    );
    prepare_progress(&mut applier).await?;
    applier.exec("preparing the applier's session", ROW_SESSION).await?;
    applier
        .exec("preparing the applier's session", "SET SESSION foreign_key_checks = 1")
        .await?;
    Ok(applier)
}

/// One connected session of the applier: from the target's recorded position until it stops or
/// a connection is lost.
struct Session<'a> {
    target: &'a My,
    source: &'a My,
    setup: &'a Setup,
    options: &'a FollowOptions,
    replica_id: u32,
}

impl Session<'_> {
    async fn run(
        &self,
        control: &mut mysql_async::Conn,
        report: &mut FollowReport,
        validated: &mut bool,
    ) -> Result<Ended, SourceError> {
        let (source, setup, options) = (self.source, self.setup, self.options);
        let mut source_conn = source.connect(None).await?;
        let server = server(source, &mut source_conn).await?;
        let end_at_start = coordinates(source, &mut source_conn, &server).await?;
        let _ = source_conn.disconnect().await;
        self.check_source(&server).await?;

        // A dry run reads the position and changes nothing; a run settles any earlier
        // applier's session first.
        let mut applier = match options.dry_run {
            true => None,
            false => Some(new_applier(self.target, self.setup).await?),
        };
        let (file, position, gtids) = match applier.as_mut() {
            Some(applier) => self.position(applier).await?,
            None => read_position(self.target, control, setup).await?,
        };
        let at = LogPosition::Mysql {
            file: file.clone(),
            position,
            gtid: (!gtids.is_empty()).then(|| gtids.to_string()),
        };
        report.started_at.get_or_insert_with(|| at.clone());
        report.position = Some(at.clone());
        self.check_reach(&at).await?;
        if !*validated {
            match validate(source, &server, self.target, setup, &at, options.sample_rows).await? {
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
        let Some(mut applier) = applier else {
            return Ok(Ended::DryRun);
        };
        set_aside_triggers(&mut applier).await?;
        let wanted: Wanted = {
            let (databases, filters) = (setup.databases.clone(), setup.filters.clone());
            Box::new(move |database: &str, table: &str| {
                databases.contains_key(database) && filters.data_included(database, table)
            })
        };
        let mut live = Live::open(
            source,
            &setup.source,
            server.mariadb,
            self.replica_id,
            &file,
            position,
            gtids,
            wanted,
        )
        .await?;
        tracing::info!(
            "{}: applying the source's log from {file}:{position} to {} (databases {})",
            setup.source,
            self.target.name,
            setup.targets
        );
        let progress = Progress::new(format!("{}: replica, transactions", setup.source), 0);
        let _reporter = progress.report_every(PROGRESS_EVERY);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping: Option<Ended> = None;
        let mut applied_event_at: Option<u32> = None;
        let mut last_validation: Option<Instant> = None;
        let ended = loop {
            if let Some(ended) = stopping
                && !live.in_transaction()
            {
                break ended;
            }
            // Source transactions are applied together until the source has nothing more ready:
            // then they are committed (the target never waits on a source that is idle).
            if applier.unflushed() && !live.ready()? {
                applier.flush().await?;
            }
            tokio::select! {
                biased;
                () = self.options.stop.cancelled(), if stopping.is_none() => {
                    tracing::info!("{}: stopping after the transaction in flight", setup.source);
                    stopping = Some(Ended::Signal);
                }
                _ = heartbeat.tick() => {
                    if !live.in_transaction() {
                        // What the heartbeat and a validation say was applied is committed.
                        applier.flush().await?;
                    }
                    let idle = (!live.in_transaction()).then(|| live.received());
                    if state::heartbeat(self.target, control, setup, applied_event_at.take(), idle).await?
                        && stopping.is_none()
                    {
                        tracing::info!("{}: a stop was requested; stopping after the transaction in flight", setup.source);
                        stopping = Some(Ended::StopRequested);
                    }
                    if live.in_transaction() {
                        continue;
                    }
                    let catch_up_now = options.catch_up && stopping.is_none() && reached(&live, &end_at_start);
                    // Each comparison counts every table on the source: at most every
                    // VALIDATION_EVERY while the source keeps moving.
                    let due = !*validated
                        && (catch_up_now || last_validation.is_none_or(|at: Instant| at.elapsed() >= VALIDATION_EVERY));
                    let caught_up = match due {
                        true => self.caught_up(&server, &live).await?,
                        false => None,
                    };
                    if let Some(now) = &caught_up {
                        last_validation = Some(Instant::now());
                        match validate(source, &server, self.target, setup, now, options.sample_rows).await? {
                            Validation::Equal(lines) => {
                                tracing::info!("{}: caught up; the validation found the tables equal", setup.source);
                                *validated = true;
                                report.validation = lines;
                            }
                            Validation::SourceAhead => {}
                        }
                    }
                    if catch_up_now {
                        stopping = Some(Ended::CaughtUp);
                    }
                }
                change = live.next() => {
                    let Some(change) = change? else {
                        return Err(SourceError::Disconnected {
                            database: source.name.clone(),
                            doing: "reading the binary log".into(),
                            detail: "the server ended the stream".into(),
                        });
                    };
                    let commit = match &change {
                        Change::Commit(commit) => Some(commit.position.clone()),
                        _ => None,
                    };
                    applier.apply(change, &progress).await?;
                    if std::mem::take(&mut applier.trigger_created) {
                        set_aside_triggers(&mut applier).await?;
                    }
                    if let Some(position) = commit {
                        report.transactions += 1;
                        applied_event_at = live.last_timestamp;
                        report.position = Some(position);
                    }
                }
            }
        };
        applier.close().await?;
        restore_triggers(&mut applier).await?;
        // Stopped cleanly: no session of this applier is left for the next one to end.
        applier
            .conn
            .exec_drop(
                format!(
                    "UPDATE {PROGRESS_DATABASE}.progress SET connection_id = 0 WHERE source = ? AND target_databases = ?"
                ),
                (&setup.source, &setup.targets),
            )
            .await
            .map_err(|e| self.target.error("recording the applier's stop", e))?;
        report.row_changes += applier.row_changes;
        let _ = state::heartbeat(self.target, control, setup, applied_event_at, Some(live.received())).await;
        let _ = applier.conn.disconnect().await;
        Ok(ended)
    }

    /// The source must be the server the copies came from, with the settings the applier needs.
    async fn check_source(&self, server: &Server) -> Result<(), SourceError> {
        let found = identity(server);
        if found != self.setup.server_identity {
            return Err(SourceError::Unsupported(format!(
                "source {} is now {found}, not {} the replica was seeded from (a failover or a rebuilt server): its \
                 log positions mean something else; seed the replica again",
                self.setup.source, self.setup.server_identity
            )));
        }
        if u64::from(self.replica_id) == server.server_id {
            return Err(SourceError::Unsupported(format!(
                "source {}: the applier's server id {} is the source's own; choose another with --server-id",
                self.setup.source, self.replica_id
            )));
        }
        Ok(())
    }

    /// The source must still have its log from the target's position on.
    async fn check_reach(&self, at: &LogPosition) -> Result<(), SourceError> {
        let reach = crate::engine::mysql::reach::log_reach(self.source, at).await?;
        if reach.reaches {
            return Ok(());
        }
        Err(SourceError::LogGap {
            source_name: self.setup.source.clone(),
            parent: format!("the replica's position ({})", self.setup.full_copy),
            needed: at.to_string(),
            detail: format!(
                "the source's binary logs start at {}; the replica cannot continue — seed it again from a newer copy \
                 (cairn replica seed --clean --handover cairn), or run with --auto-resync",
                reach.oldest
            ),
        })
    }

    /// The position the target holds, read after any earlier applier's session ended (its last
    /// COMMIT may still be running on the server: the locking read waits for it).
    async fn position(&self, applier: &mut Applier<'_>) -> Result<(String, u64, GtidState), SourceError> {
        let (my, setup) = (self.target, self.setup);
        settle_earlier_replay(applier).await?;
        applier.exec("reading the replica's position", "BEGIN").await?;
        let row: Option<(String, u64, Option<String>)> = applier
            .conn
            .exec_first(
                format!(
                    "SELECT server_file, position, gtid FROM {PROGRESS_DATABASE}.progress WHERE source = ? AND \
                     target_databases = ? FOR UPDATE"
                ),
                (&setup.source, &setup.targets),
            )
            .await
            .map_err(|e| my.error("reading the replica's position", e))?;
        applier
            .conn
            .exec_drop(
                format!(
                    "UPDATE {PROGRESS_DATABASE}.progress SET connection_id = CONNECTION_ID() WHERE source = ? AND \
                     target_databases = ?"
                ),
                (&setup.source, &setup.targets),
            )
            .await
            .map_err(|e| my.error("recording the applier's session", e))?;
        applier.exec("reading the replica's position", "COMMIT").await?;
        position_of(my, setup, row)
    }

    /// Where the source's log ends, when the applier has read and applied all of it.
    async fn caught_up(&self, server: &Server, live: &Live) -> Result<Option<LogPosition>, SourceError> {
        let mut conn = self.source.connect(None).await?;
        let now = coordinates(self.source, &mut conn, server).await?;
        let _ = conn.disconnect().await;
        let LogPosition::Mysql { file, position, .. } = &now else {
            return Ok(None);
        };
        let (read_file, read_to) = live.received();
        Ok((file == read_file && *position == read_to).then_some(now))
    }
}

/// Whether the live log was read at least to `end` (the source's end when the run started).
fn reached(live: &Live, end: &LogPosition) -> bool {
    let LogPosition::Mysql { file, position, .. } = end else {
        return true;
    };
    let (read_file, read_to) = live.received();
    let order = |name: &str| crate::engine::mysql::binlog::file_order(name);
    (order(read_file), read_to) >= (order(file), *position)
}

/// The position the target holds, read without locking (a dry run).
async fn read_position(
    my: &My,
    conn: &mut mysql_async::Conn,
    setup: &Setup,
) -> Result<(String, u64, GtidState), SourceError> {
    let row: Option<(String, u64, Option<String>)> = conn
        .exec_first(
            format!(
                "SELECT server_file, position, gtid FROM {PROGRESS_DATABASE}.progress WHERE source = ? AND \
                 target_databases = ?"
            ),
            (&setup.source, &setup.targets),
        )
        .await
        .map_err(|e| my.error("reading the replica's position", e))?;
    position_of(my, setup, row)
}

fn position_of(
    my: &My,
    setup: &Setup,
    row: Option<(String, u64, Option<String>)>,
) -> Result<(String, u64, GtidState), SourceError> {
    let Some((file, position, gtid)) = row else {
        return Err(SourceError::Unsupported(format!(
            "{}: {PROGRESS_DATABASE}.progress has no position for source {}; seed the replica again",
            my.name, setup.source
        )));
    };
    let gtids = GtidState::parse(gtid.as_deref().unwrap_or_default())
        .map_err(|e| SourceError::Damaged(format!("the replica's recorded GTID position: {e}")))?;
    Ok((file, position, gtids))
}
