//! Exit codes and the classification of every library error into one of them.
//!
//! Deciding "is this the user's fault, a temporary condition, or a failed job" happens here and in
//! each error's `exit_status`, never in the CLI's string matching.

use std::fmt;

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
  2   usage or configuration error (bad flag, bad config, unknown source, command not available yet)
  75  temporary failure: another run holds the lock, or a server or store is unreachable; retry later";
