//! What a daemon's start-up sweep of a destination folder leaves alone: the temporary file
//! another daemon sharing the folder is writing stays.

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
