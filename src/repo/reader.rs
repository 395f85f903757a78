//! A copy's files as the engines write and read them: how a data file is described in the
//! manifest, and how a stored file is found and read back with its MD5 checked.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;

use crate::repo::RepoError;
use crate::repo::codec::decompress_verified;
use crate::repo::file_kind::{BinlogFile, DataFile, FileKind};
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
    let (database, schema) = match container.0 {
        "schema" => (None, Some(container.1.to_string())),
        _ => (Some(container.1.to_string()), None),
    };
    FileKind::Data(DataFile {
        database,
        schema,
        table: table.to_string(),
        columns,
        rows: Some(counted.newlines()),
        raw_bytes: Some(counted.bytes()),
        condition,
        row_digest: Some(counted.row_digest()),
    })
    .into_details()
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
    /// What the file holds.
    pub kind: FileKind,
}

impl StoredFile {
    /// The file's table and counts, if it is a data file.
    pub fn data(&self) -> Option<&DataFile> {
        match &self.kind {
            FileKind::Data(data) => Some(data),
            _ => None,
        }
    }

    /// The file's stretch of binary log, if it is one.
    pub fn binlog(&self) -> Option<&BinlogFile> {
        match &self.kind {
            FileKind::Binlog(binlog) => Some(binlog),
            _ => None,
        }
    }

    /// Rows the manifest records, if it does.
    pub fn rows(&self) -> Option<u64> {
        self.data()?.rows
    }

    /// Whether the file is of `kind`'s variant (its details aside).
    pub fn is(&self, kind: &FileKind) -> bool {
        std::mem::discriminant(&self.kind) == std::mem::discriminant(kind)
    }
}

/// Every file of a copy.
///
/// # Errors
/// [`RepoError::Damaged`] for a file whose manifest entry does not say what it holds: a restore
/// must not leave out a file it does not understand.
pub fn files_of(source: &str, manifest: &Manifest) -> Result<Vec<StoredFile>, RepoError> {
    // A copy taken with a key has every file encrypted: one that is not was put there.
    if manifest.copy.details.contains_key("key_id")
        && let Some(plain) = manifest
            .files
            .iter()
            .find(|f| !f.path.ends_with(crate::repo::crypt::SUFFIX))
    {
        return Err(RepoError::Damaged(format!(
            "copy {}: {} is not encrypted, but the copy was taken with a key",
            manifest.copy.id, plain.path
        )));
    }
    manifest
        .files
        .iter()
        .map(|file| {
            let kind = file
                .kind()
                .map_err(|e| RepoError::Damaged(format!("copy {}: {e}", manifest.copy.id)))?;
            Ok(StoredFile {
                key: format!("{}{}", layout::copy_prefix(source, &manifest.copy.id), file.path),
                file: file.clone(),
                kind,
            })
        })
        .collect()
}

/// The one file of `kind`.
///
/// # Errors
/// [`RepoError::Damaged`] when the manifest has none.
pub fn one_of(files: &[StoredFile], kind: FileKind, copy: &str) -> Result<StoredFile, RepoError> {
    files.iter().find(|f| f.is(&kind)).cloned().ok_or_else(|| {
        let name = kind.into_details().remove("kind").unwrap_or_default();
        RepoError::Damaged(format!(
            "copy {copy} has no {} file in its manifest",
            name.as_str().unwrap_or("?")
        ))
    })
}

/// The data files in the order to load them: each table's largest file first, the tables'
/// first files before any table's second, and largest first within each such round. Workers
/// taking files in this order start on different tables (loads into one table contend for its
/// extension lock, in InnoDB for its index pages too), and the big files do not come last.
pub fn data_files(files: &[StoredFile]) -> Vec<StoredFile> {
    let mut by_table: std::collections::BTreeMap<(String, String), Vec<StoredFile>> = Default::default();
    for file in files {
        if let Some(data) = file.data() {
            by_table
                .entry((data.container().to_string(), data.table.clone()))
                .or_default()
                .push(file.clone());
        }
    }
    let mut ranked: Vec<(usize, StoredFile)> = Vec::new();
    for mut table in by_table.into_values() {
        table.sort_by_key(|f| std::cmp::Reverse(f.file.size));
        ranked.extend(table.into_iter().enumerate());
    }
    ranked.sort_by_key(|(round, f)| (*round, std::cmp::Reverse(f.file.size)));
    ranked.into_iter().map(|(_, f)| f).collect()
}

