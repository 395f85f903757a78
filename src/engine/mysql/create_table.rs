//! A MySQL/MariaDB table as `SHOW CREATE TABLE` writes it (the form a copy records), read into
//! columns, keys and foreign keys: what the translation into PostgreSQL starts from.

use crate::engine::mysql::statement_text::quoted_end;
pub(crate) use crate::engine::mysql::statement_text::split_top_level;

/// One column of a MySQL table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MyColumn {
    pub name: String,
    /// The type's name, lower-cased (`int`, `varchar`, `enum`, …).
    pub type_name: String,
    /// What the type's parentheses hold, as written (`10,2`, `'a','b'`), if any.
    pub params: Option<String>,
    pub unsigned: bool,
    pub nullable: bool,
    /// The default as written (`'x'`, `0`, `NULL`, `current_timestamp()`), if any.
    pub default: Option<String>,
    pub auto_increment: bool,
    /// The expression of a generated column, as written.
    pub generated: Option<String>,
    /// A key written on the column itself (`id INT PRIMARY KEY`, `code CHAR(3) UNIQUE`), as a
    /// statement in the log may have it (`SHOW CREATE TABLE` never does).
    pub inline_key: Option<IndexKind>,
    /// A `CHECK (json_valid(col))` on the column: MariaDB's `JSON`.
    pub json_checked: bool,
    /// The column's own character set (`CHARACTER SET x`, or implied by `COLLATE x_…`).
    pub charset: Option<String>,
    /// Clauses kept for the report (`ON UPDATE …`, `CHECK (…)`, `INVISIBLE`).
    pub other: Vec<String>,
}

/// An index: its name (`PRIMARY` for the primary key), its columns, and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyIndex {
    pub name: String,
    pub columns: Vec<String>,
    /// Columns indexed by a prefix only (`col(10)`).
    pub prefixed: bool,
    /// Parts that are expressions (MySQL 8's functional key parts, `((lower(`name`)))`), which
    /// `columns` leaves out.
    pub functional: bool,
    pub kind: IndexKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Primary,
    Unique,
    Plain,
    Fulltext,
    Spatial,
}

/// A foreign key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    /// The referenced table's database, when another than the table's own.
    pub references_database: Option<String>,
    pub references_table: String,
    pub references_columns: Vec<String>,
    /// `ON DELETE …` / `ON UPDATE …` as written.
    pub actions: String,
}

/// A MySQL table read from its `CREATE TABLE`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MyTable {
    pub name: String,
    pub columns: Vec<MyColumn>,
    pub indexes: Vec<MyIndex>,
    pub foreign_keys: Vec<MyForeignKey>,
    /// Table-level `CHECK` constraints, as written.
    pub checks: Vec<String>,
    /// The table's default character set (`DEFAULT CHARSET=…`).
    pub charset: Option<String>,
}

impl MyTable {
    /// The character set of `column`'s text: its own, else the table's.
    pub fn charset_of<'a>(&'a self, column: &'a MyColumn) -> Option<&'a str> {
        column.charset.as_deref().or(self.charset.as_deref())
    }
}

/// Reads `create` (a `CREATE TABLE` as `SHOW CREATE TABLE` writes it) and the `ADD …` clauses a
/// copy split off it (secondary indexes, foreign keys).
///
/// # Errors
/// Text that is not a `CREATE TABLE` of that form, naming what was expected.
pub fn parse_table(create: &str, added: &[String]) -> Result<MyTable, String> {
    let rest = create.trim_start();
    let rest = strip_words(rest, &["CREATE", "TABLE"]).ok_or("not a CREATE TABLE statement")?;
    let (name, rest) = identifier(rest.trim_start()).ok_or("no table name after CREATE TABLE")?;
    let rest = rest.trim_start();
    let (body, options) = parenthesized(rest).ok_or_else(|| format!("table {name}: no column list"))?;
    let mut table = MyTable {
        name,
        charset: table_charset(options),
        ..MyTable::default()
    };
    let extra = added.iter().map(|clause| {
        let clause = clause.trim();
        strip_words(clause, &["ADD"]).unwrap_or(clause).trim()
    });
    for entry in split_top_level(body).into_iter().chain(extra) {
        entry_into(&mut table, entry).map_err(|e| format!("table {}: {e}: {entry}", table.name))?;
    }
    Ok(table)
}

