//! A destination in an S3 bucket (AWS or any S3-compatible store).
//!
//! Every PUT and every part carries `Content-MD5`, so the store rejects what it did not receive
//! intact. Objects above the part size go up as multipart uploads whose parts are sent in
//! parallel; memory stays at part size × (concurrency + 1) whatever the object's size. Throttling
//! and 5xx answers are retried with exponential backoff by the SDK's standard retry strategy.
//! Credentials come from the destination's settings or the standard AWS chain (environment,
//! profile, instance role) and never appear in messages.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
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

/// What went wrong with one request, before it is given the object's name.
enum Failure {
    NotFound,
    Precondition(String),
    NoBucket,
    Denied(String),
    Unreachable(String),
    /// No credentials could be found (environment, profile, instance role).
    NoCredentials(String),
    /// 5xx after the SDK's retries.
    Unavailable(String),
    Other(String),
}

/// The errors an SDK error is made of, outermost first.
fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// One line saying why a request never got an answer: the operating system's words when there
/// are some (connection refused, host not found), else the innermost cause — never the SDK's
/// debug rendering.
fn transport_detail(err: &(dyn std::error::Error + 'static)) -> String {
    if let Some(io) = causes(err).find_map(|e| e.downcast_ref::<std::io::Error>()) {
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                format!("{io}: nothing accepts connections there; check the endpoint and that the store runs")
            }
            std::io::ErrorKind::TimedOut => format!("{io}: check the endpoint, the network and firewalls"),
            _ => io.to_string(),
        };
    }
    causes(err)
        .last()
        .map(|e| e.to_string())
        .unwrap_or_else(|| err.to_string())
}

