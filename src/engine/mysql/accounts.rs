//! MySQL/MariaDB accounts in a copy and on a target: read with `SHOW CREATE USER` and `SHOW
//! GRANTS` (authentication plugin and stored hash, resource limits, roles, default roles,
//! proxies), and made again after a restore's data. A one-database copy keeps the accounts and
//! roles that hold grants on it (and those that hold its roles), with their global grants and
//! their grants on that database; a whole-server copy keeps every account. The server's own
//! accounts — `root` (unless `users-include-root`), anonymous users, the
//! `mysql.*`/`mariadb.sys` system accounts — are not copied: the target has its own.

use std::collections::{BTreeMap, BTreeSet};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::statement_text::{quoted_end, starts_with_ignoring_case};
use super::{My, quote_ident, quote_literal};
use crate::engine::accounts::{Account, AccountOutcome, AccountScope, Accounts};
use crate::engine::{RestoreInput, SourceError};

/// Accounts a server keeps for itself.
const SYSTEM_USERS: &[&str] = &[
    "root",
    "",
    "mariadb.sys",
    "mysql.sys",
    "mysql.session",
    "mysql.infoschema",
    "PUBLIC",
];

/// (user, host) of an account; a MariaDB role has an empty host.
type Key = (String, String);

/// Reads the accounts a copy of `database` (`None`: the whole server) keeps.
///
/// # Errors
/// A privilege the copying account lacks (reading `mysql.*`), or the server's error.
pub(super) async fn capture(
    my: &My,
    conn: &mut Conn,
    database: Option<&str>,
    mariadb: bool,
    include_root: bool,
) -> Result<Accounts, SourceError> {
    let doing = "reading the accounts (users = true needs SELECT on the mysql database)";
    if !mariadb {
        // MySQL 8's hashes are binary: `SHOW CREATE USER` writes them as hex with this.
        let _ = conn.query_drop("SET SESSION print_identified_with_as_hex = ON").await;
    }
    let role_column = if mariadb { "is_role" } else { "'N'" };
    let all: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT User, Host, {role_column} FROM mysql.user ORDER BY User, Host"
        ))
        .await
        .map_err(|e| my.error(doing, e))?;
    // Who holds which role: (member, role).
    let edges: Vec<(String, String, String, String)> = match mariadb {
        true => conn
            .query("SELECT User, Host, Role, '' FROM mysql.roles_mapping")
            .await
            .map_err(|e| my.error(doing, e))?,
        false => conn
            .query("SELECT TO_USER, TO_HOST, FROM_USER, FROM_HOST FROM mysql.role_edges")
            .await
            .map_err(|e| my.error(doing, e))?,
    };
    let edges: Vec<(Key, Key)> = edges
        .into_iter()
        .map(|(user, host, role, role_host)| ((user, host), (role, role_host)))
        .collect();
    let keep: BTreeSet<Key> = match database {
        None => all.iter().map(|(u, h, _)| (u.clone(), h.clone())).collect(),
        Some(database) => {
            let mut holders: BTreeSet<Key> = BTreeSet::new();
            for table in ["db", "tables_priv", "columns_priv", "procs_priv"] {
                let found: Vec<(String, String)> = conn
                    .exec(
                        format!("SELECT DISTINCT User, Host FROM mysql.{table} WHERE Db = ? OR Db = ?"),
                        (database, escape_like(database)),
                    )
                    .await
                    .map_err(|e| my.error(doing, e))?;
                holders.extend(found);
            }
            // The accounts holding a kept role come along (an application's login is often only
            // a member of the role that holds the grants), then the roles the kept accounts hold
            // (their grants name them) — not the members of those, and never the copying
            // account for holding a role: MariaDB grants a role to whoever created it.
            let current: String = conn
                .query_first("SELECT CURRENT_USER()")
                .await
                .map_err(|e| my.error(doing, e))?
                .unwrap_or_default();
            let current: Key = match current.rsplit_once('@') {
                Some((user, host)) => (user.to_string(), host.to_string()),
                None => (current, String::new()),
            };
            let system = |key: &Key| SYSTEM_USERS.contains(&key.0.as_str()) || key == &current;
            holders.retain(|key| !system(key));
            let mut grown = true;
            while grown {
                grown = false;
                for (member, role) in &edges {
                    if holders.contains(role) && !system(member) && holders.insert(member.clone()) {
                        grown = true;
                    }
                }
            }
            let mut grown = true;
            while grown {
                grown = false;
                for (member, role) in &edges {
                    if holders.contains(member) && !system(role) && holders.insert(role.clone()) {
                        grown = true;
                    }
                }
            }
            holders
        }
    };
    let kept: Vec<&(String, String, String)> = all
        .iter()
        .filter(|(u, h, _)| {
            let system = SYSTEM_USERS.contains(&u.as_str()) && !(include_root && u == "root");
            !system && keep.contains(&(u.clone(), h.clone()))
        })
        .collect();
    // How `SHOW GRANTS` writes the kept accounts and roles, for the grants that name them.
    let names: BTreeSet<String> = kept
        .iter()
        .map(|(u, h, role)| match role == "Y" {
            true => quote_ident(u),
            false => format!("{}@{}", quote_ident(u), quote_ident(h)),
        })
        .collect();
    // Roles first: the accounts' grants and default roles name them (a MySQL role is an account
    // that others hold).
    let granted: BTreeSet<&Key> = edges.iter().map(|(_, role)| role).collect();
    let is_granted = |u: &String, h: &String| granted.contains(&(u.clone(), h.clone()));
    let mut accounts = Vec::new();
    for (user, host, role) in kept
        .iter()
        .filter(|(u, h, r)| r == "Y" || is_granted(u, h))
        .chain(kept.iter().filter(|(u, h, r)| r != "Y" && !is_granted(u, h)))
    {
        let is_role = role == "Y";
        let name = account_name(user, host, is_role);
        let create = match is_role {
            true => Ok(vec![format!("CREATE ROLE {}", quote_ident(user))]),
            false => conn
                .query_first(format!("SHOW CREATE USER {name}"))
                .await
                .map(|shown: Option<String>| vec![shown.unwrap_or_default()]),
        };
        let grants = match create {
            Ok(create) => conn
                .query(format!("SHOW GRANTS FOR {name}"))
                .await
                .map(|grants: Vec<String>| (create, grants)),
            Err(e) => Err(e),
        };
        let (create, grants) = match grants {
            Ok(read) => read,
            // Dropped since the list was read: it is not there to copy.
            Err(mysql_async::Error::Server(e)) if matches!(e.code, 1141 | 1133 | 1396 | 1449) => {
                tracing::warn!("account {name} was dropped while the accounts were read: not copied");
                continue;
            }
            Err(e) => return Err(my.error(&format!("reading account {name}"), e)),
        };
        let grants = grants
            .into_iter()
            .filter(|grant| kept_grant(grant, database, &names))
            .collect();
        accounts.push(Account {
            name,
            user: user.clone(),
            host: (!is_role).then(|| host.clone()),
            role: is_role,
            create,
            reset: Vec::new(),
            grants,
        });
    }
    Ok(Accounts {
        scope: match database {
            None => AccountScope::Server,
            Some(_) => AccountScope::Database,
        },
        accounts,
        ..Accounts::default()
    })
}

