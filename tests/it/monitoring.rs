//! What an unattended job tells the outside world: the metrics file (read back with a real
//! Prometheus text-format parser) and webhook notifications (received by a local HTTP server),
//! neither of which may hold a secret or fail the run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::postgres::{connect, fresh_database, url_of};
use crate::support::{cairn, run};

/// A webhook receiver: answers each request with the next status of `answers` (then 200) and
/// keeps the bodies of the requests it answered 200.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
    attempts: Arc<Mutex<u32>>,
}

async fn receiver(answers: Vec<u16>) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(Mutex::new(0));
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let (kept, counted) = (received.clone(), attempts.clone());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (kept, counted, answers) = (kept.clone(), counted.clone(), answers.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                let body_start = loop {
                    let n = stream.read(&mut buffer).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..body_start]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                while request.len() < body_start + length {
                    let n = stream.read(&mut buffer).await.unwrap();
                    request.extend_from_slice(&buffer[..n]);
                }
                *counted.lock().unwrap() += 1;
                let status = answers.lock().unwrap().next().unwrap_or(200);
                if status == 200 {
                    kept.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&request[body_start..]).unwrap());
                }
                let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    Receiver {
        port,
        received,
        attempts,
    }
}

/// Parses the metrics file with a Prometheus text-format parser; samples by name and labels.
fn metrics(path: &std::path::Path) -> HashMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert!(!scrape.samples.is_empty(), "{text}");
    scrape
        .samples
        .iter()
        .map(|s| {
            let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{} is not a gauge: {other:?}", s.metric),
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect()
}

// The receiver runs on the runtime's workers while the test thread waits for cairn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_write_the_metrics_file_and_notify_the_webhook_without_secrets() {
    let source = fresh_database("pg_monitoring").await;
    connect(&url_of(&source))
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();
    // The first attempt fails: the notification must be retried, not lost.
    let hook = receiver(vec![500]).await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("cairn.prom");
    let write_config = |url: &str| {
        let config = locks.path().join("cairn.toml");
        std::fs::write(
            &config,
            format!(
                "metrics-file = {prom:?}\n\
                 [notifications]\nwebhook-url = \"http://127.0.0.1:{}/hook?token=T0KEN-s3cret\"\non = [\"failure\", \"success\"]\n\
                 [destinations.local]\nurl = {:?}\n\
                 [sources.fx]\nurl = {url:?}\ndestination = \"local\"\n",
                hook.port,
                dir.path().join("backups").display().to_string()
            ),
        )
        .unwrap();
        config
    };
    let config = write_config(&url_of(&source));
    let (code, out, err) = run(cairn(locks.path()).arg("--config").arg(&config).args(["backup"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("T0KEN"), "{err}");

    let received = hook.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "{received:?}\n{err}");
    assert_eq!(*hook.attempts.lock().unwrap(), 2, "the failed attempt was retried");
    let sent = &received[0];
    assert_eq!(sent["source"], "fx");
    assert_eq!(sent["command"], "backup");
    assert_eq!(sent["result"], "success");
    assert!(sent["copy"].as_str().unwrap().ends_with("-full"), "{sent}");

    let after_success = metrics(&prom);
    let get = |m: &HashMap<String, f64>, key: &str| {
        *m.get(key)
            .unwrap_or_else(|| panic!("{key} missing from {:?}", m.keys().collect::<Vec<_>>()))
    };
    assert_eq!(
        get(&after_success, "cairn_last_run_success{command=backup,source=fx}"),
        1.0
    );
    assert_eq!(get(&after_success, "cairn_copies{kind=full,source=fx}"), 1.0);
    assert_eq!(get(&after_success, "cairn_status_readable{source=fx}"), 1.0);
    assert!(get(&after_success, "cairn_last_run_bytes{command=backup,source=fx}") > 0.0);
    let succeeded_at = get(
        &after_success,
        "cairn_last_success_timestamp_seconds{command=backup,source=fx}",
    );
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - succeeded_at).abs() < 120.0, "{succeeded_at} vs {now}");
    assert!(
        get(&after_success, "cairn_restorable_to_timestamp_seconds{source=fx}")
            >= get(&after_success, "cairn_restorable_from_timestamp_seconds{source=fx}")
    );

    // The same source now fails: a password in its URL must reach neither the webhook nor the
    // metrics file, and the last success stays where it was.
    let mut broken = url::Url::parse(&url_of("no_such_database_here")).unwrap();
    broken.set_password(Some("hunter2secret")).unwrap();
    let config = write_config(broken.as_str());
    let (code, out, err) = run(cairn(locks.path()).arg("--config").arg(&config).args(["backup"]));
    assert_ne!(code, 0, "{out}\n{err}");
    let received = hook.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "{received:?}");
    let failure = &received[1];
    assert_eq!(failure["result"], "failure");
    assert_eq!(failure["exit_code"], code);
    assert!(
        failure["error"].as_str().unwrap().contains("no_such_database_here"),
        "{failure}"
    );
    assert!(!failure.to_string().contains("hunter2secret"), "{failure}");
    let after_failure = metrics(&prom);
    assert_eq!(
        get(&after_failure, "cairn_last_run_success{command=backup,source=fx}"),
        0.0
    );
    assert_eq!(
        get(&after_failure, "cairn_last_run_exit_code{command=backup,source=fx}"),
        f64::from(code)
    );
    assert_eq!(
        get(
            &after_failure,
            "cairn_last_success_timestamp_seconds{command=backup,source=fx}"
        ),
        succeeded_at
    );
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(!text.contains("hunter2secret") && !text.contains("T0KEN"), "{text}");

    // A webhook nobody answers delays the run by its timeout at most and fails nothing.
    // Port 1: nothing listens there, and no other test can start listening on it.
    let closed_port = 1;
    let config = locks.path().join("unanswered.toml");
    std::fs::write(
        &config,
        format!(
            "[notifications]\nwebhook-url = \"http://127.0.0.1:{closed_port}/T0KEN\"\non = [\"success\"]\ntimeout-seconds = 2\nretries = 1\n\
             [destinations.local]\nurl = {:?}\n[sources.fx]\nurl = {:?}\ndestination = \"local\"\n",
            dir.path().join("backups").display().to_string(),
            url_of(&source)
        ),
    )
    .unwrap();
    let (code, out, err) = run(cairn(locks.path()).arg("--config").arg(&config).args(["backup"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("notification was not delivered after 2 attempts"), "{err}");
    assert!(!err.contains("T0KEN"), "{err}");
}
