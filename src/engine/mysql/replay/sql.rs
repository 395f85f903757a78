//! Reading what a logged statement names: its first words, the table it works on, a dropped
//! trigger, and database names renamed for the target.

use std::collections::BTreeMap;

use crate::engine::mysql::attribution::find_unquoted_qualifier;
use crate::engine::mysql::quote_ident;

pub(crate) fn first_words(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().take(6).collect();
    words.join(" ")
}

/// The table a table statement names first (`ALTER TABLE [db.]t`, `CREATE TABLE IF NOT EXISTS t`,
/// `DROP TABLE t`, `TRUNCATE t`, `RENAME TABLE t …`, `CREATE INDEX i ON t`), with its database
/// when it is qualified.
pub(super) fn statement_table(text: &str) -> Option<(Option<String>, String)> {
    let tokens = sql_tokens(text, 24);
    let word = |i: usize| match tokens.get(i) {
        Some((false, t)) => t.to_ascii_uppercase(),
        _ => String::new(),
    };
    let skip = [
        "OR",
        "REPLACE",
        "ONLINE",
        "IGNORE",
        "TEMPORARY",
        "IF",
        "NOT",
        "EXISTS",
        "UNIQUE",
        "FULLTEXT",
        "SPATIAL",
    ];
    let skip_from = |mut i: usize| {
        while skip.contains(&word(i).as_str()) {
            i += 1;
        }
        i
    };
    let first = word(0);
    if !matches!(first.as_str(), "ALTER" | "CREATE" | "DROP" | "RENAME" | "TRUNCATE") {
        return None;
    }
    let i = skip_from(1);
    let name_at = match word(i).as_str() {
        "TABLE" => skip_from(i + 1),
        "INDEX" => (i..tokens.len()).find(|&j| word(j) == "ON")? + 1,
        _ if first == "TRUNCATE" => i,
        _ => return None,
    };
    let is_name = |i: usize| matches!(tokens.get(i), Some((quoted, t)) if *quoted || t.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$'));
    if !is_name(name_at) {
        return None;
    }
    let name = tokens[name_at].1.clone();
    if tokens.get(name_at + 1).is_some_and(|(quoted, t)| !quoted && t == ".") && is_name(name_at + 2) {
        return Some((Some(name), tokens[name_at + 2].1.clone()));
    }
    Some((None, name))
}

/// The first `limit` tokens of SQL text: (quoted, text) for `` `identifiers` `` (unquoted), bare
/// words, and single punctuation characters.
fn sql_tokens(text: &str, limit: usize) -> Vec<(bool, String)> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while tokens.len() < limit {
        let Some(c) = chars.next() else { break };
        if c.is_whitespace() {
            continue;
        }
        if c == '`' {
            let mut name = String::new();
            while let Some(c) = chars.next() {
                if c == '`' {
                    if chars.peek() == Some(&'`') {
                        chars.next();
                    } else {
                        break;
                    }
                }
                name.push(c);
            }
            tokens.push((true, name));
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let mut word = c.to_string();
            while let Some(&next) = chars.peek() {
                if next.is_alphanumeric() || next == '_' || next == '$' {
                    word.push(next);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push((false, word));
        } else {
            tokens.push((false, c.to_string()));
        }
    }
    tokens
}

/// `DROP TRIGGER [IF EXISTS] [db.]name`: the database and trigger it names.
pub(super) fn dropped_trigger(text: &str, default_db: &str) -> Option<(String, String)> {
    let mut words = text.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("DROP") || !words.next()?.eq_ignore_ascii_case("TRIGGER") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("IF") {
        words.next()?;
        name = words.next()?;
    }
    let name = name.trim_end_matches(';');
    let unquote = |s: &str| s.trim_matches('`').replace("``", "`");
    match name.split_once("`.`").or_else(|| name.split_once('.')) {
        Some((db, trigger)) => Some((unquote(db), unquote(trigger))),
        None => Some((default_db.to_string(), unquote(name))),
    }
}

/// Rewrites references to renamed databases (`` `from`. ``, `from.`, and a database statement's
/// name).
pub(super) fn rename_references(text: &str, databases: &BTreeMap<String, String>) -> String {
    let mut text = text.to_string();
    for (from, to) in databases.iter().filter(|(from, to)| from != to) {
        text = text.replace(&format!("{}.", quote_ident(from)), &format!("{}.", quote_ident(to)));
        while let Some(at) = find_unquoted_qualifier(&text, from) {
            text.replace_range(at..at + from.len() + 1, &format!("{}.", quote_ident(to)));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::mysql::attribution::{is_account_statement, statement_database};

    #[test]
    fn dropped_triggers_are_named() {
        assert_eq!(
            dropped_trigger("DROP TRIGGER IF EXISTS `app`.`t1`", "x"),
            Some(("app".into(), "t1".into()))
        );
        assert_eq!(
            dropped_trigger("drop trigger t2", "app"),
            Some(("app".into(), "t2".into()))
        );
        assert_eq!(dropped_trigger("DROP TABLE t", "app"), None);
        let table = |text| statement_table(text);
        assert_eq!(
            table("ALTER TABLE app.t ADD c INT"),
            Some((Some("app".into()), "t".into()))
        );
        assert_eq!(
            table("CREATE TABLE IF NOT EXISTS `tmp x`(a INT)"),
            Some((None, "tmp x".into()))
        );
        assert_eq!(
            table("drop temporary table if exists t1, t2"),
            Some((None, "t1".into()))
        );
        assert_eq!(table("TRUNCATE t"), Some((None, "t".into())));
        assert_eq!(
            table("CREATE UNIQUE INDEX i ON `app`.`t` (a)"),
            Some((Some("app".into()), "t".into()))
        );
        assert_eq!(table("CREATE VIEW v AS SELECT 1"), None);
        assert_eq!(table("INSERT INTO t VALUES (1)"), None);
        assert!(is_account_statement("GRANT SELECT ON *.* TO x"));
        let databases = BTreeMap::from([("app".to_string(), "app_copy".to_string())]);
        assert_eq!(
            statement_database("CREATE TABLE app.t (a int)", "", databases.keys()).as_deref(),
            Some("app")
        );
        assert_eq!(
            statement_database("CREATE TABLE t (a int)", "app", databases.keys()).as_deref(),
            Some("app")
        );
        assert_eq!(
            statement_database("DROP DATABASE IF EXISTS `app`", "", databases.keys()).as_deref(),
            Some("app")
        );
        assert_eq!(
            statement_database("CREATE TABLE myapp.t (a int)", "", databases.keys()),
            None
        );
        assert_eq!(
            rename_references("ALTER TABLE app.t ADD c INT, ALGORITHM=INPLACE; -- `app`.x", &databases),
            "ALTER TABLE `app_copy`.t ADD c INT, ALGORITHM=INPLACE; -- `app_copy`.x"
        );
        assert!(!is_account_statement("CREATE TABLE grants (a int)"));
    }
}
