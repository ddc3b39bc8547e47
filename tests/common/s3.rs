//! An S3 server for the tests: s3s-fs (objects as plain files under a temporary root) behind
//! s3s's service with one access key, on an ephemeral loopback port, in its own thread and
//! runtime so a test can stop and restart it (same port) for fault tests. Also writes a
//! `[remote.NAME]` table for it and starts a daemon with its credentials in the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result};

use super::{Daemon, TestHome, backupd_bin, wait_until_answering};

pub const ACCESS_KEY: &str = "backupd-test-key";
/// Distinctive, so a test can grep logs and messages for it.
pub const SECRET_KEY: &str = "Sekr1t-backupd-s3-test-9f3a77";
/// The bucket the server starts with.
pub const BUCKET: &str = "backups";

/// A running (or stopped) in-process S3 server.
pub struct S3Server {
    root: tempfile::TempDir,
    addr: SocketAddr,
    running: Option<Running>,
    /// Once the server has received this many bytes (all connections), it stops by itself.
    stop_after: Arc<AtomicU64>,
    /// Behave as servers that ignore `If-None-Match` do: overwrite instead of refusing.
    ignores_if_none_match: bool,
    calls: Arc<Calls>,
}

/// What the daemon asked of the server, for tests of how many requests something takes.
#[derive(Default)]
struct Calls {
    heads: AtomicU64,
    /// Manifest (`.json`) reads under way, and the most there were at once.
    manifest_reads: AtomicU64,
    most_manifest_reads: AtomicU64,
    /// Set: the first manifest read waits (up to [`GATE_PATIENCE`]) for a second one to
    /// start, so that reads made several at once are seen as such, never by chance.
    gate_manifest_reads: std::sync::atomic::AtomicBool,
    /// The key whose DELETE the server refuses, if any.
    refused_delete: std::sync::Mutex<Option<String>>,
}

