//! Wording shared by messages and reports: a count with its noun in the right number.

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
