//! Client-side encryption of stored files: keys, and the streaming format.
//!
//! Each file gets a random 256-bit data key, wrapped (XChaCha20-Poly1305) by the configured
//! master key, whose id the header names; the compressed bytes are then sealed with the data key
//! in 64 KiB chunks by the STREAM construction (XChaCha20-Poly1305, big-endian 32-bit counter and
//! a last-chunk flag, from RustCrypto's audited `chacha20poly1305`), so memory stays bounded, a
//! chunk changed, dropped, reordered or cut off at the end fails authentication, and nothing is
//! handed on from a chunk that did not authenticate.
//!
//! Layout: `cairnE01`, the key id's length (one byte) and the key id, the wrapping nonce (24
//! bytes), the wrapped data key (48 bytes), the stream nonce (19 bytes), then the chunks (each
//! its ciphertext and a 16-byte tag; the last may be shorter, and is there even when empty).
//!
//! The keys a process may read with are installed once, when its configuration is read
//! ([`install_reading_keys`]); a copy names the key it needs, so old keys keep reading old
//! copies after a rotation.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{OnceLock, RwLock};
use std::task::{Context, Poll};

use base64::Engine as _;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload, rand_core::RngCore};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Digest as _;
use tokio::io::{AsyncRead, ReadBuf};

/// The suffix of an encrypted stored file's name (after the compression's).
pub const SUFFIX: &str = ".enc";
const MAGIC: &[u8; 8] = b"cairnE01";
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const WRAP_NONCE: usize = 24;
const WRAPPED_KEY: usize = 32 + TAG;
const STREAM_NONCE: usize = 19;
/// How a key file starts.
const KEY_PREFIX: &str = "cairn-key-1:";

/// A master key and its id (a digest of it, safe to record and print).
#[derive(Clone)]
pub struct Key {
    id: String,
    bytes: [u8; 32],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// A key that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: not a cairn key ({why}); `cairn key generate FILE` writes one")]
pub struct KeyError {
    pub origin: String,
    pub why: String,
}

impl Key {
    /// A new random key.
    pub fn generate() -> Key {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Key::from_bytes(bytes)
    }

    fn from_bytes(bytes: [u8; 32]) -> Key {
        let digest = sha2::Sha256::new()
            .chain_update(b"cairn key id\0")
            .chain_update(bytes)
            .finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Key { id, bytes }
    }