/// How long a gated manifest read waits for a second one: reads made one after the other
/// never see one, and the test then fails after this long.
const GATE_PATIENCE: Duration = Duration::from_secs(10);

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl S3Server {
    /// Starts a server with the bucket [`BUCKET`] on `127.0.0.1`, an ephemeral port.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that ignores `If-None-Match` (as some S3-compatible servers did): a
    /// create-only put replaces what holds the name.
    pub fn start_ignoring_if_none_match() -> Self {
        Self::start_with(true)
    }

    fn start_with(ignores_if_none_match: bool) -> Self {
        let root = tempfile::Builder::new()
            .prefix("s3fs")
            .tempdir()
            .expect("s3 root");
        std::fs::create_dir(root.path().join(BUCKET)).expect("create the bucket");
        let mut server = Self {
            root,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            running: None,
            stop_after: Arc::new(AtomicU64::new(u64::MAX)),
            ignores_if_none_match,
            calls: Arc::default(),
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let listener = std::net::TcpListener::bind(self.addr).expect("bind the s3 server");
        listener.set_nonblocking(true).expect("nonblocking");
        self.addr = listener.local_addr().expect("s3 server address");
        let root = self.root.path().to_owned();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let received = Arc::new(AtomicU64::new(0));
        let limit_reached = Arc::new(tokio::sync::Notify::new());
        let stop_after = Arc::clone(&self.stop_after);
        let ignores_if_none_match = self.ignores_if_none_match;
        let calls = Arc::clone(&self.calls);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("s3 server runtime");
            runtime.block_on(async move {
                let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
                let mut builder = S3ServiceBuilder::new(IfNoneMatch {
                    fs,
                    ignored: ignores_if_none_match,
                    calls,
                });
                builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                let service = builder.build();
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let socket = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((socket, _)) => socket,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => break,
                        () = limit_reached.notified() => break,
                    };
                    let counted = Counted {
                        inner: socket,
                        received: Arc::clone(&received),
                        stop_after: Arc::clone(&stop_after),
                        limit_reached: Arc::clone(&limit_reached),
                    };
                    let connection = http
                        .serve_connection(TokioIo::new(counted), service.clone())
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
            });
            // Every connection still open is cut, as a crashed server would.
            runtime.shutdown_timeout(Duration::from_secs(2));
        });
        self.running = Some(Running { stop, thread });
    }

    /// How many `HEAD` requests of objects the server has answered.
    pub fn heads(&self) -> u64 {
        self.calls.heads.load(Ordering::SeqCst)
    }

    /// From now on, the first manifest read waits for a second one to start (see
    /// [`Calls::gate_manifest_reads`]); [`S3Server::most_manifest_reads_at_once`] tells.
    pub fn gate_manifest_reads(&self) {
        self.calls.gate_manifest_reads.store(true, Ordering::SeqCst);
    }

    /// The most manifest reads the server has had under way at once.
    pub fn most_manifest_reads_at_once(&self) -> u64 {
        self.calls.most_manifest_reads.load(Ordering::SeqCst)
    }

    /// From now on, refuses (`AccessDenied`) every DELETE of object `key` of [`BUCKET`], as a
    /// kill or a lost network stops a rotation between two deletions; `None`: refuses none.
    pub fn refuse_deletes_of(&self, key: Option<&str>) {
        *self.calls.refused_delete.lock().expect("refused deletes") = key.map(str::to_owned);
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where s3s-fs keeps the objects: `<root>/<bucket>/<key>`.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The file holding object `key` of [`BUCKET`].
    pub fn object(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    /// Copies object `from` to `to` behind the server's back, as another client's PUT would.
    pub fn copy_object(&self, from: &str, to: &str) {
        std::fs::copy(self.object(from), self.object(to)).expect("an object to copy");
    }

    /// Objects (regular files) under `prefix` of [`BUCKET`], sorted, relative to the prefix.
    pub fn objects(&self, prefix: &str) -> Vec<String> {
        let dir = self.root.path().join(BUCKET).join(prefix);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    // s3s-fs's own metadata files.
                    .filter(|n| !n.starts_with(".bucket-") && !n.starts_with(".metadata"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Stops accepting and cuts every connection; the data stays.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            running.thread.join().expect("s3 server thread");
        }
    }

    /// Starts again on the same port, with the same data (and no byte limit).
    pub fn restart(&mut self) {
        self.stop();
        self.stop_after.store(u64::MAX, Ordering::SeqCst);
        self.run();
    }

    /// Makes the server stop by itself, cutting every connection, once it has received
    /// `bytes` bytes since it (re)started: a server lost in the middle of an upload.
    pub fn stop_after_receiving(&self, bytes: u64) {
        self.stop_after.store(bytes, Ordering::SeqCst);
    }

    /// Whether the server is still serving (it stops by itself after its byte limit).
    pub fn is_serving(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|running| !running.thread.is_finished())
    }

    /// Whether the server received, checked and kept a SHA-256 (`x-amz-checksum-sha256`) for
    /// object `key`: s3s-fs refuses a mismatching one (BadDigest) and records a matching one
    /// beside the object.
    pub fn kept_sha256_of(&self, key: &str) -> bool {
        let info = self.root.path().join(format!(
            ".bucket-{}.object-{}.internal.json",
            base64_url(BUCKET.as_bytes()),
            base64_url(key.as_bytes())
        ));
        std::fs::read(&info)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .is_some_and(|v| v["checksum_sha256"].is_string())
    }

    /// A `[remote.NAME]` table for this server (path-style, plain http), objects under
    /// `prefix`, with `extra` lines appended.
    pub fn remote_table(&self, name: &str, prefix: &str, extra: &str) -> String {
        format!(
            "[remote.{name}]\nendpoint = \"{}\"\nallow_http = true\nregion = \"us-east-1\"\n\
             bucket = \"{BUCKET}\"\nprefix = \"{prefix}\"\nretries = 2\n\
             connect_timeout = \"2s\"\nrequest_timeout = \"20s\"\n{extra}",
            self.endpoint()
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The environment a daemon needs to reach `server` with `secret` (the right one is
/// [`SECRET_KEY`]); `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP` let `s3://` specs reach it too.
pub fn env_for(server: &S3Server, secret: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret.into()),
        ("AWS_ENDPOINT_URL".into(), server.endpoint()),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ]
}

impl TestHome {
    /// Appends `text` to the home's `backupd.toml` (creating the home).
    pub fn append_config(&self, text: &str) {
        use std::io::Write;
        std::fs::create_dir_all(self.home()).expect("create home");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home().join("backupd.toml"))
            .expect("open backupd.toml");
        writeln!(file, "{text}").expect("write backupd.toml");
    }

    /// Starts `backupd` with exactly `env` as its AWS environment (nothing inherited), and
    /// waits until it answers.
    pub fn start_daemon_with_env(&self, env: &[(String, String)]) -> Daemon {
        let stderr =
            std::fs::File::create(self.work().join("daemon.stderr")).expect("create daemon.stderr");
        let mut command = Command::new(backupd_bin());
        command
            .arg("--home")
            .arg(self.home())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for key in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ALLOW_HTTP",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        ] {
            command.env_remove(key);
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = command.spawn().expect("spawn backupd");
        let daemon = Daemon { child };
        wait_until_answering(&self.socket());
        daemon
    }
}

/// A connection that counts what it receives and, past the server's limit, stops the server.
struct Counted {
    inner: tokio::net::TcpStream,
    received: Arc<AtomicU64>,
    stop_after: Arc<AtomicU64>,
    limit_reached: Arc<tokio::sync::Notify>,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = (buf.filled().len() - before) as u64;
        let total = self.received.fetch_add(got, Ordering::SeqCst) + got;
        if total >= self.stop_after.load(Ordering::SeqCst) {
            self.limit_reached.notify_one();
            // Nothing more gets through: the server is gone.
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// URL-safe base64 without padding, as s3s-fs names its metadata files.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// s3s-fs, optionally ignoring `If-None-Match` on puts and completions as a server without
/// conditional writes does; every call the daemon makes is passed on.
struct IfNoneMatch {
    fs: s3s_fs::FileSystem,
    ignored: bool,
    calls: Arc<Calls>,
}

impl IfNoneMatch {
    /// Refuses the DELETE of the key the test named ([`S3Server::refuse_deletes_of`]).
    fn check_delete(&self, key: &str) -> S3Result<()> {
        let refused = self.calls.refused_delete.lock().expect("refused deletes");
        if refused.as_deref() == Some(key) {
            return Err(s3s::s3_error!(AccessDenied, "the test refuses this DELETE"));
        }
        Ok(())
    }

    /// Counts a manifest read under way for as long as `read` takes.
    async fn manifest_read<T>(&self, read: impl std::future::Future<Output = T>) -> T {
        let calls = &self.calls;
        let now = calls.manifest_reads.fetch_add(1, Ordering::SeqCst) + 1;
        calls.most_manifest_reads.fetch_max(now, Ordering::SeqCst);
        if calls.gate_manifest_reads.load(Ordering::SeqCst) {
            let deadline = tokio::time::Instant::now() + GATE_PATIENCE;
            while calls.most_manifest_reads.load(Ordering::SeqCst) < 2
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Once: the rest go as they come.
            calls.gate_manifest_reads.store(false, Ordering::SeqCst);
        }
        let result = read.await;
        calls.manifest_reads.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

#[async_trait::async_trait]
impl S3 for IfNoneMatch {
    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        if self.ignored {
            req.input.if_none_match = None;
        }
        self.fs.put_object(req).await
    }

    async fn complete_multipart_upload(
        &self,
        mut req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        if self.ignored {
            req.input.if_none_match = None;
        }
        self.fs.complete_multipart_upload(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        if req.input.key.ends_with(".json") {
            self.manifest_read(self.fs.get_object(req)).await
        } else {
            self.fs.get_object(req).await
        }
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.calls.heads.fetch_add(1, Ordering::SeqCst);
        self.fs.head_object(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.check_delete(&req.input.key)?;
        self.fs.delete_object(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        // s3s-fs lists no ETags; AWS, MinIO, Ceph, Garage and B2 do, as a `HEAD` gives them.
        let bucket = req.input.bucket.clone();
        let (method, uri, headers) = (req.method.clone(), req.uri.clone(), req.headers.clone());
        let (credentials, region) = (req.credentials.clone(), req.region.clone());
        let service = req.service.clone();
        let head = |key: String| S3Request {
            input: HeadObjectInput {
                bucket: bucket.clone(),
                key,
                ..Default::default()
            },
            method: method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
            extensions: Default::default(),
            credentials: credentials.clone(),
            region: region.clone(),
            service: service.clone(),
            trailing_headers: None,
        };
        let mut listed = self.fs.list_objects_v2(req).await?;
        for object in listed.output.contents.iter_mut().flatten() {
            let Some(key) = object.key.clone() else {
                continue;
            };
            if let Ok(answer) = self.fs.head_object(head(key)).await {
                object.e_tag = answer.output.e_tag;
            }
        }
        Ok(listed)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        // object_store deletes one object this way too.
        for object in &req.input.delete.objects {
            self.check_delete(&object.key)?;
        }
        self.fs.delete_objects(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.fs.copy_object(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }
}
