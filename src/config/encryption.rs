//! The `[encryption]` settings (top level, overridable per source as
//! `[sources.NAME.encryption]`): where the key new copies are encrypted with comes from — a
//! file, an environment variable or a command (a secrets manager) — and the older keys kept for
//! reading older copies. Key text never reaches an error or a log: only where it came from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};
use crate::repo::crypt::Key;

/// `[encryption]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EncryptionSettings {
    /// A key file (`cairn key generate FILE` writes one).
    pub key_file: Option<PathBuf>,
    /// An environment variable holding the key file's text.
    pub key_env: Option<String>,
    /// A command (run by `sh -c`) that prints the key file's text.
    pub key_command: Option<String>,
    /// Keys kept for reading copies encrypted before a rotation.
    #[serde(default)]
    pub old_key_files: Vec<PathBuf>,
}

impl EncryptionSettings {
    /// Checks that exactly one source of the key is named.
    pub(super) fn validate(&self, at: &str) -> Result<(), String> {
        let named = [
            self.key_file.is_some(),
            self.key_env.is_some(),
            self.key_command.is_some(),
        ]
        .iter()
        .filter(|n| **n)
        .count();
        match named {
            1 => Ok(()),
            0 if !self.old_key_files.is_empty() => Ok(()),
            0 => Err(format!("{at}: name the key: key-file, key-env or key-command")),
            _ => Err(format!("{at}: name one of key-file, key-env and key-command")),
        }
    }

    /// The key new copies are encrypted with, if one is named.
    fn current(&self, at: &str) -> Result<Option<Key>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: "configuration".into(),
            key: at.to_string(),
            message,
        };
        if let Some(path) = &self.key_file {
            return key_from_file(path, &format!("{at}.key-file")).map(Some);
        }
        if let Some(variable) = &self.key_env {
            let text = std::env::var(variable)
                .map_err(|_| invalid(format!("key-env: the environment variable {variable} is not set")))?;
            return Key::parse(&text, &format!("the environment variable {variable}"))
                .map(Some)
                .map_err(|e| invalid(e.to_string()));
        }
        if let Some(command) = &self.key_command {
            let output = std::process::Command::new("sh")
                .args(["-c", command])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| invalid(format!("key-command: cannot run it: {e}")))?;
            if !output.status.success() {
                return Err(invalid(format!("key-command exited with {}", output.status)));
            }
            let text = String::from_utf8(output.stdout)
                .map_err(|_| invalid("key-command printed something that is not text".into()))?;
            return Key::parse(&text, "the output of key-command")
                .map(Some)
                .map_err(|e| invalid(e.to_string()));
        }
        Ok(None)
    }
}

/// Reads a key file; `key` names the setting, for errors.
fn key_from_file(path: &Path, key: &str) -> Result<Key, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    Key::parse(&text, &path.display().to_string()).map_err(|e| ConfigError::Invalid {
        origin: "configuration".into(),
        key: key.to_string(),
        message: e.to_string(),
    })
}

impl Config {
    /// The `[encryption]` that applies to `source`: its own, else the top-level one.
    fn encryption_of(&self, source: &str) -> Option<(&EncryptionSettings, String)> {
        match self.settings.sources.get(source).and_then(|s| s.encryption.as_ref()) {
            Some(own) => Some((own, format!("sources.{source}.encryption"))),
            None => self
                .settings
                .encryption
                .as_ref()
                .map(|top| (top, "encryption".to_string())),
        }
    }

    /// The key `source`'s new copies are encrypted with; `None`: not encrypted.
    ///
    /// # Errors
    /// A key that cannot be read.
    pub fn writing_key_of(&self, source: &str) -> Result<Option<Key>, ConfigError> {
        let own = match self.encryption_of(source) {
            Some((settings, at)) => settings.current(&at)?,
            None => None,
        };
        // A source section naming only old keys adds keys to read with; it does not turn the
        // top-level key off.
        match (own, &self.settings.encryption) {
            (Some(key), _) => Ok(Some(key)),
            (None, Some(top)) => top.current("encryption"),
            (None, None) => Ok(None),
        }
    }

    /// Every key the configuration names, for reading copies: each section's current key and
    /// its old ones. A key that cannot be read is left out with a warning (the copies that need
    /// it say so when they are read), so commands that need no key still work without it.
    pub fn reading_keys(&self) -> Vec<Key> {
        let mut sections: Vec<(&EncryptionSettings, String)> = Vec::new();
        if let Some(top) = &self.settings.encryption {
            sections.push((top, "encryption".into()));
        }
        for (name, source) in &self.settings.sources {
            if let Some(own) = &source.encryption {
                sections.push((own, format!("sources.{name}.encryption")));
            }
        }
        let mut keys = Vec::new();
        for (settings, at) in sections {
            match settings.current(&at) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => {}
                Err(e) => tracing::warn!("{e}; copies encrypted with that key cannot be read"),
            }
            for path in &settings.old_key_files {
                match key_from_file(path, &format!("{at}.old-key-files")) {
                    Ok(key) => keys.push(key),
                    Err(e) => tracing::warn!("{e}; copies encrypted with that key cannot be read"),
                }
            }
        }
        keys
    }
}
