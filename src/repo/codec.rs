//! The codec between an engine's plain bytes and the stored bytes: zstd, then — when a key is
//! configured — encryption (`crypt`), and the check of a stored file's size and MD5 while it is
//! read, so nothing is ever held whole in memory.

use md5::Digest as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::ZstdDecoder;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncBufRead, AsyncRead, BufReader, ReadBuf};

use super::damage::damaged;
pub use super::damage::{FileDamaged, damage_in};
use crate::storage::ObjectStream;

/// zstd level of stored files unless `compression-level` says otherwise. Level 1 is the fastest
/// level that keeps zstd's ratio: on sysbench rows it was 2.3 times faster than level 3 and its
/// copies 10 % smaller; on pgbench rows as fast and 10 % larger (docs/benchmarks.md).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// The levels `compression-level` may name.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;
/// The suffix the codec adds to a stored file's name.
pub const SUFFIX: &str = ".zst";
const BUFFER: usize = 256 * 1024;
/// Plain bytes in each zstd frame a stored file is made of.
///
/// Compressing a whole block in one call lets zstd match within contiguous memory, 1.7 times
/// faster than feeding its streaming interface the same bytes (which copies them into a ring
/// and matches across its seam), for the same size (docs/benchmarks.md). Frames are
/// independent, so the block also bounds what each compressor holds.
pub const FRAME: usize = 2 * 1024 * 1024;
/// Frames compressed at once for one file: the next block is read while the last is compressed.
const FRAMES_IN_FLIGHT: usize = 2;

/// Compresses `plain` with zstd as it is read. Frames carry zstd's own content checksum, so
/// damage is also caught by anything that only decompresses.
pub fn compress<R: AsyncRead + Send + Unpin + 'static>(plain: R) -> ObjectStream {
    compress_at(plain, DEFAULT_ZSTD_LEVEL)
}

/// [`compress`] at zstd level `level`: a sequence of zstd frames of [`FRAME`] plain bytes each,
/// compressed on the blocking threads so the async threads keep reading rows meanwhile.
pub fn compress_at<R: AsyncRead + Send + Unpin + 'static>(plain: R, level: i32) -> ObjectStream {
    let blocks = futures::stream::try_unfold(plain, |mut plain| async move {
        let mut block = vec![0u8; FRAME];
        let read = crate::streams::fill(&mut plain, &mut block).await?;
        if read == 0 {
            return Ok(None);
        }
        block.truncate(read);
        Ok(Some((block, plain)))
    });
    compress_blocks(blocks, level)
}

/// [`compress_at`] of plain data its producer already cut into blocks (of about [`FRAME`] bytes:
/// a block is one frame, held whole with its compressed form while it is compressed; a producer
/// ends a block after the row that reaches the size, so one huge row makes one large frame).
/// Saves the copy into a reading buffer.
pub fn compress_blocks<S>(blocks: S, level: i32) -> ObjectStream
where
    S: futures::Stream<Item = io::Result<Vec<u8>>> + Send + 'static,
{
    // Empty input still gets one (empty) frame: a stored file of no bytes would not decompress.
    // The state: the blocks still to read (none once they ended), and whether a frame was made.
    let blocks = futures::stream::unfold((Some(Box::pin(blocks)), false), |(blocks, framed)| async move {
        let mut blocks = blocks?;
        match blocks.next().await {
            Some(block) => Some((block, (Some(blocks), true))),
            None if !framed => Some((Ok(Vec::new()), (None, true))),
            None => None,
        }
    });
    let frames = blocks
        .map_ok(move |block| async move {
            tokio::task::spawn_blocking(move || compress_frame(&block, level))
                .await
                .map_err(io::Error::other)?
        })
        .try_buffered(FRAMES_IN_FLIGHT);
    Box::pin(tokio_util::io::StreamReader::new(frames))
}

thread_local! {
    /// Each blocking thread keeps its compressor: a context's tables cost more to set up than a
    /// fast level takes to compress a block.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// One block as one zstd frame with its content checksum.
fn compress_frame(block: &[u8], level: i32) -> io::Result<bytes::Bytes> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match &mut *cell {
            Some((kept, compressor)) => {
                // Sources of one run may compress at different levels: the context is kept
                // (and its checksum setting), only its level changes.
                if *kept != level {
                    // A parameter change, allowed on a context a failed block left mid-frame
                    // (unlike a dictionary change); the checksum setting stays.
                    compressor.set_parameter(zstd::stream::raw::CParameter::CompressionLevel(level))?;
                    *kept = level;
                }
                compressor
            }
            empty => {
                let mut compressor = zstd::bulk::Compressor::new(level)?;
                compressor.include_checksum(true)?;
                &mut empty.insert((level, compressor)).1
            }
        };
        let compressed = compressor.compress(block).map(bytes::Bytes::from);
        if compressed.is_err() {
            // Whatever state the failure left the context in, the next block starts afresh.
            *cell = None;
        }
        compressed
    })
}

