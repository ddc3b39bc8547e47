//! The daemon's life: its home, its socket, one daemon per socket, stale sockets, a corrupt
//! schedule file, and graceful shutdown by `stop`, SIGTERM and SIGINT.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Client, TestHome, log_messages};
use std::os::unix::fs::PermissionsExt;

#[test]
fn the_daemon_creates_its_home_and_a_private_socket() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    for dir in ["backups", "logs"] {
        assert!(t.home().join(dir).is_dir(), "{dir} created");
    }
    let mode = std::fs::metadata(t.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let t = TestHome::new();
    let mut first = t.start_daemon();
    let mut second = t.spawn_daemon(&[]);
    let status = second.wait();
    assert_eq!(status.code(), Some(3), "exit 3: another daemon runs");
    let expected = format!("backupd already running (socket {})", t.socket().display());
    assert!(
        t.daemon_stderr().contains(&expected),
        "{}",
        t.daemon_stderr()
    );
    assert!(first.is_running());
    common::wait_until_answering(&t.socket());
}

#[test]
fn a_stale_socket_is_removed_and_replaced() {
    let t = TestHome::new();
    std::fs::create_dir_all(t.home()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(t.socket()).unwrap());
    assert!(t.socket().exists(), "a dead socket file is left behind");
    let _daemon = t.start_daemon();
    let messages = log_messages(&t.log());
    assert!(
        messages.contains(&format!("Removed stale socket {}", t.socket().display())),
        "{messages:?}"
    );
}

#[test]
fn a_corrupt_schedule_file_stops_the_start_and_is_left_untouched() {
    let t = TestHome::new();
    std::fs::create_dir_all(t.home()).unwrap();
    let file = t.home().join("schedules.json");
    std::fs::write(&file, b"{\"version\":1,\"schedules\":[").unwrap();
    let mut daemon = t.spawn_daemon(&[]);
    assert!(!daemon.wait().success());
    assert!(
        t.daemon_stderr().contains(&file.display().to_string()),
        "the error names the file: {}",
        t.daemon_stderr()
    );
    // Said once, with its cause once.
    assert_eq!(
        t.daemon_stderr().lines().count(),
        1,
        "{}",
        t.daemon_stderr()
    );
    assert_eq!(
        t.daemon_stderr().matches("at line 1 column").count(),
        1,
        "{}",
        t.daemon_stderr()
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"{\"version\":1,\"schedules\":["
    );
    assert!(!t.socket().exists(), "no socket left behind");
    // `backupctl start` reports the reason too.
    let out = t.ctl(&["start"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr().contains("corrupt"), "{}", out.stderr());
    assert_eq!(out.stderr().matches("at line 1 column").count(), 1);
}

fn shuts_down_gracefully_on(signal: &str) {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    let mut daemon = t.start_daemon();
    t.ctl(&["create", &format!("src;{};kept", common::far_time())])
        .ok();
    // An idle client connection must not hold the shutdown up.
    let mut idle = Client::connect(&t.socket()).unwrap();
    daemon.signal(signal);
    assert!(daemon.wait().success(), "exit 0 after {signal}");
    assert_eq!(idle.read_to_end(), "", "the idle connection is closed");
    assert!(!t.socket().exists());
    assert_eq!(log_messages(&t.log()).last().unwrap(), "backupd stopped");
    let _again = t.start_daemon();
    assert!(t.ctl(&["list"]).ok().contains("kept"));
}

#[test]
fn sigterm_shuts_down_gracefully() {
    shuts_down_gracefully_on("TERM");
}

#[test]
fn sigint_shuts_down_gracefully() {
    shuts_down_gracefully_on("INT");
}

#[test]
fn stop_answers_then_exits() {
    let t = TestHome::new();
    let mut daemon = t.start_daemon();
    let mut client = Client::connect(&t.socket()).unwrap();
    let answer = client.request(r#"{"id":"bye","cmd":"stop"}"#);
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["id"], "bye");
    // What a client waits for: this process to end, and the socket file it bound to go.
    assert_eq!(answer["data"]["pid"], daemon.pid());
    assert_eq!(answer["data"]["removes_socket"], true);
    assert!(daemon.wait().success());
    assert!(
        !t.socket().exists(),
        "a daemon started by hand removes its socket"
    );
}

#[test]
fn stop_gives_up_on_a_stopped_daemon_after_the_answer_timeout() {
    let t = TestHome::new();
    let mut daemon = t.start_daemon();
    daemon.signal("STOP");
    let out = t.ctl_impatient(&["stop"], 1);
    daemon.signal("CONT");
    assert_eq!(out.code(), 3, "{}", out.stderr());
    assert!(
        out.stderr()
            .contains("did not answer within 1s: is it stopped or hung?"),
        "{}",
        out.stderr()
    );
    // Resumed, it reads the `stop` waiting on the connection and shuts down as asked.
    assert!(daemon.wait().success());
    assert!(!t.socket().exists());
}

#[test]
fn start_gives_up_on_a_daemon_that_does_not_answer_after_the_answer_timeout() {
    let t = TestHome::new();
    let mut daemon = t.start_daemon();
    daemon.signal("STOP");
    let out = t.ctl_impatient(&["start"], 1);
    daemon.signal("CONT");
    assert_eq!(out.code(), 3, "{}", out.stderr());
    assert!(
        out.stderr()
            .contains("did not answer within 1s: is it stopped or hung?"),
        "{}",
        out.stderr()
    );
    // No second daemon was started beside it.
    t.ctl(&["status"]).ok();
    assert_eq!(
        t.ctl(&["--json", "status"])
            .ok()
            .matches(&format!("\"pid\":{}", daemon.pid()))
            .count(),
        1
    );
    daemon.signal("TERM");
    assert!(daemon.wait().success());
}

#[test]
fn log_level_controls_what_is_logged_and_events_also_go_to_stderr() {
    let t = TestHome::new();
    let mut quiet = t.spawn_daemon(&["--log-level", "error"]);
    common::wait_until_answering(&t.socket());
    t.ctl(&["list"]).ok();
    assert_eq!(t.ctl(&["delete", "4"]).code(), 1);
    quiet.signal("TERM");
    assert!(quiet.wait().success());
    assert_eq!(
        log_messages(&t.log()),
        ["Error: can't find schedule at index 4"],
        "info lines are filtered out at level error"
    );
    assert!(
        t.daemon_stderr()
            .contains("] Error: can't find schedule at index 4\n"),
        "{}",
        t.daemon_stderr()
    );

    let mut bad = t.spawn_daemon(&["--log-level", "loud"]);
    assert!(!bad.wait().success());
    assert!(t.daemon_stderr().contains("invalid log level"));
}

#[test]
fn another_user_is_refused_even_through_an_open_socket() {
    // Needs a second user to connect as, which only root can become; CI runs as root.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    if uid != 0 {
        eprintln!("skipped: needs root to connect as another user");
        return;
    }
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    // Open every door the file system has, so only the daemon's uid check stands.
    for dir in [t.work(), t.home().as_path()] {
        std::fs::set_permissions(dir, PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(t.socket(), PermissionsExt::from_mode(0o666)).unwrap();
    // The id is echoed only if the daemon read the request before refusing it, which is also
    // what keeps a client that is still writing from failing with EPIPE.
    let answer = answer_as_nobody(&t.socket(), b"{\"id\":7,\"cmd\":\"list\"}\n");
    assert_eq!(answer["error"]["code"], "permission_denied", "{answer}");
    assert_eq!(answer["id"], 7, "{answer}");
    // A client that closes without a request is refused all the same.
    let silent = answer_as_nobody(&t.socket(), b"");
    assert_eq!(silent["error"]["code"], "permission_denied", "{silent}");
    assert_eq!(silent["id"], serde_json::Value::Null, "{silent}");
    assert!(
        log_messages(&t.log())
            .iter()
            .any(|l| l.starts_with("Error: refused connection from uid 65534"))
    );
}

/// Sends `input` over the socket as uid 65534 (through setpriv and socat) and parses the one
/// line that comes back.
fn answer_as_nobody(socket: &std::path::Path, input: &[u8]) -> serde_json::Value {
    use std::io::Write;
    let mut child = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "socat"])
        // After its input ends, socat waits this long for the answer (default 0.5 s, too
        // short on a loaded machine).
        .arg(format!("-t{}", common::PATIENCE.as_secs()))
        .arg("-")
        .arg(format!("UNIX-CONNECT:{}", socket.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
}

#[test]
fn start_detaches_from_the_terminal_session_and_the_working_directory() {
    let t = TestHome::new();
    let _stop = common::StopOnDrop(&t);
    // A relative home, as a user might type it.
    let out = t
        .ctl_command(&["--home", "home", "start"])
        .env_remove("BACKUPD_HOME")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t.home().join("logs/backupd.log").exists(),
        "the home is where the user meant"
    );
    // Find the daemon by the socket path backupctl handed it.
    let socket = t.socket().display().to_string();
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(&socket))
        })
        .expect("the daemon process");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        std::path::Path::new("/")
    );
    // Its own session: the session id is its own pid (field 6 of /proc/PID/stat).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let session = after_name.split(' ').nth(3).unwrap();
    assert_eq!(session, pid);
}

