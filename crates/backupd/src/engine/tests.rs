//! End-to-end tests of `run_backup` on a real file system, checked with GNU tar.

use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use chrono::NaiveDate;

use super::*;
use crate::destination::{Destination, FileIdentity, LocalFolder, PendingArchive, Removal};
use crate::store::test_support::{NOBODY, can_give_files_away, dir_names};
use proto::Codec;

fn timestamp() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2025, 1, 2)
        .unwrap()
        .and_hms_opt(3, 4, 5)
        .unwrap()
}

fn job(
    source: &Path,
    destination: &Path,
    compression: Compression,
    excludes: &[&str],
) -> BackupJob {
    BackupJob {
        source: source.to_owned(),
        name: "docs".into(),
        destination: Arc::new(LocalFolder::new(destination)),
        compression,
        excludes: ExcludeSet::new(excludes).unwrap(),
        timestamp: timestamp(),
        utc_offset: chrono::FixedOffset::east_opt(0).unwrap(),
        never_archive: Vec::new(),
        holes: Holes::Kept,
        recipients: None,
        commands: Vec::new(),
        name_from_folder: false,
    }
}

fn run(job: &BackupJob) -> Result<BackupOutcome, EngineError> {
    run_backup(job, &mut |_| {}, &AtomicBool::new(false))
}

fn long_dir() -> PathBuf {
    PathBuf::from("l".repeat(60)).join("m".repeat(60))
}

fn long_name() -> String {
    format!("{}.txt", "n".repeat(200))
}

