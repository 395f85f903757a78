//! Quoting names and values into the SQL cairn sends to PostgreSQL.

/// `"identifier"`, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'literal'`, with embedded quotes doubled (standard_conforming_strings is on everywhere cairn
/// sends SQL).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
