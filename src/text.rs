//! Wording shared by messages and reports: a count with its noun in the right number, a byte
//! size for people.

/// `1 file`, `2 files`, `0 files`; `noun` is the singular, and the plural adds `s` (`copy`
/// becomes `copies`).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else if let Some(stem) = noun.strip_suffix('y').filter(|s| !s.ends_with(['a', 'e', 'o', 'u'])) {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {noun}s")
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1u64, "file"), "1 file");
        assert_eq!(count(2u64, "file"), "2 files");
        assert_eq!(count(0u64, "source"), "0 sources");
        assert_eq!(count(3u64, "copy"), "3 copies");
        assert_eq!(count(1u64, "copy"), "1 copy");
        assert_eq!(count(2u64, "day"), "2 days");
    }
}