fn classify<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ConstructionFailure(_) = err {
        let chain: Vec<_> = causes(err).collect();
        if let Some(credentials) = chain
            .iter()
            .find_map(|e| e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>())
        {
            use aws_credential_types::provider::error::CredentialsError;
            return match credentials {
                CredentialsError::ProviderTimedOut(_) => Failure::Unreachable(transport_detail(err)),
                CredentialsError::CredentialsNotLoaded(_) => Failure::NoCredentials(
                    "none were found in the environment, an AWS profile or the instance's metadata".into(),
                ),
                _ => Failure::NoCredentials(
                    causes(credentials)
                        .last()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| credentials.to_string()),
                ),
            };
        }
        return Failure::Unreachable(transport_detail(err));
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or("");
    // The store's own words when it sent an error document.
    let detail = match (code, status) {
        (code, Some(status)) if !code.is_empty() => {
            format!("{code} (HTTP {status}): {}", err.message().unwrap_or("no message"))
        }
        (_, Some(status)) => format!("HTTP {status}"),
        (_, None) => transport_detail(err),
    };
    match (status, code) {
        (_, "NoSuchBucket") => Failure::NoBucket,
        (_, "NoSuchKey") | (Some(404), _) => Failure::NotFound,
        (Some(412), _) | (Some(409), "ConditionalRequestConflict") | (_, "PreconditionFailed") => {
            Failure::Precondition(if code.is_empty() {
                "precondition failed".into()
            } else {
                code.to_string()
            })
        }
        (Some(401 | 403), _)
        | (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "ExpiredToken") => {
            Failure::Denied(if code.is_empty() {
                format!("HTTP {}", status.unwrap_or(403))
            } else {
                code.to_string()
            })
        }
        (Some(500..=599), _) => Failure::Unavailable(detail),
        _ => Failure::Other(detail),
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

    async fn put_single(
        &self,
        key: &str,
        data: Bytes,
        condition: Option<&PutCondition>,
    ) -> Result<PutOutcome, DestinationError> {
        let full_key = self.full_key(key)?;
        let digest = md5::compute(&data);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.options.bucket)
            .key(&full_key)
            .content_md5(base64::engine::general_purpose::STANDARD.encode(digest.0))
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

    async fn put_multipart(
        &self,
        key: &str,
        first_parts: Vec<Bytes>,
        mut body: ObjectStream,
        mut hasher: md5::Context,
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
                        hasher.consume(&part);
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
                md5: format!("{:x}", hasher.compute()),
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

    async fn get_versioned_once(&self, key: &str, limit: u64) -> Result<Option<VersionedObject>, DestinationError> {
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

    async fn abort_upload(&self, full_key: &str, upload_id: &str) {
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

    async fn upload_part(
        &self,
        key: &str,
        full_key: &str,
        upload_id: &str,
        part_number: i32,
        data: Bytes,
    ) -> Result<CompletedPart, DestinationError> {
        let digest = md5::compute(&data);
        let output = self
            .client
            .upload_part()
            .bucket(&self.options.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_md5(base64::engine::general_purpose::STANDARD.encode(digest.0))
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

/// A multipart upload in progress. Dropped before it finished — its writer was cancelled, say
/// because another worker of the copy failed — it aborts the upload in the background, so its
/// parts do not stay in the bucket; [`Destination::settle`] waits for that.
struct OpenUpload {
    destination: S3Destination,
    full_key: String,
    upload_id: String,
    finished: bool,
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

/// Chunks of a download waiting for their reader.
const RESUME_CHANNEL_CHUNKS: usize = 4;

/// One download that survives broken connections: each break is followed by a ranged GET from
/// the first byte not yet delivered, of the same version of the object (`If-Match`).
struct Resumable {
    destination: S3Destination,
    key: String,
    full_key: String,
    etag: Option<String>,
    length: Option<u64>,
}

impl Resumable {
    async fn pump(self, body: ByteStream, sender: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) {
        let mut body = Some(body);
        let mut offset = 0u64;
        let mut failures = 0u32;
        let attempts = self.destination.options.max_attempts.max(1);
        loop {
            let Some(current) = body.as_mut() else {
                match self.reopen(offset).await {
                    Ok(reopened) => body = Some(reopened),
                    Err(Failure::Unreachable(detail) | Failure::Unavailable(detail)) if failures < attempts => {
                        failures += 1;
                        tracing::debug!("downloading {} again from byte {offset} failed: {detail}", self.key);
                        tokio::time::sleep(resume_backoff(failures)).await;
                    }
                    Err(failure) => {
                        let error = self.destination.error("downloading", &self.key, failure);
                        let _ = sender.send(Err(std::io::Error::other(error))).await;
                        return;
                    }
                }
                continue;
            };
            match current.try_next().await {
                Ok(Some(chunk)) => {
                    offset += chunk.len() as u64;
                    failures = 0;
                    if sender.send(Ok(chunk)).await.is_err() {
                        return; // the reader is gone
                    }
                }
                Ok(None) => return,
                Err(e) if self.length == Some(offset) => {
                    tracing::debug!("{}: the connection broke after the last byte: {e}", self.key);
                    return;
                }
                Err(e) => {
                    failures += 1;
                    if failures >= attempts {
                        let error = DestinationError::Unreachable {
                            location: self.destination.location(),
                            detail: format!(
                                "downloading {} broke off at byte {offset} {failures} times in a row ({e}); try again later",
                                self.key
                            ),
                        };
                        let _ = sender.send(Err(std::io::Error::other(error))).await;
                        return;
                    }
                    tracing::debug!("downloading {} broke off at byte {offset} ({e}); resuming", self.key);
                    body = None;
                    tokio::time::sleep(resume_backoff(failures)).await;
                }
            }
        }
    }

    async fn reopen(&self, offset: u64) -> Result<ByteStream, Failure> {
        let output = self
            .destination
            .client
            .get_object()
            .bucket(&self.destination.options.bucket)
            .key(&self.full_key)
            .range(format!("bytes={offset}-"))
            .set_if_match(self.etag.clone())
            .send()
            .await
            .map_err(|e| match classify(&e) {
                Failure::Precondition(_) => Failure::Other(format!(
                    "the object was replaced while it was read (it had ETag {})",
                    self.etag.as_deref().unwrap_or("?")
                )),
                other => other,
            })?;
        Ok(output.body)
    }
}

fn resume_backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64 << failures.min(6))
}

fn join_part(
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
async fn read_part(body: &mut ObjectStream, size: u64, key: &str) -> Result<Bytes, DestinationError> {
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
        let mut hasher = md5::Context::new();
        hasher.consume(&first);
        if (first.len() as u64) < part_size {
            return self.put_single(key, first, None).await;
        }
        // Exactly one part's worth so far: only a second read tells whether more follows.
        let second = read_part(&mut body, part_size, key).await?;
        if second.is_empty() {
            return self.put_single(key, first, None).await;
        }
        hasher.consume(&second);
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
        let mut failures = 0;
        loop {
            match self.get_versioned_once(key, limit).await {
                Err(DestinationError::Body { source, .. }) if failures + 1 < attempts => {
                    failures += 1;
                    tracing::debug!("reading {key} broke off ({source}); reading it again");
                    tokio::time::sleep(resume_backoff(failures)).await;
                }
                Err(DestinationError::Body { source, .. }) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_parse_with_options() {
        let options =
            S3Options::from_url("s3://bkt/a/b/?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1").unwrap();
        assert_eq!(options.bucket, "bkt");
        assert_eq!(options.prefix, "a/b");
        assert_eq!(options.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(options.region.as_deref(), Some("eu-west-1"));
        assert!(options.path_style, "an explicit endpoint defaults to path-style");
        let plain = S3Options::from_url("s3://bkt").unwrap();
        assert_eq!(plain.prefix, "");
        assert!(!plain.path_style);
        assert!(
            S3Options::from_url("s3:///x")
                .unwrap_err()
                .contains("bucket name is missing")
        );
        assert!(
            S3Options::from_url("s3://b?colour=red")
                .unwrap_err()
                .contains("unknown URL parameter")
        );
    }

    #[test]
    fn debug_output_hides_the_secret_key() {
        let mut options = S3Options::new("b", "");
        options.secret_access_key = Some(Secret::new("wJalrXUtnFEMI"));
        assert!(!format!("{options:?}").contains("wJalr"));
    }
}
