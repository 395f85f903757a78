//! Database sources: which engines exist, how a source URL is read, and (in later work) how each
//! engine takes copies. Engine specifics stay in their own submodules.

use std::fmt;

use crate::exit::{Classify, ExitStatus};
use crate::secret::{MASK, Secret};

/// The database engines cairn backs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Postgres => "PostgreSQL",
            Engine::Mysql => "MySQL/MariaDB",
        })
    }
}

/// A source database URL with its password held apart, so it can be shown safely.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceUrl {
    pub engine: Engine,
    /// The URL without its password.
    url: url::Url,
    pub password: Option<Secret>,
}

impl fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceUrl({self})")
    }
}

impl fmt::Display for SourceUrl {
    /// The URL with the password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.password.is_some() {
            let mut shown = self.url.clone();
            let _ = shown.set_password(Some(MASK));
            write!(f, "{shown}")
        } else {
            write!(f, "{}", self.url)
        }
    }
}

impl SourceUrl {
    /// Parses `postgres://`, `postgresql://`, `mysql://` or `mariadb://` URLs.
    ///
    /// # Errors
    /// A sentence saying what is wrong; it never contains the password.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut url = url::Url::parse(text).map_err(|e| format!("not a valid URL ({e})"))?;
        let engine = match url.scheme() {
            "postgres" | "postgresql" => Engine::Postgres,
            "mysql" | "mariadb" => Engine::Mysql,
            other => {
                return Err(format!(
                    "unsupported scheme {other:?}: use postgres://, postgresql://, mysql:// or mariadb://"
                ));
            }
        };
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the host is missing, e.g. postgres://user@db1:5432/app".into());
        }
        let password = url.password().map(|p| {
            Secret::new(
                url::form_urlencoded::parse(format!("p={p}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default(),
            )
        });
        let _ = url.set_password(None);
        Ok(SourceUrl { engine, url, password })
    }

    /// The URL without its password, for drivers that take the password separately.
    pub fn without_password(&self) -> &url::Url {
        &self.url
    }

    /// A source name derived from the URL when none is given: `host-port[-database]`,
    /// lowercased, with every other character turned into `-`.
    pub fn default_name(&self) -> String {
        let host = self.url.host_str().unwrap_or("source");
        let port = self.url.port().map(|p| p.to_string()).unwrap_or_else(|| {
            match self.engine {
                Engine::Postgres => "5432",
                Engine::Mysql => "3306",
            }
            .to_string()
        });
        let database = self.url.path().trim_start_matches('/');
        let raw = if database.is_empty() {
            format!("{host}-{port}")
        } else {
            format!("{host}-{port}-{database}")
        };
        let mut name: String = raw
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        while name.contains("--") {
            name = name.replace("--", "-");
        }
        name.trim_matches('-').to_string()
    }
}

/// A configured source: its name and where it is.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    pub url: SourceUrl,
}

impl SourceSpec {
    pub fn engine(&self) -> Engine {
        self.url.engine
    }
}

/// Errors of sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "source {source_name} is a {engine} database, and this cairn {cairn} cannot {action} {engine} databases yet: \
         the engine is not part of this build"
    )]
    EngineNotAvailable {
        source_name: String,
        engine: Engine,
        action: &'static str,
        cairn: &'static str,
    },
}

impl Classify for SourceError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            SourceError::EngineNotAvailable { .. } => ExitStatus::Usage,
        }
    }
}

/// Checks that this build can `action` ("back up", "restore") `source`'s engine.
///
/// # Errors
/// [`SourceError::EngineNotAvailable`] until the engine lands.
pub fn ensure_engine(source_name: &str, engine: Engine, action: &'static str) -> Result<(), SourceError> {
    Err(SourceError::EngineNotAvailable {
        source_name: source_name.to_string(),
        engine,
        action,
        cairn: crate::CAIRN_VERSION,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_password_apart() {
        let url = SourceUrl::parse("postgres://backup:p%40ss@DB1.example:6543/App").unwrap();
        assert_eq!(url.engine, Engine::Postgres);
        assert_eq!(url.password.as_ref().unwrap().expose(), "p@ss");
        let shown = url.to_string();
        assert!(
            !shown.contains("p%40ss") && !shown.contains("p@ss") && shown.contains(MASK),
            "{shown}"
        );
        assert!(url.without_password().password().is_none());
        assert_eq!(url.default_name(), "db1-example-6543-app");
        assert_eq!(
            SourceUrl::parse("mariadb://root@127.0.0.1").unwrap().default_name(),
            "127-0-0-1-3306"
        );
    }

    #[test]
    fn bad_urls_are_explained() {
        assert!(
            SourceUrl::parse("oracle://x")
                .unwrap_err()
                .contains("unsupported scheme \"oracle\"")
        );
        assert!(SourceUrl::parse("not a url").unwrap_err().contains("not a valid URL"));
        let err = SourceUrl::parse("mysql://root:topsecret@/db").unwrap_err();
        assert!(!err.contains("topsecret"), "{err}");
    }
}
