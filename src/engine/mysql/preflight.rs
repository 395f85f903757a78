//! What a MySQL/MariaDB copy checks before it writes anything, shared by the copy itself and
//! by dry runs: read-only queries only (no lock, no DDL block, no binary log dump).

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::{My, Server, coordinates, inventory};
use crate::engine::{CopyOptions, SourceError, SourceSpec};

/// Checks a full copy can be taken: lock-free needs MariaDB, the global read lock needs RELOAD,
/// the tables can be listed and the binary log position read. Returns the tables to copy and
/// notes for a dry run.
///
/// # Errors
/// [`SourceError::Unsupported`], [`SourceError::Privilege`] or the server's error.
pub(super) async fn check_full(
    my: &My,
    spec: &SourceSpec,
    conn: &mut Conn,
    server: &Server,
    options: &CopyOptions,
) -> Result<(Vec<inventory::Table>, Vec<String>), SourceError> {
    if options.mysql.lock_free && !server.mariadb {
        return Err(SourceError::Unsupported(format!(
            "{}: lock-free copies need MariaDB (binlog_snapshot_file); this is MySQL {}",
            spec.name, server.version
        )));
    }
    let tables = inventory::tables(my, conn, &copy_filters(spec, options)).await?;
    let mut notes = vec![format!(
        "{} {}, {} to copy",
        if server.mariadb { "MariaDB" } else { "MySQL" },
        server.version,
        crate::text::count(tables.len() as u64, "table")
    )];
    if !options.mysql.lock_free && !has_global_privilege(my, conn, "RELOAD").await? {
        return Err(SourceError::Privilege {
            database: my.name.clone(),
            doing: "checking the privileges of a consistent copy".into(),
            detail: "the global read lock that starts every worker's snapshot at one position needs RELOAD; grant it \
                     (GRANT RELOAD ON *.* TO …), or use consistency = \"lock-free\" on MariaDB"
                .into(),
        });
    }
    // Reading the position proves the privilege the copy needs for it (BINLOG MONITOR /
    // REPLICATION CLIENT) without taking any lock.
    if let crate::repo::status::LogPosition::Mysql { file, position, .. } = coordinates(my, conn, server).await?
        && !file.is_empty()
    {
        notes.push(format!("binary log now at {file}:{position}"));
    }
    Ok((tables, notes))
}

/// The filters of a copy: the configured ones, and the database the URL names.
pub(super) fn copy_filters(spec: &SourceSpec, options: &CopyOptions) -> crate::engine::filter::Filters {
    let mut filters = options.filters.clone();
    if let Some(database) = spec.url.database() {
        filters.include_schemas.push(database);
    }
    filters
}

/// Whether the current account holds `privilege` globally. An active role may grant it in ways
/// `USER_PRIVILEGES` does not show, so then the answer is yes and the copy itself finds out.
async fn has_global_privilege(my: &My, conn: &mut Conn, privilege: &str) -> Result<bool, SourceError> {
    let doing = "reading the account's privileges";
    let role: Option<Option<String>> = conn
        .query_first("SELECT CURRENT_ROLE()")
        .await
        .map_err(|e| my.error(doing, e))?;
    if role.flatten().is_some_and(|r| !r.is_empty() && r != "NONE") {
        return Ok(true);
    }
    let granted: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE = ? AND GRANTEE = \
             CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), \
             '''')",
            (privilege,),
        )
        .await
        .map_err(|e| my.error(doing, e))?;
    Ok(granted.unwrap_or(0) > 0)
}
