//! Exit codes and the classification of every library error into one of them.
//!
//! Deciding "is this the user's fault, a temporary condition, or a failed job" happens here, in
//! one place, from each layer's error variants — never from message text.

use std::fmt;

use crate::config::ConfigError;
use crate::engine::SourceError;
use crate::jobs::backup::BackupError;
use crate::jobs::purge::PurgeError;
use crate::jobs::replica::SeedError;
use crate::jobs::replica_run::ReplicaError;
use crate::jobs::restore::RestoreError;
use crate::jobs::slots::SlotError;
use crate::jobs::verify::VerifyError;
use crate::jobs::verify_deep::DeepError;
use crate::repo::RepoError;
use crate::repo::lock::LockError;
use crate::repo::status::StatusError;
use crate::storage::DestinationError;

/// The process exit codes cairn documents (see docs/exit-codes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// Everything asked for was done.
    Success,
    /// The job ran and failed: nothing new was recorded as a valid copy.
    Failed,
    /// Usage or configuration error: fix the command line or the configuration.
    Usage,
    /// Temporary failure (locked by another run, server or store unreachable): retry later.
    Temporary,
}

impl ExitStatus {
    /// The status of a run with several outcomes: a configuration error matters most, then a
    /// failure, then a temporary condition.
    pub fn worse(self, other: ExitStatus) -> ExitStatus {
        let rank = |s: ExitStatus| match s {
            ExitStatus::Success => 0,
            ExitStatus::Temporary => 1,
            ExitStatus::Failed => 2,
            ExitStatus::Usage => 3,
        };
        if rank(other) > rank(self) { other } else { self }
    }

    /// The numeric process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failed => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Temporary => 75,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self {
            ExitStatus::Success => "success",
            ExitStatus::Failed => "failed",
            ExitStatus::Usage => "usage or configuration error",
            ExitStatus::Temporary => "temporary failure",
        };
        write!(f, "{word} (exit code {})", self.code())
    }
}

/// Implemented by every error enum of the library so the CLI can pick the exit code.
pub trait Classify {
    /// Which exit code this error deserves.
    fn exit_status(&self) -> ExitStatus;
}

/// The text of `--help`'s exit-code section, kept next to the codes it describes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success
  1   the job failed (nothing new was recorded as a valid copy)
  2   usage or configuration error (bad flag, bad config, unknown source, a request the source or target cannot carry out)
  75  temporary failure: another run holds the lock, or a server or store is unreachable; retry later";

impl Classify for BackupError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            BackupError::Config(e) => e.exit_status(),
            BackupError::Usage(_) => ExitStatus::Usage,
            BackupError::Source(e) => e.exit_status(),
            BackupError::Destination(e) => e.exit_status(),
            BackupError::Status(e) => e.exit_status(),
            BackupError::Lock(e) => e.exit_status(),
            BackupError::NoParent { .. } => ExitStatus::Failed,
            BackupError::Shared(e) => e.exit_status(),
        }
    }
}

impl Classify for RestoreError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            RestoreError::Config(e) => e.exit_status(),
            RestoreError::Usage(_) => ExitStatus::Usage,
            RestoreError::Source(e) => e.exit_status(),
            RestoreError::Destination(e) => e.exit_status(),
            RestoreError::Status(e) => e.exit_status(),
            RestoreError::NoCopy { .. } | RestoreError::Manifest(_) | RestoreError::LogGap(_) => ExitStatus::Failed,
        }
    }
}

impl Classify for PurgeError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            PurgeError::Config(e) => e.exit_status(),
            PurgeError::Destination(e) => e.exit_status(),
            PurgeError::Status(e) => e.exit_status(),
            PurgeError::Lock(e) => e.exit_status(),
        }
    }
}

impl Classify for VerifyError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            VerifyError::Config(e) => e.exit_status(),
            VerifyError::Usage(_) => ExitStatus::Usage,
            VerifyError::Destination(e) => e.exit_status(),
            VerifyError::Status(e) => e.exit_status(),
        }
    }
}

impl Classify for SeedError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            SeedError::Restore(e) => e.exit_status(),
            SeedError::Backup(e) => e.exit_status(),
        }
    }
}