/// `'user'@'host'`, or a role's quoted name.
fn account_name(user: &str, host: &str, role: bool) -> String {
    match role {
        true => quote_ident(user),
        false => format!("{}@{}", quote_literal(user), quote_literal(host)),
    }
}

/// `name` as `mysql.db` writes a database name that is not a pattern (`_` and `%` escaped).
fn escape_like(name: &str) -> String {
    name.replace('\\', "\\\\").replace('_', "\\_").replace('%', "\\%")
}

/// What a `GRANT … ON` applies to: the database part of its target (`None`: `*`, every one).
fn grant_database(grant: &str) -> Option<Option<String>> {
    let on = top_level_on(grant)?;
    let mut rest = grant[on + 4..].trim_start();
    for kind in ["FUNCTION ", "PROCEDURE ", "PACKAGE BODY ", "PACKAGE ", "TABLE "] {
        if starts_with_ignoring_case(rest, kind) {
            rest = rest[kind.len()..].trim_start();
        }
    }
    if rest.starts_with('*') {
        return Some(None);
    }
    if rest.starts_with('`') {
        let end = quoted_end(rest, b'`')?;
        return Some(Some(rest[1..end - 1].replace("``", "`")));
    }
    let end = rest.find(['.', ' ']).unwrap_or(rest.len());
    Some(Some(rest[..end].to_string()))
}

