//! The `[notifications]` settings: where run outcomes are posted, and which.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Which outcomes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyOn {
    Failure,
    Success,
}

/// `[notifications]`: a webhook that receives each run's outcome as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Notifications {
    /// `http://` or `https://` URL the outcomes are posted to. Webhook URLs often carry a token,
    /// so it is kept like a password: never printed.
    pub webhook_url: Option<Secret>,
    /// Which outcomes to send (default: failures only).
    pub on: Option<Vec<NotifyOn>>,
    /// How long one attempt may take (default 10 seconds).
    pub timeout_seconds: Option<u64>,
    /// Attempts after the first when the receiver fails or cannot be reached (default 2).
    pub retries: Option<u32>,
}

impl Notifications {
    /// Whether an outcome that `succeeded` (or not) is sent.
    pub fn wants(&self, succeeded: bool) -> bool {
        let wanted = if succeeded {
            NotifyOn::Success
        } else {
            NotifyOn::Failure
        };
        match &self.on {
            Some(on) => on.contains(&wanted),
            None => wanted == NotifyOn::Failure,
        }
    }

    /// Checks what can be checked without sending anything.
    ///
    /// # Errors
    /// The key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(url) = &self.webhook_url {
            match url::Url::parse(url.expose()) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some() => {}
                // The URL itself is not repeated: it may hold a token.
                _ => {
                    return Err((
                        "notifications.webhook-url",
                        "expected an http:// or https:// URL with a host".into(),
                    ));
                }
            }
        } else if self.on.is_some() || self.timeout_seconds.is_some() || self.retries.is_some() {
            return Err((
                "notifications.webhook-url",
                "the other [notifications] settings need a webhook-url".into(),
            ));
        }
        if self.timeout_seconds == Some(0) {
            return Err(("notifications.timeout-seconds", "expected at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_only_by_default_and_urls_are_checked_without_being_repeated() {
        let mut settings = Notifications {
            webhook_url: Some(Secret::new("https://hooks.example/T0KEN")),
            ..Notifications::default()
        };
        assert!(settings.wants(false) && !settings.wants(true));
        settings.on = Some(vec![NotifyOn::Success]);
        assert!(!settings.wants(false) && settings.wants(true));
        assert_eq!(settings.validate(), Ok(()));
        settings.webhook_url = Some(Secret::new("ftp://T0KEN@host/x"));
        let (key, message) = settings.validate().unwrap_err();
        assert_eq!(key, "notifications.webhook-url");
        assert!(!message.contains("T0KEN"), "{message}");
        settings.webhook_url = None;
        assert!(settings.validate().is_err(), "settings without a URL");
    }
}