fn entry_into(table: &mut MyTable, entry: &str) -> Result<(), String> {
    let upper = entry.to_ascii_uppercase();
    let index = |kind, rest: &str| -> Result<MyIndex, String> {
        let rest = rest.trim_start();
        let (name, rest) = match rest.starts_with('(') {
            true => (String::new(), rest),
            false => identifier(rest).ok_or("an index without a name")?,
        };
        let (list, _) = parenthesized(rest.trim_start()).ok_or("an index without columns")?;
        let (columns, prefixed, functional) = key_columns(list)?;
        // MySQL names an unnamed key after its first column.
        let name = match name.is_empty() {
            true => columns.first().cloned().unwrap_or_default(),
            false => name,
        };
        Ok(MyIndex {
            name,
            columns,
            prefixed,
            functional,
            kind,
        })
    };
    if entry.starts_with('`') || !starts_with_keyword(entry) {
        let column = column(entry)?;
        if let Some(kind) = column.inline_key {
            table.indexes.push(MyIndex {
                name: match kind {
                    IndexKind::Primary => "PRIMARY".into(),
                    _ => column.name.clone(),
                },
                columns: vec![column.name.clone()],
                prefixed: false,
                functional: false,
                kind,
            });
        }
        table.columns.push(column);
    } else if let Some(rest) = strip_words(entry, &["PRIMARY", "KEY"]) {
        let mut primary = index(IndexKind::Primary, rest)?;
        primary.name = "PRIMARY".into();
        table.indexes.push(primary);
    } else if let Some(rest) =
        strip_words(entry, &["UNIQUE", "KEY"]).or_else(|| strip_words(entry, &["UNIQUE", "INDEX"]))
    {
        table.indexes.push(index(IndexKind::Unique, rest)?);
    } else if let Some(rest) = strip_words(entry, &["UNIQUE"]) {
        table.indexes.push(index(IndexKind::Unique, rest)?);
    } else if let Some(rest) = strip_words(entry, &["KEY"]).or_else(|| strip_words(entry, &["INDEX"])) {
        table.indexes.push(index(IndexKind::Plain, rest)?);
    } else if let Some(rest) =
        strip_words(entry, &["FULLTEXT", "KEY"]).or_else(|| strip_words(entry, &["FULLTEXT", "INDEX"]))
    {
        table.indexes.push(index(IndexKind::Fulltext, rest)?);
    } else if let Some(rest) =
        strip_words(entry, &["SPATIAL", "KEY"]).or_else(|| strip_words(entry, &["SPATIAL", "INDEX"]))
    {
        table.indexes.push(index(IndexKind::Spatial, rest)?);
    } else if upper.starts_with("CONSTRAINT") || upper.starts_with("FOREIGN KEY") || upper.starts_with("CHECK") {
        let mut rest = entry;
        let mut name = String::new();
        if let Some(after) = strip_words(rest, &["CONSTRAINT"]) {
            let after = after.trim_start();
            // A name, quoted or not, unless the constraint's kind follows at once.
            let unnamed = ["FOREIGN", "CHECK", "PRIMARY", "UNIQUE"]
                .iter()
                .any(|kind| strip_words(after, &[kind]).is_some());
            if unnamed {
                rest = after;
            } else {
                (name, rest) = identifier(after).ok_or("a constraint without a name")?;
            }
        }
        let rest = rest.trim_start();
        if let Some(after) = strip_words(rest, &["FOREIGN", "KEY"]) {
            table.foreign_keys.push(foreign_key(name, after)?);
        } else if rest.to_ascii_uppercase().starts_with("CHECK") {
            table.checks.push(rest.to_string());
        } else {
            return Err("a constraint that is neither a foreign key nor a check".into());
        }
    } else {
        return Err("an entry that is not a column, key or constraint".into());
    }
    Ok(())
}

