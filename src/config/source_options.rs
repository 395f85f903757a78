//! What each source's runs are asked to do: its full-backup policy, its parallel connections,
//! how its copies are taken (chunk size, lock wait, filters, engine options, accounts), the zstd
//! level of its files, and when `cairn status` warns about its slot.

use std::time::Duration;

use super::{Config, Consistency, OnDdl, OnLogGap};
use crate::repo::kinds::RunType;

impl Config {
    /// The full-backup policy of a source.
    pub fn full_backup_of(&self, source: &str) -> RunType {
        self.settings
            .sources
            .get(source)
            .and_then(|s| s.full_backup)
            .or(self.settings.full_backup)
            .unwrap_or(RunType::Daily)
    }

    /// Parallel connections for a source.
    pub fn jobs_of(&self, source: &str) -> u32 {
        self.settings
            .sources
            .get(source)
            .and_then(|s| s.jobs)
            .or(self.settings.jobs)
            .unwrap_or_else(crate::engine::default_jobs)
    }

    /// How a source's copies are taken (`jobs` as given on the command line wins).
    pub fn copy_options_of(&self, source: &str, jobs: Option<u32>) -> crate::engine::CopyOptions {
        let settings = self.settings.sources.get(source);
        let mut options = crate::engine::CopyOptions {
            jobs: jobs.unwrap_or_else(|| self.jobs_of(source)),
            ..Default::default()
        };
        if let Some(mib) = settings.and_then(|s| s.chunk_size_mib).or(self.settings.chunk_size_mib) {
            options.chunk_bytes = mib.saturating_mul(1024 * 1024);
        }
        if let Some(seconds) = settings
            .and_then(|s| s.lock_wait_seconds)
            .or(self.settings.lock_wait_seconds)
        {
            options.lock_wait = Duration::from_secs(seconds);
        }
        if let Some(settings) = settings {
            options.filters = settings.filters.clone();
            options.mysql.lock_free = settings.consistency == Some(Consistency::LockFree);
            options.mysql.checksums = settings.checksums.unwrap_or(false);
            options.mysql.replica_server_id = settings.replica_server_id;
            options.full_on_log_gap = settings.on_log_gap == Some(OnLogGap::Full);
            options.postgres.incrementals = settings.incrementals.unwrap_or(false);
            options.postgres.full_on_ddl = settings.on_ddl == Some(OnDdl::Full);
            options.postgres.capture_ddl = settings.on_ddl == Some(OnDdl::Capture);
            options.users = settings.users;
            options.mysql.users_include_root = settings.users_include_root.unwrap_or(false);
        }
        options
    }

    /// The zstd level of `source`'s copies.
    pub fn compression_level_of(&self, source: &str) -> i32 {
        self.settings
            .sources
            .get(source)
            .and_then(|s| s.compression_level)
            .or(self.settings.compression_level)
            .unwrap_or(crate::repo::codec::DEFAULT_ZSTD_LEVEL)
    }

    /// Above how many bytes of WAL kept by a source's slot `cairn status` warns.
    pub fn slot_warning_bytes_of(&self, source: &str) -> u64 {
        self.settings
            .sources
            .get(source)
            .and_then(|s| s.slot_warning_mib)
            .unwrap_or(4096)
            .saturating_mul(1024 * 1024)
    }
}
