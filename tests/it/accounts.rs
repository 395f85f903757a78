//! Accounts, roles and grants in copies (issue #17): an account with a password, a role and
//! grants on a database and a table, copied with `users = true` and restored with
//! `--with-users` into the second test server, logs in there with its password and has exactly
//! the grants it had; an account without grants on the database is not copied; nothing of a
//! password hash is printed, logged or left readable on the destination.

use mysql_async::prelude::Queryable;

use crate::mysql::{ONE_AT_A_TIME, connect, fresh_database, url_of};
use crate::support::{cairn, run};

/// `SHOW GRANTS FOR name` on the server of `url`.
async fn grants(url: &str, name: &str) -> Vec<String> {
    connect(url)
        .await
        .query(format!("SHOW GRANTS FOR {name}"))
        .await
        .unwrap_or_else(|e| panic!("SHOW GRANTS FOR {name}: {e}"))
}

/// The files under `dir` that hold `needle`, as stored or once decompressed, as their paths.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let holds = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    crate::support::walk(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap_or_default();
            holds(&bytes) || zstd::decode_all(bytes.as_slice()).is_ok_and(|plain| holds(&plain))
        })
        .map(|path| path.display().to_string())
        .collect()
}

/// A new key file in `dir`, for the `[encryption]` of a test's configuration.
fn key_in(dir: &std::path::Path) -> std::path::PathBuf {
    let key = dir.join("key");
    let (code, out, err) = run(cairn(dir).args(["key", "generate"]).arg(&key));
    assert_eq!(code, 0, "{out}\n{err}");
    key
}