/// Where ` ON ` of a `GRANT … ON target` is, outside quotes and column lists.
fn top_level_on(grant: &str) -> Option<usize> {
    let bytes = grant.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'`' | b'\'' | b'"' => i += quoted_end(&grant[i..], bytes[i])?,
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b' ' if depth == 0 && starts_with_ignoring_case(&grant[i..], " ON ") => {
                return Some(i);
            }
            b' ' if depth == 0 && starts_with_ignoring_case(&grant[i..], " TO ") => {
                return None;
            }
            _ => i += 1,
        }
    }
    None
}

/// Whether a line of `SHOW GRANTS` belongs in a copy of `database` (`None`: every line): global
/// grants, grants on that database, proxies, and the roles (and default roles) the copy keeps.
fn kept_grant(grant: &str, database: Option<&str>, names: &BTreeSet<String>) -> bool {
    let Some(database) = database else { return true };
    let upper = grant.trim_start().to_ascii_uppercase();
    if upper.starts_with("SET DEFAULT ROLE ") {
        let role = grant.trim_start()["SET DEFAULT ROLE ".len()..]
            .split(" FOR ")
            .next()
            .unwrap_or("");
        return role.trim().eq_ignore_ascii_case("NONE") || names.contains(role.trim());
    }
    // Partial revokes take back part of a global grant that is kept.
    if upper.starts_with("GRANT PROXY ") || upper.starts_with("REVOKE ") {
        return true;
    }
    match grant_database(grant) {
        Some(None) => true,
        Some(Some(name)) => name == database || name == escape_like(database),
        // `GRANT role TO account`: the role must be kept too.
        None => grant
            .trim_start()
            .get("GRANT ".len()..)
            .and_then(|rest| rest.split(" TO ").next())
            .is_some_and(|role| role.split(',').all(|r| names.contains(r.trim()))),
    }
}

/// A grant line with its databases renamed as the restore renames them.
fn renamed_grant(grant: &str, renames: &BTreeMap<String, String>) -> String {
    let Some(Some(database)) = grant_database(grant) else {
        return grant.to_string();
    };
    let Some(on) = top_level_on(grant) else {
        return grant.to_string();
    };
    // A grant on a database whose name has `_` or `%` may write them escaped (`app\_db`).
    let unescaped = database.replace(r"\_", "_").replace(r"\%", "%");
    let escaped = unescaped != database;
    match renames.get(&unescaped) {
        Some(to) if to != &unescaped => {
            let to = match escaped {
                true => escape_like(to),
                false => to.clone(),
            };
            // The first name after ` ON ` is the target's database.
            let (head, target) = grant.split_at(on);
            format!(
                "{head}{}",
                target.replacen(&quote_ident(&database), &quote_ident(&to), 1)
            )
        }
        _ => grant.to_string(),
    }
}

