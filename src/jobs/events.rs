//! What a job reports while it runs, as typed events. An [`Observer`] turns them into log lines
//! today ([`Log`]); progress bars, metrics and notifications are further observers.

use crate::engine::SourceError;
use crate::repo::kinds::CopyKind;
use crate::repo::lock::LockError;
use crate::repo::status::CopyRecord;

/// Something that happened during a backup run.
#[derive(Debug)]
pub enum BackupEvent<'a> {
    /// A source's engine takes full copies only, so the incremental the schedule asked for is a
    /// full copy.
    FullOnly { source: &'a str, engine: &'a str },
    /// A copy is being taken.
    Taking {
        source: &'a str,
        kind: CopyKind,
        copy: &'a str,
        destination: &'a str,
    },
    /// The log no longer reached the parent (or the schema changed) and `on-log-gap` (or
    /// `on-ddl`) = "full" took a full copy instead.
    FullAfterLogGap {
        source: &'a str,
        gap: &'a SourceError,
        copy: &'a str,
    },
    /// A copy was recorded in the status.
    Recorded { source: &'a str, copy: &'a CopyRecord },
    /// The lock could not be released (it expires on its own).
    LockNotReleased { source: &'a str, error: &'a LockError },
}

/// Receives a job's events as they happen.
pub trait Observer: Send + Sync {
    fn backup(&self, event: &BackupEvent<'_>);
}

/// Events as log lines on stderr. Failures are not logged here: the command line reports each
/// once, with its exit code.
#[derive(Debug, Default, Clone, Copy)]
pub struct Log;

impl Observer for Log {
    fn backup(&self, event: &BackupEvent<'_>) {
        match event {
            BackupEvent::FullOnly { source, engine } => {
                tracing::info!("{source}: {engine} sources take full copies only in this build");
            }
            BackupEvent::Taking {
                source,
                kind,
                copy,
                destination,
            } => tracing::info!("{source}: taking {kind} copy {copy} to {destination}"),
            BackupEvent::FullAfterLogGap { source, gap, copy } => {
                tracing::warn!("{source}: {gap}");
                tracing::warn!(
                    "{source}: {}: taking full copy {copy} instead",
                    crate::engine::CopyOptions::full_setting(gap)
                );
            }
            BackupEvent::Recorded { source, copy } => tracing::info!(
                "{source}: {} copy {} recorded ({}, {} bytes)",
                copy.kind,
                copy.id,
                crate::text::count(copy.files, "file"),
                copy.bytes
            ),
            BackupEvent::LockNotReleased { source, error } => {
                tracing::warn!("{source}: releasing the lock failed: {error}");
            }
        }
    }
}
