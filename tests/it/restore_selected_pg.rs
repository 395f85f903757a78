//! A selective restore of a PostgreSQL copy (issue #16): a table lost on the live database comes
//! back alone from the copy — its rows, its sequence's value, its key, its index and, on
//! request, its foreign key to a live table — while every live table is untouched; beside the
//! live table with `--into-schema`; as a script psql loads (`--to-sql`); a table the target has
//! is refused before anything is created.

use crate::postgres::{connect, fresh_database, url_of};
use crate::support::{cairn, run};

async fn state(url: &str, table: &str) -> String {
    connect(url)
        .await
        .query_one(
            &format!("SELECT coalesce(string_agg(t::text, ' ' ORDER BY t::text), '') FROM {table} t"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_lost_table_comes_back_alone_and_nothing_else_changes() {
    let database = fresh_database("pg_selective").await;
    let url = url_of(&database);
    let pg = connect(&url).await;
    pg.batch_execute(
        "CREATE TABLE customers (id int PRIMARY KEY, name text);
         CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers (id), amount numeric(10,2));
         CREATE INDEX orders_by_amount ON orders (amount);
         CREATE TABLE audit (id serial PRIMARY KEY, what text);
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 15;
         ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own_orders ON orders USING (customer_id = 1);
         CREATE TABLE events (at date NOT NULL, what text) PARTITION BY RANGE (at);
         CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         INSERT INTO customers VALUES (1, 'a'), (2, 'b');
         INSERT INTO orders (customer_id, amount) VALUES (1, 10), (2, 20), (1, 30);
         INSERT INTO audit (what) VALUES ('x')",
    )
    .await
    .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let (code, out, err) = run(cairn(locks.path()).args(["backup", "--name", "fx", "--source", &url, "--to", &to]));
    assert_eq!(code, 0, "{out}\n{err}");
    let orders_at_copy = state(&url, "orders").await;
    let restore = |extra: &[&str]| {
        run(cairn(locks.path())
            .args(["restore", "--source", "fx", "--from", &to, "--target", &url])
            .args(extra))
    };

    // Partitions are not built yet: refused by name.
    let (code, out, err) = restore(&["--table", "public.events*", "--into-schema", "p"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("partition"), "{err}");

    // The live table is there: refused, nothing changes.
    let (code, out, err) = restore(&["--table", "public.orders"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("public.orders") && err.contains("nothing was restored"),
        "{err}"
    );

    // Renamed aside, the live table keeps its key's index and its sequence, whose names the
    // restore would take: refused before anything is made.
    pg.batch_execute("ALTER TABLE orders RENAME TO orders_aside")
        .await
        .unwrap();
    let (code, out, err) = restore(&["--table", "public.orders"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("public.orders_pkey") && err.contains("public.orders_id_seq"),
        "{err}"
    );
    let made: bool = pg
        .query_one("SELECT to_regclass('public.orders') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!made, "nothing was restored");
    pg.batch_execute("ALTER TABLE orders_aside RENAME TO orders")
        .await
        .unwrap();

    // Beside the live table, in a schema of its own: the copy's rows, its own sequence.
    pg.batch_execute("UPDATE orders SET amount = 99 WHERE id = 1")
        .await
        .unwrap();
    let live_orders = state(&url, "orders").await;
    let (code, out, err) = restore(&[
        "--table",
        "public.orders",
        "--into-schema",
        "restored",
        "--keep-foreign-keys",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(state(&url, "restored.orders").await, orders_at_copy);
    assert_eq!(state(&url, "orders").await, live_orders, "the live table is untouched");
    let next: i32 = pg
        .query_one(
            "INSERT INTO restored.orders (customer_id, amount) VALUES (2, 1) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 4, "the restored table's sequence goes on after its ids");
    let own_sequence: bool = pg
        .query_one("SELECT to_regclass('restored.orders_id_seq') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(own_sequence);

    // It is lost (the view with it), the live database moves on.
    pg.batch_execute(
        "DROP TABLE orders CASCADE; UPDATE customers SET name = 'live' WHERE id = 1;
         INSERT INTO audit (what) VALUES ('y')",
    )
    .await
    .unwrap();
    let (customers, audit) = (state(&url, "customers").await, state(&url, "audit").await);
    let (code, out, err) = restore(&["--table", "public.orders", "--keep-foreign-keys", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["tables"], 1, "{report}");
    assert_eq!(report["rows"], 3, "{report}");
    assert_eq!(state(&url, "orders").await, orders_at_copy);
    assert_eq!(state(&url, "customers").await, customers, "live tables untouched");
    assert_eq!(state(&url, "audit").await, audit, "live tables untouched");
    let view_back: bool = pg
        .query_one("SELECT to_regclass('public.big_orders') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!view_back, "a selective restore takes tables only");
    let (indexed, keyed): (bool, bool) = pg
        .query_one(
            "SELECT to_regclass('public.orders_by_amount') IS NOT NULL, \
             EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'public.orders'::regclass AND contype = 'f')",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert!(indexed && keyed);
    let (secured, policies): (bool, i64) = pg
        .query_one(
            "SELECT relrowsecurity, (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid) FROM pg_class c \
             WHERE oid = 'public.orders'::regclass",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert!(secured && policies == 1, "row security comes back with the table");
    // The sequence goes on after the restored ids.
    let next: i32 = pg
        .query_one(
            "INSERT INTO orders (customer_id, amount) VALUES (2, 1) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 4);

    // --to-sql writes the same table as a script psql loads into an empty database.
    let script = dir.path().join("orders.sql");
    let (code, out, err) = run(cairn(locks.path()).args([
        "restore",
        "--source",
        "fx",
        "--from",
        &to,
        "--to-sql",
        script.to_str().unwrap(),
        "--table",
        "public.orders",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let empty = url_of(&fresh_database("pg_selective_sql").await);
    // A key kept to a table this database lacks: refused before anything is made.
    let (code, out, err) = run(cairn(locks.path()).args([
        "restore",
        "--source",
        "fx",
        "--from",
        &to,
        "--target",
        &empty,
        "--table",
        "public.orders",
        "--keep-foreign-keys",
    ]));
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("public.customers") && err.contains("nothing was restored"),
        "{err}"
    );
    let status = std::process::Command::new("psql")
        .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "-d", &empty, "-f"])
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success(), "psql loads the script");
    assert_eq!(state(&empty, "orders").await, orders_at_copy);
    let whole = dir.path().join("whole.sql");
    let (code, out, err) = run(cairn(locks.path()).args([
        "restore",
        "--source",
        "fx",
        "--from",
        &to,
        "--to-sql",
        whole.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let empty = url_of(&fresh_database("pg_whole_sql").await);
    let status = std::process::Command::new("psql")
        .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "-d", &empty, "-f"])
        .arg(&whole)
        .status()
        .unwrap();
    assert!(status.success(), "psql loads the whole copy's script");
    assert_eq!(state(&empty, "orders").await, orders_at_copy);
    assert_eq!(state(&empty, "customers").await, "(1,a) (2,b)");
    let view: bool = connect(&empty)
        .await
        .query_one("SELECT to_regclass('public.big_orders') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(view, "the whole copy's script has the view");
}

/// With the incrementals: the table as the chain left it, beside the live one in a schema of its
/// own; the log's changes to other tables and the live table untouched; its sequence at the
/// chain's value.
#[tokio::test]
async fn a_table_comes_back_as_the_incrementals_left_it_beside_the_live_one() {
    use crate::postgres_incrementals::{backup, config};
    let database = fresh_database("pg_selective_pitr").await;
    let url = url_of(&database);
    let pg = connect(&url).await;
    pg.batch_execute(
        "CREATE TABLE customers (id int PRIMARY KEY, name text);
         CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers (id), amount numeric(10,2));
         CREATE TABLE audit (n serial PRIMARY KEY, what text);
         CREATE FUNCTION note_customer() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO public.audit (what) VALUES (NEW.name); RETURN NEW; END $$;
         CREATE TRIGGER customers_audit AFTER INSERT ON customers FOR EACH ROW EXECUTE FUNCTION note_customer();
         INSERT INTO customers VALUES (1, 'a'), (2, 'b');
         INSERT INTO orders (customer_id, amount) VALUES (1, 10), (2, 20)",
    )
    .await
    .unwrap();
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    let config = config(locks.path(), &database);
    let (code, out, err) = backup(locks.path(), &config, &to, "full");
    assert_eq!(code, 0, "{out}\n{err}");
    pg.batch_execute(
        "SET synchronous_commit = on;
         INSERT INTO orders (customer_id, amount) VALUES (2, 30);
         UPDATE orders SET amount = 11 WHERE id = 1;
         DELETE FROM orders WHERE id = 2;
         INSERT INTO customers VALUES (3, 'c')",
    )
    .await
    .unwrap();
    let at_point = state(&url, "orders").await;
    let (code, out, err) = backup(locks.path(), &config, &to, "incremental");
    assert_eq!(code, 0, "{out}\n{err}");
    pg.batch_execute("UPDATE orders SET amount = 0; INSERT INTO customers VALUES (4, 'd')")
        .await
        .unwrap();
    let (live_orders, live_customers) = (state(&url, "orders").await, state(&url, "customers").await);
    let (code, out, err) = run(cairn(locks.path()).arg("--config").arg(&config).args([
        "restore",
        "--source",
        "fx",
        "--from",
        &to,
        "--target",
        &url,
        "--table",
        "public.orders",
        "--into-schema",
        "at_point",
        "--json",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["incrementals"], 1, "{report}");
    assert_eq!(state(&url, "at_point.orders").await, at_point);
    assert_eq!(state(&url, "orders").await, live_orders, "the live table is untouched");
    assert_eq!(
        state(&url, "customers").await,
        live_customers,
        "the log's other tables are not replayed"
    );
    let next: i32 = pg
        .query_one(
            "INSERT INTO at_point.orders (customer_id, amount) VALUES (1, 1) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 4, "the sequence is at the chain's value");

    // --to-sql at the same point: the selection, and the whole chain, as scripts psql loads into
    // empty databases. The copy's trigger comes after the logged rows: the audit rows are the
    // source's, not fired again.
    let load = |script: std::path::PathBuf, name: &'static str| async move {
        let empty = url_of(&fresh_database(name).await);
        let status = std::process::Command::new("psql")
            .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "-d", &empty, "-f"])
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success(), "psql loads {}", script.display());
        empty
    };
    let to_sql = |script: &std::path::Path, extra: &[&str]| {
        run(cairn(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["restore", "--source", "fx", "--from", &to, "--to-sql"])
            .arg(script)
            .args(extra))
    };
    let one = dir.path().join("orders-at-point.sql");
    let (code, out, err) = to_sql(&one, &["--table", "public.orders", "--into-schema", "at_point"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let loaded = load(one, "pg_selective_pitr_sql").await;
    assert_eq!(state(&loaded, "at_point.orders").await, at_point);
    let next: i32 = connect(&loaded)
        .await
        .query_one(
            "SELECT nextval(pg_get_serial_sequence('at_point.orders', 'id'))::int",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 4, "the script sets the sequence at the chain's value");
    let whole = dir.path().join("whole-at-point.sql");
    let (code, out, err) = to_sql(&whole, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let loaded = load(whole, "pg_whole_pitr_sql").await;
    assert_eq!(state(&loaded, "orders").await, at_point);
    assert_eq!(state(&loaded, "customers").await, "(1,a) (2,b) (3,c)");
    assert_eq!(
        state(&loaded, "audit").await,
        "(1,a) (2,b) (3,c)",
        "the trigger did not fire again"
    );
    // A PostgreSQL table goes beside the live one by schema, not by a new name.
    let renamed = dir.path().join("renamed.sql");
    let (code, out, err) = to_sql(&renamed, &["--table", "public.orders", "--rename-table", "orders=o2"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("--into-schema"), "{err}");
    assert!(!renamed.exists(), "nothing is written");
}
