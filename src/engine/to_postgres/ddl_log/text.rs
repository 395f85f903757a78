//! Reading a logged statement's text for the catalog: a column clause's entry and place, a
//! definition's entries, an index statement as the `ALTER TABLE` it is (words, table names and
//! comments are `engine::mysql::statement_text`'s).

use super::super::catalog::Definition;
use super::super::mysql_ddl::{entry_column, split_create};
pub(super) use crate::engine::mysql::statement_text::{
    after_table_name, find_word, first_paren, starts_with_ignoring_case, strip_leading_comments, table_names, words,
};

/// A definition's name, entries — the clauses a copy split off included — and options.
pub(super) fn entries_of(definition: &Definition) -> Result<(String, Vec<String>, String), String> {
    let (name, mut entries, options) = split_create(&definition.create)?;
    entries.extend(definition.added.iter().map(|clause| {
        let clause = clause.trim();
        match clause.get(..4) {
            Some(head) if head.eq_ignore_ascii_case("ADD ") => clause[4..].trim().to_string(),
            _ => clause.to_string(),
        }
    }));
    Ok((name, entries, options))
}

/// Whether a `CREATE`/`DROP`/`ALTER` is of a view, trigger, routine or event: the first of these
/// keywords or `TABLE`/`INDEX` decides (`CREATE ALGORITHM=… DEFINER=`u`@`h` VIEW …`, but
/// `ALTER TABLE t ADD COLUMN event INT`).
pub(super) fn names_an_object(text: &str) -> bool {
    for (quoted, word) in words(text, 40) {
        if quoted {
            continue;
        }
        match word.to_ascii_uppercase().as_str() {
            "TABLE" | "INDEX" | "(" => return false,
            "VIEW" | "TRIGGER" | "PROCEDURE" | "FUNCTION" | "EVENT" => return true,
            _ => {}
        }
    }
    false
}

/// Where an added column goes.
pub(super) enum Place {
    Last,
    First,
    After(String),
}

/// A clause without its leading `ADD`/`MODIFY`/`CHANGE`, `COLUMN` and `IF [NOT] EXISTS`.
pub(super) fn strip_clause_words(clause: &str) -> &str {
    let mut rest = clause.trim();
    loop {
        let before = rest.len();
        for word in ["ADD ", "MODIFY ", "CHANGE ", "COLUMN ", "IF NOT EXISTS ", "IF EXISTS "] {
            if starts_with_ignoring_case(rest, word) {
                rest = rest[word.len()..].trim_start();
            }
        }
        if rest.len() == before {
            return rest;
        }
    }
}

/// The name at the start of `text` (backtick-quoted or bare), unquoted, and what follows it.
pub(super) fn split_name(text: &str) -> Option<(String, &str)> {
    let text = text.trim_start();
    if let Some(quoted) = text.strip_prefix('`') {
        let mut name = String::new();
        let mut chars = quoted.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '`' {
                if chars.peek().map(|(_, n)| *n) == Some('`') {
                    chars.next();
                    name.push('`');
                    continue;
                }
                return Some((name, &quoted[i + 1..]));
            }
            name.push(c);
        }
        return None;
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    (end > 0).then(|| (text[..end].to_string(), &text[end..]))
}

/// `entries` with the column entry of `name` replaced by `entry`, placed where `place` says (its
/// own place for `Place::Last`: a `MODIFY` keeps the column where it is).
pub(super) fn replace_column(entries: &mut Vec<String>, name: &str, entry: String, place: Place) -> Result<(), String> {
    let at = entries
        .iter()
        .position(|e| entry_column(e).as_deref() == Some(name))
        .ok_or_else(|| format!("no column {name}"))?;
    match place {
        Place::Last => entries[at] = entry,
        place => {
            entries.remove(at);
            insert_column(entries, entry, place)?;
        }
    }
    Ok(())
}

/// An `ADD [COLUMN] [IF NOT EXISTS] definition [FIRST | AFTER c]` clause: the column entry and
/// its place.
pub(super) fn column_clause(clause: &str) -> Result<(String, Place), String> {
    let rest = strip_clause_words(clause);
    if rest.starts_with('(') {
        return Err("ADD COLUMN (several columns) is not translated".into());
    }
    let upper = rest.to_ascii_uppercase();
    if upper.ends_with(" FIRST") {
        return Ok((rest[..rest.len() - 6].trim().to_string(), Place::First));
    }
    if let Some(at) = upper.rfind(" AFTER ") {
        let after = rest[at + 7..].trim().trim_matches('`').replace("``", "`");
        return Ok((rest[..at].trim().to_string(), Place::After(after)));
    }
    Ok((rest.to_string(), Place::Last))
}