/// A tree with every kind of entry the engine must handle; returns the source folder.
fn build_tree(base: &Path) -> PathBuf {
    let src = base.join("docs");
    fs::create_dir_all(src.join("nested/deep")).unwrap();
    fs::create_dir(src.join("empty")).unwrap();
    fs::write(src.join("a.txt"), "hello\n").unwrap();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(src.join("nested/deep/data.bin"), &data).unwrap();
    fs::create_dir_all(src.join(long_dir())).unwrap();
    fs::write(src.join(long_dir()).join("file.txt"), "long path").unwrap();
    fs::write(src.join(long_name()), "long name").unwrap();
    fs::create_dir(src.join("café")).unwrap();
    fs::write(src.join("café/日本.txt"), "こんにちは").unwrap();
    fs::write(base.join("outside.txt"), "outside").unwrap();
    symlink("a.txt", src.join("link_rel")).unwrap();
    symlink("../outside.txt", src.join("link_out")).unwrap();
    symlink("/nonexistent/dangling", src.join("link_abs")).unwrap();
    fs::write(src.join("hard1"), "linked").unwrap();
    fs::hard_link(src.join("hard1"), src.join("nested/hard2")).unwrap();
    fs::write(src.join("exec.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("exec.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(src.join("secret"), "s").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(src.join("old.txt"), "old").unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(978_307_200); // 2001-01-01
    File::options()
        .write(true)
        .open(src.join("old.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let status = Command::new("mkfifo")
        .arg(src.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    src
}

fn extract(archive: &Path, compression: Compression, into: &Path) {
    let flag = match compression.codec() {
        Codec::None => "-xf",
        Codec::Gzip => "-xzf",
        Codec::Zstd => "--zstd",
    };
    let mut cmd = Command::new("tar");
    cmd.arg("-C").arg(into);
    if compression.codec() == Codec::Zstd {
        cmd.arg(flag).arg("-xf");
    } else {
        cmd.arg(flag);
    }
    let out = cmd.arg(archive).output().unwrap();
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compares two trees entry by entry: kind, content, mode, mtime, link targets.
fn assert_same_tree(src: &Path, out: &Path) {
    let mut src_names: Vec<_> = fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    src_names.sort();
    let mut out_names: Vec<_> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    out_names.sort();
    assert_eq!(src_names, out_names, "entries of {}", out.display());
    for name in src_names {
        let (s, o) = (src.join(&name), out.join(&name));
        let (sm, om) = (
            fs::symlink_metadata(&s).unwrap(),
            fs::symlink_metadata(&o).unwrap(),
        );
        assert_eq!(sm.file_type(), om.file_type(), "{}", o.display());
        if sm.file_type().is_symlink() {
            assert_eq!(fs::read_link(&s).unwrap(), fs::read_link(&o).unwrap());
            continue;
        }
        assert_eq!(
            sm.mode() & 0o7777,
            om.mode() & 0o7777,
            "mode of {}",
            o.display()
        );
        assert_eq!(sm.mtime(), om.mtime(), "mtime of {}", o.display());
        if sm.is_dir() {
            assert_same_tree(&s, &o);
        } else if sm.file_type().is_fifo() {
            // A FIFO has no content to compare (and reading one waits for a writer).
        } else {
            assert_eq!(
                fs::read(&s).unwrap(),
                fs::read(&o).unwrap(),
                "{}",
                o.display()
            );
        }
    }
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn round_trip(compression: Compression, extension: &str) {
    let base = tempfile::tempdir().unwrap();
    let src = build_tree(base.path());
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();

    let outcome = run(&job(&src, &dest, compression, &[])).unwrap();
    let stem = "docs_20250102_030405";
    assert_eq!(outcome.archive, dest.join(format!("{stem}{extension}")));
    assert_eq!(outcome.manifest_path, dest.join(format!("{stem}.json")));
    assert_eq!(
        dir_names(&dest),
        [format!("{stem}.json"), format!("{stem}{extension}")]
    );

    let m = &outcome.manifest;
    assert_eq!(m.checksum_sha256, sha256sum(&outcome.archive));
    assert_eq!(m.size_bytes, fs::metadata(&outcome.archive).unwrap().len());
    assert_eq!(m.size_human, human_size(m.size_bytes));
    assert_eq!(m.compression, compression.codec());
    assert_eq!(m.level, compression.level());
    assert_eq!(m.created, "20250102_030405");
    assert_eq!(m.source, src);
    assert!(m.backup_file.is_absolute());
    // a.txt, data.bin, file.txt, long name, 日本.txt, hard1, hard2, exec.sh, secret, old.txt,
    // and the FIFO
    assert_eq!(m.files, 11);
    assert_eq!(m.hardlinks, 1);
    assert_eq!(m.symlinks, 3);
    // docs, nested, deep, empty, l…, m…, café
    assert_eq!(m.dirs, 7);
    assert_eq!(m.bytes_in, 300_000 + 6 + 9 + 9 + 15 + 6 + 10 + 1 + 3);
    // hard2 is a link entry: its bytes are not read again.
    assert_eq!(
        m.warnings,
        Vec::<String>::new(),
        "the FIFO is stored, as GNU tar does"
    );
    let on_disk = Manifest::from_json(&fs::read(&outcome.manifest_path).unwrap()).unwrap();
    assert_eq!(&on_disk, m);

    let out = base.path().join("out");
    fs::create_dir(&out).unwrap();
    extract(&outcome.archive, compression, &out);
    assert_eq!(
        dir_names(&out),
        ["docs"],
        "everything under one top-level folder"
    );
    assert_same_tree(&src, &out.join("docs"));
    let h1 = fs::metadata(out.join("docs/hard1")).unwrap();
    let h2 = fs::metadata(out.join("docs/nested/hard2")).unwrap();
    assert_eq!(h1.ino(), h2.ino(), "hard link restored as a link");
    assert!(out.join("docs/empty").is_dir());
    let pipe = fs::symlink_metadata(out.join("docs/pipe")).unwrap();
    assert!(pipe.file_type().is_fifo(), "the FIFO comes back as a FIFO");
}

#[test]
fn warnings_past_the_most_listed_are_counted_in_one_more() {
    // A tree of a million unreadable entries made a manifest too large to be read back.
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..archive::MOST_WARNINGS + 2 {
        drop(std::os::unix::net::UnixListener::bind(src.join(format!("{i}.sock"))).unwrap());
    }
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let outcome = run(&job(&src, &dest, Compression::default(), &[])).unwrap();
    let warnings = &outcome.manifest.warnings;
    assert_eq!(warnings.len(), archive::MOST_WARNINGS + 1);
    assert!(
        warnings[0].ends_with(": skipped: socket"),
        "{}",
        warnings[0]
    );
    assert_eq!(warnings.last().unwrap(), "and 2 more warnings, not listed");
}

#[test]
fn a_socket_is_left_out_with_a_warning_that_is_not_a_skip() {
    let base = tempfile::tempdir().unwrap();
    let src = build_tree(base.path());
    let _listening = std::os::unix::net::UnixListener::bind(src.join("app.sock")).unwrap();
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let outcome = run(&job(&src, &dest, Compression::default(), &[])).unwrap();
    let expected = format!("{}: skipped: socket", src.join("app.sock").display());
    assert_eq!(outcome.manifest.warnings, [expected]);
    assert_eq!(
        outcome.manifest.skipped, 0,
        "a socket holds nothing to lose"
    );
}

#[test]
fn a_time_before_1970_is_stored_as_gnu_tar_stores_it() {
    // It was stored as 1970-01-01, the file's date lost.
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    fs::create_dir(&src).unwrap();
    let old = fs::File::create(src.join("old.txt")).unwrap();
    let june_1960 = std::time::UNIX_EPOCH - std::time::Duration::from_secs(302_313_600);
    old.set_modified(june_1960).unwrap();
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let outcome = run(&job(&src, &dest, Compression::of(Codec::None), &[])).unwrap();
    let archive = outcome.archive.clone();
    let mut tar = tar::Archive::new(fs::File::open(&archive).unwrap());
    let mtimes: Vec<(String, i64)> = tar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let mtime = i64::from_ne_bytes(e.header().mtime().unwrap().to_ne_bytes());
            (e.path().unwrap().display().to_string(), mtime)
        })
        .collect();
    assert!(
        mtimes.contains(&("src/old.txt".into(), -302_313_600)),
        "{mtimes:?}"
    );
    // And GNU tar reads the same date.
    let listed = std::process::Command::new("tar")
        .args(["--utc", "-tvf"])
        .arg(&archive)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("1960-06-03"), "{listed}");
}

#[test]
fn round_trip_gzip() {
    round_trip(Compression::default(), ".tar.gz");
}

#[test]
fn round_trip_zstd() {
    round_trip(Compression::of(Codec::Zstd), ".tar.zst");
}

#[test]
fn round_trip_uncompressed() {
    round_trip(Compression::of(Codec::None), ".tar");
}

#[test]
fn same_tree_gives_same_archive() {
    let base = tempfile::tempdir().unwrap();
    let src = build_tree(base.path());
    let (d1, d2) = (base.path().join("d1"), base.path().join("d2"));
    fs::create_dir(&d1).unwrap();
    fs::create_dir(&d2).unwrap();
    let a = run(&job(&src, &d1, Compression::of(Codec::None), &[])).unwrap();
    let b = run(&job(&src, &d2, Compression::of(Codec::None), &[])).unwrap();
    assert_eq!(a.manifest.checksum_sha256, b.manifest.checksum_sha256);
}

#[test]
fn excludes_skip_matching_entries_and_their_contents() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("proj");
    for dir in [
        "node_modules/pkg",
        "web/node_modules",
        ".cache",
        "sub/deeper",
        "a/b",
    ] {
        fs::create_dir_all(src.join(dir)).unwrap();
    }
    for file in [
        "keep.txt",
        "x.tmp",
        "a/b/y.tmp",
        "node_modules/pkg/index.js",
        "web/node_modules/m.js",
        "web/app.js",
        ".cache/blob",
        "sub/a.log",
        "sub/deeper/b.log",
        "top.log",
        "x",
        "a/b/x",
        "a/xy",
    ] {
        fs::write(src.join(file), file).unwrap();
    }
    fs::write(src.join("node_modules_file"), "not a dir").unwrap();
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let excludes = ["*.tmp", "node_modules/", ".cache/", "sub/*.log", "**/x"];
    let outcome = run(&job(&src, &dest, Compression::default(), &excludes)).unwrap();

    let out = Command::new("tar")
        .arg("-tzf")
        .arg(&outcome.archive)
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    let mut entries: Vec<&str> = listing.lines().map(|l| l.trim_end_matches('/')).collect();
    entries.sort_unstable();
    assert_eq!(
        entries,
        [
            "proj",
            "proj/a",
            "proj/a/b",
            "proj/a/xy",
            "proj/keep.txt",
            "proj/node_modules_file",
            "proj/sub",
            "proj/sub/deeper",
            "proj/sub/deeper/b.log",
            "proj/top.log",
            "proj/web",
            "proj/web/app.js",
        ]
    );
}

#[test]
fn invalid_exclude_pattern_is_a_typed_error() {
    assert!(matches!(
        ExcludeSet::new(&["ok", "[unclosed"]),
        Err(EngineError::InvalidPattern { pattern, .. }) if pattern == "[unclosed"
    ));
}

#[test]
fn missing_destination_leaves_nothing() {
    let base = tempfile::tempdir().unwrap();
    let src = build_tree(base.path());
    let dest = base.path().join("missing");
    let err = run(&job(&src, &dest, Compression::default(), &[])).unwrap_err();
    assert!(matches!(err, EngineError::Destination { .. }), "{err}");
    assert!(!dest.exists());
}

#[test]
fn a_name_another_run_is_writing_counts_as_taken() {
    let base = tempfile::tempdir().unwrap();
    let src = build_tree(base.path());
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let mut j = job(&src, &dest, Compression::default(), &[]);
    // A run of the same name started in the same second, after this one found the name free.
    let _other_run = j.destination.begin(&j.names().archive).unwrap();
    j.destination = Arc::new(LookedTooEarly(LocalFolder::new(&dest)));
    let err = run(&j).unwrap_err();
    assert!(matches!(err, EngineError::ArchiveExists { .. }), "{err}");
}

#[test]
fn existing_archive_is_never_overwritten() {
    let base = tempfile::tempdir().unwrap();
    let src = build_tree(base.path());
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let j = job(&src, &dest, Compression::default(), &[]);
    let archive = dest.join(j.names().archive);
    fs::write(&archive, "earlier run").unwrap();
    let err = run(&j).unwrap_err();
    assert!(matches!(err, EngineError::ArchiveExists { .. }), "{err}");
    assert_eq!(fs::read(&archive).unwrap(), b"earlier run");
    assert_eq!(dir_names(&dest), ["docs_20250102_030405.tar.gz"]);
}

#[test]
fn an_error_in_a_compression_worker_fails_the_run_and_publishes_nothing() {
    use crate::format::parallel_gzip::{BLOCK_SIZE, WORKER_FAULT_MARKER};
    let base = tempfile::tempdir().unwrap();
    let src = build_tree(base.path());
    // Whole copies of the marker in the third block and later: the first ones are written.
    let mut poisoned = vec![b'x'; 2 * BLOCK_SIZE];
    poisoned.extend(WORKER_FAULT_MARKER.repeat(BLOCK_SIZE / WORKER_FAULT_MARKER.len() + 1));
    fs::write(src.join("zz-poisoned"), poisoned).unwrap();
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let err = run(&job(&src, &dest, Compression::default(), &[])).unwrap_err();
    assert!(matches!(err, EngineError::Write { .. }), "{err:?}");
    assert!(
        err.to_string().contains("deflate failed in a worker"),
        "{err}"
    );
    assert!(
        dir_names(&dest).is_empty(),
        "no partial, no archive, no manifest"
    );
}

/// Cancels a backup of an 8 GiB sparse file, its holes read as zeros (seconds of reading and
/// compressing, no disk), at its first progress report.
fn cancel_mid_stream(compression: Compression) {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("big");
    fs::create_dir(&src).unwrap();
    File::create(src.join("zeros"))
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let cancel = AtomicBool::new(false);
    let mut reports = Vec::new();
    let mut on_progress = |p: &Progress| {
        reports.push(*p);
        cancel.store(true, Ordering::Relaxed);
    };
    let j = BackupJob {
        holes: Holes::ReadAsZeros,
        ..job(&src, &dest, compression, &[])
    };
    let err = run_backup(&j, &mut on_progress, &cancel).unwrap_err();
    assert!(matches!(err, EngineError::Cancelled), "{err}");
    assert_eq!(reports.len(), 1);
    assert!(reports[0].bytes_in > 0 && reports[0].bytes_in < 8 << 30);
    assert!(
        dir_names(&dest).is_empty(),
        "no partial, no archive, no manifest"
    );
}

#[test]
fn cancel_from_progress_callback_removes_partial() {
    // Gzip on the worker pool: many blocks are in flight when the cancel comes.
    cancel_mid_stream(Compression::new(Codec::Gzip, Some(1)).unwrap());
}

#[test]
fn cancel_mid_stream_of_multithreaded_zstd_removes_partial() {
    cancel_mid_stream(Compression::new(Codec::Zstd, Some(3)).unwrap());
}

#[test]
fn cancel_before_start_is_cancelled() {
    let base = tempfile::tempdir().unwrap();
    let src = build_tree(base.path());
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let j = job(&src, &dest, Compression::default(), &[]);
    let err = run_backup(&j, &mut |_| {}, &AtomicBool::new(true)).unwrap_err();
    assert!(matches!(err, EngineError::Cancelled));
    assert!(dir_names(&dest).is_empty());
}

#[test]
fn final_progress_report_matches_manifest() {
    let base = tempfile::tempdir().unwrap();
    let src = build_tree(base.path());
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let mut last = None;
    let j = job(&src, &dest, Compression::default(), &[]);
    let outcome = run_backup(&j, &mut |p| last = Some(*p), &AtomicBool::new(false)).unwrap();
    let last = last.unwrap();
    let m = outcome.manifest;
    assert_eq!(last.bytes_out, m.size_bytes);
    assert_eq!(last.bytes_in, m.bytes_in);
    assert_eq!(last.files, m.files + m.symlinks);
    assert_eq!(last.dirs, m.dirs);
}

#[test]
fn missing_source_and_file_source_are_typed_errors() {
    let base = tempfile::tempdir().unwrap();
    let dest = base.path();
    let missing = base.path().join("nope");
    let err = run(&job(&missing, dest, Compression::default(), &[])).unwrap_err();
    assert!(matches!(&err, EngineError::SourceNotFound { path } if *path == missing));
    assert!(err.to_string().contains("nope"));

    let file = base.path().join("file");
    fs::write(&file, "x").unwrap();
    let err = run(&job(&file, dest, Compression::default(), &[])).unwrap_err();
    assert!(matches!(&err, EngineError::SourceNotDirectory { path } if *path == file));
    assert_eq!(dir_names(dest), ["file"]);
}

#[test]
fn planned_names_follow_the_convention_and_write_nothing() {
    let base = tempfile::tempdir().unwrap();
    let j = job(
        base.path(),
        base.path(),
        Compression::new(Codec::Zstd, Some(19)).unwrap(),
        &[],
    );
    let names = j.names();
    assert_eq!(names.archive, "docs_20250102_030405.tar.zst");
    assert_eq!(names.manifest, "docs_20250102_030405.json");
    assert_eq!(names.created, "20250102_030405");
    assert!(dir_names(base.path()).is_empty());

    for bad in ["", "a/b", "..", ".", ".hidden"] {
        let j = BackupJob {
            name: bad.into(),
            ..j.clone()
        };
        assert!(matches!(run(&j), Err(EngineError::InvalidName(_))));
    }
    assert!(dir_names(base.path()).is_empty());
}

/// Builds `depth` nested folders of 20-byte names under `top` through directory handles, as
/// their paths pass `PATH_MAX`, with `f.txt` in the middle one and the deepest one. Returns
/// the relative path of the deepest folder.
fn deep_tree(top: &Path, depth: usize) -> PathBuf {
    use rustix::fs::{Mode, OFlags};
    let open_dir = |parent: &std::os::fd::OwnedFd, name: &str| {
        rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap()
    };
    let mut dir = rustix::fs::open(top, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let mut rel = PathBuf::new();
    for level in 1..=depth {
        let name = format!("{level:0>20}");
        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = open_dir(&dir, &name);
        rel.push(&name);
        if level == depth / 2 || level == depth {
            let fd = rustix::fs::openat(
                &dir,
                "f.txt",
                OFlags::WRONLY | OFlags::CREATE,
                Mode::from_raw_mode(0o644),
            )
            .unwrap();
            std::io::Write::write_all(&mut File::from(fd), format!("level {level}\n").as_bytes())
                .unwrap();
        }
    }
    rel
}

fn tar_lines(args: &[&str], input: Option<&Path>) -> Vec<String> {
    let mut cmd = Command::new("tar");
    cmd.args(args);
    if let Some(input) = input {
        cmd.stdin(File::open(input).unwrap());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_tree_deeper_than_path_max_is_archived_completely() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("docs");
    fs::create_dir(&src).unwrap();
    // 250 levels of 21 bytes: 5,250 bytes of path, and more levels than handles kept open.
    let depth = 250;
    assert!(depth > archive::OPEN_DIRS_LIMIT);
    let deepest = deep_tree(&src, depth);
    assert!(deepest.as_os_str().len() > 4096);
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();

    let outcome = run(&job(&src, &dest, Compression::of(Codec::None), &[])).unwrap();
    let m = &outcome.manifest;
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(m.skipped, 0);
    assert_eq!((m.files, m.dirs), (2, depth as u64 + 1));

    // GNU tar lists the same entries in our archive as in its own archive of the tree.
    let archive = outcome.archive.to_str().unwrap();
    let ours = tar_lines(&["-tf", archive], None);
    let gnu_archive = base.path().join("gnu.tar");
    let base_dir = base.path().to_str().unwrap();
    let gnu = gnu_archive.to_str().unwrap();
    tar_lines(&["-C", base_dir, "-cf", gnu, "docs"], None);
    assert_eq!(ours, tar_lines(&["-tf", gnu], None));
    assert_eq!(ours.len(), depth + 3);
    let bottom = Path::new("docs").join(&deepest).join("f.txt");
    assert!(ours.contains(&bottom.to_str().unwrap().to_owned()));

    // And reads the deepest file back.
    let content = tar_lines(&["-xOf", archive, bottom.to_str().unwrap()], None);
    assert_eq!(content, [format!("level {depth}")]);
}

#[test]
fn a_destination_inside_the_source_is_left_out_by_identity_and_said_once() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("docs");
    fs::create_dir_all(src.join("backups")).unwrap();
    fs::create_dir_all(src.join("home/backups")).unwrap();
    fs::write(src.join("a.txt"), "a").unwrap();
    fs::write(src.join("home/backups/earlier.tar.gz"), "earlier").unwrap();
    // Named through a symlink: no path comparison would see that it lies inside the source.
    let dest = base.path().join("dest-link");
    symlink(src.join("backups"), &dest).unwrap();

    let mut j = job(&src, &dest, Compression::of(Codec::None), &[]);
    j.never_archive = vec![src.join("home/backups"), base.path().join("missing")];
    let first = run(&j).unwrap();
    j.timestamp += chrono::TimeDelta::seconds(1);
    let second = run(&j).unwrap();

    for outcome in [&first, &second] {
        let listing = tar_lines(&["-tf", outcome.archive.to_str().unwrap()], None);
        assert_eq!(
            listing,
            ["docs/", "docs/a.txt", "docs/home/"],
            "{}",
            outcome.archive.display()
        );
        let m = &outcome.manifest;
        assert_eq!(
            m.warnings,
            [
                // In walk order: `backups` comes before `home`.
                format!(
                    "excluding destination {} inside source {}",
                    dest.display(),
                    src.display()
                ),
                format!(
                    "excluding destination {} inside source {}",
                    src.join("home/backups").display(),
                    src.display()
                ),
            ]
        );
        assert_eq!(m.skipped, 0);
    }
}

#[test]
fn a_source_that_is_where_archives_go_is_refused_before_anything_is_written() {
    let base = tempfile::tempdir().unwrap();
    let folder = base.path().join("docs");
    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("a.txt"), "a").unwrap();
    // The destination itself, and the daemon's `backups/` named through a link.
    let link = base.path().join("link");
    symlink(&folder, &link).unwrap();
    let as_destination = job(&folder, &folder, Compression::of(Codec::None), &[]);
    let mut as_backups = job(&link, base.path(), Compression::of(Codec::None), &[]);
    as_backups.never_archive = vec![folder.clone()];
    for (j, expected) in [(&as_destination, &folder), (&as_backups, &folder)] {
        let err = run(j).unwrap_err();
        assert!(
            matches!(&err, EngineError::SourceIsDestination { destination, .. } if destination == expected),
            "{err}"
        );
        assert!(
            err.to_string().contains("choose another destination"),
            "{err}"
        );
    }
    assert_eq!(dir_names(&folder), ["a.txt"]);
    assert_eq!(dir_names(base.path()), ["docs", "link"]);
}

/// A folder that answered "free" just before another run began writing the same name: every
/// name looks free, everything else is the folder's own.
#[derive(Debug)]
struct LookedTooEarly(LocalFolder);

impl Destination for LookedTooEarly {
    fn location(&self) -> PathBuf {
        self.0.location()
    }
    fn path_of(&self, file: &str) -> PathBuf {
        self.0.path_of(file)
    }
    fn files(&self) -> std::io::Result<Vec<(String, u64)>> {
        self.0.files()
    }
    fn any_exists(&self, _files: &[String]) -> std::io::Result<bool> {
        Ok(false)
    }
    fn open(&self, file: &str) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        self.0.open(file)
    }
    fn get(&self, file: &str) -> std::io::Result<Vec<u8>> {
        self.0.get(file)
    }
    fn put_new(&self, file: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.0.put_new(file, bytes)
    }
    fn begin(&self, archive: &str) -> std::io::Result<Box<dyn PendingArchive>> {
        self.0.begin(archive)
    }
    fn remove(&self, file: &str) -> std::io::Result<()> {
        self.0.remove(file)
    }
    fn identity(&self, file: &str) -> std::io::Result<FileIdentity> {
        self.0.identity(file)
    }
    fn remove_if_same(&self, file: &str, expected: &FileIdentity) -> std::io::Result<Removal> {
        self.0.remove_if_same(file, expected)
    }
}

/// A destination shared like `/tmp` (mode 1777), where `nobody` may plant files.
fn shared_destination(base: &Path) -> PathBuf {
    let dest = base.join("shared");
    fs::create_dir(&dest).unwrap();
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o1777)).unwrap();
    dest
}

