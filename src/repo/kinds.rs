//! Run types (hourly … yearly), the kinds of copy, and the policy that relates them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How often a periodic job runs; ordered from the most to the least frequent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunType {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl RunType {
    /// Every run type, most frequent first.
    pub const ALL: [RunType; 5] = [
        RunType::Hourly,
        RunType::Daily,
        RunType::Weekly,
        RunType::Monthly,
        RunType::Yearly,
    ];

    /// The lowercase name used in flags, config and status files.
    pub fn as_str(self) -> &'static str {
        match self {
            RunType::Hourly => "hourly",
            RunType::Daily => "daily",
            RunType::Weekly => "weekly",
            RunType::Monthly => "monthly",
            RunType::Yearly => "yearly",
        }
    }
}

impl fmt::Display for RunType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunType::ALL
            .into_iter()
            .find(|run_type| run_type.as_str() == s)
            .ok_or_else(|| format!("expected one of hourly, daily, weekly, monthly, yearly, got {s:?}"))
    }
}

/// What a copy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyKind {
    /// A consistent snapshot of schema and data.
    Full,
    /// The changes since its parent copy.
    Incremental,
}

impl fmt::Display for CopyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CopyKind::Full => "full",
            CopyKind::Incremental => "incremental",
        })
    }
}

/// What the user asked `cairn backup --type` for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RequestedType {
    /// Decided from the run type and the full-backup policy.
    #[default]
    Auto,
    Full,
    Incremental,
}
