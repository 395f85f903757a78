//! `cairn restore --to-sql`: the plan's full copy, or its selection, written as a SQL script by
//! the copy's engine instead of restored into a database.

use super::restore::{RestoreError, RestorePlan, manifests};
use crate::engine::{RestoreInput, RestoreReport};

/// Writes the plan's copy (its selection) as a SQL script to `plan.to_sql` (`-`: standard
/// output): the full copy, then the incrementals' changes up to the plan's point; an existing
/// file is not overwritten.
///
/// # Errors
/// An existing file, a damaged copy file, a change the script cannot say, or a failed write.
pub async fn write_sql(plan: &RestorePlan) -> Result<RestoreReport, RestoreError> {
    let Some(path) = &plan.to_sql else {
        return Err(RestoreError::Usage("write_sql needs --to-sql".into()));
    };
    let Some(full) = plan.chain.first() else {
        return Err(RestoreError::Usage("the plan holds no copy".into()));
    };
    let postgres = matches!(full.log_range.end, crate::repo::status::LogPosition::Postgres { .. });
    if postgres && !plan.mysql.rename_databases.is_empty() {
        return Err(RestoreError::Usage(
            "--rename-db renames MySQL/MariaDB databases; a PostgreSQL script is loaded into the database psql \
             connects to (--into-schema moves chosen tables)"
                .into(),
        ));
    }
    let destination = plan.store.clone().expect("plans are made by plan()");
    let manifests = manifests(&destination, &plan.chain).await?;
    super::restore::check_keys(&manifests)?;
    let input = RestoreInput {
        manifests,
        destination,
        source: plan.source.clone(),
        jobs: 1,
        clean: false,
        mysql: plan.mysql.clone(),
        until: plan.until.clone(),
        resume: false,
        selection: plan.selection.clone(),
        users: Default::default(),
    };
    let report = if path.as_os_str() == "-" {
        let mut out = tokio::io::stdout();
        match postgres {
            true => crate::engine::postgres::write_script(&input, &mut out).await?,
            false => crate::engine::mysql::write_script(&input, &mut out).await?,
        }
    } else {
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await
            .map_err(|e| {
                RestoreError::Usage(format!(
                    "--to-sql {}: {e} (an existing file is not overwritten: choose another path, or remove it)",
                    path.display()
                ))
            })?;
        let mut out = tokio::io::BufWriter::new(file);
        let written = match postgres {
            true => crate::engine::postgres::write_script(&input, &mut out).await,
            false => crate::engine::mysql::write_script(&input, &mut out).await,
        };
        match written {
            Ok(report) => report,
            Err(e) => {
                // Half a script is not one: nobody should load it thinking it whole.
                drop(out);
                if let Err(removing) = tokio::fs::remove_file(path).await {
                    tracing::warn!("removing the unfinished script {}: {removing}", path.display());
                }
                return Err(e.into());
            }
        }
    };
    Ok(RestoreReport {
        target: path.display().to_string(),
        ..report
    })
}
