//! `restore --to-sql` past a PostgreSQL full copy: the chain's changes up to the stop point
//! written into the script as the replay applies them — each source transaction between `BEGIN`
//! and `COMMIT`, row changes as statements with their values as literals, captured DDL under
//! the `search_path` it ran with — then the sequences' values at the stop point.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::super::apply::{OUTPUT_SETTINGS, search_path, truncate_sql};
use super::super::{ddl, quote_ident, row_sql};
use super::chain::ChainChanges;
use super::{Checked, Only};
use crate::engine::change::{Change, Ending};
use crate::engine::{RestoreInput, SourceError};
use crate::repo::model::LogPosition;
use crate::repo::reader::read_text;

/// What the changes part of a script holds.
pub(in crate::engine::postgres) struct Written {
    pub transactions: u64,
    pub row_changes: u64,
    /// The source's position the script's data corresponds to.
    pub position: LogPosition,
}

/// Writes the changes of `checked` (the chain of `input`) to `out`; `only`: a selective
/// restore's tables, whose changes only are written, under their restored names.
///
/// # Errors
/// A change a script cannot hold (DDL that is not replayable), a damaged change file, or a
/// failed write.
pub(in crate::engine::postgres) async fn write_changes(
    input: &RestoreInput,
    checked: &Checked,
    only: Option<&dyn Only>,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<Written, SourceError> {
    let failed = |e: std::io::Error| SourceError::Database {
        database: "the script".into(),
        doing: "writing the script".into(),
        detail: e.to_string(),
    };
    let mut text = format!(
        "\n-- The changes of {} up to {}\nSET standard_conforming_strings = on;\n{OUTPUT_SETTINGS};\n",
        crate::text::count(input.manifests.len() as u64 - 1, "incremental"),
        input
            .until
            .as_ref()
            .map_or("the end of the chain".to_string(), |u| u.to_string())
    );
    let mut written = Written {
        transactions: 0,
        row_changes: 0,
        position: checked.stop.position.clone(),
    };
    let mut changes = ChainChanges::new(input, checked, None, only)?;
    while let Some(change) = changes.next().await? {
        match change {
            Change::Begin { .. } => text.push_str("BEGIN;\n"),
            Change::Rows(rows) => {
                if rows.names.len() as u64 != rows.columns {
                    return Err(SourceError::Unsupported(format!(
                        "{}: the change of {}.{} does not name its columns; it cannot be written as SQL",
                        rows.at, rows.database, rows.table
                    )));
                }
                let table = format!("{}.{}", quote_ident(&rows.database), quote_ident(&rows.table));
                for change in &rows.changes {
                    if let Some(statement) = row_sql::script_statement(&table, &rows, change)? {
                        text.push_str(&statement);
                        text.push_str(";\n");
                        written.row_changes += 1;
                    }
                }
            }
            Change::Truncate(truncate) => {
                text.push_str(&truncate_sql(&truncate));
                text.push_str(";\n");
            }
            Change::Statement(statement) => {
                let command = ddl::replayable(&statement.text)
                    .map_err(|why| SourceError::Unsupported(format!("{}: {why}", statement.at)))?;
                if touches_triggers_or_rules(&command) {
                    // The script creates the copy's triggers and rules after the changes, so
                    // that none fires on a logged row; DDL on them cannot run before they exist.
                    return Err(SourceError::Unsupported(format!(
                        "{}: {}: a script cannot replay DDL on triggers or rules (it creates them after the \
                         changes); write it up to a point before this statement (--until-lsn), or restore into a \
                         database (--target), which replays it",
                        statement.at,
                        command.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
                    )));
                }
                if let Some(role) = &statement.session.role {
                    // The loading role owns what it creates; the script does not assume the
                    // source's roles exist where it is loaded.
                    text.push_str(&format!("-- ran on the source as role {}\n", quote_ident(role)));
                }
                text.push_str(&format!(
                    "SET LOCAL search_path TO {};\n{};\n",
                    search_path(&statement.database),
                    command.trim_end().trim_end_matches(';')
                ));
            }
            Change::Commit(commit) => {
                text.push_str(match commit.ending {
                    Ending::Rollback => "ROLLBACK;\n",
                    Ending::Commit | Ending::Standalone => "COMMIT;\n",
                });
                text.push_str(&format!("-- {}\n", commit.position));
                written.transactions += 1;
            }
        }
        // Bounded: a transaction's statements go out as they come.
        if text.len() >= 256 * 1024 {
            out.write_all(text.as_bytes()).await.map_err(failed)?;
            text.clear();
        }
    }
    // Sequences are not decoded: each incremental recorded their values at its end.
    if let Some(file) = checked.files.get(checked.stop.sequences_of) {
        let sql = read_text(&input.destination, &file.sequences).await?;
        let sql = match only {
            Some(only) => only.sequence_values(&sql),
            None => sql,
        };
        text.push_str("\n-- The sequences at the stop point\n");
        text.push_str(&sql);
        text.push('\n');
    }
    out.write_all(text.as_bytes()).await.map_err(failed)?;
    Ok(written)
}

/// Whether DDL creates, changes or drops a trigger or a rule.
fn touches_triggers_or_rules(command: &str) -> bool {
    let upper = command.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().collect();
    matches!(words.first(), Some(&("CREATE" | "DROP" | "ALTER")))
        && words.iter().any(|w| matches!(*w, "TRIGGER" | "RULE"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ddl_on_triggers_and_rules_is_told_apart() {
        use super::touches_triggers_or_rules as touches;
        assert!(touches(
            "CREATE TRIGGER t AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f()"
        ));
        assert!(touches("ALTER TABLE x DISABLE TRIGGER t"));
        assert!(touches("create or replace rule r as on insert to x do nothing"));
        assert!(!touches("ALTER TABLE x ADD COLUMN note text"));
        assert!(!touches("CREATE INDEX i ON x (a)"));
    }
}
