//! PostgreSQL roles in a copy and on a target: the roles that own or hold privileges in the
//! copied database (and the roles they are members of, and the members of theirs), with their
//! attributes, password hashes as stored (when the copying role may read `pg_authid`),
//! memberships and settings; the database's owner, grants and per-database role settings; the
//! tablespaces it uses. Made again before a restore's schema, so that ownership and privileges
//! come back with it. The bootstrap superuser and the built-in `pg_*` roles are never copied.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use super::{Pg, quote_ident, quote_literal};
use crate::engine::accounts::{
    Account, AccountOutcome, AccountScope, Accounts, DatabaseAccess, DatabaseGrant, Tablespace,
};
use crate::engine::{RestoreInput, SourceError};

/// Settings whose value is a list written with identifiers' quoting (pg_dump's list).
const LIST_SETTINGS: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// One role as the catalog has it.
struct Role {
    oid: i64,
    name: String,
    /// Every attribute, for `ALTER ROLE` (`--replace-users`).
    attributes: String,
    /// Those `CREATE ROLE` does not give by default.
    differing: String,
    login: bool,
    password: Option<String>,
}

/// Reads the roles a copy of the database `client` is connected to keeps.
///
/// # Errors
/// The server's error.
pub(super) async fn capture(pg: &Pg, client: &Client) -> Result<Accounts, SourceError> {
    let doing = "reading the roles (users = true)";
    let fail = |e| pg.error(doing, e);
    let hashes: bool = client
        .query_one("SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')", &[])
        .await
        .map_err(fail)?
        .get(0);
    if !hashes {
        tracing::warn!(
            "{}: the copying role may not read pg_authid: roles are copied without their passwords (copy as a \
             superuser to keep them)",
            pg.name
        );
    }
    let (catalog, password) = match hashes {
        true => ("pg_catalog.pg_authid", "rolpassword"),
        false => ("pg_catalog.pg_roles", "NULL::text"),
    };
    let rows = client
        .query(
            &format!(
                "SELECT oid::int8, rolname::text, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, \
                 rolreplication, rolbypassrls, rolconnlimit, {password}, rolvaliduntil::text FROM {catalog} \
                 WHERE rolname !~ '^pg_' AND oid <> 10 ORDER BY rolname"
            ),
            &[],
        )
        .await
        .map_err(fail)?;
    let roles: Vec<Role> = rows
        .iter()
        .map(|row| {
            // (attribute, whether the role has it, whether CREATE ROLE gives it by default)
            let flags = [
                ("SUPERUSER", row.get::<_, bool>(2), false),
                ("INHERIT", row.get(3), true),
                ("CREATEROLE", row.get(4), false),
                ("CREATEDB", row.get(5), false),
                ("LOGIN", row.get(6), false),
                ("REPLICATION", row.get(7), false),
                ("BYPASSRLS", row.get(8), false),
            ];
            let word = |(name, on, _): &(&str, bool, bool)| match on {
                true => name.to_string(),
                false => format!("NO{name}"),
            };
            let mut all: Vec<String> = flags.iter().map(word).collect();
            // Only what differs from the defaults: a target where the restoring role is not a
            // superuser (a managed service) refuses even a NOSUPERUSER it did not need.
            let mut differing: Vec<String> = flags.iter().filter(|f| f.1 != f.2).map(word).collect();
            let limit: i32 = row.get(9);
            let until: Option<String> = row.get(11);
            for extra in [
                (limit >= 0).then(|| format!("CONNECTION LIMIT {limit}")),
                until.map(|until| format!("VALID UNTIL {}", quote_literal(&until))),
            ]
            .into_iter()
            .flatten()
            {
                all.push(extra.clone());
                differing.push(extra);
            }
            Role {
                oid: row.get(0),
                name: row.get(1),
                attributes: all.join(" "),
                differing: differing.join(" "),
                login: row.get(6),
                password: row.get(10),
            }
        })
        .collect();
    let current: i64 = client
        .query_one(
            "SELECT oid::int8 FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(fail)?
        .get(0);
    // Roles cairn may copy: not built in, not the bootstrap superuser, not the copying role.
    let copyable: BTreeSet<i64> = roles.iter().map(|r| r.oid).filter(|oid| *oid != current).collect();
    let memberships: Vec<(i64, i64, bool)> = client
        .query(
            "SELECT roleid::int8, member::int8, admin_option FROM pg_catalog.pg_auth_members",
            &[],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let holders: BTreeSet<i64> = client
        .query(HOLDERS, &[])
        .await
        .map_err(fail)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // The members of a kept role come along (an application's login is often only a member of
    // the role that holds the privileges), then the roles the kept ones are members of (their
    // memberships name them) — not the other members of those.
    let mut kept: BTreeSet<i64> = holders.intersection(&copyable).copied().collect();
    let mut grown = true;
    while grown {
        grown = false;
        for (role, member, _) in &memberships {
            if kept.contains(role) && copyable.contains(member) && kept.insert(*member) {
                grown = true;
            }
        }
    }
    let mut grown = true;
    while grown {
        grown = false;
        for (role, member, _) in &memberships {
            if kept.contains(member) && copyable.contains(role) && kept.insert(*role) {
                grown = true;
            }
        }
    }
    // Built-in roles (`pg_monitor`, …) are on every server: memberships in them are copied,
    // the roles themselves never are, nor what else they hold.
    let builtin: BTreeMap<i64, String> = client
        .query(
            "SELECT oid::int8, rolname::text FROM pg_catalog.pg_roles WHERE rolname ~ '^pg_'",
            &[],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut names: BTreeMap<i64, &str> = roles.iter().map(|r| (r.oid, r.name.as_str())).collect();
    names.extend(builtin.iter().map(|(oid, name)| (*oid, name.as_str())));
    let settings = client
        .query(
            "SELECT setdatabase <> 0, setrole::int8, setconfig FROM pg_catalog.pg_db_role_setting WHERE setrole <> 0 \
             AND setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))",
            &[],
        )
        .await
        .map_err(fail)?;
    let mut role_settings: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut database_settings = Vec::new();
    for row in &settings {
        let (in_database, role, config): (bool, i64, Vec<String>) = (row.get(0), row.get(1), row.get(2));
        let Some(name) = names.get(&role).filter(|_| kept.contains(&role)) else {
            continue;
        };
        for entry in config {
            let Some((setting, value)) = entry.split_once('=') else {
                continue;
            };
            match in_database {
                true => database_settings.push((name.to_string(), setting.to_string(), value.to_string())),
                false => role_settings.entry(role).or_default().push(format!(
                    "ALTER ROLE {} SET {}",
                    quote_ident(name),
                    set_clause(setting, value)
                )),
            }
        }
    }
    let mut accounts = Vec::new();
    for role in roles.iter().filter(|r| kept.contains(&r.oid)) {
        let quoted = quote_ident(&role.name);
        let password = role
            .password
            .as_ref()
            .map(|p| format!(" PASSWORD {}", quote_literal(p)))
            .unwrap_or_default();
        let settings = role_settings.remove(&role.oid).unwrap_or_default();
        let mut reset = vec![
            format!("ALTER ROLE {quoted} WITH {}{password}", role.attributes),
            format!("ALTER ROLE {quoted} RESET ALL"),
        ];
        reset.extend(settings.iter().cloned());
        let options: Vec<&str> = [role.differing.as_str(), password.trim()]
            .into_iter()
            .filter(|o| !o.is_empty())
            .collect();
        let mut create = vec![match options.is_empty() {
            true => format!("CREATE ROLE {quoted}"),
            false => format!("CREATE ROLE {quoted} WITH {}", options.join(" ")),
        }];
        create.extend(settings);
        let grants = memberships
            .iter()
            .filter(|(granted, member, _)| {
                *member == role.oid && (kept.contains(granted) || builtin.contains_key(granted))
            })
            .filter_map(|(granted, _, admin)| {
                let granted = names.get(granted)?;
                Some(format!(
                    "GRANT {} TO {quoted}{}",
                    quote_ident(granted),
                    if *admin { " WITH ADMIN OPTION" } else { "" }
                ))
            })
            .collect();
        accounts.push(Account {
            name: role.name.clone(),
            user: role.name.clone(),
            host: None,
            role: !role.login,
            create,
            reset,
            grants,
        });
    }
    let database = client
        .query_one(
            "SELECT pg_catalog.pg_get_userbyid(datdba)::text, datacl IS NULL FROM pg_catalog.pg_database WHERE datname \
             = current_database()",
            &[],
        )
        .await
        .map_err(fail)?;
    let grants = match database.get::<_, bool>(1) {
        true => None,
        false => Some(
            client
                .query(
                    "SELECT CASE WHEN a.grantee = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END, \
                     a.privilege_type, a.is_grantable FROM pg_catalog.pg_database d, aclexplode(d.datacl) a WHERE \
                     d.datname = current_database()",
                    &[],
                )
                .await
                .map_err(fail)?
                .iter()
                .map(|r| DatabaseGrant {
                    grantee: r.get(0),
                    privilege: r.get(1),
                    grantable: r.get(2),
                })
                .collect(),
        ),
    };
    let tablespaces = client
        .query(
            "SELECT spcname::text, coalesce(spcoptions, '{}')::text[] FROM pg_catalog.pg_tablespace WHERE spcname NOT \
             IN ('pg_default', 'pg_global') AND oid IN (SELECT reltablespace FROM pg_catalog.pg_class UNION SELECT \
             dattablespace FROM pg_catalog.pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|r| Tablespace {
            name: r.get(0),
            options: r.get(1),
        })
        .collect();
    Ok(Accounts {
        scope: AccountScope::Database,
        accounts,
        database: Some(DatabaseAccess {
            owner: database.get(0),
            grants,
            settings: database_settings,
        }),
        tablespaces,
    })
}

/// The roles that own something in the current database, hold a privilege in it, or have a
/// setting for it.
const HOLDERS: &str = "WITH acl(owner, acl) AS (
    SELECT datdba, datacl FROM pg_catalog.pg_database WHERE datname = current_database()
    UNION ALL SELECT nspowner, nspacl FROM pg_catalog.pg_namespace
    UNION ALL SELECT relowner, relacl FROM pg_catalog.pg_class WHERE oid >= 16384
    UNION ALL SELECT proowner, proacl FROM pg_catalog.pg_proc WHERE oid >= 16384
    UNION ALL SELECT typowner, typacl FROM pg_catalog.pg_type WHERE oid >= 16384
    UNION ALL SELECT lanowner, lanacl FROM pg_catalog.pg_language WHERE oid >= 16384
    UNION ALL SELECT fdwowner, fdwacl FROM pg_catalog.pg_foreign_data_wrapper
    UNION ALL SELECT srvowner, srvacl FROM pg_catalog.pg_foreign_server
    UNION ALL SELECT defaclrole, defaclacl FROM pg_catalog.pg_default_acl
    UNION ALL SELECT 0::oid, attacl FROM pg_catalog.pg_attribute WHERE attacl IS NOT NULL AND attrelid >= 16384
    UNION ALL SELECT lomowner, lomacl FROM pg_catalog.pg_largeobject_metadata
)
SELECT owner::int8 FROM acl WHERE owner <> 0
UNION SELECT (pg_catalog.aclexplode(acl)).grantee::int8 FROM acl WHERE acl IS NOT NULL
UNION SELECT setrole::int8 FROM pg_catalog.pg_db_role_setting
  WHERE setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())";

