//! What a daemon killed at the wrong moment leaves, repaired at the next start: an archive
//! published without its manifest gets one rebuilt from the archive (and then verifies and
//! rotates like any other) while the daemon already serves, and nothing acts on the archive
//! before; the temporary files of interrupted atomic writes are swept, never a user's file.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{TestHome, log_messages};
use std::path::{Path, PathBuf};

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Backs `src` up under `name` and returns the archive's path.
fn backup(t: &TestHome, name: &str) -> PathBuf {
    let out = t
        .ctl(&["--json", "run", "--sources", "src", "--name", name])
        .ok();
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    PathBuf::from(report["data"]["sources"][0]["archive"].as_str().unwrap())
}

#[test]
fn an_archive_left_without_its_manifest_gets_it_rebuilt_at_start() {
    let t = TestHome::new();
    common::base_tree(&t.work().join("src"));
    let mut daemon = t.start_daemon();
    let archive = backup(&t, "docs");
    let manifest_path = archive.with_file_name(
        archive
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace(".tar.gz", ".json"),
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    daemon.signal("TERM");
    assert!(daemon.wait().success());

    // The state a kill between the archive's rename and its manifest's write leaves, and an
    // archive (named like one) that does not decode and has no manifest either.
    std::fs::remove_file(&manifest_path).unwrap();
    let backups = t.home().join("backups");
    let broken = backups.join("docs_20200101_000000.tar.gz");
    std::fs::write(&broken, b"not gzip at all").unwrap();

    let _restarted = t.start_daemon();
    // Rebuilt beside serving.
    let rebuilt_line = format!("Warning: Rebuilt manifest for {}", archive.display());
    let log = common::wait_for(common::PATIENCE, "the rebuilt manifest", || {
        let log = log_messages(&t.log());
        log.contains(&rebuilt_line).then_some(log)
    });
    assert!(
        log.iter().any(|l| l.starts_with(&format!(
            "Error: {} has no manifest and does not read as an archive",
            broken.display()
        ))),
        "{log:#?}"
    );
    let rebuilt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for field in [
        "checksum_sha256",
        "size_bytes",
        "created",
        "compression",
        "files",
        "dirs",
    ] {
        assert_eq!(rebuilt[field], written[field], "{field}");
    }
    let file = archive.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        t.ctl(&["verify", archive.to_str().unwrap()]).ok(),
        format!("{file}: OK\n")
    );
    assert!(broken.exists(), "an undecodable archive is left alone");

    // A later run of the name rotates it like any other archive: young, so kept.
    let second = backup(&t, "docs");
    assert_ne!(second, archive);
    assert!(archive.exists() && manifest_path.exists());
    let pruned = t.ctl(&["prune", "--name", "docs"]).ok();
    assert!(pruned.contains("Old backups deleted: 0"), "{pruned}");
    assert!(archive.exists() && manifest_path.exists());
}

#[test]
fn temporary_files_of_interrupted_writes_are_swept_at_start() {
    let t = TestHome::new();
    let elsewhere = common::stopped_with_a_schedule_elsewhere(&t);

    // What interrupted writes of the schedule file, the verify ledger, metrics and manifests leave
    // (this version's names and the `.tmpXXXXXX` of earlier ones), next to users' files.
    let home = t.home();
    let backups = home.join("backups");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(home.join("metrics")).unwrap();
    let ours = [
        home.join(".backupd-Ab12Cd.tmp"),
        home.join(".tmpQw3rTy"),
        home.join("metrics/.backupd-Me7r1c.tmp"),
        backups.join(".backupd-Zz99Yy.tmp"),
        backups.join(".tmpX1y2Z3"),
        elsewhere.join(".backupd-Mn45Op.tmp"),
    ];
    for path in &ours {
        std::fs::write(path, b"half a file").unwrap();
    }
    // In a folder the user chose, an old-style name may be the user's own.
    std::fs::write(elsewhere.join(".tmpUs3rFi"), b"mine").unwrap();
    std::fs::write(backups.join(".tmp-notes"), b"mine").unwrap();
    std::os::unix::fs::symlink("schedules.json", home.join(".tmpL1nK00")).unwrap();

    let _restarted = t.start_daemon();
    for path in &ours {
        assert!(!path.exists(), "{} swept", path.display());
    }
    let log = log_messages(&t.log());
    for path in &ours {
        assert!(
            log.contains(&format!("Removed stale temporary file {}", path.display())),
            "{log:#?}"
        );
    }
    assert_eq!(dir_names(&elsewhere), [".tmpUs3rFi"]);
    assert!(backups.join(".tmp-notes").exists());
    assert!(
        std::fs::symlink_metadata(home.join(".tmpL1nK00")).is_ok(),
        "a symlink is never ours"
    );
    // The schedule survived its neighbours' sweep.
    assert!(t.ctl(&["list"]).ok().contains("far"));
}