    /// Reads a key as a key file holds it; `origin` names where it came from, for errors.
    ///
    /// # Errors
    /// Text that is not `cairn-key-1:` and the base64 of 32 bytes.
    pub fn parse(text: &str, origin: &str) -> Result<Key, KeyError> {
        let error = |why: &str| KeyError {
            origin: origin.to_string(),
            why: why.to_string(),
        };
        let encoded = text
            .trim()
            .strip_prefix(KEY_PREFIX)
            .ok_or_else(|| error("it does not start with cairn-key-1:"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| error("what follows cairn-key-1: is not base64"))?;
        let bytes: [u8; 32] = decoded.try_into().map_err(|_| error("it does not hold 32 bytes"))?;
        Ok(Key::from_bytes(bytes))
    }

    /// The key as a key file holds it.
    pub fn to_file_text(&self) -> String {
        format!(
            "{KEY_PREFIX}{}\n",
            base64::engine::general_purpose::STANDARD.encode(self.bytes)
        )
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

fn reading_keys() -> &'static RwLock<BTreeMap<String, Key>> {
    static KEYS: OnceLock<RwLock<BTreeMap<String, Key>>> = OnceLock::new();
    KEYS.get_or_init(|| RwLock::new(BTreeMap::new()))
}

/// Makes `keys` available for reading encrypted files, by id.
pub fn install_reading_keys(keys: impl IntoIterator<Item = Key>) {
    let mut installed = reading_keys().write().expect("key lock poisoned");
    for key in keys {
        installed.insert(key.id.clone(), key);
    }
}

/// The reading key with this id, if one is installed.
pub fn reading_key(id: &str) -> Option<Key> {
    reading_keys().read().expect("key lock poisoned").get(id).cloned()
}

/// A file that needs a key this process does not have.
#[derive(Debug, thiserror::Error)]
#[error("{name} is encrypted with key {key_id}, which is not configured")]
pub struct KeyUnavailable {
    pub name: String,
    pub key_id: String,
}

/// The missing key an error reports, found anywhere in its chain of causes.
pub fn key_unavailable_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a KeyUnavailable> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(missing) = error.downcast_ref::<KeyUnavailable>() {
            return Some(missing);
        }
        if let Some(inner) = error.downcast_ref::<io::Error>().and_then(|io| io.get_ref())
            && let Some(missing) = key_unavailable_in(inner)
        {
            return Some(missing);
        }
        next = error.source();
    }
    None
}

/// Encrypts `plain` with a new data key wrapped by `key`, as it is read.
pub struct Encrypting<R> {
    inner: R,
    encryptor: Option<EncryptorBE32<XChaCha20Poly1305>>,
    plain: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    inner_done: bool,
}

impl<R> Encrypting<R> {
    /// `context` is where the file is stored (its key): the data key is bound to it, so a file
    /// put in another's place does not decrypt.
    pub fn new(inner: R, key: &Key, context: &str) -> Self {
        let mut data_key = [0u8; 32];
        OsRng.fill_bytes(&mut data_key);
        let wrap_nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = Vec::with_capacity(CHUNK + TAG + 128);
        out.extend_from_slice(MAGIC);
        out.push(key.id.len() as u8);
        out.extend_from_slice(key.id.as_bytes());
        let mut aad = out.clone();
        aad.extend_from_slice(context.as_bytes());
        let wrapped = XChaCha20Poly1305::new(&key.bytes.into())
            .encrypt(
                &wrap_nonce,
                Payload {
                    msg: &data_key,
                    aad: &aad,
                },
            )
            .expect("encrypting 32 bytes cannot fail");
        let mut stream_nonce = [0u8; STREAM_NONCE];
        OsRng.fill_bytes(&mut stream_nonce);
        out.extend_from_slice(&wrap_nonce);
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&stream_nonce);
        let cipher = XChaCha20Poly1305::new(&data_key.into());
        Encrypting {
            inner,
            encryptor: Some(EncryptorBE32::from_aead(cipher, stream_nonce.as_ref().into())),
            plain: Vec::with_capacity(CHUNK + 1),
            out,
            sent: 0,
            inner_done: false,
        }
    }
}

