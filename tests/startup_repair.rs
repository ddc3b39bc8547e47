//! What a daemon killed at the wrong moment leaves, repaired at the next start: an archive
//! published without its manifest gets one rebuilt from the archive (and then verifies and
//! rotates like any other), and the temporary files of interrupted atomic writes are swept,
//! never a user's file.

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
    let log = log_messages(&t.log());
    assert!(
        log.contains(&format!(
            "Warning: Rebuilt manifest for {}",
            archive.display()
        )),
        "{log:#?}"
    );
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

    // What interrupted writes of the schedule file, the verify ledger and manifests leave
    // (this version's names and the `.tmpXXXXXX` of earlier ones), next to users' files.
    let home = t.home();
    let backups = home.join("backups");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let ours = [
        home.join(".backupd-Ab12Cd.tmp"),
        home.join(".tmpQw3rTy"),
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
