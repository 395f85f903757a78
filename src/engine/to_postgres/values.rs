//! MySQL values as a copy holds them (each field as the server's text protocol gave it, under
//! `NAMES binary` and UTC) written as PostgreSQL `COPY` text through the documented mapping.
//! A value PostgreSQL cannot hold is an error naming the column and what to do — except zero
//! dates, which become NULL (or `-infinity` in a NOT NULL column) and are counted.

use super::types::Kind;

/// The character set a text column's bytes are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// `utf8mb4`, `utf8mb3`, `utf8`: checked to be UTF-8.
    Utf8,
    /// MySQL's `latin1` (Windows-1252, with the five bytes it leaves undefined kept as the C1
    /// controls of the same number).
    Latin1,
    /// `ascii`.
    Ascii,
}

impl Charset {
    /// The character set named `name` (MySQL's name, any case).
    ///
    /// # Errors
    /// A character set cairn does not convert, naming it.
    pub fn named(name: &str) -> Result<Charset, String> {
        match name.to_ascii_lowercase().as_str() {
            "utf8mb4" | "utf8mb3" | "utf8" => Ok(Charset::Utf8),
            "latin1" => Ok(Charset::Latin1),
            "ascii" => Ok(Charset::Ascii),
            other => Err(format!(
                "character set {other} is not converted to UTF-8 by cairn (utf8mb4, utf8mb3, latin1 and ascii are)"
            )),
        }
    }
}

/// How one column's values are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRule {
    pub name: String,
    pub kind: Kind,
    pub charset: Charset,
    pub nullable: bool,
}

/// What writing a field did beyond the value itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Value,
    /// A zero date (or a date with a zero year, month or day) written as NULL or `-infinity`.
    ZeroDate,
}

/// Appends `field` (`None`: NULL) of column `rule` to `out` as a `COPY` text field.
///
/// # Errors
/// A value PostgreSQL cannot hold, naming the column (the value itself only when short).
pub fn copy_field(out: &mut Vec<u8>, rule: &ColumnRule, field: Option<&[u8]>) -> Result<Written, String> {
    let Some(field) = field else {
        out.extend_from_slice(b"\\N");
        return Ok(Written::Value);
    };
    let bad = |what: &str| format!("column {}: {what}: {}", rule.name, shown(field));
    match rule.kind {
        Kind::Integer | Kind::Decimal | Kind::Float | Kind::Year | Kind::Time | Kind::Uuid | Kind::Inet => {
            // Digits, signs, points, colons, hex and exponents: nothing to escape.
            if field.iter().any(|b| b.is_ascii_control() || *b == b'\\') {
                return Err(bad("not a value of its type"));
            }
            out.extend_from_slice(field);
        }
        Kind::Bit { bits } => {
            let text = std::str::from_utf8(field).map_err(|_| bad("not a number"))?;
            let value: u64 = text.parse().map_err(|_| bad("not a number"))?;
            let width = bits as usize;
            if width < 64 && value >> width != 0 {
                return Err(bad(&format!("wider than bit({bits})")));
            }
            out.extend_from_slice(format!("{value:0width$b}").as_bytes());
        }
        Kind::Date | Kind::DateTime | Kind::Timestamp => {
            if is_zero_date(field) {
                out.extend_from_slice(if rule.nullable { b"\\N" } else { b"-infinity" });
                return Ok(Written::ZeroDate);
            }
            if field.iter().any(|b| !(b.is_ascii_digit() || b" -:.".contains(b))) {
                return Err(bad("not a date or time"));
            }
            out.extend_from_slice(field);
            if rule.kind == Kind::Timestamp {
                // The copy's session ran in UTC.
                out.extend_from_slice(b"+00");
            }
        }
        Kind::Text | Kind::Enum | Kind::Set | Kind::Json => {
            let text = utf8(field, rule.charset).map_err(|e| bad(&e))?;
            if text.contains('\0') {
                return Err(bad(
                    "holds a NUL character, which PostgreSQL text cannot; make the column binary in MySQL, or \
                     leave the table out",
                ));
            }
            escape_text(out, text.as_bytes());
        }
        Kind::Bytes | Kind::Spatial => {
            out.extend_from_slice(b"\\\\x");
            for byte in field {
                out.extend_from_slice(format!("{byte:02x}").as_bytes());
            }
        }
    }
    Ok(Written::Value)
}

/// A zero date or datetime, or one with a zero year, month or day (PostgreSQL has none of them).
fn is_zero_date(field: &[u8]) -> bool {
    let part = |range: std::ops::Range<usize>| field.get(range).is_some_and(|p| p.iter().all(|b| *b == b'0'));
    part(0..4) || part(5..7) || part(8..10)
}

