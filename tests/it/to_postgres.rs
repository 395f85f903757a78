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
    for name in &names {
        let row: mysql_async::Row = my
            .query_first(format!("SHOW CREATE TABLE `{}`", name.replace('`', "``")))
            .await
            .unwrap()
            .unwrap();
        let create: String = row.get(1).unwrap();
        let table = parse_table(&create, &[]).unwrap_or_else(|e| panic!("{e}"));
        let table = translate(&table, "shop", &|database: &str| database.to_string()).unwrap_or_else(|e| panic!("{e}"));
        pg.batch_execute(&table.create)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", table.create));
        translated.push(table);
    }
    for table in &translated {
        for statement in table.after_load.iter().chain(&table.at_detach) {
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