/// Opens a stored file as a decompressed stream that fails, instead of ending, when its size or
/// MD5 differs from the manifest.
///
/// # Errors
/// Destination errors.
pub async fn open_verified(destination: &Arc<dyn Destination>, stored: &StoredFile) -> Result<ObjectStream, RepoError> {
    let raw = destination.get(&stored.key).await?;
    let name = format!("{} at {}", stored.key, destination.location());
    let encrypted = stored
        .key
        .ends_with(crate::repo::crypt::SUFFIX)
        .then_some(stored.key.as_str());
    Ok(decompress_verified(
        raw,
        name,
        &stored.file.md5,
        stored.file.size,
        encrypted,
    ))
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

/// Data file number `index` of `table` in `container` (`("schema", name)` or `("database",
/// name)`), of `size` stored bytes, stored under the key `table/index`: for tests of load orders.
#[cfg(test)]
pub(crate) fn test_data_file(container: (&str, &str), table: &str, index: u32, size: u64) -> StoredFile {
    let mut details = serde_json::json!({"kind": "data", "table": table});
    details[container.0] = serde_json::json!(container.1);
    let file = ManifestFile {
        path: format!("data/{table}/{index}.zst"),
        size,
        md5: "x".into(),
        details: details.as_object().cloned().unwrap_or_default(),
    };
    StoredFile {
        key: format!("{table}/{index}"),
        kind: file.kind().expect("a data file's details"),
        file,
    }
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

    #[test]
    fn a_file_the_manifest_does_not_describe_fails_the_listing_instead_of_being_left_out() {
        use crate::repo::kinds::RunType;
        let entry = |details: serde_json::Value| ManifestFile {
            path: "data/t.zst".into(),
            size: 1,
            md5: "x".into(),
            details: details.as_object().cloned().unwrap_or_default(),
        };
        let mut manifest = Manifest {
            source: "app".into(),
            copy: crate::repo::status::query::tests::copy("c1", RunType::Daily, None, 1).info,
            files: vec![entry(
                serde_json::json!({"kind": "data", "database": "app", "table": "t"}),
            )],
        };
        let files = files_of("app", &manifest).unwrap();
        assert_eq!(files[0].data().map(|d| d.table.as_str()), Some("t"));
        assert_eq!(files[0].key, "app/copies/c1/data/t.zst");
        manifest.files.push(entry(serde_json::json!({"kind": "photo"})));
        let err = files_of("app", &manifest).unwrap_err().to_string();
        assert!(err.contains("copy c1") && err.contains("photo"), "{err}");
        // A copy taken with a key whose manifest names a file in clear: put there, refused.
        manifest.files.pop();
        manifest
            .copy
            .details
            .insert("key_id".into(), serde_json::json!("0123456789abcdef"));
        let err = files_of("app", &manifest).unwrap_err().to_string();
        assert!(err.contains("data/t.zst is not encrypted"), "{err}");
    }

    #[test]
    fn data_files_start_every_table_before_any_second_file_largest_first() {
        let file = |table: &str, index: u32, size: u64| test_data_file(("database", "db"), table, index, size);
        let files = vec![
            file("a", 0, 100),
            file("a", 1, 90),
            file("a", 2, 10),
            file("b", 0, 50),
            file("b", 1, 95),
            file("c", 0, 5),
        ];
        let order: Vec<String> = data_files(&files).into_iter().map(|f| f.key).collect();
        assert_eq!(order, ["a/0", "b/1", "c/0", "a/1", "b/0", "a/2"]);
    }
}
