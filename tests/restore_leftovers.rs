//! What a restore leaves and what it says: the temporary names an interrupted `--overwrite`
//! restore left are swept by the next restore writing in their folder, and never one a restore
//! alive may still be using; a restore that refuses many entries names the first few and says
//! how many more.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{PATIENCE, TestHome, wait_for};
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::Command;

use common::run_for_archive as backup;

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The pid of a process that has exited and been reaped: no process has it (until the
/// kernel hands it out again, far in its cycle).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// A process kept alive until dropped.
struct Alive(std::process::Child);

impl Drop for Alive {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp(pid: u32, n: u32) -> String {
    format!(".backupd-restore-{pid}-{n}")
}

#[test]
fn leftovers_of_a_killed_restore_are_swept_and_those_a_live_one_may_use_are_kept() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"a\n").unwrap();
    std::fs::write(src.join("sub/b.txt"), b"b\n").unwrap();
    let daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "src"]);
    let target = t.work().join("target");
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", archive.to_str().unwrap()];
        args.extend(["--to", target.to_str().unwrap()]);
        args.extend(extra);
        t.ctl(&args).ok()
    };
    restore(&[]);
    let restored = target.join("src");
    let before = names(&restored);

    let outside = t.work().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"keep\n").unwrap();
    let dead = dead_pid();
    let alive = Alive(Command::new("sleep").arg("1000").spawn().unwrap());
    let live = alive.0.id();
    // Left by a killed daemon: swept, in every folder the restore writes in.
    let swept = [
        restored.join(temp(dead, 1)),
        restored.join("sub").join(temp(dead, 2)),
        restored.join(temp(dead, 3)),
        restored.join(temp(dead, 4)),
    ];
    std::fs::write(&swept[0], b"half\n").unwrap();
    std::fs::write(&swept[1], b"half\n").unwrap();
    // A symlink is removed itself, never what it points to.
    symlink(outside.join("keep"), &swept[2]).unwrap();
    symlink(&outside, &swept[3]).unwrap();
    // What a restore alive may be using (another daemon's, or this daemon's own), what no
    // restore makes, someone else's file, and a folder the restore does not write in: kept.
    let kept = [
        restored.join(temp(live, 1)),
        restored.join(temp(daemon.pid(), 1)),
        restored.join(temp(dead, 5)),
        restored.join(temp(dead, 6)),
        restored.join(".backupd-restore-x-1"),
        target.join("untouched").join(temp(dead, 7)),
    ];
    for file in [&kept[0], &kept[1], &kept[3], &kept[4]] {
        std::fs::write(file, b"in use\n").unwrap();
    }
    std::fs::create_dir(&kept[2]).unwrap();
    std::os::unix::fs::chown(&kept[3], Some(54321), Some(54321)).unwrap();
    std::fs::create_dir(target.join("untouched")).unwrap();
    std::fs::write(&kept[5], b"elsewhere\n").unwrap();

    let out = restore(&["--overwrite"]);
    assert!(out.contains("Restored 2 files"), "{out}");
    for path in &swept {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "{} not swept",
            path.display()
        );
    }
    for path in &kept {
        assert!(
            std::fs::symlink_metadata(path).is_ok(),
            "{} removed",
            path.display()
        );
    }
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep\n");
    assert_eq!(names(&outside), BTreeSet::from(["keep".to_owned()]));
    assert_eq!(
        std::fs::metadata(&kept[3]).unwrap().uid(),
        54321,
        "someone else's file is left as it was"
    );
    let mut expected = before;
    expected.extend(
        kept[..5]
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned()),
    );
    assert_eq!(names(&restored), expected);
    assert_eq!(std::fs::read(restored.join("a.txt")).unwrap(), b"a\n");
    wait_for(PATIENCE, "the sweep in the log", || {
        t.log()
            .contains("Removed 4 temporary files an interrupted restore had left in")
            .then_some(())
    });
    drop(alive);
}
