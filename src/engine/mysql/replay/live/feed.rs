//! A MySQL/MariaDB source's live binary log as a change stream for another engine's applier
//! (MySQL → PostgreSQL): the source checked to be the server the replica was seeded from, its
//! log checked to still reach the replica's position, then the stream opened there.

use super::stream::{Live, Wanted};
use crate::engine::change::Change;
use crate::engine::mysql::My;
use crate::engine::mysql::binlog::GtidState;
use crate::engine::mysql::capture::{default_replica_server_id, identity};
use mysql_async::prelude::Queryable;

use crate::engine::mysql::snapshot::{Server, coordinates, server};
use crate::engine::{SourceError, SourceSpec};
use crate::repo::model::LogPosition;

/// The live stream of a source, from a replica's position on.
pub(crate) struct LiveFeed {
    source: My,
    server: Server,
    live: Live,
    /// Where the source's log ended when the feed opened (`--catch-up` stops there).
    pub end_at_start: LogPosition,
}

impl LiveFeed {
    /// Opens `source`'s log at `at` for the replica keyed `replica_key`, whose copies came from
    /// the server `identity_expected`; only the rows of tables `wanted` picks are decoded.
    ///
    /// # Errors
    /// Another server than the copies came from, a log that no longer reaches `at`
    /// ([`SourceError::LogGap`]), login or the server's error.
    pub(crate) async fn open(
        source: &SourceSpec,
        identity_expected: &str,
        replica_key: &str,
        server_id: Option<u32>,
        at: &LogPosition,
        wanted: Wanted,
    ) -> Result<LiveFeed, SourceError> {
        let LogPosition::Mysql { file, position, gtid } = at else {
            return Err(SourceError::Unsupported(format!("{at} is not a binary log position")));
        };
        let my = My::new(source.url.clone());
        let mut conn = my.connect(None).await?;
        let server = server(&my, &mut conn).await?;
        let end_at_start = coordinates(&my, &mut conn, &server).await?;
        let _ = conn.disconnect().await;
        let found = identity(&server);
        if found != identity_expected {
            return Err(SourceError::Unsupported(format!(
                "source {} is now {found}, not {identity_expected} the replica was seeded from (a failover or a \
                 rebuilt server): its log positions mean something else; seed the replica again",
                source.name
            )));
        }
        let replica_id =
            server_id.unwrap_or_else(|| default_replica_server_id(&format!("{}\n{replica_key}", source.name)));
        if u64::from(replica_id) == server.server_id {
            return Err(SourceError::Unsupported(format!(
                "source {}: the applier's server id {replica_id} is the source's own; choose another with --server-id",
                source.name
            )));
        }
        let reach = crate::engine::mysql::reach::log_reach(&my, at).await?;
        if !reach.reaches {
            return Err(SourceError::LogGap {
                source_name: source.name.clone(),
                parent: "the replica's position".into(),
                needed: at.to_string(),
                detail: format!(
                    "the source's binary logs start at {}; the replica cannot continue — seed it again from a newer \
                     copy (cairn replica seed --clean --handover cairn), or run with --auto-resync",
                    reach.oldest
                ),
            });
        }
        let gtids = GtidState::parse(gtid.as_deref().unwrap_or_default())
            .map_err(|e| SourceError::Damaged(format!("the replica's recorded GTID position: {e}")))?;
        let live = Live::open(
            &my,
            &source.name,
            server.mariadb,
            replica_id,
            file,
            *position,
            gtids,
            wanted,
        )
        .await?;
        Ok(LiveFeed {
            source: my,
            server,
            live,
            end_at_start,
        })
    }

    /// The next change; `None` when the server ended the stream.
    ///
    /// # Errors
    /// A damaged event, or a lost connection ([`SourceError::Disconnected`]).
    pub(crate) async fn next(&mut self) -> Result<Option<Change>, SourceError> {
        self.live.next().await
    }

    /// Whether the last change read leaves a source transaction open.
    pub(crate) fn in_transaction(&self) -> bool {
        self.live.in_transaction()
    }

    /// Whether more of the log is ready to read without waiting.
    ///
    /// # Errors
    /// A damaged event.
    pub(crate) fn ready(&mut self) -> Result<bool, SourceError> {
        self.live.ready()
    }

