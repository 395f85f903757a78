//! Where a source's copies go: a destination named in the configuration (or given as a URL)
//! with its secrets resolved, and the destination — or destinations — of each source.

use super::{Config, ConfigError, read_secret};
use crate::storage::DestinationSpec;

impl Config {
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
                options.part_size = mib.saturating_mul(1024 * 1024);
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
            .and_then(|s| {
                s.destination
                    .clone()
                    .or_else(|| s.destinations.as_ref().and_then(|d| d.first().cloned()))
            })
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

    /// The destinations a source writes to besides [`Config::destination_of`]'s
    /// (`destinations = [...]`).
    ///
    /// # Errors
    /// [`ConfigError::Unknown`] for a destination that is not configured.
    pub fn more_destinations_of(&self, source: &str) -> Result<Vec<DestinationSpec>, ConfigError> {
        let names = self
            .settings
            .sources
            .get(source)
            .and_then(|s| s.destinations.clone())
            .unwrap_or_default();
        names.iter().skip(1).map(|name| self.destination(name)).collect()
    }
}
