//! The stored form of a PostgreSQL incremental's changes (docs/postgres.md, "Change files"): a
//! header line, then one record per pgoutput message as the slot returned it — its LSN (8 bytes,
//! big-endian), its length (4 bytes, big-endian) and its bytes. The copy writer encodes and
//! checksums the stream like every other file.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first line of every change file; the number is the format's version.
pub const HEADER: &[u8] = b"cairn-pgoutput 1\n";
/// The largest message accepted back: a row of PostgreSQL is at most 1 GiB.
const MAX_MESSAGE: u32 = 1 << 30;

/// Writes the header.
///
/// # Errors
/// The writer's error.
pub async fn write_header<W: AsyncWrite + Unpin>(out: &mut W) -> std::io::Result<()> {
    out.write_all(HEADER).await
}

/// Writes one record.
///
/// # Errors
/// The writer's error.
pub async fn write_record<W: AsyncWrite + Unpin>(out: &mut W, lsn: u64, message: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(message.len()).map_err(|_| std::io::Error::other("a message over 4 GiB"))?;
    let mut head = [0u8; 12];
    head[..8].copy_from_slice(&lsn.to_be_bytes());
    head[8..].copy_from_slice(&len.to_be_bytes());
    out.write_all(&head).await?;
    out.write_all(message).await
}

/// Reads a change file's records in order.
pub struct Records<R> {
    input: R,
    started: bool,
    read: u64,
}

impl<R: AsyncRead + Unpin> Records<R> {
    pub fn new(input: R) -> Self {
        Records {
            input,
            started: false,
            read: 0,
        }
    }

    /// The next record (LSN, message), or `None` at the end of the file.
    ///
    /// # Errors
    /// A sentence for a file that is not a change file or ends inside a record; the reader's
    /// own error (a damaged stored file) as it is.
    pub async fn next(&mut self) -> Result<Option<(u64, Vec<u8>)>, ReadError> {
        if !self.started {
            let mut header = vec![0u8; HEADER.len()];
            self.input
                .read_exact(&mut header)
                .await
                .map_err(ReadError::from_short)?;
            if header != HEADER {
                return Err(ReadError::Format(
                    "it does not start with the change-file header".into(),
                ));
            }
            self.started = true;
        }
        let mut head = [0u8; 12];
        let mut got = 0;
        while got < head.len() {
            let n = self.input.read(&mut head[got..]).await.map_err(ReadError::Io)?;
            if n == 0 {
                return match got {
                    0 => Ok(None),
                    _ => Err(ReadError::Format(format!("it ends inside record {}", self.read + 1))),
                };
            }
            got += n;
        }
        let lsn = u64::from_be_bytes(head[..8].try_into().expect("eight bytes"));
        let len = u32::from_be_bytes(head[8..].try_into().expect("four bytes"));
        if len > MAX_MESSAGE {
            return Err(ReadError::Format(format!(
                "record {} claims {len} bytes",
                self.read + 1
            )));
        }
        let mut message = vec![0u8; len as usize];
        self.input
            .read_exact(&mut message)
            .await
            .map_err(ReadError::from_short)?;
        self.read += 1;
        Ok(Some((lsn, message)))
    }
}

/// Why a change file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Format(String),
    #[error(transparent)]
    Io(std::io::Error),
}

impl ReadError {
    fn from_short(error: std::io::Error) -> ReadError {
        match error.kind() {
            std::io::ErrorKind::UnexpectedEof => ReadError::Format("it ends inside a record".into()),
            _ => ReadError::Io(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_read_back_as_written_and_a_cut_file_is_named() {
        let mut file = Vec::new();
        write_header(&mut file).await.unwrap();
        write_record(&mut file, 0x16_0000_0010, b"B....").await.unwrap();
        write_record(&mut file, 0x16_0000_0020, b"").await.unwrap();
        let mut records = Records::new(file.as_slice());
        assert_eq!(records.next().await.unwrap(), Some((0x16_0000_0010, b"B....".to_vec())));
        assert_eq!(records.next().await.unwrap(), Some((0x16_0000_0020, Vec::new())));
        assert_eq!(records.next().await.unwrap(), None);

        let cut = &file[..file.len() - 3];
        let mut records = Records::new(cut);
        records.next().await.unwrap();
        assert!(matches!(records.next().await, Err(ReadError::Format(m)) if m.contains("ends inside")));
        let mut records = Records::new(&b"not a change file at all"[..]);
        assert!(matches!(records.next().await, Err(ReadError::Format(m)) if m.contains("header")));
    }
}
