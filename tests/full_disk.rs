//! A full disk loses nothing: a backup that runs out of space fails cleanly and leaves no file
//! behind, and a schedule change that cannot be saved changes nothing. The disk is a tiny
//! tmpfs, which only root may mount (CI runs as root).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{TestHome, far_time, log_messages};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted at `dir`, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// `None` when this user may not mount (not root).
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = Command::new("mount")
            // mode=0700: backupd refuses a home others can write, and tmpfs defaults to 1777.
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `filler` until the disk it is on has no byte left.
fn fill_up(filler: &Path) {
    let mut file = std::fs::File::create(filler).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
}

fn is_root() -> bool {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}

/// Incompressible bytes, so the archive is as large as the source.
fn random_file(path: &Path, size: usize) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_backup_that_fills_the_disk_fails_and_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    random_file(&src.join("big.bin"), 3 << 20);
    let dest = t.work().join("small");
    let _disk = SmallDisk::mount(&dest, "1m").expect("mount a tmpfs as root");
    let _daemon = t.start_daemon();

    let out = t.ctl(&[
        "run",
        "--sources",
        "src",
        "--destination",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stdout().contains("No space left on device"),
        "{}",
        out.stdout()
    );
    let left: Vec<_> = std::fs::read_dir(&dest).unwrap().collect();
    assert!(
        left.is_empty(),
        "nothing is left on the full disk: {left:?}"
    );
    assert!(
        log_messages(&t.log())
            .iter()
            .any(|l| l.starts_with("Error: [")
                && l.contains("] Backup failed for ")
                && l.contains("No space left"))
    );
    // The daemon goes on serving.
    t.ctl(&["list"]).ok();
}

#[test]
fn a_schedule_change_that_cannot_be_saved_changes_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    let _disk = SmallDisk::mount(&t.home(), "256k").expect("mount a tmpfs as root");
    let _daemon = t.start_daemon();
    let hhmm = far_time();
    t.ctl(&["create", &format!("src;{hhmm};kept")]).ok();
    let before = std::fs::read(t.home().join("schedules.json")).unwrap();

    // Fill the disk to the last byte.
    let filler = t.home().join("filler");
    fill_up(&filler);

    let out = t.ctl(&["create", &format!("src;{hhmm};lost")]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr().contains("can't save schedule file"),
        "{}",
        out.stderr()
    );
    assert_eq!(
        std::fs::read(t.home().join("schedules.json")).unwrap(),
        before
    );
    assert_eq!(
        t.ctl(&["list"]).ok().lines().count(),
        1,
        "memory unchanged too"
    );

    // Room again: the next change is saved.
    std::fs::remove_file(&filler).unwrap();
    t.ctl(&["create", &format!("src;{hhmm};later")]).ok();
    assert_eq!(t.ctl(&["list"]).ok().lines().count(), 2);
}

/// Archives of `name` in `dir`.
fn archives_of(dir: &Path, name: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                file.starts_with(&format!("{name}_")) && file.ends_with(".tar.gz")
            })
            .count()
    })
}

#[test]
fn schedules_go_on_running_while_the_home_is_full() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    // The archives go elsewhere, where there is room: only the home is full.
    let destination = t.work().join("dest");
    let _disk = SmallDisk::mount(&t.home(), "256k").expect("mount a tmpfs as root");
    let _daemon = t.start_daemon();
    let filler = t.home().join("filler");
    fill_up(&filler);

    // Every second: the state of each run cannot be saved, and the runs go on.
    let (src, dest) = (src.to_str().unwrap(), destination.to_str().unwrap());
    let create = [
        "create",
        "--name",
        "often",
        "--source",
        src,
        "--destination",
        dest,
        "--cron",
        "* * * * * *",
    ];
    // A new schedule is a change the user asked for: refused while it cannot be saved.
    assert_eq!(t.ctl(&create).code(), 1);
    std::fs::remove_file(&filler).unwrap();
    t.ctl(&create).ok();
    fill_up(&filler);
    let saved = || std::fs::read_to_string(t.home().join("schedules.json")).unwrap();
    let when_full = saved();
    let before = archives_of(&destination, "often");
    common::wait_for(common::PATIENCE, "runs while the home is full", || {
        (archives_of(&destination, "often") >= before + 2).then_some(())
    });
    let listed = t.ctl(&["list", "--json"]).ok();
    assert!(listed.contains("\"last_run\""), "{listed}");

    // Room again: the next change saves what was kept in memory.
    assert_eq!(saved(), when_full, "nothing could be saved");
    std::fs::remove_file(&filler).unwrap();
    t.ctl(&["create", &format!("{src};{};later", common::far_time())])
        .ok();
    let runs = |file: &str| file.matches("\"finished\"").count();
    assert!(runs(&saved()) > runs(&when_full), "{}", saved());
    t.ctl(&["delete", "--name", "often"]).ok();
}
