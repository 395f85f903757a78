//! `cairn restore --to-sql` of a PostgreSQL full copy — or of the tables a selection chooses —
//! as a plain SQL script psql loads: the schema pg_dump wrote, each data file as a `COPY … FROM
//! stdin` block (the stored `COPY` text as it is, its MD5 checked as it streams), the keys and
//! indexes, the sequences' values; then the incrementals' changes up to the point and the
//! sequences there; then the triggers, rules and foreign keys, and the materialized views'
//! refresh.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::schema;
use super::selective::selected;
use crate::engine::{RestoreInput, RestoreReport, SourceError};
use crate::repo::file_kind::FileKind;
use crate::repo::reader::{data_files, files_of, one_of, open_verified, read_text};

/// Writes the script of `input`'s full copy (its selection) to `out`.
///
/// # Errors
/// A selection that chooses nothing, a damaged file, or a failed write.
pub(crate) async fn write_script(
    input: &RestoreInput,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<RestoreReport, SourceError> {
    let started = std::time::Instant::now();
    let manifest = &input.manifests[0];
    let copy = &manifest.copy.id;
    let files = files_of(&input.source, manifest)?;
    let failed = |e: std::io::Error| SourceError::Database {
        database: "the script".into(),
        doing: "writing the script".into(),
        detail: e.to_string(),
    };
    // Every change file is fetched and checked, and the stop point found, before a line is
    // written.
    let checked = match input.manifests.len() {
        1 => None,
        _ => Some(super::replay::check(input).await?),
    };
    let header = format!(
        "-- cairn restore --to-sql: source {}, copy {} ({} at {})\n",
        input.source, copy, manifest.copy.kind, manifest.copy.log_range.end
    );
    out.write_all(header.as_bytes()).await.map_err(failed)?;
    // The schema, and the tables whose rows follow.
    let (tables, post, sequences, refresh, selected) = match input.selection.is_empty() {
        true => {
            let pre = read_text(&input.destination, &one_of(&files, FileKind::PreData, copy)?).await?;
            let post = read_text(&input.destination, &one_of(&files, FileKind::PostData, copy)?).await?;
            let sequences = read_text(&input.destination, &one_of(&files, FileKind::Sequences, copy)?).await?;
            let refresh = read_text(&input.destination, &one_of(&files, FileKind::Refresh, copy)?).await?;
            out.write_all(pre.as_bytes()).await.map_err(failed)?;
            let publication = match &manifest.copy.log_range.end {
                crate::repo::model::LogPosition::Postgres { slot, .. } => slot.as_deref(),
                crate::repo::model::LogPosition::Mysql { .. } => None,
            };
            let script = schema::without_cairn_objects(schema::split(&post), publication);
            (None, script.entries, sequences, refresh, None)
        }
        false => {
            let (selected, preamble, sequences) = selected(input).await?;
            for line in &selected.left_out {
                tracing::warn!("not in the script: {line}");
            }
            let mut pre = format!("{preamble}\n");
            let schemas: std::collections::BTreeSet<&String> = selected.made.iter().map(|(s, _)| s).collect();
            for name in schemas {
                pre.push_str(&format!("CREATE SCHEMA IF NOT EXISTS {};\n", super::quote_ident(name)));
            }
            for entry in &selected.pre {
                pre.push_str(&entry.sql);
                pre.push('\n');
            }
            out.write_all(pre.as_bytes()).await.map_err(failed)?;
            let values = selected.sequence_values(&sequences);
            let tables = Some((selected.tables.clone(), selected.into.clone()));
            (tables, selected.post.clone(), values, String::new(), Some(selected))
        }
    };
    // What would act on the replayed changes comes after them: triggers and rules would fire or
    // rewrite (the log holds what they did), foreign keys would cascade.
    let (after_changes, post): (Vec<_>, Vec<_>) = post
        .into_iter()
        .partition(|e| matches!(e.kind.as_str(), "TRIGGER" | "EVENT TRIGGER" | "RULE" | "FK CONSTRAINT"));
    // The stored rows are UTF-8 (the copy read them so), whatever pg_dump's preamble set.
    out.write_all(b"\nSET client_encoding = 'UTF8';\n")
        .await
        .map_err(failed)?;
    let (mut written, mut rows) = (0u64, 0u64);
    for stored in data_files(&files) {
        let Some(data) = stored.data() else { continue };
        let key = (data.container().to_string(), data.table.clone());
        if tables.as_ref().is_some_and(|(tables, _)| !tables.contains(&key)) {
            continue;
        }
        let into = tables.as_ref().and_then(|(_, into)| into.clone());
        let columns: Vec<String> = serde_json::from_value(data.columns.clone()).unwrap_or_default();
        let list = match columns.is_empty() {
            true => String::new(),
            false => format!(
                " ({})",
                columns
                    .iter()
                    .map(|c| super::quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let head = format!(
            "\nCOPY {}{list} FROM stdin;\n",
            schema::qualified(into.as_deref().unwrap_or(&key.0), &key.1)
        );
        out.write_all(head.as_bytes()).await.map_err(failed)?;
        let mut reader = open_verified(&input.destination, &stored).await?;
        let mut last = b'\n';
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = crate::streams::fill(&mut reader, &mut buffer)
                .await
                .map_err(SourceError::from_read)?;
            if n == 0 {
                break;
            }
            last = buffer[n - 1];
            // COPY text ends every row with a newline and escapes those inside values.
            rows += buffer[..n].iter().filter(|b| **b == b'\n').count() as u64;
            out.write_all(&buffer[..n]).await.map_err(failed)?;
        }
        if last != b'\n' {
            out.write_all(b"\n").await.map_err(failed)?;
        }
        out.write_all(b"\\.\n").await.map_err(failed)?;
        written += 1;
    }
    for entry in &post {
        out.write_all(format!("\n{}\n", entry.sql).as_bytes())
            .await
            .map_err(failed)?;
    }
    out.write_all(sequences.as_bytes()).await.map_err(failed)?;
    let mut position = manifest.copy.log_range.end.clone();
    let (mut transactions, mut row_changes) = (0, 0);
    if let Some(checked) = &checked {
        let only = selected.as_ref().map(|s| s as &dyn super::replay::Only);
        let written = super::replay::write_changes(input, checked, only, out).await?;
        (transactions, row_changes, position) = (written.transactions, written.row_changes, written.position);
    }
    for entry in &after_changes {
        out.write_all(format!("\n{}\n", entry.sql).as_bytes())
            .await
            .map_err(failed)?;
    }
    out.write_all(refresh.as_bytes()).await.map_err(failed)?;
    out.flush().await.map_err(failed)?;
    Ok(RestoreReport {
        target: "the script".into(),
        tables: tables.map_or(0, |(t, _)| t.len() as u64),
        rows,
        files: written,
        incrementals: input.manifests.len() as u64 - 1,
        transactions,
        row_changes,
        position: Some(position),
        seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    })
}