pub(super) fn insert_column(entries: &mut Vec<String>, entry: String, place: Place) -> Result<(), String> {
    let at = match place {
        Place::First => 0,
        Place::After(column) => {
            entries
                .iter()
                .position(|e| entry_column(e).as_deref() == Some(column.as_str()))
                .ok_or_else(|| format!("AFTER {column}: no such column"))?
                + 1
        }
        Place::Last => entries
            .iter()
            .rposition(|e| entry_column(e).is_some())
            .map_or(0, |i| i + 1),
    };
    entries.insert(at, entry);
    Ok(())
}

pub(super) fn starts_with_index_word(entry: &str) -> bool {
    let upper = entry.trim_start().to_ascii_uppercase();
    [
        "KEY",
        "INDEX",
        "UNIQUE",
        "FULLTEXT",
        "SPATIAL",
        "CONSTRAINT",
        "FOREIGN",
        "CHECK",
    ]
    .iter()
    .any(|w| upper.starts_with(w))
}

/// The name after the leading keywords `skip` of a clause (`DROP COLUMN x`, `RENAME TO y`).
pub(super) fn column_name_after(clause: &str, skip: &[&str]) -> Option<String> {
    words(clause, 8)
        .into_iter()
        .find(|(quoted, w)| *quoted || !skip.iter().any(|s| s.eq_ignore_ascii_case(w)))
        .map(|(_, w)| w)
}

/// The name a key or constraint entry gives itself (`UNIQUE KEY `uk` (…)`, `CONSTRAINT fk …`).
pub(super) fn entry_name(entry: &str) -> Option<String> {
    words(entry, 6)
        .into_iter()
        .find(|(quoted, w)| {
            *quoted
                || !["PRIMARY", "UNIQUE", "FULLTEXT", "SPATIAL", "KEY", "INDEX", "CONSTRAINT"]
                    .contains(&w.to_ascii_uppercase().as_str())
        })
        .filter(|(quoted, w)| *quoted || w != "(")
        .map(|(_, w)| w)
}

/// `CREATE [UNIQUE|FULLTEXT|SPATIAL] INDEX [IF NOT EXISTS] name [USING t] ON table (parts) …`
/// as `ALTER TABLE table ADD [UNIQUE|FULLTEXT|SPATIAL] KEY [IF NOT EXISTS] name (parts)` (index
/// options after the parts, which change no rows, left out).
pub(super) fn index_as_alter(text: &str) -> Option<String> {
    let on = find_word(text, "ON")?;
    let head = words(&text[..on], 12);
    let mut kind = String::new();
    let mut rest = head.iter().skip(1).skip_while(|(quoted, w)| {
        !quoted && ["OR", "REPLACE", "ONLINE", "OFFLINE"].contains(&w.to_ascii_uppercase().as_str())
    });
    for (quoted, word) in rest.by_ref() {
        let upper = word.to_ascii_uppercase();
        if *quoted {
            return None;
        }
        if upper == "INDEX" {
            break;
        }
        kind.push_str(&upper);
        kind.push(' ');
    }
    let mut name = None;
    let mut if_not_exists = false;
    for (quoted, word) in rest {
        match (quoted, word.to_ascii_uppercase().as_str()) {
            (false, "IF" | "NOT") => {}
            (false, "EXISTS") => if_not_exists = true,
            (false, "USING") => break,
            _ if name.is_none() => name = Some(word.clone()),
            _ => {}
        }
    }
    let name = name?;
    let after = &text[on + 2..];
    let open = first_paren(after)?;
    let mut depth = 0;
    let mut close = None;
    let mut quoted = false;
    for (i, c) in after[open..].char_indices() {
        match c {
            '`' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close?;
    Some(format!(
        "ALTER TABLE {} ADD {kind}KEY {}`{}` {}",
        after[..open].trim(),
        if if_not_exists { "IF NOT EXISTS " } else { "" },
        name.replace('`', "``"),
        &after[open..=close]
    ))
}

/// An index entry without MariaDB's `IF NOT EXISTS` after its kind.
pub(super) fn strip_if_not_exists(entry: &str) -> String {
    let upper = entry.to_ascii_uppercase();
    match upper.find("IF NOT EXISTS") {
        Some(at) => format!("{}{}", &entry[..at], entry[at + 13..].trim_start()),
        None => entry.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::strip_clause_words;

    #[test]
    fn clause_words_are_stripped_before_names_in_any_script() {
        assert_eq!(
            strip_clause_words("ADD COLUMN `prénom` VARCHAR(9)"),
            "`prénom` VARCHAR(9)"
        );
        assert_eq!(strip_clause_words("add column if not exists имя int"), "имя int");
        assert_eq!(strip_clause_words("MODIFY 名前 TEXT"), "名前 TEXT");
    }
}
