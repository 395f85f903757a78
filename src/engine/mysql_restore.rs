//! The restore options only MySQL and MariaDB targets take (`--rename-db`, `--no-binlog`,
//! `--checksum`).

/// Restore options of MySQL and MariaDB targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MysqlRestoreOptions {
    /// Databases restored under another name.
    pub rename_databases: Vec<(String, String)>,
    /// Keep the restore out of the target's binary log (`sql_log_bin = 0`).
    pub no_binlog: bool,
    /// Compare `CHECKSUM TABLE` of every restored table with the copy's.
    pub verify_checksums: bool,
}

impl MysqlRestoreOptions {
    /// The flags given, as the command line spells them.
    pub fn flags_given(&self) -> Vec<&'static str> {
        [
            ("--rename-db", !self.rename_databases.is_empty()),
            ("--no-binlog", self.no_binlog),
            ("--checksum", self.verify_checksums),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }
}