/// An empty file of `nobody`'s, as another user would plant it.
fn plant(dir: &Path, name: &str) {
    fs::write(dir.join(name), "").unwrap();
    std::os::unix::fs::chown(dir.join(name), Some(NOBODY), Some(NOBODY)).unwrap();
}

fn manifest_at(offset: i64) -> String {
    let at = timestamp() + chrono::TimeDelta::seconds(offset);
    format!("docs_{}.json", at.format(crate::format::TIMESTAMP_FORMAT))
}

#[test]
fn names_another_user_holds_are_skipped_for_a_minute_at_most() {
    if !can_give_files_away() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let src = build_tree(base.path());
    let dest = shared_destination(base.path());
    for offset in 0..3 {
        plant(&dest, &manifest_at(offset));
    }
    let mut j = job(&src, &dest, Compression::default(), &[]);
    assert_eq!(j.claim_free_names().created, "20250102_030408");
    run(&j).unwrap();

    // More than a minute of them: the backup is refused, naming the file and its owner,
    // rather than dated further from its run.
    for offset in 4..70 {
        plant(&dest, &manifest_at(offset));
    }
    let mut j = job(&src, &dest, Compression::default(), &[]);
    j.claim_free_names();
    let err = run(&j).unwrap_err();
    let held = dest.join(manifest_at(64));
    assert!(
        matches!(&err, EngineError::NameHeld { path, uid: NOBODY } if *path == held),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("belongs to another user (uid 65534)"),
        "{err}"
    );
    assert!(!err.to_string().contains("already exists"), "{err}");
    assert!(!dest.join("docs_20250102_030504.tar.gz").exists());
}