/// Creates `accounts` on the target (the restore's data is in place): each one the target lacks
/// (or, with `replace`, has), then their grants, databases renamed by `renames`. Running it again
/// keeps what the first run made, so a resumed restore can.
///
/// # Errors
/// The target's error; a message about a statement with a hash in it is cut before it quotes.
pub(super) async fn restore(
    my: &My,
    input: &RestoreInput,
    accounts: &Accounts,
    renames: &BTreeMap<String, String>,
) -> Result<Vec<AccountOutcome>, SourceError> {
    let mut conn = my.connect(None).await?;
    if input.mysql.no_binlog {
        conn.query_drop("SET SESSION sql_log_bin = 0")
            .await
            .map_err(|e| my.error("leaving the accounts out of the binary log", e))?;
    }
    let (version, current): (String, String) = conn
        .query_first("SELECT VERSION(), CURRENT_USER()")
        .await
        .map_err(|e| my.error("reading the target's version", e))?
        .unwrap_or_default();
    let mariadb = version.contains("MariaDB");
    let mut outcomes = Vec::new();
    let mut made = Vec::new();
    for account in &accounts.accounts {
        let host = account.host.clone().unwrap_or_default();
        let exists: Option<u8> = conn
            .exec_first(
                "SELECT 1 FROM mysql.user WHERE User = ? AND Host = ?",
                (&account.user, &host),
            )
            .await
            .map_err(|e| my.error(&format!("looking up account {}", account.name), e))?;
        let restoring = format!("{}@{host}", account.user) == current;
        let mut notes = Vec::new();
        let outcome = match (exists.is_some(), input.users.replace) {
            (true, true) if restoring => {
                notes.push("the account the restore runs as is never replaced".to_string());
                "kept"
            }
            (true, false) => "kept",
            (true, true) => {
                replace(my, &mut conn, account, mariadb).await?;
                "replaced"
            }
            (false, _) => {
                for statement in &account.create {
                    run(my, &mut conn, &account.name, statement).await?;
                }
                "created"
            }
        };
        if outcome != "kept" {
            made.push(account);
        }
        outcomes.push(AccountOutcome {
            name: account.name.clone(),
            outcome,
            notes,
        });
    }
    for account in made {
        let outcome = outcomes
            .iter_mut()
            .find(|o| o.name == account.name)
            .expect("every account has an outcome");
        for grant in &account.grants {
            let grant = renamed_grant(grant, renames);
            match conn.query_drop(grant.as_str()).await {
                Ok(()) => {}
                // A table-level grant on a table the restore did not make (a selection).
                Err(mysql_async::Error::Server(e)) if matches!(e.code, 1146 | 1147 | 1144) => {
                    let on = grant_database(&grant).flatten().unwrap_or_default();
                    outcome.notes.push(format!(
                        "a grant on database {on} not made: {}",
                        crate::engine::accounts::scrub(&e.message)
                    ));
                }
                Err(e) => return Err(refused(my, &account.name, &grant, e)),
            }
        }
    }
    let _ = conn.disconnect().await;
    Ok(outcomes)
}

/// Sets an existing account as the copy holds it: MariaDB makes a user again in one statement
/// (`CREATE OR REPLACE`); a role keeps who holds it and loses its privileges, which its grants
/// then give back; MySQL drops the user and creates it.
async fn replace(my: &My, conn: &mut Conn, account: &Account, mariadb: bool) -> Result<(), SourceError> {
    if account.role {
        let revoke = format!("REVOKE ALL PRIVILEGES, GRANT OPTION FROM {}", account.name);
        return run(my, conn, &account.name, &revoke).await;
    }
    for statement in &account.create {
        match (mariadb, statement.strip_prefix("CREATE USER ")) {
            (true, Some(rest)) => run(my, conn, &account.name, &format!("CREATE OR REPLACE USER {rest}")).await?,
            (false, Some(_)) => {
                run(my, conn, &account.name, &format!("DROP USER {}", account.name)).await?;
                run(my, conn, &account.name, statement).await?;
            }
            (_, None) => run(my, conn, &account.name, statement).await?,
        }
    }
    Ok(())
}

