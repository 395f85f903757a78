//! Locks against overlapping runs: local contention, lease contention across hosts, stale
//! leases, renewal and loss.

use std::time::Duration;

use bytes::Bytes;
use cairn::exit::{Classify, ExitStatus};
use cairn::repo::layout;
use cairn::repo::lock::{self, Lease, LockError, LockOptions};
use cairn::storage::DestinationExt;
use chrono::Utc;

use crate::support::every_destination;

fn options(dir: &tempfile::TempDir, host: &str) -> LockOptions {
    LockOptions {
        lock_dir: dir.path().to_path_buf(),
        ttl: Duration::from_secs(600),
        host: host.into(),
    }
}

#[tokio::test]
async fn a_second_run_on_the_same_host_is_refused_with_exit_75() {
    for (_guard, destination) in every_destination("lock-local").await {
        let dir = tempfile::tempdir().unwrap();
        let held = lock::acquire(destination.clone(), "app", "backup", &options(&dir, "h1"))
            .await
            .unwrap();
        let err = lock::acquire(destination.clone(), "app", "backup", &options(&dir, "h1"))
            .await
            .unwrap_err();
        assert!(matches!(err, LockError::LocalHeld { .. }), "{err}");
        assert_eq!(err.exit_status().code(), 75);
        assert!(
            err.to_string().contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        // Another source is not affected.
        let other = lock::acquire(destination.clone(), "other", "backup", &options(&dir, "h1"))
            .await
            .unwrap();
        other.release().await.unwrap();
        held.release().await.unwrap();
        lock::acquire(destination.clone(), "app", "backup", &options(&dir, "h1"))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_run_on_another_host_is_refused_by_the_lease() {
    for (_guard, destination) in every_destination("lock-lease").await {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let held = lock::acquire(destination.clone(), "app", "backup", &options(&dir_a, "host-a"))
            .await
            .unwrap();
        let err = lock::acquire(destination.clone(), "app", "backup", &options(&dir_b, "host-b"))
            .await
            .unwrap_err();
        assert!(matches!(err, LockError::LeaseHeld { .. }), "{err}");
        assert_eq!(err.exit_status().code(), 75);
        let text = err.to_string();
        assert!(
            text.contains("host-a") && text.contains("backup") && text.contains("app/lock.json"),
            "{text}"
        );
        held.release().await.unwrap();
        assert!(
            destination.head(&layout::lock_key("app")).await.unwrap().is_none(),
            "release removes the lease"
        );
        lock::acquire(destination.clone(), "app", "backup", &options(&dir_b, "host-b"))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    for (_guard, destination) in every_destination("lock-stale").await {
        let dead = Lease {
            host: "crashed-host".into(),
            pid: 4242,
            operation: "backup".into(),
            token: "dead".into(),
            started_at: Utc::now() - chrono::Duration::hours(3),
            expires_at: Utc::now() - chrono::Duration::hours(2),
            cairn_version: "0.1.0".into(),
            process_scope: None,
        };
        destination
            .put_bytes(
                &layout::lock_key("app"),
                Bytes::from(serde_json::to_vec(&dead).unwrap()),
            )
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let taken = lock::acquire(destination.clone(), "app", "backup", &options(&dir, "new-host"))
            .await
            .unwrap();
        let stored: Lease =
            serde_json::from_slice(&destination.get_bytes(&layout::lock_key("app"), 4096).await.unwrap()).unwrap();
        assert_eq!(stored.host, "new-host");
        assert!(stored.expires_at > Utc::now());
        taken.release().await.unwrap();

        // A lease that has not expired is respected, however old its start.
        let alive = Lease {
            expires_at: Utc::now() + chrono::Duration::minutes(5),
            ..dead
        };
        destination
            .put_bytes(
                &layout::lock_key("app"),
                Bytes::from(serde_json::to_vec(&alive).unwrap()),
            )
            .await
            .unwrap();
        let err = lock::acquire(destination.clone(), "app", "backup", &options(&dir, "new-host"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("crashed-host"), "{err}");
    }
}

#[tokio::test]
async fn leases_are_renewed_and_a_replaced_lease_is_noticed() {
    for (_guard, destination) in every_destination("lock-renew").await {
        let dir = tempfile::tempdir().unwrap();
        let short = LockOptions {
            // Renewed every third of this; generous, so a busy machine cannot starve the renewal.
            ttl: Duration::from_millis(6000),
            ..options(&dir, "h")
        };
        let held = lock::acquire(destination.clone(), "app", "backup", &short)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(7000)).await;
        held.ensure_held()
            .expect("renewal keeps the lease alive past its first expiry");
        assert!(held.lease().expires_at > Utc::now());

        // Someone else overwrites the lease: the next renewal notices and the run must stop.
        destination
            .put_bytes(&layout::lock_key("app"), Bytes::from_static(b"{\"intruder\":true}"))
            .await
            .unwrap();
        // The next renewal (within a third of the lease time) notices; allow for a slow machine.
        let noticed = Utc::now() + chrono::Duration::seconds(10);
        while held.ensure_held().is_ok() && Utc::now() < noticed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let err = held.ensure_held().unwrap_err();
        assert!(matches!(err, LockError::Lost { .. }), "{err}");
        held.release().await.unwrap();
        assert!(
            destination.head(&layout::lock_key("app")).await.unwrap().is_some(),
            "another run's lease is left alone"
        );
    }
}

/// A pid that no process has: one above the kernel's largest. (A reaped child's pid could be
/// given to another process while the test runs.)
pub fn dead_pid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("reading /proc/sys/kernel/pid_max")
        .trim()
        .parse()
        .expect("pid_max is a number");
    max + 1
}

#[tokio::test]
async fn a_lease_of_a_killed_run_on_this_host_is_taken_over_at_once() {
    for (_guard, destination) in every_destination("lock-killed").await {
        let dir = tempfile::tempdir().unwrap();
        let lease = |host: &str, pid: u32, scope: Option<String>| Lease {
            host: host.into(),
            pid,
            operation: "backup".into(),
            token: "killed".into(),
            started_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::minutes(10),
            cairn_version: cairn::CAIRN_VERSION.into(),
            process_scope: scope,
        };
        let put = |lease: Lease| {
            let destination = destination.clone();
            async move {
                destination
                    .put_bytes(
                        &layout::lock_key("app"),
                        Bytes::from(serde_json::to_vec(&lease).unwrap()),
                    )
                    .await
                    .unwrap();
            }
        };
        let scope = lock::process_scope();
        assert!(scope.is_some(), "the test machine is Linux");

        // Not provably gone: another host, another PID namespace, a live pid, an old lease
        // without a scope. Each waits for the lease to expire.
        for (host, pid, scope) in [
            ("other-host", dead_pid(), scope.clone()),
            ("this-host", dead_pid(), Some("another-boot/pid:[1]".to_string())),
            ("this-host", std::process::id(), scope.clone()),
            ("this-host", dead_pid(), None),
        ] {
            put(lease(host, pid, scope.clone())).await;
            let err = lock::acquire(destination.clone(), "app", "backup", &options(&dir, "this-host"))
                .await
                .unwrap_err();
            assert_eq!(
                err.exit_status(),
                ExitStatus::Temporary,
                "{host} {pid} {scope:?}: {err}"
            );
        }

        // This host, this namespace, no such process: taken over at once.
        put(lease("this-host", dead_pid(), scope.clone())).await;
        let taken = lock::acquire(destination.clone(), "app", "backup", &options(&dir, "this-host"))
            .await
            .unwrap();
        let stored: Lease =
            serde_json::from_slice(&destination.get_bytes(&layout::lock_key("app"), 4096).await.unwrap()).unwrap();
        assert_eq!(stored.pid, std::process::id());
        taken.release().await.unwrap();
    }
}