#[test]
fn stale_partials_are_removed_at_start_in_every_schedule_destination() {
    let t = TestHome::new();
    let elsewhere = common::stopped_with_a_schedule_elsewhere(&t);
    // What a daemon killed mid-write leaves, next to files that must stay.
    std::fs::create_dir_all(&elsewhere).unwrap();
    let partial = elsewhere.join("far_20250101_000000.tar.gz.partial");
    std::fs::write(&partial, b"half").unwrap();
    std::fs::write(elsewhere.join("notes.txt"), b"mine").unwrap();
    std::fs::write(elsewhere.join("thesis.partial"), b"mine too").unwrap();
    let _restarted = t.start_daemon();
    assert!(!partial.exists());
    assert!(elsewhere.join("notes.txt").exists());
    assert!(
        elsewhere.join("thesis.partial").exists(),
        "only partial archives are ours"
    );
    assert!(log_messages(&t.log()).contains(&format!(
        "Removed stale partial archive {}",
        partial.display()
    )));
}

#[test]
fn the_log_level_changes_while_the_daemon_runs() {
    let t = TestHome::new();
    let _quiet = t.spawn_daemon(&["--log-level", "error"]);
    common::wait_until_answering(&t.socket());
    t.ctl(&["list"]).ok();
    assert!(!t.log().contains("Show schedules list"), "{}", t.log());
    assert_eq!(t.ctl(&["log-level", "info"]).ok(), "log level: info\n");
    t.ctl(&["list"]).ok();
    assert!(t.log().contains("Show schedules list"), "{}", t.log());
    let bad = t.ctl(&["log-level", "loud"]);
    assert_eq!(bad.code(), 1);
    assert!(
        bad.stderr().contains("invalid log level"),
        "{}",
        bad.stderr()
    );
    t.ctl(&["log-level", "error"]).ok();
    let before = t.log().matches("Show schedules list").count();
    t.ctl(&["list"]).ok();
    assert_eq!(t.log().matches("Show schedules list").count(), before);
}
