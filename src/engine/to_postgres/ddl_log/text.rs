//! Reading a logged statement's text: its words and table names, where an `ALTER TABLE`'s
//! changes start, a column clause's entry and place, and a definition's entries.

use super::super::catalog::Definition;
use super::super::mysql_ddl::{entry_column, split_create, split_top_level};
use super::Key;

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
            if rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word) {
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

/// Up to `limit` words of SQL: backtick-quoted names (unquoted, flagged) and bare words; `.`, `,`
/// and parentheses are words of their own.
pub(super) fn words(text: &str, limit: usize) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if out.len() >= limit {
            break;
        }
        match c {
            c if c.is_whitespace() => {}
            '`' => {
                let mut name = String::new();
                while let Some((_, c)) = chars.next() {
                    if c == '`' {
                        if chars.peek().map(|(_, n)| *n) == Some('`') {
                            chars.next();
                            name.push('`');
                            continue;
                        }
                        break;
                    }
                    name.push(c);
                }
                out.push((true, name));
            }
            '.' | ',' | '(' | ')' | ';' => out.push((false, c.to_string())),
            _ => {
                let mut end = i + c.len_utf8();
                while let Some((j, n)) = chars.peek() {
                    if n.is_whitespace() || "`.,();".contains(*n) {
                        break;
                    }
                    end = j + n.len_utf8();
                    chars.next();
                }
                out.push((false, text[i..end].to_string()));
            }
        }
    }
    out
}

/// The tables a statement names after its leading keywords `skip`: `a`, `db.b`, `c TO d`, …
/// (with `default` as the database of unqualified names), up to a parenthesis or another
/// keyword.
pub(super) fn table_names(text: &str, skip: &[&str], default: &str) -> Vec<Key> {
    let tokens = words(text, 64);
    let mut i = 0;
    while i < tokens.len() && !tokens[i].0 && skip.iter().any(|s| s.eq_ignore_ascii_case(&tokens[i].1)) {
        i += 1;
    }
    let mut names = Vec::new();
    while i < tokens.len() {
        let (quoted, word) = &tokens[i];
        if !quoted && (word == "(" || word == ";") {
            break;
        }
        if !quoted && (word == "," || word.eq_ignore_ascii_case("TO")) {
            i += 1;
            continue;
        }
        let bare = *quoted || word.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$');
        if !bare
            || (!quoted
                && ["RESTRICT", "CASCADE", "WAIT", "NOWAIT", "LIKE", "AS", "SELECT"]
                    .contains(&word.to_ascii_uppercase().as_str()))
        {
            break;
        }
        match tokens.get(i + 1) {
            Some((false, dot)) if dot == "." => {
                if let Some((_, table)) = tokens.get(i + 2) {
                    names.push((word.clone(), table.clone()));
                }
                i += 3;
            }
            _ => {
                names.push((default.to_string(), word.clone()));
                i += 1;
            }
        }
        // One name per item: what follows up to the next comma or TO is not a name (table
        // options of a CREATE are after the parenthesis).
        while i < tokens.len() {
            let (quoted, word) = &tokens[i];
            if !quoted && (word == "," || word.eq_ignore_ascii_case("TO") || word == "(") {
                break;
            }
            i += 1;
        }
    }
    names
}

