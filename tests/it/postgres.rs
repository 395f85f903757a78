//! PostgreSQL full copies against the private server: round trips that must be exact, a copy
//! taken under write load that must be consistent, and failures that must be clear.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::{Client, NoTls};

use crate::support::{S3_ACCESS_KEY, S3_SECRET_KEY, cairn, postgres_url, run, s3_server, test_ca, walk};

/// The server's URL with another database.
pub(crate) fn url_of(database: &str) -> String {
    let base = postgres_url();
    let (server, _) = base.rsplit_once('/').expect("the test URL names a database");
    format!("{server}/{database}")
}

pub(crate) async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// A new empty database with a unique name; returns its name.
pub(crate) async fn fresh_database(hint: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{hint}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    connect(&postgres_url())
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    name
}

/// A new database holding the fixture.
pub(crate) async fn fixture_database(hint: &str) -> String {
    let name = fresh_database(hint).await;
    let sql =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/postgres/fixture.sql")).unwrap();
    connect(&url_of(&name))
        .await
        .batch_execute(&sql)
        .await
        .expect("loading the fixture");
    name
}

pub(crate) fn pg_tool(tool: &str) -> String {
    match std::env::var("CAIRN_TEST_PG_BIN") {
        Ok(bin) => format!("{bin}/{tool}"),
        Err(_) => tool.to_string(),
    }
}

/// `pg_dump --schema-only`, without the lines that differ between any two dumps (comments,
/// psql's random \restrict keys).
pub(crate) fn schema_of(database: &str) -> String {
    let output = Command::new(pg_tool("pg_dump"))
        .args(["--schema-only", "--dbname", &url_of(database)])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("--") && !l.starts_with('\\') && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Row count and an MD5 over the ordered text of every row, per table and populated
/// materialized view; plus every sequence's state.
pub(crate) async fn data_of(database: &str) -> BTreeMap<String, String> {
    let client = connect(&url_of(database)).await;
    let relations = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND (c.relkind <> 'm' OR c.relispopulated)",
            &[],
        )
        .await
        .unwrap();
    let mut checksums = BTreeMap::new();
    for row in relations {
        let (name, kind): (String, String) = (row.get(0), row.get(1));
        let sql = if kind == "S" {
            format!("SELECT format('%s %s', last_value, is_called) FROM {name}")
        } else {
            format!(
                "SELECT format('%s rows, md5 %s', count(*), md5(string_agg(t::text, E'\\n' ORDER BY t::text))) FROM {name} t"
            )
        };
        let summary: String = client.query_one(&sql, &[]).await.unwrap().get(0);
        checksums.insert(name, summary);
    }
    checksums
}

fn assert_same_database(source: &str, restored: &str) {
    let (a, b) = (schema_of(source), schema_of(restored));
    if a != b {
        let first = a.lines().zip(b.lines()).position(|(x, y)| x != y).unwrap_or(0);
        panic!(
            "schemas differ from line {first}:\nsource:   {:?}\nrestored: {:?}",
            a.lines().nth(first),
            b.lines().nth(first)
        );
    }
}

pub(crate) async fn assert_same_data(source: &str, restored: &str) {
    let (a, b) = (data_of(source).await, data_of(restored).await);
    assert!(a.len() > 15, "the fixture has more relations than {a:?}");
    for (name, summary) in &a {
        assert_eq!(Some(summary), b.get(name), "{name} differs");
    }
    assert_eq!(
        a.len(),
        b.len(),
        "relations differ: {:?}",
        b.keys().filter(|k| !a.contains_key(*k)).collect::<Vec<_>>()
    );
}

/// The binary with small chunks, so the fixture's big tables are read by several workers.
fn cairn_chunked(locks: &Path) -> Command {
    let mut command = cairn(locks);
    command.env("CAIRN_CHUNK_SIZE_MIB", "1");
    command
}

fn backup(command: &mut Command, database: &str, to: &str) -> (i32, String, String) {
    run(command.args([
        "backup",
        "--jobs",
        "3",
        "--name",
        "fx",
        "--source",
        &url_of(database),
        "--to",
        to,
    ]))
}

fn restore(command: &mut Command, from: &str, target: &str) -> (i32, String, String) {
    run(command.args([
        "restore",
        "--jobs",
        "3",
        "--source",
        "fx",
        "--from",
        from,
        "--target",
        &url_of(target),
    ]))
}

