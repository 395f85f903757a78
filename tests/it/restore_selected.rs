//! A selective restore of a MySQL/MariaDB copy (issue #16): one table restored beside the live
//! database under a new name equals the table as the copy holds it — its index, its foreign key
//! to a table the target has (kept on request, under a name of its own) — while every live table
//! is untouched; a selection that chooses nothing, a table the target has, and a rename of a
//! table not chosen are refused and change nothing.

use mysql_async::prelude::Queryable;

use crate::mysql::{ONE_AT_A_TIME, backup_with, connect, fresh_database, url_of};
use crate::support::{cairn, run};

/// `id:customer_id:amount` of every row of `table`, in key order.
async fn orders(database: &str, table: &str) -> String {
    connect(&url_of(database))
        .await
        .query_first::<Option<String>, _>(format!(
            "SELECT GROUP_CONCAT(id, ':', customer_id, ':', amount ORDER BY id SEPARATOR ' ') FROM {table}"
        ))
        .await
        .unwrap()
        .flatten()
        .unwrap_or_default()
}

/// `CHECKSUM TABLE` of the live tables, and the tables the database has.
async fn live_state(database: &str) -> (Vec<(String, Option<u64>)>, Vec<String>) {
    let mut my = connect(&url_of(database)).await;
    let sums: Vec<(String, Option<u64>)> = my
        .query("CHECKSUM TABLE customers, orders, audit EXTENDED")
        .await
        .unwrap();
    let tables: Vec<String> = my
        .query(format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{database}' ORDER BY 1"
        ))
        .await
        .unwrap();
    (sums, tables)
}

/// Loads a SQL script with the mariadb client into the test server.
fn load_script(script: &std::path::Path) {
    let url = url::Url::parse(&crate::support::mysql_url()).unwrap();
    let status = std::process::Command::new("mariadb")
        .arg("--protocol=TCP")
        .arg(format!("--host={}", url.host_str().unwrap()))
        .arg(format!("--port={}", url.port().unwrap_or(3306)))
        .arg(format!("--user={}", url.username()))
        .env("MYSQL_PWD", url.password().unwrap_or_default())
        .stdin(std::fs::File::open(script).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "the mariadb client loads the script");
}

