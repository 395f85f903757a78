//! What a backup tool must never do, each proved against real servers and destinations: record
//! a copy that cannot be restored, lose a copy a manifest proves, stay stuck after a crash, or
//! touch files it was not asked to touch.

use crate::postgres::{fixture_database, url_of};
use crate::support::{cairn_under, run, walk};

/// A file size limit (as a full disk does) cuts a data file short: the run must fail and
/// record nothing, instead of recording a copy whose files are truncated.
#[tokio::test]
async fn a_write_cut_short_fails_the_backup_and_records_nothing() {
    let source = fixture_database("pg_full_disk").await;
    let locks = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backups").display().to_string();
    // 20 KiB per file; the signal a process gets for passing the limit is ignored, so the write
    // itself fails, as it does on a full disk.
    let (code, out, err) = run(cairn_under(locks.path(), "trap '' XFSZ; ulimit -f 20")
        .env("CAIRN_CHUNK_SIZE_MIB", "1")
        .args(["backup", "--name", "fx", "--source", &url_of(&source), "--to", &to]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("File too large") || err.contains("holds"),
        "the error says what failed: {err}"
    );
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.ends_with("manifest.json") || p.ends_with("status.json"))
        .collect();
    assert!(leftovers.is_empty(), "nothing is recorded: {leftovers:?}");
}
