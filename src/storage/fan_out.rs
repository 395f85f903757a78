//! One stream written to several destinations at once: a copy read from the database once and
//! stored in each place a source names. Each destination reads its own bounded channel, so the
//! slowest sets the pace and memory stays bounded; one that fails is set aside with its error
//! and the others go on; a stream that fails, or a writer dropped part way, ends every upload
//! with an error rather than a short file.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

use super::{
    Access, Destination, DestinationError, ObjectMeta, ObjectStream, PutCondition, PutOutcome, VersionedObject,
};

/// How many chunks may wait for one destination.
const QUEUED: usize = 4;
const CHUNK: usize = 256 * 1024;

/// Destinations written together; see the module's documentation.
#[derive(Debug)]
pub struct FanOut {
    destinations: Vec<Arc<dyn Destination>>,
    /// The first error of each destination that failed, by index.
    failed: Mutex<Vec<Option<DestinationError>>>,
}

impl FanOut {
    pub fn new(destinations: Vec<Arc<dyn Destination>>) -> Self {
        let failed = Mutex::new(destinations.iter().map(|_| None).collect());
        FanOut { destinations, failed }
    }

    /// The destinations still healthy, with their index.
    fn live(&self) -> Vec<(usize, Arc<dyn Destination>)> {
        let failed = self.failed.lock().expect("fan-out lock poisoned");
        self.destinations
            .iter()
            .enumerate()
            .filter(|(i, _)| failed[*i].is_none())
            .map(|(i, d)| (i, d.clone()))
            .collect()
    }

    fn fail(&self, index: usize, error: DestinationError) {
        let mut failed = self.failed.lock().expect("fan-out lock poisoned");
        if failed[index].is_none() {
            tracing::warn!(
                "{}: {error}; the other destinations go on",
                self.destinations[index].location()
            );
            failed[index] = Some(error);
        }
    }

    /// Takes the error of destination `index`, if it failed.
    pub fn take_failure(&self, index: usize) -> Option<DestinationError> {
        self.failed.lock().expect("fan-out lock poisoned")[index].take()
    }

    /// Whether destination `index` failed.
    pub fn has_failed(&self, index: usize) -> bool {
        self.failed.lock().expect("fan-out lock poisoned")[index].is_some()
    }

    fn none_left(&self, key: &str) -> DestinationError {
        DestinationError::Request {
            operation: "writing",
            location: self.location(),
            key: key.to_string(),
            detail: "every destination failed".into(),
        }
    }
}

/// A message of the channel one destination's upload reads.
enum Piece {
    Data(Bytes),
    End,
    Failed(String),
}

/// The upload's side of a channel: bytes until `End`; a channel closed without it (the writer
/// was dropped) or a `Failed` is an error, never a clean end.
struct ChannelReader {
    receiver: mpsc::Receiver<Piece>,
    current: Bytes,
    ended: bool,
}

impl AsyncRead for ChannelReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.remaining());
                buf.put_slice(&self.current.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match self.receiver.poll_recv(cx) {
                Poll::Ready(Some(Piece::Data(bytes))) => self.current = bytes,
                Poll::Ready(Some(Piece::End)) => self.ended = true,
                Poll::Ready(Some(Piece::Failed(why))) => return Poll::Ready(Err(io::Error::other(why))),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::other("the copy stopped before the file's end")));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[async_trait]
impl Destination for FanOut {
    fn location(&self) -> String {
        self.destinations
            .iter()
            .map(|d| d.location())
            .collect::<Vec<_>>()
            .join(" and ")
    }

    async fn check(&self, access: Access) -> Result<(), DestinationError> {
        for (i, destination) in self.live() {
            if let Err(e) = destination.check(access).await {
                self.fail(i, e);
            }
        }
        match self.live().is_empty() {
            true => Err(self.none_left("")),
            false => Ok(()),
        }
    }

