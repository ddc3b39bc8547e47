//! A real S3 server black box: moto's `moto_server` on loopback, for what the in-process
//! s3s-fs server lacks (missing buckets, ListMultipartUploads, object lock), and `aws` (awscli)
//! as the standard client that reads what backupd uploaded. Both come from `.ci/venv` (which
//! `.ci/run` makes); outside CI a test without them says it is skipped. moto checks neither
//! credentials nor checksums: tests of those use s3s-fs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `.ci/venv/bin/<tool>`, or `None` (outside CI only: in CI it must be there).
pub fn venv_tool(tool: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".ci/venv/bin")
        .join(tool);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{tool} is missing in CI: .ci/run installs it into .ci/venv"
    );
    eprintln!(
        "skipped: {tool} is not installed (python3 -m venv .ci/venv && .ci/venv/bin/pip install 'moto[server]==5.2.5' awscli)"
    );
    None
}

/// A running `moto_server`; killed when dropped.
pub struct MotoServer {
    pub port: u16,
    child: Child,
}

impl MotoServer {
    /// Starts one on a free loopback port and waits until it answers; `None` when moto is not
    /// installed (outside CI).
    pub fn start() -> Option<Self> {
        let moto = venv_tool("moto_server")?;
        let port = super::ports::port_for_a_server();
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let server = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.http("GET", "/", &[]).is_none() {
            assert!(Instant::now() < deadline, "moto_server never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket`; with `object_lock`, with object lock enabled (and so versioning).
    pub fn create_bucket(&self, bucket: &str, object_lock: bool) {
        let headers: &[(&str, &str)] = if object_lock {
            &[("x-amz-bucket-object-lock-enabled", "true")]
        } else {
            &[]
        };
        let status = self.http("PUT", &format!("/{bucket}"), headers);
        assert_eq!(status, Some(200), "creating bucket {bucket}");
    }

    /// One unsigned request (moto does not check signatures); the status, or `None` when
    /// nothing answers.
    fn http(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n",
            self.port
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer.split_whitespace().nth(1)?.parse().ok()
    }

    /// A `[remote.NAME]` table for `bucket` on this server, objects under `prefix`.
    pub fn remote_table(&self, name: &str, bucket: &str, prefix: &str, extra: &str) -> String {
        format!(
            "[remote.{name}]\nendpoint = \"{}\"\nallow_http = true\nregion = \"us-east-1\"\n\
             bucket = \"{bucket}\"\nprefix = \"{prefix}\"\nretries = 1\n\
             connect_timeout = \"2s\"\nrequest_timeout = \"30s\"\n{extra}",
            self.endpoint()
        )
    }

    /// The environment a daemon (or `aws`) needs to talk to it: any keys do.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
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

    /// `aws --endpoint-url … ARGS` (awscli), or `None` when it is not installed.
    pub fn aws(&self, args: &[&str]) -> Option<Output> {
        let aws = venv_tool("aws")?;
        let output = Command::new(aws)
            .arg("--endpoint-url")
            .arg(self.endpoint())
            .args(args)
            .envs(self.env())
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .stdin(Stdio::null())
            .output()
            .expect("run aws");
        Some(output)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = start + text[start..].find(close)?;
    Some(&text[start..end])
}