/// `bytes` in `charset` as UTF-8.
fn utf8(bytes: &[u8], charset: Charset) -> Result<std::borrow::Cow<'_, str>, String> {
    match charset {
        Charset::Utf8 => std::str::from_utf8(bytes)
            .map(std::borrow::Cow::Borrowed)
            .map_err(|e| format!("not valid UTF-8 at byte {}", e.valid_up_to())),
        Charset::Ascii if bytes.is_ascii() => Ok(std::borrow::Cow::Borrowed(
            std::str::from_utf8(bytes).unwrap_or_default(),
        )),
        Charset::Ascii => Err("not ASCII, though the column's character set is ascii".into()),
        Charset::Latin1 => Ok(std::borrow::Cow::Owned(bytes.iter().map(|b| latin1(*b)).collect())),
    }
}

/// MySQL's `latin1`: Windows-1252, with 0x81, 0x8D, 0x8F, 0x90 and 0x9D as the C1 controls.
fn latin1(byte: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}', '\u{90}', '‘',
        '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
    ];
    match byte {
        0x80..=0x9f => HIGH[usize::from(byte - 0x80)],
        other => char::from(other),
    }
}

/// Text escaped for `COPY`'s text format.
fn escape_text(out: &mut Vec<u8>, bytes: &[u8]) {
    for &byte in bytes {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            other => out.push(other),
        }
    }
}

/// A value for an error message: itself when short, its length otherwise (it may be anything).
fn shown(field: &[u8]) -> String {
    match field.len() <= 40 {
        true => format!("{:?}", String::from_utf8_lossy(field)),
        false => format!("a value of {} bytes", field.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: Kind) -> ColumnRule {
        ColumnRule {
            name: "c".into(),
            kind,
            charset: Charset::Utf8,
            nullable: true,
        }
    }

    fn field(kind: Kind, value: &[u8]) -> String {
        let mut out = Vec::new();
        copy_field(&mut out, &rule(kind), Some(value)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_become_copy_text_of_the_mapped_type() {
        assert_eq!(field(Kind::Integer, b"-128"), "-128");
        assert_eq!(field(Kind::Integer, b"18446744073709551615"), "18446744073709551615");
        assert_eq!(field(Kind::Float, b"-1.5e-7"), "-1.5e-7");
        assert_eq!(field(Kind::Bit { bits: 4 }, b"5"), "0101");
        assert_eq!(field(Kind::Bit { bits: 64 }, b"18446744073709551615"), "1".repeat(64));
        assert_eq!(
            field(Kind::Timestamp, b"2020-02-29 23:59:59.500000"),
            "2020-02-29 23:59:59.500000+00"
        );
        assert_eq!(field(Kind::DateTime, b"1000-01-01 00:00:00"), "1000-01-01 00:00:00");
        assert_eq!(field(Kind::Time, b"-838:59:59.000000"), "-838:59:59.000000");
        assert_eq!(field(Kind::Text, "tab\there\\ é\n".as_bytes()), "tab\\there\\\\ é\\n");
        assert_eq!(field(Kind::Bytes, &[0, 0xff, b'\\']), "\\\\x00ff5c");
        let mut out = Vec::new();
        copy_field(&mut out, &rule(Kind::Text), None).unwrap();
        assert_eq!(out, b"\\N");
    }

    #[test]
    fn zero_dates_become_null_or_minus_infinity_and_are_counted() {
        let mut out = Vec::new();
        let written = copy_field(&mut out, &rule(Kind::Date), Some(b"0000-00-00")).unwrap();
        assert_eq!((written, out.as_slice()), (Written::ZeroDate, b"\\N".as_slice()));
        let mut strict = rule(Kind::DateTime);
        strict.nullable = false;
        let mut out = Vec::new();
        let written = copy_field(&mut out, &strict, Some(b"2024-00-10 10:00:00")).unwrap();
        assert_eq!((written, out.as_slice()), (Written::ZeroDate, b"-infinity".as_slice()));
    }

    #[test]
    fn latin1_text_becomes_utf8() {
        let mut latin = rule(Kind::Text);
        latin.charset = Charset::Latin1;
        let mut out = Vec::new();
        copy_field(&mut out, &latin, Some(&[b'c', 0xe9, 0x80, 0x81])).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "cé€\u{81}");
    }

    #[test]
    fn what_postgres_cannot_hold_is_refused_naming_the_column() {
        let mut out = Vec::new();
        let err = copy_field(&mut out, &rule(Kind::Text), Some(b"a\0b")).unwrap_err();
        assert!(err.contains("column c") && err.contains("NUL"), "{err}");
        let err = copy_field(&mut out, &rule(Kind::Text), Some(&[0xff, 0xfe])).unwrap_err();
        assert!(err.contains("UTF-8"), "{err}");
        let err = copy_field(&mut out, &rule(Kind::Bit { bits: 2 }), Some(b"4")).unwrap_err();
        assert!(err.contains("bit(2)"), "{err}");
        let long = [b'x'; 100];
        let err = copy_field(&mut out, &rule(Kind::Integer), Some(&[&long[..], b"\n"].concat())).unwrap_err();
        assert!(err.contains("101 bytes") && !err.contains("xxxx"), "{err}");
        assert!(Charset::named("sjis").unwrap_err().contains("sjis"));
    }
}
