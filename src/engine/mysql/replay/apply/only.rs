//! A replay that restores only chosen tables (`cairn restore --table … --until …`): row changes
//! of other tables are not applied, renamed tables take their new names, and a logged statement
//! applies only when every table it changes is restored — one that changes other tables too, or
//! changes a table restored under another name (its text names the old one), stops the replay
//! instead of touching the live target.

use std::collections::BTreeMap;

use super::super::Restored;

use crate::engine::SourceError;
use crate::engine::mysql::first_words;
use crate::engine::selection::Selection;

/// The chosen tables of a selective replay.
#[derive(Debug, Clone)]
pub(in crate::engine::mysql::replay) struct Only {
    selection: Selection,
    restored: Restored,
}

/// What to do with a logged statement.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::engine::mysql::replay) enum Verdict {
    Apply,
    Skip,
}

impl Only {
    pub(in crate::engine::mysql::replay) fn new(selection: Selection, restored: Restored) -> Self {
        Only { selection, restored }
    }

    /// A table of the full copy the restore made (a table the pattern matches but the copy did
    /// not hold — created later in the log — is not: the target may have a live one).
    fn chosen(&self, database: &str, table: &str) -> bool {
        self.restored
            .chosen
            .contains(&(database.to_string(), table.to_string()))
    }

    /// Whether the target's `database`.`table` is one the restore made (its triggers are set
    /// aside during the replay; the live tables' are not touched).
    pub(in crate::engine::mysql::replay) fn restored(&self, database: &str, table: &str) -> bool {
        self.restored.made.contains(&(database.to_string(), table.to_string()))
    }

    /// The name the rows of `database`.`table` are applied to, or `None` when it is not restored.
    pub(in crate::engine::mysql::replay) fn table(&self, database: &str, table: &str) -> Option<String> {
        self.chosen(database, table)
            .then(|| self.selection.name_of(database, table))
    }

    /// Whether a logged statement naming `tables` (by source database) applies.
    ///
    /// # Errors
    /// A statement that changes restored tables and others, or a table restored under another name.
    pub(in crate::engine::mysql::replay) fn statement(
        &self,
        at: &str,
        text: &str,
        tables: &[(String, String)],
    ) -> Result<Verdict, SourceError> {
        let refuse = |why: String| {
            SourceError::Unsupported(format!(
                "{at}: {}: {why}; the selective restore stops here rather than change anything else — restore up \
                 to a point before it (--until), or choose the tables differently",
                first_words(text)
            ))
        };
        if tables.is_empty() && changes_rows(text) {
            // A row change logged as a statement (a session that chose the statement format):
            // which tables it changes is not known without a parser.
            return Err(refuse(
                "a change of rows logged as a statement, whose tables cairn cannot tell".into(),
            ));
        }
        let chosen: Vec<&(String, String)> = tables.iter().filter(|(d, t)| self.chosen(d, t)).collect();
        if chosen.is_empty() {
            return Ok(Verdict::Skip);
        }
        if chosen.len() < tables.len() {
            let others: Vec<String> = tables
                .iter()
                .filter(|(d, t)| !self.chosen(d, t))
                .map(|(d, t)| format!("{d}.{t}"))
                .collect();
            return Err(refuse(format!(
                "it changes restored tables and others too ({})",
                others.join(", ")
            )));
        }
        let renamed: BTreeMap<String, String> = chosen
            .iter()
            .map(|(d, t)| (format!("{d}.{t}"), self.selection.name_of(d, t)))
            .filter(|(key, new)| key.rsplit('.').next() != Some(new.as_str()))
            .collect();
        if !renamed.is_empty() {
            let list: Vec<String> = renamed.iter().map(|(old, new)| format!("{old} (as {new})")).collect();
            return Err(refuse(format!(
                "it changes {}, restored under another name",
                list.join(", ")
            )));
        }
        Ok(Verdict::Apply)
    }
}

/// Whether a logged statement changes rows (DML in the statement format, or a routine call).
fn changes_rows(text: &str) -> bool {
    let text = crate::engine::mysql::statement_text::strip_leading_comments(text);
    let first: String = text
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD" | "CALL" | "DO" | "HANDLER"
    )
}

/// Where the rows of the copy's `database`.`table` go — the target database and table — or
/// `None` when they are not replayed: a database the restore does not hold, a table the copy's
/// filters left out, or one a selective restore did not choose.
pub(in crate::engine::mysql::replay) fn rows_target(
    databases: &BTreeMap<String, String>,
    filters: &crate::engine::filter::Filters,
    only: Option<&Only>,
    database: &str,
    table: &str,
) -> Option<(String, String)> {
    let target_db = databases.get(database)?.clone();
    if !filters.data_included(database, table) {
        return None;
    }
    let table = match only {
        Some(only) => only.table(database, table)?,
        None => table.to_string(),
    };
    Some((target_db, table))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only() -> Only {
        Only::new(
            Selection {
                tables: vec!["shop.orders".into(), "shop.items".into()],
                renames: vec![("items".into(), "items_0914".into())],
                ..Default::default()
            },
            Restored {
                chosen: [key("orders"), key("items")].into_iter().collect(),
                made: Default::default(),
            },
        )
    }

    fn key(t: &str) -> (String, String) {
        ("shop".into(), t.into())
    }

    #[test]
    fn only_the_chosen_tables_change() {
        let only = only();
        assert_eq!(only.table("shop", "orders").as_deref(), Some("orders"));
        assert_eq!(only.table("shop", "items").as_deref(), Some("items_0914"));
        assert_eq!(only.table("shop", "customers"), None);
        let verdict = |tables: &[(String, String)]| only.statement("here", "ALTER TABLE x ADD c INT", tables);
        assert_eq!(verdict(&[key("orders")]).unwrap(), Verdict::Apply);
        assert_eq!(verdict(&[key("customers")]).unwrap(), Verdict::Skip);
        assert_eq!(verdict(&[]).unwrap(), Verdict::Skip);
        let mixed = verdict(&[key("orders"), key("customers")]).unwrap_err().to_string();
        assert!(mixed.contains("shop.customers") && mixed.contains("--until"), "{mixed}");
        let dml = only
            .statement("here", "/* app */ UPDATE orders SET amount = 0", &[])
            .unwrap_err()
            .to_string();
        assert!(dml.contains("logged as a statement"), "{dml}");
        assert_eq!(
            only.statement("here", "CREATE VIEW v AS SELECT 1", &[]).unwrap(),
            Verdict::Skip
        );
        let renamed = verdict(&[key("items")]).unwrap_err().to_string();
        assert!(renamed.contains("shop.items (as items_0914)"), "{renamed}");
    }
}