/// `setting TO value` as `ALTER ROLE … SET` takes a stored `setting=value`.
fn set_clause(setting: &str, value: &str) -> String {
    match LIST_SETTINGS.contains(&setting.to_ascii_lowercase().as_str()) {
        // Stored as the list it was set to, elements already quoted as identifiers.
        true => format!("{} TO {value}", quote_ident(setting)),
        false => format!("{} TO {}", quote_ident(setting), quote_literal(value)),
    }
}

/// Creates `accounts` on the target before its schema, in one transaction (a failure leaves no
/// role half made): each role the target lacks (with `replace`, one it has is set as the copy
/// holds it), then memberships, then — `database_access` — the database's owner, grants and
/// settings as the target's database. Running it again keeps what a first run made.
///
/// # Errors
/// The target's error; a message about a statement with a hash in it is cut before it quotes.
pub(super) async fn restore(
    pg: &Pg,
    client: &Client,
    input: &RestoreInput,
    accounts: &Accounts,
    database_access: bool,
) -> Result<Vec<AccountOutcome>, SourceError> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| pg.error("beginning the roles' transaction", e))?;
    let made = make(pg, client, input, accounts, database_access).await;
    let end = match made {
        Ok(_) => "COMMIT",
        Err(_) => "ROLLBACK",
    };
    let ended = client.batch_execute(end).await;
    let outcomes = made?;
    ended.map_err(|e| pg.error("committing the roles", e))?;
    for tablespace in &accounts.tablespaces {
        let present = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_tablespace WHERE spcname = $1",
                &[&tablespace.name],
            )
            .await
            .map_err(|e| pg.error("looking up tablespaces", e))?
            .is_some();
        if !present {
            tracing::warn!(
                "tablespace {} (used by the source) is not on the target: its objects are in the default tablespace",
                tablespace.name
            );
        }
    }
    Ok(outcomes)
}

