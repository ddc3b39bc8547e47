//! A home nobody else can tamper with: the daemon refuses a home (or its `logs/`, `backups/`)
//! another user owns or can write, never writes through a link planted in it, and one daemon
//! at a time holds `<home>/lock`. And `backupctl run`, as root, refuses a `.env` someone else
//! could have written.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{StopOnDrop, TestHome};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The `nobody` user and group of Debian and most distributions.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // The suite has no rustix of its own; `id -u` is what a shell would ask.
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Starts a daemon on `t`'s home, expects it to exit non-zero, and returns its stderr.
#[track_caller]
fn refused_start(t: &TestHome) -> String {
    let mut daemon = t.spawn_daemon(&[]);
    let status = daemon.wait();
    assert!(!status.success(), "started: {}", t.daemon_stderr());
    assert!(!t.socket().exists(), "a refused daemon leaves no socket");
    t.daemon_stderr()
}

#[test]
fn a_home_owned_by_another_user_is_refused() {
    if !is_root() {
        println!("skipped: needs root to give the home to nobody");
        return;
    }
    let t = TestHome::new();
    std::fs::create_dir(t.home()).unwrap();
    chmod(&t.home(), 0o755);
    std::os::unix::fs::chown(t.home(), Some(NOBODY), Some(NOBODY)).unwrap();
    let stderr = refused_start(&t);
    let expected = format!(
        "backupd: {} belongs to uid {NOBODY}, not to backupd's uid 0",
        t.home().display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "said once: {stderr}");
    assert!(!t.home().join("logs").exists(), "nothing written in it");
}

#[test]
fn a_backups_folder_owned_by_another_user_is_refused() {
    if !is_root() {
        println!("skipped: needs root to give the folder to nobody");
        return;
    }
    let t = TestHome::new();
    std::fs::create_dir_all(t.home().join("backups")).unwrap();
    chmod(&t.home(), 0o700);
    std::os::unix::fs::chown(t.home().join("backups"), Some(NOBODY), Some(NOBODY)).unwrap();
    let stderr = refused_start(&t);
    let backups = t.home().join("backups");
    assert!(
        stderr.contains(&format!("{} belongs to uid {NOBODY}", backups.display())),
        "{stderr}"
    );
}

#[test]
fn a_group_or_world_writable_home_is_refused() {
    for mode in [0o770, 0o707, 0o1777] {
        let t = TestHome::new();
        std::fs::create_dir(t.home()).unwrap();
        chmod(&t.home(), mode);
        let stderr = refused_start(&t);
        assert!(
            stderr.contains(&format!(
                "{} is writable by its group or by others (mode {mode:04o})",
                t.home().display()
            )),
            "{mode:o}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("chmod go-w {}", t.home().display())),
            "{stderr}"
        );
        assert!(!t.home().join("logs").exists(), "nothing written in it");
        // The fix the message gives works.
        chmod(&t.home(), mode & !0o022);
        let mut daemon = t.start_daemon();
        t.ctl(&["stop"]).ok();
        assert!(daemon.wait().success());
    }
}

#[test]
fn a_writable_logs_folder_is_refused() {
    let t = TestHome::new();
    std::fs::create_dir_all(t.home().join("logs")).unwrap();
    chmod(&t.home(), 0o700);
    chmod(&t.home().join("logs"), 0o777);
    let stderr = refused_start(&t);
    assert!(
        stderr.contains(&format!(
            "{} is writable by its group or by others",
            t.home().join("logs").display()
        )),
        "{stderr}"
    );
    assert!(!t.home().join("logs/backupd.log").exists());
}

#[test]
fn linked_logs_or_backups_folders_are_refused_and_nothing_is_written_through_them() {
    for linked in ["logs", "backups"] {
        let t = TestHome::new();
        std::fs::create_dir(t.home()).unwrap();
        let elsewhere = t.work().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, t.home().join(linked)).unwrap();
        let stderr = refused_start(&t);
        assert!(
            stderr.contains(&format!(
                "{} is a symbolic link",
                t.home().join(linked).display()
            )),
            "{linked}: {stderr}"
        );
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "{linked}"
        );
    }
}

#[test]
fn a_log_file_replaced_by_a_link_is_never_written_through() {
    let t = TestHome::new();
    std::fs::create_dir_all(t.home().join("logs")).unwrap();
    let precious = t.work().join("precious");
    std::fs::write(&precious, b"root only\n").unwrap();
    std::os::unix::fs::symlink(&precious, t.home().join("logs/backupd.log")).unwrap();
    let stderr = refused_start(&t);
    assert!(
        stderr.contains("backupd.log: it is a symbolic link"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&precious).unwrap(), b"root only\n");
}

