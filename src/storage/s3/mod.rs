//! A destination in an S3 bucket (AWS or any S3-compatible store).
//!
//! Every PUT and every part carries `Content-MD5`, so the store rejects what it did not receive
//! intact. Objects above the part size go up as multipart uploads whose parts are sent in
//! parallel; memory stays at part size × (concurrency + 1) whatever the object's size. Throttling
//! and 5xx answers are retried with exponential backoff by the SDK's standard retry strategy.
//! Credentials come from the destination's settings or the standard AWS chain (environment,
//! profile, instance role) and never appear in messages.

use md5::Digest as _;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use super::{
    Access, Destination, DestinationError, ObjectMeta, ObjectStream, PutCondition, PutOutcome, VersionedObject,
    md5_hex, validate_key,
};
use crate::secret::Secret;

mod download;
mod failure;
mod resume;
#[cfg(test)]
mod tests;
mod upload;
mod upload_parts;

use failure::{Failure, classify};
use resume::{RESUME_CHANNEL_CHUNKS, Resumable};
use upload_parts::{OpenUpload, join_part, read_part};

/// S3's smallest allowed part (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const MAX_PARTS: i32 = 10_000;

/// How to reach a bucket; parsed from `s3://bucket/prefix?…` and the destination's settings.
#[derive(Clone, PartialEq)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// Endpoint URL for S3-compatible stores; `None` uses AWS's endpoint for the region.
    pub endpoint: Option<String>,
    /// Region; `None` takes it from the AWS chain, else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible stores need.
    pub path_style: bool,
    /// Static credentials; both `None` uses the standard AWS chain.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// Objects larger than this go up as multipart uploads of parts of this size.
    pub part_size: u64,
    /// Parts uploaded at once by one put.
    pub upload_concurrency: usize,
    /// Attempts per request, retries included.
    pub max_attempts: u32,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("part_size", &self.part_size)
            .field("upload_concurrency", &self.upload_concurrency)
            .finish()
    }
}

impl S3Options {
    /// Defaults for a bucket and prefix.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        S3Options {
            bucket: bucket.into(),
            prefix: prefix.into().trim_matches('/').to_string(),
            endpoint: None,
            region: None,
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            part_size: 16 * 1024 * 1024,
            upload_concurrency: 4,
            max_attempts: 5,
        }
    }

    /// Parses `s3://bucket[/prefix][?endpoint=URL&region=R&path-style=true|false]`.
    ///
    /// # Errors
    /// A sentence saying what is wrong with the URL.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("s3://").ok_or("S3 URLs start with s3://")?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty() {
            return Err("the bucket name is missing: use s3://bucket/prefix".into());
        }
        let mut options = S3Options::new(bucket, prefix);
        let mut path_style = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = url::form_urlencoded::parse(value.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            match name {
                "endpoint" => {
                    check_endpoint(&value)?;
                    options.endpoint = Some(value)
                }
                "region" => options.region = Some(value),
                "path-style" => {
                    path_style = Some(match value.as_str() {
                        "true" => true,
                        "false" => false,
                        other => return Err(format!("path-style must be true or false, got {other:?}")),
                    })
                }
                other => {
                    return Err(format!(
                        "unknown URL parameter {other:?}: expected endpoint, region or path-style"
                    ));
                }
            }
        }
        options.path_style = path_style.unwrap_or(options.endpoint.is_some());
        Ok(options)
    }

    /// `s3://bucket/prefix at <endpoint>`; never includes credentials.
    pub fn describe(&self) -> String {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", self.prefix)
        };
        format!("s3://{}{prefix} at {}", self.bucket, self.endpoint_name())
    }

    fn endpoint_name(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!(
                "the AWS endpoint of region {}",
                self.region.as_deref().unwrap_or("(from the AWS chain)")
            ),
        }
    }
}

/// Checks that an endpoint is an `http://` or `https://` URL with a host, before any request
/// would find out.
///
/// # Errors
/// A sentence naming the endpoint and what it should look like.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let valid = url::Url::parse(endpoint)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()));
    match valid {
        Some(_) => Ok(()),
        None => Err(format!(
            "endpoint {endpoint:?} is not an http:// or https:// URL with a host, e.g. https://minio.example:9000"
        )),
    }
}

/// A bucket prefix reached through the AWS SDK.
#[derive(Clone)]
pub struct S3Destination {
    client: Client,
    options: S3Options,
    /// Aborts of uploads whose writer was cancelled, running in the background.
    aborting: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl fmt::Debug for S3Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Destination").field("options", &self.options).finish()
    }
}

