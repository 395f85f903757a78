//! Reading an SQL identifier at the start of a text: quoted with the server's quote character
//! (`` ` `` for MySQL, `"` for PostgreSQL; a doubled quote stands for one), or bare.

/// The identifier at the start of `text` (leading spaces skipped), and what follows it.
pub fn identifier(text: &str, quote: char) -> Option<(String, &str)> {
    let text = text.trim_start();
    if let Some(rest) = text.strip_prefix(quote) {
        let mut name = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                if chars.peek().map(|(_, n)| *n) == Some(quote) {
                    chars.next();
                    name.push(quote);
                    continue;
                }
                return Some((name, &rest[i + c.len_utf8()..]));
            }
            name.push(c);
        }
        return None;
    }
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(text.len());
    (end > 0).then(|| (text[..end].to_string(), &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::identifier;

    #[test]
    fn quoted_and_bare_names_are_read() {
        assert_eq!(identifier(" `a``b`.c", '`'), Some(("a`b".into(), ".c")));
        assert_eq!(identifier("\"Orders\"(id)", '"'), Some(("Orders".into(), "(id)")));
        assert_eq!(identifier("orders_1 x", '"'), Some(("orders_1".into(), " x")));
        assert_eq!(identifier("(x", '"'), None);
        assert_eq!(identifier("`open", '`'), None);
    }
}
