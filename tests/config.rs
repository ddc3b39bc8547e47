//! The daemon's configuration file: checked at start, naming file, line and reason; its job
//! defaults fill what a run leaves unset; flags win over it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{TestHome, backupd_bin};
use std::path::Path;
use std::process::Command;

fn write_config(t: &TestHome, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(t.home()).unwrap();
    let path = t.home().join("backupd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn check_config(home: &Path) -> std::process::Output {
    Command::new(backupd_bin())
        .arg("--home")
        .arg(home)
        .arg("--check-config")
        .output()
        .unwrap()
}

#[test]
fn check_config_names_the_file_the_line_and_the_reason() {
    let t = TestHome::new();
    let path = write_config(&t, "max_jobs = 2\n[defaults]\nlevel = 42\n");
    let out = check_config(&t.home());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "backupd: config file {}, line 3: ",
            path.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("invalid gzip level 42"), "{stderr}");
    assert!(stderr.contains("(in `level = 42`)"), "{stderr}");
    // A daemon does not start on it either, and leaves no socket behind.
    let mut daemon = t.spawn_daemon(&[]);
    assert!(!daemon.wait().success());
    assert!(
        t.daemon_stderr().contains("line 3"),
        "{}",
        t.daemon_stderr()
    );
    assert!(!t.socket().exists());

    write_config(&t, "max_jobs = 2\n[defaults]\ncompression = \"zstd\"\n");
    let out = check_config(&t.home());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "config file {} is valid; it sets defaults.compression, max_jobs\n",
            path.display()
        )
    );
}

#[test]
fn an_unknown_socket_group_fails_the_check_and_the_start_naming_file_and_line() {
    let t = TestHome::new();
    let path = write_config(&t, "max_jobs = 2\nsocket_group = \"no-such-group-here\"\n");
    let expected = format!(
        "config file {}, line 2: socket_group: no group named \"no-such-group-here\" in /etc/group",
        path.display()
    );
    let out = check_config(&t.home());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("backupd: {expected}\n")
    );
    let mut daemon = t.spawn_daemon(&[]);
    assert_eq!(daemon.wait().code(), Some(1));
    assert!(
        t.daemon_stderr().contains(&expected),
        "{}",
        t.daemon_stderr()
    );
}

#[test]
fn job_defaults_come_from_the_config_and_flags_win() {
    let t = TestHome::new();
    let configured = t.work().join("configured");
    write_config(
        &t,
        &format!(
            "[defaults]\ndestination = \"{}\"\ncompression = \"zstd\"\n",
            configured.display()
        ),
    );
    std::fs::create_dir(t.work().join("src")).unwrap();
    std::fs::write(t.work().join("src/f"), b"data").unwrap();
    let _daemon = t.start_daemon();
    t.ctl(&["run", "--sources", "src"]).ok();
    let names: Vec<String> = std::fs::read_dir(&configured)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".tar.zst")),
        "the configured destination and codec: {names:?}"
    );
    t.ctl(&["run", "--sources", "src", "--compression", "none"])
        .ok();
    let plain = std::fs::read_dir(&configured)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name().into_string().unwrap();
            name.ends_with(".tar")
        })
        .count();
    assert_eq!(plain, 1, "a flag wins over the configured codec");

    // What reads archives looks where they went: the configured destination.
    let zst = names.iter().find(|n| n.ends_with(".tar.zst")).unwrap();
    let listed = t.ctl(&["backups"]).ok();
    assert!(listed.lines().any(|l| l == zst), "{listed}");
    t.ctl(&["verify", zst]).ok();
    t.ctl(&["verify", "--name", "src"]).ok();
    let to = t.work().join("restored");
    t.ctl(&["restore", zst, "--to", to.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(to.join("src/f")).unwrap(), b"data");
    let ls = t.ctl(&["ls", zst]).ok();
    assert!(ls.contains("src/f"), "{ls}");
    let status = t.ctl(&["status"]).ok();
    assert!(
        status.contains(&format!("{}:", configured.display())),
        "free space of the configured destination: {status}"
    );
    let pruned: serde_json::Value =
        serde_json::from_str(&t.ctl(&["--json", "prune", "--dry-run"]).ok()).unwrap();
    let destination = configured.display().to_string();
    assert_eq!(
        pruned["data"]["destination"],
        destination.as_str(),
        "{pruned}"
    );
}

#[test]
fn the_log_level_comes_from_the_config_unless_a_flag_says_otherwise() {
    let t = TestHome::new();
    write_config(&t, "log_level = \"error\"\n");
    let mut quiet = t.start_daemon();
    t.ctl(&["list"]).ok();
    t.ctl(&["stop"]).ok();
    assert!(quiet.wait().success());
    assert!(
        !t.log().contains("Show schedules list"),
        "info lines are filtered out: {}",
        t.log()
    );
    let _loud = {
        let daemon = t.spawn_daemon(&["--log-level", "info"]);
        common::wait_until_answering(&t.socket());
        daemon
    };
    t.ctl(&["list"]).ok();
    assert!(t.log().contains("Show schedules list"), "{}", t.log());
}

