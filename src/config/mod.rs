//! The configuration: a TOML file merged with `CAIRN_…` environment variables, validated
//! without touching the network (see docs/configuration.md).
//!
//! Environment variables name a setting by its path: `CAIRN_` followed by the path's segments
//! joined with `__`, each upper-cased with `-` written as `_`. So `jobs` is `CAIRN_JOBS`,
//! `retention.hourly` is `CAIRN_RETENTION__HOURLY` and `sources.app-db.password` is
//! `CAIRN_SOURCES__APP_DB__PASSWORD`. Names of sources and destinations are therefore limited to
//! lowercase letters, digits and `-`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{SourceSpec, SourceUrl};
use crate::exit::{Classify, ExitStatus};
use crate::repo::kinds::RunType;
use crate::repo::lock::LockOptions;
use crate::secret::{Secret, redact_url};
use crate::storage::{DestinationSpec, s3::MIN_PART_SIZE};

/// Environment variables that are not settings.
const NOT_SETTINGS: &[&str] = &["CAIRN_CONFIG", "CAIRN_LOG"];
/// Prefixes of environment variables that belong to the test environment, not to cairn.
const FOREIGN_PREFIXES: &[&str] = &["CAIRN_TEST_"];
/// Settings whose environment value is a number.
const INTEGER_KEYS: &[&str] = &[
    "jobs",
    "replica-server-id",
    "lock-ttl-seconds",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "part-size-mib",
    "upload-concurrency",
    "chunk-size-mib",
    "lock-wait-seconds",
];
/// Settings whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "include-schemas",
    "exclude-schemas",
    "exclude-tables",
    "exclude-table-data",
];
/// Settings whose environment value is `true` or `false`.
const BOOLEAN_KEYS: &[&str] = &["path-style", "checksums"];

/// Copies to keep per run type; used by `cairn purge`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Retention {
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
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
    /// Overrides the top-level `full-backup` for this source.
    pub full_backup: Option<RunType>,
    pub jobs: Option<u32>,
    /// Overrides the top-level `chunk-size-mib`.
    pub chunk_size_mib: Option<u64>,
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
    /// How long a copy waits for a lock on a table before failing (default 30).
    pub lock_wait_seconds: Option<u64>,
    #[serde(default)]
    pub retention: Retention,
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

