//! `cairn key generate FILE`: a new encryption key, written where `[encryption] key-file` reads
//! it, readable by its owner only, never over an existing file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::Subcommand;

use super::{CliResult, Failure, print_out};
use crate::exit::ExitStatus;
use crate::repo::crypt::Key;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new random key to FILE (mode 0600; an existing file is kept) and print its id.
    Generate {
        /// Where to write the key.
        file: PathBuf,
    },
}

pub(super) fn run(command: &KeyCommand) -> CliResult {
    let KeyCommand::Generate { file } = command;
    let key = Key::generate();
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut out| {
            out.write_all(key.to_file_text().as_bytes())?;
            out.sync_all()
        });
    match written {
        Ok(()) => print_out(&format!(
            "wrote key {} to {}: name it in [encryption] key-file, and keep a copy apart from the backups — \
             copies encrypted with it cannot be read without it\n",
            key.id(),
            file.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Failure {
            status: ExitStatus::Usage,
            error: anyhow::anyhow!(
                "{} exists: a key file is never overwritten (the copies encrypted with it would be lost); choose \
                 another path",
                file.display()
            ),
        }),
        Err(e) => Err(Failure {
            status: ExitStatus::Failed,
            error: anyhow::Error::new(e).context(format!("writing {}", file.display())),
        }),
    }
}
