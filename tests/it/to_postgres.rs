//! MySQL → PostgreSQL table definitions (issue #14, first part): every table of the MySQL
//! fixture, read from the MariaDB test server as a copy records it (`SHOW CREATE TABLE`),
//! translated and created in the PostgreSQL test server — keys, indexes, identities and
//! foreign keys included — with the column types the documented mapping gives.

use std::collections::BTreeMap;

use cairn::engine::to_postgres::{parse_table, translate};
use mysql_async::prelude::Queryable;

use crate::mysql::{ONE_AT_A_TIME, fixture_database, url_of as my_url_of};
use crate::postgres::{connect as pg_connect, fresh_database as pg_fresh_database, url_of as pg_url_of};

#[tokio::test]
async fn the_mysql_fixture_tables_are_created_in_postgres_with_the_documented_types() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fixture_database("my_to_pg").await;
    let mut my = crate::mysql::connect(&my_url_of(&source)).await;
    let names: Vec<String> = my
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1")
        .await
        .unwrap();
    assert!(names.len() >= 5, "{names:?}");
    let target = pg_fresh_database("my_to_pg").await;
    let pg = pg_connect(&pg_url_of(&target)).await;
    pg.batch_execute("CREATE SCHEMA shop").await.unwrap();
    let mut translated = Vec::new();
    let mut taken = std::collections::BTreeSet::new();
    for name in &names {
        let row: mysql_async::Row = my
            .query_first(format!("SHOW CREATE TABLE `{}`", name.replace('`', "``")))
            .await
            .unwrap()
            .unwrap();
        let create: String = row.get(1).unwrap();
        let table = parse_table(&create, &[]).unwrap_or_else(|e| panic!("{e}"));
        let table = translate(&table, "shop", &|database: &str| database.to_string(), &mut taken)
            .unwrap_or_else(|e| panic!("{e}"));
        pg.batch_execute(&table.create)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", table.create));
        translated.push(table);
    }
    for table in &translated {
        let keys = table.at_detach.iter().flat_map(|k| [&k.add, &k.validate]);
        for statement in table.after_load.iter().chain(keys) {
            pg.batch_execute(statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e:?}"));
        }
    }

    // The column types, as PostgreSQL reports them.
    let types: BTreeMap<String, String> = pg
        .query(
            "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c \
             JOIN pg_attribute a ON a.attrelid = 'shop.every_type'::regclass AND a.attname = c.column_name \
             WHERE table_schema = 'shop' AND table_name = 'every_type'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected = [
        ("id", "integer"),
        ("t_tinyint", "smallint"),
        ("t_tinyint_u", "smallint"),
        ("t_smallint_u", "integer"),
        ("t_mediumint", "integer"),
        ("t_int_u", "bigint"),
        ("t_bigint", "bigint"),
        ("t_bigint_u", "numeric(20,0)"),
        ("t_decimal", "numeric(65,30)"),
        ("t_float", "real"),
        ("t_double", "double precision"),
        ("t_bit1", "bit(1)"),
        ("t_bit64", "bit(64)"),
        ("t_date", "date"),
        ("t_datetime", "timestamp(6) without time zone"),
        ("t_timestamp", "timestamp(6) with time zone"),
        ("t_time", "interval(6)"),
        ("t_year", "smallint"),
        ("t_char", "character varying(10)"),
        ("t_text", "text"),
        ("t_binary", "bytea"),
        ("t_longblob", "bytea"),
        ("t_enum", "text"),
        ("t_set", "text"),
        ("t_json", "jsonb"),
        ("t_geometry", "bytea"),
        ("t_inet6", "inet"),
        ("t_uuid", "uuid"),
    ];
    // Generated columns are left out: a copy does not hold their values.
    assert!(
        !types.contains_key("t_virtual") && !types.contains_key("t_stored"),
        "{types:?}"
    );
    for (column, pg_type) in expected {
        assert_eq!(
            types.get(column).map(String::as_str),
            Some(pg_type),
            "every_type.{column}: {types:?}"
        );
    }
    // Keys and constraints made it: the primary key, the foreign key, the enum's check.
    let constraints: Vec<String> = pg
        .query(
            "SELECT conrelid::regclass::text || ' ' || contype::text FROM pg_constraint WHERE connamespace = 'shop'::regnamespace ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for wanted in [
        "shop.every_type p",
        "shop.every_type c",
        "shop.orders f",
        "shop.orders p",
        "shop.customers p",
    ] {
        assert!(
            constraints.iter().any(|c| c == wanted),
            "{wanted} missing: {constraints:?}"
        );
    }
    // The identity continues after the rows MySQL's AUTO_INCREMENT handed out.
    let identity: bool = pg
        .query_one(
            "SELECT attidentity = 'd' FROM pg_attribute WHERE attrelid = 'shop.customers'::regclass AND attname = 'id'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(identity);
    let unique: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'shop' AND indexdef LIKE 'CREATE UNIQUE INDEX%email%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unique, 1);
}

