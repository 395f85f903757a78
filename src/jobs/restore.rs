//! Restore: choosing the copy and its chain from the status, and (with an engine) replaying it
//! into a target database.

use super::restore_copy::ChoiceError;
pub use super::restore_describe::{describe, write_position};
use crate::engine::selection::Selection;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::engine::{MysqlRestoreOptions, RestoreInput, RestoreReport, SourceError, SourceUrl, Until, UntilArgs};
use crate::repo::manifest::Manifest;
use crate::repo::status::{CopyRecord, MAX_STATUS_BYTES, StatusError};
use crate::storage::{Destination, DestinationError, DestinationExt, md5_hex};

/// Errors of a restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("source {source_name} has no copy at {location}")]
    NoCopy { source_name: String, location: String },
    #[error("{0}")]
    Manifest(String),
    /// The source's log no longer reaches where a seeded replica would start.
    #[error("{0}")]
    LogGap(String),
}

/// What `cairn restore` was asked for.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// The destination; `None`: the source's configured one.
    pub from: Option<String>,
    pub source: String,
    /// A copy id, a unique start of one, or `latest`.
    pub copy: Option<String>,
    /// The newest copy that finished before this time (instead of `copy`).
    pub before: Option<chrono::DateTime<chrono::Utc>>,
    pub target: String,
    /// Password of the target.
    pub target_password_file: Option<std::path::PathBuf>,
    pub jobs: Option<u32>,
    pub clean: bool,
    /// `FROM=TO` database renames (MySQL).
    pub rename_databases: Vec<String>,
    pub no_binlog: bool,
    pub verify_checksums: bool,
    /// Where replay of incrementals stops (MySQL).
    pub until: Option<Until>,
    /// Continue an interrupted replay (MySQL).
    pub resume: bool,
    /// Table patterns to restore, and not to (empty: all).
    pub tables: Vec<String>,
    pub exclude_tables: Vec<String>,
    /// `OLD=NEW` table renames.
    pub rename_tables: Vec<String>,
    pub keep_foreign_keys: bool,
    /// PostgreSQL: the schema the chosen tables are restored into.
    pub into_schema: Option<String>,
    /// Write a SQL script there (`-`: standard output) instead of restoring into `target`.
    pub to_sql: Option<std::path::PathBuf>,
    /// `--with-users` (`Some(true)`) / `--without-users`; `None`: the default.
    pub with_users: Option<bool>,
    /// `--replace-users`.
    pub replace_users: bool,
    /// A replica is being seeded: the copy's accounts come along by default.
    pub seeding: bool,
}

/// The copies a restore applies, full first, and where they go.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    pub source: String,
    pub destination: String,
    /// The target URL, password masked.
    pub target: String,
    pub jobs: u32,
    pub clean: bool,
    #[serde(flatten)]
    pub mysql: MysqlRestoreOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<Until>,
    pub resume: bool,
    /// Why `until` lies beyond what the chain holds; the restore then goes to the chain's end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_not_covered: Option<String>,
    pub chain: Vec<CopyRecord>,
    #[serde(skip_serializing_if = "Selection::is_empty")]
    pub selection: Selection,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_sql: Option<std::path::PathBuf>,
    pub users: crate::engine::accounts::UsersChoice,
    #[serde(skip)]
    target_url: SourceUrl,
    #[serde(skip)]
    pub(super) store: Option<Arc<dyn Destination>>,
}

impl RestorePlan {
    /// The engine writing into the plan's target.
    ///
    /// # Errors
    /// [`RestoreError::Source`] when the target's engine is not available.
    /// The target as the chain's copies are restored into it (a MySQL chain into PostgreSQL is
    /// translated).
    pub fn target_engine(&self) -> Result<Arc<dyn crate::engine::Target>, RestoreError> {
        let copy_engine = self.chain.first().map(|c| match c.log_range.end {
            crate::repo::status::LogPosition::Postgres { .. } => crate::engine::Engine::Postgres,
            crate::repo::status::LogPosition::Mysql { .. } => crate::engine::Engine::Mysql,
        });
        Ok(match copy_engine {
            Some(engine) => crate::engine::open_target_for(&self.target_url, engine)?,
            None => crate::engine::open_target(&self.target_url)?,
        })
    }
}

