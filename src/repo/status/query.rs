//! Questions answered from a status: the latest copy, the latest full, a copy's chain, the
//! candidate parent of an incremental, and which kind of copy a run should take.
//!
//! Chains follow the recorded parent links only; nothing here guesses a base by time or name.

use crate::repo::kinds::{CopyKind, RunType};

use crate::repo::model::{CopyRecord, StatusBody, index};

/// Why a copy's chain cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("copy {0} is not recorded in the status")]
    UnknownCopy(String),
    #[error("copy {copy} needs parent {parent}, which is not recorded in the status")]
    MissingParent { copy: String, parent: String },
    #[error("incremental copy {0} records no parent")]
    NoParent(String),
    #[error("the parent links starting at copy {0} form a loop")]
    Loop(String),
}

fn newest<'a>(copies: impl Iterator<Item = &'a CopyRecord>) -> Option<&'a CopyRecord> {
    copies.max_by(|a, b| (a.finished_at, &a.id).cmp(&(b.finished_at, &b.id)))
}

impl StatusBody {
    /// The copy with this id.
    pub fn copy(&self, id: &str) -> Option<&CopyRecord> {
        self.copies.iter().find(|c| c.id == id)
    }

    /// The copies whose id starts with `prefix`.
    pub fn copies_starting_with(&self, prefix: &str) -> Vec<&CopyRecord> {
        self.copies.iter().filter(|c| c.id.starts_with(prefix)).collect()
    }

    /// The newest copy that finished before `time` and whose chain is intact.
    pub fn newest_before(&self, time: chrono::DateTime<chrono::Utc>) -> Option<&CopyRecord> {
        newest(
            self.copies
                .iter()
                .filter(|c| c.finished_at < time && self.chain(&c.id).is_ok()),
        )
    }

    /// The copy that finished last.
    pub fn latest(&self) -> Option<&CopyRecord> {
        newest(self.copies.iter())
    }

    /// The full copy that finished last.
    pub fn latest_full(&self) -> Option<&CopyRecord> {
        newest(self.copies.iter().filter(|c| c.kind == CopyKind::Full))
    }

    /// The copies a restore of `id` needs, full first and `id` last.
    ///
    /// # Errors
    /// [`ChainError`] when `id` is unknown or a recorded parent is missing, absent or looping.
    pub fn chain(&self, id: &str) -> Result<Vec<&CopyRecord>, ChainError> {
        let by_id = index(&self.copies);
        let mut chain = Vec::new();
        let mut current = *by_id.get(id).ok_or_else(|| ChainError::UnknownCopy(id.to_string()))?;
        loop {
            if chain.len() > self.copies.len() {
                return Err(ChainError::Loop(id.to_string()));
            }
            chain.push(current);
            if current.kind == CopyKind::Full {
                break;
            }
            let parent = current
                .parent
                .as_deref()
                .ok_or_else(|| ChainError::NoParent(current.id.clone()))?;
            current = by_id.get(parent).copied().ok_or_else(|| ChainError::MissingParent {
                copy: current.id.clone(),
                parent: parent.to_string(),
            })?;
        }
        chain.reverse();
        Ok(chain)
    }

    /// The copy an incremental taken at `run_type` continues from, if one can be.
    ///
    /// The newest copy whose chain is intact and that is a full or was itself taken at
    /// `run_type` or a rarer one. So a copy's ancestors are never of a more frequent run type
    /// than the copy: retention that keeps fewer hourly than daily copies never strands a daily
    /// incremental without its parent.
    pub fn candidate_parent(&self, run_type: RunType) -> Option<&CopyRecord> {
        newest(
            self.copies
                .iter()
                .filter(|c| c.kind == CopyKind::Full || c.run_type >= run_type)
                .filter(|c| self.chain(&c.id).is_ok()),
        )
    }

    /// The newest copy whose chain is intact, of any run type: where an incremental of a source
    /// that keeps a single log position (a PostgreSQL slot) must continue.
    pub fn newest_intact(&self) -> Option<&CopyRecord> {
        newest(self.copies.iter().filter(|c| self.chain(&c.id).is_ok()))
    }

