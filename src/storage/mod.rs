//! Where copies are stored: the [`Destination`] trait, its errors, and how a destination URL
//! becomes a local directory or an S3 bucket.
//!
//! Rules every implementation keeps (restic's "write once, write last"): a reader never sees a
//! partial object; conditional puts are atomic with respect to each other; keys are relative,
//! `/`-separated and never contain `..` or a segment starting with `.` (those names are reserved
//! for temporary and lock files).

pub mod fan_out;
pub mod local;
mod local_folders;
pub mod s3;

use md5::Digest as _;
use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

pub use local::LocalDestination;
pub use s3::{S3Destination, S3Options};

/// A streaming object body, read or written.
pub type ObjectStream = Pin<Box<dyn AsyncRead + Send>>;

/// What `head` and `list` report about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// What a successful put stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// Bytes stored.
    pub size: u64,
    /// MD5 of the bytes stored, lowercase hex.
    pub md5: String,
    /// The version token for a later [`PutCondition::IfMatch`].
    pub etag: String,
}

/// A small object read whole, with the version token a conditional replace needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedObject {
    pub data: Bytes,
    pub etag: String,
}

/// What a command needs of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading only: nothing is created or written.
    Read,
    /// Writing copies, status files and leases.
    Write,
}

/// The condition of a conditional put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    /// Write only if no object has that key (`If-None-Match: *`).
    CreateOnly,
    /// Replace only if the object still has this version token (`If-Match: <etag>`).
    IfMatch(String),
}

/// Errors of a destination; each names the object and the place.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("invalid destination {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("destination {location} does not exist")]
    Missing { location: String },
    #[error("object {key} does not exist at {location}")]
    NotFound { location: String, key: String },
    #[error("conditional write of {key} at {location} was refused: {reason}")]
    ConditionFailed {
        location: String,
        key: String,
        reason: String,
    },
    #[error("object {key} at {location} is larger than the {limit} bytes expected of it")]
    TooLarge { location: String, key: String, limit: u64 },
    #[error("bucket {bucket:?} does not exist at endpoint {endpoint}; create it or correct the destination URL")]
    BucketNotFound { bucket: String, endpoint: String },
    #[error(
        "access to bucket {bucket:?} at endpoint {endpoint} was denied ({detail}); check the credentials \
         (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the destination's access-key settings) \
         and the bucket's permissions"
    )]
    AccessDenied {
        bucket: String,
        endpoint: String,
        detail: String,
    },
    #[error(
        "{key} at {location} holds {found} bytes after {expected} were written to it; the destination may be full or \
         limited in file size"
    )]
    Incomplete {
        location: String,
        key: String,
        expected: u64,
        found: u64,
    },
    #[error(
        "no S3 credentials for bucket {bucket:?} at endpoint {endpoint} ({detail}); set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the destination's access-key-id and secret-access-key-file"
    )]
    NoCredentials {
        bucket: String,
        endpoint: String,
        detail: String,
    },
    #[error("cannot reach {location}: {detail}")]
    Unreachable { location: String, detail: String },
    #[error("{operation} {key} at {location} failed after retries: the store answered {detail}; try again later")]
    Unavailable {
        operation: &'static str,
        location: String,
        key: String,
        detail: String,
    },
    #[error("{operation} {key} at {location} failed: {detail}")]
    Request {
        operation: &'static str,
        location: String,
        key: String,
        detail: String,
    },
    #[error("{operation} {path} failed: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the data for {key} failed: {source}")]
    Body {
        key: String,
        #[source]
        source: std::io::Error,
    },
}

impl DestinationError {
    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DestinationError::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}

/// A place that stores objects by key: a local directory or an S3 bucket prefix.
#[async_trait]
pub trait Destination: Send + Sync + fmt::Debug {
    /// Where this is, for messages: a path or `s3://bucket/prefix at <endpoint>`. Never a secret.
    fn location(&self) -> String;

    /// Checks, before a run relies on it, that the destination exists and the credentials work;
    /// with [`Access::Write`] also that it can be written (creating a local folder if needed).
    async fn check(&self, access: Access) -> Result<(), DestinationError>;

    /// Stores `body` under `key` atomically, streaming it with bounded memory, replacing any
    /// object of that key.
    async fn put(&self, key: &str, body: ObjectStream) -> Result<PutOutcome, DestinationError>;

    /// Stores a small object only if `condition` holds; two conditional puts never both win.
    async fn put_if(&self, key: &str, data: Bytes, condition: PutCondition) -> Result<PutOutcome, DestinationError>;

    /// Streams an object; [`DestinationError::NotFound`] when it does not exist.
    async fn get(&self, key: &str) -> Result<ObjectStream, DestinationError>;

    /// Reads a small object whole with its version token; `None` when it does not exist.
    async fn get_versioned(&self, key: &str, limit: u64) -> Result<Option<VersionedObject>, DestinationError>;

    /// Size of an object; `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, DestinationError>;

    /// Every object whose key starts with `prefix`, sorted by key, however many there are.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, DestinationError>;

    /// Names of the folders directly under `prefix` (`""` or ending in `/`), sorted, without
    /// listing the objects inside them.
    async fn folders(&self, prefix: &str) -> Result<Vec<String>, DestinationError>;

    /// Removes an object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), DestinationError>;

    /// Keys of uploads started under `prefix` that were never completed nor aborted (left by
    /// runs that were killed); a store bills their parts until they are removed.
    async fn unfinished_uploads(&self, prefix: &str) -> Result<Vec<String>, DestinationError> {
        let _ = prefix;
        Ok(Vec::new())
    }

    /// Waits for cleanup that writers started in the background when they were cancelled
    /// (aborting their uploads); call it before the process ends.
    async fn settle(&self) {}
}