/// Resolves the copy and its chain from the status; writes nothing.
///
/// # Errors
/// Usage errors for bad arguments, status errors, or a broken chain.
pub async fn plan(config: &Config, request: &RestoreRequest) -> Result<RestorePlan, RestoreError> {
    if request.to_sql.is_some() {
        let given = [
            ("--target", !request.target.is_empty()),
            ("--clean", request.clean),
            ("--resume", request.resume),
            ("--checksum", request.verify_checksums),
            ("--no-binlog", request.no_binlog),
            ("--with-users", request.with_users == Some(true)),
            ("--replace-users", request.replace_users),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, on)| *on) {
            return Err(RestoreError::Usage(format!(
                "--to-sql writes a script instead of restoring into a database: leave {flag} out"
            )));
        }
    } else if request.target.is_empty() {
        return Err(RestoreError::Usage(
            "name where to restore: --target URL, or --to-sql FILE".into(),
        ));
    }
    // A script names no server: its engine is the copy's (checked in `write_sql`).
    let target = match request.to_sql {
        Some(_) => "mysql://localhost",
        None => request.target.as_str(),
    };
    let mut target_url = SourceUrl::parse(target).map_err(|e| RestoreError::Usage(format!("--target: {e}")))?;
    if request.to_sql.is_none() {
        target_url
            .complete_from_command_line("--target", request.target_password_file.as_deref())
            .map_err(RestoreError::Usage)?;
    }
    if target_url.engine == crate::engine::Engine::Postgres && target_url.database().is_none() {
        return Err(RestoreError::Usage(format!(
            "--target {target_url}: name the database to restore into, e.g. postgres://user@host/app_restored"
        )));
    }
    if request.jobs == Some(0) {
        return Err(RestoreError::Usage("--jobs must be at least 1".into()));
    }
    let mut rename_databases = Vec::new();
    for rename in &request.rename_databases {
        let Some((from, to)) = rename.split_once('=').filter(|(f, t)| !f.is_empty() && !t.is_empty()) else {
            return Err(RestoreError::Usage(format!("--rename-db {rename:?}: expected FROM=TO")));
        };
        rename_databases.push((from.to_string(), to.to_string()));
    }
    let mysql = MysqlRestoreOptions {
        rename_databases,
        no_binlog: request.no_binlog,
        verify_checksums: request.verify_checksums,
    };
    target_url
        .engine
        .check_restore(&mysql, request.until.as_ref())
        .map_err(RestoreError::Usage)?;
    let selection = Selection {
        tables: request.tables.clone(),
        exclude_tables: request.exclude_tables.clone(),
        renames: Selection::parse_renames(&request.rename_tables).map_err(RestoreError::Usage)?,
        keep_foreign_keys: request.keep_foreign_keys,
        into_schema: request.into_schema.clone(),
    };
    if request.keep_foreign_keys && selection.is_empty() {
        return Err(RestoreError::Usage(
            "--keep-foreign-keys is for a selective restore (--table, --exclude-table, --rename-table)".into(),
        ));
    }
    if !selection.is_empty() {
        let given = [
            ("--clean", request.clean),
            ("--checksum", request.verify_checksums),
            ("--resume", request.resume),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, on)| *on) {
            return Err(RestoreError::Usage(format!(
                "{flag} with a selective restore (--table, --exclude-table, --rename-table) is not built yet \
                 (issue #16): a selective restore leaves everything else in the target as it is"
            )));
        }
    }
    if request.resume && request.clean {
        return Err(RestoreError::Usage(
            "--resume continues a replay in the target; --clean would drop it first: pass one of them".into(),
        ));
    }
    let ask = super::restore_copy::Ask {
        copy: request.copy.as_deref(),
        before: request.before,
        until: request.until.as_ref(),
        source: &request.source,
    };
    let located = super::restore_copy::locate(config, request.from.as_deref(), &ask)
        .await
        .map_err(|e| match e {
            ChoiceError::Usage(message) => RestoreError::Usage(message),
            ChoiceError::Status(e) => RestoreError::Status(e),
            ChoiceError::NoCopy { source_name, location } => RestoreError::NoCopy { source_name, location },
            ChoiceError::Config(e) => RestoreError::Config(e),
            ChoiceError::Destination(e) => RestoreError::Destination(e),
        })?;
    let (destination, body, copy) = (located.destination, &located.body, &located.copy);
    let chain = body
        .chain(&copy.id)
        .map_err(StatusError::from)?
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    // The stop point must be one the copy's engine has (a PostgreSQL target may take a MySQL
    // chain, translated).
    if let Some(full) = chain.first() {
        let engine = match full.log_range.end {
            crate::repo::status::LogPosition::Postgres { .. } => crate::engine::Engine::Postgres,
            crate::repo::status::LogPosition::Mysql { .. } => crate::engine::Engine::Mysql,
        };
        engine
            .check_until(request.until.as_ref())
            .map_err(RestoreError::Usage)?;
    }
    if let (Some(Until::Time(time)), Some(full)) = (&request.until, chain.first())
        && *time < full.started_at
    {
        return Err(RestoreError::Usage(format!(
            "--until {}: full copy {} of this chain was started later ({}); it cannot go back in time. Restore an \
             older copy (--copy ID, see cairn status), or leave --copy out to let cairn choose",
            time.to_rfc3339(),
            full.id,
            full.started_at.to_rfc3339()
        )));
    }
    if request.verify_checksums
        && let Some(full) = chain.first()
        && !full.details.contains_key("checksums")
    {
        return Err(RestoreError::Usage(format!(
            "--checksum: full copy {} was taken without table checksums, so there is nothing to compare; restore \
             without --checksum, or take copies with `cairn backup --checksum` (checksums = true)",
            full.id
        )));
    }
    let until_not_covered = request
        .until
        .as_ref()
        .and_then(|until| not_covered(until, chain.last()?));
    if let (Some(until), Some(why)) = (&request.until, &until_not_covered) {
        tracing::warn!("--until {until}: the requested point is not covered: {why}; restoring to the end of the chain");
    }
    if let (Some(until), [only]) = (&request.until, chain.as_slice()) {
        return Err(RestoreError::Usage(format!(
            "copy {} is a full copy with no incremental after it in its chain; it cannot stop at {until}. Restore the \
             latest copy (--copy latest) or an incremental whose chain reaches the point",
            only.id
        )));
    }
    Ok(RestorePlan {
        source: request.source.clone(),
        destination: destination.location(),
        target: target_url.to_string(),
        jobs: request.jobs.unwrap_or_else(crate::engine::default_jobs),
        clean: request.clean,
        mysql,
        until: request.until.clone(),
        resume: request.resume,
        until_not_covered,
        chain,
        selection,
        to_sql: request.to_sql.clone(),
        users: crate::engine::accounts::UsersChoice {
            with: request.with_users,
            replace: request.replace_users,
            seeding: request.seeding,
        },
        target_url,
        store: Some(destination),
    })
}

