//! Shared test fixtures: an S3-protocol server in this process, the private database servers
//! of the test environment, temporary destinations and a runner for the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use cairn::storage::{Destination, LocalDestination, S3Destination, S3Options};
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput, CompleteMultipartUploadOutput,
    CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteObjectInput, DeleteObjectOutput, ETag,
    GetObjectInput, GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput, HeadObjectOutput,
    ListMultipartUploadsInput, ListMultipartUploadsOutput, ListObjectsV2Input, ListObjectsV2Output, MultipartUpload,
    PutObjectInput, PutObjectOutput, UploadPartInput, UploadPartOutput,
};
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

pub const S3_ACCESS_KEY: &str = "cairn-test-access";
pub const S3_SECRET_KEY: &str = "cairn-test-secret-key-never-printed";

/// s3s-fs with the guarantees a real store gives and it lacks: conditional puts are atomic (one
/// writer at a time decides and writes), a read never mixes two versions of an object (s3s-fs
/// reads data and ETag separately), and each part's `Content-MD5` is checked.
///
/// Buckets whose name starts with `flaky` answer the first [`FLAKY_FAILURES`] PUTs of each
/// object (and each part) with `503 SlowDown`, as a throttling store does.
///
/// Buckets whose name starts with `lossy` apply the first conditional PUT of each object and
/// then answer `503`, as when a connection resets after the store applied a request: the
/// client's retry then meets its own write.
struct StrictStore {
    inner: s3s_fs::FileSystem,
    writes: tokio::sync::RwLock<()>,
    attempts: WriteAttempts,
    lost_answers: std::sync::Mutex<std::collections::HashSet<String>>,
    cuts: DownloadCuts,
    deletes: DeleteBudget,
    /// Multipart uploads neither completed nor aborted: (bucket, upload id) → key. s3s-fs does
    /// not list them, so the wrapper does.
    open_uploads: std::sync::Mutex<std::collections::BTreeMap<(String, String), String>>,
}

/// Buckets whose name starts with `refusing` refuse every write of a copy's data file (a key
/// with `/data/` in it) while taking everything else, as a store that fails part way through a
/// copy does.
fn refuses_data(bucket: &str, key: &str) -> bool {
    bucket.starts_with("refusing") && key.contains("/data/")
}

/// Per bucket, how many more deletes the server carries out before it refuses every one (see
/// [`S3Server::limit_deletes`]); buckets without an entry delete freely.
type DeleteBudget = Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>;

/// Per bucket, how many times each object's download is cut off half way (see
/// [`S3Server::cut_downloads`]), and how many cuts each `bucket/key` has had.
#[derive(Default, Clone)]
struct DownloadCuts {
    per_bucket: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
    done: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
}

impl DownloadCuts {
    /// `true` when this download of `bucket/key` is to break off.
    fn cut(&self, bucket: &str, key: &str) -> bool {
        let Some(&times) = self.per_bucket.lock().unwrap().get(bucket) else {
            return false;
        };
        let mut done = self.done.lock().unwrap();
        let count = done.entry(format!("{bucket}/{key}")).or_insert(0);
        *count += 1;
        *count <= times
    }
}

/// Write attempts seen by the server, per `bucket/key` (and `bucket/key#part`).
type WriteAttempts = Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>;

/// How many times a flaky bucket refuses each write before accepting it.
pub const FLAKY_FAILURES: u32 = 2;

impl StrictStore {
    /// Counts a write attempt; `true` when a flaky bucket should refuse it.
    fn throttle(&self, bucket: &str, what: String) -> bool {
        let mut attempts = self.attempts.lock().unwrap();
        let count = attempts.entry(format!("{bucket}/{what}")).or_insert(0);
        *count += 1;
        bucket.starts_with("flaky") && *count <= FLAKY_FAILURES
    }
}

