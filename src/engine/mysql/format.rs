//! The `LOAD DATA` text format of MySQL copies: fields separated by tab, rows ended by newline,
//! `\` escapes, `\N` for NULL; bytes are written as they are, so any column is binary-safe. The
//! parser reads it back for the `INSERT` fallback.

/// Appends one row in `LOAD DATA` format.
pub fn write_row<'a>(out: &mut Vec<u8>, fields: impl IntoIterator<Item = Option<&'a [u8]>>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match field {
            None => out.extend_from_slice(b"\\N"),
            Some(bytes) => write_escaped(out, bytes),
        }
    }
    out.push(b'\n');
}

/// The bytes `LOAD DATA` needs escaped.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    table[b'\\' as usize] = true;
    table[b'\t' as usize] = true;
    table[b'\n' as usize] = true;
    table[b'\r' as usize] = true;
    table[0] = true;
    table[0x1a] = true;
    table
};

/// Appends one field's bytes escaped: runs of plain bytes are copied whole, since most fields
/// have nothing to escape (a push per byte cost a sixth of a MySQL copy's CPU).
fn write_escaped(out: &mut Vec<u8>, mut bytes: &[u8]) {
    out.reserve(bytes.len());
    while let Some(at) = first_escaped(bytes) {
        out.extend_from_slice(&bytes[..at]);
        out.extend_from_slice(match bytes[at] {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0 => b"\\0",
            _ => b"\\Z",
        });
        bytes = &bytes[at + 1..];
    }
    out.extend_from_slice(bytes);
}

/// Where the first byte to escape is. Blocks are first checked with a test the compiler turns
/// into vector instructions (every byte to escape is a control character or `\`), so plain
/// text is skipped many bytes at a time.
fn first_escaped(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 32;
    let mut start = 0;
    for block in bytes.chunks(BLOCK) {
        let suspect = block.iter().fold(false, |any, &b| any | (b < 0x20) | (b == b'\\'));
        if suspect && let Some(at) = block.iter().position(|&b| ESCAPED[b as usize]) {
            return Some(start + at);
        }
        start += block.len();
    }
    None
}

/// Parses rows of `LOAD DATA` text; a trailing partial row is left in `input` for the next call.
///
/// Returns the complete rows and how many bytes of `input` they used.
pub fn parse_rows(input: &[u8]) -> (Vec<Vec<Option<Vec<u8>>>>, usize) {
    let mut rows = Vec::new();
    let mut row: Vec<Option<Vec<u8>>> = Vec::new();
    let mut field: Vec<u8> = Vec::new();
    let mut null = false;
    let mut used = 0;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        match b {
            b'\\' => {
                let Some(&next) = input.get(i + 1) else { break };
                match next {
                    b'N' if field.is_empty() => null = true,
                    b'n' => field.push(b'\n'),
                    b't' => field.push(b'\t'),
                    b'r' => field.push(b'\r'),
                    b'0' => field.push(0),
                    b'Z' => field.push(0x1a),
                    b'b' => field.push(0x08),
                    other => field.push(other),
                }
                i += 2;
                continue;
            }
            b'\t' | b'\n' => {
                row.push(if null { None } else { Some(std::mem::take(&mut field)) });
                field.clear();
                null = false;
                if b == b'\n' {
                    rows.push(std::mem::take(&mut row));
                    used = i + 1;
                }
            }
            _ => field.push(b),
        }
        i += 1;
    }
    (rows, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_and_null_round_trip() {
        let every_byte: Vec<u8> = (0..=255u8).collect();
        let values: Vec<Option<&[u8]>> = vec![
            None,
            Some(b""),
            Some(b"NULL"),
            Some(b"\\N"),
            Some(b"tab\there\nnew\rline\\back"),
            Some(&every_byte),
        ];
        let mut out = Vec::new();
        write_row(&mut out, values.clone());
        write_row(&mut out, [Some(&b"second"[..])]);
        assert_eq!(
            out.iter().filter(|b| **b == b'\n').count(),
            2,
            "embedded newlines are escaped"
        );
        let (rows, used) = parse_rows(&out);
        assert_eq!(used, out.len());
        let expected: Vec<Option<Vec<u8>>> = values.iter().map(|v| v.map(|b| b.to_vec())).collect();
        assert_eq!(rows, vec![expected, vec![Some(b"second".to_vec())]]);
    }

    #[test]
    fn bytes_to_escape_are_found_at_any_place_in_long_fields() {
        for special in [b'\\', b'\t', b'\n', b'\r', 0, 0x1a] {
            for at in [0, 1, 30, 31, 32, 33, 63, 64, 99] {
                let mut field = vec![b'a'; 100];
                field[at] = special;
                let mut out = Vec::new();
                write_row(&mut out, [Some(&field[..])]);
                assert_eq!(out.len(), 102, "byte {special} at {at} escaped once");
                let (rows, _) = parse_rows(&out);
                assert_eq!(rows, vec![vec![Some(field)]], "byte {special} at {at}");
            }
        }
    }

    #[test]
    fn partial_rows_wait_for_more_input() {
        let mut out = Vec::new();
        write_row(&mut out, [Some(&b"a\\b"[..]), None]);
        write_row(&mut out, [Some(&b"c"[..]), Some(&b"d"[..])]);
        for cut in 0..out.len() {
            let (first, used) = parse_rows(&out[..cut]);
            let (rest, _) = parse_rows(&out[used..]);
            let all: Vec<_> = first.into_iter().chain(rest).collect();
            assert_eq!(all.len(), 2, "cut at {cut}");
            assert_eq!(all[0], vec![Some(b"a\\b".to_vec()), None]);
        }
    }
}
