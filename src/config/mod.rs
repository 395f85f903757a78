//! The configuration: a TOML file merged with `CAIRN_…` environment variables, validated
//! without touching the network (see docs/configuration.md).
//!
//! Environment variables name a setting by its path: `CAIRN_` followed by the path's segments
//! joined with `__`, each upper-cased with `-` written as `_`. So `jobs` is `CAIRN_JOBS`,
//! `retention.hourly` is `CAIRN_RETENTION__HOURLY` and `sources.app-db.password` is
//! `CAIRN_SOURCES__APP_DB__PASSWORD`. Names of sources and destinations are therefore limited to
//! lowercase letters, digits and `-`.

pub mod encryption;
mod env;
pub mod notifications;
mod places;
mod source_options;
#[cfg(test)]
mod tests;

pub use env::is_setting;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{SourceSpec, SourceUrl};
use crate::repo::kinds::RunType;
use crate::repo::lock::LockOptions;
use crate::secret::{Secret, redact_url};
use crate::storage::{DestinationSpec, s3::MIN_PART_SIZE};

/// Copies to keep per run type; used by `cairn purge`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Retention {
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    /// Copies younger than this many days are kept whatever the counts say.
    pub min_age_days: Option<u32>,
}

/// A named destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DestinationSettings {
    /// A local path, `file:///path` or `s3://bucket/prefix`.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub secret_access_key_file: Option<PathBuf>,
    pub part_size_mib: Option<u64>,
    pub upload_concurrency: Option<u32>,
}

/// How a MySQL/MariaDB copy gets its consistent snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    Lock,
    LockFree,
}

/// What to do when an incremental cannot continue from its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnLogGap {
    Fail,
    Full,
}

/// What a PostgreSQL incremental does about schema changes (`on-ddl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDdl {
    /// Stop the incremental naming its parent (default).
    Fail,
    /// Take a full copy instead.
    Full,
    /// Record DDL on the source with an event trigger and replay it in order.
    Capture,
}

/// A named source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SourceSettings {
    /// `postgres://…`, `mysql://…` or `mariadb://…`.
    pub url: String,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// Name of the destination; defaults to the top-level `destination`.
    pub destination: Option<String>,
    /// Names of several destinations, each run writing its copy to every one (instead of
    /// `destination`); the first is where restores look first.
    pub destinations: Option<Vec<String>>,
    /// Overrides the top-level `full-backup` for this source.
    pub full_backup: Option<RunType>,
    pub jobs: Option<u32>,
    /// Overrides the top-level `chunk-size-mib`.
    pub chunk_size_mib: Option<u64>,
    /// Overrides the top-level `compression-level`.
    pub compression_level: Option<i32>,
    /// Overrides the top-level `lock-wait-seconds`.
    pub lock_wait_seconds: Option<u64>,
    /// MySQL/MariaDB: record `CHECKSUM TABLE` of every table in the copy (a second full read).
    pub checksums: Option<bool>,
    /// MySQL/MariaDB: `lock` (default: brief global read lock, parallel) or `lock-free`
    /// (MariaDB only: one connection, no global lock).
    pub consistency: Option<Consistency>,
    /// MySQL/MariaDB: the server id incremental copies read the binary log with (default: derived
    /// from the source name, in 4000000000..4200000000).
    pub replica_server_id: Option<u32>,
    /// What an incremental does when the log no longer reaches back to its parent: `fail`
    /// (default) or `full` (take a full copy instead, and say so).
    pub on_log_gap: Option<OnLogGap>,
    /// PostgreSQL: keep a logical replication slot so incrementals can follow full copies.
    pub incrementals: Option<bool>,
    /// PostgreSQL: `cairn status` warns when the source's slot keeps more WAL than this
    /// (default 4096).
    pub slot_warning_mib: Option<u64>,
    /// PostgreSQL with incrementals: what a schema change between copies does.
    pub on_ddl: Option<OnDdl>,
    /// Record the accounts and roles that hold grants on the source's database, with their
    /// grants and password hashes (a MySQL source without a database records every account).
    pub users: Option<bool>,
    /// MySQL/MariaDB with users: also the `root` accounts, with their hashes (never by default:
    /// a target keeps its own).
    pub users_include_root: Option<bool>,
    /// This source's own `[encryption]`, instead of the top-level one.
    pub encryption: Option<encryption::EncryptionSettings>,
    /// Which schemas and tables to copy (docs/postgres.md, "Filters").
    #[serde(default, skip_serializing_if = "crate::engine::filter::Filters::is_empty")]
    pub filters: crate::engine::filter::Filters,
}

