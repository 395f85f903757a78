//! Downloads: one GET of an object with its version, resumed after broken connections.

use super::*;

impl S3Destination {
    pub(super) async fn get_versioned_once(
        &self,
        key: &str,
        limit: u64,
    ) -> Result<Option<VersionedObject>, DestinationError> {
        let full_key = self.full_key(key)?;
        let output = match self
            .client
            .get_object()
            .bucket(&self.options.bucket)
            .key(&full_key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) => {
                return match classify(&e) {
                    Failure::NotFound => Ok(None),
                    other => Err(self.error("downloading", key, other)),
                };
            }
        };
        if output.content_length().unwrap_or(0) as u64 > limit {
            return Err(DestinationError::TooLarge {
                location: self.location(),
                key: key.to_string(),
                limit,
            });
        }
        let etag = output.e_tag().unwrap_or_default().to_string();
        let data = output
            .body
            .collect()
            .await
            .map_err(|e| DestinationError::Body {
                key: key.to_string(),
                source: std::io::Error::other(e),
            })?
            .into_bytes();
        // An ETag that is a plain MD5 lets us check what arrived; multipart ETags are not one.
        let plain = etag.trim_matches('"');
        if plain.len() == 32 && plain.chars().all(|c| c.is_ascii_hexdigit()) && md5_hex(&data) != plain {
            return Err(DestinationError::Request {
                operation: "downloading",
                location: self.location(),
                key: key.to_string(),
                detail: format!("received bytes do not match the object's ETag {etag}"),
            });
        }
        Ok(Some(VersionedObject { data, etag }))
    }
}