#[async_trait::async_trait]
impl S3 for StrictStore {
    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        // cairn sends Content-MD5 with every write so the store refuses what it did not receive
        // intact; the test store insists, so a write without it fails a test.
        if req.input.content_md5.is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "the test server requires Content-MD5 on every PUT"
            ));
        }
        if self.throttle(&req.input.bucket, req.input.key.clone()) {
            return Err(s3_error!(SlowDown, "throttled by the test server"));
        }
        if refuses_data(&req.input.bucket, &req.input.key) {
            return Err(s3_error!(AccessDenied, "data writes are refused by the test server"));
        }
        let conditional = req.input.if_match.is_some() || req.input.if_none_match.is_some();
        let object = format!("{}/{}", req.input.bucket, req.input.key);
        let lose_answer =
            req.input.bucket.starts_with("lossy") && conditional && self.lost_answers.lock().unwrap().insert(object);
        let _serialized = self.writes.write().await;
        let response = self.inner.put_object(req).await?;
        if lose_answer {
            return Err(s3_error!(
                ServiceUnavailable,
                "the answer was lost after the write was applied"
            ));
        }
        Ok(response)
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        if req.input.content_md5.is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "the test server requires Content-MD5 on every part"
            ));
        }
        if self.throttle(
            &req.input.bucket,
            format!("{}#{}", req.input.key, req.input.part_number),
        ) {
            return Err(s3_error!(SlowDown, "throttled by the test server"));
        }
        if refuses_data(&req.input.bucket, &req.input.key) {
            return Err(s3_error!(AccessDenied, "data writes are refused by the test server"));
        }
        let expected = req.input.content_md5.clone();
        let response = self.inner.upload_part(req).await?;
        if let Some(expected) = expected {
            use base64::Engine as _;
            let digest = base64::engine::general_purpose::STANDARD
                .decode(expected.as_bytes())
                .map_err(|_| s3_error!(InvalidDigest))?;
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            let stored = match &response.output.e_tag {
                Some(ETag::Strong(s)) | Some(ETag::Weak(s)) => s.clone(),
                None => String::new(),
            };
            if stored != hex {
                return Err(s3_error!(BadDigest, "Content-MD5 of the part does not match"));
            }
        }
        Ok(response)
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        // s3s-fs streams the body after returning; reading it whole under the lock keeps the
        // response one version. Test objects are small enough for that.
        let cut = self.cuts.cut(&req.input.bucket, &req.input.key);
        let _reading = self.writes.read().await;
        let mut response = self.inner.get_object(req).await?;
        if let Some(body) = response.output.body.take() {
            use futures::TryStreamExt;
            let chunks: Vec<bytes::Bytes> = body.try_collect().await.map_err(|_| s3_error!(InternalError))?;
            let data = bytes::Bytes::from(chunks.concat());
            response.output.body = Some(if cut {
                // Half the body, then the connection breaks: the client sees fewer bytes than
                // the Content-Length it was promised.
                // The pause lets the headers and the first half reach the client first.
                use futures::StreamExt;
                let half = data.slice(..data.len() / 2);
                s3s::dto::StreamingBlob::wrap(futures::stream::once(async move { Ok(half) }).chain(
                    futures::stream::once(async {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "cut by the test server",
                        ))
                    }),
                ))
            } else {
                s3s::dto::StreamingBlob::from(s3s::Body::from(data))
            });
        }
        Ok(response)
    }
    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.inner.head_object(req).await
    }
    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.inner.head_bucket(req).await
    }
    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.inner.list_objects_v2(req).await
    }
    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        if let Some(left) = self.deletes.lock().unwrap().get_mut(&req.input.bucket) {
            if *left == 0 {
                return Err(s3_error!(AccessDenied, "deletes are refused by the test server"));
            }
            *left -= 1;
        }
        let _serialized = self.writes.write().await;
        self.inner.delete_object(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.inner.create_multipart_upload(req).await?;
        if let Some(id) = &response.output.upload_id {
            self.open_uploads.lock().unwrap().insert((bucket, id.clone()), key);
        }
        Ok(response)
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let upload = (req.input.bucket.clone(), req.input.upload_id.clone());
        let _serialized = self.writes.write().await;
        let response = self.inner.complete_multipart_upload(req).await?;
        self.open_uploads.lock().unwrap().remove(&upload);
        Ok(response)
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let upload = (req.input.bucket.clone(), req.input.upload_id.clone());
        let response = self.inner.abort_multipart_upload(req).await?;
        self.open_uploads.lock().unwrap().remove(&upload);
        Ok(response)
    }
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let prefix = req.input.prefix.clone().unwrap_or_default();
        let uploads: Vec<MultipartUpload> = self
            .open_uploads
            .lock()
            .unwrap()
            .iter()
            .filter(|((bucket, _), key)| *bucket == req.input.bucket && key.starts_with(&prefix))
            .map(|((_, id), key)| MultipartUpload {
                key: Some(key.clone()),
                upload_id: Some(id.clone()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(req.input.bucket),
            prefix: Some(prefix),
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

/// The S3 server shared by every test of this binary.
pub struct S3Server {
    pub endpoint: String,
    root: PathBuf,
    attempts: WriteAttempts,
    cuts: DownloadCuts,
    deletes: DeleteBudget,
}

static S3_SERVER: OnceLock<S3Server> = OnceLock::new();

/// Starts the S3 server on first use; it checks SigV4 signatures with the test credentials.
pub fn s3_server() -> &'static S3Server {
    S3_SERVER.get_or_init(|| {
        let root = tempfile::Builder::new()
            .prefix("cairn-s3-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let (sender, receiver) = std::sync::mpsc::channel();
        let served_root = root.clone();
        let attempts = WriteAttempts::default();
        let served_attempts = attempts.clone();
        let cuts = DownloadCuts::default();
        let served_cuts = cuts.clone();
        let deletes = DeleteBudget::default();
        let served_deletes = deletes.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("S3 server runtime");
            runtime.block_on(async move {
                use hyper_util::rt::{TokioExecutor, TokioIo};
                let store = StrictStore {
                    inner: s3s_fs::FileSystem::new(&served_root).expect("s3s-fs root"),
                    writes: tokio::sync::RwLock::new(()),
                    attempts: served_attempts,
                    lost_answers: Default::default(),
                    cuts: served_cuts,
                    deletes: served_deletes,
                    open_uploads: Default::default(),
                };
                let mut builder = s3s::service::S3ServiceBuilder::new(store);
                builder.set_auth(s3s::auth::SimpleAuth::from_single(S3_ACCESS_KEY, S3_SECRET_KEY));
                let service = builder.build();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind S3 server");
                sender
                    .send(listener.local_addr().expect("local address"))
                    .expect("report address");
                let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        continue;
                    };
                    let connection = http
                        .serve_connection(TokioIo::new(socket), service.clone())
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
            });
        });
        let address = receiver.recv().expect("S3 server did not start");
        S3Server {
            endpoint: format!("http://{address}"),
            root,
            attempts,
            cuts,
            deletes,
        }
    })
}

