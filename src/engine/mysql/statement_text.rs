//! Reading a logged MySQL statement's text without a parser: its words, the tables it names and
//! changes, where an `ALTER TABLE`'s changes start, top-level commas, leading comments. Shared
//! by the replay into MySQL (a selective restore) and the translation into PostgreSQL.

type Key = (String, String);

/// Up to `limit` words of SQL: backtick-quoted names (unquoted, flagged) and bare words; `.`, `,`
/// and parentheses are words of their own.
pub(crate) fn words(text: &str, limit: usize) -> Vec<(bool, String)> {
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
pub(crate) fn table_names(text: &str, skip: &[&str], default: &str) -> Vec<Key> {
    // Every name of a long list counts: a table left unread could be one not restored.
    let tokens = words(text, usize::MAX);
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

/// What follows `ALTER TABLE [IF EXISTS] name` (quoted or qualified).
pub(crate) fn after_table_name(text: &str) -> Option<&str> {
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

/// Every table a logged table statement changes — `TRUNCATE`, `CREATE`/`DROP`/`RENAME TABLE`,
/// `ALTER TABLE` (and the new name of a rename), `CREATE`/`DROP INDEX … ON` — with `default` as
/// the database of unqualified names; none for other statements.
pub(crate) fn statement_tables(text: &str, default: &str) -> Vec<Key> {
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
        "CREATE" if names("TABLE") => {
            let skip = ["CREATE", "OR", "REPLACE", "TEMPORARY", "TABLE", "IF", "NOT", "EXISTS"];
            let mut tables: Vec<Key> = table_names(text, &skip, default).into_iter().take(1).collect();
            // `CREATE TABLE a LIKE b` reads b.
            if let Some(at) = find_word(text, "LIKE").filter(|at| first_paren(text).is_none_or(|p| *at < p)) {
                tables.extend(table_names(&text[at..], &["LIKE"], default).into_iter().take(1));
            }
            tables
        }
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
                // `EXCHANGE PARTITION p WITH TABLE b` swaps rows with b.
                if is(0, "EXCHANGE")
                    && let Some(at) = find_word(clause, "TABLE")
                {
                    tables.extend(table_names(&clause[at..], &["TABLE"], &table.0).into_iter().take(1));
                }
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

/// Whether `text` starts with the ASCII `prefix`, ignoring case. Compares bytes, so it never
/// cuts a character of a name or comment in another script in two; after a match, `prefix.len()`
/// is a character boundary of `text`.
pub(crate) fn starts_with_ignoring_case(text: &str, prefix: &str) -> bool {
    text.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Where the ASCII `word` stands alone in `text` (between whitespace, outside backquotes),
/// ignoring case.
pub(crate) fn find_word(text: &str, word: &str) -> Option<usize> {
    let mut quoted = false;
    let mut previous = ' ';
    for (i, c) in text.char_indices() {
        if c == '`' {
            quoted = !quoted;
        }
        if !quoted
            && previous.is_whitespace()
            && starts_with_ignoring_case(&text[i..], word)
            && text[i + word.len()..].starts_with(char::is_whitespace)
        {
            return Some(i);
        }
        previous = c;
    }
    None
}

/// `text` after the comments an application put before the statement (`/* … */`, `-- …`,
/// `# …`); MySQL's executable comments (`/*! … */`) are the statement and stay.
pub(crate) fn strip_leading_comments(mut text: &str) -> &str {
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

/// `text` split at the commas outside quotes and parentheses, each part trimmed.
pub(crate) fn split_top_level(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let (mut depth, mut start, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' | b'`' => {
                i += quoted_end(&text[i..], bytes[i]).unwrap_or(bytes.len() - i);
                continue;
            }
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(text[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// Where a string quoted by `quote` at the start of `text` ends (just after the closing quote);
/// doubled quotes and backslash escapes stay inside.
pub(crate) fn quoted_end(text: &str, quote: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote != b'`' => i += 2,
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The byte offset of the first parenthesis outside backquotes.
pub(crate) fn first_paren(text: &str) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::{find_word, statement_tables};

    #[test]
    fn words_are_found_beside_text_in_any_script() {
        assert_eq!(names("CREATE TABLE t (id INT) COMMENT 'Référence élève'"), ["shop.t"]);
        assert_eq!(find_word("x élève LIKE y", "LIKE"), Some(10));
        assert_eq!(find_word("x 日本語 ON", "ON"), None);
    }

    fn names(text: &str) -> Vec<String> {
        statement_tables(text, "shop")
            .into_iter()
            .map(|(d, t)| format!("{d}.{t}"))
            .collect()
    }

    #[test]
    fn every_table_a_statement_changes_or_reads_is_named() {
        let many: Vec<String> = (0..60).map(|i| format!("t{i}")).collect();
        assert_eq!(names(&format!("DROP TABLE {}, keep", many.join(", "))).len(), 61);
        assert_eq!(names("CREATE TABLE copy LIKE orders"), ["shop.copy", "shop.orders"]);
        assert_eq!(
            names("CREATE TABLE t (id INT, note VARCHAR(9) DEFAULT 'LIKE x')"),
            ["shop.t"]
        );
        assert_eq!(
            names("ALTER TABLE orders EXCHANGE PARTITION p0 WITH TABLE crm.archive"),
            ["shop.orders", "crm.archive"]
        );
        assert_eq!(
            names("RENAME TABLE a TO b, c TO d"),
            ["shop.a", "shop.b", "shop.c", "shop.d"]
        );
    }
}