fn foreign_key(name: String, rest: &str) -> Result<MyForeignKey, String> {
    let (list, rest) = parenthesized(rest.trim_start()).ok_or("a foreign key without columns")?;
    let (columns, _, _) = key_columns(list)?;
    let rest = strip_words(rest.trim_start(), &["REFERENCES"]).ok_or("a foreign key without REFERENCES")?;
    let (first, rest) = identifier(rest.trim_start()).ok_or("a foreign key without a referenced table")?;
    let (database, table, rest) = match rest.strip_prefix('.') {
        Some(after) => {
            let (table, rest) = identifier(after).ok_or("a foreign key without a referenced table")?;
            (Some(first), table, rest)
        }
        None => (None, first, rest),
    };
    let (list, rest) = parenthesized(rest.trim_start()).ok_or("a foreign key without referenced columns")?;
    let (references_columns, _, _) = key_columns(list)?;
    Ok(MyForeignKey {
        name,
        columns,
        references_database: database,
        references_table: table,
        references_columns,
        actions: rest.trim().to_string(),
    })
}

/// The columns of a key: names, whether any is a prefix (`col(10)`), and whether any part is an
/// expression (left out of the names); `ASC`/`DESC` dropped.
fn key_columns(list: &str) -> Result<(Vec<String>, bool, bool), String> {
    let mut columns = Vec::new();
    let (mut prefixed, mut functional) = (false, false);
    for part in split_top_level(list) {
        if part.trim_start().starts_with('(') {
            functional = true;
            continue;
        }
        let (name, rest) = identifier(part.trim()).ok_or("a key column that is not a quoted name")?;
        prefixed |= rest.trim_start().starts_with('(');
        columns.push(name);
    }
    Ok((columns, prefixed, functional))
}