#[tokio::test]
async fn a_full_copy_restores_identically_from_a_local_directory() {
    let source = fixture_database("pg_local_src").await;
    let target = format!("{source}_restored");
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();

    let (code, out, err) = backup(&mut cairn_chunked(locks.path()), &source, &to);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("full copy") && out.contains("recorded"), "{out}");
    assert!(
        !out.contains("cairn-test-pw") && !err.contains("cairn-test-pw"),
        "password leaked"
    );

    // The big tables were split, and every data file was recorded with its rows.
    let (_, json, _) = run(cairn(locks.path()).args(["status", "--json", "--source", "fx", "--from", &to]));
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let copy = &status[0]["copies"][0];
    assert!(
        copy["details"]["chunks"].as_u64().unwrap() > copy["details"]["tables"].as_u64().unwrap(),
        "{copy}"
    );
    assert!(
        copy["log_range"]["end"]["lsn"].as_str().unwrap().contains('/'),
        "{copy}"
    );
    assert_ne!(copy["server"]["id"], "", "{copy}");

    let (code, out, err) = restore(&mut cairn(locks.path()), &to, &target);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("restored"), "{out}");
    assert_same_database(&source, &target);
    assert_same_data(&source, &target).await;
    // The trigger existed before the data was loaded at the source, so loading must not fire it.
    let client = connect(&url_of(&target)).await;
    let stamped: i64 = client
        .query_one("SELECT count(*) FROM orders WHERE note LIKE '%[stamped]%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stamped, 1);
    // Privileges and ownership came back with the roles that exist here.
    let owner: String = client
        .query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = 'stock'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "cairn_fixture_owner");
    // Statistics were gathered: every table and materialized view that holds rows has some
    // (partitions through their partitioned table).
    let unanalyzed = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND c.relispopulated \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
             AND NOT EXISTS (SELECT 1 FROM pg_statistic s WHERE s.starelid = c.oid)",
            &[],
        )
        .await
        .unwrap();
    for row in unanalyzed {
        let relation: String = row.get(0);
        let holds_rows: bool = client
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {relation})"), &[])
            .await
            .unwrap()
            .get(0);
        assert!(!holds_rows, "{relation} holds rows but has no statistics");
    }
}

#[tokio::test]
async fn a_full_copy_restores_identically_from_s3() {
    let source = fixture_database("pg_s3_src").await;
    let target = format!("{source}_restored");
    let server = s3_server();
    let bucket = server.new_bucket("pg");
    let to = server.url(&bucket, "nightly");
    let locks = tempfile::tempdir().unwrap();
    let with_keys = |mut command: Command| {
        command
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .env("CAIRN_CHUNK_SIZE_MIB", "1");
        command
    };
    let (code, out, err) = backup(&mut with_keys(cairn(locks.path())), &source, &to);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = restore(&mut with_keys(cairn(locks.path())), &to, &target);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_same_database(&source, &target);
    assert_same_data(&source, &target).await;
}

#[tokio::test]
async fn a_copy_taken_under_write_load_is_consistent() {
    let source = fresh_database("pg_bench").await;
    let url = url_of(&source);
    let init = Command::new(pg_tool("pgbench"))
        .args(["-i", "-s", "3", "-q", &url])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let mut load = Command::new(pg_tool("pgbench"))
        // Killed once the copy ends: -T only bounds a test that fails before that.
        .args(["-c", "4", "-j", "2", "-T", "120", "-n", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, out, err) = run(cairn(locks.path())
        .env("CAIRN_CHUNK_SIZE_MIB", "2")
        .args(["backup", "--jobs", "4", "--name", "fx", "--source", &url, "--to", &to]));
    let still_writing = load.try_wait().unwrap().is_none();
    let _ = load.kill();
    let _ = load.wait();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        still_writing,
        "pgbench ended before the copy did; the test proves nothing"
    );

    let target = format!("{source}_restored");
    let (code, out, err) = restore(&mut cairn(locks.path()), &to, &target);
    assert_eq!(code, 0, "{out}\n{err}");
    let client = connect(&url_of(&target)).await;
    let row = client
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts)::int8, (SELECT sum(tbalance) FROM pgbench_tellers)::int8,
                    (SELECT sum(bbalance) FROM pgbench_branches)::int8, (SELECT coalesce(sum(delta), 0) FROM pgbench_history)::int8,
                    (SELECT count(*) FROM pgbench_history), (SELECT count(*) FROM pgbench_accounts)",
            &[],
        )
        .await
        .unwrap();
    let (accounts, tellers, branches, history, transactions, rows): (i64, i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
    assert!(transactions > 0, "no transaction ran before the snapshot");
    assert_eq!(rows, 300_000);
    assert_eq!(
        (accounts, tellers, branches),
        (history, history, history),
        "the copy is not one consistent snapshot"
    );
}