impl S3Server {
    /// How many times the server was asked to write `bucket/what` (`what` is a key, or
    /// `key#part` for a multipart part).
    pub fn write_attempts(&self, bucket: &str, what: &str) -> u32 {
        self.attempts
            .lock()
            .unwrap()
            .get(&format!("{bucket}/{what}"))
            .copied()
            .unwrap_or(0)
    }

    /// From now on, `bucket` carries out `deletes` more deletes and then refuses every one, as a
    /// run cut short there would stop deleting (`None`: deletes as usual again).
    pub fn limit_deletes(&self, bucket: &str, deletes: Option<u32>) {
        let mut budget = self.deletes.lock().unwrap();
        match deletes {
            Some(n) => budget.insert(bucket.to_string(), n),
            None => budget.remove(bucket),
        };
    }

    /// From now on, the first `times` downloads of each object of `bucket` break off half way
    /// (`u32::MAX`: every download); `0` ends it.
    pub fn cut_downloads(&self, bucket: &str, times: u32) {
        self.cuts.per_bucket.lock().unwrap().insert(bucket.to_string(), times);
        self.cuts
            .done
            .lock()
            .unwrap()
            .retain(|key, _| !key.starts_with(&format!("{bucket}/")));
    }

    /// A plain SDK client of the server, for doing what cairn never does (leaving an upload
    /// open, as a killed run would).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                S3_ACCESS_KEY,
                S3_SECRET_KEY,
                None,
                None,
                "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates an empty bucket with a unique name.
    pub fn new_bucket(&self, hint: &str) -> String {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bucket = format!("{hint}-{}-{n}", std::process::id());
        std::fs::create_dir_all(self.root.join(&bucket)).expect("create bucket folder");
        bucket
    }

    /// Options reaching `bucket`/`prefix` with the test credentials.
    pub fn options(&self, bucket: &str, prefix: &str) -> S3Options {
        let mut options = S3Options::new(bucket, prefix);
        options.endpoint = Some(self.endpoint.clone());
        options.region = Some("us-east-1".into());
        options.path_style = true;
        options.access_key_id = Some(S3_ACCESS_KEY.into());
        options.secret_access_key = Some(cairn::secret::Secret::new(S3_SECRET_KEY));
        options.part_size = cairn::storage::s3::MIN_PART_SIZE;
        options.max_attempts = 2;
        options
    }

    /// A destination on a fresh bucket.
    pub async fn destination(&self, hint: &str) -> Arc<dyn Destination> {
        let bucket = self.new_bucket(hint);
        self.destination_at(&bucket, "cairn/prefix").await
    }

    /// A destination on `bucket`/`prefix`.
    pub async fn destination_at(&self, bucket: &str, prefix: &str) -> Arc<dyn Destination> {
        Arc::new(
            S3Destination::connect(self.options(bucket, prefix))
                .await
                .expect("S3 destination"),
        )
    }

    /// The `s3://` URL the CLI takes for `bucket`.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("s3://{bucket}/{prefix}?endpoint={}&region=us-east-1", self.endpoint)
    }
}

