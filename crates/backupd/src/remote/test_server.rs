//! For unit tests: an s3s-fs server on a loopback port, in its own thread and runtime (the
//! integration tests' harness, `tests/common/s3.rs`, has the full one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use super::{CredentialSource, Credentials, RemoteConfig, ResolvedRemote};

pub const ACCESS_KEY: &str = "unit-key";
pub const SECRET_KEY: &str = "unit-secret-5c1e";
pub const BUCKET: &str = "unit";

#[derive(Debug)]
pub struct TestServer {
    pub root: tempfile::TempDir,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> Self {
        let root = tempfile::tempdir().expect("s3 root");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let dir = root.path().to_owned();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut builder =
                    S3ServiceBuilder::new(s3s_fs::FileSystem::new(dir).expect("s3s-fs"));
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
                    };
                    let connection = http
                        .serve_connection(TokioIo::new(socket), service.clone())
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        Self {
            root,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A remote on this server, objects under `prefix`, with `secret` as the secret key.
    pub fn remote(&self, prefix: &str, secret: &str) -> ResolvedRemote {
        let mut config = RemoteConfig::new("unit", BUCKET, prefix);
        config.endpoint = Some(format!("http://{}", self.addr));
        config.allow_http = true;
        config.retries = 1;
        config.part_size = super::MIN_PART_SIZE;
        ResolvedRemote {
            config,
            source: CredentialSource::Environment,
            credentials: Some(Credentials {
                key_id: ACCESS_KEY.into(),
                secret_key: secret.into(),
                token: None,
            }),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP proxy on loopback in front of a server that cuts the connection of the first `times`
/// requests whose request line starts with `line_start`, before a byte of them is forwarded:
/// a network that fails once. It sees only the first request of each connection.
#[derive(Debug)]
pub struct CuttingProxy {
    pub addr: SocketAddr,
    left: Arc<AtomicUsize>,
    times: usize,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CuttingProxy {
    pub fn start(upstream: SocketAddr, line_start: &str, times: usize) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let left = Arc::new(AtomicUsize::new(times));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (line_start, counter) = (line_start.as_bytes().to_vec(), Arc::clone(&left));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let socket = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((socket, _)) => socket,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => break,
                    };
                    let (line_start, left) = (line_start.clone(), Arc::clone(&counter));
                    tokio::spawn(async move {
                        let _ = forward(socket, upstream, &line_start, &left).await;
                    });
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        Self {
            addr,
            left,
            times,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Connections cut so far.
    pub fn cut(&self) -> usize {
        self.times - self.left.load(Ordering::SeqCst)
    }
}

async fn forward(
    mut client: tokio::net::TcpStream,
    upstream: SocketAddr,
    line_start: &[u8],
    left: &AtomicUsize,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buffer = [0; 4096];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = client.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let take_one = |n: usize| n.checked_sub(1);
    if head.starts_with(line_start)
        && left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take_one)
            .is_ok()
    {
        return Ok(()); // dropped: the connection is cut
    }
    let mut server = tokio::net::TcpStream::connect(upstream).await?;
    server.write_all(&head).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The integration tests' port helpers, as a file: a unit test cannot reach `tests/common`.
#[path = "../../../../tests/common/ports.rs"]
pub mod ports;
