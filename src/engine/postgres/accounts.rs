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
    Account, AccountOutcome, AccountScope, Accounts, DatabaseAccess, DatabaseGrant, Tablespace, redact,
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
    attributes: String,
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
            let flag = |i: usize, yes: &str| match row.get::<_, bool>(i) {
                true => yes.to_string(),
                false => format!("NO{yes}"),
            };
            let mut attributes = [
                flag(2, "SUPERUSER"),
                flag(3, "INHERIT"),
                flag(4, "CREATEROLE"),
                flag(5, "CREATEDB"),
                flag(6, "LOGIN"),
                flag(7, "REPLICATION"),
                flag(8, "BYPASSRLS"),
            ]
            .join(" ");
            let limit: i32 = row.get(9);
            if limit >= 0 {
                attributes.push_str(&format!(" CONNECTION LIMIT {limit}"));
            }
            if let Some(until) = row.get::<_, Option<String>>(11) {
                attributes.push_str(&format!(" VALID UNTIL {}", quote_literal(&until)));
            }
            Role {
                oid: row.get(0),
                name: row.get(1),
                attributes,
                password: row.get(10),
            }
        })
        .collect();
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
    // The members of a kept role and the roles a kept role is a member of come along.
    let mut kept: BTreeSet<i64> = holders;
    let mut grown = true;
    while grown {
        grown = false;
        for (role, member, _) in &memberships {
            if kept.contains(role) && kept.insert(*member) {
                grown = true;
            }
            if kept.contains(member) && kept.insert(*role) {
                grown = true;
            }
        }
    }
    let names: BTreeMap<i64, &str> = roles.iter().map(|r| (r.oid, r.name.as_str())).collect();
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
        let mut alter = format!("ALTER ROLE {quoted} WITH {}", role.attributes);
        if let Some(password) = &role.password {
            alter.push_str(&format!(" PASSWORD {}", quote_literal(password)));
        }
        let settings = role_settings.remove(&role.oid).unwrap_or_default();
        let mut reset = vec![alter.clone(), format!("ALTER ROLE {quoted} RESET ALL")];
        reset.extend(settings.iter().cloned());
        let mut create = vec![format!("CREATE ROLE {quoted}"), alter];
        create.extend(settings);
        let grants = memberships
            .iter()
            .filter(|(granted, member, _)| *member == role.oid && kept.contains(granted))
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
            role: !role.attributes.contains(" LOGIN"),
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
    UNION ALL SELECT relowner, relacl FROM pg_catalog.pg_class
    UNION ALL SELECT proowner, proacl FROM pg_catalog.pg_proc
    UNION ALL SELECT typowner, typacl FROM pg_catalog.pg_type
    UNION ALL SELECT lanowner, lanacl FROM pg_catalog.pg_language
    UNION ALL SELECT fdwowner, fdwacl FROM pg_catalog.pg_foreign_data_wrapper
    UNION ALL SELECT srvowner, srvacl FROM pg_catalog.pg_foreign_server
    UNION ALL SELECT defaclrole, defaclacl FROM pg_catalog.pg_default_acl
    UNION ALL SELECT 0::oid, attacl FROM pg_catalog.pg_attribute WHERE attacl IS NOT NULL
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

/// Creates `accounts` on the target before its schema: each role the target lacks (with
/// `replace`, one it has is set as the copy holds it), then memberships, then the database's
/// owner, grants and settings as the database `database` (the target's).
///
/// # Errors
/// The target's error, a hash in it redacted.
pub(super) async fn restore(
    pg: &Pg,
    client: &Client,
    input: &RestoreInput,
    accounts: &Accounts,
) -> Result<Vec<AccountOutcome>, SourceError> {
    let existing: BTreeSet<String> = client
        .query("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
        .await
        .map_err(|e| pg.error("listing roles", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let run = |name: &str, sql: &str, secrets: &[String]| {
        let name = name.to_string();
        let sql = sql.to_string();
        let secrets = secrets.to_vec();
        async move {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| redacted(pg, &name, e, &secrets))
        }
    };
    let mut outcomes = Vec::new();
    let mut made = Vec::new();
    for account in &accounts.accounts {
        let outcome = match (existing.contains(&account.user), input.users.replace) {
            (true, false) => "kept",
            (true, true) => {
                for statement in &account.reset {
                    run(&account.name, statement, &account.reset).await?;
                }
                "replaced"
            }
            (false, _) => {
                for statement in &account.create {
                    run(&account.name, statement, &account.create).await?;
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
            notes: Vec::new(),
        });
    }
    for account in made {
        for grant in &account.grants {
            run(&account.name, grant, &[]).await?;
        }
    }
    let database = quote_ident(&pg.database());
    let roles: BTreeSet<String> = client
        .query("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
        .await
        .map_err(|e| pg.error("listing roles", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(access) = &accounts.database {
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
            run("the database's access", &statement, &[]).await?;
        }
    }
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

fn redacted(pg: &Pg, name: &str, e: tokio_postgres::Error, secrets: &[String]) -> SourceError {
    match pg.error(&format!("making role {name}"), e) {
        SourceError::Database {
            database,
            doing,
            detail,
        } => SourceError::Database {
            database,
            doing,
            detail: redact(&detail, secrets),
        },
        other => other,
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
