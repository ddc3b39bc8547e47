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

/// A temporary name as earlier versions made them.
fn temp(pid: u32, n: u32) -> String {
    format!(".backupd-restore-{pid}-{n}")
}

/// A temporary name of the process `pid` that started at `started`.
fn temp_of(pid: u32, started: u64, n: u32) -> String {
    format!(".backupd-restore-{pid}-{started}-{n}")
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn started(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, fields) = stat.rsplit_once(')').unwrap();
    fields.split_whitespace().nth(19).unwrap().parse().unwrap()
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
    let (ours, ours_started) = (daemon.pid(), started(daemon.pid()));
    // Left by a killed daemon: swept, in every folder the restore writes in. So is one
    // carrying a pid in use again: this daemon's (a container's PID 1 restarted; an earlier
    // version's name, without a start time) or another process's.
    let swept = [
        restored.join(temp(dead, 1)),
        restored.join("sub").join(temp(dead, 2)),
        restored.join(temp(dead, 3)),
        restored.join(temp(dead, 4)),
        restored.join(temp_of(dead, 1, 8)),
        restored.join(temp_of(ours, ours_started - 1, 9)),
        restored.join(temp(ours, 10)),
        restored.join(temp_of(live, started(live) + 1, 11)),
    ];
    for file in [&swept[0], &swept[1]].into_iter().chain(&swept[4..]) {
        std::fs::write(file, b"half\n").unwrap();
    }
    // A symlink is removed itself, never what it points to.
    symlink(outside.join("keep"), &swept[2]).unwrap();
    symlink(&outside, &swept[3]).unwrap();
    // What a restore alive may be using (another daemon's, or this daemon's own), what no
    // restore makes, someone else's file, and a folder the restore does not write in: kept.
    let kept = [
        restored.join(temp(live, 1)),
        restored.join(temp_of(ours, ours_started, 1)),
        restored.join(temp(dead, 5)),
        restored.join(temp(dead, 6)),
        restored.join(".backupd-restore-x-1"),
        restored.join(temp_of(live, started(live), 2)),
        target.join("untouched").join(temp(dead, 7)),
    ];
    for file in [&kept[0], &kept[1], &kept[3], &kept[4], &kept[5]] {
        std::fs::write(file, b"in use\n").unwrap();
    }
    std::fs::create_dir(&kept[2]).unwrap();
    std::os::unix::fs::chown(&kept[3], Some(54321), Some(54321)).unwrap();
    std::fs::create_dir(target.join("untouched")).unwrap();
    std::fs::write(&kept[6], b"elsewhere\n").unwrap();

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
        kept[..6]
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned()),
    );
    assert_eq!(names(&restored), expected);
    assert_eq!(std::fs::read(restored.join("a.txt")).unwrap(), b"a\n");
    wait_for(PATIENCE, "the sweep in the log", || {
        t.log()
            .contains("Removed 8 temporary files an interrupted restore had left in")
            .then_some(())
    });
    drop(alive);
}

/// A tar header with a raw name, which `Header::set_path` would refuse (`..`).
fn raw_header(path: &str, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    let old = header.as_old_mut();
    old.name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    header
}

/// `<home>/backups/many_20250101_000000.tar` with a manifest that matches it: `top/ok.txt`,
/// a name too long for any file system, then `count` entries `../escape<i>`, all refused.
fn many_refusals(t: &TestHome, long: &str, count: usize) -> String {
    let backups = t.home().join("backups");
    let stem = "many_20250101_000000";
    let archive = backups.join(format!("{stem}.tar"));
    let mut builder = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(3);
    builder
        .append_data(&mut header.clone(), "top/ok.txt", &b"ok\n"[..])
        .unwrap();
    builder
        .append_data(&mut header, long, &b"no\n"[..])
        .unwrap();
    for i in 0..count {
        let name = format!("../escape{i}");
        builder.append(&raw_header(&name, 1), &b"x"[..]).unwrap();
    }
    builder.into_inner().unwrap();
    let size = std::fs::metadata(&archive).unwrap().len();
    let manifest = serde_json::json!({
        "backup_file": archive,
        "source": "/evil/top",
        "created": "20250101_000000",
        "size_bytes": size,
        "size_human": format!("{size} B"),
        "checksum_sha256": common::sha256sum(&archive),
        "name": "many",
        "compression": "none",
        "level": 6,
        "files": count + 2,
        "dirs": 0,
        "symlinks": 0,
        "hardlinks": 0,
        "bytes_in": 6 + count,
        "duration_ms": 1,
        "warnings": [],
        "backupd_version": "0.1.0",
        "format_version": 1,
    });
    std::fs::write(
        backups.join(format!("{stem}.json")),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    format!("{stem}.tar")
}

#[test]
fn a_restore_refusing_many_entries_names_the_first_hundred_and_counts_the_rest() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let long = format!("top/{}", "x".repeat(5000));
    let archive = many_refusals(&t, &long, 250);
    let target = t.work().join("target");
    let to = target.to_str().unwrap();

    let out = t.ctl(&["restore", &archive, "--to", to]);
    let stdout = out.stdout();
    assert_eq!(out.code(), 1, "stdout {stdout:?} stderr {:?}", out.stderr());
    assert_eq!(out.stderr(), "Error: 251 entries refused\n");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("Restored 1 files"), "{stdout}");
    let refused: Vec<&str> = lines[1..lines.len() - 1].to_vec();
    assert_eq!(refused.len(), 100, "{stdout}");
    // The long name is cut, with how long it was.
    let first = refused[0];
    assert!(first.starts_with("Refused: top/xxxx"), "{first}");
    assert!(first.contains("… (5004 bytes): "), "{first}");
    assert!(first.len() < 4096 + 200, "{}", first.len());
    for (i, line) in refused[1..].iter().enumerate() {
        assert_eq!(*line, format!("Refused: ../escape{i}: path contains '..'"));
    }
    assert_eq!(
        lines[lines.len() - 1],
        "… and 151 more entries refused, not listed (251 in all)"
    );
    assert_eq!(std::fs::read(target.join("top/ok.txt")).unwrap(), b"ok\n");

    let (code, answer) = common::ctl_json(&t, &["restore", &archive, "--to", to, "--overwrite"]);
    assert_eq!(code, 1, "{answer}");
    let data = &answer["data"];
    assert_eq!(data["refused"].as_array().unwrap().len(), 100, "{answer}");
    assert_eq!(data["refused"][99], "../escape98: path contains '..'");
    assert_eq!(data["refused_not_listed"], 151, "{answer}");
    assert!(
        answer.to_string().len() < 100 * 200 + 10_000,
        "the answer is bounded"
    );
}