impl S3Destination {
    /// Builds a client; no request is sent until the first call.
    ///
    /// # Errors
    /// [`DestinationError::InvalidUrl`] when the options cannot work (part size below S3's minimum).
    pub async fn connect(options: S3Options) -> Result<Self, DestinationError> {
        if options.part_size < MIN_PART_SIZE {
            return Err(DestinationError::InvalidUrl {
                url: options.describe(),
                reason: format!(
                    "part size {} is below S3's minimum of {MIN_PART_SIZE} bytes",
                    options.part_size
                ),
            });
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let (Some(id), Some(secret)) = (&options.access_key_id, &options.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(id, secret.expose(), None, None, "cairn-config"));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(options.path_style)
            // Content-MD5 is the integrity check every S3-compatible store understands; the
            // newer flexible checksums are not universally supported.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(options.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            );
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        if let Some(endpoint) = &options.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(S3Destination {
            client: Client::from_conf(builder.build()),
            options,
            aborting: Default::default(),
        })
    }

    fn full_key(&self, key: &str) -> Result<String, DestinationError> {
        validate_key(key)?;
        Ok(if self.options.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.options.prefix)
        })
    }

    fn relative_key<'a>(&self, full: &'a str) -> &'a str {
        if self.options.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.options.prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(full)
        }
    }

    fn error(&self, operation: &'static str, key: &str, failure: Failure) -> DestinationError {
        let location = self.location();
        match failure {
            Failure::NotFound => DestinationError::NotFound {
                location,
                key: key.to_string(),
            },
            Failure::Precondition(reason) => DestinationError::ConditionFailed {
                location,
                key: key.to_string(),
                reason,
            },
            Failure::NoBucket => DestinationError::BucketNotFound {
                bucket: self.options.bucket.clone(),
                endpoint: self.options.endpoint_name(),
            },
            Failure::Denied(detail) => DestinationError::AccessDenied {
                bucket: self.options.bucket.clone(),
                endpoint: self.options.endpoint_name(),
                detail,
            },
            Failure::Unreachable(detail) => DestinationError::Unreachable { location, detail },
            Failure::NoCredentials(detail) => DestinationError::NoCredentials {
                bucket: self.options.bucket.clone(),
                endpoint: self.options.endpoint_name(),
                detail,
            },

            Failure::Unavailable(detail) => DestinationError::Unavailable {
                operation,
                location,
                key: key.to_string(),
                detail,
            },
            Failure::Other(detail) => DestinationError::Request {
                operation,
                location,
                key: key.to_string(),
                detail,
            },
        }
    }

    /// Every page of `ListObjectsV2` under `prefix` (with `delimiter` if given), handed to `each`
    /// with the bucket-level prefix that was listed.
    async fn list_pages(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        mut each: impl FnMut(&aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output, &str),
    ) -> Result<(), DestinationError> {
        let full_prefix = if self.options.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.options.prefix)
        };
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.options.bucket)
                .prefix(&full_prefix)
                .set_delimiter(delimiter.map(str::to_string))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.error("listing", prefix, classify(&e)))?;
            each(&page, &full_prefix);
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(()),
            }
        }
    }
}

#[async_trait]
impl Destination for S3Destination {
    fn location(&self) -> String {
        self.options.describe()
    }

    async fn check(&self, _access: Access) -> Result<(), DestinationError> {
        // Write permission shows itself on the first write; probing it would leave objects.
        self.client
            .head_bucket()
            .bucket(&self.options.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| match classify(&e) {
                Failure::NotFound => self.error("checking", "", Failure::NoBucket),
                other => self.error("checking the bucket for", "", other),
            })
    }

    async fn put(&self, key: &str, mut body: ObjectStream) -> Result<PutOutcome, DestinationError> {
        let part_size = self.options.part_size;
        let first = read_part(&mut body, part_size, key).await?;
        let mut hasher = md5::Md5::new();
        hasher.update(&first);
        if (first.len() as u64) < part_size {
            return self.put_single(key, first, None).await;
        }
        // Exactly one part's worth so far: only a second read tells whether more follows.
        let second = read_part(&mut body, part_size, key).await?;
        if second.is_empty() {
            return self.put_single(key, first, None).await;
        }
        hasher.update(&second);
        let size = (first.len() + second.len()) as u64;
        self.put_multipart(key, vec![first, second], body, hasher, size).await
    }