/// The merged settings, as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Run types at or above this one take a full copy (default `daily`).
    pub full_backup: Option<RunType>,
    /// Default destination name for sources that name none.
    pub destination: Option<String>,
    /// Parallel connections per source (default: the number of CPUs, at most 8).
    pub jobs: Option<u32>,
    /// Folder of the local lock files (default: the system's temporary folder).
    pub lock_dir: Option<PathBuf>,
    /// Lease time of the lock on the destination (default 600).
    pub lock_ttl_seconds: Option<u64>,
    /// Tables larger than this are read in chunks of about this size by several workers (default 128).
    pub chunk_size_mib: Option<u64>,
    /// zstd level of stored files, 1 (default: fastest) to 19 (smallest).
    pub compression_level: Option<i32>,
    /// How long a copy waits for a lock on a table before failing (default 30).
    pub lock_wait_seconds: Option<u64>,
    /// Prometheus text file rewritten after every run (docs/operations.md).
    pub metrics_file: Option<PathBuf>,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub notifications: notifications::Notifications,
    /// Client-side encryption of every stored file (docs/configuration.md).
    pub encryption: Option<encryption::EncryptionSettings>,
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationSettings>,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSettings>,
}

/// Configuration errors, naming where the value came from and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: invalid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{key}: cannot read secret file {path}: {source}")]
    SecretFile {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown {kind} {name:?}: {hint}")]
    Unknown {
        kind: &'static str,
        name: String,
        hint: String,
    },
}

/// The longest lease a run may take (`lock-ttl-seconds`): a week.
pub const MAX_LOCK_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// The longest a copy may wait for its locks (`lock-wait-seconds`): a day.
pub const MAX_LOCK_WAIT_SECONDS: u64 = 24 * 3600;

/// Validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    pub settings: Settings,
    /// Which settings came from which environment variable.
    env_origins: BTreeMap<String, String>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
}

impl Config {
    /// Reads `path` (if any), overlays the `CAIRN_…` variables of `env`, and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or variable and the key.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let origin = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the configuration".into());
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse::<toml::Table>().map_err(|e| ConfigError::Syntax {
                    origin: origin.clone(),
                    message: e.to_string().trim().to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        let env_origins = env::overlay_env(&mut table, env)?;
        let settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid {
                origin: env_origins.get(&key).cloned().unwrap_or_else(|| origin.clone()),
                key,
                message: e.inner().to_string(),
            }
        })?;
        let config = Config {
            path: path.map(Path::to_path_buf),
            settings,
            env_origins,
        };
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin_of(key),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn origin_of(&self, key: &str) -> String {
        self.env_origins.get(key).cloned().unwrap_or_else(|| match &self.path {
            Some(path) => path.display().to_string(),
            None => "the configuration".into(),
        })
    }