/// Why `until` is past the end of a chain whose last copy is `last`, if it is.
fn not_covered(until: &Until, last: &CopyRecord) -> Option<String> {
    match until {
        Until::Time(time) if *time > last.finished_at => Some(format!(
            "the chain ends with copy {}, taken up to {}",
            last.id,
            last.finished_at.to_rfc3339()
        )),
        Until::Position { .. } | Until::Lsn(_) if until.is_after(&last.log_range.end) => Some(format!(
            "the chain ends with copy {} at {}",
            last.id,
            last.log_range.end.coordinates()
        )),
        _ => None,
    }
}

/// Reads each manifest of the chain and checks it against the MD5 the status recorded.
///
/// # Errors
/// [`RestoreError::Manifest`] naming the manifest that does not match or does not parse.
pub async fn manifests(
    destination: &Arc<dyn Destination>,
    chain: &[CopyRecord],
) -> Result<Vec<Manifest>, RestoreError> {
    let mut manifests = Vec::new();
    for copy in chain {
        let name = format!("{} at {}", copy.manifest.path, destination.location());
        let bytes = destination.get_bytes(&copy.manifest.path, MAX_STATUS_BYTES).await?;
        let actual = md5_hex(&bytes);
        if actual != copy.manifest.md5 {
            return Err(RestoreError::Manifest(format!(
                "manifest {name} is damaged: the status records MD5 {}, it hashes to {actual}",
                copy.manifest.md5
            )));
        }
        manifests.push(Manifest::decode(&name, &bytes).map_err(|e| RestoreError::Manifest(e.to_string()))?);
    }
    Ok(manifests)
}