/// Holds every opening of a file until released, through a helper process that watches it
/// with fanotify (`FAN_OPEN_PERM`, which needs root): the daemon's repair, opening the
/// archive to rebuild its manifest, waits in the kernel meanwhile, for as long as the test
/// wants. Releasing closes the watch, which lets the held opening through.
struct HeldOpen {
    holder: std::process::Child,
}

const HOLD_OPENS: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
FAN_CLOEXEC, FAN_CLASS_CONTENT, FAN_MARK_ADD, FAN_OPEN_PERM = 0x01, 0x04, 0x01, 0x10000
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                               ctypes.c_char_p]
group = libc.fanotify_init(FAN_CLOEXEC | FAN_CLASS_CONTENT, os.O_RDONLY)
if group < 0 or libc.fanotify_mark(group, FAN_MARK_ADD, FAN_OPEN_PERM, -100,
                                   os.fsencode(sys.argv[1])) < 0:
    sys.exit("fanotify: " + os.strerror(ctypes.get_errno()))
print("held", flush=True)
sys.stdin.read()
"#;

impl HeldOpen {
    /// `None` (and the test skipped) without root, which fanotify needs.
    fn hold(file: &Path) -> Option<Self> {
        use std::io::BufRead;
        if !rustix::process::geteuid().is_root() {
            println!("skipped: needs root to hold a file's openings (fanotify)");
            return None;
        }
        let mut holder = std::process::Command::new("python3")
            .args(["-c", HOLD_OPENS])
            .arg(file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run python3");
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line,
            "held\n",
            "can't hold the openings of {}",
            file.display()
        );
        Some(Self { holder })
    }

    fn release(mut self) {
        drop(self.holder.stdin.take());
        assert!(self.holder.wait().unwrap().success());
    }
}

