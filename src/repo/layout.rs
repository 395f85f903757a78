//! Where each object of a source lives on a destination (see docs/layout.md).
//!
//! Every key cairn reads or writes is built here, so the layout document and the code cannot
//! drift apart silently.

/// Key of the current status file of `source`.
pub fn status_key(source: &str) -> String {
    format!("{source}/status.json")
}

/// Key of the status file's second copy: the generation before the current one.
pub fn status_previous_key(source: &str) -> String {
    format!("{source}/status.previous.json")
}

/// Key of the lease that keeps two runs of the same source apart.
pub fn lock_key(source: &str) -> String {
    format!("{source}/lock.json")
}

/// Prefix under which every copy of `source` lives.
pub fn copies_prefix(source: &str) -> String {
    format!("{source}/copies/")
}

/// Prefix of one copy's files.
pub fn copy_prefix(source: &str, copy_id: &str) -> String {
    format!("{source}/copies/{copy_id}/")
}

/// Key of a copy's manifest; the copy exists once this object does.
pub fn manifest_key(source: &str, copy_id: &str) -> String {
    format!("{source}/copies/{copy_id}/manifest.json")
}

/// The copy id a manifest key belongs to, if `key` is one.
pub fn copy_id_of_manifest(source: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(&copies_prefix(source))?;
    let id = rest.strip_suffix("/manifest.json")?;
    (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_keys_round_trip_to_copy_ids() {
        let key = manifest_key("app", "20261121T051400Z-full");
        assert_eq!(key, "app/copies/20261121T051400Z-full/manifest.json");
        assert_eq!(
            copy_id_of_manifest("app", &key).as_deref(),
            Some("20261121T051400Z-full")
        );
        assert_eq!(copy_id_of_manifest("app", "app/copies/x/data/manifest.json"), None);
        assert_eq!(copy_id_of_manifest("other", &key), None);
    }
}