async fn make(
    pg: &Pg,
    client: &Client,
    input: &RestoreInput,
    accounts: &Accounts,
    database_access: bool,
) -> Result<Vec<AccountOutcome>, SourceError> {
    let existing = role_names(pg, client).await?;
    let current: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| pg.error("reading the restoring role", e))?
        .get(0);
    let mut outcomes = Vec::new();
    let mut made = Vec::new();
    for account in &accounts.accounts {
        let mut notes = Vec::new();
        let outcome = match (existing.contains(&account.user), input.users.replace) {
            (true, true) if account.user == current => {
                notes.push("the role the restore runs as is never replaced".to_string());
                "kept"
            }
            (true, false) => "kept",
            (true, true) => {
                for statement in &account.reset {
                    run(pg, client, &account.name, statement).await?;
                }
                "replaced"
            }
            (false, _) => {
                for statement in &account.create {
                    run(pg, client, &account.name, statement).await?;
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
        for grant in &account.grants {
            run(pg, client, &account.name, grant).await?;
        }
    }
    let Some(access) = accounts.database.as_ref().filter(|_| database_access) else {
        return Ok(outcomes);
    };
    let roles = role_names(pg, client).await?;
    let database = quote_ident(&pg.database());
    let mut statements = Vec::new();
    if roles.contains(&access.owner) {
        statements.push(format!(
            "ALTER DATABASE {database} OWNER TO {}",
            quote_ident(&access.owner)
        ));
    }
    if let Some(grants) = &access.grants {
        statements.push(format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC"));
        for grant in grants {
            let grantee = match grant.grantee.as_str() {
                "" => "PUBLIC".to_string(),
                name if roles.contains(name) => quote_ident(name),
                _ => continue,
            };
            statements.push(format!(
                "GRANT {} ON DATABASE {database} TO {grantee}{}",
                grant.privilege,
                if grant.grantable { " WITH GRANT OPTION" } else { "" }
            ));
        }
    }
    for (role, setting, value) in &access.settings {
        if roles.contains(role) {
            statements.push(format!(
                "ALTER ROLE {} IN DATABASE {database} SET {}",
                quote_ident(role),
                set_clause(setting, value)
            ));
        }
    }
    for statement in statements {
        run(pg, client, "the database's access", &statement).await?;
    }
    Ok(outcomes)
}

/// The roles the target has.
async fn role_names(pg: &Pg, client: &Client) -> Result<BTreeSet<String>, SourceError> {
    client
        .query("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .map_err(|e| pg.error("listing roles", e))
}

/// Runs one statement about role `name`.
async fn run(pg: &Pg, client: &Client, name: &str, sql: &str) -> Result<(), SourceError> {
    client.batch_execute(sql).await.map_err(|e| refused(pg, name, sql, e))
}

/// The error of a statement about a role, which may carry a password hash: the server's message
/// is cut before it quotes anything.
fn refused(pg: &Pg, name: &str, sql: &str, e: tokio_postgres::Error) -> SourceError {
    let doing = format!(
        "making role {name} ({})",
        sql.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    );
    match e.as_db_error() {
        Some(db) => SourceError::Database {
            database: pg.name.clone(),
            doing,
            detail: format!(
                "{} ({}): {}",
                db.severity(),
                db.code().code(),
                crate::engine::accounts::scrub(db.message())
            ),
        },
        // Not the server's answer: nothing of the statement is in it.
        None => pg.error(&doing, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_written_as_alter_role_takes_them() {
        assert_eq!(set_clause("work_mem", "64MB"), "\"work_mem\" TO '64MB'");
        assert_eq!(
            set_clause("search_path", "\"$user\", public"),
            "\"search_path\" TO \"$user\", public"
        );
        assert_eq!(
            set_clause("application_name", "it's"),
            "\"application_name\" TO 'it''s'"
        );
    }
}