/// The byte offset of the first parenthesis outside backquotes.
pub(super) fn first_paren(text: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '`' => quoted = !quoted,
            '(' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// What follows `ALTER TABLE [IF EXISTS] name` (quoted or qualified).
pub(super) fn after_table_name(text: &str) -> Option<&str> {
    let upper = text.to_ascii_uppercase();
    let mut at = upper.find("TABLE")? + 5;
    let rest = &text[at..];
    let trimmed = rest.trim_start();
    at += rest.len() - trimmed.len();
    let mut rest = &text[at..];
    if rest.to_ascii_uppercase().starts_with("IF EXISTS") {
        rest = rest[9..].trim_start();
    }
    // The name: `a`, a, `db`.`a`, db.a.
    let mut chars = rest.char_indices().peekable();
    let mut end = 0;
    let mut quoted = false;
    for (i, c) in chars.by_ref() {
        match c {
            '`' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                end = i;
                break;
            }
            _ => {}
        }
        end = i + c.len_utf8();
    }
    let after = rest[end..].trim();
    (!after.is_empty()).then_some(after)
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

/// Every table a logged table statement changes — `TRUNCATE`, `CREATE`/`DROP`/`RENAME TABLE`,
/// `ALTER TABLE` (and the new name of a rename), `CREATE`/`DROP INDEX … ON` — with `default` as
/// the database of unqualified names; none for other statements.
pub(in crate::engine::to_postgres) fn statement_tables(text: &str, default: &str) -> Vec<Key> {
    let text = strip_leading_comments(text);
    let head: Vec<String> = words(text, 4)
        .into_iter()
        .map(|(quoted, w)| if quoted { String::new() } else { w.to_ascii_uppercase() })
        .collect();
    let first = head.first().map(String::as_str).unwrap_or_default();
    let names = |w: &str| head.iter().skip(1).any(|h| h == w);
    if matches!(first, "CREATE" | "DROP") && names("INDEX") && !names("TABLE") {
        return match find_word(text, "ON") {
            Some(at) => table_names(&text[at..], &["ON"], default).into_iter().take(1).collect(),
            None => Vec::new(),
        };
    }
    match first {
        "TRUNCATE" => table_names(text, &["TRUNCATE", "TABLE"], default),
        "RENAME" if names("TABLE") => table_names(text, &["RENAME", "TABLE"], default),
        "DROP" if names("TABLE") => table_names(text, &["DROP", "TEMPORARY", "TABLE", "IF", "EXISTS"], default),
        "CREATE" if names("TABLE") => table_names(
            text,
            &["CREATE", "OR", "REPLACE", "TEMPORARY", "TABLE", "IF", "NOT", "EXISTS"],
            default,
        )
        .into_iter()
        .take(1)
        .collect(),
        "ALTER" if names("TABLE") => {
            let skip = ["ALTER", "ONLINE", "IGNORE", "TABLE", "IF", "EXISTS"];
            let Some(table) = table_names(text, &skip, default).into_iter().next() else {
                return Vec::new();
            };
            let mut tables = vec![table.clone()];
            for clause in after_table_name(text).map(split_top_level).unwrap_or_default() {
                let clause_words = words(clause, 2);
                let is = |i: usize, w: &str| {
                    clause_words
                        .get(i)
                        .is_some_and(|(q, c)| !q && c.eq_ignore_ascii_case(w))
                };
                if is(0, "RENAME") && !["COLUMN", "INDEX", "KEY"].iter().any(|w| is(1, w)) {
                    tables.extend(
                        table_names(clause, &["RENAME", "TO", "AS"], &table.0)
                            .into_iter()
                            .take(1),
                    );
                }
            }
            tables
        }
        _ => Vec::new(),
    }
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

/// Where `word` stands alone in `text` (between whitespace, outside backquotes), ignoring case.
pub(super) fn find_word(text: &str, word: &str) -> Option<usize> {
    let mut quoted = false;
    let mut previous = ' ';
    for (i, c) in text.char_indices() {
        if c == '`' {
            quoted = !quoted;
        }
        if !quoted && previous.is_whitespace() && text.len() > i + word.len() {
            let next = text[i + word.len()..].chars().next().unwrap_or(' ');
            if text.is_char_boundary(i + word.len())
                && text[i..i + word.len()].eq_ignore_ascii_case(word)
                && next.is_whitespace()
            {
                return Some(i);
            }
        }
        previous = c;
    }
    None
}

/// `text` after the comments an application put before the statement (`/* … */`, `-- …`,
/// `# …`); MySQL's executable comments (`/*! … */`) are the statement and stay.
pub(in crate::engine::to_postgres) fn strip_leading_comments(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if text.starts_with("/*") && !text.starts_with("/*!") && !text.starts_with("/*M!") {
            match text.find("*/") {
                Some(end) => text = &text[end + 2..],
                None => return text,
            }
        } else if text.starts_with("-- ") || text.starts_with('#') {
            match text.find('\n') {
                Some(end) => text = &text[end + 1..],
                None => return "",
            }
        } else {
            return text;
        }
    }
}
