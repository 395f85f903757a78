//! A copy's files as the engines write and read them: how a data file is described in the
//! manifest, and how a stored file is found and read back with its MD5 checked.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::io::AsyncReadExt;

use crate::repo::RepoError;
use crate::repo::codec::decompress_verified;
use crate::repo::layout;
use crate::repo::manifest::{Manifest, ManifestFile};
use crate::storage::{Destination, ObjectStream};
use crate::streams::Counters;

/// The manifest details of one data file: where its rows belong (`container` is the engine's
/// word and name for it: `("schema", …)` or `("database", …)`), the columns, and the counts the
/// restore checks.
pub fn data_details(
    container: (&str, &str),
    table: &str,
    columns: Value,
    counted: &Counters,
    condition: Option<String>,
) -> Map<String, Value> {
    let mut details = Map::new();
    details.insert("kind".into(), json!("data"));
    details.insert(container.0.into(), json!(container.1));
    details.insert("table".into(), json!(table));
    details.insert("columns".into(), columns);
    details.insert("rows".into(), json!(counted.newlines()));
    details.insert("raw_bytes".into(), json!(counted.bytes()));
    if let Some(condition) = condition {
        details.insert("condition".into(), json!(condition));
    }
    details
}

/// A table's folder in a copy: `unique` (what keeps different tables apart: an OID, a hash),
/// then a readable, key-safe form of `container.table`.
pub fn table_folder(unique: &str, container: &str, table: &str) -> String {
    let readable: String = format!("{container}.{table}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    format!("{unique}-{}", readable.trim_start_matches('.'))
}

/// A file of a copy, with its key on the destination.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub key: String,
    pub file: ManifestFile,
}

impl StoredFile {
    /// A string detail of the file (`kind`, `table`, …).
    pub fn detail(&self, name: &str) -> Option<&str> {
        self.file.details.get(name).and_then(|v| v.as_str())
    }

    /// Rows the manifest records, if it does.
    pub fn rows(&self) -> Option<u64> {
        self.file.details.get("rows").and_then(|v| v.as_u64())
    }
}

/// Every file of a copy.
pub fn files_of(source: &str, manifest: &Manifest) -> Vec<StoredFile> {
    manifest
        .files
        .iter()
        .map(|file| StoredFile {
            key: format!("{}{}", layout::copy_prefix(source, &manifest.copy.id), file.path),
            file: file.clone(),
        })
        .collect()
}

/// The one file of `kind`.
///
/// # Errors
/// [`RepoError::Damaged`] when the manifest has none.
pub fn one_of(files: &[StoredFile], kind: &str, copy: &str) -> Result<StoredFile, RepoError> {
    files
        .iter()
        .find(|f| f.detail("kind") == Some(kind))
        .cloned()
        .ok_or_else(|| RepoError::Damaged(format!("copy {copy} has no {kind} file in its manifest")))
}

/// The data files, largest first.
pub fn data_files(files: &[StoredFile]) -> Vec<StoredFile> {
    let mut data: Vec<StoredFile> = files
        .iter()
        .filter(|f| f.detail("kind") == Some("data"))
        .cloned()
        .collect();
    data.sort_by_key(|f| std::cmp::Reverse(f.file.size));
    data
}

/// Opens a stored file as a decompressed stream that fails, instead of ending, when its size or
/// MD5 differs from the manifest.
///
/// # Errors
/// Destination errors.
pub async fn open_verified(destination: &Arc<dyn Destination>, stored: &StoredFile) -> Result<ObjectStream, RepoError> {
    let raw = destination.get(&stored.key).await?;
    let name = format!("{} at {}", stored.key, destination.location());
    Ok(decompress_verified(raw, name, &stored.file.md5, stored.file.size))
}

/// Schema files are read whole; one larger than this is refused rather than exhausting memory.
const MAX_TEXT_BYTES: u64 = 1 << 30;

/// Reads a (small) stored text file whole, verified.
///
/// # Errors
/// [`RepoError::Damaged`] for a damaged or non-UTF-8 file.
pub async fn read_text(destination: &Arc<dyn Destination>, stored: &StoredFile) -> Result<String, RepoError> {
    let mut text = Vec::new();
    open_verified(destination, stored)
        .await?
        .take(MAX_TEXT_BYTES)
        .read_to_end(&mut text)
        .await
        .map_err(RepoError::from_read)?;
    String::from_utf8(text).map_err(|_| RepoError::Damaged(format!("{} is not UTF-8 text", stored.key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_folders_are_key_safe_and_kept_apart_by_their_unique_part() {
        assert_eq!(table_folder("16385", "public", "orders"), "16385-public.orders");
        let odd = table_folder("ab12", "Sales Dept", "odd `name`/../x");
        assert_eq!(odd, "ab12-Sales_Dept.odd__name__.._x");
        assert!(crate::storage::validate_key(&format!("src/copies/c/data/{odd}/00000.zst")).is_ok());
        assert_eq!(table_folder("1", "s", &"t".repeat(100)).len(), "1-".len() + 60);
    }
}
