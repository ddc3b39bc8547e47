//! A real SMTP server for the tests: Python's `aiosmtpd` on loopback, writing each message it
//! accepts to a file (`<n>.eml`: the envelope and the login that authenticated, then the
//! message's headers and its body, decoded).
//! It is found in `.ci/venv` (which `.ci/run` makes) or the system's `python3`; outside CI a
//! test without it says it is skipped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

const SERVER: &str = r#"
import email, email.policy, os, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

out, port, login, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

class Handler:
    count = 0
    async def handle_DATA(self, server, session, envelope):
        Handler.count += 1
        path = os.path.join(out, "%d.eml" % Handler.count)
        who = session.auth_data.decode() if isinstance(session.auth_data, bytes) else "-"
        head = "X-Test-Login: %s\nX-Test-Mail-From: %s\nX-Test-Rcpt-To: %s\n" % (
            who, envelope.mail_from, ",".join(envelope.rcpt_tos))
        # Headers unfolded and decoded, the body decoded (lettre may quote-print long lines).
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        headers = "".join("%s: %s\n" % (k, v) for k, v in message.items())
        with open(path + ".tmp", "w") as f:
            f.write(head + headers + "\n" + message.get_content())
        os.rename(path + ".tmp", path)
        return "250 OK"

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == login
          and auth_data.password.decode() == password)
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)

kwargs = {}
if login:
    kwargs = dict(authenticator=authenticate, auth_required=True, auth_require_tls=False)
controller = Controller(Handler(), hostname="127.0.0.1", port=port, **kwargs)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
"#;

/// A Python that has `aiosmtpd`, or `None` (outside CI only: in CI it must be there).
pub fn python_with_aiosmtpd() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python3");
    let found = [venv, PathBuf::from("python3")].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "aiosmtpd is missing in CI: .ci/run installs it into .ci/venv"
        );
        eprintln!(
            "skipped: aiosmtpd is not installed (python3 -m venv .ci/venv && .ci/venv/bin/pip install aiosmtpd)"
        );
    }
    found
}

/// The running server; stopped when dropped.
pub struct SmtpServer {
    pub port: u16,
    dir: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl SmtpServer {
    /// Starts the server writing messages into `dir`; with `credentials`, AUTH is required
    /// (over plain text: it is loopback).
    pub fn start(python: &Path, dir: &Path, credentials: Option<(&str, &str)>) -> Self {
        std::fs::create_dir_all(dir).expect("create the mail folder");
        // aiosmtpd's controller needs its port up front.
        let port = super::ports::port_for_a_server();
        let (login, password) = credentials.unwrap_or(("", ""));
        let mut child = Command::new(python)
            .args(["-c", SERVER])
            .arg(dir)
            .arg(port.to_string())
            .args([login, password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start aiosmtpd");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("server stdout"))
            .read_line(&mut ready)
            .expect("read the server's first line");
        assert_eq!(ready.trim(), "ready", "aiosmtpd did not start");
        let stdin = child.stdin.take();
        Self {
            port,
            dir: dir.to_owned(),
            child,
            stdin,
        }
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<String> {
        (1..)
            .map(|n| self.dir.join(format!("{n}.eml")))
            .map_while(|path| std::fs::read_to_string(path).ok())
            .collect()
    }

    /// Waits for at least `count` messages.
    #[track_caller]
    pub fn wait_for(&self, count: usize) -> Vec<String> {
        super::wait_for(super::PATIENCE, &format!("{count} emails"), || {
            let messages = self.messages();
            (messages.len() >= count).then_some(messages)
        })
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        // Its standard input closing tells the server to stop.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