#[tokio::test]
async fn one_table_is_restored_beside_the_live_database_and_nothing_else_changes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fresh_database("selective").await;
    let mut my = connect(&url_of(&source)).await;
    my.query_drop(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20));
         CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, amount DECIMAL(10,2), KEY by_amount (amount),
           CONSTRAINT fk_customer FOREIGN KEY (customer_id) REFERENCES customers (id));
         CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(20));
         CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (what) VALUES ('order');
         INSERT INTO customers VALUES (1, 'a'), (2, 'b');
         INSERT INTO orders VALUES (1, 1, 10.00), (2, 2, 20.00), (3, 1, 30.00)",
    )
    .await
    .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, out, err) = backup_with(&mut cairn(locks.path()), &source, &to, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let at_copy = orders(&source, "orders").await;
    // The live database moves on after the copy.
    my.query_drop(
        "UPDATE orders SET amount = 99 WHERE id = 1; DELETE FROM orders WHERE id = 3;
         INSERT INTO orders VALUES (4, 2, 40.00)",
    )
    .await
    .unwrap();
    let live = live_state(&source).await;
    let restore = |extra: &[&str]| {
        run(cairn(locks.path())
            .args(["restore", "--source", "fx", "--from", &to, "--target", &url_of(&source)])
            .args(extra))
    };
    let table = format!("{source}.orders");

    // Refused, changing nothing: a table the target has, a selection of nothing, a rename of a
    // table not chosen.
    let (code, out, err) = restore(&["--table", &table]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains(&format!("{source}.orders")) && err.contains("--rename-table"),
        "{err}"
    );
    let (code, out, err) = restore(&["--table", "nothing_like_this"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("chooses no table") && err.contains("orders"), "{err}");
    let (code, out, err) = restore(&["--table", &table, "--rename-table", "customers=c2"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("customers is not among the tables restored"), "{err}");
    assert_eq!(live_state(&source).await, live);

    // --dry-run lists what would be made and left out, and makes nothing.
    let (code, out, err) = restore(&[
        "--table",
        &table,
        "--rename-table",
        "orders=orders_restored",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let all = format!("{out}{err}");
    assert!(
        all.contains(&format!("table {source}.orders_restored: absent, restored")) && all.contains("left out: trigger"),
        "{all}"
    );
    assert_eq!(live_state(&source).await, live);

    // Beside the live table: the copy's rows, its index, its key to the live customers.
    let (code, out, err) = restore(&[
        "--table",
        &table,
        "--rename-table",
        "orders=orders_restored",
        "--keep-foreign-keys",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["tables"], 1, "{report}");
    assert_eq!(report["rows"], 3, "{report}");
    assert!(
        err.contains("trigger") && err.contains("orders_audit"),
        "the trigger is named as left out: {err}"
    );
    assert_eq!(orders(&source, "orders_restored").await, at_copy);
    let (after_sums, mut after_tables) = live_state(&source).await;
    assert_eq!(after_sums, live.0, "the live tables are untouched");
    after_tables.retain(|t| t != "orders_restored");
    assert_eq!(after_tables, live.1, "nothing but the restored table is new");
    let mut my = connect(&url_of(&source)).await;
    let create: (String, String) = my
        .query_first("SHOW CREATE TABLE orders_restored")
        .await
        .unwrap()
        .unwrap();
    assert!(create.1.contains("KEY `by_amount`"), "{}", create.1);
    assert!(
        create
            .1
            .contains("CONSTRAINT `orders_restored_fk_customer` FOREIGN KEY (`customer_id`) REFERENCES `customers`"),
        "{}",
        create.1
    );
    // Without --keep-foreign-keys the key to a table not restored is left out, with a warning.
    let (code, out, err) = restore(&["--table", &table, "--rename-table", "orders=orders_again"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("not restored: foreign key"), "{err}");
    let create: (String, String) = my.query_first("SHOW CREATE TABLE orders_again").await.unwrap().unwrap();
    assert!(!create.1.contains("FOREIGN KEY"), "{}", create.1);

    // --to-sql writes the same selection as a script the mariadb client loads: into another
    // database it equals the restored table; an existing file is kept.
    let script = dir.path().join("orders.sql");
    let elsewhere = format!("{source}_sql");
    let (code, out, err) = run(cairn(locks.path()).args([
        "restore",
        "--source",
        "fx",
        "--from",
        &to,
        "--to-sql",
        script.to_str().unwrap(),
        "--table",
        &table,
        "--rename-table",
        "orders=orders_restored",
        "--rename-db",
        &format!("{source}={elsewhere}"),
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("INSERT INTO") && !text.contains("customers` ("), "{text}");
    load_script(&script);
    let sums = |database: String| async move {
        connect(&url_of(&database))
            .await
            .query_first::<(String, u64), _>("CHECKSUM TABLE orders_restored")
            .await
            .unwrap()
            .unwrap()
            .1
    };
    assert_eq!(sums(elsewhere.clone()).await, sums(source.clone()).await);
    let (code, _, err) = run(cairn(locks.path()).args([
        "restore",
        "--source",
        "fx",
        "--from",
        &to,
        "--to-sql",
        script.to_str().unwrap(),
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not overwritten"), "{err}");
}

/// The same with the incrementals: the chosen table as it was at the chain's end, beside the live
/// one; the log's changes to other tables and the live triggers untouched. A logged statement
/// that changes the table stops a restore under a new name (its text names the old one), and
/// applies to a restore under the table's own name elsewhere.
#[tokio::test]
async fn a_table_is_restored_as_the_incrementals_left_it_beside_the_live_one() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let source = fresh_database("selective_pitr").await;
    let mut my = connect(&url_of(&source)).await;
    my.query_drop(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20));
         CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, amount DECIMAL(10,2),
           CONSTRAINT fk_customer FOREIGN KEY (customer_id) REFERENCES customers (id));
         CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(20));
         CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (what) VALUES ('order');
         INSERT INTO customers VALUES (1, 'a'), (2, 'b');
         INSERT INTO orders VALUES (1, 1, 10.00), (2, 2, 20.00), (3, 1, 30.00)",
    )
    .await
    .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, out, err) = backup_with(&mut cairn(locks.path()), &source, &to, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    my.query_drop(
        "INSERT INTO orders VALUES (4, 2, 40.00); UPDATE orders SET amount = 11 WHERE id = 1;
         INSERT INTO customers VALUES (3, 'c'); ALTER TABLE customers ADD COLUMN note INT",
    )
    .await
    .unwrap();
    let at_point = orders(&source, "orders").await;
    let (code, out, err) = backup_with(&mut cairn(locks.path()), &source, &to, &["--type", "incremental"]);
    assert_eq!(code, 0, "{out}\n{err}");
    // The live table moves on after the chain's end.
    my.query_drop("DELETE FROM orders WHERE id > 1").await.unwrap();
    let live = live_state(&source).await;
    let restore = |target: &str, extra: &[&str]| {
        run(cairn(locks.path())
            .args(["restore", "--source", "fx", "--from", &to, "--target", target])
            .args(extra))
    };
    let table = format!("{source}.orders");
    let (code, out, err) = restore(
        &url_of(&source),
        &[
            "--table",
            &table,
            "--rename-table",
            "orders=orders_back",
            "--keep-foreign-keys",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(orders(&source, "orders_back").await, at_point);
    let (sums, mut tables) = live_state(&source).await;
    assert_eq!(sums, live.0, "the live tables are untouched, their triggers too");
    tables.retain(|t| t != "orders_back");
    assert_eq!(tables, live.1);

    // --to-sql past the full copy: the chosen table's changes, then the whole chain, as scripts
    // the mariadb client loads into other databases. The copy's trigger comes after the logged
    // rows, so the audit rows are the source's, not fired again.
    let to_sql = |script: &std::path::Path, extra: &[&str]| {
        run(cairn(locks.path())
            .args(["restore", "--source", "fx", "--from", &to, "--to-sql"])
            .arg(script)
            .args(extra))
    };
    let one = dir.path().join("orders-at-point.sql");
    let one_db = format!("{source}_pitsql");
    let (code, out, err) = to_sql(&one, &["--table", &table, "--rename-db", &format!("{source}={one_db}")]);
    assert_eq!(code, 0, "{out}\n{err}");
    load_script(&one);
    assert_eq!(orders(&one_db, "orders").await, at_point);
    let whole = dir.path().join("whole-at-point.sql");
    let whole_db = format!("{source}_pitall");
    let (code, out, err) = to_sql(&whole, &["--rename-db", &format!("{source}={whole_db}")]);
    assert_eq!(code, 0, "{out}\n{err}");
    load_script(&whole);
    assert_eq!(orders(&whole_db, "orders").await, at_point);
    let count = |database: String, sql: &'static str| async move {
        connect(&url_of(&database))
            .await
            .query_first::<u64, _>(sql)
            .await
            .unwrap()
            .unwrap()
    };
    let audit = "SELECT COUNT(*) FROM audit";
    assert_eq!(count(whole_db.clone(), audit).await, count(source.clone(), audit).await);
    assert_eq!(
        count(whole_db.clone(), audit).await,
        4,
        "three orders in the copy, one in the log"
    );
    let customers = "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND \
                     TABLE_NAME = 'customers' AND COLUMN_NAME = 'note'";
    assert_eq!(
        count(whole_db.clone(), customers).await,
        1,
        "the logged ALTER is in the script"
    );

    // A statement on the table, after which a restore under a new name stops, naming it.
    my.query_drop("ALTER TABLE orders ADD COLUMN shipped INT; UPDATE orders SET shipped = 1")
        .await
        .unwrap();
    let (code, out, err) = backup_with(&mut cairn(locks.path()), &source, &to, &["--type", "incremental"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = restore(
        &url_of(&source),
        &["--table", &table, "--rename-table", "orders=orders_later"],
    );
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("ALTER TABLE orders") && err.contains("restored under another name"),
        "{err}"
    );
    // A script cannot follow rows past the statement that changed the table's columns: refused,
    // and no part of a script is left behind.
    let later = dir.path().join("orders-later.sql");
    let (code, out, err) = to_sql(&later, &["--table", &table]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("ALTER TABLE orders") && err.contains("changed its definition"),
        "{err}"
    );
    assert!(!later.exists(), "a refused script is removed");
    // Under its own name in another database it applies — not with its key to customers, which
    // that database lacks: refused before anything is made.
    let elsewhere = format!("{source}_elsewhere");
    let (code, out, err) = restore(
        &crate::support::mysql_url(),
        &[
            "--table",
            &table,
            "--rename-db",
            &format!("{source}={elsewhere}"),
            "--keep-foreign-keys",
        ],
    );
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("customers") && err.contains("nothing was restored"),
        "{err}"
    );
    let made: Option<u64> = connect(&crate::support::mysql_url())
        .await
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{elsewhere}'"
        ))
        .await
        .unwrap();
    assert_eq!(made, Some(0));
    let (code, out, err) = restore(
        &crate::support::mysql_url(),
        &["--table", &table, "--rename-db", &format!("{source}={elsewhere}")],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let shipped: Option<String> = connect(&url_of(&elsewhere))
        .await
        .query_first("SELECT GROUP_CONCAT(id, ':', shipped ORDER BY id) FROM orders")
        .await
        .unwrap();
    assert_eq!(shipped.as_deref(), Some("1:1"));
    let customers: Option<u64> = connect(&url_of(&elsewhere))
        .await
        .query_first("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'customers' AND TABLE_SCHEMA = DATABASE()")
        .await
        .unwrap();
    assert_eq!(customers, Some(0), "only the chosen table");
}