    /// The first and last moments a restore can reach: from the oldest full copy whose chain
    /// is intact to the newest intact copy's finish.
    pub fn restorable_window(&self) -> Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
        let intact: Vec<&CopyRecord> = self.copies.iter().filter(|c| self.chain(&c.id).is_ok()).collect();
        let earliest = intact
            .iter()
            .filter(|c| c.kind == CopyKind::Full)
            .map(|c| c.finished_at)
            .min()?;
        let latest = intact.iter().map(|c| c.finished_at).max()?;
        Some((earliest, latest))
    }

    /// The kind of copy a run of `run_type` takes when asked for `auto`.
    ///
    /// At or above the full-backup policy's run type: a full. Below it: an incremental when a
    /// candidate parent exists, else a full.
    pub fn next_backup_type(&self, run_type: RunType, full_backup: RunType) -> CopyKind {
        if run_type >= full_backup || self.candidate_parent(run_type).is_none() {
            CopyKind::Full
        } else {
            CopyKind::Incremental
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::repo::model::{CopyInfo, LogPosition, LogRange, ManifestRef, ServerIdentity};
    use chrono::{TimeZone, Utc};

    /// A copy finished at minute `minute`; `parent` set makes it an incremental.
    pub(crate) fn copy(id: &str, run_type: RunType, parent: Option<&str>, minute: u32) -> CopyRecord {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 0, minute, 0).unwrap();
        let position = LogPosition::Mysql {
            file: "bin.000001".into(),
            position: u64::from(minute),
            gtid: None,
        };
        CopyRecord {
            info: CopyInfo {
                id: id.into(),
                kind: if parent.is_some() {
                    CopyKind::Incremental
                } else {
                    CopyKind::Full
                },
                run_type,
                parent: parent.map(str::to_string),
                started_at: at,
                finished_at: at,
                log_range: LogRange {
                    start: position.clone(),
                    end: position,
                },
                server: ServerIdentity {
                    id: "1".into(),
                    version: "10.11".into(),
                },
                bytes: 1,
                files: 1,
                cairn_version: crate::CAIRN_VERSION.into(),
                details: Default::default(),
            },
            manifest: ManifestRef {
                path: format!("s/copies/{id}/manifest.json"),
                md5: "0".repeat(32),
            },
        }
    }

    fn status(copies: Vec<CopyRecord>) -> StatusBody {
        StatusBody {
            source: "s".into(),
            copies,
            verifications: Vec::new(),
            runs: Vec::new(),
        }
    }

    use RunType::*;

    #[test]
    fn the_restorable_window_runs_from_the_oldest_full_to_the_newest_intact_copy() {
        let body = status(vec![
            copy("f1", Daily, None, 0),
            copy("i1", Hourly, Some("f1"), 5),
            copy("orphan", Hourly, Some("gone"), 9),
        ]);
        let (from, to) = body.restorable_window().unwrap();
        assert_eq!(
            (from.format("%M").to_string(), to.format("%M").to_string()),
            ("00".into(), "05".into())
        );
        assert!(
            status(vec![copy("orphan", Hourly, Some("gone"), 9)])
                .restorable_window()
                .is_none()
        );
    }

    #[test]
    fn a_copy_is_found_by_its_id_only() {
        let body = StatusBody {
            source: "s".into(),
            copies: vec![
                copy("f1", RunType::Daily, None, 0),
                copy("i1", RunType::Hourly, Some("f1"), 1),
            ],
            verifications: Vec::new(),
            runs: Vec::new(),
        };
        assert_eq!(body.copy("i1").map(|c| c.id.as_str()), Some("i1"));
        assert_eq!(body.copy("f1").map(|c| c.id.as_str()), Some("f1"));
        assert!(body.copy("i2").is_none());
    }

    #[test]
    fn latest_and_latest_full() {
        let s = status(vec![
            copy("f1", Daily, None, 1),
            copy("i1", Hourly, Some("f1"), 2),
            copy("f2", Daily, None, 3),
            copy("i2", Hourly, Some("f2"), 4),
        ]);
        assert_eq!(s.latest().unwrap().id, "i2");
        assert_eq!(s.latest_full().unwrap().id, "f2");
        assert!(status(vec![]).latest().is_none());
        assert!(status(vec![copy("i", Hourly, Some("x"), 1)]).latest_full().is_none());
    }

    #[test]
    fn chains_follow_recorded_parents() {
        let s = status(vec![
            copy("f1", Daily, None, 1),
            copy("i1", Hourly, Some("f1"), 2),
            copy("f2", Daily, None, 3),
            copy("i2", Hourly, Some("i1"), 4), // recorded parent is i1, though f2 is newer
            copy("orphan", Hourly, Some("gone"), 5),
        ]);
        let ids = |id| s.chain(id).map(|c| c.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
        assert_eq!(ids("f1").unwrap(), ["f1"]);
        assert_eq!(ids("i2").unwrap(), ["f1", "i1", "i2"]);
        assert_eq!(
            ids("orphan").unwrap_err(),
            ChainError::MissingParent {
                copy: "orphan".into(),
                parent: "gone".into()
            }
        );
        assert_eq!(ids("nope").unwrap_err(), ChainError::UnknownCopy("nope".into()));
        let looping = status(vec![copy("a", Hourly, Some("b"), 1), copy("b", Hourly, Some("a"), 2)]);
        assert_eq!(looping.chain("a").unwrap_err(), ChainError::Loop("a".into()));
    }

    #[test]
    fn candidate_parent_table() {
        let base = vec![
            copy("w1", Weekly, None, 1),
            copy("d1", Daily, Some("w1"), 2),
            copy("h1", Hourly, Some("d1"), 3),
            copy("h2", Hourly, Some("h1"), 4),
            copy("broken", Hourly, Some("missing"), 5),
        ];
        // (run type of the new incremental, expected parent)
        let table: &[(RunType, Option<&str>)] = &[
            (Hourly, Some("h2")), // newest intact copy; "broken" is skipped
            (Daily, Some("d1")),  // hourly copies are never parents of a daily
            (Weekly, Some("w1")),
            (Monthly, Some("w1")), // only the full qualifies
            (Yearly, Some("w1")),
        ];
        let s = status(base);
        for (run_type, expected) in table {
            assert_eq!(
                s.candidate_parent(*run_type).map(|c| c.id.as_str()),
                *expected,
                "run type {run_type}"
            );
        }
        assert_eq!(status(vec![]).candidate_parent(Hourly), None);
        assert_eq!(
            status(vec![copy("x", Hourly, Some("gone"), 1)]).candidate_parent(Hourly),
            None
        );
        // A full taken at a frequent run type (forced with --type full) still anchors rarer runs.
        let forced = status(vec![copy("f", Hourly, None, 1)]);
        assert_eq!(forced.candidate_parent(Monthly).map(|c| c.id.as_str()), Some("f"));
    }

    #[test]
    fn next_backup_type_table() {
        let with_full = status(vec![copy("f", Daily, None, 1), copy("i", Hourly, Some("f"), 2)]);
        let empty = status(vec![]);
        let only_broken = status(vec![copy("x", Hourly, Some("gone"), 1)]);
        // (status, run type, full-backup policy, expected kind)
        let table: &[(&StatusBody, RunType, RunType, CopyKind)] = &[
            (&with_full, Hourly, Daily, CopyKind::Incremental),
            (&with_full, Daily, Daily, CopyKind::Full),
            (&with_full, Weekly, Daily, CopyKind::Full),
            (&with_full, Daily, Weekly, CopyKind::Incremental),
            (&with_full, Monthly, Weekly, CopyKind::Full),
            (&with_full, Yearly, Yearly, CopyKind::Full),
            (&with_full, Hourly, Hourly, CopyKind::Full),
            (&empty, Hourly, Daily, CopyKind::Full),
            (&empty, Daily, Weekly, CopyKind::Full),
            (&only_broken, Hourly, Daily, CopyKind::Full),
        ];
        for (s, run_type, policy, expected) in table {
            assert_eq!(
                s.next_backup_type(*run_type, *policy),
                *expected,
                "run {run_type}, policy {policy}"
            );
        }
    }

    #[test]
    fn a_copy_is_chosen_by_the_start_of_its_id_or_by_a_time_it_finished_before() {
        let body = status(vec![
            copy("20261121T0000-f1", Daily, None, 0),
            copy("20261121T0005-i1", Hourly, Some("20261121T0000-f1"), 5),
            copy("20261121T0009-orphan", Hourly, Some("gone"), 9),
            copy("20261121T0020-f2", Daily, None, 20),
        ]);
        let ids = |copies: Vec<&CopyRecord>| copies.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(body.copies_starting_with("20261121T0005")), ["20261121T0005-i1"]);
        assert_eq!(body.copies_starting_with("20261121T00").len(), 4);
        assert!(body.copies_starting_with("x").is_empty());
        let at = |minute| Utc.with_ymd_and_hms(2026, 11, 21, 0, minute, 0).unwrap();
        // The orphan finished later, but its chain is broken.
        assert_eq!(body.newest_before(at(15)).unwrap().id, "20261121T0005-i1");
        assert_eq!(
            body.newest_before(at(5)).unwrap().id,
            "20261121T0000-f1",
            "finished before, not at"
        );
        assert_eq!(body.newest_before(at(21)).unwrap().id, "20261121T0020-f2");
        assert!(body.newest_before(at(0)).is_none());
    }
}