#[test]
fn the_log_rotates_by_size_writes_json_and_reopens_on_sighup() {
    let t = TestHome::new();
    write_config(
        &t,
        "log_format = \"json\"\nlog_max_bytes = 2000\nlog_keep = 1\n",
    );
    let daemon = t.start_daemon();
    for _ in 0..60 {
        t.ctl(&["list"]).ok();
    }
    let logs = t.home().join("logs");
    let rotated = std::fs::read_to_string(logs.join("backupd.log.1")).unwrap();
    assert!(
        !logs.join("backupd.log.2").exists(),
        "one rotated file kept"
    );
    for line in rotated.lines().chain(t.log().lines()) {
        let object: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            object["time"].is_string() && object["level"].is_string(),
            "{line}"
        );
    }
    assert!(rotated.contains("Show schedules list"));

    // As logrotate does: move the file away, then SIGHUP; new lines go to a new file.
    std::fs::rename(logs.join("backupd.log"), logs.join("moved.log")).unwrap();
    daemon.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !t.log().contains("Reopened the log file") {
        assert!(std::time::Instant::now() < deadline, "no new log file");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    t.ctl(&["list"]).ok();
    assert!(t.log().contains("Show schedules list"), "{}", t.log());
}

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// Runs `backupctl ARGS`, which must exit within the tests' patience; its exit code.
fn ctl_exits(t: &TestHome, args: &[&str]) -> Option<i32> {
    let mut child = t
        .ctl_command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("backupctl {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_fifo_in_place_of_the_log_or_a_state_file_hangs_nothing() {
    let t = TestHome::new();
    let mut daemon = t.start_daemon();
    let logs = t.home().join("logs");
    // Reopened on SIGHUP: refused, and the daemon goes on answering.
    std::fs::rename(logs.join("backupd.log"), logs.join("moved.log")).unwrap();
    mkfifo(&logs.join("backupd.log"));
    daemon.signal("HUP");
    for _ in 0..3 {
        assert_eq!(ctl_exits(&t, &["list"]), Some(0));
    }
    assert_eq!(ctl_exits(&t, &["stop"]), Some(0));
    assert!(daemon.wait().success());

    // At start: the log and the schedules file refuse the start; the verify ledger, only a
    // record of past checks, is left out with a warning.
    std::fs::remove_file(logs.join("backupd.log")).unwrap();
    for state in ["logs/backupd.log", "schedules.json"] {
        let path = t.home().join(state);
        mkfifo(&path);
        let status = t.spawn_daemon(&[]).wait();
        let stderr = t.daemon_stderr();
        std::fs::remove_file(&path).unwrap();
        assert!(!status.success(), "{state}");
        assert!(stderr.contains("not a regular file"), "{state}: {stderr}");
    }
    mkfifo(&t.home().join("verify-status.json"));
    let daemon = t.start_daemon();
    assert_eq!(ctl_exits(&t, &["list"]), Some(0));
    assert!(t.log().contains("not a regular file"), "{}", t.log());
    assert_eq!(ctl_exits(&t, &["stop"]), Some(0));
    drop(daemon);

    // backupctl, with no daemon to answer, logs its failure: not into a FIFO.
    mkfifo(&logs.join("backupctl.log"));
    assert_eq!(ctl_exits(&t, &["jobs"]), Some(3), "cannot reach backupd");
}

#[test]
fn a_rotation_that_fails_is_said_once_per_rotation_not_per_line() {
    let t = TestHome::new();
    write_config(&t, "log_max_bytes = 500\nlog_keep = 1\n");
    let _daemon = t.start_daemon();
    let logs = t.home().join("logs");
    // Where the log would be renamed to: a rename of the log onto a folder fails.
    std::fs::create_dir(logs.join("backupd.log.1")).unwrap();
    for _ in 0..60 {
        t.ctl(&["list"]).ok();
    }
    let stderr = t.daemon_stderr();
    let said = stderr.matches("can't rotate the log").count();
    let grown = std::fs::metadata(logs.join("backupd.log")).unwrap().len();
    assert!(grown > 1500, "{grown}");
    assert!(
        (1..=(grown / 500) as usize).contains(&said),
        "{said} times for {grown} bytes: {stderr}"
    );
    assert!(!stderr.contains("can't write the log"), "{stderr}");
    assert!(t.log().contains("Show schedules list"));

    // Once it can, it rotates again.
    std::fs::remove_dir(logs.join("backupd.log.1")).unwrap();
    for _ in 0..60 {
        t.ctl(&["list"]).ok();
    }
    assert!(logs.join("backupd.log.1").is_file());
}

#[test]
fn an_endpoint_that_is_no_url_or_holds_a_user_is_refused_at_the_check() {
    let t = TestHome::new();
    for (endpoint, reason) in [
        ("https://exa mple.com", "must not contain spaces"),
        ("https://", "is not a URL: empty host"),
        ("https://[::1", "is not a URL: invalid IPv6 address"),
        (
            "https://user:Secret9@minio.example.net",
            "must not hold a user or password",
        ),
        ("https://minio.example.net/?x=1", "no query or fragment"),
    ] {
        let path = write_config(
            &t,
            &format!("[remote.bad]\nbucket = \"bkt\"\nendpoint = \"{endpoint}\"\n"),
        );
        let out = check_config(&t.home());
        assert_eq!(out.status.code(), Some(1), "{endpoint}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!(
                "backupd: config file {}, line 3: remote.bad.endpoint: ",
                path.display()
            )),
            "{stderr}"
        );
        assert!(stderr.contains(reason), "{stderr}");
        assert!(
            !stderr.contains("Secret9"),
            "the password is not shown: {stderr}"
        );
    }
    // A path-style server with a port and a path is a URL like any other.
    write_config(
        &t,
        "[remote.minio]\nbucket = \"bkt\"\nendpoint = \"https://minio.example.net:9000/s3/\"\n",
    );
    let out = check_config(&t.home());
    assert!(out.status.success(), "{out:?}");
}
