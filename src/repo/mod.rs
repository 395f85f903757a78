//! One source's repository on a destination: where its files live (layout), who may write
//! (lock), what it holds (status, manifests, the typed model), and the codec and checksums
//! between an engine's plain streams and the stored bytes (writer, reader).

pub mod codec;
pub mod crypt;
mod damage;
pub mod envelope;
pub mod file_kind;
pub mod kinds;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod model;
pub mod reader;
pub mod status;
pub mod writer;

use crate::repo::lock::LockError;
use crate::repo::manifest::ManifestError;
use crate::repo::status::StatusError;
use crate::storage::DestinationError;

/// Errors of the repository layer: what went wrong with the stored bytes, the status or the
/// lock, each kept as its own typed error.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A stored file is not what its manifest says (or a manifest lacks a file it must have).
    #[error("{0}")]
    Damaged(String),
    /// A stored file is encrypted with a key that is not configured.
    #[error(
        "{0}: add its key file to [encryption] old-key-files (or the source's [sources.NAME.encryption]) and run \
         again"
    )]
    KeyUnavailable(crypt::KeyUnavailable),
}

impl RepoError {
    /// The error of reading a stored file: the destination's own error when it could not deliver
    /// the bytes (so an unreachable store is a temporary failure), damage otherwise.
    pub fn from_read(error: std::io::Error) -> RepoError {
        if let Some(missing) = crypt::key_unavailable_in(&error) {
            return RepoError::KeyUnavailable(crypt::KeyUnavailable {
                name: missing.name.clone(),
                key_id: missing.key_id.clone(),
            });
        }
        if !crate::storage::carries_destination_error(&error) {
            return RepoError::Damaged(error.to_string());
        }
        let text = error.to_string();
        match error.into_inner().map(|inner| inner.downcast::<DestinationError>()) {
            Some(Ok(destination)) => RepoError::Destination(*destination),
            _ => RepoError::Damaged(text),
        }
    }
}