/// Decompresses a zstd stream as it is read.
pub fn decompress<R: AsyncRead + Send + Unpin + 'static>(compressed: R) -> ObjectStream {
    let mut decoder = ZstdDecoder::new(BufReader::with_capacity(BUFFER, compressed));
    decoder.multiple_members(true);
    Box::pin(decoder)
}

/// Decompresses a stored file while checking its size and MD5 against the manifest; `encrypted`:
/// the key it is stored under, when it is encrypted (the data key is bound to it).
///
/// The consumer sees the end of the data only after the whole stored file was read and
/// matched; damage, a short file or bytes after the compressed data end in an error instead.
/// (A zstd decoder stops at the end of its frame without reading further, so the check cannot be
/// left to it.)
pub fn decompress_verified<R: AsyncRead + Send + Unpin + 'static>(
    stored: R,
    name: impl Into<String>,
    md5: &str,
    size: u64,
    encrypted: Option<&str>,
) -> ObjectStream {
    let name = name.into();
    let verified = Verified::new(stored, name.clone(), md5, size);
    // The MD5 is of the stored bytes: checked before decryption, so `verify` needs no key.
    let compressed: ObjectStream = match encrypted {
        Some(context) => Box::pin(super::crypt::Decrypting::new(verified, name.clone(), context)),
        None => Box::pin(verified),
    };
    let mut decoder = ZstdDecoder::new(BufReader::with_capacity(BUFFER, compressed));
    decoder.multiple_members(true);
    Box::pin(DrainAtEnd {
        decoder,
        name,
        finished: false,
    })
}

struct DrainAtEnd {
    decoder: ZstdDecoder<BufReader<ObjectStream>>,
    name: String,
    finished: bool,
}

impl AsyncRead for DrainAtEnd {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.finished {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.decoder).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before => {}
            // Bytes that could not be fetched are not damage: pass the destination's error on.
            Poll::Ready(Err(e)) if crate::storage::carries_destination_error(&e) => return Poll::Ready(Err(e)),
            Poll::Ready(Err(e)) if damage_in(&e).is_some() => return Poll::Ready(Err(e)),
            Poll::Ready(Err(e)) if super::crypt::key_unavailable_in(&e).is_some() => return Poll::Ready(Err(e)),
            Poll::Ready(Err(e)) => {
                return Poll::Ready(Err(damaged(&this.name, format!("it does not decompress ({e})"))));
            }
            other => return other,
        }
        // The decoder is done: read what is left of the stored file so Verified checks it all.
        let mut trailing = 0u64;
        loop {
            let input = this.decoder.get_mut();
            let available = match Pin::new(&mut *input).poll_fill_buf(cx) {
                Poll::Ready(Ok(bytes)) => bytes.len(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if available == 0 {
                break;
            }
            trailing += available as u64;
            Pin::new(&mut *input).consume(available);
        }
        if trailing > 0 {
            return Poll::Ready(Err(damaged(
                &this.name,
                format!("{trailing} bytes follow the compressed data"),
            )));
        }
        this.finished = true;
        Poll::Ready(Ok(()))
    }
}

/// A reader that fails at the end of the stream, instead of ending, when the bytes read do not
/// have the expected size and MD5. Whoever consumes it never sees a clean end of bad data.
pub struct Verified<R> {
    inner: R,
    name: String,
    expected_md5: String,
    expected_size: u64,
    size: u64,
    hasher: Option<md5::Md5>,
}