#[test]
fn a_second_daemon_on_the_same_home_is_refused_until_the_first_stops() {
    let t = TestHome::new();
    let mut first = t.start_daemon();
    let other = t.work().join("other.sock");
    let other_arg = other.to_str().unwrap();
    let mut second = t.spawn_daemon(&["--socket", other_arg]);
    assert_eq!(second.wait().code(), Some(3), "{}", t.daemon_stderr());
    let expected = format!(
        "backupd: another backupd holds {} (pid {})",
        t.home().join("lock").display(),
        first.pid()
    );
    assert!(
        t.daemon_stderr().contains(&expected),
        "{}",
        t.daemon_stderr()
    );
    assert!(!other.exists(), "the refused daemon bound no socket");
    assert!(first.is_running());
    common::wait_until_answering(&t.socket());
    let mode = std::fs::metadata(t.home().join("lock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    t.ctl(&["stop"]).ok();
    assert!(first.wait().success());
    let mut third = t.spawn_daemon(&["--socket", other_arg]);
    common::wait_until_answering(&other);
    assert!(third.is_running());
}

#[test]
fn a_daemon_started_on_demand_reports_the_lock_of_one_on_another_socket() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    let other = t.work().join("other.sock");
    let first = t.spawn_daemon(&["--socket", other.to_str().unwrap()]);
    common::wait_until_answering(&other);
    // backupctl looks at <home>/backupd.sock, finds no daemon and starts one, which the
    // lock refuses.
    let _stop = StopOnDrop(&t);
    let out = t.ctl(&[
        "create", "--source", "src", "--name", "n", "--daily", "03:00",
    ]);
    assert_ne!(out.code(), 0);
    let expected = format!(
        "another backupd holds {} (pid {})",
        t.home().join("lock").display(),
        first.pid()
    );
    assert!(out.stderr().contains(&expected), "{}", out.stderr());
    assert!(!t.socket().exists());
}

#[test]
fn run_as_root_refuses_a_dotenv_another_user_could_have_written() {
    if !is_root() {
        println!("skipped: only root refuses another user's .env");
        return;
    }
    let t = TestHome::new();
    let dotenv = t.work().join(".env");
    std::fs::write(&dotenv, "BACKUP_SOURCES=/etc\n").unwrap();
    chmod(&dotenv, 0o644);
    std::os::unix::fs::chown(&dotenv, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = t.ctl(&["run"]);
    assert_eq!(out.code(), 2, "{}", out.stderr());
    assert!(
        out.stderr().contains(&format!(
            "refusing {} as uid 0: it belongs to uid {NOBODY}",
            dotenv.display()
        )),
        "{}",
        out.stderr()
    );

    // `sudo backupctl status` in one's own project: only what uses `.env` reads it.
    let out = t.ctl(&["status"]);
    assert_eq!(out.code(), 3, "{}", out.stderr());

    std::os::unix::fs::chown(&dotenv, Some(0), Some(0)).unwrap();
    chmod(&dotenv, 0o666);
    let out = t.ctl(&["run"]);
    assert_eq!(out.code(), 2, "{}", out.stderr());
    assert!(
        out.stderr().contains("it is writable by group or others"),
        "{}",
        out.stderr()
    );
}

#[test]
fn backupctl_never_logs_through_a_link_planted_in_the_logs_folder() {
    let t = TestHome::new();
    std::fs::create_dir_all(t.home().join("logs")).unwrap();
    chmod(&t.home().join("logs"), 0o700);
    let precious = t.work().join("precious");
    std::fs::write(&precious, b"root only\n").unwrap();
    std::os::unix::fs::symlink(&precious, t.home().join("logs/backupctl.log")).unwrap();
    // No daemon: the failure is one backupctl would log.
    assert_eq!(t.ctl(&["status"]).code(), 3);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "root only\n");

    // A real log file in a private folder still gets the line.
    std::fs::remove_file(t.home().join("logs/backupctl.log")).unwrap();
    assert_eq!(t.ctl(&["status"]).code(), 3);
    assert_eq!(t.client_log().lines().count(), 1, "{}", t.client_log());
}

#[test]
fn a_home_under_a_folder_another_user_controls_is_refused() {
    let t = TestHome::new();
    std::fs::create_dir(t.home()).unwrap();
    chmod(&t.home(), 0o700);
    // Others may write the parent: they could rename the home away and put theirs there.
    chmod(t.work(), 0o777);
    let stderr = refused_start(&t);
    assert!(
        stderr.contains(&format!(
            "{}, a folder on the way to the home, is writable by its group or by others \
             without the sticky bit (mode 0777)",
            t.work().display()
        )),
        "{stderr}"
    );
    // Sticky, as /tmp is: others can no longer touch what is ours.
    chmod(t.work(), 0o1777);
    let mut daemon = t.start_daemon();
    t.ctl(&["stop"]).ok();
    assert!(daemon.wait().success());

    if !is_root() {
        println!("skipped the rest: needs root to give the parent to nobody");
        return;
    }
    chmod(t.work(), 0o755);
    std::os::unix::fs::chown(t.work(), Some(NOBODY), Some(NOBODY)).unwrap();
    let stderr = refused_start(&t);
    assert!(
        stderr.contains(&format!(
            "{}, a folder on the way to the home, belongs to uid {NOBODY}",
            t.work().display()
        )),
        "{stderr}"
    );
}