/// A folder where, as a watcher would, another user takes the manifest's name as soon as the
/// archive's partial appears.
#[derive(Debug)]
struct SquattedWhileWritten(LocalFolder);

impl Destination for SquattedWhileWritten {
    fn location(&self) -> PathBuf {
        self.0.location()
    }
    fn path_of(&self, file: &str) -> PathBuf {
        self.0.path_of(file)
    }
    fn files(&self) -> std::io::Result<Vec<(String, u64)>> {
        self.0.files()
    }
    fn any_exists(&self, files: &[String]) -> std::io::Result<bool> {
        self.0.any_exists(files)
    }
    fn holder(&self, files: &[String]) -> std::io::Result<Option<Holder>> {
        self.0.holder(files)
    }
    fn rename_new(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.0.rename_new(from, to)
    }
    fn open(&self, file: &str) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        self.0.open(file)
    }
    fn get(&self, file: &str) -> std::io::Result<Vec<u8>> {
        self.0.get(file)
    }
    fn put_new(&self, file: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.0.put_new(file, bytes)
    }
    fn begin(&self, archive: &str) -> std::io::Result<Box<dyn PendingArchive>> {
        let pending = self.0.begin(archive)?;
        plant(
            self.0.dir(),
            &crate::format::naming::manifest_name_for(archive),
        );
        Ok(pending)
    }
    fn remove(&self, file: &str) -> std::io::Result<()> {
        self.0.remove(file)
    }
    fn identity(&self, file: &str) -> std::io::Result<FileIdentity> {
        self.0.identity(file)
    }
    fn remove_if_same(&self, file: &str, expected: &FileIdentity) -> std::io::Result<Removal> {
        self.0.remove_if_same(file, expected)
    }
}