impl<R> Verified<R> {
    /// `name` is what the error calls the file.
    pub fn new(inner: R, name: impl Into<String>, expected_md5: &str, expected_size: u64) -> Self {
        Verified {
            inner,
            name: name.into(),
            expected_md5: expected_md5.to_string(),
            expected_size,
            size: 0,
            hasher: Some(md5::Md5::new()),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Verified<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let read = buf.filled().len() - before;
        if read > 0 {
            let this = &mut *self;
            this.size += read as u64;
            if let Some(hasher) = this.hasher.as_mut() {
                hasher.update(&buf.filled()[before..]);
            }
            return Poll::Ready(Ok(()));
        }
        let Some(hasher) = self.hasher.take() else {
            return Poll::Ready(Ok(()));
        };
        let actual = format!("{:x}", hasher.finalize());
        if actual != self.expected_md5 || self.size != self.expected_size {
            return Poll::Ready(Err(damaged(
                &self.name,
                format!(
                    "the manifest records {} bytes with MD5 {}, the stored file has {} bytes with MD5 {}",
                    self.expected_size, self.expected_md5, self.size, actual
                ),
            )));
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::{Counters, Counting};
    use tokio::io::AsyncReadExt;

    #[test]
    fn one_thread_compresses_at_each_level_it_is_asked_for_with_checksums() {
        let block: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{}\trow\n", i % 997).into_bytes())
            .collect();
        let sizes: Vec<usize> = [1, 19, 1]
            .into_iter()
            .map(|level| {
                let frame = compress_frame(&block, level).unwrap();
                // Frame header descriptor, bit 2: the frame ends with its content checksum.
                assert_ne!(frame[4] & 0x04, 0, "level {level}: no content checksum");
                assert_eq!(zstd::bulk::decompress(&frame, block.len()).unwrap(), block);
                frame.len()
            })
            .collect();
        assert!(sizes[1] < sizes[0], "level 19 was not used: {sizes:?}");
        assert_eq!(sizes[2], sizes[0], "level 1 again: {sizes:?}");
    }

    #[tokio::test]
    async fn compress_then_decompress_round_trips_and_counts() {
        let data: Vec<u8> = (0..500_000u32).flat_map(|i| format!("{i}\tv\n").into_bytes()).collect();
        let counters = Counters::default();
        let mut compressed = Vec::new();
        compress(Counting::new(std::io::Cursor::new(data.clone()), counters.clone()))
            .read_to_end(&mut compressed)
            .await
            .unwrap();
        assert_eq!(counters.newlines(), 500_000);
        assert_eq!(counters.bytes(), data.len() as u64);
        assert!(compressed.len() < data.len() / 3);
        let mut back = Vec::new();
        decompress(std::io::Cursor::new(compressed))
            .read_to_end(&mut back)
            .await
            .unwrap();
        assert_eq!(back, data);
    }

    #[tokio::test]
    async fn empty_and_multi_frame_files_round_trip() {
        for len in [0, 1, FRAME - 1, FRAME, FRAME + 1, 2 * FRAME + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut compressed = Vec::new();
            compress(std::io::Cursor::new(data.clone()))
                .read_to_end(&mut compressed)
                .await
                .unwrap();
            assert!(!compressed.is_empty(), "{len} bytes: at least one frame");
            let md5 = crate::storage::md5_hex(&compressed);
            let mut back = Vec::new();
            decompress_verified(
                std::io::Cursor::new(compressed.clone()),
                "f",
                &md5,
                compressed.len() as u64,
                None,
            )
            .read_to_end(&mut back)
            .await
            .unwrap();
            assert!(back == data, "{len} bytes round trip");
        }
        // Blocks a producer cut: each its own frame, and no blocks still make one frame.
        for blocks in [vec![], vec![b"a\n".to_vec(), b"b\n".to_vec(), vec![b'c'; FRAME]]] {
            let data = blocks.concat();
            let stream = futures::stream::iter(blocks.into_iter().map(Ok));
            let mut compressed = Vec::new();
            compress_blocks(stream, DEFAULT_ZSTD_LEVEL)
                .read_to_end(&mut compressed)
                .await
                .unwrap();
            let mut back = Vec::new();
            decompress(std::io::Cursor::new(compressed))
                .read_to_end(&mut back)
                .await
                .unwrap();
            assert!(back == data, "{} bytes of blocks round trip", data.len());
        }
    }

    #[tokio::test]
    async fn verified_readers_fail_at_the_end_of_bad_data() {
        let data = b"some stored bytes".to_vec();
        let md5 = crate::storage::md5_hex(&data);
        let mut out = Vec::new();
        Verified::new(std::io::Cursor::new(data.clone()), "f", &md5, data.len() as u64)
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, data);
        let mut damaged = data.clone();
        damaged[3] ^= 1;
        // Through the decompressor too: a frame's end must not stop the check.
        let mut compressed = Vec::new();
        compress(std::io::Cursor::new(vec![b'x'; 100_000]))
            .read_to_end(&mut compressed)
            .await
            .unwrap();
        let good_md5 = crate::storage::md5_hex(&compressed);
        let mut tail_damaged = compressed.clone();
        tail_damaged.push(0);
        let err = decompress_verified(
            std::io::Cursor::new(tail_damaged),
            "t",
            &good_md5,
            compressed.len() as u64,
            None,
        )
        .read_to_end(&mut Vec::new())
        .await
        .unwrap_err();
        assert!(err.to_string().contains("t is damaged"), "{err}");
        let mut whole = Vec::new();
        decompress_verified(
            std::io::Cursor::new(compressed.clone()),
            "t",
            &good_md5,
            compressed.len() as u64,
            None,
        )
        .read_to_end(&mut whole)
        .await
        .unwrap();
        assert_eq!(whole, vec![b'x'; 100_000]);
        let mut middle_damaged = compressed.clone();
        let middle = middle_damaged.len() / 2;
        middle_damaged[middle] ^= 0x10;
        let err = decompress_verified(
            std::io::Cursor::new(middle_damaged),
            "t",
            &good_md5,
            compressed.len() as u64,
            None,
        )
        .read_to_end(&mut Vec::new())
        .await
        .unwrap_err();
        assert!(err.to_string().contains("t is damaged"), "{err}");
        let err = Verified::new(
            std::io::Cursor::new(damaged),
            "copies/x/data/t.0.zst",
            &md5,
            data.len() as u64,
        )
        .read_to_end(&mut Vec::new())
        .await
        .unwrap_err();
        assert!(err.to_string().contains("copies/x/data/t.0.zst is damaged"), "{err}");
        let err = Verified::new(std::io::Cursor::new(data[..5].to_vec()), "f", &md5, data.len() as u64)
            .read_to_end(&mut Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("5 bytes"), "{err}");
    }
}
