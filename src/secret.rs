//! Secret values (passwords, keys) that must never reach logs, errors, status files or `--help`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What every masked secret is printed as.
pub const MASK: &str = "********";

/// A string that prints as [`MASK`] through `Debug`, `Display` and `Serialize`.
///
/// The only way to the value is [`Secret::expose`], which makes each use easy to audit.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for handing to a driver or SDK; never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Returns `url` with any password replaced by [`MASK`]; text that is not a URL is returned as is.
///
/// ```
/// assert_eq!(
///     cairn::secret::redact_url("mysql://backup:hunter2@db1:3306"),
///     "mysql://backup:********@db1:3306"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // set_password only fails for URLs that cannot have one, which we just ruled out.
            let _ = parsed.set_password(Some(MASK));
            parsed.to_string()
        }
        Ok(parsed) if parsed.host_str().is_some() => url.to_string(),
        // Not a URL with a host (`postgres//user:pw@host`, `postgres:/user:pw@host`): whatever
        // stands between `user:` and `@` may still be a password.
        _ => match url.rsplit_once('@') {
            Some((before, after)) => {
                let userinfo_start = before.rfind('/').map_or(0, |i| i + 1);
                match before[userinfo_start..].find(':') {
                    Some(colon) => format!("{}{MASK}@{after}", &before[..userinfo_start + colon + 1]),
                    None => url.to_string(),
                }
            }
            None => url.to_string(),
        },
    }
}

/// `text` with the password of every URL in it masked: for error messages that are stored or
/// sent (the run history, notifications), where a driver's message might quote a URL.
pub fn mask_urls(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|word| match word.contains("://") && word.contains('@') {
            true => {
                let trimmed = word.trim_end();
                let url_start = trimmed.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(0);
                let end = trimmed
                    .trim_end_matches(['"', '\'', ')', ',', ';', '.', ':'])
                    .len()
                    .max(url_start);
                format!(
                    "{}{}{}{}",
                    &trimmed[..url_start],
                    redact_url(&trimmed[url_start..end]),
                    &trimmed[end..],
                    &word[trimmed.len()..]
                )
            }
            false => word.to_string(),
        })
        .collect()
}

/// Reads a secret from a file, without its trailing newline.
///
/// # Errors
/// The file's read error.
pub fn read_file(path: &std::path::Path) -> std::io::Result<Secret> {
    let text = std::fs::read_to_string(path)?;
    // A trailing newline is how editors and `echo` leave files, never part of the secret.
    Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), MASK);
        assert_eq!(format!("{secret:?}"), MASK);
        assert_eq!(serde_json::to_string(&secret).unwrap(), format!("\"{MASK}\""));
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn urls_in_messages_lose_their_password() {
        let text = "cannot connect to \"mysql://backup:hunter2@db1:3306/app\": refused; see postgres://u:pw@h/d.";
        let masked = mask_urls(text);
        assert!(!masked.contains("hunter2") && !masked.contains(":pw@"), "{masked}");
        assert!(masked.starts_with("cannot connect to \"mysql://backup:"), "{masked}");
        assert!(masked.ends_with("@h/d."), "{masked}");
        assert_eq!(mask_urls("no url here\n"), "no url here\n");
    }

    #[test]
    fn urls_lose_their_password() {
        let redacted = redact_url("postgres://backup:s3cr%3At@db1:5432/app");
        assert!(!redacted.contains("s3cr"), "{redacted}");
        assert!(redacted.contains("backup:"), "{redacted}");
        assert_eq!(redact_url("mysql://root@db"), "mysql://root@db");
        assert_eq!(redact_url("/var/backups"), "/var/backups");
        for text in ["postgres//backup:hunter2@db1/app", "postgres:/backup:hunter2@db1/app"] {
            let malformed = redact_url(text);
            assert!(
                !malformed.contains("hunter2") && malformed.contains("db1/app"),
                "{malformed}"
            );
        }
    }
}
