//! cairn: backups of MySQL/MariaDB and PostgreSQL to a local directory or S3, recorded in a
//! versioned, checksummed status file per source.
//!
//! The library holds every behaviour; `src/main.rs` only parses arguments, sets up logging and
//! maps the outcome of [`cli::run`] to an exit code.

pub mod backup;
pub mod cli;
pub mod config;
pub mod destination;
pub mod envelope;
pub mod exit;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod progress;
pub mod restore;
pub mod schedule;
pub mod secret;
pub mod source;
pub mod status;
pub mod stream;
pub mod text;
pub mod user_file;

/// The version written into every copy, manifest and status file.
pub const CAIRN_VERSION: &str = env!("CARGO_PKG_VERSION");