/// Replays a plan into its target.
///
/// # Errors
/// Engine errors (naming the file, table or statement), damaged manifests or files.
pub async fn run(plan: &RestorePlan) -> Result<RestoreReport, RestoreError> {
    let (target, input) = prepare(plan).await?;
    target.preflight(&input).await?;
    Ok(target.restore(&input).await?)
}

/// Every check a restore makes before it loads, against the target too, changing nothing:
/// the lines `restore --dry-run` prints about the target and the stop point.
///
/// # Errors
/// What the restore would fail with before loading: login, a non-empty target, nothing to
/// resume, a damaged file, a stop point the chain does not hold.
pub async fn check(plan: &RestorePlan) -> Result<Vec<String>, RestoreError> {
    let (target, input) = prepare(plan).await?;
    check_prepared(target.as_ref(), &input).await
}

pub(super) async fn check_prepared(
    target: &dyn crate::engine::Target,
    input: &RestoreInput,
) -> Result<Vec<String>, RestoreError> {
    let mut lines: Vec<String> = target
        .preflight(input)
        .await?
        .into_iter()
        .map(|note| format!("  checked: {note}"))
        .collect();
    // Reading the incrementals' files finds the exact stop point and checks every file.
    lines.extend(target.preview(input).await?);
    let elsewhere = !input.mysql.rename_databases.is_empty() || !input.selection.is_empty();
    let accounts = crate::engine::accounts::preview(input, elsewhere).await?;
    lines.extend(accounts.into_iter().map(|line| format!("  {line}")));
    Ok(lines)
}

/// The engine for the plan's target and what it restores, with every manifest read and checked.
pub(super) async fn prepare(
    plan: &RestorePlan,
) -> Result<(Arc<dyn crate::engine::Target>, RestoreInput), RestoreError> {
    let copy_engine = plan.chain.first().map(|c| match c.log_range.end {
        crate::repo::status::LogPosition::Postgres { .. } => crate::engine::Engine::Postgres,
        crate::repo::status::LogPosition::Mysql { .. } => crate::engine::Engine::Mysql,
    });
    // A MySQL/MariaDB copy may go into PostgreSQL (translated); nothing goes the other way.
    if let Some(engine) = copy_engine
        && engine != plan.target_url.engine
        && engine != crate::engine::Engine::Mysql
    {
        return Err(RestoreError::Usage(format!(
            "source {} holds {engine} copies; they cannot be restored into the {} database {}",
            plan.source, plan.target_url.engine, plan.target
        )));
    }
    if copy_engine == Some(crate::engine::Engine::Mysql)
        && plan.target_url.engine == crate::engine::Engine::Postgres
        && plan.users.with == Some(true)
    {
        return Err(RestoreError::Usage(
            "--with-users: a MySQL/MariaDB copy's accounts are not made in PostgreSQL; create the roles there \
             yourself"
                .into(),
        ));
    }
    if copy_engine == Some(crate::engine::Engine::Postgres) && !plan.mysql.rename_databases.is_empty() {
        return Err(RestoreError::Usage(
            "--rename-db applies to MySQL/MariaDB copies (databases restored under other names, or into other \
             PostgreSQL schemas); a PostgreSQL copy goes into the database of --target"
                .into(),
        ));
    }
    let target = match copy_engine {
        Some(engine) => crate::engine::open_target_for(&plan.target_url, engine)?,
        None => crate::engine::open_target(&plan.target_url)?,
    };
    let destination = plan.store.clone().expect("plans are made by plan()");
    let manifests = manifests(&destination, &plan.chain).await?;
    check_keys(&manifests)?;
    if !plan.selection.is_empty() && copy_engine.is_some_and(|engine| engine != plan.target_url.engine) {
        return Err(RestoreError::Usage(
            "a selective restore (--table, --exclude-table, --rename-table) of a MySQL/MariaDB copy into \
             PostgreSQL is not built yet (issue #16)"
                .into(),
        ));
    }
    let input = RestoreInput {
        destination,
        source: plan.source.clone(),
        manifests,
        jobs: plan.jobs,
        clean: plan.clean,
        mysql: plan.mysql.clone(),
        until: plan.until.clone(),
        resume: plan.resume,
        selection: plan.selection.clone(),
        users: plan.users,
    };
    Ok((target, input))
}