#[test]
fn a_manifest_name_taken_while_the_archive_is_written_moves_the_archive_instead_of_losing_it() {
    if !can_give_files_away() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let src = build_tree(base.path());
    let dest = shared_destination(base.path());
    let mut j = job(&src, &dest, Compression::default(), &[]);
    j.destination = Arc::new(SquattedWhileWritten(LocalFolder::new(&dest)));

    let outcome = run(&j).unwrap();
    assert_eq!(outcome.archive, dest.join("docs_20250102_030406.tar.gz"));
    assert_eq!(
        outcome.manifest_path,
        dest.join("docs_20250102_030406.json")
    );
    assert_eq!(outcome.manifest.backup_file, outcome.archive);
    assert_eq!(outcome.manifest.created, "20250102_030406");
    let stored = Manifest::from_json(&fs::read(&outcome.manifest_path).unwrap()).unwrap();
    assert_eq!(stored, outcome.manifest);
    assert_eq!(
        sha256sum(&outcome.archive),
        outcome.manifest.checksum_sha256
    );
    assert_eq!(
        dir_names(&dest),
        [
            "docs_20250102_030405.json",
            "docs_20250102_030406.json",
            "docs_20250102_030406.tar.gz"
        ]
    );
    let squatted = fs::metadata(dest.join("docs_20250102_030405.json")).unwrap();
    assert_eq!(
        (squatted.uid(), squatted.len()),
        (NOBODY, 0),
        "theirs, untouched"
    );
}