impl Drop for HeldOpen {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// `stop` while the repair is held on its archive, then the hold let go: the daemon ends the
/// repair and exits, and `stop` succeeds.
fn stop_during_the_repair(t: &TestHome, mut daemon: common::Daemon, held: HeldOpen) {
    let stop = t.ctl_command(&["stop"]).spawn().unwrap();
    common::wait_for(common::PATIENCE, "the repair to be told to stop", || {
        log_messages(&t.log())
            .iter()
            .any(|l| l == "Stopping the manifest repair: the daemon is stopping")
            .then_some(())
    });
    held.release();
    assert!(daemon.wait().success());
    assert!(stop.wait_with_output().unwrap().status.success());
}

/// `<stem>.json` beside an archive.
fn manifest_of(archive: &Path) -> PathBuf {
    let name = archive.file_name().unwrap().to_str().unwrap();
    let stem = name.strip_suffix(".tar.gz").unwrap();
    archive.with_file_name(format!("{stem}.json"))
}

/// A stopped daemon's home with one archive of `docs` in `<home>/backups` whose manifest a
/// crash lost; its path.
fn an_archive_without_its_manifest(t: &TestHome) -> PathBuf {
    common::base_tree(&t.work().join("src"));
    let mut daemon = t.start_daemon();
    let archive = backup(t, "docs");
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    std::fs::remove_file(manifest_of(&archive)).unwrap();
    archive
}

fn rebuilt_line(archive: &Path) -> String {
    format!("Warning: Rebuilt manifest for {}", archive.display())
}

/// How many log lines say a request waits for the repair of `docs` in `<home>/backups`.
fn waiting_for_repair(t: &TestHome) -> usize {
    let line = format!(
        "Waiting for the manifests of docs in {} to be rebuilt (start-up repair)",
        t.home().join("backups").display()
    );
    log_messages(&t.log())
        .iter()
        .filter(|l| **l == line)
        .count()
}

#[test]
fn the_daemon_answers_while_a_manifest_is_rebuilt_and_verify_waits_for_it() {
    let t = TestHome::new();
    let archive = an_archive_without_its_manifest(&t);
    let Some(held) = HeldOpen::hold(&archive) else {
        return;
    };

    // Answers while the repair cannot have read the archive (before, it answered only after).
    let _daemon = t.start_daemon();
    t.ctl(&["list"]).ok();
    let file = archive.file_name().unwrap().to_str().unwrap();
    // A listing shows the archive as it is.
    assert!(t.ctl(&["backups"]).ok().contains(file));
    let verify = t
        .ctl_command(&["verify", archive.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for(common::PATIENCE, "verify to wait", || {
        (waiting_for_repair(&t) == 1).then_some(())
    });
    assert!(!manifest_of(&archive).exists());
    assert!(!log_messages(&t.log()).contains(&rebuilt_line(&archive)));
    held.release();

    // Verify waited for the manifest, instead of failing for want of one.
    let verified = verify.wait_with_output().unwrap();
    assert!(verified.status.success(), "{verified:?}");
    assert_eq!(
        String::from_utf8(verified.stdout).unwrap(),
        format!("{file}: OK\n")
    );
    let rebuilt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest_of(&archive)).unwrap()).unwrap();
    assert_eq!(rebuilt["checksum_sha256"], common::sha256sum(&archive));
    let log = log_messages(&t.log());
    let at = |line: &str| log.iter().position(|l| l == line).expect(line);
    assert!(
        at(&rebuilt_line(&archive)) < at(&format!("Verify OK: {file}")),
        "{log:#?}"
    );
}

#[test]
fn a_run_started_during_the_repair_rotates_the_repaired_archive() {
    let t = TestHome::new();
    let old = an_archive_without_its_manifest(&t);
    let Some(held) = HeldOpen::hold(&old) else {
        return;
    };

    let _daemon = t.start_daemon();
    // Every older archive goes: the old one is to go, with the manifest rebuilt for it.
    let run = t
        .ctl_command(&[
            "--json",
            "run",
            "--sources",
            "src",
            "--name",
            "docs",
            "--retention-days",
            "0",
            "--min-keep",
            "0",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for(common::PATIENCE, "the run to wait", || {
        (waiting_for_repair(&t) == 1).then_some(())
    });
    t.ctl(&["list"]).ok(); // still answers
    assert!(!log_messages(&t.log()).contains(&rebuilt_line(&old)));
    held.release();

    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let old_file = old.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        report["data"]["sources"][0]["deleted"],
        serde_json::json!([old_file])
    );
    let new = PathBuf::from(report["data"]["sources"][0]["archive"].as_str().unwrap());
    // The old archive went with its rebuilt manifest: nothing of it is left behind.
    let name_of = |path: &Path| path.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(
        dir_names(&t.home().join("backups")),
        [name_of(&manifest_of(&new)), name_of(&new)]
    );
    let log = log_messages(&t.log());
    let at = |line: &str| log.iter().position(|l| l == line).expect(line);
    assert!(
        at(&rebuilt_line(&old)) < at(&format!("Deleting old backup: {old_file}")),
        "{log:#?}"
    );
}

#[test]
fn a_stop_during_the_repair_leaves_no_manifest_and_the_next_start_rebuilds_it() {
    let t = TestHome::new();
    let archive = an_archive_without_its_manifest(&t);
    let Some(held) = HeldOpen::hold(&archive) else {
        return;
    };

    let daemon = t.start_daemon();
    stop_during_the_repair(&t, daemon, held);
    let log = log_messages(&t.log());
    assert!(
        log.contains(&format!(
            "Stopped rebuilding the manifest of {}: the daemon is stopping (it is rebuilt at next \
             start)",
            archive.display()
        )),
        "{log:#?}"
    );
    let backups = t.home().join("backups");
    let file = archive.file_name().unwrap().to_str().unwrap();
    assert_eq!(dir_names(&backups), [file], "no manifest, whole or half");

    let _restarted = t.start_daemon();
    common::wait_for(common::PATIENCE, "the rebuilt manifest", || {
        manifest_of(&archive).exists().then_some(())
    });
    assert_eq!(
        t.ctl(&["verify", archive.to_str().unwrap()]).ok(),
        format!("{file}: OK\n")
    );
}

#[test]
fn a_folder_named_twice_a_link_and_its_path_is_repaired_once_and_the_daemon_answers() {
    let t = TestHome::new();
    common::base_tree(&t.work().join("src"));
    let folder = t.work().join("shared");
    let link = t.work().join("link");
    std::fs::create_dir(&folder).unwrap();
    std::os::unix::fs::symlink(&folder, &link).unwrap();
    let mut daemon = t.start_daemon();
    for (name, destination) in [("docs", &folder), ("other", &link)] {
        t.ctl(&[
            "create",
            "--source",
            "src",
            "--name",
            name,
            "--daily",
            &common::far_time(),
            "--destination",
            destination.to_str().unwrap(),
        ])
        .ok();
    }
    let archive = common::run_for_archive(
        &t,
        &[
            "--sources",
            "src",
            "--name",
            "docs",
            "--destination",
            folder.to_str().unwrap(),
        ],
    );
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    std::fs::remove_file(manifest_of(&archive)).unwrap();

    // Planned once per folder: two plans took the same rotation locks, the second waiting
    // for the first before serving, for ever.
    let _restarted = t.start_daemon();
    t.ctl(&["list"]).ok();
    common::wait_for(common::PATIENCE, "the rebuilt manifest", || {
        manifest_of(&archive).exists().then_some(())
    });
    let file = archive.file_name().unwrap().to_str().unwrap();
    let via_link = link.join(file);
    assert_eq!(
        t.ctl(&["verify", via_link.to_str().unwrap()]).ok(),
        format!("{file}: OK\n")
    );
    let rebuilt = log_messages(&t.log())
        .iter()
        .filter(|l| l.starts_with("Warning: Rebuilt manifest for ") && l.ends_with(file))
        .count();
    assert_eq!(rebuilt, 1, "{:#?}", log_messages(&t.log()));
}

#[test]
fn start_gives_up_on_a_daemon_that_binds_its_socket_but_does_not_answer() {
    let t = TestHome::new();
    common::stopped_with_a_schedule_elsewhere(&t);
    // The daemon binds its socket, then reads its schedules: held there, it never answers.
    let Some(held) = HeldOpen::hold(&t.home().join("schedules.json")) else {
        return;
    };
    let _stop = common::StopOnDrop(&t);
    let out = t.ctl_impatient(&["start"], 2);
    held.release();
    assert_eq!(out.code(), 3, "{}", out.stderr());
    assert!(
        out.stderr()
            .contains("did not answer within 2s: is it stopped or hung?"),
        "{}",
        out.stderr()
    );
    let log = t.home().join("logs/backupd.log");
    assert!(out.stderr().contains(&format!("see {}", log.display())));
    // Once let through, it serves.
    common::wait_until_answering(&t.socket());
}

#[test]
fn a_stop_during_the_repair_fails_the_verify_and_prune_waiting_for_it_which_act_on_nothing() {
    let t = TestHome::new();
    let archive = an_archive_without_its_manifest(&t);
    let Some(held) = HeldOpen::hold(&archive) else {
        return;
    };

    let daemon = t.start_daemon();
    let queued = |args: &[&str]| {
        t.ctl_command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let verify = queued(&["--json", "verify", archive.to_str().unwrap()]);
    common::wait_for(common::PATIENCE, "verify to wait", || {
        (waiting_for_repair(&t) == 1).then_some(())
    });
    // Would delete every archive of the name, the one without its manifest too.
    let prune = queued(&[
        "--json",
        "prune",
        "--name",
        "docs",
        "--retention-days",
        "0",
        "--min-keep",
        "0",
    ]);
    common::wait_for(common::PATIENCE, "prune to wait", || {
        (waiting_for_repair(&t) == 2).then_some(())
    });
    stop_during_the_repair(&t, daemon, held);

    // Both end with the daemon stopping, having acted on nothing.
    for (what, waiter) in [("verify", verify), ("prune", prune)] {
        let out = waiter.wait_with_output().unwrap();
        assert!(!out.status.success(), "{what}: {out:?}");
        let answer: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}: {out:?}"));
        assert_eq!(answer["error"]["code"], "shutting_down", "{what}: {answer}");
    }
    let file = archive.file_name().unwrap().to_str().unwrap();
    assert_eq!(dir_names(&t.home().join("backups")), [file]);
    let log = log_messages(&t.log());
    assert!(
        !log.iter()
            .any(|l| l.starts_with("Verify failed") || l.starts_with("Deleting old backup")),
        "{log:#?}"
    );

    // Rebuilt at the next start, it carries no mark of a verify that never was.
    let _restarted = t.start_daemon();
    common::wait_for(common::PATIENCE, "the rebuilt manifest", || {
        manifest_of(&archive).exists().then_some(())
    });
    let long = t.ctl(&["backups", "--long"]).ok();
    assert!(long.contains(file), "{long}");
    assert!(!long.contains("manifest missing"), "{long}");
}