    /// Where in the source's log the feed has read to (file and offset).
    pub(crate) fn received(&self) -> (String, u64) {
        let (file, position) = self.live.received();
        (file.to_string(), position)
    }

    /// Where in the source's log the event of the last change handed out starts (file and
    /// offset): a place inside that change's transaction.
    pub(crate) fn change_at(&self) -> (String, u64) {
        let (file, position) = self.live.change_at();
        (file.to_string(), position)
    }

    /// When the last transaction read was written on the source (seconds since the epoch).
    pub(crate) fn last_timestamp(&self) -> Option<u32> {
        self.live.last_timestamp
    }

    /// Whether the log was read at least to where it ended when the feed opened.
    pub(crate) fn reached_end_at_start(&self) -> bool {
        super::reached(&self.live, &self.end_at_start)
    }

    /// Where the source's log ends now, if it is the same point as `applied` (no transaction
    /// the replica lacks); `None` while the source is ahead.
    ///
    /// # Errors
    /// Login or the server's error.
    pub(crate) async fn at_point(&self, applied: &LogPosition) -> Result<Option<LogPosition>, SourceError> {
        let mut conn = self.source.connect(None).await?;
        let now = coordinates(&self.source, &mut conn, &self.server).await?;
        let _ = conn.disconnect().await;
        Ok(super::validate::same_point(&now, applied).then_some(now))
    }

    /// Where the source's log ends now, when the feed has read everything up to there; `None`
    /// while the source is ahead.
    ///
    /// # Errors
    /// Login or the server's error.
    pub(crate) async fn caught_up(&self) -> Result<Option<LogPosition>, SourceError> {
        let mut conn = self.source.connect(None).await?;
        let now = coordinates(&self.source, &mut conn, &self.server).await?;
        let _ = conn.disconnect().await;
        let LogPosition::Mysql { file, position, .. } = &now else {
            return Ok(None);
        };
        let (read_file, read_to) = self.live.received();
        Ok((file == read_file && *position == read_to).then_some(now))
    }

    /// For a validation: the rows of `database.table` counted, and its first and last `rows`
    /// rows by `key` read with `select` (one expression per column), each field as the server's
    /// text in UTC and binary — as a copy reads them.
    ///
    /// # Errors
    /// Login or the server's error, naming the table.
    pub(crate) async fn sample(
        &self,
        database: &str,
        table: &str,
        select: &[String],
        key: &[String],
        rows: u32,
    ) -> Result<(u64, Vec<Vec<Option<Vec<u8>>>>), SourceError> {
        use crate::engine::mysql::quote_ident;
        let my = &self.source;
        let doing = format!("reading {database}.{table} for the validation");
        let mut conn = my.connect(None).await?;
        conn.query_drop("SET SESSION time_zone = '+00:00', NAMES binary")
            .await
            .map_err(|e| my.error(&doing, e))?;
        let qualified = format!("{}.{}", quote_ident(database), quote_ident(table));
        let count: u64 = conn
            .query_first(format!("SELECT COUNT(*) FROM {qualified}"))
            .await
            .map_err(|e| my.error(&doing, e))?
            .unwrap_or(0);
        let mut sampled = Vec::new();
        if !key.is_empty() && !select.is_empty() {
            for order in ["ASC", "DESC"] {
                let by: Vec<String> = key.iter().map(|k| format!("{} {order}", quote_ident(k))).collect();
                let found: Vec<mysql_async::Row> = conn
                    .query(format!(
                        "SELECT {} FROM {qualified} ORDER BY {} LIMIT {rows}",
                        select.join(", "),
                        by.join(", ")
                    ))
                    .await
                    .map_err(|e| my.error(&doing, e))?;
                for row in found {
                    sampled.push(
                        row.unwrap()
                            .into_iter()
                            .map(|value| match value {
                                mysql_async::Value::NULL => None,
                                mysql_async::Value::Bytes(bytes) => Some(bytes),
                                other => Some(other.as_sql(true).into_bytes()),
                            })
                            .collect(),
                    );
                }
            }
        }
        let _ = conn.disconnect().await;
        Ok((count, sampled))
    }
}