/// A table locked by a forgotten prepared transaction (which holds its locks without a session,
/// so without a pid): the copy gives up after `lock-wait-seconds` with exit 75 and says what
/// holds the lock.
#[tokio::test]
async fn a_table_locked_by_a_prepared_transaction_is_named_as_such() {
    let source = fresh_database("pg_prepared").await;
    let client = connect(&url_of(&source)).await;
    let prepared = format!("cairn_test_{source}");
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; PREPARE TRANSACTION '{prepared}'"
        ))
        .await
        .unwrap_or_else(|e| {
            panic!("PREPARE TRANSACTION: {e}; the test server needs max_prepared_transactions > 0 (scripts/test-env.sh sets it)")
        });
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!("lock-wait-seconds = 2\n[sources.fx]\nurl = {:?}\n", url_of(&source)),
    )
    .unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, out, err) = run(cairn(locks.path())
        .arg("--config")
        .arg(&config)
        .args(["backup", "--source", "fx", "--to", &to]));
    client
        .batch_execute(&format!("ROLLBACK PREPARED '{prepared}'"))
        .await
        .unwrap();
    assert_eq!(code, 75, "{out}\n{err}");
    assert!(err.contains("public.t is locked by a prepared transaction"), "{err}");
}

#[tokio::test]
async fn backup_failures_are_clear_and_leave_the_status_untouched() {
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let status_file = dir.path().join("backups/fx/status.json");

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("postgres://postgres:pw@127.0.0.1:{port}/postgres");
    let (code, _, err) =
        run(cairn(locks.path()).args(["backup", "--name", "fx", "--source", &unreachable, "--to", &to]));
    assert_eq!(code, 75, "{err}");
    assert!(
        err.contains("cannot connect") && err.contains(&port.to_string()) && !err.contains(":pw@"),
        "{err}"
    );

    let wrong = postgres_url().replace("cairn-test-pw", "not-the-password");
    let (code, _, err) = run(cairn(locks.path()).args(["backup", "--name", "fx", "--source", &wrong, "--to", &to]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("refused the login") && !err.contains("not-the-password"),
        "{err}"
    );

    // A user that may not read one of the tables.
    let database = fresh_database("pg_priv").await;
    let admin = connect(&url_of(&database)).await;
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE cairn_limited LOGIN PASSWORD 'limited-pw';
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
             CREATE TABLE open_data (id int); CREATE TABLE secret_data (id int);
             GRANT SELECT ON open_data TO cairn_limited;",
        )
        .await
        .unwrap();
    let limited = url_of(&database).replace("postgres:cairn-test-pw", "cairn_limited:limited-pw");
    let (code, _, err) = run(cairn(locks.path()).args(["backup", "--name", "fx", "--source", &limited, "--to", &to]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("permission denied") && err.contains("secret_data"),
        "{err}"
    );

    // A table being dropped by a transaction that has not committed: the copy cannot lock it.
    admin.batch_execute("BEGIN; DROP TABLE open_data").await.unwrap();
    let (code, _, err) = run(cairn(locks.path()).env("CAIRN_LOCK_WAIT_SECONDS", "1").args([
        "backup",
        "--name",
        "fx",
        "--source",
        &url_of(&database),
        "--to",
        &to,
    ]));
    admin.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("open_data") && err.contains("lock"), "{err}");

    assert!(!status_file.exists(), "a failed backup wrote a status");
    let copies = dir.path().join("backups/fx/copies");
    let manifests = std::fs::read_dir(&copies)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("manifest.json").exists())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(manifests, 0, "a failed backup wrote a manifest");
}

#[tokio::test]
async fn restore_refuses_damage_and_non_empty_targets() {
    let source = fresh_database("pg_damage").await;
    connect(&url_of(&source))
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 5000) i;")
        .await
        .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, _, err) = backup(&mut cairn(locks.path()), &source, &to);
    assert_eq!(code, 0, "{err}");

    // Restoring twice into the same database: the second time it is not empty.
    let target = format!("{source}_restored");
    let (code, _, err) = restore(&mut cairn(locks.path()), &to, &target);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = restore(&mut cairn(locks.path()), &to, &target);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not empty") && err.contains("--clean"), "{err}");
    let (code, _, err) = run(cairn(locks.path()).args([
        "restore",
        "--clean",
        "--source",
        "fx",
        "--from",
        &to,
        "--target",
        &url_of(&target),
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(data_of(&source).await, data_of(&target).await);

    // One flipped byte in a data file stops the restore, naming the file.
    let data_file = walk(&dir.path().join("backups"))
        .into_iter()
        .find(|p| p.ends_with("00000.copy.zst"))
        .expect("a data file");
    let mut bytes = std::fs::read(&data_file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&data_file, bytes).unwrap();
    let damaged_target = format!("{source}_damaged");
    let (code, _, err) = restore(&mut cairn(locks.path()), &to, &damaged_target);
    assert_eq!(code, 1, "{err}");
    let name = data_file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains(&name) && (err.contains("damaged") || err.contains("MD5")),
        "{err}"
    );
    assert!(err.contains("incomplete"), "{err}");
    let rows: i64 = connect(&url_of(&damaged_target))
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "rows of a damaged file were committed");
}

