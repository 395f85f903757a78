//! Which copy a restore takes: an id or a unique start of one, the newest copy finished before a
//! time, the chain that reaches an `--until` time, or the latest.

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::engine::Until;
use crate::repo::status::{CopyRecord, StatusBody, StatusError, StatusStore};
use crate::storage::{Access, Destination, DestinationError};

/// What a restore asks for: `--copy`, `--before`, `--until`, of which source.
pub(super) struct Ask<'a> {
    pub copy: Option<&'a str>,
    pub before: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<&'a Until>,
    pub source: &'a str,
}

/// Why no copy was chosen.
#[derive(Debug, thiserror::Error)]
pub(super) enum ChoiceError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("source {source_name} has no copy at {location}")]
    NoCopy { source_name: String, location: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Destination(#[from] DestinationError),
}

/// Where a restore reads from, what that destination's status holds, and the copy chosen.
pub(super) struct Located {
    pub destination: Arc<dyn Destination>,
    pub body: StatusBody,
    pub copy: CopyRecord,
}

/// The destination to restore from and the copy `ask` names there: `from` when given, else among
/// the source's configured destinations. A copy named by its id comes from the first that can be
/// read and holds it; the latest, or the newest before a time, from the destination whose answer
/// finished last (the first of those on a tie): a destination that missed the last runs (down,
/// or refusing writes) must not make a restore take older data than another one holds. When none
/// answers, the first one's error.
///
/// # Errors
/// As [`choose`], a configuration error, or a destination that cannot be read.
pub(super) async fn locate(config: &Config, from: Option<&str>, ask: &Ask<'_>) -> Result<Located, ChoiceError> {
    let specs = match from {
        Some(from) => vec![config.destination(from)?],
        None => {
            let mut specs = vec![config.destination_of(ask.source)?];
            specs.extend(config.more_destinations_of(ask.source)?);
            specs
        }
    };
    let by_recency = matches!(ask.copy, None | Some("latest"));
    let mut first_error = None;
    // The newest answer so far, with where it came from (its place among the destinations).
    let mut newest: Option<(Located, usize, String)> = None;
    for (place, spec) in specs.iter().enumerate() {
        let found = async {
            let destination = spec.open().await?;
            destination.check(Access::Read).await?;
            let body = StatusStore::new(destination.clone(), ask.source)
                .load_existing()
                .await?
                .status
                .body;
            let copy = choose(&body, ask, &destination.location())?.clone();
            Ok::<Located, ChoiceError>(Located {
                destination,
                body,
                copy,
            })
        }
        .await;
        match found {
            Ok(located) if !by_recency => return Ok(located),
            Ok(located) => {
                let newer = newest.as_ref().is_none_or(|(kept, _, _)| {
                    (located.copy.finished_at, &located.copy.id) > (kept.copy.finished_at, &kept.copy.id)
                });
                if newer {
                    newest = Some((located, place, spec.describe()));
                }
            }
            // A question no destination answers differently (an id given with --before, an empty
            // id): said once. A time no copy answers may be answered by another destination.
            Err(ChoiceError::Usage(message)) if !by_recency => return Err(ChoiceError::Usage(message)),
            Err(e) => {
                tracing::info!("{}: {e}; trying the source's next destination", spec.describe());
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some((located, place, described)) = newest {
        if place > 0 {
            tracing::info!(
                "{described} holds the newest copy that answers the restore ({}); the destinations before it hold older ones or none",
                located.copy.id
            );
        }
        return Ok(located);
    }
    Err(first_error.expect("a source has at least one destination"))
}

/// The copy `ask` names among `body`'s (of the destination at `location`).
///
/// # Errors
/// A copy that is unknown or named ambiguously, `--copy` with `--before`, no copy before a time.
pub(super) fn choose<'a>(body: &'a StatusBody, ask: &Ask<'_>, location: &str) -> Result<&'a CopyRecord, ChoiceError> {
    if ask.copy == Some("") {
        return Err(ChoiceError::Usage(
            "--copy: give a copy id, its start, or latest".into(),
        ));
    }
    let copy = match (ask.copy, &ask.until) {
        (None | Some("latest"), _) if ask.before.is_some() => {
            let before = ask.before.expect("checked");
            body.newest_before(before).ok_or_else(|| {
                ChoiceError::Usage(format!(
                    "--before {}: source {} has no restorable copy that finished before then (cairn status)",
                    before.to_rfc3339(),
                    ask.source
                ))
            })?
        }
        (Some(id), _) if id != "latest" && ask.before.is_some() => {
            return Err(ChoiceError::Usage(format!(
                "--copy {id} and --before both choose the copy: pass one of them"
            )));
        }
        (None | Some("latest"), Some(Until::Time(time))) => copy_covering(body, *time).ok_or_else(|| {
            ChoiceError::Usage(format!(
                "--until {}: source {} has no full copy taken before that time; the oldest copies start later \
                 (cairn status)",
                time.to_rfc3339(),
                ask.source
            ))
        })?,
        (None | Some("latest"), _) => body.latest().ok_or_else(|| ChoiceError::NoCopy {
            source_name: ask.source.to_string(),
            location: location.to_string(),
        })?,
        (Some(id), _) => match body.copy(id) {
            Some(copy) => copy,
            None => {
                let matching = body.copies_starting_with(id);
                match matching.as_slice() {
                    [copy] => *copy,
                    [] => {
                        return Err(
                            StatusError::Chain(crate::repo::status::ChainError::UnknownCopy(id.to_string())).into(),
                        );
                    }
                    several => {
                        let ids: Vec<&str> = several.iter().map(|c| c.id.as_str()).collect();
                        return Err(ChoiceError::Usage(format!(
                            "--copy {id}: {} copies start so ({}); give more of the id",
                            several.len(),
                            ids.join(", ")
                        )));
                    }
                }
            }
        },
    };
    Ok(copy)
}

/// The copy whose chain reaches `time`: the newest full copy started before it, then the first
/// copy of that full's chain that finished after it (or the chain's last, when none did).
fn copy_covering(body: &crate::repo::status::StatusBody, time: chrono::DateTime<chrono::Utc>) -> Option<&CopyRecord> {
    let full = body
        .copies
        .iter()
        .filter(|c| c.kind == crate::repo::kinds::CopyKind::Full && c.started_at <= time)
        .max_by_key(|c| c.started_at)?;
    let mut in_chain: Vec<&CopyRecord> = body
        .copies
        .iter()
        .filter(|c| {
            body.chain(&c.id)
                .is_ok_and(|chain| chain.first().is_some_and(|f| f.id == full.id))
        })
        .collect();
    in_chain.sort_by_key(|c| c.finished_at);
    in_chain
        .iter()
        .find(|c| c.kind == crate::repo::kinds::CopyKind::Incremental && c.finished_at >= time)
        .or(in_chain.last())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::kinds::RunType::{Daily, Hourly};
    use crate::repo::status::query::tests::copy;
    use chrono::TimeZone;

    #[test]
    fn a_time_picks_the_chain_that_reaches_it() {
        let body = StatusBody {
            source: "s".into(),
            copies: vec![
                copy("f1", Daily, None, 0),
                copy("i1", Hourly, Some("f1"), 10),
                copy("i2", Hourly, Some("i1"), 20),
                copy("f2", Daily, None, 30),
                copy("i3", Hourly, Some("f2"), 40),
            ],
            verifications: Vec::new(),
            runs: Vec::new(),
        };
        let at = |minute| chrono::Utc.with_ymd_and_hms(2026, 11, 21, 0, minute, 0).unwrap();
        assert_eq!(copy_covering(&body, at(5)).unwrap().id, "i1");
        assert_eq!(copy_covering(&body, at(15)).unwrap().id, "i2");
        assert_eq!(
            copy_covering(&body, at(25)).unwrap().id,
            "i2",
            "after the chain's end: its last copy"
        );
        assert_eq!(copy_covering(&body, at(35)).unwrap().id, "i3");
        assert!(copy_covering(&body, chrono::Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap()).is_none());
    }
}