    async fn put(&self, key: &str, mut body: ObjectStream) -> Result<PutOutcome, DestinationError> {
        let mut senders = Vec::new();
        let mut uploads = Vec::new();
        for (i, destination) in self.live() {
            let (sender, receiver) = mpsc::channel(QUEUED);
            let reader = ChannelReader {
                receiver,
                current: Bytes::new(),
                ended: false,
            };
            let key = key.to_string();
            uploads.push((
                i,
                tokio::spawn(async move { destination.put(&key, Box::pin(reader)).await }),
            ));
            senders.push((i, sender));
        }
        let mut buffer = vec![0u8; CHUNK];
        let read_error = loop {
            let n = match body.read(&mut buffer).await {
                Ok(0) => break None,
                Ok(n) => n,
                Err(e) => break Some(e),
            };
            let chunk = Bytes::copy_from_slice(&buffer[..n]);
            let mut open = Vec::new();
            for (i, sender) in senders {
                // A closed channel: that upload ended early, with the error it returns.
                if sender.send(Piece::Data(chunk.clone())).await.is_ok() {
                    open.push((i, sender));
                }
            }
            senders = open;
            if senders.is_empty() {
                break None;
            }
        };
        for (_, sender) in &senders {
            let last = match &read_error {
                None => Piece::End,
                Some(e) => Piece::Failed(e.to_string()),
            };
            let _ = sender.send(last).await;
        }
        drop(senders);
        let mut outcome = None;
        for (i, upload) in uploads {
            match upload.await {
                Ok(Ok(put)) => outcome = outcome.or(Some(put)),
                Ok(Err(e)) => {
                    if read_error.is_none() {
                        self.fail(i, e);
                    }
                }
                Err(e) => self.fail(
                    i,
                    DestinationError::Request {
                        operation: "writing",
                        location: self.destinations[i].location(),
                        key: key.to_string(),
                        detail: format!("the upload task ended: {e}"),
                    },
                ),
            }
        }
        if let Some(e) = read_error {
            return Err(DestinationError::Body {
                key: key.to_string(),
                source: e,
            });
        }
        outcome.ok_or_else(|| self.none_left(key))
    }

    async fn put_if(&self, key: &str, data: Bytes, condition: PutCondition) -> Result<PutOutcome, DestinationError> {
        let mut outcome = None;
        for (i, destination) in self.live() {
            match destination.put_if(key, data.clone(), condition.clone()).await {
                Ok(put) => outcome = outcome.or(Some(put)),
                Err(e) => self.fail(i, e),
            }
        }
        outcome.ok_or_else(|| self.none_left(key))
    }

    // Reading is from the first healthy destination: a copy's files are the same in each.
    async fn get(&self, key: &str) -> Result<ObjectStream, DestinationError> {
        self.first(key)?.get(key).await
    }

    async fn get_versioned(&self, key: &str, limit: u64) -> Result<Option<VersionedObject>, DestinationError> {
        self.first(key)?.get_versioned(key, limit).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, DestinationError> {
        self.first(key)?.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, DestinationError> {
        self.first(prefix)?.list(prefix).await
    }

    async fn folders(&self, prefix: &str) -> Result<Vec<String>, DestinationError> {
        self.first(prefix)?.folders(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), DestinationError> {
        for (i, destination) in self.live() {
            if let Err(e) = destination.delete(key).await {
                self.fail(i, e);
            }
        }
        Ok(())
    }

    async fn settle(&self) {
        for destination in &self.destinations {
            destination.settle().await;
        }
    }
}

impl FanOut {
    fn first(&self, key: &str) -> Result<Arc<dyn Destination>, DestinationError> {
        self.live()
            .into_iter()
            .next()
            .map(|(_, d)| d)
            .ok_or_else(|| self.none_left(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalDestination;

    #[tokio::test]
    async fn one_stream_lands_whole_in_each_destination_and_a_failing_one_is_set_aside() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let fan = FanOut::new(vec![
            Arc::new(LocalDestination::new(a.path())),
            Arc::new(LocalDestination::new(b.path())),
        ]);
        let data: Vec<u8> = (0..3 * CHUNK + 11).map(|i| (i % 251) as u8).collect();
        let put = fan
            .put("x/file", Box::pin(std::io::Cursor::new(data.clone())))
            .await
            .unwrap();
        assert_eq!(put.size, data.len() as u64);
        for dir in [&a, &b] {
            assert_eq!(std::fs::read(dir.path().join("x/file")).unwrap(), data);
        }
        // A stream that fails part way leaves no file anywhere and says why.
        struct Failing(usize);
        impl AsyncRead for Failing {
            fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                if self.0 == 0 {
                    return Poll::Ready(Err(io::Error::other("the database went away")));
                }
                self.0 -= 1;
                buf.put_slice(&[7u8; 1000]);
                Poll::Ready(Ok(()))
            }
        }
        let e = fan.put("x/cut", Box::pin(Failing(300))).await.unwrap_err();
        assert!(e.to_string().contains("the database went away"), "{e}");
        for dir in [&a, &b] {
            assert!(!dir.path().join("x/cut").exists(), "a short file was left");
        }
        // A destination that cannot write is set aside; the other still gets the file.
        std::fs::remove_dir_all(b.path()).unwrap();
        std::fs::write(b.path(), b"not a folder").unwrap();
        fan.put("y/file", Box::pin(std::io::Cursor::new(data.clone())))
            .await
            .unwrap();
        assert_eq!(std::fs::read(a.path().join("y/file")).unwrap(), data);
        assert!(fan.has_failed(1) && !fan.has_failed(0));
    }
}
