//! moto's S3 server (`moto_server`, Python) on a loopback port, for what s3s-fs lacks:
//! `ListMultipartUploads`. moto checks neither signatures nor checksums, so the tests speak
//! plain unsigned HTTP to it to set up and look, and test nothing about credentials with it.
//! Installed by `.ci/run` into `.ci/venv` (`pip install 'moto[server]==5.2.5'`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server`; killed when dropped.
pub struct MotoServer {
    child: Child,
    pub port: u16,
}

/// `moto_server` of `.ci/venv`, else of the `PATH`, or `None` (outside CI only: in CI it must
/// be there).
pub fn moto_server() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/moto_server");
    let found = [venv, PathBuf::from("moto_server")]
        .into_iter()
        .find(|bin| {
            Command::new(bin)
                .arg("--help")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "moto_server is missing in CI: .ci/run installs it into .ci/venv"
        );
        eprintln!(
            "skipped: moto_server is not installed (.ci/venv/bin/pip install 'moto[server]==5.2.5')"
        );
    }
    found
}

impl MotoServer {
    /// Starts `bin` on a free loopback port and waits until it answers.
    pub fn start(bin: &Path, log: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(log).expect("create the moto log");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn moto_server");
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One unsigned request; the status and the body.
    pub fn request(&self, method: &str, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )
        .expect("send to moto");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read from moto");
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.request("PUT", &format!("/{bucket}"));
        assert_eq!(status, 200, "{body}");
    }

    /// Starts a multipart upload of `key` and leaves it open, as a crash would; its id.
    pub fn start_upload(&self, bucket: &str, key: &str) -> String {
        let (status, body) = self.request("POST", &format!("/{bucket}/{key}?uploads"));
        assert_eq!(status, 200, "{body}");
        between(&body, "<UploadId>", "</UploadId>")
            .unwrap_or_else(|| panic!("no upload id in {body}"))
            .to_owned()
    }

    /// The keys of the multipart uploads in progress in `bucket`, sorted.
    pub fn uploads(&self, bucket: &str) -> Vec<String> {
        let (status, body) = self.request("GET", &format!("/{bucket}?uploads"));
        assert_eq!(status, 200, "{body}");
        let mut keys = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("<Upload>") {
            rest = &rest[start..];
            let end = rest.find("</Upload>").expect("a closed Upload");
            keys.push(
                between(&rest[..end], "<Key>", "</Key>")
                    .expect("a Key")
                    .to_owned(),
            );
            rest = &rest[end..];
        }
        keys.sort();
        keys
    }

    /// A `[remote.NAME]` table for this server (path-style, plain http).
    pub fn remote_table(&self, name: &str, bucket: &str, prefix: &str) -> String {
        format!(
            "[remote.{name}]\nendpoint = \"{}\"\nallow_http = true\nregion = \"us-east-1\"\n\
             bucket = \"{bucket}\"\nprefix = \"{prefix}\"\nretries = 2\n\
             connect_timeout = \"2s\"\nrequest_timeout = \"20s\"\n",
            self.endpoint()
        )
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = start + text[start..].find(close)?;
    Some(&text[start..end])
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