/// Rewrites `file` until its change time moves off `before`'s (a clock tick at most).
fn rewrite_until_changed(file: &Path, before: &fs::Metadata, content: &str) {
    loop {
        fs::write(file, content).unwrap();
        let now = fs::metadata(file).unwrap();
        if (now.ctime(), now.ctime_nsec()) != (before.ctime(), before.ctime_nsec()) {
            return;
        }
    }
}

#[test]
fn a_file_written_to_after_its_first_link_was_read_is_stored_again_with_a_warning() {
    // The same as a file made mid-walk on the inode number of one deleted: a later path with
    // the first's inode number is not that archived file.
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("docs");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("c")).unwrap();
    fs::write(src.join("a/x"), "old").unwrap();
    fs::hard_link(src.join("a/x"), src.join("a/y")).unwrap();
    fs::hard_link(src.join("a/x"), src.join("c/z")).unwrap();
    let before = fs::metadata(src.join("a/x")).unwrap();
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();

    let rewritten = src.join("a/x");
    archive::AFTER_READ.with_borrow_mut(|hook| {
        *hook = Some(Box::new(move |entry: &Path| {
            if entry == Path::new("docs/a/x") {
                rewrite_until_changed(&rewritten, &before, "new");
            }
        }))
    });
    let outcome = run(&job(&src, &dest, Compression::default(), &[]));
    archive::AFTER_READ.with_borrow_mut(|hook| *hook = None);
    let outcome = outcome.unwrap();

    let out = base.path().join("out");
    fs::create_dir(&out).unwrap();
    extract(&outcome.archive, Compression::default(), &out);
    let read = |p: &str| fs::read_to_string(out.join(p)).unwrap();
    assert_eq!(read("docs/a/x"), "old", "as it was read");
    assert_eq!(read("docs/a/y"), "new", "not a link to what a/x was");
    assert_eq!(read("docs/c/z"), "new");
    let z = fs::metadata(out.join("docs/c/z")).unwrap();
    assert_eq!(z.ino(), fs::metadata(out.join("docs/a/y")).unwrap().ino());
    assert_eq!(
        outcome.manifest.warnings,
        [format!(
            "{}: {}",
            src.join("a/x").display(),
            sized_reader::SizeChange::REWRITTEN
        )]
    );
    assert_eq!(outcome.manifest.skipped, 0);
}

#[test]
fn symlink_targets_are_stored_byte_for_byte() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("docs");
    fs::create_dir(&src).unwrap();
    let long = format!("{}//x/./", "d".repeat(120));
    let targets = [
        "a//b/./c/",
        "file/.",
        "//srv/x",
        "/./etc/hostname",
        "./x",
        &long,
    ];
    for (i, target) in targets.iter().enumerate() {
        symlink(target, src.join(format!("link{i}"))).unwrap();
    }
    let dest = base.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let outcome = run(&job(&src, &dest, Compression::default(), &[])).unwrap();
    let out = base.path().join("out");
    fs::create_dir(&out).unwrap();
    extract(&outcome.archive, Compression::default(), &out);
    for (i, target) in targets.iter().enumerate() {
        let restored = fs::read_link(out.join(format!("docs/link{i}"))).unwrap();
        // As bytes: paths compare by their parts, which would call `a//b` and `a/b` equal.
        assert_eq!(restored.as_os_str(), std::ffi::OsStr::new(target));
    }
}