    async fn put_if(&self, key: &str, data: Bytes, condition: PutCondition) -> Result<PutOutcome, DestinationError> {
        match self.put_single(key, data.clone(), Some(&condition)).await {
            Err(DestinationError::ConditionFailed { location, key, reason }) => {
                // The store may have applied this very request and lost its answer; the SDK's
                // retry then finds the condition broken by our own write. Whoever wrote the
                // object, if it holds exactly our bytes the put has happened. (Leases, manifests
                // and status files carry unique tokens, ids or times, so equal bytes are ours.)
                match self.get_versioned(&key, data.len() as u64).await {
                    Ok(Some(current)) if current.data == data => {
                        tracing::debug!("conditional write of {key} was applied though its answer was lost");
                        Ok(PutOutcome {
                            size: data.len() as u64,
                            md5: md5_hex(&data),
                            etag: current.etag,
                        })
                    }
                    _ => Err(DestinationError::ConditionFailed { location, key, reason }),
                }
            }
            other => other,
        }
    }

    async fn get(&self, key: &str) -> Result<ObjectStream, DestinationError> {
        let full_key = self.full_key(key)?;
        let output = self
            .client
            .get_object()
            .bucket(&self.options.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|e| self.error("downloading", key, classify(&e)))?;
        // A task reads the body and resumes it where it broke; the reader gets its chunks through
        // a small channel, so memory stays at a few chunks whatever the object's size.
        let (sender, receiver) = tokio::sync::mpsc::channel(RESUME_CHANNEL_CHUNKS);
        let resumable = Resumable {
            destination: self.clone(),
            key: key.to_string(),
            full_key,
            etag: output.e_tag().map(str::to_string),
            length: output.content_length().map(|l| l.max(0) as u64),
        };
        tokio::spawn(resumable.pump(output.body, sender));
        let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|chunk| (chunk, receiver))
        });
        Ok(Box::pin(tokio_util::io::StreamReader::new(Box::pin(chunks))))
    }

    async fn get_versioned(&self, key: &str, limit: u64) -> Result<Option<VersionedObject>, DestinationError> {
        // The SDK retries requests, not bodies: a connection that breaks while the body arrives
        // is retried here, and reported as unreachable (not as damage) when it keeps breaking.
        let attempts = self.options.max_attempts.max(1);
        let mut retry = resume::resume_policy(attempts as usize - 1);
        loop {
            match self.get_versioned_once(key, limit).await {
                Err(DestinationError::Body { source, .. }) => {
                    if retry.failed() + 1 < attempts {
                        tracing::debug!("reading {key} broke off ({source}); reading it again");
                        if retry.wait().await {
                            continue;
                        }
                    }
                    return Err(DestinationError::Unreachable {
                        location: self.location(),
                        detail: format!(
                            "reading {key} broke off {attempts} times in a row ({source}); try again later"
                        ),
                    });
                }
                other => return other,
            }
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, DestinationError> {
        let full_key = self.full_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.options.bucket)
            .key(&full_key)
            .send()
            .await
        {
            Ok(output) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: output.content_length().unwrap_or(0).max(0) as u64,
            })),
            Err(e) => match classify(&e) {
                Failure::NotFound => Ok(None),
                other => Err(self.error("inspecting", key, other)),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, DestinationError> {
        let mut found = Vec::new();
        self.list_pages(prefix, None, |page, _| {
            for object in page.contents() {
                let Some(full) = object.key() else { continue };
                found.push(ObjectMeta {
                    key: self.relative_key(full).to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                });
            }
        })
        .await?;
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn folders(&self, prefix: &str) -> Result<Vec<String>, DestinationError> {
        let mut names = Vec::new();
        self.list_pages(prefix, Some("/"), |page, full_prefix| {
            for common in page.common_prefixes() {
                if let Some(name) = common.prefix().and_then(|p| p.strip_prefix(full_prefix)) {
                    names.push(name.trim_end_matches('/').to_string());
                }
            }
        })
        .await?;
        names.sort();
        Ok(names)
    }

    async fn unfinished_uploads(&self, prefix: &str) -> Result<Vec<String>, DestinationError> {
        let full_prefix = if self.options.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.options.prefix)
        };
        let mut keys = Vec::new();
        let (mut key_marker, mut upload_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.options.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_marker.take())
                .send()
                .await
                .map_err(|e| self.error("listing unfinished uploads under", prefix, classify(&e)))?;
            keys.extend(
                page.uploads()
                    .iter()
                    .filter_map(|upload| upload.key())
                    .map(|key| self.relative_key(key).to_string()),
            );
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            upload_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && upload_marker.is_none() {
                break;
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn settle(&self) {
        loop {
            let pending = std::mem::take(&mut *self.aborting.lock().expect("abort list lock poisoned"));
            if pending.is_empty() {
                return;
            }
            for task in pending {
                let _ = task.await;
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), DestinationError> {
        let full_key = self.full_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.options.bucket)
            .key(&full_key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify(&e) {
                Failure::NotFound => Ok(()),
                other => Err(self.error("removing", key, other)),
            },
        }
    }
}