/// Checks that every encrypted copy of a chain has its key configured, so a missing key fails
/// before anything reaches the target.
///
/// # Errors
/// [`RestoreError::Usage`] naming the copy and the key id it needs.
pub fn check_keys(manifests: &[crate::repo::manifest::Manifest]) -> Result<(), RestoreError> {
    for manifest in manifests {
        let Some(key_id) = manifest.copy.details.get("key_id").and_then(|k| k.as_str()) else {
            continue;
        };
        if crate::repo::crypt::reading_key(key_id).is_none() {
            return Err(RestoreError::Usage(format!(
                "copy {} is encrypted with key {key_id}, which is not configured: name its key file in [encryption] \
                 (key-file, or old-key-files after a rotation) or the source's [sources.NAME.encryption]; nothing \
                 was restored",
                manifest.copy.id
            )));
        }
    }
    Ok(())
}

/// Reads the stop-point arguments (at most one is given).
///
/// # Errors
/// [`RestoreError::Usage`] naming the argument and the form expected.
pub fn parse_time(flag: &str, text: &str) -> Result<chrono::DateTime<chrono::Utc>, RestoreError> {
    crate::engine::parse_time(flag, text).map_err(RestoreError::Usage)
}

/// The stop point the `--until*` arguments give, checked.
///
/// # Errors
/// A malformed or conflicting argument (usage).
pub fn parse_until(args: UntilArgs<'_>) -> Result<Option<Until>, RestoreError> {
    Until::parse(args).map_err(RestoreError::Usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_arguments_are_checked() {
        let time = |t| UntilArgs {
            time: Some(t),
            ..Default::default()
        };
        let position = |p| UntilArgs {
            position: Some(p),
            ..Default::default()
        };
        assert!(matches!(
            parse_until(time("2026-11-21 08:30:00")).unwrap(),
            Some(Until::Time(_))
        ));
        assert!(parse_until(time("yesterday")).is_err());
        assert_eq!(
            parse_until(position("binlog.000042:1234")).unwrap(),
            Some(Until::Position {
                file: "binlog.000042".into(),
                position: 1234
            })
        );
        assert!(parse_until(position("binlog.000042")).is_err());
        assert!(
            parse_until(UntilArgs {
                gtid: Some("0-1"),
                ..Default::default()
            })
            .is_err()
        );
        let lsn = |l| UntilArgs {
            lsn: Some(l),
            ..Default::default()
        };
        assert_eq!(
            parse_until(lsn("16/B374D848")).unwrap(),
            Some(Until::Lsn(0x16_B374_D848))
        );
        assert!(parse_until(lsn("16B374D848")).is_err());
        let xid = |x| UntilArgs {
            xid: Some(x),
            ..Default::default()
        };
        assert_eq!(parse_until(xid("7481")).unwrap(), Some(Until::Xid(7481)));
        assert!(parse_until(xid("-1")).is_err());
        assert!(parse_until(xid("2")).is_err(), "ids below 3 are PostgreSQL's own");
        assert_eq!(parse_until(UntilArgs::default()).unwrap(), None);
    }
}