impl Classify for ReplicaError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            ReplicaError::Usage(_) => ExitStatus::Usage,
            ReplicaError::Config(e) => e.exit_status(),
            ReplicaError::Source(e) => e.exit_status(),
            ReplicaError::Resync(e) => e.exit_status(),
            ReplicaError::StillRunning(_) => ExitStatus::Temporary,
        }
    }
}

impl Classify for DeepError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            DeepError::Verify(e) => e.exit_status(),
            DeepError::Restore(e) => e.exit_status(),
        }
    }
}

impl Classify for SlotError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            SlotError::Config(e) => e.exit_status(),
            SlotError::Source(e) => e.exit_status(),
        }
    }
}

impl Classify for crate::jobs::copy::CopyError {
    fn exit_status(&self) -> ExitStatus {
        use crate::jobs::copy::CopyError;
        match self {
            CopyError::Usage(_) | CopyError::Config(_) => ExitStatus::Usage,
            CopyError::Destination(e) => e.exit_status(),
            CopyError::Status(e) => e.exit_status(),
            CopyError::Lock(e) => e.exit_status(),
            CopyError::Repo(e) => match e {
                RepoError::Destination(e) => e.exit_status(),
                RepoError::Status(e) => e.exit_status(),
                RepoError::Lock(e) => e.exit_status(),
                RepoError::KeyUnavailable(_) => ExitStatus::Usage,
                RepoError::Manifest(_) | RepoError::Damaged(_) => ExitStatus::Failed,
            },
        }
    }
}

impl Classify for ConfigError {
    fn exit_status(&self) -> ExitStatus {
        ExitStatus::Usage
    }
}

impl Classify for SourceError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            SourceError::Authentication { .. }
            | SourceError::Tls { .. }
            | SourceError::NoDatabase { .. }
            | SourceError::Privilege { .. }
            | SourceError::Tool { .. }
            | SourceError::TargetNotEmpty { .. }
            | SourceError::NothingToResume { .. }
            | SourceError::Unsupported(_) => ExitStatus::Usage,
            SourceError::Unreachable { .. } | SourceError::Locked { .. } | SourceError::Disconnected { .. } => {
                ExitStatus::Temporary
            }
            SourceError::Destination(e) => e.exit_status(),
            SourceError::Incomplete { cause, .. } | SourceError::ReplayStopped { cause, .. } => cause.exit_status(),
            SourceError::Database { .. }
            | SourceError::Damaged(_)
            | SourceError::Diverged(_)
            | SourceError::LogGap { .. }
            | SourceError::SchemaChanged { .. }
            | SourceError::Worker { .. } => ExitStatus::Failed,
            SourceError::Repo(e) => match e {
                RepoError::Destination(e) => e.exit_status(),
                RepoError::Status(e) => e.exit_status(),
                RepoError::Lock(e) => e.exit_status(),
                RepoError::Manifest(_) | RepoError::Damaged(_) => ExitStatus::Failed,
                RepoError::KeyUnavailable(_) => ExitStatus::Usage,
            },
        }
    }
}

impl Classify for LockError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            LockError::LocalHeld { .. } | LockError::LeaseHeld { .. } => ExitStatus::Temporary,
            LockError::Destination(e) => e.exit_status(),
            _ => ExitStatus::Failed,
        }
    }
}

impl Classify for StatusError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            StatusError::Destination(e) => e.exit_status(),
            StatusError::NewerVersion { .. } | StatusError::UnknownSource { .. } => ExitStatus::Usage,
            StatusError::Conflict { .. } => ExitStatus::Temporary,
            _ => ExitStatus::Failed,
        }
    }
}

impl Classify for DestinationError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            DestinationError::InvalidUrl { .. }
            | DestinationError::Missing { .. }
            | DestinationError::BucketNotFound { .. }
            | DestinationError::AccessDenied { .. }
            | DestinationError::NoCredentials { .. } => ExitStatus::Usage,
            DestinationError::Unreachable { .. } | DestinationError::Unavailable { .. } => ExitStatus::Temporary,
            _ => ExitStatus::Failed,
        }
    }
}
