//! The chain's stored binary log files fetched into a work folder, each checked against its
//! manifest (MD5) and its neighbours (no hole between copies), and opened for reading.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

use super::PROGRESS_EVERY;
use crate::engine::mysql::binlog::{EventReader, RawEvent};
use crate::engine::mysql::scope::{Skip, Tiling};
use crate::engine::{RestoreInput, SourceError};
use crate::progress::Progress;
use crate::repo::reader::{StoredFile, files_of, open_verified};

/// A stored log file opened for reading its events.
pub(super) type LogReader = EventReader<tokio::io::BufReader<tokio::fs::File>>;

/// One stored log file, fetched and checked.
#[derive(Debug)]
pub(super) struct LocalLog {
    pub copy: String,
    pub server_file: String,
    pub path: PathBuf,
    pub stored_key: String,
    /// The server file's range the stored file covers, and what capture left out of it.
    pub start: u64,
    pub end: u64,
    pub skips: Vec<Skip>,
    pub mariadb: bool,
}

impl LocalLog {
    /// The check that the file's events and recorded skips cover its range exactly.
    pub(super) fn tiling(&self) -> Tiling {
        Tiling::new(self.start, self.end, self.skips.clone(), self.mariadb)
    }

    pub(super) fn damaged(&self, problem: String) -> SourceError {
        SourceError::Damaged(format!("copy {}: {}: {problem}", self.copy, self.stored_key))
    }
}

/// Where an event is, for errors.
pub(super) fn place(log: &LocalLog, event: &RawEvent) -> String {
    format!(
        "copy {}, {} at {} ({})",
        log.copy,
        log.server_file,
        event.start(),
        log.stored_key
    )
}

/// Fetches every log file of the incrementals into `work`, checking MD5s, CRC32s and that each
/// copy starts where the one before it ended.
pub(super) async fn fetch(input: &RestoreInput, work: &std::path::Path) -> Result<Vec<LocalLog>, SourceError> {
    let mut logs = Vec::new();
    crate::engine::check_chain(&input.manifests)?;
    let mut chain = Vec::new();
    for manifest in &input.manifests[1..] {
        let mut files: Vec<StoredFile> = files_of(&input.source, manifest)?
            .into_iter()
            .filter(|f| f.binlog().is_some())
            .collect();
        files.sort_by_key(|f| f.binlog().and_then(|b| b.sequence).unwrap_or(u64::MAX));
        chain.push((manifest, files));
    }
    let total: usize = chain.iter().map(|(_, files)| files.len()).sum();
    let progress = Progress::new(format!("{}: replay, fetching log files", input.source), total as u64);
    let _reporter = progress.report_every(PROGRESS_EVERY);
    for (manifest, files) in chain {
        for stored in files {
            let path = work.join(format!("{:05}.binlog", logs.len()));
            let mut body = open_verified(&input.destination, &stored).await?;
            let mut out = tokio::fs::File::create(&path)
                .await
                .map_err(|e| SourceError::Damaged(format!("creating {}: {e}", path.display())))?;
            tokio::io::copy(&mut body, &mut out)
                .await
                .map_err(|e| match SourceError::from_read(e) {
                    SourceError::Damaged(e) => {
                        SourceError::Damaged(format!("copy {}: {}: {e}", manifest.copy.id, stored.key))
                    }
                    unreachable => unreachable,
                })?;
            out.flush()
                .await
                .map_err(|e| SourceError::Damaged(format!("writing {}: {e}", path.display())))?;
            progress.done(stored.file.size);
            let Some(binlog) = stored.binlog() else {
                continue; // only binlog files are in the list
            };
            let skips = binlog
                .skipped
                .iter()
                .map(Skip::from_json)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    SourceError::Damaged(format!(
                        "copy {}: {}: recorded skips: {e}",
                        manifest.copy.id, stored.key
                    ))
                })?;
            logs.push(LocalLog {
                copy: manifest.copy.id.clone(),
                server_file: binlog.server_file.clone(),
                path,
                stored_key: stored.key.clone(),
                start: binlog.start,
                end: binlog.end,
                skips,
                mariadb: manifest.copy.details.get("vendor").and_then(|v| v.as_str()) == Some("mariadb"),
            });
        }
    }
    Ok(logs)
}

pub(super) async fn open_log(log: &LocalLog) -> Result<LogReader, SourceError> {
    let file = tokio::fs::File::open(&log.path)
        .await
        .map_err(|e| SourceError::Damaged(format!("opening {}: {e}", log.path.display())))?;
    EventReader::open(tokio::io::BufReader::with_capacity(1 << 20, file))
        .await
        .map_err(|e| SourceError::Damaged(format!("copy {}: {}: {e}", log.copy, log.stored_key)))
}
