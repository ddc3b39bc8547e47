//! What a daemon's start-up sweep of a destination folder leaves alone and what it removes:
//! the temporary file another daemon sharing the folder is writing stays; the manifest a
//! rotation killed between an archive and its manifest had marked goes, a manifest a user
//! kept without its archive, or another user's, never.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{TestHome, log_messages};
use std::path::Path;

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_temporary_file_another_daemon_is_writing_is_left_at_start() {
    let t = TestHome::new();
    // A schedule's destination, outside the home: another home's daemon may write there too.
    let shared = common::stopped_with_a_schedule_elsewhere(&t);
    std::fs::create_dir_all(&shared).unwrap();
    // The other daemon, mid-way through writing a manifest: its temporary file, locked.
    let writing = shared.join(".backupd-Wr1t3s.tmp");
    std::fs::write(&writing, b"half a manifest").unwrap();
    let writer = std::fs::File::open(&writing).unwrap();
    rustix::fs::flock(
        &writer,
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .unwrap();
    // A crash's leftover beside it, which the same sweep removes.
    let abandoned = shared.join(".backupd-G0ne00.tmp");
    std::fs::write(&abandoned, b"half a manifest").unwrap();

    // The sweep runs before the daemon answers.
    let _daemon = t.start_daemon();
    assert_eq!(dir_names(&shared), [".backupd-Wr1t3s.tmp"]);
    let log = log_messages(&t.log());
    let removed = |path: &Path| format!("Removed stale temporary file {}", path.display());
    assert!(log.contains(&removed(&abandoned)), "{log:#?}");
    assert!(!log.contains(&removed(&writing)), "{log:#?}");
    drop(writer);
}

/// `<stem>.json` beside an archive.
fn manifest_of(archive: &Path) -> std::path::PathBuf {
    let name = archive.file_name().unwrap().to_str().unwrap();
    let stem = name.strip_suffix(".tar.gz").unwrap();
    archive.with_file_name(format!("{stem}.json"))
}

#[test]
fn a_manifest_whose_archive_a_cut_rotation_removed_is_removed_at_start() {
    const NOBODY: u32 = 65534;
    let t = TestHome::new();
    common::base_tree(&t.work().join("src"));
    let mut daemon = t.start_daemon();
    let cut = common::run_for_archive(&t, &["--sources", "src", "--name", "docs"]);
    let kept = common::run_for_archive(&t, &["--sources", "src", "--name", "photos"]);
    let taped = common::run_for_archive(&t, &["--sources", "src", "--name", "music"]);
    daemon.signal("TERM");
    assert!(daemon.wait().success());

    // What a rotation killed between the archive's unlink and its manifest's leaves: the
    // manifest, and the mark it condemned the manifest by, a second link to it.
    let name = |path: &Path| path.file_name().unwrap().to_str().unwrap().to_owned();
    let backups = t.home().join("backups");
    let mark = backups.join(format!(".backupd-deleting-{}", name(&manifest_of(&cut))));
    std::fs::hard_link(manifest_of(&cut), &mark).unwrap();
    std::fs::remove_file(&cut).unwrap();
    // A user moved an archive to tape and kept its manifest to check the tape by.
    std::fs::rename(&taped, t.work().join(name(&taped))).unwrap();
    let taped_manifest = std::fs::read(manifest_of(&taped)).unwrap();
    // Another user's manifest without an archive is theirs, not ours to remove.
    let theirs = backups.join("docs_20200101_000000.json");
    let root = rustix::process::geteuid().is_root();
    if root {
        std::fs::copy(manifest_of(&cut), &theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    } else {
        println!("not root: the part with another user's manifest is skipped");
    }

    // The sweep runs before the daemon answers.
    let _restarted = t.start_daemon();
    let mut expected = vec![
        name(&manifest_of(&taped)),
        name(&manifest_of(&kept)),
        name(&kept),
    ];
    if root {
        expected.insert(0, name(&theirs));
    }
    assert_eq!(dir_names(&backups), expected);
    let log = log_messages(&t.log());
    let removed = |path: &Path| {
        format!(
            "Removed stale manifest {}: a rotation cut short had deleted its archive",
            path.display()
        )
    };
    assert!(log.contains(&removed(&manifest_of(&cut))), "{log:#?}");
    for left in [manifest_of(&taped), theirs] {
        assert!(!log.contains(&removed(&left)), "{log:#?}");
    }
    assert!(
        !log.iter().any(|l| l.contains("Rebuilt manifest")),
        "{log:#?}"
    );
    assert_eq!(
        std::fs::read(manifest_of(&taped)).unwrap(),
        taped_manifest,
        "the kept manifest is as it was"
    );
    // What remains is whole: the other backup still verifies.
    let file = name(&kept);
    assert_eq!(
        t.ctl(&["verify", kept.to_str().unwrap()]).ok(),
        format!("{file}: OK\n")
    );
}