#[tokio::test]
async fn a_mariadb_account_and_its_role_are_made_on_another_server_with_the_same_grants() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let database = fresh_database("accounts").await;
    let (user, role, other) = (
        format!("app_{database}"),
        format!("reader_{database}"),
        format!("other_{database}"),
    );
    let password = "Pw-for-the-test-42";
    let account = format!("'{user}'@'%'");
    let mut my = connect(&url_of(&database)).await;
    my.query_drop(format!(
        "CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(20));
         INSERT INTO t VALUES (1, 'a'), (2, 'b');
         CREATE ROLE `{role}`;
         GRANT SELECT ON `{database}`.* TO `{role}`;
         CREATE USER {account} IDENTIFIED BY '{password}' WITH MAX_USER_CONNECTIONS 7;
         GRANT `{role}` TO {account};
         SET DEFAULT ROLE `{role}` FOR {account};
         GRANT INSERT, UPDATE (note) ON `{database}`.t TO {account};
         CREATE USER '{other}'@'%' IDENTIFIED BY 'other-password-1'"
    ))
    .await
    .unwrap();
    let hash: String = my
        .exec_first(
            "SELECT authentication_string FROM mysql.user WHERE User = ? AND Host = '%'",
            (&user,),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(hash.len() > 20, "{hash}");
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let config = locks.path().join("cairn.toml");
    // The accounts are stored encrypted; the logs are as verbose as they go.
    std::fs::write(
        &config,
        format!(
            "[encryption]\nkey-file = {:?}\n[sources.fx]\nurl = {:?}\nusers = true\n",
            key_in(locks.path()),
            url_of(&database)
        ),
    )
    .unwrap();
    let cairn_config = |args: &[&str]| {
        run(cairn(locks.path())
            .args(["--log", "trace", "--config"])
            .arg(&config)
            .args(args))
    };
    let mut printed = String::new();
    let (code, out, err) = cairn_config(&["backup", "--source", "fx", "--to", &to]);
    assert_eq!(code, 0, "{out}\n{err}");
    printed.push_str(&format!("{out}{err}"));

    let target = crate::replica::replica_server();
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "--source", "fx", "--from", &to, "--target", &target];
        args.extend_from_slice(extra);
        cairn_config(&args)
    };
    // A dry run names the accounts, and nothing else of them.
    let (code, out, err) = restore(&["--with-users", "--dry-run"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&account) && out.contains(&format!("`{role}`")), "{out}");
    assert!(
        !out.contains(&other),
        "an account without grants on the database is not copied: {out}"
    );
    printed.push_str(&format!("{out}{err}"));
    let (code, out, err) = restore(&["--with-users", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    printed.push_str(&format!("{out}{err}"));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let outcomes: Vec<(String, String)> = report["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(outcomes.contains(&(account.clone(), "created".into())), "{outcomes:?}");
    assert!(
        outcomes.contains(&(format!("`{role}`"), "created".into())),
        "{outcomes:?}"
    );
    assert!(!outcomes.iter().any(|(name, _)| name.contains(&other)), "{outcomes:?}");

    // The account logs in on the other server with its password, and its role works there.
    let mut login = url::Url::parse(&target).unwrap();
    login.set_username(&user).unwrap();
    login.set_password(Some(password)).unwrap();
    login.set_path(&format!("/{database}"));
    let mut app = connect(login.as_str()).await;
    let count: Option<u64> = app.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(count, Some(2));
    app.query_drop("UPDATE t SET note = 'z' WHERE id = 1").await.unwrap();
    assert!(
        app.query_drop("DELETE FROM t").await.is_err(),
        "no grant beyond the copy's"
    );
    drop(app);
    let on_target = crate::replica::on_replica(&database);
    assert_eq!(
        grants(&on_target, &account).await,
        grants(&url_of(&database), &account).await
    );
    assert_eq!(
        grants(&on_target, &format!("`{role}`")).await,
        grants(&url_of(&database), &format!("`{role}`")).await
    );
    let limit: Option<u64> = connect(&on_target)
        .await
        .exec_first("SELECT max_user_connections FROM mysql.user WHERE User = ?", (&user,))
        .await
        .unwrap();
    assert_eq!(limit, Some(7), "the resource limit came along");

    // Again into the same server: the accounts are there, and kept as they are.
    let (code, out, err) = restore(&["--with-users", "--clean"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("accounts kept") && out.contains(&account), "{out}");
    printed.push_str(&format!("{out}{err}"));
    // Under another database name, with the accounts set as the copy holds them: the grants
    // follow the database, and the password changed on the target is the copy's again.
    connect(&on_target)
        .await
        .query_drop(format!("ALTER USER {account} IDENTIFIED BY 'changed-on-the-target'"))
        .await
        .unwrap();
    let renamed = format!("{database}_b");
    let (code, out, err) = restore(&["--replace-users", "--rename-db", &format!("{database}={renamed}")]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("accounts replaced") && out.contains(&account), "{out}");
    printed.push_str(&format!("{out}{err}"));
    let expected: Vec<String> = grants(&url_of(&database), &account)
        .await
        .into_iter()
        .map(|grant| grant.replace(&format!("`{database}`"), &format!("`{renamed}`")))
        .collect();
    assert_eq!(grants(&on_target, &account).await, expected);
    login.set_path(&format!("/{renamed}"));
    let count: Option<u64> = connect(login.as_str())
        .await
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap();
    assert_eq!(count, Some(2), "the copy's password and role again");
    let (code, out, err) = cairn_config(&["status", "--source", "fx", "--from", &to, "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    printed.push_str(&format!("{out}{err}"));

    // Nothing of the hash was printed, and no file on the destination holds it readably.
    let bare = hash.trim_start_matches('*');
    assert!(!printed.contains(bare), "a password hash was printed:\n{printed}");
    assert!(!printed.contains(password));
    assert_eq!(files_holding(dir.path(), bare), Vec::<String>::new());

    for url in [url_of(&database), on_target] {
        connect(&url)
            .await
            .query_drop(format!(
                "DROP USER IF EXISTS {account}, '{other}'@'%'; DROP ROLE IF EXISTS `{role}`; DROP DATABASE IF \
                 EXISTS `{database}`; DROP DATABASE IF EXISTS `{renamed}`"
            ))
            .await
            .unwrap();
    }
}

/// `pg_dumpall --globals-only` of the cluster of `url`, the lines that name one of `roles`.
fn globals_naming(url: &str, roles: &[&String]) -> Vec<String> {
    let bin = std::env::var("CAIRN_TEST_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let output = std::process::Command::new(format!("{bin}/pg_dumpall"))
        .args(["--globals-only", "--dbname", url])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut lines: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| roles.iter().any(|role| line.contains(role.as_str())))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn postgres_roles_come_with_memberships_passwords_and_settings_into_another_cluster() {
    use crate::postgres::{connect, fresh_database, url_of};
    let database = fresh_database("pg_accounts").await;
    let (owner, group, login, outsider) = (
        format!("own_{database}"),
        format!("grp_{database}"),
        format!("app_{database}"),
        format!("out_{database}"),
    );
    let password = "Pw-for-the-pg-test-7";
    let source = url_of(&database);
    connect(&source)
        .await
        .batch_execute(&format!(
            "CREATE ROLE {owner} NOLOGIN;
             CREATE ROLE {group} NOLOGIN;
             CREATE ROLE {login} LOGIN PASSWORD '{password}' CONNECTION LIMIT 5;
             GRANT {group} TO {login};
             ALTER ROLE {login} SET work_mem = '3MB';
             ALTER ROLE {login} IN DATABASE {database} SET search_path = public, pg_catalog;
             CREATE ROLE {outsider} LOGIN;
             GRANT pg_monitor TO {login};
             GRANT pg_monitor TO {outsider};
             CREATE TABLE t (id int PRIMARY KEY, note text);
             INSERT INTO t VALUES (1, 'a'), (2, 'b');
             ALTER TABLE t OWNER TO {owner};
             GRANT SELECT ON t TO {group};
             GRANT CONNECT ON DATABASE {database} TO {login};"
        ))
        .await
        .unwrap();
    let hash: String = connect(&source)
        .await
        .query_one("SELECT rolpassword FROM pg_authid WHERE rolname = $1", &[&login])
        .await
        .unwrap()
        .get(0);
    assert!(hash.starts_with("SCRAM-SHA-256$") || hash.starts_with("md5"), "{hash}");
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let config = locks.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[encryption]\nkey-file = {:?}\n[sources.fx]\nurl = {source:?}\nusers = true\n",
            key_in(locks.path())
        ),
    )
    .unwrap();
    let cairn_config = |args: &[&str]| {
        run(cairn(locks.path())
            .args(["--log", "trace", "--config"])
            .arg(&config)
            .args(args))
    };
    let mut printed = String::new();
    let (code, out, err) = cairn_config(&["backup", "--source", "fx", "--to", &to]);
    assert_eq!(code, 0, "{out}\n{err}");
    printed.push_str(&format!("{out}{err}"));
    let target = crate::replica::pg_replica_url(&database);
    let (code, out, err) = cairn_config(&[
        "restore",
        "--source",
        "fx",
        "--from",
        &to,
        "--target",
        &target,
        "--with-users",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    printed.push_str(&format!("{out}{err}"));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let created: Vec<&str> = report["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"] == "created")
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for role in [&owner, &group, &login] {
        assert!(created.contains(&role.as_str()), "{role} in {created:?}");
    }
    assert!(
        !out.contains(&outsider),
        "a role without privileges in the database is not copied"
    );

    // The login role logs in with its password, reads through its group, has its settings.
    let mut login_url = url::Url::parse(&target).unwrap();
    login_url.set_username(&login).unwrap();
    login_url.set_password(Some(password)).unwrap();
    let app = connect(login_url.as_str()).await;
    let count: i64 = app.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(count, 2);
    let work_mem: String = app.query_one("SHOW work_mem", &[]).await.unwrap().get(0);
    assert_eq!(work_mem, "3MB");
    let path: String = app.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(path, "public, pg_catalog");
    drop(app);
    let table_owner: String = connect(&target)
        .await
        .query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = 't'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(table_owner, owner);
    let roles = [&owner, &group, &login];
    assert_eq!(globals_naming(&target, &roles), globals_naming(&source, &roles));

    let (code, out, err) = cairn_config(&["status", "--source", "fx", "--from", &to, "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    printed.push_str(&format!("{out}{err}"));
    let secret = hash.rsplit('$').next().unwrap().to_string();
    assert!(!printed.contains(&secret), "a password hash was printed:\n{printed}");
    assert!(!printed.contains(password));
    assert_eq!(files_holding(dir.path(), &secret), Vec::<String>::new());

    for url in [
        crate::replica::pg_replica_url("postgres"),
        crate::postgres::url_of("postgres"),
    ] {
        let admin = connect(&url).await;
        for statement in [
            format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
            format!("DROP ROLE IF EXISTS {login}, {group}, {owner}, {outsider}"),
        ] {
            admin.batch_execute(&statement).await.unwrap();
        }
    }
}
