//! Writing a file at a path the user named (`--position-file`): through symlinks and into
//! devices and pipes as any program would, and atomically (unique temporary name, fsync,
//! rename, fsync of the folder) when it is a regular file, so a crash never leaves half of it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file a path finally names, following symlinks (also one whose target does not exist
/// yet), so the link itself stays a link.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&current)?;
                current = match current.parent() {
                    Some(parent) if target.is_relative() => parent.join(target),
                    _ => target,
                };
            }
            Ok(_) => return Ok(current),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(current),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

/// Writes `data` to `path`.
///
/// A regular file (or none yet) is replaced atomically through a temporary file with a unique
/// name in the same folder; a device or pipe (`/dev/stdout`, a FIFO) is written in place; a
/// folder is refused.
///
/// # Errors
/// The I/O error, which the caller names the path in.
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    let target = resolve(path)?;
    match fs::metadata(&target) {
        Ok(meta) if meta.is_dir() => {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, "it is a folder"));
        }
        Ok(meta) if !meta.is_file() => {
            let mut file = OpenOptions::new().write(true).open(&target)?;
            file.write_all(data)?;
            return file.flush();
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let folder = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temporary = tempfile::Builder::new()
        .prefix(".cairn-")
        .suffix(".tmp")
        .tempfile_in(&folder)?;
    temporary.write_all(data)?;
    temporary.flush()?;
    temporary.as_file().sync_all()?;
    temporary.persist(&target).map_err(|e| e.error)?;
    fs::File::open(&folder)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_replaced_whole_and_nothing_is_left_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("position.json");
        write(&path, b"first").unwrap();
        write(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["position.json"]);
    }

    #[test]
    fn symlinks_are_written_through_and_stay_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        write(&link, b"through a dangling link").unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"through a dangling link");
        write(&link, b"again").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"again");
    }

    #[test]
    fn pipes_and_devices_are_written_in_place_and_folders_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(fifo).unwrap())
        };
        write(&fifo, b"to the reader").unwrap();
        assert_eq!(reader.join().unwrap(), b"to the reader");
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        write(Path::new("/dev/null"), b"discarded").unwrap();
        assert!(fs::metadata("/dev/null").unwrap().file_type().is_char_device());
        assert_eq!(write(dir.path(), b"x").unwrap_err().kind(), io::ErrorKind::IsADirectory);
    }

    use std::os::unix::fs::FileTypeExt;
}