/// A local destination in a fresh temporary folder (kept alive by the returned guard).
pub fn local_destination() -> (tempfile::TempDir, Arc<dyn Destination>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let destination: Arc<dyn Destination> = Arc::new(LocalDestination::new(dir.path().join("backups")));
    (dir, destination)
}

/// Both kinds of destination, for tests that must hold on each.
pub async fn every_destination(hint: &str) -> Vec<(Option<tempfile::TempDir>, Arc<dyn Destination>)> {
    let (dir, local) = local_destination();
    vec![(Some(dir), local), (None, s3_server().destination(hint).await)]
}

fn required_env(name: &str, what: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with scripts/test.sh, which installs and starts a private {what}, \
             or set {name} to the URL of one"
        )
    })
}

/// URL of the private PostgreSQL (wal_level=logical) of the test environment.
pub fn postgres_url() -> String {
    required_env("CAIRN_TEST_PG_URL", "PostgreSQL server (wal_level=logical)")
}

/// The CA that signed the private servers' TLS certificates.
pub fn test_ca() -> String {
    required_env(
        "CAIRN_TEST_CA",
        "PostgreSQL and MariaDB with TLS on and the CA that signed their certificates",
    )
}

/// URL of the private MariaDB (ROW binlog) of the test environment.
pub fn mysql_url() -> String {
    required_env("CAIRN_TEST_MYSQL_URL", "MariaDB server (log_bin, binlog_format=ROW)")
}

/// The cairn binary with a clean environment: no inherited CAIRN_ or AWS_ settings, its own
/// lock folder, and no instance-metadata lookups.
pub fn cairn(lock_dir: &Path) -> Command {
    clean_environment(Command::new(env!("CARGO_BIN_EXE_cairn")), lock_dir)
}

/// [`cairn`] with the test S3 server's credentials in the standard AWS variables.
pub fn cairn_s3(lock_dir: &Path) -> Command {
    let mut command = cairn(lock_dir);
    command
        .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY);
    command
}

/// [`cairn`] started by a shell that first runs `setup` (`ulimit -f 20`, say); arguments added
/// to the command go to cairn.
pub fn cairn_under(lock_dir: &Path, setup: &str) -> Command {
    let mut command = Command::new("bash");
    command.args([
        "-c",
        &format!("{setup}; exec \"$0\" \"$@\""),
        env!("CARGO_BIN_EXE_cairn"),
    ]);
    clean_environment(command, lock_dir)
}

fn clean_environment(mut command: Command, lock_dir: &Path) -> Command {
    for (key, _) in std::env::vars() {
        if key.starts_with("CAIRN_") || key.starts_with("AWS_") || key == "PGPASSWORD" || key == "MYSQL_PWD" {
            command.env_remove(key);
        }
    }
    command
        .current_dir(lock_dir)
        .env("CAIRN_LOCK_DIR", lock_dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("NO_COLOR", "1");
    command
}

/// A cairn started in the background, killed when the test ends however it ends: a failing
/// test must not leave an applier writing to the shared test servers.
pub struct Background(pub Option<std::process::Child>);

impl Background {
    pub fn spawn(command: &mut Command) -> Self {
        Background(Some(command.spawn().expect("start cairn")))
    }

    /// SIGKILL, and wait for it to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for it to end by itself; its output.
    pub fn wait_with_output(mut self) -> Output {
        self.0
            .take()
            .expect("running")
            .wait_with_output()
            .expect("wait for cairn")
    }
}

impl Background {
    /// Whether it has ended already.
    pub fn has_ended(&mut self) -> bool {
        self.0
            .as_mut()
            .is_none_or(|child| child.try_wait().ok().flatten().is_some())
    }
}

/// Waits until `cairn replica status` shows `applier` holding the lease of `source` on `target`
/// (running, and named with its pid), for up to a minute: a debug build starting beside the rest of
/// the suite can take seconds, and a test that went on after a fixed sleep could start a second
/// applier that takes the lease and never ends.
pub async fn wait_for_applier(locks: &Path, config: &Path, target: &str, source: &str, applier: &mut Background) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(!applier.has_ended(), "the applier ended by itself");
        let (code, out, err) = run(cairn(locks)
            .arg("--config")
            .arg(config)
            .args(["replica", "status", "--target", target, "--source", source, "--json"]));
        assert_eq!(code, 0, "{out}\n{err}");
        let states: serde_json::Value = serde_json::from_str(&out).unwrap();
        let pid = applier.0.as_ref().map(|child| child.id()).unwrap_or(0);
        let holder = states[0]["applier"].as_str().unwrap_or_default();
        if states[0]["running"] == true && holder.ends_with(&format!("pid {pid}")) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no applier runs a minute after it was started: {states}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command and returns (exit code, stdout, stderr).
pub fn run(command: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = command.output().expect("run cairn");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Every file below `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
