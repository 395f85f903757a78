//! A download that survives broken connections.

use super::*;
use crate::retry::Retry;

/// Chunks of a download waiting for their reader.
pub(super) const RESUME_CHANNEL_CHUNKS: usize = 4;

/// One download that survives broken connections: each break is followed by a ranged GET from
/// the first byte not yet delivered, of the same version of the object (`If-Match`).
pub(super) struct Resumable {
    pub(super) destination: S3Destination,
    pub(super) key: String,
    pub(super) full_key: String,
    pub(super) etag: Option<String>,
    pub(super) length: Option<u64>,
}

impl Resumable {
    pub(super) async fn pump(self, body: ByteStream, sender: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) {
        let mut body = Some(body);
        let mut offset = 0u64;
        let attempts = self.destination.options.max_attempts.max(1) as usize;
        let mut retry = resume_policy(attempts);
        loop {
            let Some(current) = body.as_mut() else {
                match self.reopen(offset).await {
                    Ok(reopened) => body = Some(reopened),
                    Err(Failure::Unreachable(detail) | Failure::Unavailable(detail))
                        if retry.failed() < attempts as u32 =>
                    {
                        tracing::debug!("downloading {} again from byte {offset} failed: {detail}", self.key);
                        if !retry.wait().await {
                            let error = self
                                .destination
                                .error("downloading", &self.key, Failure::Unreachable(detail));
                            let _ = sender.send(Err(std::io::Error::other(error))).await;
                            return;
                        }
                    }
                    Err(failure) => {
                        let error = self.destination.error("downloading", &self.key, failure);
                        let _ = sender.send(Err(std::io::Error::other(error))).await;
                        return;
                    }
                }
                continue;
            };
            match current.try_next().await {
                Ok(Some(chunk)) => {
                    offset += chunk.len() as u64;
                    if retry.failed() > 0 {
                        retry = resume_policy(attempts);
                    }
                    if sender.send(Ok(chunk)).await.is_err() {
                        return; // the reader is gone
                    }
                }
                Ok(None) => return,
                Err(e) if self.length == Some(offset) => {
                    tracing::debug!("{}: the connection broke after the last byte: {e}", self.key);
                    return;
                }
                Err(e) => {
                    if retry.failed() + 1 >= attempts as u32 {
                        let failures = retry.failed() + 1;
                        let error = DestinationError::Unreachable {
                            location: self.destination.location(),
                            detail: format!(
                                "downloading {} broke off at byte {offset} {failures} times in a row ({e}); try again later",
                                self.key
                            ),
                        };
                        let _ = sender.send(Err(std::io::Error::other(error))).await;
                        return;
                    }
                    tracing::debug!("downloading {} broke off at byte {offset} ({e}); resuming", self.key);
                    body = None;
                    if !retry.wait().await {
                        let error = DestinationError::Unreachable {
                            location: self.destination.location(),
                            detail: format!(
                                "downloading {} broke off at byte {offset} ({e}); try again later",
                                self.key
                            ),
                        };
                        let _ = sender.send(Err(std::io::Error::other(error))).await;
                        return;
                    }
                }
            }
        }
    }

    pub(super) async fn reopen(&self, offset: u64) -> Result<ByteStream, Failure> {
        let output = self
            .destination
            .client
            .get_object()
            .bucket(&self.destination.options.bucket)
            .key(&self.full_key)
            .range(format!("bytes={offset}-"))
            .set_if_match(self.etag.clone())
            .send()
            .await
            .map_err(|e| match classify(&e) {
                Failure::Precondition(_) => Failure::Other(format!(
                    "the object was replaced while it was read (it had ETag {})",
                    self.etag.as_deref().unwrap_or("?")
                )),
                other => other,
            })?;
        Ok(output.body)
    }
}

/// Waits between attempts of one download: doubling from 0.1 s, with jitter.
pub(super) fn resume_policy(attempts: usize) -> Retry {
    Retry::exponential(Duration::from_millis(100), Duration::from_millis(6400), attempts)
}