impl Classify for ConfigError {
    fn exit_status(&self) -> ExitStatus {
        ExitStatus::Usage
    }
}

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
        let env_origins = overlay_env(&mut table, env)?;
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
        if s.chunk_size_mib == Some(0) {
            return Err(self.invalid("chunk-size-mib", "expected at least 1"));
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
                && mib * 1024 * 1024 < MIN_PART_SIZE
            {
                return Err(self.invalid(&key("part-size-mib"), "expected at least 5 (S3's smallest part)"));
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
            if url.engine == crate::engine::Engine::Postgres {
                for (setting, present) in [
                    ("checksums", src.checksums.is_some()),
                    ("consistency", src.consistency.is_some()),
                    ("replica-server-id", src.replica_server_id.is_some()),
                    ("on-log-gap", src.on_log_gap.is_some()),
                ] {
                    if present {
                        return Err(self.invalid(&key(setting), "applies to MySQL/MariaDB sources only"));
                    }
                }
            }
            if src.jobs == Some(0) {
                return Err(self.invalid(&key("jobs"), "expected at least 1"));
            }
            if src.chunk_size_mib == Some(0) {
                return Err(self.invalid(&key("chunk-size-mib"), "expected at least 1"));
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

    /// The named destination, or a destination URL, with secrets resolved.
    ///
    /// # Errors
    /// [`ConfigError`] for an unknown name, a bad URL or an unreadable secret file.
    pub fn destination(&self, name_or_url: &str) -> Result<DestinationSpec, ConfigError> {
        let Some(settings) = self.settings.destinations.get(name_or_url) else {
            return DestinationSpec::parse(name_or_url).map_err(|e| ConfigError::Invalid {
                origin: "the command line".into(),
                key: "destination".into(),
                message: e.to_string(),
            });
        };
        let key = |k: &str| format!("destinations.{name_or_url}.{k}");
        let mut spec = DestinationSpec::parse(&settings.url).map_err(|e| self.invalid(&key("url"), e.to_string()))?;
        if let DestinationSpec::S3(options) = &mut spec {
            if settings.endpoint.is_some() {
                options.endpoint = settings.endpoint.clone();
                options.path_style = true;
            }
            if settings.region.is_some() {
                options.region = settings.region.clone();
            }
            if let Some(path_style) = settings.path_style {
                options.path_style = path_style;
            }
            options.access_key_id = settings.access_key_id.clone();
            options.secret_access_key = settings.secret_access_key.clone();
            if let Some(path) = &settings.secret_access_key_file {
                options.secret_access_key = Some(read_secret(&key("secret-access-key-file"), path)?);
            }
            if let Some(mib) = settings.part_size_mib {
                options.part_size = mib * 1024 * 1024;
            }
            if let Some(n) = settings.upload_concurrency {
                options.upload_concurrency = n as usize;
            }
        }
        Ok(spec)
    }

    /// The destination a source writes to when the command line names none.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when no destination can be chosen.
    pub fn destination_of(&self, source: &str) -> Result<DestinationSpec, ConfigError> {
        let name = self
            .settings
            .sources
            .get(source)
            .and_then(|s| s.destination.clone())
            .or_else(|| self.settings.destination.clone())
            .or_else(|| {
                (self.settings.destinations.len() == 1)
                    .then(|| self.settings.destinations.keys().next().cloned())
                    .flatten()
            })
            .ok_or_else(|| ConfigError::Invalid {
                origin: self.origin_of("destination"),
                key: format!("sources.{source}.destination"),
                message: "no destination is given: pass --to, or set destination in the configuration".into(),
            })?;
        self.destination(&name)
    }

    /// The full-backup policy of a source.
    pub fn full_backup_of(&self, source: &str) -> RunType {
        self.settings
            .sources
            .get(source)
            .and_then(|s| s.full_backup)
            .or(self.settings.full_backup)
            .unwrap_or(RunType::Daily)
    }

    /// Parallel connections for a source.
    pub fn jobs_of(&self, source: &str) -> u32 {
        self.settings
            .sources
            .get(source)
            .and_then(|s| s.jobs)
            .or(self.settings.jobs)
            .unwrap_or_else(crate::engine::default_jobs)
    }

    /// How a source's copies are taken (`jobs` as given on the command line wins).
    pub fn copy_options_of(&self, source: &str, jobs: Option<u32>) -> crate::engine::CopyOptions {
        let settings = self.settings.sources.get(source);
        let mut options = crate::engine::CopyOptions {
            jobs: jobs.unwrap_or_else(|| self.jobs_of(source)),
            ..Default::default()
        };
        if let Some(mib) = settings.and_then(|s| s.chunk_size_mib).or(self.settings.chunk_size_mib) {
            options.chunk_bytes = mib * 1024 * 1024;
        }
        if let Some(seconds) = settings
            .and_then(|s| s.lock_wait_seconds)
            .or(self.settings.lock_wait_seconds)
        {
            options.lock_wait = Duration::from_secs(seconds);
        }
        if let Some(settings) = settings {
            options.filters = settings.filters.clone();
            options.lock_free = settings.consistency == Some(Consistency::LockFree);
            options.checksums = settings.checksums.unwrap_or(false);
            options.replica_server_id = settings.replica_server_id;
            options.full_on_log_gap = settings.on_log_gap == Some(OnLogGap::Full);
        }
        options
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

/// Writes `CAIRN_…` variables into `table`; returns which setting came from which variable.
fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut origins = BTreeMap::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("CAIRN_"))
        .filter(|(k, _)| !NOT_SETTINGS.contains(&k.as_str()))
        .filter(|(k, _)| !FOREIGN_PREFIXES.iter().any(|p| k.starts_with(p)))
        .collect();
    vars.sort();
    for (var, value) in vars {
        let origin = format!("environment variable {var}");
        let segments: Vec<String> = var["CAIRN_".len()..]
            .split("__")
            .map(|s| s.to_lowercase().replace('_', "-"))
            .collect();
        let path = segments.join(".");
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::Invalid {
                origin,
                key: path,
                message: "empty segment in the variable name".into(),
            });
        }
        let last = segments.last().expect("split yields at least one segment");
        let parsed = if INTEGER_KEYS.contains(&last.as_str()) {
            value.trim().parse::<i64>().map(toml::Value::Integer).ok()
        } else if LIST_KEYS.contains(&last.as_str()) {
            Some(toml::Value::Array(
                value
                    .split(',')
                    .map(|p| toml::Value::String(p.trim().to_string()))
                    .filter(|p| p.as_str() != Some(""))
                    .collect(),
            ))
        } else if BOOLEAN_KEYS.contains(&last.as_str()) {
            value.trim().parse::<bool>().map(toml::Value::Boolean).ok()
        } else {
            None
        };
        let value = parsed.unwrap_or(toml::Value::String(value));
        let mut node = &mut *table;
        for (i, segment) in segments[..segments.len() - 1].iter().enumerate() {
            let entry = node
                .entry(segment.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = match entry {
                toml::Value::Table(inner) => inner,
                _ => {
                    return Err(ConfigError::Invalid {
                        origin,
                        key: segments[..=i].join("."),
                        message: "this setting is not a section".into(),
                    });
                }
            };
        }
        node.insert(last.clone(), value);
        origins.insert(path, origin);
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn unknown_keys_name_the_file_and_the_key() {
        let err = load("[sources.app]\nurl = \"postgres://h/db\"\njobz = 3\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cairn.toml") && err.contains("sources.app") && err.contains("jobz"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        let err = load("full-backup = \"dayly\"\n", &[]).unwrap_err().to_string();
        assert!(
            err.contains("full-backup") && err.contains("dayly") && err.contains("daily"),
            "{err}"
        );
        let err = load("[retention]\nhourly = -1\n", &[]).unwrap_err().to_string();
        assert!(err.contains("retention.hourly"), "{err}");
        let err = load("[sources.app]\nurl = \"oracle://h\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sources.app.url") && err.contains("unsupported scheme"),
            "{err}"
        );
        let err = load("jobs = 0\n", &[]).unwrap_err().to_string();
        assert!(err.contains("jobs: expected at least 1"), "{err}");
        let err = load("[sources.app]\nurl = \"mysql://h\"\ndestination = \"nowhere\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sources.app.destination") && err.contains("nowhere"),
            "{err}"
        );
        let err = load("[destinations.local]\nurl = \"/b\"\nregion = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("destinations.local.region") && err.contains("only S3"),
            "{err}"
        );
        let err = load("[sources.App]\nurl = \"mysql://h\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sources.App"), "{err}");
        let err = load("jobs = [", &[]).unwrap_err().to_string();
        assert!(err.contains("invalid TOML"), "{err}");
    }

    #[test]
    fn environment_overrides_and_adds_settings() {
        let config = load(
            "jobs = 2\n[sources.app-db]\nurl = \"postgres://backup@h/app\"\n",
            &[
                ("CAIRN_JOBS", "6"),
                ("CAIRN_RETENTION__HOURLY", "24"),
                ("CAIRN_SOURCES__APP_DB__PASSWORD", "from-env"),
                ("CAIRN_SOURCES__OTHER__URL", "mysql://root@h2"),
                ("CAIRN_CONFIG", "/ignored"),
                ("CAIRN_TEST_PG_URL", "postgres://ignored"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(config.settings.jobs, Some(6));
        assert_eq!(config.settings.retention.hourly, Some(24));
        assert_eq!(
            config.source("app-db").unwrap().url.password.unwrap().expose(),
            "from-env"
        );
        assert_eq!(config.source("other").unwrap().url.engine, crate::engine::Engine::Mysql);
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let err = load("", &[("CAIRN_JOBS", "many")]).unwrap_err().to_string();
        assert!(
            err.contains("environment variable CAIRN_JOBS") && err.contains("jobs"),
            "{err}"
        );
        let err = load("", &[("CAIRN_COLOUR", "red")]).unwrap_err().to_string();
        assert!(
            err.contains("environment variable CAIRN_COLOUR") && err.contains("colour"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_masked_and_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("pw");
        std::fs::write(&secret_file, "file-secret\n").unwrap();
        let text = format!(
            "[sources.a]\nurl = \"postgres://u:url-secret@h/db\"\n[sources.b]\nurl = \"mysql://u@h\"\npassword-file = {:?}\n\
             [destinations.s3]\nurl = \"s3://bkt/p\"\naccess-key-id = \"AKIA\"\nsecret-access-key = \"key-secret\"\n",
            secret_file.display().to_string()
        );
        let config = load(
            &text,
            &[
                ("CAIRN_SOURCES__C__URL", "mysql://u@h"),
                ("CAIRN_SOURCES__C__PASSWORD", "env-secret"),
            ],
        )
        .unwrap();
        let shown = config.show();
        for secret in ["url-secret", "file-secret", "key-secret", "env-secret"] {
            assert!(!shown.contains(secret), "{secret} leaked into:\n{shown}");
        }
        assert!(!format!("{config:?}").contains("key-secret"));
        assert_eq!(
            config.source("b").unwrap().url.password.unwrap().expose(),
            "file-secret"
        );
        let DestinationSpec::S3(options) = config.destination("s3").unwrap() else {
            panic!("not S3")
        };
        assert_eq!(options.secret_access_key.unwrap().expose(), "key-secret");
        let err = load("[sources.a]\nurl = \"postgres://u:x@h/db\"\npassword = \"y\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sources.a.password") && !err.contains("\"y\""), "{err}");
    }

    #[test]
    fn filters_come_from_the_file_and_the_environment() {
        let config = load(
            "[sources.app]\nurl = \"postgres://h/db\"\n[sources.app.filters]\nexclude-tables = [\"public.tmp_*\"]\n",
            &[("CAIRN_SOURCES__APP__FILTERS__EXCLUDE_SCHEMAS", "audit, scratch")],
        )
        .unwrap();
        let options = config.copy_options_of("app", None);
        assert_eq!(options.filters.exclude_tables, ["public.tmp_*"]);
        assert_eq!(options.filters.exclude_schemas, ["audit", "scratch"]);
        let err = load(
            "[sources.app]\nurl = \"postgres://h/db\"\n[sources.app.filters]\nexclude-table = [\"x\"]\n",
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("sources.app.filters") && text.contains("exclude-table"),
            "{text}"
        );
    }

    #[test]
    fn the_example_configuration_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cairn.example.toml");
        let config = Config::load(Some(&path), std::iter::empty()).unwrap();
        assert!(!config.settings.sources.is_empty() && !config.settings.destinations.is_empty());
        for name in config.settings.sources.keys() {
            config.destination_of(name).unwrap();
        }
    }
}
