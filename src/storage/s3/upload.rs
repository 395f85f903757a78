//! Uploads: single PUTs, multipart uploads with parts sent in parallel, and the abort of an
//! upload that will not finish.

use super::*;

impl S3Destination {
    pub(super) async fn put_single(
        &self,
        key: &str,
        data: Bytes,
        condition: Option<&PutCondition>,
    ) -> Result<PutOutcome, DestinationError> {
        let full_key = self.full_key(key)?;
        let digest = md5::Md5::digest(&data);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.options.bucket)
            .key(&full_key)
            .content_md5(base64::engine::general_purpose::STANDARD.encode(digest))
            .content_length(data.len() as i64);
        match condition {
            Some(PutCondition::CreateOnly) => request = request.if_none_match("*"),
            Some(PutCondition::IfMatch(etag)) => request = request.if_match(etag),
            None => {}
        }
        let size = data.len() as u64;
        let output = request
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.error("uploading", key, classify(&e)))?;
        Ok(PutOutcome {
            size,
            md5: format!("{digest:x}"),
            etag: output.e_tag().unwrap_or_default().to_string(),
        })
    }

    pub(super) async fn put_multipart(
        &self,
        key: &str,
        first_parts: Vec<Bytes>,
        mut body: ObjectStream,
        mut hasher: md5::Md5,
        mut size: u64,
    ) -> Result<PutOutcome, DestinationError> {
        let full_key = self.full_key(key)?;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.options.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|e| self.error("starting a multipart upload of", key, classify(&e)))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let mut open = OpenUpload {
            destination: self.clone(),
            full_key: full_key.clone(),
            upload_id: upload_id.clone(),
            finished: false,
        };
        let result = async {
            let mut in_flight: JoinSet<Result<CompletedPart, DestinationError>> = JoinSet::new();
            let mut completed = Vec::new();
            let mut queued: std::collections::VecDeque<Bytes> = first_parts.into();
            let mut part_number: i32 = 0;
            loop {
                let part = match queued.pop_front() {
                    Some(part) => part,
                    None => {
                        let part = read_part(&mut body, self.options.part_size, key).await?;
                        if part.is_empty() {
                            break;
                        }
                        hasher.update(&part);
                        size += part.len() as u64;
                        part
                    }
                };
                part_number += 1;
                if part_number > MAX_PARTS {
                    return Err(DestinationError::Request {
                        operation: "uploading",
                        location: self.location(),
                        key: key.to_string(),
                        detail: format!(
                            "the object needs more than {MAX_PARTS} parts of {} bytes; raise part-size-mib",
                            self.options.part_size
                        ),
                    });
                }
                while in_flight.len() >= self.options.upload_concurrency.max(1) {
                    completed.push(join_part(in_flight.join_next().await, key)?);
                }
                let this = self.clone();
                let (full_key, upload_id, key) = (full_key.clone(), upload_id.clone(), key.to_string());
                in_flight.spawn(async move { this.upload_part(&key, &full_key, &upload_id, part_number, part).await });
            }
            while let Some(joined) = in_flight.join_next().await {
                completed.push(join_part(Some(joined), key)?);
            }
            completed.sort_by_key(|p| p.part_number());
            self.client
                .complete_multipart_upload()
                .bucket(&self.options.bucket)
                .key(&full_key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
                .send()
                .await
                .map_err(|e| self.error("completing the multipart upload of", key, classify(&e)))
        }
        .await;
        open.finished = true;
        match result {
            Ok(output) => Ok(PutOutcome {
                size,
                md5: format!("{:x}", hasher.finalize()),
                etag: output.e_tag().unwrap_or_default().to_string(),
            }),
            Err(e) => {
                // Leave no orphaned parts behind to be billed; the original error matters more
                // than a failed abort.
                self.abort_upload(&full_key, &upload_id).await;
                Err(e)
            }
        }
    }

    pub(super) async fn abort_upload(&self, full_key: &str, upload_id: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.options.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(
                "aborting the unfinished upload of {full_key} at {} failed ({}); `cairn status` lists it",
                self.location(),
                DisplayErrorContext(&e)
            );
        }
    }

    pub(super) async fn upload_part(
        &self,
        key: &str,
        full_key: &str,
        upload_id: &str,
        part_number: i32,
        data: Bytes,
    ) -> Result<CompletedPart, DestinationError> {
        let digest = md5::Md5::digest(&data);
        let output = self
            .client
            .upload_part()
            .bucket(&self.options.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_md5(base64::engine::general_purpose::STANDARD.encode(digest))
            .content_length(data.len() as i64)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.error("uploading a part of", key, classify(&e)))?;
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(output.e_tag().map(str::to_string))
            .build())
    }
}
