//! The metrics file: every source's status as Prometheus gauges in the text exposition format,
//! replaced whole after each run, for node_exporter's textfile collector or any agent that
//! reads a file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::repo::model::{RunRecord, StatusBody};
use crate::repo::status::StatusStore;
use crate::storage::DestinationSpec;

/// One source's status as read for the metrics, or why it could not be read.
#[derive(Debug)]
pub struct Observed {
    pub source: String,
    pub status: Result<StatusBody, String>,
}

/// Reads the status of each `(source, destination)` pair; a source whose status cannot be read
/// is still exported, as unreadable.
pub async fn observe(sources: &[(String, DestinationSpec)]) -> Vec<Observed> {
    let mut observed = Vec::new();
    for (source, spec) in sources {
        let status = async {
            let destination = spec.open().await.map_err(|e| e.to_string())?;
            let loaded = StatusStore::new(destination, source)
                .load()
                .await
                .map_err(|e| e.to_string())?;
            Ok(loaded.status.body)
        }
        .await;
        observed.push(Observed {
            source: source.clone(),
            status,
        });
    }
    observed
}

/// One metric family: its help, type and samples.
struct Family {
    help: &'static str,
    samples: Vec<(String, f64)>,
}

/// The exposition text of `observed`, written at `now`.
pub fn render(observed: &[Observed], now: DateTime<Utc>) -> String {
    let mut families: BTreeMap<&'static str, Family> = BTreeMap::new();
    let mut add = |name: &'static str, help: &'static str, labels: String, value: f64| {
        families
            .entry(name)
            .or_insert_with(|| Family {
                help,
                samples: Vec::new(),
            })
            .samples
            .push((labels, value));
    };
    add(
        "cairn_metrics_written_timestamp_seconds",
        "When cairn last wrote this file.",
        String::new(),
        seconds(now),
    );
    for source in observed {
        let labels = format!("source=\"{}\"", escape(&source.source));
        add(
            "cairn_status_readable",
            "1 when the source's status could be read and verified, else 0.",
            labels.clone(),
            f64::from(u8::from(source.status.is_ok())),
        );
        let Ok(body) = &source.status else {
            continue;
        };
        for kind in ["full", "incremental"] {
            let count = body.copies.iter().filter(|c| c.kind.to_string() == kind).count();
            add(
                "cairn_copies",
                "Copies recorded in the status, by kind.",
                format!("{labels},kind=\"{kind}\""),
                count as f64,
            );
        }
        add(
            "cairn_copies_bytes",
            "Bytes stored for the source's recorded copies.",
            labels.clone(),
            body.copies.iter().map(|c| c.bytes).sum::<u64>() as f64,
        );
        if let Some(latest) = body.copies.iter().map(|c| c.finished_at).max() {
            add(
                "cairn_latest_copy_timestamp_seconds",
                "When the newest recorded copy finished.",
                labels.clone(),
                seconds(latest),
            );
        }
        if let Some((from, to)) = body.restorable_window() {
            add(
                "cairn_restorable_from_timestamp_seconds",
                "The earliest point a restore can reach (the oldest intact full copy).",
                labels.clone(),
                seconds(from),
            );
            add(
                "cairn_restorable_to_timestamp_seconds",
                "The latest point a restore can reach (the newest intact copy).",
                labels.clone(),
                seconds(to),
            );
        }
        if let Some(verified) = body.verifications.last() {
            add(
                "cairn_last_verification_timestamp_seconds",
                "When the latest cairn verify finished.",
                labels.clone(),
                seconds(verified.finished_at),
            );
            add(
                "cairn_last_verification_intact",
                "1 when the latest cairn verify found every copy it checked intact, else 0.",
                labels.clone(),
                f64::from(u8::from(verified.intact)),
            );
        }
        let mut last: BTreeMap<&str, &RunRecord> = BTreeMap::new();
        let mut last_success: BTreeMap<&str, &RunRecord> = BTreeMap::new();
        for run in &body.runs {
            last.insert(&run.command, run);
            if run.succeeded() {
                last_success.insert(&run.command, run);
            }
        }
        for (command, run) in last {
            let labels = format!("{labels},command=\"{}\"", escape(command));
            add(
                "cairn_last_run_timestamp_seconds",
                "When the latest run of the command finished.",
                labels.clone(),
                seconds(run.finished_at),
            );
            add(
                "cairn_last_run_success",
                "1 when the latest run of the command succeeded, else 0.",
                labels.clone(),
                f64::from(u8::from(run.succeeded())),
            );
            add(
                "cairn_last_run_exit_code",
                "The exit code of the latest run of the command (0 ok, 1 failed, 2 usage, 75 retry later).",
                labels.clone(),
                f64::from(run.exit_code),
            );
            add(
                "cairn_last_run_duration_seconds",
                "How long the latest run of the command took.",
                labels.clone(),
                (run.finished_at - run.started_at).num_milliseconds().max(0) as f64 / 1000.0,
            );
            add(
                "cairn_last_run_bytes",
                "Bytes the latest run of the command wrote, read or freed.",
                labels,
                run.bytes as f64,
            );
        }
        for (command, run) in last_success {
            add(
                "cairn_last_success_timestamp_seconds",
                "When the latest successful run of the command finished.",
                format!("{labels},command=\"{}\"", escape(command)),
                seconds(run.finished_at),
            );
        }
    }
    let mut text = String::new();
    for (name, family) in families {
        let _ = writeln!(text, "# HELP {name} {}", family.help);
        let _ = writeln!(text, "# TYPE {name} gauge");
        for (labels, value) in family.samples {
            match labels.is_empty() {
                true => {
                    let _ = writeln!(text, "{name} {value}");
                }
                false => {
                    let _ = writeln!(text, "{name}{{{labels}}} {value}");
                }
            }
        }
    }
    text
}

fn seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Replaces `path` with `text` atomically: a reader sees the old file or the new one, never a
/// part (a temporary file in the same folder, flushed, then renamed over it).
///
/// # Errors
/// The I/O error, naming the file.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let describe = |e: std::io::Error| format!("metrics file {}: {e}", path.display());
    let mut file = tempfile::Builder::new()
        .prefix(".cairn-metrics-")
        .tempfile_in(folder)
        .map_err(describe)?;
    file.write_all(text.as_bytes()).map_err(describe)?;
    file.as_file().sync_all().map_err(describe)?;
    // Collectors run as another user: the file is readable like any exported metrics.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).map_err(describe)?;
    }
    file.persist(path).map_err(|e| describe(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_unreadable_sources_are_exported() {
        let observed = [Observed {
            source: "a\"b\\c".into(),
            status: Err("damaged".into()),
        }];
        let text = render(&observed, Utc::now());
        assert!(
            text.contains("cairn_status_readable{source=\"a\\\"b\\\\c\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE cairn_status_readable gauge\n"), "{text}");
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.prom");
        write_atomically(&path, "a 1\n").unwrap();
        write_atomically(&path, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "a temporary file stayed"
        );
        let missing = write_atomically(&dir.path().join("no/such/dir/x.prom"), "").unwrap_err();
        assert!(missing.contains("no/such/dir/x.prom"), "{missing}");
    }
}