fn column(entry: &str) -> Result<MyColumn, String> {
    let (name, rest) = identifier(entry).ok_or("a column without a name")?;
    let rest = rest.trim_start();
    let word_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    if word_end == 0 {
        return Err(format!("column {name}: no type"));
    }
    let mut col = MyColumn {
        name,
        type_name: rest[..word_end].to_ascii_lowercase(),
        nullable: true,
        ..MyColumn::default()
    };
    let mut rest = &rest[word_end..];
    if rest.starts_with('(') {
        let (params, after) = parenthesized(rest).ok_or_else(|| format!("column {}: unclosed type", col.name))?;
        col.params = Some(params.to_string());
        rest = after;
    }
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        if let Some(after) = rest.strip_prefix("/*") {
            // A versioned comment (`/*!80023 INVISIBLE */`): kept for the report.
            let end = after
                .find("*/")
                .ok_or_else(|| format!("column {}: an unclosed comment", col.name))?;
            col.other.push(format!("/*{}*/", &after[..end]));
            rest = &after[end + 2..];
            continue;
        }
        let (word, after) = next_word(rest);
        match word.to_ascii_uppercase().as_str() {
            "UNSIGNED" => col.unsigned = true,
            "SIGNED" | "ZEROFILL" => {}
            "NULL" => col.nullable = true,
            "NOT" => {
                let (null, after) = next_word(after.trim_start());
                if !null.eq_ignore_ascii_case("NULL") {
                    return Err(format!("column {}: NOT without NULL", col.name));
                }
                col.nullable = false;
                rest = after;
                continue;
            }
            "CHARACTER" => {
                let (_set, after) = next_word(after.trim_start());
                let (charset, after) = next_word(after.trim_start());
                col.charset = Some(charset.to_ascii_lowercase());
                rest = after;
                continue;
            }
            "CHARSET" | "COLLATE" => {
                let (value, after) = next_word(after.trim_start());
                if col.charset.is_none() {
                    // A collation's name starts with its character set's.
                    let value = value.to_ascii_lowercase();
                    col.charset = Some(match word.eq_ignore_ascii_case("COLLATE") {
                        true => value.split('_').next().unwrap_or_default().to_string(),
                        false => value,
                    });
                }
                rest = after;
                continue;
            }
            "DEFAULT" => {
                let (value, after) = expression(after.trim_start())
                    .ok_or_else(|| format!("column {}: DEFAULT without a value", col.name))?;
                col.default = Some(value.to_string());
                rest = after;
                continue;
            }
            "ON" => {
                let (update, after) = next_word(after.trim_start());
                let (value, after) = expression(after.trim_start())
                    .ok_or_else(|| format!("column {}: ON {update} without a value", col.name))?;
                col.other.push(format!("ON {update} {value}"));
                rest = after;
                continue;
            }
            "AUTO_INCREMENT" => col.auto_increment = true,
            // Keys written on the column (a logged statement's text; `KEY` alone is MySQL's
            // shorthand for the primary key).
            "PRIMARY" | "KEY" => {
                col.inline_key = Some(IndexKind::Primary);
                if word.eq_ignore_ascii_case("PRIMARY") {
                    let (key, after2) = next_word(after.trim_start());
                    if key.eq_ignore_ascii_case("KEY") {
                        rest = after2;
                        continue;
                    }
                }
            }
            "UNIQUE" => {
                col.inline_key = Some(IndexKind::Unique);
                let (key, after2) = next_word(after.trim_start());
                if key.eq_ignore_ascii_case("KEY") {
                    rest = after2;
                    continue;
                }
            }
            "GENERATED" | "AS" => {
                let mut after = after.trim_start();
                if word.eq_ignore_ascii_case("GENERATED") {
                    after = strip_words(after, &["ALWAYS", "AS"])
                        .ok_or_else(|| format!("column {}: GENERATED without AS", col.name))?;
                }
                let (expr, after) = parenthesized(after.trim_start())
                    .ok_or_else(|| format!("column {}: a generated column without its expression", col.name))?;
                col.generated = Some(expr.to_string());
                let (kind, after2) = next_word(after.trim_start());
                rest = match kind.to_ascii_uppercase().as_str() {
                    "VIRTUAL" | "STORED" | "PERSISTENT" => after2,
                    _ => after,
                };
                continue;
            }
            "COMMENT" => {
                let (_text, after) = expression(after.trim_start())
                    .ok_or_else(|| format!("column {}: COMMENT without text", col.name))?;
                rest = after;
                continue;
            }
            "CHECK" => {
                let (expr, after) = parenthesized(after.trim_start())
                    .ok_or_else(|| format!("column {}: CHECK without a condition", col.name))?;
                let json = format!("json_valid(`{}`)", col.name.replace('`', "``"));
                if expr.trim().eq_ignore_ascii_case(&json) {
                    col.json_checked = true;
                } else {
                    col.other.push(format!("CHECK ({expr})"));
                }
                rest = after;
                continue;
            }
            _ => col.other.push(word.to_string()),
        }
        rest = after;
    }
    Ok(col)
}

/// The default character set in a table's options (`… DEFAULT CHARSET=latin1 COLLATE=…`).
fn table_charset(options: &str) -> Option<String> {
    let upper = options.to_ascii_uppercase();
    // `CHARSET=x`, `CHARSET x`, `CHARACTER SET = x` (a logged statement's own spelling).
    let value_after = |key: &str| -> Option<String> {
        let at = upper.find(key)? + key.len();
        let rest = options[at..].trim_start();
        let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
        let value = rest
            .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
            .next()?
            .trim_matches(|c| c == '\'' || c == '"' || c == '`');
        (!value.is_empty()).then(|| value.to_ascii_lowercase())
    };
    if let Some(charset) = value_after("CHARACTER SET").or_else(|| value_after("CHARSET")) {
        return Some(charset);
    }
    value_after("COLLATE").map(|collation| collation.split('_').next().unwrap_or_default().to_string())
}

/// The next word (up to a space), and what follows it.
fn next_word(text: &str) -> (&str, &str) {
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    (&text[..end], &text[end..])
}

/// A default or comment value: a quoted string, a parenthesized expression, or a word with an
/// optional argument list (`current_timestamp(6)`, `b'101'`, `-1.5`).
fn expression(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let first = *bytes.first()?;
    let end = if first == b'\'' {
        quoted_end(text, b'\'')?
    } else if first == b'(' {
        text.len() - parenthesized(text)?.1.len()
    } else {
        let mut end = text
            .find(|c: char| c.is_whitespace() || c == '(' || c == '\'')
            .unwrap_or(text.len());
        if text[end..].starts_with('\'') {
            end += quoted_end(&text[end..], b'\'')?;
        } else if text[end..].starts_with('(') {
            end = text.len() - parenthesized(&text[end..])?.1.len();
        }
        end
    };
    Some((&text[..end], &text[end..]))
}