/// Runs one statement about account `name`.
async fn run(my: &My, conn: &mut Conn, name: &str, sql: &str) -> Result<(), SourceError> {
    conn.query_drop(sql).await.map_err(|e| refused(my, name, sql, e))
}

/// The error of a statement about an account, which may carry a password hash: the server's
/// message is cut before it quotes anything.
fn refused(my: &My, name: &str, sql: &str, e: mysql_async::Error) -> SourceError {
    match e {
        mysql_async::Error::Server(server) => SourceError::Database {
            database: my.name.clone(),
            doing: format!("making account {name} ({})", first_words(sql)),
            detail: format!(
                "error {} ({}): {}",
                server.code,
                server.state,
                crate::engine::accounts::scrub(&server.message)
            ),
        },
        // Not the server's answer: nothing of the statement is in it.
        other => my.error(&format!("making account {name}"), other),
    }
}

/// The first two words of a statement: what it is, without what it holds.
fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_lines_name_their_database() {
        assert_eq!(
            grant_database("GRANT SELECT, INSERT ON `app`.* TO `a`@`%`"),
            Some(Some("app".into()))
        );
        assert_eq!(
            grant_database("GRANT SELECT (`id`, `on`) ON `app`.`t` TO `a`@`%`"),
            Some(Some("app".into()))
        );
        assert_eq!(
            grant_database("GRANT EXECUTE ON PROCEDURE `app`.`p` TO `a`@`%`"),
            Some(Some("app".into()))
        );
        assert_eq!(
            grant_database("GRANT USAGE ON *.* TO `a`@`%` IDENTIFIED BY PASSWORD '*AB'"),
            Some(None)
        );
        assert_eq!(grant_database("GRANT `reader` TO `a`@`%`"), None);
        // Names in other scripts: compared byte by byte, never cut inside a character.
        assert_eq!(
            grant_database("GRANT SELECT ON `база`.* TO `пользователь`@`%`"),
            Some(Some("база".into()))
        );
        assert_eq!(
            grant_database("GRANT SELECT ON база.* TO a@`%`"),
            Some(Some("база".into()))
        );
    }

    #[test]
    fn a_one_database_copy_keeps_its_grants_and_roles() {
        let names: BTreeSet<String> = ["`reader`".to_string(), "'a'@'%'".to_string()].into();
        let keep = |g: &str| kept_grant(g, Some("app"), &names);
        assert!(keep("GRANT USAGE ON *.* TO `a`@`%`"));
        assert!(keep("GRANT SELECT ON `app`.* TO `a`@`%`"));
        assert!(keep("GRANT SELECT ON `app`.`t` TO `a`@`%`"));
        assert!(!keep("GRANT SELECT ON `other`.* TO `a`@`%`"));
        assert!(keep("GRANT `reader` TO `a`@`%`"));
        assert!(!keep("GRANT `admin` TO `a`@`%`"));
        assert!(keep("SET DEFAULT ROLE `reader` FOR `a`@`%`"));
        assert!(!keep("SET DEFAULT ROLE `admin` FOR `a`@`%`"));
        assert!(keep("GRANT PROXY ON ''@'%' TO 'a'@'%'"));
    }

    #[test]
    fn grants_follow_renamed_databases() {
        let renames: BTreeMap<String, String> = [("app".to_string(), "app2".to_string())].into();
        assert_eq!(
            renamed_grant("GRANT SELECT ON `app`.`t` TO `app`@`%`", &renames),
            "GRANT SELECT ON `app2`.`t` TO `app`@`%`"
        );
        assert_eq!(
            renamed_grant("GRANT SELECT (`app`) ON `app`.`t` TO `a`@`%`", &renames),
            "GRANT SELECT (`app`) ON `app2`.`t` TO `a`@`%`"
        );
        assert_eq!(
            renamed_grant("GRANT USAGE ON *.* TO `app`@`%`", &renames),
            "GRANT USAGE ON *.* TO `app`@`%`"
        );
    }
}
