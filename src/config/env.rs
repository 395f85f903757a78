//! `CAIRN_…` environment variables as settings: which variable names which key, and how its
//! text becomes a number, a list or a flag.

use std::collections::BTreeMap;

use super::ConfigError;

/// Environment variables that are not settings.
pub(super) const NOT_SETTINGS: &[&str] = &["CAIRN_CONFIG", "CAIRN_LOG", "CAIRN_LOG_FORMAT", "CAIRN_PG_DUMP"];
/// Prefixes of environment variables that belong to the test environment, not to cairn.
pub(super) const FOREIGN_PREFIXES: &[&str] = &["CAIRN_TEST_"];
/// Settings whose environment value is a number.
pub(super) const INTEGER_KEYS: &[&str] = &[
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
    "compression-level",
];
/// Settings whose environment value is a comma-separated list.
pub(super) const LIST_KEYS: &[&str] = &[
    "include-schemas",
    "exclude-schemas",
    "exclude-tables",
    "exclude-table-data",
];
/// Settings whose environment value is `true` or `false`.
pub(super) const BOOLEAN_KEYS: &[&str] = &["path-style", "checksums", "incrementals", "users", "users-include-root"];

/// Whether the environment variable `name` is a setting (`CAIRN_…`, but not one of
/// `CAIRN_CONFIG`, `CAIRN_LOG`, `CAIRN_LOG_FORMAT`, `CAIRN_PG_DUMP` or the test environment's).
pub fn is_setting(name: &str) -> bool {
    name.starts_with("CAIRN_")
        && !NOT_SETTINGS.contains(&name)
        && !FOREIGN_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// Writes `CAIRN_…` variables into `table`; returns which setting came from which variable.
pub(super) fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut origins = BTreeMap::new();
    let mut vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| is_setting(k)).collect();
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
