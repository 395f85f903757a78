//! A copy's manifest: every file of the copy with its size and MD5, and the copy's record.
//!
//! A copy exists once its manifest does: files first, manifest second, status last. The
//! manifest is written create-only and carries the full copy record, so the status can be
//! rebuilt from manifests alone.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::repo::envelope;
use crate::repo::model::CopyInfo;

/// The `format` member of every manifest.
pub const MANIFEST_FORMAT: &str = "cairn-manifest";
/// The manifest version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// One stored file of a copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Path relative to the copy's folder.
    pub path: String,
    /// Bytes stored.
    pub size: u64,
    /// MD5 of the bytes stored, lowercase hex.
    pub md5: String,
    /// Engine-specific facts about the file (table, rows, chunk bounds, log range).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

/// The manifest of one copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub source: String,
    pub copy: CopyInfo,
    pub files: Vec<ManifestFile>,
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {file} is damaged: {reason}")]
    Corrupted { file: String, reason: String },
    #[error(
        "manifest {file} has version {found}, newer than version {supported} that this cairn understands; upgrade cairn"
    )]
    NewerVersion { file: String, found: u32, supported: u32 },
}

impl Manifest {
    /// Renders the manifest's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let Value::Object(members) = serde_json::to_value(self).expect("manifests always serialize") else {
            unreachable!("a struct serializes to an object")
        };
        envelope::seal(MANIFEST_FORMAT, MANIFEST_VERSION, members)
    }

    /// Parses and verifies a manifest's bytes.
    ///
    /// # Errors
    /// [`ManifestError`] naming `file`.
    pub fn decode(file: &str, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let corrupted = |reason: String| ManifestError::Corrupted {
            file: file.to_string(),
            reason,
        };
        let opened = envelope::open(MANIFEST_FORMAT, bytes).map_err(|e| corrupted(e.to_string()))?;
        if opened.version > MANIFEST_VERSION {
            return Err(ManifestError::NewerVersion {
                file: file.to_string(),
                found: opened.version,
                supported: MANIFEST_VERSION,
            });
        }
        serde_path_to_error::deserialize(Value::Object(opened.members))
            .map_err(|e| corrupted(format!("{}: {}", e.path(), e.inner())))
    }
}