    /// Pure checks: no network, no files.
    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.settings;
        if let Some(jobs) = s.jobs
            && jobs == 0
        {
            return Err(self.invalid("jobs", "expected at least 1"));
        }
        if let Some(ttl) = s.lock_ttl_seconds
            && ttl < 30
        {
            return Err(self.invalid("lock-ttl-seconds", "expected at least 30 seconds"));
        }
        // Upper bounds keep clock arithmetic in range: a "never" value must not panic a run.
        if s.lock_ttl_seconds.is_some_and(|ttl| ttl > MAX_LOCK_TTL_SECONDS) {
            return Err(self.invalid(
                "lock-ttl-seconds",
                format!("expected at most {MAX_LOCK_TTL_SECONDS} (a week)"),
            ));
        }
        if s.lock_wait_seconds.is_some_and(|wait| wait > MAX_LOCK_WAIT_SECONDS) {
            return Err(self.invalid(
                "lock-wait-seconds",
                format!("expected at most {MAX_LOCK_WAIT_SECONDS} (a day)"),
            ));
        }
        s.notifications
            .validate()
            .map_err(|(key, message)| self.invalid(key, message))?;
        if s.chunk_size_mib == Some(0) {
            return Err(self.invalid("chunk-size-mib", "expected at least 1"));
        }
        let levels = crate::repo::codec::ZSTD_LEVELS;
        if let Some(level) = s.compression_level
            && !levels.contains(&level)
        {
            return Err(self.invalid("compression-level", "expected a zstd level from 1 to 19"));
        }
        for (name, source) in &s.sources {
            if let Some(level) = source.compression_level
                && !levels.contains(&level)
            {
                return Err(self.invalid(
                    &format!("sources.{name}.compression-level"),
                    "expected a zstd level from 1 to 19",
                ));
            }
        }
        if let Some(encryption) = &s.encryption {
            encryption
                .validate("encryption")
                .map_err(|message| self.invalid("encryption", message))?;
        }
        for (name, source) in &s.sources {
            if let Some(encryption) = &source.encryption {
                let at = format!("sources.{name}.encryption");
                encryption.validate(&at).map_err(|message| self.invalid(&at, message))?;
            }
        }
        if let Some(name) = &s.destination
            && !s.destinations.contains_key(name)
        {
            return Err(self.invalid("destination", format!("no destination named {name:?} is configured")));
        }
        for (name, d) in &s.destinations {
            let key = |k: &str| format!("destinations.{name}.{k}");
            if !valid_name(name) {
                return Err(self.invalid(
                    &format!("destinations.{name}"),
                    "names use lowercase letters, digits and '-'",
                ));
            }
            let spec = DestinationSpec::parse(&d.url).map_err(|e| self.invalid(&key("url"), e.to_string()))?;
            let is_s3 = matches!(spec, DestinationSpec::S3(_));
            for (setting, present) in [
                ("endpoint", d.endpoint.is_some()),
                ("region", d.region.is_some()),
                ("path-style", d.path_style.is_some()),
                ("access-key-id", d.access_key_id.is_some()),
                ("secret-access-key", d.secret_access_key.is_some()),
                ("secret-access-key-file", d.secret_access_key_file.is_some()),
                ("part-size-mib", d.part_size_mib.is_some()),
                ("upload-concurrency", d.upload_concurrency.is_some()),
            ] {
                if present && !is_s3 {
                    return Err(self.invalid(&key(setting), "only S3 destinations (s3://…) take this setting"));
                }
            }
            if d.secret_access_key.is_some() && d.secret_access_key_file.is_some() {
                return Err(self.invalid(
                    &key("secret-access-key"),
                    "give secret-access-key or secret-access-key-file, not both",
                ));
            }
            let has_secret = d.secret_access_key.is_some() || d.secret_access_key_file.is_some();
            if d.access_key_id.is_some() != has_secret {
                return Err(self.invalid(
                    &key("access-key-id"),
                    "access-key-id and a secret access key go together",
                ));
            }
            if let Some(mib) = d.part_size_mib
                && mib.saturating_mul(1024 * 1024) < MIN_PART_SIZE
            {
                return Err(self.invalid(&key("part-size-mib"), "expected at least 5 (S3's smallest part)"));
            }
            if d.part_size_mib.is_some_and(|mib| mib > 5 * 1024) {
                return Err(self.invalid(&key("part-size-mib"), "expected at most 5120 (S3's largest part)"));
            }
            if let Some(endpoint) = &d.endpoint {
                crate::storage::s3::check_endpoint(endpoint).map_err(|e| self.invalid(&key("endpoint"), e))?;
            }
            if d.upload_concurrency == Some(0) {
                return Err(self.invalid(&key("upload-concurrency"), "expected at least 1"));
            }
        }
        for (name, src) in &s.sources {
            let key = |k: &str| format!("sources.{name}.{k}");
            if !valid_name(name) {
                return Err(self.invalid(
                    &format!("sources.{name}"),
                    "names use lowercase letters, digits and '-'",
                ));
            }
            let url = SourceUrl::parse(&src.url).map_err(|e| self.invalid(&key("url"), e))?;
            let given = [
                url.password.is_some(),
                src.password.is_some(),
                src.password_file.is_some(),
            ];
            if given.iter().filter(|g| **g).count() > 1 {
                return Err(self.invalid(
                    &key("password"),
                    "give the password once: in the URL, as password, or as password-file",
                ));
            }
            if let Some(dest) = &src.destination
                && !s.destinations.contains_key(dest)
            {
                return Err(self.invalid(
                    &key("destination"),
                    format!("no destination named {dest:?} is configured"),
                ));
            }
            if let Some(names) = &src.destinations {
                if src.destination.is_some() {
                    return Err(self.invalid(&key("destinations"), "give destination or destinations, not both"));
                }
                if names.is_empty() {
                    return Err(self.invalid(&key("destinations"), "expected at least one destination name"));
                }
                for (i, name) in names.iter().enumerate() {
                    if !s.destinations.contains_key(name) {
                        return Err(self.invalid(
                            &key("destinations"),
                            format!("no destination named {name:?} is configured"),
                        ));
                    }
                    if names[..i].contains(name) {
                        return Err(self.invalid(&key("destinations"), format!("{name:?} is named twice")));
                    }
                }
            }
            if url.engine == crate::engine::Engine::Postgres {
                for (setting, present) in [
                    ("checksums", src.checksums.is_some()),
                    ("consistency", src.consistency.is_some()),
                    ("replica-server-id", src.replica_server_id.is_some()),
                    ("on-log-gap", src.on_log_gap.is_some() && src.incrementals != Some(true)),
                    ("on-ddl", src.on_ddl.is_some() && src.incrementals != Some(true)),
                    ("users-include-root", src.users_include_root.is_some()),
                ] {
                    if present {
                        return Err(self.invalid(&key(setting), "applies to MySQL/MariaDB sources only"));
                    }
                }
                if src.on_ddl == Some(OnDdl::Capture) && !src.filters.is_empty() {
                    return Err(self.invalid(
                        &key("on-ddl"),
                        "\"capture\" cannot be combined with filters (recorded DDL may name tables the copies leave \
                         out); use on-ddl = \"full\", or remove the filters",
                    ));
                }
            } else if src.on_ddl.is_some() {
                return Err(self.invalid(&key("on-ddl"), "applies to PostgreSQL sources with incrementals only"));
            } else if src.slot_warning_mib.is_some() {
                return Err(self.invalid(&key("slot-warning-mib"), "applies to PostgreSQL sources only"));
            } else if src.incrementals.is_some() {
                return Err(self.invalid(
                    &key("incrementals"),
                    "applies to PostgreSQL sources only (MySQL/MariaDB sources always can take incrementals)",
                ));
            }
            if src.users_include_root == Some(true) && src.users != Some(true) && url.database().is_some() {
                return Err(self.invalid(
                    &key("users-include-root"),
                    "needs users = true (a copy of one database records accounts only then)",
                ));
            }
            if src.jobs == Some(0) {
                return Err(self.invalid(&key("jobs"), "expected at least 1"));
            }
            if src.chunk_size_mib == Some(0) {
                return Err(self.invalid(&key("chunk-size-mib"), "expected at least 1"));
            }
            if src.lock_wait_seconds.is_some_and(|wait| wait > MAX_LOCK_WAIT_SECONDS) {
                return Err(self.invalid(
                    &key("lock-wait-seconds"),
                    format!("expected at most {MAX_LOCK_WAIT_SECONDS} (a day)"),
                ));
            }
        }
        Ok(())
    }

    /// The named source with its password resolved.
    ///
    /// # Errors
    /// [`ConfigError::Unknown`] or [`ConfigError::SecretFile`].
    pub fn source(&self, name: &str) -> Result<SourceSpec, ConfigError> {
        let settings = self.settings.sources.get(name).ok_or_else(|| ConfigError::Unknown {
            kind: "source",
            name: name.to_string(),
            hint: self.known("sources", self.settings.sources.keys()),
        })?;
        let mut url = SourceUrl::parse(&settings.url).map_err(|e| self.invalid(&format!("sources.{name}.url"), e))?;
        if let Some(password) = &settings.password {
            url.password = Some(password.clone());
        }
        if let Some(path) = &settings.password_file {
            url.password = Some(read_secret(&format!("sources.{name}.password-file"), path)?);
        }
        Ok(SourceSpec {
            name: name.to_string(),
            url,
        })
    }

    fn known<'a>(&self, what: &str, names: impl Iterator<Item = &'a String>) -> String {
        let names: Vec<&str> = names.map(String::as_str).collect();
        if names.is_empty() {
            format!("no {what} are configured")
        } else {
            format!("configured {what}: {}", names.join(", "))
        }
    }

    /// How locks are taken.
    pub fn lock_options(&self) -> LockOptions {
        let mut options = LockOptions::default();
        if let Some(dir) = &self.settings.lock_dir {
            options.lock_dir = dir.clone();
        }
        if let Some(ttl) = self.settings.lock_ttl_seconds {
            options.ttl = Duration::from_secs(ttl);
        }
        options
    }

    /// The merged configuration as TOML, with every secret masked.
    pub fn show(&self) -> String {
        let mut settings = self.settings.clone();
        for source in settings.sources.values_mut() {
            source.url = redact_url(&source.url);
        }
        toml::to_string_pretty(&settings).unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}

/// Reads a secret file named by setting `key`.
///
/// # Errors
/// [`ConfigError::SecretFile`] naming `key` and the path.
fn read_secret(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    crate::secret::read_file(path).map_err(|source| ConfigError::SecretFile {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    })
}
