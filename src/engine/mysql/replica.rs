//! Handing a seeded MySQL/MariaDB target over to native replication from its source, starting
//! exactly at the position the restore reached: MariaDB by GTID (`gtid_slave_pos`), a source
//! without GTIDs by binary log file and position.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::My;
use crate::engine::{NativeHandover, ReplicationState, SourceError, SourceUrl};
use crate::repo::status::LogPosition;

/// A string literal for a statement that cannot take parameters (CHANGE MASTER).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// The replication settings a target needs to follow `source` from `position`: the statements
/// in order. Only the databases of the copy are replicated (`replicate_do_db`), since the
/// source's server may hold others that the target never received.
pub(super) fn handover_statements(
    source: &SourceUrl,
    position: &LogPosition,
    databases: &[String],
) -> Result<Vec<String>, SourceError> {
    let (host, user) = endpoint(source)?;
    let LogPosition::Mysql { file, position, gtid } = position else {
        return Err(SourceError::Unsupported(format!(
            "{position} is not a binary log position"
        )));
    };
    let mut change = change_to("CHANGE MASTER TO", "MASTER", source, &host, &user);
    let mut statements = Vec::new();
    match gtid.as_deref().filter(|g| !g.is_empty()) {
        Some(gtid) => {
            statements.push(format!("SET GLOBAL gtid_slave_pos = {}", literal(gtid)));
            change.push_str(", MASTER_USE_GTID = slave_pos");
        }
        None => change.push_str(&format!(
            ", MASTER_LOG_FILE = {}, MASTER_LOG_POS = {position}",
            literal(file)
        )),
    }
    if uses_tls(source) {
        change.push_str(", MASTER_SSL = 1");
    }
    if !databases.is_empty() {
        statements.push(format!(
            "SET GLOBAL replicate_do_db = {}",
            literal(&databases.join(","))
        ));
    }
    statements.push(change);
    statements.push("START SLAVE".into());
    Ok(statements)
}

/// Refuses a target that already replicates from somewhere.
pub(super) async fn check_not_replicating(target: &My) -> Result<(), SourceError> {
    let mut conn = target.connect(None).await?;
    let configured: Option<mysql_async::Row> = conn
        .query_first("SHOW SLAVE STATUS")
        .await
        .map_err(|e| target.error("reading the target's replication (SHOW SLAVE STATUS)", e))?;
    if configured.is_some() {
        return Err(SourceError::Unsupported(format!(
            "{} already replicates from a source (SHOW SLAVE STATUS); stop it and `RESET SLAVE ALL` first",
            target.name
        )));
    }
    let _ = conn.disconnect().await;
    if let Some(running) = super::replay::states(target).await?.into_iter().find(|s| s.running) {
        return Err(SourceError::Unsupported(format!(
            "cairn's applier of source {} runs on {} ({}); stop it first with `cairn replica stop`",
            running.source,
            target.name,
            running.applier.unwrap_or_else(|| "unknown".into())
        )));
    }
    Ok(())
}

/// The source's host and user, which the replica connects with.
fn endpoint(source: &SourceUrl) -> Result<(String, String), SourceError> {
    let url = source.without_password();
    let host = url
        .host_str()
        .ok_or_else(|| SourceError::Unsupported(format!("source {source} has no host to replicate from")))?;
    let user = url.username();
    if user.is_empty() {
        return Err(SourceError::Unsupported(format!(
            "source {source} names no user for the replica to connect as"
        )));
    }
    Ok((host.to_string(), user.to_string()))
}

/// The start of the statement pointing a replica at `source`: `statement` with the `prefix`ed
/// host, port, user and password (`MASTER_…` on MariaDB, `SOURCE_…` on MySQL 8).
fn change_to(statement: &str, prefix: &str, source: &SourceUrl, host: &str, user: &str) -> String {
    format!(
        "{statement} {prefix}_HOST = {}, {prefix}_PORT = {}, {prefix}_USER = {}, {prefix}_PASSWORD = {}",
        literal(host),
        source.without_password().port().unwrap_or(3306),
        literal(user),
        literal(source.password.as_ref().map(|p| p.expose()).unwrap_or_default())
    )
}

fn uses_tls(source: &SourceUrl) -> bool {
    source
        .without_password()
        .query_pairs()
        .any(|(k, v)| k == "ssl-mode" && !v.eq_ignore_ascii_case("disabled"))
}

/// MySQL 8 (not MariaDB): the restored GTID set becomes the target's `gtid_purged` and the
/// replica asks for everything after it (`SOURCE_AUTO_POSITION`); without GTIDs, file and
/// position. The target's own binary log of the restore is reset first, since its GTIDs would
/// otherwise overlap `gtid_purged`. Written and unit-tested only: the test environment has no
/// MySQL 8 server.
pub(super) fn mysql8_statements(
    source: &SourceUrl,
    position: &LogPosition,
    databases: &[String],
) -> Result<Vec<String>, SourceError> {
    let (host, user) = endpoint(source)?;
    let LogPosition::Mysql { file, position, gtid } = position else {
        return Err(SourceError::Unsupported(format!(
            "{position} is not a binary log position"
        )));
    };
    let mut change = change_to("CHANGE REPLICATION SOURCE TO", "SOURCE", source, &host, &user);
    let mut statements = Vec::new();
    match gtid.as_deref().filter(|g| !g.is_empty()) {
        Some(gtid) => {
            statements.push("RESET MASTER".to_string());
            statements.push(format!("SET GLOBAL gtid_purged = {}", literal(gtid)));
            change.push_str(", SOURCE_AUTO_POSITION = 1");
        }
        None => change.push_str(&format!(
            ", SOURCE_LOG_FILE = {}, SOURCE_LOG_POS = {position}",
            literal(file)
        )),
    }
    if uses_tls(source) {
        change.push_str(", SOURCE_SSL = 1");
    }
    if !databases.is_empty() {
        let quoted: Vec<String> = databases.iter().map(|d| super::quote_ident(d)).collect();
        statements.push(format!(
            "CHANGE REPLICATION FILTER REPLICATE_DO_DB = ({})",
            quoted.join(", ")
        ));
    }
    statements.push(change);
    statements.push("START REPLICA".into());
    Ok(statements)
}

