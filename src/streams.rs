//! Byte-stream helpers every layer uses: reading into a whole buffer, counting what passes, and
//! batching a stream of small messages into block reads.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// An order-independent digest of the rows of a text format that ends each row with a newline:
/// the wrapping sum of each row's 128-bit XXH3. The same rows in any order, in any number of
/// files, give the same digest (sums add up), and a row changed, missing or added changes it.
#[derive(Default)]
pub struct RowDigest {
    sum: u128,
    /// The row that the last piece of data ended inside.
    partial: Option<twox_hash::XxHash3_128>,
}

impl std::fmt::Debug for RowDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RowDigest({})", self.hex())
    }
}

impl RowDigest {
    /// Adds the rows ending in `data`; a row that continues in the next piece is kept open.
    /// Returns how many rows ended in `data`.
    pub fn update(&mut self, data: &[u8]) -> u64 {
        let mut start = 0;
        let mut rows = 0;
        // memchr finds the newlines with vector instructions: a byte-at-a-time search cost more
        // than the hashing (docs/benchmarks.md).
        for end in memchr::memchr_iter(b'\n', data) {
            let row = &data[start..=end];
            // Most rows lie within one piece and are hashed without keeping any state.
            let hash = match self.partial.take() {
                Some(mut open) => {
                    open.write(row);
                    open.finish_128()
                }
                None => twox_hash::XxHash3_128::oneshot(row),
            };
            self.sum = self.sum.wrapping_add(hash);
            rows += 1;
            start = end + 1;
        }
        if start < data.len() {
            self.partial
                .get_or_insert_with(twox_hash::XxHash3_128::new)
                .write(&data[start..]);
        }
        rows
    }

    /// Adds another digest's rows (of another file of the same table).
    pub fn add(&mut self, other: u128) {
        self.sum = self.sum.wrapping_add(other);
    }

    pub fn value(&self) -> u128 {
        self.sum
    }

    /// The digest as 32 hexadecimal digits, as manifests record it.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// Counts bytes and newline characters flowing through a reader, and digests the rows.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    bytes: Arc<AtomicU64>,
    newlines: Arc<AtomicU64>,
    digest: Arc<std::sync::Mutex<RowDigest>>,
}

impl Counters {
    /// Counts and digests `data`, the next piece of the stream.
    pub fn observe(&self, data: &[u8]) {
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        let lines = self
            .digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .update(data);
        self.newlines.fetch_add(lines, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The [`RowDigest`] of the rows that passed, as hexadecimal digits.
    pub fn row_digest(&self) -> String {
        self.digest.lock().map(|d| d.hex()).unwrap_or_default()
    }

    /// Rows of a text format that ends each row with a newline and escapes embedded ones
    /// (PostgreSQL COPY text, MySQL LOAD DATA).
    pub fn newlines(&self) -> u64 {
        self.newlines.load(Ordering::Relaxed)
    }
}

/// A reader that updates [`Counters`] as data passes.
pub struct Counting<R> {
    inner: R,
    counters: Counters,
}

impl<R> Counting<R> {
    pub fn new(inner: R, counters: Counters) -> Self {
        Counting { inner, counters }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            self.counters.observe(&buf.filled()[before..]);
        }
        polled
    }
}

/// Reads until `buffer` is full or the stream ends; returns how much was read (0 at the end).
///
/// Decompressors and compressors hand out small pieces; passing each on as its own write or
/// protocol message costs a system call or a message each.
///
/// # Errors
/// The reader's error.
pub async fn fill<R: AsyncRead + Unpin + ?Sized>(reader: &mut R, buffer: &mut [u8]) -> io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let mut filled = 0;
    while filled < buffer.len() {
        let n = reader.read(&mut buffer[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Turns a stream of small byte messages (one per row, as COPY sends them) into reads of up to
/// the caller's buffer size, taking every message that is already there, so the layers above
/// work per block instead of per row.
pub struct Batched<S> {
    stream: S,
    pending: bytes::Bytes,
    done: bool,
    /// An error that arrived after this read had data; returned by the next read.
    error: Option<io::Error>,
}

impl<S> Batched<S> {
    pub fn new(stream: S) -> Self {
        Batched {
            stream,
            pending: bytes::Bytes::new(),
            done: false,
            error: None,
        }
    }
}

impl<S> AsyncRead for Batched<S>
where
    S: futures::Stream<Item = io::Result<bytes::Bytes>> + Unpin,
{
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let start = buf.filled().len();
        if let Some(error) = self.error.take() {
            return Poll::Ready(Err(error));
        }
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
            }
            if self.done {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.stream).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => self.pending = bytes,
                Poll::Ready(Some(Err(e))) if buf.filled().len() > start => {
                    self.error = Some(e);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => self.done = true,
                Poll::Pending if buf.filled().len() > start => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn batched_reads_join_small_messages_in_order() {
        let messages: Vec<io::Result<bytes::Bytes>> = (0..10_000u32)
            .map(|i| Ok(bytes::Bytes::from(format!("{i}\n"))))
            .collect();
        let expected: Vec<u8> = (0..10_000u32).flat_map(|i| format!("{i}\n").into_bytes()).collect();
        let mut reader = Batched::new(futures::stream::iter(messages));
        let mut first = vec![0u8; 4096];
        let n = reader.read(&mut first).await.unwrap();
        assert_eq!(n, 4096, "ready messages fill the whole buffer");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!([&first[..n], &rest[..]].concat(), expected);
        let failing = futures::stream::iter(vec![Ok(bytes::Bytes::from("a")), Err(io::Error::other("lost"))]);
        assert!(Batched::new(failing).read_to_end(&mut Vec::new()).await.is_err());
    }
}

#[cfg(test)]
mod digest_tests {
    use super::RowDigest;

    fn digest(pieces: &[&[u8]]) -> u128 {
        let mut digest = RowDigest::default();
        for piece in pieces {
            digest.update(piece);
        }
        digest.value()
    }

    #[test]
    fn rows_digest_the_same_however_split_or_ordered_and_any_change_shows() {
        let whole = digest(&[b"1\ta\n2\tb\n3\tc\n"]);
        assert_eq!(digest(&[b"1\t", b"a\n2\tb", b"\n3\tc\n"]), whole, "split inside rows");
        assert_eq!(digest(&[b"3\tc\n1\ta\n", b"2\tb\n"]), whole, "another order, two files");
        let mut added = RowDigest::default();
        added.update(b"1\ta\n2\tb\n");
        let mut other = RowDigest::default();
        other.update(b"3\tc\n");
        added.add(other.value());
        assert_eq!(added.value(), whole, "per-file digests add up");
        assert_ne!(digest(&[b"1\ta\n2\tB\n3\tc\n"]), whole, "a changed value");
        assert_ne!(digest(&[b"1\ta\n2\tb\n"]), whole, "a missing row");
        assert_ne!(digest(&[b"1\ta\n2\tb\n3\tc\n3\tc\n"]), whole, "a duplicated row");
    }
}