#[tokio::test]
async fn filters_leave_out_schemas_tables_and_table_data() {
    let source = fixture_database("pg_filter_src").await;
    let target = format!("{source}_restored");
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, out, err) = run(cairn(locks.path()).args([
        "backup",
        "--name",
        "fx",
        "--source",
        &url_of(&source),
        "--to",
        &to,
        "--exclude-schema",
        "Sales Dept",
        "--exclude-table",
        "public.events_*",
        "--exclude-table-data",
        "big_values",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = restore(&mut cairn(locks.path()), &to, &target);
    assert_eq!(code, 0, "{out}\n{err}");

    let (before, after) = (data_of(&source).await, data_of(&target).await);
    let left_out = |name: &str| name.starts_with("\"Sales Dept\".") || name == "public.events_log";
    for (name, summary) in &before {
        if left_out(name) {
            assert!(!after.contains_key(name), "{name} was restored");
        } else if name == "public.big_values" {
            assert!(after[name].starts_with("0 rows"), "{name}: {}", after[name]);
        } else {
            assert_eq!(Some(summary), after.get(name), "{name} differs");
        }
    }
    let client = connect(&url_of(&target)).await;
    let schemas: i64 = client
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = 'Sales Dept'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0);
}

#[tokio::test]
async fn tls_is_used_and_verified_as_the_url_asks() {
    let ca = test_ca();
    connect(&postgres_url())
        .await
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE cairn_tls LOGIN SUPERUSER PASSWORD 'tls-pw';
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;",
        )
        .await
        .unwrap();
    let source = fresh_database("pg_tls").await;
    connect(&url_of(&source))
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 1000) i;")
        .await
        .unwrap();
    // The server admits cairn_tls over TLS only (pg_hba `hostnossl … reject`).
    let as_tls_user = |database: &str, query: &str| {
        format!(
            "{}?{query}",
            url_of(database).replace("postgres:cairn-test-pw", "cairn_tls:tls-pw")
        )
    };
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let backup_with =
        |url: &str| run(cairn(locks.path()).args(["backup", "--name", "fx", "--source", url, "--to", &to]));

    let (code, _, err) = backup_with(&as_tls_user(&source, "sslmode=disable"));
    assert_eq!(code, 2, "without TLS the server refuses this user: {err}");
    assert!(
        err.contains("refused the login") && err.contains("no encryption"),
        "{err}"
    );

    let (code, _, err) = backup_with(&as_tls_user(&source, "sslmode=verify-full"));
    assert_eq!(code, 2, "the system's roots do not know the test CA: {err}");
    assert!(err.contains("TLS") && err.contains("certificate"), "{err}");

    let verified = format!("sslmode=verify-full&sslrootcert={ca}");
    let (code, out, err) = backup_with(&as_tls_user(&source, &verified));
    assert_eq!(code, 0, "{out}\n{err}");
    let target = format!("{source}_restored");
    let (code, out, err) = run(cairn(locks.path()).args([
        "restore",
        "--source",
        "fx",
        "--from",
        &to,
        "--target",
        &as_tls_user(&target, &verified),
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(data_of(&source).await, data_of(&target).await);

    // `require` encrypts without checking the certificate, as libpq does.
    let (code, _, err) = backup_with(&as_tls_user(&source, "sslmode=require"));
    assert_eq!(code, 0, "{err}");
}

/// The server asks for a password and none was given: the user's to fix (2), not a retry.
#[tokio::test]
async fn a_missing_password_is_a_usage_error() {
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let without = postgres_url().replacen(":cairn-test-pw@", "@", 1);
    let (code, _, err) = run(cairn(locks.path()).args([
        "backup",
        "--name",
        "nopw",
        "--source",
        &without,
        "--to",
        &dir.path().join("b").display().to_string(),
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("password"), "{err}");
}

/// A source or target URL without a password takes it from a password file or PGPASSWORD, as
/// PostgreSQL's own clients do, so no password needs to be on the command line.
#[tokio::test]
async fn passwords_come_from_a_file_or_pgpassword() {
    let source = fixture_database("pg_pwfile").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("b").display().to_string();
    let without = |database: &str| url_of(database).replacen(":cairn-test-pw@", "@", 1);
    let password = dir.path().join("pw");
    std::fs::write(&password, "cairn-test-pw\n").unwrap();
    let (code, _, err) = run(cairn(locks.path())
        .args(["backup", "--name", "fx", "--source", &without(&source), "--to", &to])
        .arg("--password-file")
        .arg(&password));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("visible to every user"), "{err}");
    let target = format!("{source}_restored");
    let (code, out, err) = run(cairn(locks.path()).env("PGPASSWORD", "cairn-test-pw").args([
        "restore",
        "--from",
        &to,
        "--source",
        "fx",
        "--target",
        &without(&target),
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_same_data(&source, &target).await;
}