/// A name at the start of `text` — backtick-quoted (unquoted here), or a bare word as a logged
/// statement may write it — and what follows it.
fn identifier(text: &str) -> Option<(String, &str)> {
    if !text.starts_with('`') {
        let end = text
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(text.len());
        return (end > 0).then(|| (text[..end].to_string(), &text[end..]));
    }
    let end = quoted_end(text, b'`')?;
    Some((text[1..end - 1].replace("``", "`"), &text[end..]))
}

/// Whether a table entry starts with a keyword (a key or constraint), not a column's name.
fn starts_with_keyword(entry: &str) -> bool {
    let word: String = entry
        .chars()
        .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
        .collect::<String>()
        .to_ascii_uppercase();
    matches!(
        word.as_str(),
        "PRIMARY" | "UNIQUE" | "KEY" | "INDEX" | "FULLTEXT" | "SPATIAL" | "CONSTRAINT" | "FOREIGN" | "CHECK" | "PERIOD"
    )
}

/// A `CREATE TABLE` split into the table's name, its entries (columns, keys, constraints) as
/// written, and the table options after the list, for a logged statement to be applied to it.
///
/// # Errors
/// Text that is not a `CREATE TABLE name (…)`.
pub fn split_create(create: &str) -> Result<(String, Vec<String>, String), String> {
    let rest = strip_words(create.trim_start(), &["CREATE", "TABLE"]).ok_or("not a CREATE TABLE statement")?;
    let (name, rest) = identifier(rest.trim_start()).ok_or("no table name after CREATE TABLE")?;
    let (body, options) = parenthesized(rest.trim_start()).ok_or_else(|| format!("table {name}: no column list"))?;
    let entries = split_top_level(body).into_iter().map(str::to_string).collect();
    Ok((name, entries, options.trim().to_string()))
}

/// The `CREATE TABLE` of `name` with `entries` and `options`, as `parse_table` reads it.
pub fn join_create(name: &str, entries: &[String], options: &str) -> String {
    format!(
        "CREATE TABLE `{}` (\n  {}\n) {options}",
        name.replace('`', "``"),
        entries.join(",\n  ")
    )
}

/// The name of the column an entry defines, when it defines one.
pub fn entry_column(entry: &str) -> Option<String> {
    (entry.starts_with('`') || !starts_with_keyword(entry))
        .then(|| identifier(entry).map(|(name, _)| name))
        .flatten()
}

/// The columns a key entry lists (`KEY k (a, b)`, `PRIMARY KEY (a)`), empty for another entry.
pub fn entry_key_columns(entry: &str) -> Vec<String> {
    if !starts_with_keyword(entry) {
        return Vec::new();
    }
    let Some(open) = entry.find('(') else {
        return Vec::new();
    };
    parenthesized(&entry[open..])
        .and_then(|(list, _)| key_columns(list).ok())
        .map(|(columns, _, _)| columns)
        .unwrap_or_default()
}

/// What the parentheses at the start of `text` hold, and what follows them (quotes respected).
fn parenthesized(text: &str) -> Option<(&str, &str)> {
    if !text.starts_with('(') {
        return None;
    }
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' | b'`' => {
                i += quoted_end(&text[i..], bytes[i])?;
                continue;
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&text[1..i], &text[i + 1..]));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// `text` after the keywords `words` (any case, separated by spaces), if it starts with them.
fn strip_words<'t>(text: &'t str, words: &[&str]) -> Option<&'t str> {
    let mut rest = text;
    for word in words {
        rest = rest.trim_start();
        let head = rest.get(..word.len())?;
        if !head.eq_ignore_ascii_case(word) {
            return None;
        }
        let after = &rest[word.len()..];
        if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        rest = after;
    }
    Some(rest)
}

#[cfg(test)]
mod tests;
