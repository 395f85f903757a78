//! What a restore says outside its target: the dry run's description of a plan (the chain,
//! its files, the stop point, the checks) and the position file written after it.

use super::restore::{RestoreError, RestorePlan, check_prepared, prepare};
use crate::repo::file_kind::FileKind;

/// What `restore --dry-run` prints: the chain, each copy's files and log range, and the exact
/// stop point, found by reading (and checking) the incrementals' files; nothing is written.
///
/// # Errors
/// Destination errors, a damaged manifest or file, or a stop point the chain does not hold.
pub async fn describe(plan: &RestorePlan) -> Result<String, RestoreError> {
    let (target, input) = prepare(plan).await?;
    let checks = check_prepared(target.as_ref(), &input).await?;
    let manifests = &input.manifests;
    let mut text = format!(
        "restore of source {} from {} into {}\n",
        plan.source, plan.destination, plan.target
    );
    if plan.resume {
        text.push_str("  --resume: the full copy is already in the target; the replay continues where it stopped\n");
    }
    for (copy, manifest) in plan.chain.iter().zip(manifests) {
        text.push_str(&format!(
            "  {} {} ({}), {}, {} bytes, log {} .. {}\n",
            copy.id,
            copy.kind,
            copy.run_type,
            crate::text::count(copy.files, "file"),
            copy.bytes,
            copy.log_range.start,
            copy.log_range.end
        ));
        if copy.kind == crate::repo::kinds::CopyKind::Incremental {
            let detail = |name: &str| copy.details.get(name).cloned().unwrap_or(serde_json::Value::Null);
            text.push_str(&format!(
                "    {} transactions, events from {} to {}\n",
                detail("transactions"),
                detail("first_event_at").as_str().unwrap_or("-"),
                detail("last_event_at").as_str().unwrap_or("-")
            ));
            for file in &manifest.files {
                let Ok(FileKind::Binlog(binlog)) = file.kind() else {
                    continue;
                };
                text.push_str(&format!(
                    "    {}: {} {}..{}, {} events\n",
                    file.path,
                    binlog.server_file,
                    binlog.start,
                    binlog.end,
                    binlog.events.map_or("null".to_string(), |n| n.to_string())
                ));
            }
        }
    }
    for line in checks {
        text.push_str(&line);
        text.push('\n');
    }
    Ok(text)
}

/// Writes the position a restore reached to the file the user named, for seeding a replica.
///
/// # Errors
/// [`RestoreError::Usage`] naming the file when it cannot be written.
pub fn write_position(
    path: &std::path::Path,
    plan: &RestorePlan,
    position: &crate::repo::status::LogPosition,
) -> Result<(), RestoreError> {
    let body = serde_json::json!({
        "source": plan.source,
        "copy": plan.chain.last().map(|c| c.id.clone()),
        "full_copy": plan.chain.first().map(|c| c.id.clone()),
        "target": plan.target,
        "until": plan.until,
        "until_covered": plan.until_not_covered.is_none(),
        "position": position,
        "written_at": chrono::Utc::now(),
    });
    let text = serde_json::to_string_pretty(&body).expect("positions serialize") + "\n";
    crate::user_file::write(path, text.as_bytes()).map_err(|e| {
        RestoreError::Usage(format!(
            "the restore finished, but its position could not be written to {}: {e}; the position is printed above",
            path.display()
        ))
    })
}
