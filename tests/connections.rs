//! The connection edge of a real daemon: stalled clients cannot lock the daemon's user out,
//! an unfinished line and a silent connection are closed in time, the bytes of unfinished
//! lines are bounded across connections, and `socket_group` admits that group's members only.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Client, PATIENCE, TestHome};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn write_config(t: &TestHome, text: &str) {
    std::fs::create_dir_all(t.home()).unwrap();
    std::fs::write(t.home().join("backupd.toml"), text).unwrap();
}

/// A `hello` on a new connection, retried while the daemon says it is full.
fn hello_within(t: &TestHome, bound: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut stream = UnixStream::connect(t.socket()).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        // Turned away, the connection may be closed before the request is written.
        let _ = stream.write_all(b"{\"cmd\":\"hello\"}\n");
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let answer: Value = serde_json::from_str(answer.lines().next().unwrap_or("null")).unwrap();
        if answer["ok"] == true {
            return started.elapsed();
        }
        if answer != Value::Null {
            assert_eq!(answer["error"]["code"], "too_many_connections", "{answer}");
        }
        assert!(
            started.elapsed() < bound,
            "no hello answered within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stalled_half_lines_do_not_lock_out_the_daemons_own_user() {
    let t = TestHome::new();
    // Long timeouts: only the caps and the reserved slots can let the hello through in time.
    write_config(&t, "line_timeout = \"10m\"\nidle_timeout = \"10m\"\n");
    let _daemon = t.start_daemon();
    let mut stalled = Vec::new();
    for _ in 0..600 {
        let mut stream = UnixStream::connect(t.socket()).unwrap();
        // A connection turned away may be closed before this write.
        let _ = stream.write_all(b"{\"cmd\":\"hel");
        stalled.push(stream);
    }
    // Beyond the per-uid cap and the reserved slots, the daemon says it is full, at once.
    let last = stalled.last_mut().unwrap();
    last.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = String::new();
    last.read_to_string(&mut answer).unwrap();
    let answer: Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(answer["error"]["code"], "too_many_connections", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per user"),
        "{answer}"
    );
    // Reserved slots held by stalled clients are freed within seconds; a hello gets in then.
    let waited = hello_within(&t, PATIENCE);
    assert!(waited < PATIENCE, "{waited:?}");
    // stop also gets through, and the daemon stops while the stalled clients still wait.
    let mut client = Client::connect(&t.socket()).unwrap();
    let stop = client.request(r#"{"cmd":"stop"}"#);
    assert_eq!(stop["ok"], true, "{stop}");
    drop(stalled);
}

#[test]
fn a_reserved_slot_serves_only_short_requests() {
    let t = TestHome::new();
    write_config(
        &t,
        "line_timeout = \"10m\"\nidle_timeout = \"10m\"\nmax_connections_per_uid = 2\n",
    );
    let _daemon = t.start_daemon();
    let _held: Vec<_> = (0..2)
        .map(|_| {
            let mut stream = UnixStream::connect(t.socket()).unwrap();
            stream.write_all(b"{").unwrap();
            stream
        })
        .collect();
    // The daemon's own uid over its cap: a reserved slot, for one short request.
    let mut client = Client::connect(&t.socket()).unwrap();
    let run = client.request(r#"{"id":5,"cmd":"run","sources":["/nonexistent"]}"#);
    assert_eq!(run["error"]["code"], "too_many_connections", "{run}");
    assert_eq!(run["id"], 5, "{run}");
    assert_eq!(client.read_to_end(), "", "one request per reserved slot");
    let mut client = Client::connect(&t.socket()).unwrap();
    assert_eq!(client.request(r#"{"cmd":"status"}"#)["ok"], true);
}

#[test]
fn backupctl_says_why_when_the_daemon_has_no_room() {
    // Stalled reserved slots are freed after 2 s: an attempt only counts if it ran sooner.
    for _attempt in 0..5 {
        let t = TestHome::new();
        write_config(
            &t,
            "line_timeout = \"10m\"\nidle_timeout = \"10m\"\nmax_connections_per_uid = 1\n",
        );
        let _daemon = t.spawn_daemon(&[]);
        // No connection before ours (not even a hello), so that none is still closing.
        let deadline = Instant::now() + PATIENCE;
        while !t.socket().exists() {
            assert!(Instant::now() < deadline, "backupd never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        // The one shared slot and the four reserved ones, all stalled; connections are
        // accepted in order, so backupctl's comes after them.
        let held: Vec<_> = (0..5)
            .map(|_| {
                let mut stream = UnixStream::connect(t.socket()).unwrap();
                stream.write_all(b"{").unwrap();
                stream
            })
            .collect();
        let out = t.ctl(&["list"]);
        if started.elapsed() > Duration::from_millis(1500) {
            continue;
        }
        assert_eq!(out.code(), 1, "{}", out.stderr());
        assert!(
            out.stderr().contains("per user") && out.stderr().contains("try again later"),
            "{}",
            out.stderr()
        );
        drop(held);
        return;
    }
    panic!("no attempt ran within 1.5 s");
}

#[test]
fn an_unfinished_line_is_closed_with_a_clear_error_and_a_silent_connection_is_closed() {
    let t = TestHome::new();
    write_config(&t, "line_timeout = \"1s\"\nidle_timeout = \"2s\"\n");
    let _daemon = t.start_daemon();
    let mut client = Client::connect(&t.socket()).unwrap();
    let started = Instant::now();
    client.send_bytes(b"{\"cmd\":\"list\"");
    let answer = client.read_response();
    let waited = started.elapsed();
    assert_eq!(answer["error"]["code"], "request_timeout", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not finished within 1s"),
        "{answer}"
    );
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert_eq!(client.read_to_end(), "", "then the connection is closed");

    // A finished request resets the clock; then silence ends the connection without a word.
    let mut client = Client::connect(&t.socket()).unwrap();
    assert_eq!(client.request(r#"{"cmd":"hello"}"#)["ok"], true);
    let started = Instant::now();
    assert_eq!(client.read_to_end(), "");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < PATIENCE,
        "{waited:?}"
    );
    assert!(t.log().contains("not finished within 1s"), "{}", t.log());
}

/// The daemon's resident memory, from `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// 300 clients each write almost 1 MiB and no newline, as fast as the daemon reads: 300 MiB
/// offered, of which the daemon may hold its 64 MiB budget (and a chunk per connection).
/// Returns the bytes offered and the daemon's peak resident memory meanwhile.
fn wave_of_unfinished_lines(t: &TestHome, pid: u32) -> (usize, u64) {
    const CLIENTS: usize = 300;
    const LINE: usize = 1024 * 1024 - 1024;
    let mut clients: Vec<(UnixStream, usize)> = (0..CLIENTS)
        .map(|_| {
            let stream = UnixStream::connect(t.socket()).unwrap();
            stream.set_nonblocking(true).unwrap();
            (stream, 0)
        })
        .collect();
    let chunk = vec![b'x'; 64 * 1024];
    let mut peak = 0;
    let mut last_progress = Instant::now();
    while last_progress.elapsed() < Duration::from_secs(3) {
        for (stream, sent) in &mut clients {
            if *sent < LINE {
                let end = chunk.len().min(LINE - *sent);
                if let Ok(n) = stream.write(&chunk[..end]) {
                    *sent += n;
                    last_progress = Instant::now();
                }
            }
        }
        peak = peak.max(rss_bytes(pid));
        std::thread::sleep(Duration::from_millis(5));
    }
    // The daemon still answers its own user meanwhile.
    hello_within(t, PATIENCE);
    (clients.iter().map(|(_, sent)| sent).sum(), peak)
}

#[test]
fn unfinished_lines_of_many_clients_stay_within_the_memory_budget() {
    let t = TestHome::new();
    write_config(
        &t,
        // Lines that wait for the budget wait until the line timeout ends the stalemate.
        "line_timeout = \"4s\"\nidle_timeout = \"10m\"\nmax_connections_per_uid = 400\n",
    );
    let daemon = t.start_daemon();
    let before = rss_bytes(daemon.pid());
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
            .unwrap()
            .count()
    };
    let idle_fds = fds();
    // Twice: the second wave finds the memory the first one freed, and takes no more.
    for wave in 1..=2 {
        let (offered, peak) = wave_of_unfinished_lines(&t, daemon.pid());
        let growth = peak.saturating_sub(before);
        eprintln!("wave {wave}: offered {offered} bytes; rss before {before}, peak {peak}");
        assert!(
            offered > 100 << 20,
            "the clients offered only {offered} bytes"
        );
        assert!(
            growth < 160 << 20,
            "wave {wave}: the daemon grew by {growth} bytes"
        );
        // Until the daemon has closed this wave's connections, the next would find no room.
        let deadline = Instant::now() + PATIENCE;
        while fds() > idle_fds + 2 {
            assert!(Instant::now() < deadline, "the connections stay open");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    hello_within(&t, PATIENCE);
    let after = rss_bytes(daemon.pid());
    eprintln!("rss after the clients left: {after}");
    // Given back: far below the waves' peak (about 70 MiB above the start), not only bounded.
    assert!(
        after < before + (32 << 20),
        "{after} bytes after the clients left, {before} before"
    );
}

/// A group in /etc/group that `nobody` (uid 65534) does not belong to, with its gid.
fn a_group_nobody_lacks() -> (String, u32) {
    std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let gid: u32 = fields.get(2)?.parse().ok()?;
            let members = fields.get(3).copied().unwrap_or("");
            (gid != 0 && gid != 65534 && !members.split(',').any(|m| m == "nobody"))
                .then(|| (fields[0].to_owned(), gid))
        })
        .next()
        .expect("a group in /etc/group")
}

/// Sends `input` over the socket as uid 65534 with the given supplementary groups (through
/// setpriv and socat), returning what came back and whether socat succeeded.
fn as_nobody(socket: &std::path::Path, groups: Option<u32>, input: &[u8]) -> (String, bool) {
    let groups = match groups {
        Some(gid) => format!("--groups={gid}"),
        None => "--clear-groups".to_owned(),
    };
    let mut child = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", &groups, "socat"])
        .arg(format!("-t{}", PATIENCE.as_secs()))
        .arg("-")
        .arg(format!("UNIX-CONNECT:{}", socket.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

#[test]
fn socket_group_admits_its_members_and_only_them() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to connect as another user");
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = TestHome::new();
    let (group, gid) = a_group_nobody_lacks();
    let socket = t.work().join("backupd.sock");
    let _daemon = t.spawn_daemon(&[
        "--socket-group",
        &group,
        "--socket",
        socket.to_str().unwrap(),
    ]);
    common::wait_until_answering(&socket);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
    // The folder on the way is open to all; only the socket's mode and the peer check stand.
    std::fs::set_permissions(t.work(), PermissionsExt::from_mode(0o755)).unwrap();

    let (answer, ok) = as_nobody(&socket, Some(gid), b"{\"id\":1,\"cmd\":\"hello\"}\n");
    assert!(ok, "{answer}");
    let answer: Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(answer["ok"], true, "a member is served: {answer}");

    // A non-member cannot even open the socket...
    let (answer, ok) = as_nobody(&socket, None, b"{\"cmd\":\"hello\"}\n");
    assert!(!ok && answer.is_empty(), "{answer}");
    // ...and when the file is opened to everyone, the daemon refuses it itself.
    std::fs::set_permissions(&socket, PermissionsExt::from_mode(0o666)).unwrap();
    let (answer, _) = as_nobody(&socket, None, b"{\"id\":2,\"cmd\":\"list\"}\n");
    let answer: Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(answer["error"]["code"], "permission_denied", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("not in group {gid}")),
        "{answer}"
    );
}

/// `backupctl --socket SOCKET ARGS` as uid 65534 with the given supplementary groups, from
/// `/` (the test's folder is not theirs): its exit code and stderr.
fn backupctl_as_nobody(
    socket: &std::path::Path,
    groups: Option<u32>,
    args: &[&str],
) -> (i32, String) {
    let groups = match groups {
        Some(gid) => format!("--groups={gid}"),
        None => "--clear-groups".to_owned(),
    };
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", &groups])
        .arg(common::backupctl_bin())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .current_dir("/")
        .env("BACKUPD_HOME", "/nonexistent/backupd-test-home")
        .env_remove("BACKUPD_SOCKET")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_socket_group_that_could_not_reach_the_socket_in_the_home_is_refused_naming_socket() {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let t = TestHome::new();
    // As the daemon creates it.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(t.home())
        .unwrap();
    let gid = std::fs::metadata(t.home()).unwrap().gid().to_string();
    let check = std::process::Command::new(common::backupd_bin())
        .args([
            "--home",
            t.home().to_str().unwrap(),
            "--socket-group",
            &gid,
            "--check-config",
        ])
        .output()
        .unwrap();
    let expected = format!(
        "socket_group: the group's members could not reach the socket {}: it is inside {} \
         (mode 0700), which that group may not enter; put the socket in a folder they can enter \
         with --socket PATH",
        t.socket().display(),
        t.home().display()
    );
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");

    let mut daemon = t.spawn_daemon(&["--socket-group", &gid]);
    assert_eq!(daemon.wait().code(), Some(1));
    assert!(
        t.daemon_stderr().contains(&expected),
        "{}",
        t.daemon_stderr()
    );
    assert!(!t.socket().exists(), "no socket is left behind");
    assert_eq!(
        std::fs::metadata(t.home()).unwrap().mode() & 0o777,
        0o700,
        "the home stays private"
    );

    // A socket outside the home is the admin's to open to the group.
    let socket = t.work().join("backupd.sock");
    let _daemon = t.spawn_daemon(&["--socket-group", &gid, "--socket", socket.to_str().unwrap()]);
    common::wait_until_answering(&socket);
}

#[test]
fn a_socket_outside_the_home_in_a_folder_shut_to_the_group_is_warned_of() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = TestHome::new();
    std::fs::set_permissions(t.work(), PermissionsExt::from_mode(0o755)).unwrap();
    let private = t.work().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, PermissionsExt::from_mode(0o700)).unwrap();
    let gid = std::fs::metadata(&private).unwrap().gid().to_string();
    let socket = private.join("backupd.sock");
    let args = ["--socket-group", &gid, "--socket", socket.to_str().unwrap()];
    let check_config = || {
        let out = std::process::Command::new(common::backupd_bin())
            .args(["--home", t.home().to_str().unwrap()])
            .args(args)
            .arg("--check-config")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "a warning, not a refusal: {stderr}"
        );
        stderr
    };
    let warning = format!(
        "socket_group: the group's members may not reach the socket {}: {}, on the way to it \
         (mode 0700, group {gid}), lets neither that group nor others in; unless an ACL lets \
         them in",
        socket.display(),
        private.display()
    );
    let stderr = check_config();
    assert!(stderr.contains(&format!("warning: {warning}")), "{stderr}");

    // The daemon starts (an ACL may let the group in) and says it in its log.
    let daemon = t.spawn_daemon(&args);
    common::wait_until_answering(&socket);
    common::wait_for(Duration::from_secs(30), "the warning in the log", || {
        t.log().contains(&warning).then_some(())
    });
    drop(daemon);

    // Opened to the group, it is not warned of.
    std::fs::set_permissions(&private, PermissionsExt::from_mode(0o710)).unwrap();
    let stderr = check_config();
    assert!(!stderr.contains("may not reach"), "{stderr}");
}

#[test]
fn a_user_the_socket_turns_away_is_told_so_not_to_start_a_daemon() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to connect as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let t = TestHome::new();
    let (group, gid) = a_group_nobody_lacks();
    let socket = t.work().join("backupd.sock");
    let _daemon = t.spawn_daemon(&[
        "--socket-group",
        &group,
        "--socket",
        socket.to_str().unwrap(),
    ]);
    common::wait_until_answering(&socket);
    std::fs::set_permissions(t.work(), PermissionsExt::from_mode(0o755)).unwrap();

    let (code, stderr) = backupctl_as_nobody(&socket, Some(gid), &["status"]);
    assert_eq!(code, 0, "a member is served: {stderr}");

    let denied = format!("may not use backupd's socket {}: ", socket.display());
    for command in ["status", "list", "start", "stop"] {
        let (code, stderr) = backupctl_as_nobody(&socket, None, &[command]);
        assert_eq!(
            code, 1,
            "{command}: a permission problem, not a missing daemon: {stderr}"
        );
        assert!(stderr.contains(&denied), "{command}: {stderr}");
        assert!(stderr.contains("socket_group"), "{command}: {stderr}");
        assert!(!stderr.contains("backupctl start"), "{command}: {stderr}");
        assert!(!stderr.contains("started it"), "{command}: {stderr}");
    }
    // Still the one daemon, serving its members.
    let (code, stderr) = backupctl_as_nobody(&socket, Some(gid), &["status"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_member_kept_out_by_a_folder_is_told_which_not_to_join_the_group() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to connect as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let t = TestHome::new();
    let (group, gid) = a_group_nobody_lacks();
    std::fs::set_permissions(t.work(), PermissionsExt::from_mode(0o755)).unwrap();
    // The administrator's own folder, outside the home, shut to everyone else.
    let private = t.work().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, PermissionsExt::from_mode(0o700)).unwrap();
    let socket = private.join("backupd.sock");
    let _daemon = t.spawn_daemon(&[
        "--socket-group",
        &group,
        "--socket",
        socket.to_str().unwrap(),
    ]);
    common::wait_until_answering(&socket);

    let (code, stderr) = backupctl_as_nobody(&socket, Some(gid), &["status"]);
    assert_eq!(code, 1, "{stderr}");
    let shut = format!(
        "this user may not enter {}, on the way to it",
        private.display()
    );
    assert!(stderr.contains(&shut), "{stderr}");
    assert!(!stderr.contains("add you to its socket_group"), "{stderr}");
}

#[test]
fn an_unknown_socket_group_stops_the_daemon_at_start() {
    let t = TestHome::new();
    let mut daemon = t.spawn_daemon(&["--socket-group", "no-such-group-here"]);
    assert!(!daemon.wait().success());
    assert!(
        t.daemon_stderr()
            .contains("no group named \"no-such-group-here\""),
        "{}",
        t.daemon_stderr()
    );
    assert!(!t.socket().exists(), "no socket is left behind");
}
