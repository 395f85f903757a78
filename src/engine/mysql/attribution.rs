//! Which database a logged statement belongs to: the textual rule that capture (which log
//! events a source's incrementals keep) and replay (which statements a restore applies) share.
//! cairn does not parse SQL; docs/mysql.md lists the limits of this rule.

use super::quote_ident;

/// Statements about accounts and the server, not the restored databases: never replayed.
pub(crate) fn is_account_statement(text: &str) -> bool {
    let upper = text.trim_start().to_ascii_uppercase();
    [
        "GRANT ",
        "REVOKE ",
        "CREATE USER",
        "DROP USER",
        "ALTER USER",
        "RENAME USER",
        "CREATE ROLE",
        "DROP ROLE",
        "SET PASSWORD",
        "SET DEFAULT ROLE",
        "FLUSH ",
        "INSTALL ",
        "UNINSTALL ",
    ]
    .iter()
    .any(|prefix| upper.starts_with(prefix))
}

/// Whether `text` names database `db` as a qualifier (`` `db`. `` or `db.`).
fn mentions(text: &str, db: &str) -> bool {
    find_unquoted_qualifier(text, db).is_some() || text.contains(&format!("{}.", quote_ident(db)))
}

pub(super) fn find_unquoted_qualifier(text: &str, db: &str) -> Option<usize> {
    let needle = format!("{db}.");
    let mut from = 0;
    while let Some(found) = text[from..].find(&needle) {
        let at = from + found;
        let before = text[..at].chars().next_back();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == '`' || c == '.') {
            return Some(at);
        }
        from = at + needle.len();
    }
    None
}

/// The database of `databases` a logged statement belongs to: its session's default database,
/// or the one it names (`CREATE TABLE app.t …` run without a default database, `DROP DATABASE
/// app`). Capture and replay decide by this one rule, so they agree on what belongs where.
pub(crate) fn statement_database<'a>(
    text: &str,
    schema: &str,
    databases: impl IntoIterator<Item = &'a String> + Clone,
) -> Option<String> {
    if databases.clone().into_iter().any(|db| db == schema) {
        return Some(schema.to_string());
    }
    let words: Vec<String> = text
        .split_whitespace()
        .take(6)
        .map(|w| w.trim_end_matches(';').to_ascii_uppercase())
        .collect();
    if words.len() >= 3
        && matches!(words[0].as_str(), "CREATE" | "DROP" | "ALTER")
        && matches!(words[1].as_str(), "DATABASE" | "SCHEMA")
    {
        let name = text
            .split_whitespace()
            .skip(2)
            .find(|w| !matches!(w.to_ascii_uppercase().as_str(), "IF" | "NOT" | "EXISTS"))?;
        let name = name.trim_end_matches(';').trim_matches('`').replace("``", "`");
        return databases.into_iter().any(|db| *db == name).then_some(name);
    }
    databases.into_iter().find(|db| mentions(text, db)).cloned()
}