/// Points the target at its source and starts the replica threads, then waits until both run.
pub(super) async fn hand_over(target: &My, handover: &NativeHandover<'_>) -> Result<ReplicationState, SourceError> {
    check_not_replicating(target).await?;
    let mut conn = target.connect(None).await?;
    let statements = match handover.vendor.as_deref() {
        Some("mysql") => mysql8_statements(handover.source, handover.position, handover.databases)?,
        _ => handover_statements(handover.source, handover.position, handover.databases)?,
    };
    for statement in &statements {
        // The CHANGE MASTER statement holds the password: errors name the step, not the text.
        let step = statement.split(" = ").next().unwrap_or(statement).to_string();
        conn.query_drop(statement)
            .await
            .map_err(|e| target.error(&format!("handing over to native replication ({step})"), e))?;
    }
    let mut last = ReplicationState::default();
    for _ in 0..60 {
        let row: Option<mysql_async::Row> = conn
            .query_first("SHOW SLAVE STATUS")
            .await
            .map_err(|e| target.error("reading the target's replication (SHOW SLAVE STATUS)", e))?;
        let Some(row) = row else { break };
        let text = |name: &str| row.get_opt::<Option<String>, _>(name).and_then(|v| v.ok()).flatten();
        last = ReplicationState {
            io_running: text("Slave_IO_Running").as_deref() == Some("Yes"),
            sql_running: text("Slave_SQL_Running").as_deref() == Some("Yes"),
            seconds_behind: text("Seconds_Behind_Master").and_then(|s| s.parse().ok()),
            error: [text("Last_IO_Error"), text("Last_SQL_Error")]
                .into_iter()
                .flatten()
                .find(|e| !e.is_empty()),
        };
        if (last.io_running && last.sql_running) || last.error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some(error) = &last.error {
        return Err(SourceError::Database {
            database: target.name.clone(),
            doing: "starting native replication".into(),
            detail: error.clone(),
        });
    }
    Ok(last)
}

/// The server id of the target, which must differ from its source's.
pub(super) async fn server_id(target: &My) -> Result<String, SourceError> {
    let mut conn = target.connect(None).await?;
    let id: Option<u64> = conn
        .query_first("SELECT @@server_id")
        .await
        .map_err(|e| target.error("reading the target's server_id", e))?;
    Ok(id.unwrap_or(0).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SourceUrl {
        let mut url = SourceUrl::parse("mysql://repl@db1.internal:3307/shop").unwrap();
        url.password = Some(crate::secret::Secret::new("it's"));
        url
    }

    #[test]
    fn gtid_sources_hand_over_by_gtid_and_others_by_file_and_position() {
        let by_gtid = LogPosition::Mysql {
            file: "binlog.000004".into(),
            position: 1234,
            gtid: Some("0-1-77".into()),
        };
        let statements = handover_statements(&source(), &by_gtid, &["shop".into()]).unwrap();
        assert_eq!(statements[0], "SET GLOBAL gtid_slave_pos = '0-1-77'");
        assert_eq!(statements[1], "SET GLOBAL replicate_do_db = 'shop'");
        assert!(
            statements[2].starts_with("CHANGE MASTER TO MASTER_HOST = 'db1.internal', MASTER_PORT = 3307, MASTER_USER = 'repl', MASTER_PASSWORD = 'it''s'")
                && statements[2].ends_with("MASTER_USE_GTID = slave_pos"),
            "{}",
            statements[2]
        );
        assert_eq!(statements[3], "START SLAVE");
        let by_file = LogPosition::Mysql {
            file: "binlog.000004".into(),
            position: 1234,
            gtid: None,
        };
        let statements = handover_statements(&source(), &by_file, &[]).unwrap();
        assert!(
            statements[0].ends_with("MASTER_LOG_FILE = 'binlog.000004', MASTER_LOG_POS = 1234"),
            "{statements:?}"
        );
    }

    #[test]
    fn mysql_8_hands_over_by_gtid_purged_and_auto_position() {
        let by_gtid = LogPosition::Mysql {
            file: "binlog.000004".into(),
            position: 1234,
            gtid: Some("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-77".into()),
        };
        let statements = mysql8_statements(&source(), &by_gtid, &["shop".into()]).unwrap();
        assert_eq!(statements[0], "RESET MASTER");
        assert_eq!(
            statements[1],
            "SET GLOBAL gtid_purged = '3E11FA47-71CA-11E1-9E33-C80AA9429562:1-77'"
        );
        assert_eq!(statements[2], "CHANGE REPLICATION FILTER REPLICATE_DO_DB = (`shop`)");
        assert!(
            statements[3].starts_with("CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'db1.internal', SOURCE_PORT = 3307")
                && statements[3].ends_with("SOURCE_AUTO_POSITION = 1"),
            "{}",
            statements[3]
        );
        assert_eq!(statements[4], "START REPLICA");
        let by_file = LogPosition::Mysql {
            file: "binlog.000004".into(),
            position: 1234,
            gtid: None,
        };
        let statements = mysql8_statements(&source(), &by_file, &[]).unwrap();
        assert_eq!(statements.len(), 2, "{statements:?}");
        assert!(statements[0].ends_with("SOURCE_LOG_FILE = 'binlog.000004', SOURCE_LOG_POS = 1234"));
    }
}
