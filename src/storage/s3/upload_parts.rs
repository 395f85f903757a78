//! The pieces of a multipart upload: an open upload that aborts itself when dropped, reading a
//! part from the body and collecting a sent part.

use super::*;

/// A multipart upload in progress. Dropped before it finished — its writer was cancelled, say
/// because another worker of the copy failed — it aborts the upload in the background, so its
/// parts do not stay in the bucket; [`Destination::settle`] waits for that.
pub(super) struct OpenUpload {
    pub(super) destination: S3Destination,
    pub(super) full_key: String,
    pub(super) upload_id: String,
    pub(super) finished: bool,
}

impl Drop for OpenUpload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let destination = self.destination.clone();
        let (full_key, upload_id) = (std::mem::take(&mut self.full_key), std::mem::take(&mut self.upload_id));
        let task = runtime.spawn(async move { destination.abort_upload(&full_key, &upload_id).await });
        self.destination
            .aborting
            .lock()
            .expect("abort list lock poisoned")
            .push(task);
    }
}

pub(super) fn join_part(
    joined: Option<Result<Result<CompletedPart, DestinationError>, tokio::task::JoinError>>,
    key: &str,
) -> Result<CompletedPart, DestinationError> {
    match joined {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(DestinationError::Body {
            key: key.to_string(),
            source: std::io::Error::other(e),
        }),
        None => Err(DestinationError::Body {
            key: key.to_string(),
            source: std::io::Error::other("part upload vanished"),
        }),
    }
}

/// Reads up to `size` bytes; fewer only at the end of the stream.
pub(super) async fn read_part(body: &mut ObjectStream, size: u64, key: &str) -> Result<Bytes, DestinationError> {
    let mut buffer = BytesMut::with_capacity(size as usize);
    while (buffer.len() as u64) < size {
        let n = body
            .read_buf(&mut buffer)
            .await
            .map_err(|source| DestinationError::Body {
                key: key.to_string(),
                source,
            })?;
        if n == 0 {
            break;
        }
    }
    Ok(buffer.freeze())
}
