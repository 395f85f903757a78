//! Destinations against a real directory and a real S3-protocol server.

use std::sync::Arc;

use bytes::Bytes;
use cairn::storage::{
    Access, Destination, DestinationError, DestinationExt, LocalDestination, PutCondition, S3Destination, md5_hex,
};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use crate::support::{S3_SECRET_KEY, every_destination, local_destination, s3_server};

/// Deterministic bytes that differ per seed, so a mixed-up object cannot pass for another.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2654435761).wrapping_add(u64::from(seed)) as u8)
        .collect()
}

/// A body that yields `good` bytes, then fails: a source that dies mid-stream.
struct FailingBody {
    remaining: Vec<u8>,
}

impl tokio::io::AsyncRead for FailingBody {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.remaining.is_empty() {
            return std::task::Poll::Ready(Err(std::io::Error::other("source connection lost")));
        }
        let n = buf.remaining().min(self.remaining.len()).min(64 * 1024);
        let chunk: Vec<u8> = self.remaining.drain(..n).collect();
        buf.put_slice(&chunk);
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn put_get_head_list_delete_round_trip() {
    for (_guard, destination) in every_destination("roundtrip").await {
        let data = pattern(1, 300_000);
        let outcome = destination
            .put_bytes("src/copies/c1/data/t.zst", Bytes::from(data.clone()))
            .await
            .unwrap();
        assert_eq!(outcome.size, data.len() as u64);
        assert_eq!(outcome.md5, md5_hex(&data));
        let mut read = Vec::new();
        destination
            .get("src/copies/c1/data/t.zst")
            .await
            .unwrap()
            .read_to_end(&mut read)
            .await
            .unwrap();
        assert_eq!(read, data, "{}", destination.location());
        assert_eq!(
            destination
                .head("src/copies/c1/data/t.zst")
                .await
                .unwrap()
                .unwrap()
                .size,
            data.len() as u64
        );
        assert!(destination.head("src/nothing").await.unwrap().is_none());
        destination
            .put_bytes("src/status.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        destination
            .put_bytes("other/status.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let keys: Vec<String> = destination
            .list("src/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["src/copies/c1/data/t.zst", "src/status.json"]);
        let keys: Vec<String> = destination
            .list("src/cop")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["src/copies/c1/data/t.zst"]);
        assert_eq!(destination.folders("").await.unwrap(), ["other", "src"]);
        assert_eq!(destination.folders("src/").await.unwrap(), ["copies"]);
        assert_eq!(
            destination.folders("src/copies/c1/data/").await.unwrap(),
            Vec::<String>::new()
        );
        destination.delete("src/status.json").await.unwrap();
        destination.delete("src/status.json").await.unwrap();
        assert!(destination.head("src/status.json").await.unwrap().is_none());
        let err = destination.get("src/status.json").await.err().expect("missing object");
        assert!(matches!(err, DestinationError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("src/status.json"), "{err}");
    }
}

#[tokio::test]
async fn conditional_puts_create_once_and_replace_only_unchanged() {
    for (_guard, destination) in every_destination("conditional").await {
        let first = destination
            .put_if("s/lock.json", Bytes::from_static(b"one"), PutCondition::CreateOnly)
            .await
            .unwrap();
        let again = destination
            .put_if("s/lock.json", Bytes::from_static(b"two"), PutCondition::CreateOnly)
            .await;
        assert!(
            matches!(again, Err(DestinationError::ConditionFailed { .. })),
            "{again:?}"
        );
        let read = destination.get_versioned("s/lock.json", 1024).await.unwrap().unwrap();
        assert_eq!(read.data, "one");
        assert_eq!(read.etag, first.etag);
        let second = destination
            .put_if(
                "s/lock.json",
                Bytes::from_static(b"three"),
                PutCondition::IfMatch(read.etag.clone()),
            )
            .await
            .unwrap();
        let stale = destination
            .put_if(
                "s/lock.json",
                Bytes::from_static(b"four"),
                PutCondition::IfMatch(read.etag),
            )
            .await;
        assert!(
            matches!(stale, Err(DestinationError::ConditionFailed { .. })),
            "{stale:?}"
        );
        let read = destination.get_versioned("s/lock.json", 1024).await.unwrap().unwrap();
        assert_eq!((read.data.as_ref(), read.etag), (b"three".as_ref(), second.etag));
        let gone = destination
            .put_if(
                "s/none.json",
                Bytes::from_static(b"x"),
                PutCondition::IfMatch(first.etag),
            )
            .await;
        assert!(
            matches!(gone, Err(DestinationError::ConditionFailed { .. })),
            "{gone:?}"
        );
        assert!(destination.get_versioned("s/none.json", 10).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn racing_conditional_creates_have_exactly_one_winner() {
    for (_guard, destination) in every_destination("race-create").await {
        let attempts = futures::future::join_all((0..16u8).map(|i| {
            let destination = destination.clone();
            async move {
                destination
                    .put_if("s/lease", Bytes::from(vec![i; 8]), PutCondition::CreateOnly)
                    .await
            }
        }))
        .await;
        let winners = attempts.iter().filter(|a| a.is_ok()).count();
        assert_eq!(winners, 1, "{}: {attempts:?}", destination.location());
    }
}

#[tokio::test]
async fn local_readers_never_see_a_partial_object() {
    let (_guard, destination) = local_destination();
    let versions: Vec<Vec<u8>> = (0..4)
        .map(|seed| pattern(seed, 3 * 1024 * 1024 + usize::from(seed)))
        .collect();
    let digests: Vec<String> = versions.iter().map(|v| md5_hex(v)).collect();
    destination
        .put_bytes("s/big", Bytes::from(versions[0].clone()))
        .await
        .unwrap();
    let writer = {
        let destination = destination.clone();
        let versions = versions.clone();
        tokio::spawn(async move {
            for round in 0..12 {
                destination
                    .put_bytes("s/big", Bytes::from(versions[round % 4].clone()))
                    .await
                    .unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let data = destination.get_bytes("s/big", 8 << 20).await.unwrap();
        assert!(
            digests.contains(&md5_hex(&data)),
            "a reader saw {} bytes that are no complete version",
            data.len()
        );
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 0);
}

#[tokio::test]
async fn a_failed_put_keeps_the_old_object_and_leaves_no_temporary_file() {
    for (guard, destination) in every_destination("failed-put").await {
        destination
            .put_bytes("s/obj", Bytes::from_static(b"previous"))
            .await
            .unwrap();
        let body = FailingBody {
            remaining: pattern(9, 7 * 1024 * 1024),
        };
        let err = destination.put("s/obj", Box::pin(body)).await.unwrap_err();
        assert!(err.to_string().contains("s/obj"), "{err}");
        assert_eq!(
            destination.get_bytes("s/obj", 100).await.unwrap(),
            "previous",
            "{}",
            destination.location()
        );
        if let Some(dir) = guard {
            let names: Vec<String> = std::fs::read_dir(dir.path().join("backups/s"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, ["obj"], "temporary files left behind");
        }
    }
}

#[tokio::test]
async fn s3_uploads_above_the_part_size_go_multipart_and_read_back_identical() {
    let server = s3_server();
    let bucket = server.new_bucket("multipart");
    let options = server.options(&bucket, "p");
    let destination = S3Destination::connect(options.clone()).await.unwrap();
    let data = pattern(7, 2 * options.part_size as usize + 123_457);
    let outcome = destination
        .put("s/big.zst", Box::pin(std::io::Cursor::new(data.clone())))
        .await
        .unwrap();
    assert_eq!(outcome.size, data.len() as u64);
    assert_eq!(
        outcome.md5,
        md5_hex(&data),
        "the MD5 covers the whole object, not the parts"
    );
    assert!(
        outcome.etag.trim_matches('"').ends_with("-3"),
        "expected a 3-part upload, got ETag {}",
        outcome.etag
    );
    assert_eq!(destination.get_bytes("s/big.zst", 64 << 20).await.unwrap(), data);
    // Exactly one part's worth is a plain upload, not a one-part multipart upload.
    let exact = pattern(8, options.part_size as usize);
    let outcome = destination
        .put("s/exact", Box::pin(std::io::Cursor::new(exact.clone())))
        .await
        .unwrap();
    assert!(!outcome.etag.contains('-'), "{}", outcome.etag);
    assert_eq!(destination.get_bytes("s/exact", 64 << 20).await.unwrap(), exact);
}

#[tokio::test]
async fn s3_throttling_is_retried_with_backoff_for_puts_and_parts() {
    use crate::support::FLAKY_FAILURES;
    let server = s3_server();
    let bucket = server.new_bucket("flaky");
    let mut options = server.options(&bucket, "p");
    options.max_attempts = FLAKY_FAILURES + 1;
    let destination = S3Destination::connect(options.clone()).await.unwrap();
    destination
        .put_bytes("s/small", Bytes::from_static(b"payload"))
        .await
        .unwrap();
    assert_eq!(server.write_attempts(&bucket, "p/s/small"), FLAKY_FAILURES + 1);
    assert_eq!(destination.get_bytes("s/small", 100).await.unwrap(), "payload");
    let data = pattern(3, options.part_size as usize + 1000);
    let outcome = destination
        .put("s/big", Box::pin(std::io::Cursor::new(data.clone())))
        .await
        .unwrap();
    assert!(outcome.etag.contains("-2"), "{}", outcome.etag);
    for part in 1..=2 {
        assert_eq!(
            server.write_attempts(&bucket, &format!("p/s/big#{part}")),
            FLAKY_FAILURES + 1,
            "part {part}"
        );
    }
    assert_eq!(destination.get_bytes("s/big", 64 << 20).await.unwrap(), data);

    // With fewer attempts than the store refuses, the put fails and says which object.
    options.max_attempts = FLAKY_FAILURES;
    let impatient = S3Destination::connect(options).await.unwrap();
    let err = impatient
        .put_bytes("s/other", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("s/other") && text.contains("SlowDown (HTTP 503)"),
        "{text}"
    );
    use cairn::exit::Classify;
    assert_eq!(err.exit_status().code(), 75);
}

#[tokio::test]
async fn s3_listing_goes_past_a_thousand_keys() {
    let destination = s3_server().destination("many-keys").await;
    let total = 1_234usize;
    futures::stream::iter(0..total)
        .map(|i| {
            let destination = destination.clone();
            async move {
                destination
                    .put_bytes(&format!("s/copies/k{i:05}"), Bytes::from(i.to_string()))
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    destination
        .put_bytes("t/outside", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let listed = destination.list("s/").await.unwrap();
    assert_eq!(listed.len(), total);
    assert_eq!(listed.first().unwrap().key, "s/copies/k00000");
    assert_eq!(listed.last().unwrap().key, format!("s/copies/k{:05}", total - 1));
}

#[tokio::test]
async fn s3_wrong_credentials_and_missing_bucket_are_named() {
    let server = s3_server();
    let bucket = server.new_bucket("creds");
    let mut options = server.options(&bucket, "p");
    options.secret_access_key = Some(cairn::secret::Secret::new("not-the-secret"));
    let destination = S3Destination::connect(options).await.unwrap();
    let err = destination.check(Access::Read).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DestinationError::AccessDenied { .. }), "{text}");
    assert!(
        text.contains(&bucket) && text.contains(&server.endpoint) && text.contains("credentials"),
        "{text}"
    );
    assert!(
        !text.contains("not-the-secret") && !text.contains(S3_SECRET_KEY),
        "{text}"
    );
    let put = destination
        .put_bytes("s/x", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(put, DestinationError::AccessDenied { .. }), "{put}");

    let destination = S3Destination::connect(server.options("no-such-bucket-here", "p"))
        .await
        .unwrap();
    let err = destination.check(Access::Read).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DestinationError::BucketNotFound { .. }), "{text}");
    assert!(
        text.contains("no-such-bucket-here") && text.contains(&server.endpoint),
        "{text}"
    );
}

#[tokio::test]
async fn s3_unreachable_endpoint_is_a_temporary_failure() {
    // Port 1: nothing listens there, and no other test can start listening on it.
    let port = 1;
    let mut options = s3_server().options("b", "p");
    options.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let destination = S3Destination::connect(options).await.unwrap();
    let err = destination.check(Access::Read).await.unwrap_err();
    assert!(matches!(err, DestinationError::Unreachable { .. }), "{err}");
    use cairn::exit::Classify;
    assert_eq!(err.exit_status().code(), 75);
}

#[tokio::test]
async fn local_checks_create_only_for_writing_and_refuse_what_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("backups");
    let destination: Arc<dyn Destination> = Arc::new(LocalDestination::new(&root));
    let err = destination.check(Access::Read).await.unwrap_err();
    assert!(matches!(err, DestinationError::Missing { .. }), "{err}");
    assert!(
        err.to_string().contains("backups") && err.to_string().contains("does not exist"),
        "{err}"
    );
    assert!(!root.exists(), "a read check created the folder");
    destination.check(Access::Write).await.unwrap();
    assert!(root.is_dir());
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "the write probe left a file"
    );
    destination.check(Access::Read).await.unwrap();

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let destination: Arc<dyn Destination> = Arc::new(LocalDestination::new(file.join("backups")));
    let err = destination.check(Access::Write).await.unwrap_err();
    assert!(err.to_string().contains("a-file"), "{err}");
}

/// A conditional put whose answer was lost after the store applied it is retried by the SDK and
/// meets its own write: that is success, while a real conflict still fails.
#[tokio::test]
async fn a_conditional_put_whose_answer_was_lost_succeeds() {
    let server = s3_server();
    let bucket = server.new_bucket("lossy");
    let destination = server.destination_at(&bucket, "p").await;
    let data = Bytes::from_static(b"{\"token\": \"mine\"}");
    let outcome = destination
        .put_if("src/lock.json", data.clone(), PutCondition::CreateOnly)
        .await
        .expect("our own write found by the retry is a success");
    assert_eq!(outcome.md5, md5_hex(&data));
    assert_eq!(destination.get_bytes("src/lock.json", 1024).await.unwrap(), data);
    let replaced = Bytes::from_static(b"{\"token\": \"mine, renewed\"}");
    let renewed = destination
        .put_if(
            "src/lock.json",
            replaced.clone(),
            PutCondition::IfMatch(outcome.etag.clone()),
        )
        .await
        .expect("the lost answer of a replace too");
    assert_eq!(destination.get_bytes("src/lock.json", 1024).await.unwrap(), replaced);
    // Someone else's object is a conflict, whatever the answers.
    let err = destination
        .put_if("src/lock.json", Bytes::from_static(b"theirs"), PutCondition::CreateOnly)
        .await
        .unwrap_err();
    assert!(matches!(err, DestinationError::ConditionFailed { .. }), "{err}");
    let err = destination
        .put_if(
            "src/lock.json",
            Bytes::from_static(b"x"),
            PutCondition::IfMatch(outcome.etag),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DestinationError::ConditionFailed { .. }), "{err}");
    assert_ne!(renewed.etag, "");
}

/// A body that yields `remaining` bytes, then never another: a source that stalls.
struct StallingBody {
    remaining: usize,
}

impl tokio::io::AsyncRead for StallingBody {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.remaining == 0 {
            return std::task::Poll::Pending;
        }
        let n = buf.remaining().min(self.remaining).min(64 * 1024);
        buf.put_slice(&vec![7u8; n]);
        self.remaining -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

/// Multipart uploads that fail, or whose writer is cancelled (a worker stopped because another
/// failed), are aborted; one left by a killed run is listed so it can be cleaned.
#[tokio::test]
async fn unfinished_multipart_uploads_are_aborted_or_listed() {
    let server = s3_server();
    let bucket = server.new_bucket("uploads");
    let destination = server.destination_at(&bucket, "p").await;
    let part = cairn::storage::s3::MIN_PART_SIZE as usize;
    let failed = destination
        .put(
            "s/failed",
            Box::pin(FailingBody {
                remaining: pattern(3, part * 5 / 2),
            }),
        )
        .await;
    assert!(failed.is_err());
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        destination.put(
            "s/cancelled",
            Box::pin(StallingBody {
                remaining: part * 5 / 2,
            }),
        ),
    )
    .await;
    assert!(cancelled.is_err(), "the stalled put was cancelled");
    destination.settle().await;
    assert_eq!(
        destination.unfinished_uploads("s/").await.unwrap(),
        Vec::<String>::new()
    );

    server
        .client()
        .create_multipart_upload()
        .bucket(&bucket)
        .key("p/s/copies/x/data/t.zst")
        .send()
        .await
        .unwrap();
    assert_eq!(
        destination.unfinished_uploads("s/").await.unwrap(),
        ["s/copies/x/data/t.zst"]
    );
    assert!(destination.unfinished_uploads("other/").await.unwrap().is_empty());
}
