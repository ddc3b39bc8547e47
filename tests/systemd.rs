//! backupd under a service manager: socket activation through `systemd-socket-activate`, which
//! binds the socket and hands it over as fd 3 with LISTEN_FDS/LISTEN_PID, and the notify
//! protocol read from a datagram socket the test binds itself, as systemd's NOTIFY_SOCKET.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{PATIENCE, TestHome, far_time, log_messages};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a notification may take: generous, as a loaded CI machine may be slow.
const NOTIFY_PATIENCE: Duration = Duration::from_secs(30);

const ACTIVATE: &str = "systemd-socket-activate";

/// Whether `systemd-socket-activate` can run here; says why the test is skipped if not.
fn activate_available() -> bool {
    match Command::new(ACTIVATE).arg("--version").output() {
        Ok(out) if out.status.success() => true,
        outcome => {
            // Printed (with --nocapture) rather than failing: .ci/run installs the tool.
            eprintln!("skipped: {ACTIVATE} can't run ({outcome:?}); it comes with systemd");
            false
        }
    }
}

/// The test's end of NOTIFY_SOCKET: every line of every datagram, in order of arrival.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    lines: Vec<String>,
    /// Lines before this one were looked at by an earlier `wait_for`.
    next: usize,
}

impl NotifySocket {
    fn bind(t: &TestHome) -> Self {
        let path = t.work().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Self {
            socket,
            path,
            lines: Vec::new(),
            next: 0,
        }
    }

    /// The first line after those already looked at for which `wanted` is true, reading
    /// datagrams until it comes.
    #[track_caller]
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + NOTIFY_PATIENCE;
        loop {
            while let Some(line) = self.lines.get(self.next) {
                self.next += 1;
                if wanted(line) {
                    return line.clone();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {what} within {NOTIFY_PATIENCE:?}; got {:?}",
                self.lines
            );
            self.socket.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0; 4096];
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8(buf[..n].to_vec()).unwrap();
                    self.lines.extend(text.lines().map(str::to_owned));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("can't read the notify socket: {e}"),
            }
        }
    }
}

/// Starts backupd through `systemd-socket-activate`, which listens at the test home's socket
/// and starts backupd on the first connection; `env` is passed on to backupd with `-E` (the
/// tool passes nothing else of its environment but PATH, HOME, USER and TERM).
fn spawn_activated(t: &TestHome, env: &[String]) -> common::Daemon {
    std::fs::create_dir_all(t.home()).unwrap();
    let socket = t.socket().display().to_string();
    let mut wrapper = vec![ACTIVATE.to_owned(), "--listen".to_owned(), socket.clone()];
    for var in env {
        wrapper.extend(["-E".to_owned(), var.clone()]);
    }
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let daemon = t.spawn_daemon_via(&wrapper, &["--socket", &socket]);
    wait_for_file(&t.socket());
    daemon
}

#[track_caller]
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_activated_daemon_serves_notifies_and_leaves_the_socket_to_the_manager() {
    if !activate_available() {
        return;
    }
    let t = TestHome::new();
    let mut notify = NotifySocket::bind(&t);
    let env = [format!("NOTIFY_SOCKET={}", notify.path.display())];
    let mut daemon = spawn_activated(&t, &env);
    let socket = t.socket().display().to_string();

    // This first connection is what makes systemd-socket-activate start backupd.
    assert_eq!(t.ctl(&["--socket", &socket, "list"]).ok(), "");
    notify.wait_for("READY=1", |l| l == "READY=1");
    let status = notify.wait_for("a status", |l| l.starts_with("STATUS="));
    assert_eq!(status, "STATUS=idle; nothing scheduled");

    // A new schedule changes the status line.
    std::fs::create_dir(t.work().join("src")).unwrap();
    let daily = far_time();
    t.ctl(&[
        "--socket", &socket, "create", "--source", "src", "--name", "docs", "--daily", &daily,
    ])
    .ok();
    notify.wait_for("the next run in the status", |l| {
        l.starts_with("STATUS=idle; next run docs ")
    });

    assert_eq!(
        t.ctl(&["--socket", &socket, "stop"]).ok(),
        "backupd stopped\n"
    );
    assert!(daemon.wait().success());
    notify.wait_for("STOPPING=1", |l| l == "STOPPING=1");
    assert!(
        t.socket().exists(),
        "the socket file belongs to the service manager and stays"
    );
    assert_eq!(log_messages(&t.log()).last().unwrap(), "backupd stopped");
}

#[test]
fn an_activated_daemon_pings_the_watchdog_when_asked() {
    if !activate_available() {
        return;
    }
    let t = TestHome::new();
    let mut notify = NotifySocket::bind(&t);
    let env = [
        format!("NOTIFY_SOCKET={}", notify.path.display()),
        "WATCHDOG_USEC=200000".to_owned(),
    ];
    let mut daemon = spawn_activated(&t, &env);
    t.ctl(&["list"]).ok();
    notify.wait_for("READY=1", |l| l == "READY=1");
    // One every 100 ms: three come well within the patience.
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1", |l| l == "WATCHDOG=1");
    }
    t.ctl(&["stop"]).ok();
    assert!(daemon.wait().success());
}
