//! What a file of a copy holds, as a typed view of its manifest entry's details (`kind` names
//! the variant). The manifest format is unchanged: the details stay a JSON object, so copies
//! written before this type existed read the same, and unknown members are ignored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::manifest::ManifestFile;

/// The kind of a copy's file, with the facts a restore needs from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FileKind {
    /// Rows of one table (or one chunk of it).
    Data(DataFile),
    /// MySQL: the schema of the copy's databases.
    Schema,
    /// A stored stretch of a MySQL binary log.
    Binlog(BinlogFile),
    /// PostgreSQL: an incremental's changes, as logical decoding gave them.
    PgChanges(PgChangesFile),
    /// PostgreSQL: the schema script parts pg_dump gives, and the sequences' values.
    PreData,
    PostData,
    Sequences,
    Refresh,
    /// Accounts, roles and their grants (`engine::accounts::Accounts`): holds password hashes.
    Accounts,
}

/// A data file: which table its rows belong to, and the counts the restore checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFile {
    /// MySQL: the table's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// PostgreSQL: the table's schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub table: String,
    /// The columns, in the engine's own description.
    #[serde(default)]
    pub columns: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_bytes: Option<u64>,
    /// The chunk's row condition, when the table was split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The [`crate::streams::RowDigest`] of the file's rows as read from the source, for
    /// `cairn verify --deep` (copies taken before it have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_digest: Option<String>,
}

impl DataFile {
    /// The table's container: its schema (PostgreSQL) or database (MySQL).
    pub fn container(&self) -> &str {
        self.schema.as_deref().or(self.database.as_deref()).unwrap_or_default()
    }
}

/// A stretch of one server binary log file, as an incremental stored it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinlogFile {
    /// The server's file name.
    pub server_file: String,
    /// The server positions the stored file covers.
    pub start: u64,
    pub end: u64,
    /// Order of the file within its copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions: Option<u64>,
    /// What capture left out of the range, in the engine's own form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Value>,
}

/// A PostgreSQL change file (docs/postgres.md, "Change files").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PgChangesFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<u64>,
}

impl FileKind {
    /// The details member of a manifest entry for this kind.
    pub fn into_details(self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("a tagged enum serializes to an object"),
        }
    }
}

impl ManifestFile {
    /// What the file holds, read from its details.
    ///
    /// # Errors
    /// One sentence naming the file and what its details lack.
    pub fn kind(&self) -> Result<FileKind, String> {
        serde_json::from_value(Value::Object(self.details.clone())).map_err(|e| {
            format!(
                "{}: the manifest's details do not describe a known file: {e}",
                self.path
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(details: Value) -> ManifestFile {
        ManifestFile {
            path: "f".into(),
            size: 1,
            md5: "x".into(),
            details: details.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn details_as_earlier_copies_wrote_them_read_as_typed_kinds() {
        let data = entry(
            json!({"kind": "data", "database": "app", "table": "t", "columns": [], "rows": 3,
            "raw_bytes": 10, "extra": true}),
        );
        let FileKind::Data(file) = data.kind().unwrap() else {
            panic!("not data")
        };
        assert_eq!(
            (file.container(), file.table.as_str(), file.rows),
            ("app", "t", Some(3))
        );
        let binlog = entry(
            json!({"kind": "binlog", "server_file": "b.000001", "start": 4, "end": 900,
            "sequence": 2, "skipped": [[10, 20, 1, ""]], "first_event_at": null}),
        );
        let FileKind::Binlog(file) = binlog.kind().unwrap() else {
            panic!("not binlog")
        };
        assert_eq!(
            (file.start, file.end, file.sequence, file.skipped.len()),
            (4, 900, Some(2), 1)
        );
        assert_eq!(entry(json!({"kind": "pre-data"})).kind().unwrap(), FileKind::PreData);
        assert_eq!(entry(json!({"kind": "schema"})).kind().unwrap(), FileKind::Schema);
        assert!(entry(json!({"kind": "binlog", "start": 4})).kind().is_err());
        assert!(entry(json!({"kind": "photo"})).kind().is_err());
    }

    #[test]
    fn written_details_read_back_the_same() {
        let kind = FileKind::Data(DataFile {
            database: None,
            schema: Some("public".into()),
            table: "orders".into(),
            columns: json!(["id"]),
            rows: Some(5),
            raw_bytes: Some(40),
            condition: None,
            row_digest: Some(format!("{:032x}", 7)),
        });
        let details = kind.clone().into_details();
        assert_eq!(details["kind"], json!("data"));
        assert_eq!(entry(Value::Object(details)).kind().unwrap(), kind);
    }
}
