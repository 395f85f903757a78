//! Where a database is: its engine, and its URL with the password held apart so it can be
//! shown safely.

use std::fmt;

use super::{MysqlRestoreOptions, Until};
use crate::secret::{MASK, Secret};

/// The database engines cairn backs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
}

impl Engine {
    /// Refuses restore options that targets of this engine do not take, naming them.
    ///
    /// # Errors
    /// One sentence naming the options and what the engine does instead.
    pub fn check_restore(self, mysql: &MysqlRestoreOptions, until: Option<&Until>) -> Result<(), String> {
        // A PostgreSQL target may receive a MySQL copy (translated): which stop points apply, the
        // copy's engine says, once the restore has read the status (`check_until`).
        if self == Engine::Mysql {
            self.check_until(until)?;
        }
        // `--rename-db` also places a MySQL copy's databases in PostgreSQL schemas; which copy it
        // is, the restore knows once it has read the status.
        let given: Vec<&str> = match self {
            Engine::Mysql => Vec::new(),
            Engine::Postgres => mysql
                .flags_given()
                .into_iter()
                .filter(|f| *f != "--rename-db")
                .collect(),
        };
        if given.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} {} to MySQL/MariaDB targets only; a PostgreSQL copy goes into the database of --target and is checked \
             by row counts",
            given.join(", "),
            if given.len() == 1 { "applies" } else { "apply" }
        ))
    }

    /// Refuses a stop point that chains of this engine (the copy's) do not have.
    ///
    /// # Errors
    /// One sentence naming the flag and the ones this engine takes.
    pub fn check_until(self, until: Option<&Until>) -> Result<(), String> {
        let until = match until {
            Some(Until::Gtid(_)) => Some(("--until-gtid", Engine::Mysql)),
            Some(Until::Position { .. }) => Some(("--until-position", Engine::Mysql)),
            Some(Until::Lsn(_)) => Some(("--until-lsn", Engine::Postgres)),
            Some(Until::Xid(_)) => Some(("--until-xid", Engine::Postgres)),
            Some(Until::Time(_)) | None => None,
        };
        if let Some((flag, engine)) = until
            && engine != self
        {
            return Err(format!(
                "{flag} applies to {engine} chains only; for {self} use {}",
                match self {
                    Engine::Mysql => "--until TIME, --until-gtid or --until-position",
                    Engine::Postgres => "--until TIME, --until-lsn or --until-xid",
                }
            ));
        }
        Ok(())
    }
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
        for scheme in ["postgres", "postgresql", "mysql", "mariadb"] {
            if let Some(rest) = text.strip_prefix(scheme)
                && !rest.starts_with("://")
                && (rest.starts_with(':') || rest.starts_with('/'))
            {
                return Err(format!(
                    "malformed URL: {scheme} must be followed by ://, e.g. {scheme}://user@host/database"
                ));
            }
        }
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

    /// Gives a URL typed on the command line its password: from `password_file`, else from the
    /// engine's usual environment variable (`PGPASSWORD`, `MYSQL_PWD`) when the URL has none.
    /// A password inside the URL works, with a warning: every user of the machine sees it in the
    /// process list.
    ///
    /// # Errors
    /// A sentence naming `flag` when the password is given twice or the file cannot be read.
    pub fn complete_from_command_line(
        &mut self,
        flag: &str,
        password_file: Option<&std::path::Path>,
    ) -> Result<(), String> {
        match (&self.password, password_file) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{flag}: give the password once, in the URL or with a password file"
                ));
            }
            (Some(_), None) => tracing::warn!(
                "the password in {flag} is visible to every user of this machine (ps, /proc); use a password file \
                 or the {} environment variable",
                self.password_variable()
            ),
            (None, Some(path)) => {
                self.password = Some(
                    crate::secret::read_file(path)
                        .map_err(|e| format!("{flag}: cannot read secret file {}: {e}", path.display()))?,
                );
            }
            (None, None) => {
                self.password = std::env::var(self.password_variable())
                    .ok()
                    .filter(|p| !p.is_empty())
                    .map(Secret::new);
            }
        }
        Ok(())
    }

    /// The environment variable this engine's own clients read a password from.
    pub fn password_variable(&self) -> &'static str {
        match self.engine {
            Engine::Postgres => "PGPASSWORD",
            Engine::Mysql => "MYSQL_PWD",
        }
    }

    /// The database named in the URL's path, if any.
    pub fn database(&self) -> Option<String> {
        let path = self.url.path().trim_start_matches('/');
        (!path.is_empty()).then(|| {
            url::form_urlencoded::parse(format!("d={path}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
    }

    /// Points the URL at another database of the same server.
    pub fn set_database(&mut self, database: &str) {
        let encoded: String = url::form_urlencoded::byte_serialize(database.as_bytes()).collect();
        self.url.set_path(&format!("/{encoded}"));
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
        for malformed in ["postgres//u@h/db", "postgres:/u@h/db", "mysql:u@h"] {
            let err = SourceUrl::parse(malformed).unwrap_err();
            assert!(err.contains("malformed URL"), "{malformed}: {err}");
        }
        let err = SourceUrl::parse("mysql://root:topsecret@/db").unwrap_err();
        assert!(!err.contains("topsecret"), "{err}");
    }
}
