//! `cairn backup` over every configured source: `--parallel-sources` runs them at the same
//! time, a failing source stops none of the others, and the exit code says not all succeeded.

use crate::postgres::{connect, fresh_database, url_of};
use crate::support::{cairn, run};

// The lock holder runs on the runtime's workers while the test thread waits for cairn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_run_in_parallel_and_one_failing_stops_none_of_the_others() {
    let slow = fresh_database("pg_fleet_slow").await;
    let quick = fresh_database("pg_fleet_quick").await;
    for database in [&slow, &quick] {
        connect(&url_of(database))
            .await
            .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")
            .await
            .unwrap();
    }
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups");
    let config = locks.path().join("cairn.toml");
    // `a-slow` comes first in the plan and waits for a table lock; `b-quick` must not wait for it.
    std::fs::write(
        &config,
        format!(
            "lock-wait-seconds = 30\n[destinations.local]\nurl = {:?}\n\
             [sources.a-slow]\nurl = {:?}\ndestination = \"local\"\n\
             [sources.b-quick]\nurl = {:?}\ndestination = \"local\"\n\
             [sources.c-broken]\nurl = {:?}\ndestination = \"local\"\n",
            to.display().to_string(),
            url_of(&slow),
            url_of(&quick),
            url_of("no_such_database_here"),
        ),
    )
    .unwrap();
    let blocker = connect(&url_of(&slow)).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // Held until b-quick's copy is recorded (or 25 s, below lock-wait-seconds), so a-slow still
    // waits then however slowly the run starts.
    let quick_status = to.join(cairn::repo::layout::status_key("b-quick"));
    let release = tokio::spawn(async move {
        for _ in 0..250 {
            if quick_status.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        blocker.batch_execute("ROLLBACK").await.unwrap();
    });
    let (code, out, err) =
        run(cairn(locks.path())
            .arg("--config")
            .arg(&config)
            .args(["backup", "--parallel-sources", "3", "--json"]));
    release.await.unwrap();
    assert_eq!(
        code, 2,
        "the worst outcome (a database that does not exist): {out}\n{err}"
    );
    let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
    let by_name = |name: &str| {
        reports
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["source"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {out}"))
            .clone()
    };
    let (a, b, c) = (by_name("a-slow"), by_name("b-quick"), by_name("c-broken"));
    assert_eq!(
        (a["ok"].clone(), b["ok"].clone(), c["ok"].clone()),
        (true.into(), true.into(), false.into())
    );
    let finished = |r: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(r["copy"]["finished_at"].as_str().unwrap()).unwrap()
    };
    let started = |r: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(r["copy"]["started_at"].as_str().unwrap()).unwrap()
    };
    assert!(
        started(&b) < finished(&a) && finished(&b) < finished(&a),
        "b-quick waited for a-slow: {out}"
    );
    // The plan's order is the report's order.
    let order: Vec<_> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source"].clone())
        .collect();
    assert_eq!(order, ["a-slow", "b-quick", "c-broken"]);
}
