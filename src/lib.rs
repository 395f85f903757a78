//! cairn: backups of MySQL/MariaDB and PostgreSQL to a local directory or S3, recorded in a
//! versioned, checksummed status file per source.
//!
//! The library holds every behaviour; `src/main.rs` only parses arguments, sets up logging and
//! maps the outcome of [`cli::run`] to an exit code.

pub mod cli;
pub mod config;
pub mod engine;
pub mod exit;
pub mod jobs;
pub mod progress;
pub mod repo;
pub mod retry;
pub mod secret;
pub mod storage;
pub mod streams;
pub mod text;
pub mod user_file;

/// The version written into every copy, manifest and status file.
pub const CAIRN_VERSION: &str = env!("CARGO_PKG_VERSION");
