//! Connections to a MySQL or MariaDB server: the URL's settings (TLS included) turned into the
//! driver's options, and the driver's errors turned into ones that say what to check.

use super::*;

/// A server cairn talks to, for connecting and for naming it in errors.
#[derive(Debug, Clone)]
pub struct My {
    pub(super) url: SourceUrl,
    pub(super) name: String,
}

impl My {
    pub fn new(url: SourceUrl) -> Self {
        let name = url.to_string();
        My { url, name }
    }

    /// Opens a session; `database` overrides the URL's.
    ///
    /// # Errors
    /// [`SourceError::Unreachable`], [`SourceError::Authentication`] or a database error.
    pub async fn connect(&self, database: Option<&str>) -> Result<Conn, SourceError> {
        self.connect_tuned(database, |builder| builder).await
    }

    /// [`My::connect`] with driver options adjusted by `tune`.
    ///
    /// # Errors
    /// As [`My::connect`].
    pub async fn connect_tuned(
        &self,
        database: Option<&str>,
        tune: impl FnOnce(OptsBuilder) -> OptsBuilder,
    ) -> Result<Conn, SourceError> {
        let (mut url, ssl) = ssl_opts(self.url.without_password())
            .map_err(|e| SourceError::Unsupported(format!("{}: {e}", self.name)))?;
        // The driver only knows mysql://; mariadb:// is the same protocol.
        let _ = url.set_scheme("mysql");
        let opts = Opts::from_url(url.as_str())
            .map_err(|e| SourceError::Unsupported(format!("{}: not a usable MySQL URL: {e}", self.name)))?;
        if ssl.is_some() {
            // The driver's TLS asks rustls for the process's crypto provider; there are two in
            // the build, so name one. Installing twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut builder = OptsBuilder::from_opts(opts)
            .ssl_opts(ssl)
            .pass(self.url.password.as_ref().map(|p| p.expose().to_string()))
            .prefer_socket(false)
            .wait_timeout(Some(28_800));
        if let Some(database) = database {
            builder = builder.db_name((!database.is_empty()).then(|| database.to_string()));
        }
        match Conn::new(tune(builder)).await {
            Ok(conn) => Ok(conn),
            Err(e) => Err(crate::engine::explain_unreachable(&self.url, self.classify("connecting", true, e)).await),
        }
    }

    /// Classifies a driver error by server error code and names the server and the work.
    pub fn error(&self, doing: &str, error: mysql_async::Error) -> SourceError {
        self.classify(doing, false, error)
    }

    /// [`My::error`], for an error while `connecting` or on an established session.
    pub(super) fn classify(&self, doing: &str, connecting: bool, error: mysql_async::Error) -> SourceError {
        let database = self.name.clone();
        let doing = doing.to_string();
        match error {
            mysql_async::Error::Server(server) => {
                let detail = format!("{} (error {})", server.message, server.code);
                match server.code {
                    1045 => SourceError::Authentication { database, detail },
                    1044 | 1142 | 1143 | 1227 | 1370 | 1419 => SourceError::Privilege {
                        database,
                        doing,
                        detail,
                    },
                    1205 | 1213 | 1223 => SourceError::Locked {
                        database,
                        doing,
                        detail,
                    },
                    1049 => SourceError::NoDatabase { database, detail },
                    1040 | 1203 => SourceError::Unreachable { database, detail },
                    // The server is shutting down, or ended the session (KILL).
                    1053 | 1317 | 1927 if !connecting => SourceError::Disconnected {
                        database,
                        doing,
                        detail,
                    },
                    _ => SourceError::Database {
                        database,
                        doing,
                        detail,
                    },
                }
            }
            mysql_async::Error::Io(mysql_async::IoError::Tls(e)) => SourceError::Tls {
                database,
                detail: e.to_string(),
            },
            // rustls reports certificate problems as I/O errors wrapping its own error.
            mysql_async::Error::Io(mysql_async::IoError::Io(e))
                if e.get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
            {
                SourceError::Tls {
                    database,
                    detail: e.to_string(),
                }
            }
            mysql_async::Error::Io(e) if connecting => SourceError::Unreachable {
                database,
                detail: match match &e {
                    mysql_async::IoError::Io(io) => crate::engine::io_hint(io),
                    _ => None,
                } {
                    Some(hint) => format!("{e} ({hint})"),
                    None => e.to_string(),
                },
            },
            mysql_async::Error::Driver(e) if connecting => SourceError::Unreachable {
                database,
                detail: e.to_string(),
            },
            mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => SourceError::Disconnected {
                database,
                doing,
                detail: "the server closed the connection".into(),
            },
            mysql_async::Error::Io(e) => SourceError::Disconnected {
                database,
                doing,
                detail: e.to_string(),
            },
            other => SourceError::Database {
                database,
                doing,
                detail: other.to_string(),
            },
        }
    }
}

/// TLS settings in MySQL's client terms, taken out of the URL: `ssl-mode=DISABLED|REQUIRED|
/// VERIFY_CA|VERIFY_IDENTITY` and `ssl-ca=/path/ca.pem` (default: no TLS). `REQUIRED` encrypts
/// without checking the certificate, as the mysql client does.
pub(super) fn ssl_opts(url: &url::Url) -> Result<(url::Url, Option<mysql_async::SslOpts>), String> {
    let mut mode: Option<String> = None;
    let mut ca: Option<std::path::PathBuf> = None;
    let mut kept: Vec<(String, String)> = Vec::new();
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "ssl-mode" | "ssl_mode" => mode = Some(value.to_ascii_uppercase()),
            "ssl-ca" | "ssl_ca" => ca = Some(value.as_ref().into()),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    let mut plain = url.clone();
    if kept.is_empty() {
        plain.set_query(None);
    } else {
        plain.query_pairs_mut().clear().extend_pairs(kept);
    }
    let roots = |opts: mysql_async::SslOpts| match &ca {
        Some(path) => opts.with_root_certs(vec![path.clone().into()]),
        None => opts,
    };
    let ssl = match mode.as_deref() {
        None | Some("DISABLED") => None,
        Some("PREFERRED") => return Err("ssl-mode=PREFERRED is not supported: use REQUIRED or VERIFY_IDENTITY".into()),
        Some("REQUIRED") => Some(
            mysql_async::SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        Some("VERIFY_CA") => Some(roots(mysql_async::SslOpts::default()).with_danger_skip_domain_validation(true)),
        Some("VERIFY_IDENTITY") => Some(roots(mysql_async::SslOpts::default())),
        Some(other) => {
            return Err(format!(
                "ssl-mode={other}: expected DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY"
            ));
        }
    };
    Ok((plain, ssl))
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    #[test]
    pub(super) fn ssl_settings_are_taken_out_of_the_url() {
        let url =
            url::Url::parse("mysql://u@h/db?ssl-mode=verify_identity&ssl-ca=/etc/ca.pem&prefer_socket=false").unwrap();
        let (plain, ssl) = ssl_opts(&url).unwrap();
        assert_eq!(plain.as_str(), "mysql://u@h/db?prefer_socket=false");
        let ssl = ssl.expect("TLS asked for");
        assert_eq!(ssl.root_certs().len(), 1);
        assert!(!ssl.skip_domain_validation() && !ssl.accept_invalid_certs());
        assert!(
            ssl_opts(&url::Url::parse("mysql://u@h/db").unwrap())
                .unwrap()
                .1
                .is_none()
        );
        let (_, required) = ssl_opts(&url::Url::parse("mysql://u@h?ssl-mode=REQUIRED").unwrap()).unwrap();
        assert!(required.unwrap().accept_invalid_certs());
        assert!(
            ssl_opts(&url::Url::parse("mysql://u@h?ssl-mode=SOMETIMES").unwrap())
                .unwrap_err()
                .contains("SOMETIMES")
        );
    }
}
