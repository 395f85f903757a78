//! MySQL incrementals replayed into PostgreSQL (issue #14): a full copy and an incremental of the
//! MySQL fixture restored into PostgreSQL up to a GTID, every value of every changed row equal
//! through the mapping, the position recorded; DDL that is not translated stops the replay
//! naming it.

use mysql_async::prelude::Queryable;

use crate::mysql::{ONE_AT_A_TIME, fixture_database, url_of as my_url_of};
use crate::postgres::{connect as pg_connect, url_of as pg_url_of};
use crate::to_postgres::every_type_is_equal;

const EVERY_TYPE_COLUMNS: &str = "t_tinyint, t_tinyint_u, t_smallint, t_smallint_u, t_mediumint, t_mediumint_u, t_int, \
     t_int_u, t_bigint, t_bigint_u, t_decimal, t_float, t_double, t_bit1, t_bit64, t_date, t_datetime, t_timestamp, \
     t_time, t_year, t_char, t_varchar, t_text, t_longtext, t_binary, t_varbinary, t_blob, t_longblob, t_enum, t_set, \
     t_json, t_geometry, t_point, t_inet6, t_uuid";

#[tokio::test]
async fn mysql_incrementals_replay_into_postgres_to_a_point_and_untranslated_ddl_stops_the_replay() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fixture_database("my_pg_chain").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let backup = |kind: &str| {
        let (code, out, err) = crate::mysql::backup_with(
            &mut crate::support::cairn(locks.path()),
            &source,
            &to,
            &["--type", kind],
        );
        assert_eq!(code, 0, "{out}\n{err}");
    };
    backup("full");

    // Changes of every kind of value, in the binary log.
    let mut my = crate::mysql::connect(&my_url_of(&source)).await;
    my.query_drop(format!(
        "SET time_zone = '+00:00';
         INSERT INTO every_type ({EVERY_TYPE_COLUMNS}) SELECT {EVERY_TYPE_COLUMNS} FROM every_type ORDER BY id LIMIT 6;
         UPDATE every_type SET t_varchar = CONCAT(COALESCE(t_varchar, ''), '!'), t_decimal = -t_decimal,
           t_enum = 'b', t_set = 'y,z', t_timestamp = '2001-02-03 04:05:06.5', t_json = '{{\"k\": [1, \"é\"]}}',
           t_bit64 = b'1010', t_time = '-12:00:00.25', t_uuid = 'ffffffff-0000-1111-2222-333333333333',
           t_inet6 = '::ffff:10.1.2.3', t_float = 0.1, t_tinyint_u = 200, t_bigint_u = 18446744073709551614
           WHERE id <= 4;
         DELETE FROM every_type WHERE id = 3;
         UPDATE log_lines SET level = 'fatal' WHERE at = '2026-01-01 00:00:07.000';
         DELETE FROM log_lines WHERE at = '2026-01-01 00:00:08.000';
         INSERT INTO log_lines VALUES ('2026-01-01 00:00:07.000', 'fatal', 'message 7\t'), (NULL, NULL, NULL);
         UPDATE orders SET amount = amount + 1, note = 'changed' WHERE id BETWEEN 10 AND 20;
         DELETE FROM order_items WHERE order_id = 5;
         TRUNCATE TABLE `odd ``name`` here`;
         INSERT INTO `odd ``name`` here` VALUES (7, 'after', '2026-12-02');
         CREATE VIEW late_view AS SELECT 1 AS one;"
    ))
    .await
    .unwrap();
    let point: String = my.query_first("SELECT @@gtid_binlog_pos").await.unwrap().unwrap();
    let customers_at_point: u64 = my.query_first("SELECT COUNT(*) FROM customers").await.unwrap().unwrap();
    // log_lines is dropped after the point: its state there, as the replica must have it.
    let log_lines_at_point: String = my
        .query_first("SELECT CONCAT(COUNT(*), ' ', SUM(level = 'fatal'), ' ', COUNT(at)) FROM log_lines")
        .await
        .unwrap()
        .unwrap();
    // After the point: DDL the replay does not translate, and rows in its new shape.
    my.query_drop(
        "INSERT INTO customers (name) VALUES ('before the alter');
         ALTER TABLE customers ADD COLUMN tier INT NOT NULL AFTER name;
         INSERT INTO customers (name, tier, email) VALUES ('after the alter', 2, 'a@b.c');
         CREATE TABLE coupons (code VARCHAR(10) PRIMARY KEY, percent TINYINT UNSIGNED NOT NULL DEFAULT 5);
         INSERT INTO coupons (code) VALUES ('WELCOME');
         DROP TABLE log_lines;
         ALTER TABLE customers MODIFY name VARCHAR(150) NOT NULL;
         INSERT INTO customers (name, tier) VALUES ('after the modify', 3);
         ALTER TABLE customers ADD COLUMN shout VARCHAR(200) AS (UPPER(name)) VIRTUAL;
         INSERT INTO customers (name, tier) VALUES ('after the generated column', 4)",
    )
    .await
    .unwrap();
    backup("incremental");

    let restore = |target: &str, extra: &[&str]| {
        crate::support::run(
            crate::support::cairn(locks.path())
                .args([
                    "restore",
                    "--source",
                    "fx",
                    "--from",
                    &to,
                    "--target",
                    &pg_url_of(target),
                ])
                .args(["--rename-db", &format!("{source}=shop")])
                .args(extra),
        )
    };
    let at_point = format!("my_pg_chain_a_{}", std::process::id());
    let (code, out, err) = restore(&at_point, &["--until-gtid", &point, "--dry-run"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("stop:") && out.contains("incremental"), "{out}");
    let (code, out, err) = restore(&at_point, &["--until-gtid", &point]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("not translated") && err.contains("CREATE"),
        "the view is reported: {err}"
    );

    my.query_drop("SET time_zone = '+00:00', NAMES utf8mb4, SESSION group_concat_max_len = 100000000")
        .await
        .unwrap();
    let pg = pg_connect(&pg_url_of(&at_point)).await;
    pg.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    every_type_is_equal(&mut my, &pg, "shop").await;
    for (table, mysql, postgres) in [
        (
            "orders",
            "SELECT CONCAT(COUNT(*), ' ', SUM(amount), ' ', MD5(GROUP_CONCAT(COALESCE(note, '-') ORDER BY id SEPARATOR '|'))) FROM orders",
            "SELECT count(*) || ' ' || sum(amount) || ' ' || md5(string_agg(coalesce(note, '-'), '|' ORDER BY id)) FROM shop.orders",
        ),
        (
            "order_items",
            "SELECT CONCAT(COUNT(*), ' ', SUM(order_id * 10 + line)) FROM order_items",
            "SELECT count(*) || ' ' || sum(order_id * 10 + line) FROM shop.order_items",
        ),
        (
            "odd",
            "SELECT GROUP_CONCAT(`col with space`, '=', COALESCE(`select`, '-') ORDER BY `col with space`) FROM `odd ``name`` here`",
            "SELECT string_agg(\"col with space\" || '=' || coalesce(\"select\", '-'), ',' ORDER BY \"col with space\") FROM shop.\"odd `name` here\"",
        ),
    ] {
        let mine: String = my.query_first(mysql).await.unwrap().unwrap();
        let theirs: String = pg
            .query_one(postgres, &[])
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"))
            .get(0);
        assert_eq!(mine, theirs, "{table}");
    }
    {
        let theirs: String = pg
            .query_one(
                "SELECT count(*) || ' ' || count(*) FILTER (WHERE level = 'fatal') || ' ' || count(at) FROM shop.log_lines",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(log_lines_at_point, theirs, "log_lines");
    }
    let customers: i64 = pg
        .query_one("SELECT count(*) FROM shop.customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(customers as u64, customers_at_point, "the replay went past the point");
    let recorded: Option<String> = pg
        .query_one("SELECT gtid FROM cairn_replay.mysql_progress", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded.as_deref(), Some(point.as_str()));

    // --resume goes on from the point to the end: the ALTER TABLE stops the replay (exit 2: the
    // request needs changing), naming it and what to do, after what came before it; a second
    // --resume applies nothing twice.
    for attempt in 0..2 {
        let (code, out, err) = restore(&at_point, &["--resume"]);
        assert_eq!(code, 2, "{attempt}: {out}\n{err}");
        assert!(
            err.contains("ALTER TABLE customers ADD COLUMN shout")
                && err.contains("not translated into PostgreSQL")
                && err.contains("--until"),
            "{err}"
        );
        let customers: i64 = pg
            .query_one("SELECT count(*) FROM shop.customers", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(customers as u64, customers_at_point + 3, "{attempt}");
    }
    // The translated DDL before it replayed: the added column (existing rows took MySQL's
    // implicit 0), the new table and its row, the dropped table.
    let tiers: Vec<(String, i32)> = pg
        .query(
            "SELECT name, tier FROM shop.customers WHERE name IN ('customer 1', 'after the alter') ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        tiers,
        [("after the alter".to_string(), 2), ("customer 1".to_string(), 0)]
    );
    let coupon: (String, i16) = pg
        .query_one("SELECT code, percent FROM shop.coupons", &[])
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert_eq!(coupon, ("WELCOME".to_string(), 5));
    let gone: bool = pg
        .query_one("SELECT to_regclass('shop.log_lines') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(gone, "log_lines was dropped on the source");
    let name_type: String = pg
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'shop.customers'::regclass AND attname = 'name'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(name_type, "character varying(150)", "the MODIFY replayed");
    // A target that holds no replay of this chain has nothing to resume.
    let (code, out, err) = restore(&format!("{at_point}_none"), &["--resume"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("nothing to resume"), "{err}");
}