/// Convenience calls shared by every destination.
#[async_trait]
pub trait DestinationExt: Destination {
    /// Stores bytes already in memory.
    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<PutOutcome, DestinationError> {
        self.put(key, Box::pin(std::io::Cursor::new(data))).await
    }

    /// Reads a whole object, refusing one larger than `limit` bytes.
    async fn get_bytes(&self, key: &str, limit: u64) -> Result<Bytes, DestinationError> {
        let mut reader = self.get(key).await?;
        let mut data = Vec::new();
        (&mut reader)
            .take(limit + 1)
            .read_to_end(&mut data)
            .await
            .map_err(|source| DestinationError::Body {
                key: key.to_string(),
                source,
            })?;
        if data.len() as u64 > limit {
            return Err(DestinationError::TooLarge {
                location: self.location(),
                key: key.to_string(),
                limit,
            });
        }
        Ok(Bytes::from(data))
    }
}

impl<T: Destination + ?Sized> DestinationExt for T {}

/// Whether a read failed because a destination could not deliver the bytes (a network error
/// after retries), rather than because the bytes that arrived are wrong.
pub fn carries_destination_error(error: &std::io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<DestinationError>())
}

/// Checks that a key is relative, `/`-separated, and free of reserved segments.
pub fn validate_key(key: &str) -> Result<(), DestinationError> {
    let invalid = |reason: &str| {
        Err(DestinationError::InvalidKey {
            key: key.to_string(),
            reason: reason.to_string(),
        })
    };
    if key.is_empty() {
        return invalid("empty key");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return invalid("keys are relative and name an object, not a folder");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return invalid("empty path segment");
        }
        if segment.starts_with('.') {
            return invalid("segments starting with '.' are reserved for temporary and lock files");
        }
        if segment.contains('\\') || segment.contains('\0') {
            return invalid("backslashes and NUL bytes are not allowed");
        }
    }
    Ok(())
}

/// MD5 as lowercase hex.
pub fn md5_hex(data: &[u8]) -> String {
    format!("{:x}", md5::Md5::digest(data))
}

/// Where a destination URL points, before anything is opened.
#[derive(Debug, Clone, PartialEq)]
pub enum DestinationSpec {
    Local { root: PathBuf },
    S3(S3Options),
}

impl DestinationSpec {
    /// Parses `/path`, `./path`, `file:///path` or `s3://bucket/prefix[?endpoint=…&region=…&path-style=true]`.
    ///
    /// # Errors
    /// [`DestinationError::InvalidUrl`] for an unsupported scheme or a malformed S3 URL.
    pub fn parse(url: &str) -> Result<Self, DestinationError> {
        let invalid = |reason: &str| DestinationError::InvalidUrl {
            url: crate::secret::redact_url(url),
            reason: reason.to_string(),
        };
        if url.trim().is_empty() {
            return Err(invalid("empty destination"));
        }
        if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(invalid(
                    "file:// URLs need an absolute path, e.g. file:///var/backups/cairn",
                ));
            }
            return Ok(DestinationSpec::Local {
                root: PathBuf::from(rest),
            });
        }
        for scheme in ["s3", "file"] {
            if let Some(rest) = url.strip_prefix(scheme)
                && !rest.starts_with("://")
                && (rest.starts_with(':') || rest.starts_with("//"))
            {
                return Err(invalid(&format!(
                    "malformed URL: {scheme} must be followed by :// (e.g. s3://bucket/prefix, file:///var/backups)"
                )));
            }
        }
        if url.starts_with("s3://") {
            return S3Options::from_url(url)
                .map(DestinationSpec::S3)
                .map_err(|reason| invalid(&reason));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(invalid(&format!(
                "unsupported scheme {scheme:?}: use a local path, file:///path or s3://bucket/prefix"
            )));
        }
        Ok(DestinationSpec::Local {
            root: PathBuf::from(url),
        })
    }

    /// Opens the destination; no I/O happens until the first call on it.
    ///
    /// # Errors
    /// [`DestinationError`] when the S3 client cannot be configured.
    pub async fn open(&self) -> Result<Arc<dyn Destination>, DestinationError> {
        Ok(match self {
            DestinationSpec::Local { root } => Arc::new(LocalDestination::new(root.clone())),
            DestinationSpec::S3(options) => Arc::new(S3Destination::connect(options.clone()).await?),
        })
    }

    /// A printable description with no secret in it.
    pub fn describe(&self) -> String {
        match self {
            DestinationSpec::Local { root } => root.display().to_string(),
            DestinationSpec::S3(options) => options.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(validate_key("app/copies/1/manifest.json").is_ok());
        for bad in ["", "/abs", "dir/", "a//b", "a/../b", "a/.tmp", "a\\b"] {
            assert!(validate_key(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn destination_urls_parse() {
        assert_eq!(
            DestinationSpec::parse("./backups").unwrap(),
            DestinationSpec::Local {
                root: "./backups".into()
            }
        );
        assert_eq!(
            DestinationSpec::parse("file:///var/b").unwrap(),
            DestinationSpec::Local { root: "/var/b".into() }
        );
        assert!(matches!(
            DestinationSpec::parse("s3://bucket/p/q").unwrap(),
            DestinationSpec::S3(_)
        ));
        let err = DestinationSpec::parse("ftp://host/x").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme \"ftp\""), "{err}");
        assert!(DestinationSpec::parse("file://relative").is_err());
        for malformed in ["s3:/bucket/p", "s3//bucket", "file:/var/b"] {
            let err = DestinationSpec::parse(malformed).unwrap_err().to_string();
            assert!(err.contains("malformed URL"), "{malformed}: {err}");
        }
    }
}
