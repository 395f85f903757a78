//! `cairn verify --deep`: a full copy restored into a scratch database, then every table read
//! back and compared with the row count and row digest the backup recorded while it read the
//! source — proof that the restored data is the data that was backed up, not only that the
//! files are the files that were written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::engine::{Engine, RestoreReport, SourceUrl, TableToDigest, Target};
use crate::jobs::restore::{self, RestoreError, RestoreRequest};
use crate::repo::file_kind::FileKind;
use crate::repo::model::VerificationRecord;
use crate::repo::status::{LogPosition, StatusError, StatusStore};
use crate::storage::Access;
use crate::streams::RowDigest;

/// Errors that stop a deep verification before it has a result.
#[derive(Debug, thiserror::Error)]
pub enum DeepError {
    #[error(transparent)]
    Verify(#[from] super::verify::VerifyError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

impl From<StatusError> for DeepError {
    fn from(error: StatusError) -> Self {
        DeepError::Verify(error.into())
    }
}

/// What `cairn verify --deep` was asked for.
#[derive(Debug, Clone, Default)]
pub struct DeepRequest {
    pub from: String,
    pub source: String,
    /// The copy whose full copy is checked; `None`: the latest.
    pub copy: Option<String>,
    /// A server URL the scratch database is created on.
    pub scratch: String,
    pub scratch_password_file: Option<PathBuf>,
    /// Leave the scratch database for inspection.
    pub keep_scratch: bool,
    pub jobs: Option<u32>,
}

/// One table compared.
#[derive(Debug, Clone, Serialize)]
pub struct TableCheck {
    pub table: String,
    /// Rows the backup read.
    pub rows: u64,
    /// Rows read back from the scratch database.
    pub restored_rows: u64,
    /// Whether the count and the digest both match.
    pub intact: bool,
}

/// What a deep verification found.
#[derive(Debug, Clone, Serialize)]
pub struct DeepReport {
    pub source: String,
    pub destination: String,
    /// The full copy restored and compared.
    pub copy: String,
    /// The scratch database(s), and whether they were left in place.
    pub scratch: Vec<String>,
    pub kept: bool,
    pub tables: Vec<TableCheck>,
    /// The incrementals replayed after the full copy, when the copy verified is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<String>,
    /// What prevented a comparison, or why a table differs.
    pub problems: Vec<String>,
}

impl DeepReport {
    pub fn intact(&self) -> bool {
        self.problems.is_empty() && self.tables.iter().all(|t| t.intact)
    }
}

/// Restores the full copy of the chain `request` names into a scratch database and compares
/// every table with what the backup recorded.
///
/// # Errors
/// What stops the restore itself (the scratch server unreachable, a damaged file, bad
/// arguments); differences in the data are a result, not an error.
pub async fn run(config: &Config, request: &DeepRequest) -> Result<DeepReport, DeepError> {
    let started_at = chrono::Utc::now();
    let usage = |m: String| DeepError::Verify(super::verify::VerifyError::Usage(m));
    let destination = config
        .destination(&request.from)
        .map_err(super::verify::VerifyError::from)?
        .open()
        .await
        .map_err(super::verify::VerifyError::from)?;
    destination
        .check(Access::Read)
        .await
        .map_err(super::verify::VerifyError::from)?;
    let loaded = StatusStore::new(destination.clone(), &request.source)
        .load_existing()
        .await?;
    let body = &loaded.status.body;
    let tip = match request.copy.as_deref() {
        Some(id) if id != "latest" => body.copy(id).ok_or_else(|| {
            usage(format!(
                "source {} has no copy {id} at {} (cairn status lists them)",
                request.source,
                destination.location()
            ))
        })?,
        _ => body
            .latest()
            .ok_or_else(|| usage(format!("source {} has no copy to verify", request.source)))?,
    };
    let chain = body.chain(&tip.id).map_err(StatusError::from)?;
    let full = (*chain.first().expect("a chain starts with a full copy")).clone();
    let manifest = restore::manifests(&destination, std::slice::from_ref(&full))
        .await?
        .remove(0);
    let engine = match full.log_range.end {
        LogPosition::Postgres { .. } => Engine::Postgres,
        LogPosition::Mysql { .. } => Engine::Mysql,
    };
    let mut report = DeepReport {
        source: request.source.clone(),
        destination: destination.location(),
        copy: full.id.clone(),
        scratch: Vec::new(),
        kept: request.keep_scratch,
        tables: Vec::new(),
        replayed: None,
        problems: Vec::new(),
    };

    // What the backup recorded, per table: rows, the sum of its files' digests, the columns.
    let mut expected: BTreeMap<(String, String), (u64, RowDigest, serde_json::Value)> = BTreeMap::new();
    for file in &manifest.files {
        let Ok(FileKind::Data(data)) = file.kind() else {
            continue;
        };
        let Some(digest) = data
            .row_digest
            .as_deref()
            .and_then(|d| u128::from_str_radix(d, 16).ok())
        else {
            report.problems.push(format!(
                "copy {} was taken before cairn recorded row digests ({} has none): --deep cannot compare it; \
                 take a new full copy",
                full.id, file.path
            ));
            return Ok(report);
        };
        let entry = expected
            .entry((data.container().to_string(), data.table.clone()))
            .or_insert_with(|| (0, RowDigest::default(), data.columns.clone()));
        entry.0 += data.rows.unwrap_or(0);
        entry.1.add(digest);
    }

    // The scratch database(s): a name no one else uses, from this process and the copy.
    let tag: String = format!("cairn_verify_{}_{}", std::process::id(), full.id)
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(48)
        .collect();
    let containers: BTreeSet<String> = expected.keys().map(|(c, _)| c.clone()).collect();
    let (scratch, restored) = restore_into_scratch(config, request, engine, &full.id, &tag, &containers).await?;
    report.scratch.extend(scratch.names.iter().cloned());
    let compared = match restored {
        Ok(_) => {
            let tables: Vec<TableToDigest> = expected
                .iter()
                .map(|((container, table), (_, _, columns))| TableToDigest {
                    container: scratch
                        .renamed
                        .get(container)
                        .cloned()
                        .unwrap_or_else(|| container.clone()),
                    table: table.clone(),
                    columns: columns.clone(),
                })
                .collect();
            scratch.target.digest_tables(&tables).await.map_err(RestoreError::from)
        }
        Err(e) => Err(e),
    };
    scratch.drop_unless(request).await;
    for (((container, table), (rows, digest, _)), found) in expected.iter().zip(compared?) {
        let intact = found.rows == *rows && found.digest == digest.hex();
        if !intact {
            report.problems.push(format!(
                "table {container}.{table}: the backup read {rows} rows with digest {}, the restore holds {} rows \
                 with digest {}",
                digest.hex(),
                found.rows,
                found.digest
            ));
        }
        report.tables.push(TableCheck {
            table: format!("{container}.{table}"),
            rows: *rows,
            restored_rows: found.rows,
            intact,
        });
    }
    // The incrementals after the full copy: the chain replays into a second scratch database,
    // every change checked by the applier (a row it must change is there, and only once).
    if tip.id != full.id {
        let (chained, replayed) =
            restore_into_scratch(config, request, engine, &tip.id, &format!("{tag}_r"), &containers).await?;
        report.scratch.extend(chained.names.iter().cloned());
        match replayed {
            Ok(replay) => {
                report.replayed = Some(format!(
                    "{} up to {}: {}, {}",
                    crate::text::count(replay.incrementals, "incremental"),
                    tip.id,
                    crate::text::count(replay.transactions, "transaction"),
                    crate::text::count(replay.row_changes, "row change")
                ))
            }
            Err(e) => report
                .problems
                .push(format!("the chain up to {} does not replay: {e}", tip.id)),
        }
        chained.drop_unless(request).await;
    }
    let outcome = VerificationRecord {
        started_at,
        finished_at: chrono::Utc::now(),
        kind: "deep".into(),
        copies: vec![report.copy.clone()],
        intact: report.intact(),
        problems: report.problems.len() as u64,
    };
    super::verify::record(&destination, &report.source, outcome).await;
    Ok(report)
}

/// A scratch restore: the databases it made, the source's databases they stand for (MySQL),
/// and the server.
struct Scratch {
    names: Vec<String>,
    renamed: BTreeMap<String, String>,
    target: Arc<dyn Target>,
}

impl Scratch {
    /// Drops the scratch databases, unless the request keeps them; a failure is a warning.
    async fn drop_unless(&self, request: &DeepRequest) {
        if request.keep_scratch {
            return;
        }
        if let Err(e) = self.target.drop_databases(&self.names).await {
            tracing::warn!("{}: a scratch database was not dropped: {e}", request.source);
        }
    }
}

/// Restores `copy` (with its chain) into new scratch databases named after `tag` on the
/// `--scratch` server; returns them and how the restore ended.
async fn restore_into_scratch(
    config: &Config,
    request: &DeepRequest,
    engine: Engine,
    copy: &str,
    tag: &str,
    containers: &BTreeSet<String>,
) -> Result<(Scratch, Result<RestoreReport, RestoreError>), DeepError> {
    let usage = |m: String| DeepError::Verify(super::verify::VerifyError::Usage(m));
    let mut target = url::Url::parse(&request.scratch).map_err(|e| usage(format!("--scratch: not a URL: {e}")))?;
    let (mut names, mut renames, mut renamed) = (Vec::new(), Vec::new(), BTreeMap::new());
    match engine {
        Engine::Postgres => {
            target.set_path(&format!("/{tag}"));
            names.push(tag.to_string());
        }
        Engine::Mysql => {
            target.set_path("");
            for (index, container) in containers.iter().enumerate() {
                let name = format!("{tag}_{index}");
                renames.push(format!("{container}={name}"));
                renamed.insert(container.clone(), name.clone());
                names.push(name);
            }
        }
    }
    let restore_request = RestoreRequest {
        from: Some(request.from.clone()),
        source: request.source.clone(),
        copy: Some(copy.to_string()),
        target: target.to_string(),
        target_password_file: request.scratch_password_file.clone(),
        jobs: request.jobs,
        rename_databases: renames,
        // A scratch database is no place for the source's accounts.
        with_users: Some(false),
        ..RestoreRequest::default()
    };
    let plan = restore::plan(config, &restore_request).await?;
    let restored = restore::run(&plan).await;
    let mut scratch_url = SourceUrl::parse(target.as_ref()).map_err(|e| usage(format!("--scratch: {e}")))?;
    scratch_url
        .complete_from_command_line("--scratch", request.scratch_password_file.as_deref())
        .map_err(usage)?;
    let target = crate::engine::open_target(&scratch_url).map_err(RestoreError::from)?;
    Ok((Scratch { names, renamed, target }, restored))
}