/// Reads from `inner` into `buffer` until it holds `want` bytes or `inner` ends; `Ready(true)`
/// at the end of `inner`.
fn fill<R: AsyncRead + Unpin>(
    inner: &mut R,
    buffer: &mut Vec<u8>,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<bool>> {
    while buffer.len() < want {
        let had = buffer.len();
        buffer.resize(want, 0);
        let mut read = ReadBuf::new(&mut buffer[had..]);
        let polled = Pin::new(&mut *inner).poll_read(cx, &mut read);
        let got = read.filled().len();
        buffer.truncate(had + got);
        match polled {
            Poll::Ready(Ok(())) if got == 0 => return Poll::Ready(Ok(true)),
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Ready(Ok(false))
}

/// Hands out what `out` holds past `sent`; `true` when it gave something.
fn give(out: &mut Vec<u8>, sent: &mut usize, buf: &mut ReadBuf<'_>) -> bool {
    if *sent >= out.len() {
        return false;
    }
    let n = (out.len() - *sent).min(buf.remaining());
    buf.put_slice(&out[*sent..*sent + n]);
    *sent += n;
    if *sent == out.len() {
        out.clear();
        *sent = 0;
    }
    true
}

impl<R: AsyncRead + Unpin> AsyncRead for Encrypting<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if give(&mut this.out, &mut this.sent, buf) {
                return Poll::Ready(Ok(()));
            }
            if this.encryptor.is_none() {
                return Poll::Ready(Ok(()));
            }
            // One byte past a chunk tells that it is not the last.
            if !this.inner_done {
                match fill(&mut this.inner, &mut this.plain, CHUNK + 1, cx) {
                    Poll::Ready(Ok(end)) => this.inner_done = end,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let sealed = if this.plain.len() > CHUNK {
                let rest = this.plain.split_off(CHUNK);
                let chunk = std::mem::replace(&mut this.plain, rest);
                this.encryptor
                    .as_mut()
                    .expect("checked above")
                    .encrypt_next(chunk.as_slice())
            } else {
                let chunk = std::mem::take(&mut this.plain);
                this.encryptor
                    .take()
                    .expect("checked above")
                    .encrypt_last(chunk.as_slice())
            };
            this.out = sealed.map_err(|_| io::Error::other("encryption failed"))?;
            this.sent = 0;
        }
    }
}

/// Decrypts a stream [`Encrypting`] wrote, with the installed key its header names; hands on
/// each chunk only once it authenticated.
pub struct Decrypting<R> {
    inner: R,
    name: String,
    /// Where the file is stored: the data key was bound to it.
    context: String,
    /// A chunk failed: every later read fails too.
    failed: bool,
    header: Vec<u8>,
    decryptor: Option<DecryptorBE32<XChaCha20Poly1305>>,
    sealed: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    finished: bool,
}

impl<R> Decrypting<R> {
    /// `name` is what errors call the file; `context` is where it is stored, as
    /// [`Encrypting::new`] was given it.
    pub fn new(inner: R, name: impl Into<String>, context: impl Into<String>) -> Self {
        Decrypting {
            inner,
            name: name.into(),
            context: context.into(),
            failed: false,
            header: Vec::new(),
            decryptor: None,
            sealed: Vec::with_capacity(CHUNK + TAG + 1),
            out: Vec::new(),
            sent: 0,
            finished: false,
        }
    }

    fn damaged(&self, reason: &str) -> io::Error {
        super::damage::damaged(&self.name, reason.to_string())
    }

    /// The data key's decryptor, from a whole header.
    fn open(&self) -> io::Result<DecryptorBE32<XChaCha20Poly1305>> {
        let id_len = self.header[MAGIC.len()] as usize;
        let id_end = MAGIC.len() + 1 + id_len;
        let key_id = String::from_utf8_lossy(&self.header[MAGIC.len() + 1..id_end]).into_owned();
        let Some(key) = reading_key(&key_id) else {
            return Err(io::Error::other(KeyUnavailable {
                name: self.name.clone(),
                key_id,
            }));
        };
        let nonce = XNonce::from_slice(&self.header[id_end..id_end + WRAP_NONCE]);
        let wrapped = &self.header[id_end + WRAP_NONCE..id_end + WRAP_NONCE + WRAPPED_KEY];
        let data_key = XChaCha20Poly1305::new(&key.bytes.into())
            .decrypt(
                nonce,
                Payload {
                    msg: wrapped,
                    aad: &[&self.header[..id_end], self.context.as_bytes()].concat(),
                },
            )
            .map_err(|_| {
                self.damaged(
                    "its data key does not decrypt with the key its header names (a file moved from another place, \
                     or changed)",
                )
            })?;
        let data_key: [u8; 32] = data_key
            .try_into()
            .map_err(|_| self.damaged("its data key has the wrong length"))?;
        let stream_nonce = &self.header[id_end + WRAP_NONCE + WRAPPED_KEY..];
        Ok(DecryptorBE32::from_aead(
            XChaCha20Poly1305::new(&data_key.into()),
            stream_nonce.into(),
        ))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Decrypting<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let polled = self.as_mut().poll_open(cx, buf);
        if matches!(polled, Poll::Ready(Err(_))) {
            self.failed = true;
        }
        polled
    }
}

impl<R: AsyncRead + Unpin> Decrypting<R> {
    fn poll_open(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(Err(this.damaged("it failed to decrypt earlier")));
        }
        loop {
            if give(&mut this.out, &mut this.sent, buf) {
                return Poll::Ready(Ok(()));
            }
            if this.finished {
                return Poll::Ready(Ok(()));
            }
            if this.decryptor.is_none() {
                // The header: its fixed start, then the key id's length says the rest.
                let want = match this.header.len() > MAGIC.len() {
                    false => MAGIC.len() + 1,
                    true => {
                        MAGIC.len() + 1 + this.header[MAGIC.len()] as usize + WRAP_NONCE + WRAPPED_KEY + STREAM_NONCE
                    }
                };
                match fill(&mut this.inner, &mut this.header, want, cx) {
                    Poll::Ready(Ok(true)) => return Poll::Ready(Err(this.damaged("it ends inside its header"))),
                    Poll::Ready(Ok(false)) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                if this.header.len() == MAGIC.len() + 1 {
                    if &this.header[..MAGIC.len()] != MAGIC {
                        return Poll::Ready(Err(this.damaged("it is not a cairn encrypted file")));
                    }
                    continue;
                }
                this.decryptor = Some(this.open()?);
                continue;
            }
            let end = match fill(&mut this.inner, &mut this.sealed, CHUNK + TAG + 1, cx) {
                Poll::Ready(Ok(end)) => end,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let opened = if this.sealed.len() > CHUNK + TAG {
                let rest = this.sealed.split_off(CHUNK + TAG);
                let chunk = std::mem::replace(&mut this.sealed, rest);
                this.decryptor
                    .as_mut()
                    .expect("opened above")
                    .decrypt_next(chunk.as_slice())
            } else {
                debug_assert!(end);
                this.finished = true;
                let chunk = std::mem::take(&mut this.sealed);
                this.decryptor
                    .take()
                    .expect("opened above")
                    .decrypt_last(chunk.as_slice())
            };
            this.out = opened.map_err(|_| {
                this.damaged("it does not decrypt: a chunk fails authentication (changed, cut short or reordered)")
            })?;
            this.sent = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    async fn sealed(plain: &[u8], key: &Key) -> Vec<u8> {
        let mut out = Vec::new();
        Encrypting::new(plain, key, "src/copies/c/data/t.zst.enc")
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    async fn opened(sealed: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Decrypting::new(sealed, "f", "src/copies/c/data/t.zst.enc")
            .read_to_end(&mut out)
            .await?;
        Ok(out)
    }

    #[tokio::test]
    async fn what_is_sealed_opens_the_same_at_every_size() {
        let key = Key::generate();
        install_reading_keys([key.clone()]);
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let plain: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let stored = sealed(&plain, &key).await;
            assert!(
                !stored
                    .windows(64.min(size.max(1)))
                    .any(|w| size >= 64 && w == &plain[..64])
            );
            assert_eq!(opened(&stored).await.unwrap(), plain, "size {size}");
        }
    }

    #[tokio::test]
    async fn a_changed_cut_or_foreign_file_does_not_open() {
        let key = Key::generate();
        install_reading_keys([key.clone()]);
        let plain = vec![42u8; 2 * CHUNK + 5];
        let stored = sealed(&plain, &key).await;
        for at in [stored.len() / 2, stored.len() - 1, 40] {
            let mut flipped = stored.clone();
            flipped[at] ^= 1;
            let e = opened(&flipped).await.unwrap_err();
            assert!(super::super::damage::damage_in(&e).is_some(), "byte {at}: {e}");
        }
        // Cut at a chunk's end: the last chunk is missing, which its flag tells.
        let cut = &stored[..stored.len() - (5 + TAG)];
        assert!(opened(cut).await.is_err());
        // A file put in another's place does not open.
        let mut moved = Vec::new();
        let e = Decrypting::new(stored.as_slice(), "f", "src/copies/c/data/other.zst.enc")
            .read_to_end(&mut moved)
            .await
            .unwrap_err();
        assert!(super::super::damage::damage_in(&e).is_some(), "{e}");
        // A key this process does not have is named, not reported as damage.
        let other = Key::generate();
        let foreign = sealed(b"x", &other).await;
        let e = opened(&foreign).await.unwrap_err();
        let missing = key_unavailable_in(&e).expect("the key is named");
        assert_eq!(missing.key_id, other.id());
    }

    #[test]
    fn a_key_file_reads_back_as_the_same_key() {
        let key = Key::generate();
        let again = Key::parse(&key.to_file_text(), "k").unwrap();
        assert_eq!(again.id(), key.id());
        assert_eq!(key.id().len(), 16);
        assert!(
            Key::parse("cairn-key-1:AAAA", "k")
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
        assert!(!format!("{key:?}").contains(&key.to_file_text()[KEY_PREFIX.len()..20]));
    }
}