/// How a column's values are compared once both sides wrote them as text.
#[derive(Clone, Copy)]
enum Compare {
    Exact,
    /// Both read as a double: MySQL and PostgreSQL print floats differently.
    Float,
    /// Both read as JSON.
    Json,
}

#[tokio::test]
async fn a_mysql_full_copy_restores_into_postgres_through_the_mapping() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fixture_database("my_into_pg").await;
    {
        // What MySQL lets in around its checks: an order of a customer that does not exist
        // (foreign_key_checks off), and an ENUM's '' (a value outside its list, not strict).
        let mut my = crate::mysql::connect(&my_url_of(&source)).await;
        my.query_drop(
            "SET SESSION foreign_key_checks = 0, SESSION sql_mode = ''; \
             INSERT INTO orders (customer_id, placed_at, amount) VALUES (999999, '2026-01-01 00:00:00', 1); \
             UPDATE every_type SET t_enum = 'not in the list' ORDER BY id LIMIT 1",
        )
        .await
        .unwrap();
    }
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, out, err) = crate::mysql::backup_with(
        &mut crate::support::cairn(locks.path()),
        &source,
        &to,
        &["--type", "full"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    // A database that does not exist yet is created.
    let target = format!("my_into_pg_{}", std::process::id());
    let restore = |extra: &[&str]| {
        crate::support::run(
            crate::support::cairn(locks.path())
                .args([
                    "restore",
                    "--jobs",
                    "3",
                    "--source",
                    "fx",
                    "--from",
                    &to,
                    "--target",
                    &pg_url_of(&target),
                ])
                .args(["--rename-db", &format!("{source}=shop")])
                .args(extra),
        )
    };
    let (code, out, err) = restore(&["--dry-run"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("does not exist; the restore creates it") && out.contains("shop"),
        "{out}"
    );
    let (code, out, err) = restore(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    // What was not translated is said: the generated columns, the FULLTEXT index, the CHECK.
    assert!(
        err.contains("every_type.t_virtual: a generated column is left out"),
        "{err}"
    );
    assert!(err.contains("FULLTEXT index note_text"), "{err}");
    assert!(err.contains("zero dates"), "{err}");
    // The orphan order keeps its foreign key from being validated: said, not failed.
    assert!(
        err.contains("foreign key shop.orders.") && err.contains("left NOT VALID"),
        "{err}"
    );
    // A second restore is refused unless --clean.
    let (code, _, err) = restore(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("shop") && err.contains("--clean"), "{err}");

    let mut my = crate::mysql::connect(&my_url_of(&source)).await;
    my.query_drop("SET time_zone = '+00:00', NAMES utf8mb4").await.unwrap();
    let pg = pg_connect(&pg_url_of(&target)).await;
    pg.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    for table in [
        "every_type",
        "customers",
        "orders",
        "order_items",
        "log_lines",
        "odd `name` here",
    ] {
        let mine: u64 = my
            .query_first(format!("SELECT COUNT(*) FROM `{}`", table.replace('`', "``")))
            .await
            .unwrap()
            .unwrap();
        let theirs: i64 = pg
            .query_one(&format!("SELECT count(*) FROM shop.\"{table}\""), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(mine, theirs as u64, "{table}");
    }

    every_type_is_equal(&mut my, &pg, "shop").await;
    // Keys after the load: the foreign key holds, and the identity continues past MySQL's ids.
    let next: i32 = pg
        .query_one("INSERT INTO shop.customers (name) VALUES ('new') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    let most: u64 = my.query_first("SELECT MAX(id) FROM customers").await.unwrap().unwrap();
    assert!(next as u64 > most, "identity {next} after {most}");
    let orphan = pg
        .execute(
            "INSERT INTO shop.orders (customer_id, placed_at, amount) VALUES (999999, now(), 1)",
            &[],
        )
        .await;
    assert!(orphan.is_err(), "the foreign key was not created");
}

/// Every column of every row of `every_type` reads the same in MySQL and in PostgreSQL schema
/// `schema`, through the documented mapping.
pub async fn every_type_is_equal(my: &mut mysql_async::Conn, pg: &tokio_postgres::Client, schema: &str) {
    let exact = |c: &str| {
        (
            c.to_string(),
            format!("CAST({c} AS CHAR)"),
            format!("{c}::text"),
            Compare::Exact,
        )
    };
    let hex = |c: &str| {
        (
            c.to_string(),
            format!("LOWER(HEX({c}))"),
            format!("encode({c}, 'hex')"),
            Compare::Exact,
        )
    };
    let mut columns = vec![];
    for c in [
        "t_tinyint",
        "t_tinyint_u",
        "t_smallint",
        "t_smallint_u",
        "t_mediumint",
        "t_mediumint_u",
        "t_int",
        "t_int_u",
        "t_bigint",
        "t_bigint_u",
        "t_decimal",
        "t_char",
        "t_varchar",
        "t_text",
        "t_longtext",
        "t_enum",
        "t_set",
        "t_uuid",
    ] {
        columns.push(exact(c));
    }
    for c in [
        "t_binary",
        "t_varbinary",
        "t_blob",
        "t_longblob",
        "t_geometry",
        "t_point",
    ] {
        columns.push(hex(c));
    }
    let spec =
        |name: &str, mysql: &str, pg: &str, compare| (name.to_string(), mysql.to_string(), pg.to_string(), compare);
    columns.extend([
        spec("t_float", "t_float + 0e0", "t_float::float8::text", Compare::Float),
        spec("t_double", "t_double + 0e0", "t_double::text", Compare::Float),
        spec("t_bit1", "LPAD(BIN(t_bit1), 1, '0')", "t_bit1::text", Compare::Exact),
        spec("t_bit64", "LPAD(BIN(t_bit64), 64, '0')", "t_bit64::text", Compare::Exact),
        // Zero dates became NULL (a to_char of an infinite date would be NULL too: text instead).
        spec(
            "t_date",
            "IF(t_date = '0000-00-00', NULL, DATE_FORMAT(t_date, '%Y-%m-%d'))",
            "CASE WHEN isfinite(t_date) THEN to_char(t_date, 'YYYY-MM-DD') ELSE t_date::text END",
            Compare::Exact,
        ),
        spec(
            "t_datetime",
            "IF(t_datetime = '0000-00-00', NULL, DATE_FORMAT(t_datetime, '%Y-%m-%d %H:%i:%s.%f'))",
            "CASE WHEN isfinite(t_datetime) THEN to_char(t_datetime, 'YYYY-MM-DD HH24:MI:SS.US') ELSE t_datetime::text END",
            Compare::Exact,
        ),
        spec(
            "t_timestamp",
            "DATE_FORMAT(t_timestamp, '%Y-%m-%d %H:%i:%s.%f')",
            "CASE WHEN isfinite(t_timestamp) THEN to_char(t_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') ELSE t_timestamp::text END",
            Compare::Exact,
        ),
        spec(
            "t_time",
            "CAST(ROUND(TIME_TO_SEC(t_time) * 1000000) AS SIGNED)",
            "(extract(epoch from t_time) * 1000000)::bigint::text",
            Compare::Exact,
        ),
        spec("t_year", "t_year + 0", "t_year::text", Compare::Exact),
        spec("t_json", "t_json", "t_json::text", Compare::Json),
        spec("t_inet6", "CAST(t_inet6 AS CHAR)", "host(t_inet6)", Compare::Exact),
    ]);
    for (name, mysql, pg_expr, compare) in columns {
        let mine: Vec<(i64, Option<String>)> = my
            .query(format!("SELECT id, {mysql} FROM every_type ORDER BY id"))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs: Vec<(i64, Option<String>)> = pg
            .query(
                &format!("SELECT id::int8, {pg_expr} FROM {schema}.every_type ORDER BY id"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        assert_eq!(mine.len(), theirs.len(), "{name}");
        for ((id, a), (_, b)) in mine.iter().zip(&theirs) {
            let same = match (compare, a, b) {
                (Compare::Float, Some(a), Some(b)) => a.parse::<f64>().unwrap() == b.parse::<f64>().unwrap(),
                (Compare::Json, Some(a), Some(b)) => {
                    serde_json::from_str::<serde_json::Value>(a).unwrap()
                        == serde_json::from_str::<serde_json::Value>(b).unwrap()
                }
                _ => a == b,
            };
            let cut = |v: &Option<String>| v.as_deref().map(|v| v.chars().take(80).collect::<String>());
            assert!(
                same,
                "every_type.{name}, id {id}: MySQL {:?}, PostgreSQL {:?}",
                cut(a),
                cut(b)
            );
        }
    }
}
