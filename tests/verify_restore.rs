//! `backupctl verify` (checksum, truncation, missing manifest, `--name`, `--all`, verify after
//! a scheduled run, no echo of a non-archive's bytes), `backupctl restore` (round trip,
//! refusals, `--path`, `--overwrite`, hostile archives), `backupctl ls` and
//! `backupctl backups --long`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{PATIENCE, TestHome, far_time, sha256sum, snapshot, threads_of, wait_for};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// A source folder `<work>/<dir>` with one file of `size` pseudo-random (incompressible) bytes.
fn random_source(t: &TestHome, dir: &str, size: usize) -> PathBuf {
    let src = t.work().join(dir);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("data.bin"),
        common::incompressible(size, size as u64),
    )
    .unwrap();
    src
}

use common::run_for_archive as backup;

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_owned()
}

fn manifest_path(archive: &Path) -> PathBuf {
    let name = file_name(archive);
    // `.tar`, `.tar.gz`, `.tar.zst`, each maybe `.age`.
    let (stem, _) = name.split_once(".tar").unwrap();
    archive.with_file_name(format!("{stem}.json"))
}

fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Cuts the archive in half and makes its manifest match the shorter file.
fn truncate_with_matching_manifest(archive: &Path) {
    let len = std::fs::metadata(archive).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(archive)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    vouch_for_current_bytes(archive);
}

/// Makes the manifest's checksum and size those of the archive's current bytes, as someone
/// who can write both would: only reading the archive itself can find the damage.
fn vouch_for_current_bytes(archive: &Path) {
    let manifest = manifest_path(archive);
    let mut value: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    value["checksum_sha256"] = Value::String(sha256sum(archive));
    value["size_bytes"] = Value::from(std::fs::metadata(archive).unwrap().len());
    std::fs::write(&manifest, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

/// Appends `tail` to the archive, with a manifest that vouches for the longer file.
fn append_with_matching_manifest(archive: &Path, tail: &[u8]) {
    let mut bytes = std::fs::read(archive).unwrap();
    bytes.extend_from_slice(tail);
    std::fs::write(archive, bytes).unwrap();
    vouch_for_current_bytes(archive);
}

#[track_caller]
fn assert_verify_fails(out: &common::Ctl, failed: usize, total: usize) {
    assert_eq!(out.code(), 1, "stdout {:?}", out.stdout());
    assert_eq!(
        out.stderr(),
        format!("Error: {failed} of {total} archives failed verification\n")
    );
}

#[test]
fn fresh_archives_verify_ok_by_path_file_name_name_and_all() {
    let t = TestHome::new();
    random_source(&t, "src", 50_000);
    let _daemon = t.start_daemon();
    let gz = backup(&t, &["--sources", "src", "--name", "g"]);
    let zst = backup(
        &t,
        &["--sources", "src", "--name", "z", "--compression", "zstd"],
    );
    let plain = backup(
        &t,
        &["--sources", "src", "--name", "n", "--compression", "none"],
    );
    for archive in [&gz, &zst, &plain] {
        let ok = format!("{}: OK\n", file_name(archive));
        assert_eq!(t.ctl(&["verify", archive.to_str().unwrap()]).ok(), ok);
        assert_eq!(t.ctl(&["verify", &file_name(archive)]).ok(), ok);
    }
    assert_eq!(
        t.ctl(&["verify", "--name", "z"]).ok(),
        format!("{}: OK\n", file_name(&zst))
    );
    let all = t.ctl(&["verify", "--all"]).ok();
    let lines: BTreeSet<&str> = all.lines().collect();
    let expected: BTreeSet<String> = [&gz, &zst, &plain]
        .iter()
        .map(|a| format!("{}: OK", file_name(a)))
        .collect();
    assert_eq!(
        lines,
        expected.iter().map(String::as_str).collect(),
        "{all}"
    );
    assert_eq!(all.lines().count(), 3, "{all}");

    let json = t.ctl(&["--json", "verify", "--all"]);
    let answer: Value = serde_json::from_str(json.ok().trim()).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    let archives = answer["data"]["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 3, "{answer}");
    assert!(archives.iter().all(|a| a["status"] == "ok"), "{answer}");

    let missing = t.ctl(&["verify", "nothing_20200101_000000.tar.gz"]);
    assert_eq!(missing.code(), 1, "{}", missing.stdout());
    assert!(
        missing.stderr().starts_with("Error: "),
        "{}",
        missing.stderr()
    );
}

#[test]
fn a_flipped_byte_is_a_checksum_mismatch() {
    let t = TestHome::new();
    random_source(&t, "src", 100_000);
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "src"]);
    flip_middle_byte(&archive);
    let out = t.ctl(&["verify", archive.to_str().unwrap()]);
    assert_verify_fails(&out, 1, 1);
    let stdout = out.stdout();
    assert!(
        stdout.starts_with(&format!("{}: checksum mismatch", file_name(&archive))),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

#[test]
fn a_truncated_archive_with_a_matching_manifest_is_reported_truncated() {
    let t = TestHome::new();
    // Incompressible, so that half of the archive ends inside the file's data.
    random_source(&t, "src", 1 << 20);
    let _daemon = t.start_daemon();
    for compression in ["gzip", "zstd", "none"] {
        let archive = backup(
            &t,
            &[
                "--sources",
                "src",
                "--name",
                compression,
                "--compression",
                compression,
            ],
        );
        truncate_with_matching_manifest(&archive);
        let out = t.ctl(&["verify", "--name", compression]);
        assert_verify_fails(&out, 1, 1);
        let stdout = out.stdout();
        assert!(
            stdout.starts_with(&format!("{}: truncated", file_name(&archive))),
            "{compression}: {stdout}"
        );
    }
}

#[test]
fn a_missing_manifest_is_reported() {
    let t = TestHome::new();
    random_source(&t, "src", 1000);
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "src"]);
    std::fs::remove_file(manifest_path(&archive)).unwrap();
    let out = t.ctl(&["verify", &file_name(&archive)]);
    assert_verify_fails(&out, 1, 1);
    let stdout = out.stdout();
    assert!(
        stdout.starts_with(&format!("{}: manifest missing", file_name(&archive))),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

#[test]
fn verify_all_reports_every_archive_and_fails_if_one_fails() {
    let t = TestHome::new();
    random_source(&t, "src", 200_000);
    let _daemon = t.start_daemon();
    let good = backup(&t, &["--sources", "src", "--name", "good"]);
    let flipped = backup(&t, &["--sources", "src", "--name", "flipped"]);
    let cut = backup(&t, &["--sources", "src", "--name", "cut"]);
    let bare = backup(&t, &["--sources", "src", "--name", "bare"]);
    flip_middle_byte(&flipped);
    truncate_with_matching_manifest(&cut);
    std::fs::remove_file(manifest_path(&bare)).unwrap();

    let out = t.ctl(&["verify", "--all"]);
    assert_verify_fails(&out, 3, 4);
    let stdout = out.stdout();
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    for (archive, status) in [
        (&good, "OK"),
        (&flipped, "checksum mismatch"),
        (&cut, "truncated"),
        (&bare, "manifest missing"),
    ] {
        let prefix = format!("{}: {status}", file_name(archive));
        assert!(
            stdout.lines().any(|l| l.starts_with(&prefix)),
            "no {prefix:?} in {stdout}"
        );
    }

    let json = t.ctl(&["--json", "verify", "--all"]);
    assert_eq!(json.code(), 1);
    let answer: Value = serde_json::from_str(json.stdout().trim()).unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["error"]["code"], "verify_failed", "{answer}");
    assert_eq!(answer["data"]["ok"], 1, "{answer}");
    assert_eq!(answer["data"]["failed"], 3, "{answer}");
    let statuses: BTreeMap<String, String> = answer["data"]["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let archive = a["archive"].as_str().unwrap();
            let name = Path::new(archive).file_name().unwrap().to_str().unwrap();
            (name.to_owned(), a["status"].as_str().unwrap().to_owned())
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        (&good, "ok"),
        (&flipped, "checksum_mismatch"),
        (&cut, "truncated"),
        (&bare, "manifest_missing"),
    ]
    .iter()
    .map(|(a, s)| (file_name(a), s.to_string()))
    .collect();
    assert_eq!(statuses, expected, "{answer}");

    // `--name` picks one name's archives only.
    assert_eq!(
        t.ctl(&["verify", "--name", "good"]).ok(),
        format!("{}: OK\n", file_name(&good))
    );
}

#[test]
fn a_schedule_with_verify_after_runs_and_its_archive_verifies() {
    let t = TestHome::new();
    random_source(&t, "src", 10_000);
    let _daemon = t.start_daemon();
    t.ctl(&[
        "create",
        "--source",
        "src",
        "--name",
        "v",
        "--daily",
        &far_time(),
        "--verify-after",
    ])
    .ok();
    t.ctl(&["run", "--name", "v"]).ok();
    let out = t.ctl(&["verify", "--name", "v"]).ok();
    let line = out
        .strip_suffix(": OK\n")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.starts_with("v_") && line.ends_with(".tar.gz") && !line.contains('\n'),
        "{out}"
    );
}

/// A tree for restoring: nested folders, a read-only folder, an executable, a private file,
/// an old mtime, symlinks, a long path and non-ASCII names.
fn make_tree(root: &Path) {
    common::base_tree(root);
    let file = |p: &str, content: &[u8]| std::fs::write(root.join(p), content).unwrap();
    std::fs::create_dir(root.join("ro")).unwrap();
    file("ro/inside.txt", b"in a read-only folder\n");
    std::fs::set_permissions(root.join("ro"), PermissionsExt::from_mode(0o555)).unwrap();
    std::fs::set_permissions(root.join("empty"), PermissionsExt::from_mode(0o700)).unwrap();
    file("old.txt", b"old\n");
    set_mtime(&root.join("old.txt"), OLD);
    std::os::unix::fs::symlink("docs/readme.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    // Last, so that nothing written into it changes it again.
    set_mtime(&root.join("docs/nested"), OLD);
}

const OLD: u64 = 1_000_000_000;

fn set_mtime(path: &Path, secs: u64) {
    std::fs::File::open(path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// Makes read-only folders writable again when dropped, so that the temporary directory can
/// be removed even when a test fails.
struct Unlock(Vec<PathBuf>);

impl Drop for Unlock {
    fn drop(&mut self) {
        for root in &self.0 {
            if root.exists() {
                let _ = Command::new("chmod")
                    .arg("-R")
                    .arg("u+w")
                    .arg(root)
                    .status();
            }
        }
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn restore_round_trips_a_tree() {
    let t = TestHome::new();
    let tree = t.work().join("tree");
    let target = t.work().join("restored");
    let _unlock = Unlock(vec![tree.clone(), target.clone()]);
    make_tree(&tree);
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "tree"]);
    t.ctl(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(names(&target), BTreeSet::from(["tree".to_owned()]));
    let restored = target.join("tree");
    assert_eq!(snapshot(&restored), snapshot(&tree));
    assert_eq!(
        std::fs::metadata(restored.join("ro")).unwrap().mode() & 0o7777,
        0o555,
        "the read-only folder is read-only again, with its file inside"
    );
    assert_eq!(
        std::fs::metadata(restored.join("docs/nested"))
            .unwrap()
            .mtime(),
        OLD as i64,
        "folder mtimes are restored too"
    );

    // Without waiting for the disk, as `tar -x`: the same tree, replacing as asked.
    let quick = t.work().join("quick");
    let _unlock = Unlock(vec![quick.clone()]);
    for extra in [&[][..], &["--overwrite"][..]] {
        let mut args = vec!["restore", archive.to_str().unwrap(), "--no-sync"];
        args.extend(["--to", quick.to_str().unwrap()]);
        args.extend(extra);
        t.ctl(&args).ok();
        assert_eq!(snapshot(&quick.join("tree")), snapshot(&tree), "{extra:?}");
    }
}

#[test]
fn restore_into_a_non_empty_target_keeps_its_files_and_never_overwrites_unasked() {
    let t = TestHome::new();
    let src = random_source(&t, "src", 1000);
    std::fs::write(src.join("notes.txt"), b"from the backup").unwrap();
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "src"]);
    let target = t.work().join("busy");
    std::fs::create_dir_all(target.join("src")).unwrap();
    std::fs::write(target.join("existing.txt"), b"mine").unwrap();
    std::fs::write(target.join("src/notes.txt"), b"edited since").unwrap();
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            archive.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        t.ctl(&args)
    };

    // A taken name fails the whole restore before anything is written.
    let out = restore(&[]);
    assert_eq!(out.code(), 1, "{}", out.stdout());
    assert!(out.stderr().starts_with("Error: "), "{}", out.stderr());
    assert!(out.stderr().contains("src/notes.txt"), "{}", out.stderr());
    assert!(out.stderr().contains("--overwrite"), "{}", out.stderr());
    assert_eq!(
        names(&target.join("src")),
        BTreeSet::from(["notes.txt".to_owned()])
    );
    assert_eq!(
        std::fs::read(target.join("src/notes.txt")).unwrap(),
        b"edited since"
    );

    // One file into the existing folder: refused, then replaced with --overwrite.
    let out = restore(&["--path", "notes.txt"]);
    assert_eq!(out.code(), 1, "{}", out.stdout());
    restore(&["--path", "notes.txt", "--overwrite"]).ok();
    assert_eq!(
        std::fs::read(target.join("src/notes.txt")).unwrap(),
        b"from the backup"
    );
    assert_eq!(
        names(&target.join("src")),
        BTreeSet::from(["notes.txt".to_owned()])
    );

    // The rest of the archive lands beside what was there, which is kept.
    std::fs::remove_file(target.join("src/notes.txt")).unwrap();
    restore(&[]).ok();
    assert_eq!(std::fs::read(target.join("existing.txt")).unwrap(), b"mine");
    assert_eq!(snapshot(&target.join("src")), snapshot(&src));
}

#[test]
fn verify_of_a_file_that_is_not_an_archive_does_not_echo_it() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let secret = t.work().join("passwd");
    let lines: String = (0..40)
        .map(|i| format!("user{i}:x:SECRET_MARKER_{i}:0:/home:/bin/sh\n"))
        .collect();
    std::fs::write(&secret, lines).unwrap();
    // A sibling "manifest" of the same stem that is not one.
    std::fs::write(
        t.work().join("passwd.json"),
        br#"{"size_bytes":"SECRET_MARKER"}"#,
    )
    .unwrap();
    for args in [
        vec!["verify", secret.to_str().unwrap()],
        vec!["--json", "verify", secret.to_str().unwrap()],
    ] {
        let out = t.ctl(&args);
        assert_eq!(out.code(), 1, "{}", out.stdout());
        let said = format!("{}{}", out.stdout(), out.stderr());
        assert!(said.contains("passwd"), "{said}");
        assert!(!said.contains("SECRET_MARKER"), "{said}");
    }
    let out = t.ctl(&[
        "restore",
        secret.to_str().unwrap(),
        "--to",
        "/tmp/unused_restore",
    ]);
    assert_eq!(out.code(), 1);
    assert!(!out.stderr().contains("SECRET_MARKER"), "{}", out.stderr());
    assert!(!t.log().contains("SECRET_MARKER"), "{}", t.log());
}

#[test]
fn restore_refuses_an_archive_that_does_not_match_its_manifest() {
    let t = TestHome::new();
    random_source(&t, "src", 100_000);
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "src"]);
    flip_middle_byte(&archive);
    let target = t.work().join("out");
    let out = t.ctl(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 1, "{}", out.stdout());
    assert!(out.stderr().starts_with("Error: "), "{}", out.stderr());
    assert!(!target.exists(), "nothing is written");
}

#[test]
fn restore_path_restores_only_that_subtree() {
    let t = TestHome::new();
    let tree = t.work().join("tree");
    let _unlock = Unlock(vec![tree.clone()]);
    make_tree(&tree);
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "tree"]);
    // The subpath is relative to the source folder, or starts with its name; an existing
    // empty folder is a fine target.
    for (path, target) in [("docs", "only_docs"), ("tree/docs", "only_docs_too")] {
        let target = t.work().join(target);
        std::fs::create_dir(&target).unwrap();
        t.ctl(&[
            "restore",
            &file_name(&archive),
            "--to",
            target.to_str().unwrap(),
            "--path",
            path,
        ])
        .ok();
        assert_eq!(
            names(&target),
            BTreeSet::from(["tree".to_owned()]),
            "{path}"
        );
        assert_eq!(
            names(&target.join("tree")),
            BTreeSet::from(["docs".to_owned()]),
            "{path}"
        );
        assert_eq!(
            snapshot(&target.join("tree/docs")),
            snapshot(&tree.join("docs")),
            "{path}"
        );
    }
}

/// A tar header with raw name (and link name) bytes, which `Header::set_path` would refuse.
fn raw_header(path: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    {
        let old = header.as_old_mut();
        assert!(path.len() < old.name.len(), "{path}");
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            assert!(link.len() < old.linkname.len(), "{link}");
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    header.set_mtime(1_700_000_000);
    // Owned by whoever runs the test, so that a restore that keeps owners (as root) can.
    let me = std::fs::metadata("/proc/self").unwrap();
    header.set_uid(me.uid().into());
    header.set_gid(me.gid().into());
    header.set_cksum();
    header
}

/// One entry of a hand-made archive: raw path, kind, content, link target.
type RawEntry<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

/// A tar stream of raw entries, with its end-of-archive marker, into `out`.
fn raw_tar<W: std::io::Write>(out: W, entries: &[RawEntry]) -> W {
    let mut builder = tar::Builder::new(out);
    for (path, kind, data, link) in entries {
        let header = raw_header(path, *kind, data.len() as u64, *link);
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Writes `<home>/backups/<stem>.tar.gz` from raw entries, with a manifest that matches it.
fn hostile_archive(t: &TestHome, stem: &str, entries: &[RawEntry]) {
    hostile_archive_as(t, stem, ".tar.gz", entries);
}

/// [`hostile_archive`] as `<stem><suffix>`, `.tar.gz` or `.tar` (not compressed); returns its
/// path.
fn hostile_archive_as(t: &TestHome, stem: &str, suffix: &str, entries: &[RawEntry]) -> PathBuf {
    let backups = t.home().join("backups");
    let archive = backups.join(format!("{stem}{suffix}"));
    let file = std::fs::File::create(&archive).unwrap();
    let gzip = suffix == ".tar.gz";
    if gzip {
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        raw_tar(gz, entries).finish().unwrap();
    } else {
        raw_tar(file, entries);
    }
    let size = std::fs::metadata(&archive).unwrap().len();
    let (name, created) = stem.split_once('_').unwrap();
    let manifest = serde_json::json!({
        "backup_file": archive,
        "source": "/evil/top",
        "created": created,
        "size_bytes": size,
        "size_human": format!("{size} B"),
        "checksum_sha256": sha256sum(&archive),
        "name": name,
        "compression": if gzip { "gzip" } else { "none" },
        "level": 6,
        "files": entries.len(),
        "dirs": 1,
        "symlinks": 1,
        "hardlinks": 0,
        "bytes_in": 40,
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
    archive
}

#[test]
fn a_hostile_archive_writes_nothing_outside_the_target() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let outside = t.work().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let absolute = t.work().join("abs/evil");
    let absolute = absolute.to_str().unwrap();
    use tar::EntryType::{Directory, Regular, Symlink};
    hostile_archive(
        &t,
        "evil_20250101_000000",
        &[
            ("top/", Directory, b"", None),
            ("top/ok.txt", Regular, b"fine\n", None),
            (absolute, Regular, b"absolute\n", None),
            ("../escape", Regular, b"escape\n", None),
            ("top/../../escape2", Regular, b"escape2\n", None),
            ("top/link", Symlink, b"", Some(outside.to_str().unwrap())),
            ("top/link/pwned", Regular, b"pwned\n", None),
            ("top/after.txt", Regular, b"after\n", None),
        ],
    );
    let before = names(t.work());

    let target = t.work().join("target");
    let out = t.ctl(&[
        "restore",
        "evil_20250101_000000.tar.gz",
        "--to",
        target.to_str().unwrap(),
    ]);
    let stdout = out.stdout();
    assert_eq!(out.code(), 1, "stdout {stdout:?} stderr {:?}", out.stderr());
    // `top/link` itself may be refused too (its target is outside), or created.
    let stderr = out.stderr();
    assert!(
        stderr == "Error: 4 entries refused\n" || stderr == "Error: 5 entries refused\n",
        "{stderr:?}; stdout {stdout}"
    );
    for hostile in [absolute, "../escape", "top/../../escape2", "top/link/pwned"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("Refused: {hostile}: "))),
            "{hostile} not reported: {stdout}"
        );
    }
    assert_eq!(std::fs::read(target.join("top/ok.txt")).unwrap(), b"fine\n");
    assert_eq!(
        std::fs::read(target.join("top/after.txt")).unwrap(),
        b"after\n",
        "entries after the refused ones are restored"
    );
    assert_eq!(
        names(&outside),
        BTreeSet::new(),
        "nothing written through the link"
    );
    let mut expected = before;
    expected.insert("target".to_owned());
    assert_eq!(names(t.work()), expected, "nothing next to the target");
    assert_eq!(names(&target), BTreeSet::from(["top".to_owned()]));
    let top = names(&target.join("top"));
    assert!(
        top.contains("ok.txt") && top.contains("after.txt"),
        "{top:?}"
    );
    assert!(
        top.iter()
            .all(|n| ["ok.txt", "after.txt", "link"].contains(&n.as_str())),
        "{top:?}"
    );
}

#[test]
fn backups_long_groups_by_name_newest_first_with_the_verify_status() {
    let t = TestHome::new();
    random_source(&t, "src", 5_000);
    let _daemon = t.start_daemon();
    // Two runs of one name get consecutive timestamps: the second is the newer.
    let beta_old = backup(&t, &["--sources", "src", "--name", "beta"]);
    let beta_new = backup(&t, &["--sources", "src", "--name", "beta"]);
    let alpha_old = backup(&t, &["--sources", "src", "--name", "alpha"]);
    let alpha_new = backup(&t, &["--sources", "src", "--name", "alpha"]);
    let all = [&alpha_new, &alpha_old, &beta_new, &beta_old];
    assert!(file_name(&alpha_new) > file_name(&alpha_old));
    assert!(file_name(&beta_new) > file_name(&beta_old));

    // Without --long: the plain file names, as before.
    let plain = t.ctl(&["backups"]).ok();
    let mut sorted: Vec<String> = all.iter().map(|a| file_name(a)).collect();
    sorted.sort();
    assert_eq!(plain.lines().collect::<Vec<_>>(), sorted, "{plain}");

    t.ctl(&["verify", "--name", "alpha"]).ok();

    let long = t.ctl(&["backups", "--long"]).ok();
    let line_of = |archive: &Path| -> usize {
        let name = file_name(archive);
        let found: Vec<usize> = long
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(&name))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found.len(), 1, "{name} once in {long}");
        found[0]
    };
    let lines: Vec<&str> = long.lines().collect();
    let (an, ao, bn, bo) = (
        line_of(&alpha_new),
        line_of(&alpha_old),
        line_of(&beta_new),
        line_of(&beta_old),
    );
    assert!(an < ao && bn < bo, "newest first: {long}");
    assert!(ao < bn || bo < an, "grouped by name: {long}");
    for index in [an, ao] {
        assert!(
            lines[index].contains("ok") && !lines[index].contains("not verified"),
            "{}",
            lines[index]
        );
    }
    for index in [bn, bo] {
        assert!(lines[index].contains("not verified"), "{}", lines[index]);
    }

    let json = t.ctl(&["--json", "backups", "--long"]).ok();
    let answer: Value = serde_json::from_str(json.trim()).unwrap();
    let data = &answer["data"];
    assert_eq!(data["backups"].as_array().unwrap().len(), 4, "{answer}");
    let groups = data["groups"].as_array().unwrap();
    let group_names: BTreeSet<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(group_names, BTreeSet::from(["alpha", "beta"]), "{answer}");
    for group in groups {
        let (newest, oldest, verified) = if group["name"] == "alpha" {
            (&alpha_new, &alpha_old, true)
        } else {
            (&beta_new, &beta_old, false)
        };
        let archives = group["archives"].as_array().unwrap();
        let files: Vec<&str> = archives
            .iter()
            .map(|a| a["file"].as_str().unwrap())
            .collect();
        assert_eq!(files, [file_name(newest), file_name(oldest)], "{answer}");
        for (entry, archive) in archives.iter().zip([newest, oldest]) {
            assert_eq!(
                entry["size_bytes"],
                std::fs::metadata(archive).unwrap().len(),
                "{entry}"
            );
            assert_eq!(entry["compression"], "gzip", "{entry}");
            assert_eq!(entry["files"], 1, "{entry}");
            if verified {
                assert_eq!(entry["verify"]["status"], "ok", "{entry}");
            } else {
                assert!(entry["verify"].is_null(), "{entry}");
            }
        }
    }
}

#[test]
fn a_file_put_under_a_verified_archive_s_name_is_not_shown_as_verified() {
    let t = TestHome::new();
    random_source(&t, "src", 5_000);
    let daemon = t.start_daemon();
    let kept = backup(&t, &["--sources", "src"]);
    let replaced = backup(&t, &["--sources", "src"]);
    t.ctl(&["verify", "--all"]).ok();
    // Another file, written beside and renamed into the verified archive's name.
    let other = replaced.with_file_name(".other");
    std::fs::write(&other, std::fs::read(&kept).unwrap()).unwrap();
    std::fs::rename(&other, &replaced).unwrap();

    let verify_of = |archive: &Path| -> Value {
        let json = t.ctl(&["--json", "backups", "--long"]).ok();
        let answer: Value = serde_json::from_str(json.trim()).unwrap();
        let entries = answer["data"]["groups"][0]["archives"].as_array().unwrap();
        let entry = entries
            .iter()
            .find(|e| e["file"] == file_name(archive).as_str())
            .unwrap();
        entry["verify"].clone()
    };
    assert_eq!(verify_of(&kept)["status"], "ok");
    assert!(verify_of(&replaced).is_null(), "{}", verify_of(&replaced));
    // And after a restart, from the saved marks.
    drop(daemon);
    let _daemon = t.start_daemon();
    assert_eq!(verify_of(&kept)["status"], "ok");
    assert!(verify_of(&replaced).is_null(), "{}", verify_of(&replaced));
}

#[test]
fn a_hard_link_to_a_file_outside_the_target_is_refused() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let outside = t.work().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    let absolute = victim.to_str().unwrap();
    use tar::EntryType::{Directory, Link, Regular};
    // Each link is followed by a file of the same name, which would be written through it.
    hostile_archive(
        &t,
        "links_20250101_000000",
        &[
            ("top/", Directory, b"", None),
            ("top/ok.txt", Regular, b"fine\n", None),
            ("top/abs", Link, b"", Some(absolute)),
            ("top/abs", Regular, b"pwned\n", None),
            ("top/rel", Link, b"", Some("../outside/victim")),
            ("top/rel", Regular, b"pwned\n", None),
            ("top/after.txt", Regular, b"after\n", None),
        ],
    );
    let target = t.work().join("target");
    let out = t.ctl(&[
        "restore",
        "links_20250101_000000.tar.gz",
        "--to",
        target.to_str().unwrap(),
    ]);
    let stdout = out.stdout();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n", "{stdout}");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().nlink(),
        1,
        "nothing in the target is linked to a file outside it: {stdout}"
    );
    assert_eq!(names(&outside), BTreeSet::from(["victim".to_owned()]));
    assert_eq!(out.code(), 1, "stdout {stdout:?} stderr {:?}", out.stderr());
    for hostile in ["top/abs", "top/rel"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("Refused: {hostile}: "))),
            "{hostile} not reported: {stdout}"
        );
    }
    assert_eq!(std::fs::read(target.join("top/ok.txt")).unwrap(), b"fine\n");
    assert_eq!(
        std::fs::read(target.join("top/after.txt")).unwrap(),
        b"after\n"
    );
}

/// The audit's case: a file in a private folder of the target, linked from a public folder
/// the archive makes, would be readable to anyone through the link.
#[test]
fn a_hard_link_to_a_file_the_restore_did_not_write_is_refused() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let target = t.work().join("out3");
    let private = target.join("victim");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(&private, PermissionsExt::from_mode(0o700)).unwrap();
    let victim = private.join("notes");
    std::fs::write(&victim, b"private\n").unwrap();
    use tar::EntryType::{Directory, Link};
    hostile_archive(
        &t,
        "links_20250101_000000",
        &[
            ("pub/", Directory, b"", None),
            ("pub/notes", Link, b"", Some("victim/notes")),
        ],
    );
    for extra in [&[][..], &["--overwrite"][..]] {
        let mut args = vec![
            "restore",
            "links_20250101_000000.tar.gz",
            "--to",
            target.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = t.ctl(&args);
        let stdout = out.stdout();
        assert_eq!(out.code(), 1, "stdout {stdout:?} stderr {:?}", out.stderr());
        assert!(
            stdout
                .lines()
                .any(|l| l == "Refused: pub/notes: hard link target victim/notes was not restored"),
            "{stdout}"
        );
        assert_eq!(names(&target.join("pub")), BTreeSet::new(), "{extra:?}");
        assert_eq!(std::fs::metadata(&victim).unwrap().nlink(), 1, "{extra:?}");
    }
}

/// rename(2) between two links to one file does nothing and succeeds: the temporary name the
/// new link was made under must not stay.
#[test]
fn overwrite_onto_a_link_to_the_same_file_leaves_no_temporary_file() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    use tar::EntryType::{Directory, Link, Regular};
    hostile_archive(
        &t,
        "twice_20250101_000000",
        &[
            ("src1/", Directory, b"", None),
            ("src1/a.txt", Regular, b"a\n", None),
            ("src1/hard", Link, b"", Some("src1/a.txt")),
            ("src1/hard", Link, b"", Some("src1/a.txt")),
        ],
    );
    let target = t.work().join("r1");
    let restore = |archive: &str, extra: &[&str]| {
        let mut args = vec!["restore", archive, "--to", target.to_str().unwrap()];
        args.extend_from_slice(extra);
        t.ctl(&args)
    };
    let linked = || {
        assert_eq!(
            names(&target.join("src1")),
            BTreeSet::from(["a.txt".to_owned(), "hard".to_owned()])
        );
        let a = std::fs::metadata(target.join("src1/a.txt")).unwrap();
        assert_eq!(a.nlink(), 2);
        assert_eq!(
            a.ino(),
            std::fs::metadata(target.join("src1/hard")).unwrap().ino()
        );
    };
    let out = restore("twice_20250101_000000.tar.gz", &["--overwrite"]).ok();
    assert!(out.contains("Restored 3 files"), "{out}");
    linked();

    // As reported: only the link, over itself. Its target is outside the selection, so it
    // gets the target's data from the archive, replacing the link (no temporary file left).
    let src = t.work().join("src1");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"a\n").unwrap();
    std::fs::hard_link(src.join("a.txt"), src.join("hard")).unwrap();
    let archive = backup(&t, &["--sources", "src1"]);
    std::fs::remove_dir_all(&target).unwrap();
    restore(archive.to_str().unwrap(), &[]).ok();
    let out = restore(
        archive.to_str().unwrap(),
        &["--path", "hard", "--overwrite"],
    );
    let stdout = out.stdout();
    assert_eq!(out.code(), 0, "stdout {stdout:?} stderr {:?}", out.stderr());
    assert!(stdout.contains("Restored 1 files"), "{stdout}");
    assert_eq!(
        names(&target.join("src1")),
        BTreeSet::from(["a.txt".to_owned(), "hard".to_owned()])
    );
    assert_eq!(std::fs::read(target.join("src1/hard")).unwrap(), b"a\n");
    assert_eq!(
        std::fs::metadata(target.join("src1/a.txt"))
            .unwrap()
            .nlink(),
        1
    );
}

#[test]
fn archives_of_the_original_backup_script_verify_restore_and_list() {
    let t = TestHome::new();
    let src = t.work().join("projects");
    common::base_tree(&src);
    let backups = t.home().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    // What the original backup script made: `tar czf`, and a manifest of six fields.
    let archive = backups.join("projects_20250208_143025.tar.gz");
    let tar = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(t.work())
        .arg("projects")
        .status()
        .unwrap();
    assert!(tar.success());
    let size = std::fs::metadata(&archive).unwrap().len();
    let manifest = serde_json::json!({
        "backup_file": archive,
        "source": src,
        "created": "20250208_143025",
        "size_bytes": size,
        "size_human": "1.00 KB",
        "checksum_sha256": sha256sum(&archive),
    });
    std::fs::write(
        backups.join("projects_20250208_143025.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let _daemon = t.start_daemon();

    let verified = t.ctl(&["verify", "--all"]).ok();
    assert_eq!(
        verified.trim(),
        "projects_20250208_143025.tar.gz: OK",
        "{verified}"
    );
    let long = t.ctl(&["backups", "--long"]).ok();
    assert!(long.contains("? files"), "{long}");
    let to = t.work().join("restored");
    t.ctl(&[
        "restore",
        "projects_20250208_143025.tar.gz",
        "--to",
        to.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(snapshot(&to.join("projects")), snapshot(&src));
}

#[test]
fn ls_lists_an_archive_or_one_path_in_it_as_text_and_json() {
    let t = TestHome::new();
    let src = random_source(&t, "src", 3000);
    std::fs::create_dir(src.join("docs")).unwrap();
    std::fs::write(src.join("docs/a.txt"), b"hello").unwrap();
    std::fs::set_permissions(src.join("docs/a.txt"), PermissionsExt::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("docs/link")).unwrap();
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "src"]);

    let text = t.ctl(&["ls", &file_name(&archive)]).ok();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("-rw-r----- ") && l.ends_with(" src/docs/a.txt")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('d') && l.ends_with(" src/docs/")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("src/docs/link -> a.txt")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" 3000 ") && l.ends_with(" src/data.bin")),
        "{text}"
    );

    let out = t.ctl(&["--json", "ls", archive.to_str().unwrap(), "docs"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(out.stdout().lines().count(), 1, "one line");
    let answer: Value = serde_json::from_str(out.stdout().trim()).unwrap();
    let entries = answer["data"]["entries"].as_array().unwrap();
    let paths: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        BTreeSet::from(["src/docs/", "src/docs/a.txt", "src/docs/link"])
    );
    let a = entries
        .iter()
        .find(|e| e["path"] == "src/docs/a.txt")
        .unwrap();
    assert_eq!(
        (a["kind"].as_str(), a["mode"].as_u64(), a["size"].as_u64()),
        (Some("file"), Some(0o640), Some(5))
    );
    let mtime = std::fs::metadata(src.join("docs/a.txt")).unwrap().mtime();
    assert_eq!(a["mtime"].as_i64(), Some(mtime));

    let out = t.ctl(&["ls", &file_name(&archive), "nope"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr().contains("nope"), "{}", out.stderr());
    let out = t.ctl(&["ls", "/etc/passwd"]);
    assert_eq!(out.code(), 1, "an archive without a manifest is not listed");
}

/// `ls`'s type-and-mode column per path, and GNU `tar -tv`'s for the same archive.
fn mode_columns(
    t: &TestHome,
    archive: &Path,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let columns = |text: &str| -> BTreeMap<String, String> {
        text.lines()
            .map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                (fields[fields.len() - 1].to_owned(), fields[0].to_owned())
            })
            .collect()
    };
    let ours = t.ctl(&["ls", &file_name(archive)]).ok();
    let tar = Command::new("tar")
        .arg("-tvf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(tar.status.success(), "{tar:?}");
    (
        columns(&ours),
        columns(&String::from_utf8(tar.stdout).unwrap()),
    )
}

#[test]
fn ls_shows_set_id_and_sticky_bits_fifos_and_devices_as_tar_does() {
    let t = TestHome::new();
    let src = t.work().join("proj");
    std::fs::create_dir_all(src.join("sticky")).unwrap();
    std::fs::create_dir_all(src.join("shared")).unwrap();
    std::fs::write(src.join("tool"), "#!/bin/sh\n").unwrap();
    std::fs::write(src.join("odd"), "").unwrap();
    for (name, mode) in [
        ("tool", 0o4755),
        ("odd", 0o6644),
        ("sticky", 0o1777),
        ("shared", 0o2770),
    ] {
        std::fs::set_permissions(src.join(name), PermissionsExt::from_mode(mode)).unwrap();
    }
    assert!(
        Command::new("mkfifo")
            .arg(src.join("ff"))
            .status()
            .unwrap()
            .success()
    );
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "proj"]);
    let (ours, tar) = mode_columns(&t, &archive);
    assert_eq!(ours, tar);
    assert_eq!(ours["proj/tool"], "-rwsr-xr-x");
    assert_eq!(ours["proj/odd"], "-rwSr-Sr--");
    assert_eq!(ours["proj/sticky/"], "drwxrwxrwt");
    assert_eq!(ours["proj/shared/"], "drwxrws---");
    assert_eq!(ours["proj/ff"], "prw-r--r--");

    // Device nodes, which only a hand-made archive holds here (making them needs root).
    use tar::EntryType::{Block, Char, Directory};
    let archive = hostile_archive_as(
        &t,
        "dev_20250101_000000",
        ".tar",
        &[
            ("dev/", Directory, b"", None),
            ("dev/null", Char, b"", None),
            ("dev/sda", Block, b"", None),
        ],
    );
    let (ours, tar) = mode_columns(&t, &archive);
    assert_eq!(ours, tar);
    assert_eq!(ours["dev/null"], "crw-r--r--");
    assert_eq!(ours["dev/sda"], "brw-r--r--");
    // The kind stays `device` for scripts; a field beside it says which.
    let (code, answer) = common::ctl_json(&t, &["ls", "dev_20250101_000000.tar"]);
    assert_eq!(code, 0, "{answer}");
    let entries = &answer["data"]["entries"];
    assert_eq!(
        (&entries[1]["kind"], &entries[1]["device"]),
        (&Value::from("device"), &Value::from("char"))
    );
    assert_eq!(entries[2]["device"], "block");
    assert_eq!(entries[0].get("device"), None);
}

#[test]
fn ls_past_the_listing_bound_says_how_many_entries_it_left_out() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let names: Vec<String> = (0..100_011).map(|i| format!("n/f{i:06}")).collect();
    let entries: Vec<RawEntry> = names
        .iter()
        .map(|name| (name.as_str(), tar::EntryType::Regular, &b""[..], None))
        .collect();
    hostile_archive_as(&t, "lots_20250101_000000", ".tar", &entries);

    let out = t.ctl(&["ls", "lots_20250101_000000.tar"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let stdout = out.stdout();
    assert_eq!(stdout.lines().count(), 100_000);
    assert!(
        stdout.ends_with(" n/f099999\n"),
        "{:?}",
        &stdout[stdout.len() - 80..]
    );
    assert_eq!(
        out.stderr(),
        "Warning: listed the first 100000 entries; 11 more entries not listed, to keep the \
         answer bounded (give a PATH to list part of the archive)\n"
    );
    let (code, answer) = common::ctl_json(&t, &["ls", "lots_20250101_000000.tar"]);
    assert_eq!(code, 0);
    assert_eq!(answer["data"]["entries"].as_array().unwrap().len(), 100_000);
    assert_eq!(answer["data"]["not_listed"], 11);

    // A listing that holds everything warns of nothing.
    let out = t.ctl(&["ls", "lots_20250101_000000.tar", "n/f100010"]);
    assert_eq!((out.code(), out.stderr().as_str()), (0, ""));
    assert!(out.stdout().ends_with(" n/f100010\n"), "{}", out.stdout());
}

/// Entry names that would forge a line of output and send escape sequences to the terminal.
const FORGED_OK: &str = "c/x\nctl_20250101_000000.tar.gz: OK\x1b]0;pwned\x07";
const FORGED_RESTORED: &str = "../c/\nRestored 100 files\x1b[2K";

#[track_caller]
fn assert_no_controls(text: &str, lines: usize) {
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert_eq!(text.lines().count(), lines, "{text:?}");
}

#[test]
fn ls_restore_and_verify_print_entry_names_and_errors_escaped() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    use tar::EntryType::{Directory, Regular, Symlink};
    hostile_archive(
        &t,
        "ctl_20250101_000000",
        &[
            ("c/", Directory, b"", None),
            (FORGED_OK, Regular, b"x", None),
            ("c/l", Symlink, b"", Some("x\n\x1b[31mred")),
            (FORGED_RESTORED, Regular, b"x", None),
        ],
    );

    let listed = t.ctl(&["ls", "ctl_20250101_000000.tar.gz"]).ok();
    assert_no_controls(&listed, 4);
    assert!(
        listed.contains(r" c/x\nctl_20250101_000000.tar.gz: OK\u{1b}]0;pwned\u{7}"),
        "{listed}"
    );
    assert!(listed.contains(r" c/l -> x\n\u{1b}[31mred"), "{listed}");
    // JSON escapes by itself: the names stay as they are.
    let (code, answer) = common::ctl_json(&t, &["ls", "ctl_20250101_000000.tar.gz"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["entries"][1]["path"], FORGED_OK);

    let target = t.work().join("out");
    let out = t.ctl(&[
        "restore",
        "ctl_20250101_000000.tar.gz",
        "--to",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 1, "{}", out.stderr());
    assert_no_controls(&out.stdout(), 2);
    assert!(
        out.stdout()
            .contains(r"Refused: ../c/\nRestored 100 files\u{1b}[2K: path contains '..'"),
        "{}",
        out.stdout()
    );

    // A cut archive's error quotes the entry it stops in: in verify's detail, and in the
    // error restore fails with.
    let archive = hostile_archive_as(
        &t,
        "cut_20250101_000000",
        ".tar",
        &[("c/big\nfake: OK\x1b[2K", Regular, &[7; 5000], None)],
    );
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &bytes[..512 + 1024]).unwrap();
    vouch_for_current_bytes(&archive);
    let out = t.ctl(&["verify", "cut_20250101_000000.tar"]);
    assert_verify_fails(&out, 1, 1);
    assert_no_controls(&out.stdout(), 1);
    assert_eq!(
        out.stdout(),
        "cut_20250101_000000.tar: truncated (c/big\\nfake: OK\\u{1b}[2K: 1024 of 5000 bytes)\n"
    );
    let stderr = assert_restore_fails(&t, &archive, "cut", &[]);
    assert_no_controls(&stderr, 1);
    assert!(
        stderr.contains(r"cannot restore c/big\nfake: OK\u{1b}[2K from "),
        "{stderr}"
    );
}

#[test]
fn a_restore_that_fails_midway_removes_what_it_wrote_and_says_so() {
    let t = TestHome::new();
    random_source(&t, "src", 400_000);
    let daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "src"]);
    // Cut inside the file's data, with a manifest that vouches for the cut bytes.
    truncate_with_matching_manifest(&archive);
    let target = t.work().join("new/target");
    let out = t.ctl(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 1, "{}", out.stdout());
    assert!(
        out.stderr()
            .contains("everything this restore created was removed"),
        "{}",
        out.stderr()
    );
    assert!(
        !t.work().join("new").exists(),
        "the folders it made are gone too"
    );
    // The archive was decoded on a thread of its own, whose error this was: it has ended.
    wait_for(PATIENCE, "the read-ahead thread gone", || {
        (threads_of(daemon.pid(), "read-ahead") == 0).then_some(())
    });
}

/// Bytes that are neither a gzip member nor a zstd frame.
const GARBAGE: &[u8] = b"trailing bytes that are no part of the archive\n";

/// `restore ARCHIVE --to <work>/<target>` (with `extra` arguments), expected to fail: the
/// error names the archive, and the restore left nothing behind.
#[track_caller]
fn assert_restore_fails(t: &TestHome, archive: &Path, target: &str, extra: &[&str]) -> String {
    let target = t.work().join(target);
    let mut args = vec![
        "restore",
        archive.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = t.ctl(&args);
    let stderr = out.stderr();
    assert_eq!(out.code(), 1, "stdout {:?}, stderr {stderr}", out.stdout());
    assert!(stderr.starts_with("Error: "), "{stderr}");
    assert!(stderr.contains(&file_name(archive)), "{stderr}");
    assert!(
        stderr.contains("everything this restore created was removed"),
        "{stderr}"
    );
    assert!(!target.exists(), "what the restore wrote is gone");
    stderr
}

#[test]
fn data_after_the_compressed_stream_fails_verify_and_restore_alike() {
    let t = TestHome::new();
    random_source(&t, "src", 300_000);
    let _daemon = t.start_daemon();
    for compression in ["gzip", "zstd"] {
        // Bytes that are not the codec's, then the start of a member (or frame) that ends
        // early: what the decoder sees only when it is read to the end.
        let head = |archive: &Path| std::fs::read(archive).unwrap()[..200].to_vec();
        for (tail, finding) in [("garbage", "unreadable"), ("cut member", "truncated")] {
            let name = format!("{compression}-{}", tail.replace(' ', "-"));
            let archive = backup(
                &t,
                &[
                    "--sources",
                    "src",
                    "--name",
                    &name,
                    "--compression",
                    compression,
                ],
            );
            let bytes = match tail {
                "garbage" => GARBAGE.to_vec(),
                _ => head(&archive),
            };
            append_with_matching_manifest(&archive, &bytes);
            let out = t.ctl(&["verify", archive.to_str().unwrap()]);
            assert_verify_fails(&out, 1, 1);
            assert!(
                out.stdout()
                    .starts_with(&format!("{}: {finding}", file_name(&archive))),
                "{name}: {}",
                out.stdout()
            );
            let stderr = assert_restore_fails(&t, &archive, &format!("out-{name}"), &[]);
            assert!(
                stderr.contains("does not decode to its end"),
                "{name}: {stderr}"
            );
        }
    }
}

#[test]
fn data_after_the_compressed_stream_inside_the_encryption_fails_verify_and_restore() {
    let t = TestHome::new();
    random_source(&t, "src", 300_000);
    let key = t.work().join("key.txt");
    let public = t.ctl(&["keygen", "--out", key.to_str().unwrap()]).ok();
    let public = public.trim();
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "src", "--encrypt-to", public]);
    // Sealed again around the longer plaintext, to the same recipient: every age chunk
    // authenticates, and only the decompressor can find the garbage.
    let identity: age::x25519::Identity = std::fs::read_to_string(&key)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap()
        .parse()
        .unwrap();
    let sealed = std::fs::read(&archive).unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut age::Decryptor::new(&sealed[..])
            .unwrap()
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap(),
        &mut plain,
    )
    .unwrap();
    plain.extend_from_slice(GARBAGE);
    let recipient = identity.to_public();
    let mut resealed = Vec::new();
    let mut writer =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .unwrap()
            .wrap_output(&mut resealed)
            .unwrap();
    std::io::Write::write_all(&mut writer, &plain).unwrap();
    writer.finish().unwrap();
    std::fs::write(&archive, resealed).unwrap();
    vouch_for_current_bytes(&archive);

    let key = key.to_str().unwrap();
    let out = t.ctl(&["verify", archive.to_str().unwrap(), "--identity", key]);
    assert_verify_fails(&out, 1, 1);
    assert!(
        out.stdout()
            .starts_with(&format!("{}: unreadable", file_name(&archive))),
        "{}",
        out.stdout()
    );
    let stderr = assert_restore_fails(&t, &archive, "out", &["--identity", key]);
    assert!(stderr.contains("does not decode to its end"), "{stderr}");
}

#[test]
fn an_uncompressed_archive_cut_before_its_end_marker_fails_verify_and_restore() {
    let t = TestHome::new();
    random_source(&t, "src", 50_000);
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "src", "--compression", "none"]);
    // Cut right after the last entry's padded data: every entry whole, no end-of-archive
    // marker, as a copy cut on a block boundary would be.
    let bytes = std::fs::read(&archive).unwrap();
    let data_end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    std::fs::write(&archive, &bytes[..data_end.next_multiple_of(512)]).unwrap();
    vouch_for_current_bytes(&archive);
    let out = t.ctl(&["verify", archive.to_str().unwrap()]);
    assert_verify_fails(&out, 1, 1);
    assert!(
        out.stdout()
            .starts_with(&format!("{}: truncated", file_name(&archive))),
        "{}",
        out.stdout()
    );
    let stderr = assert_restore_fails(&t, &archive, "out", &[]);
    assert!(stderr.contains("end-of-archive marker"), "{stderr}");
}

/// GNU tar stops reading at the end-of-archive marker and ignores what follows; so do verify
/// and restore. Only a decoder can tell such bytes from the archive's, and `none` has none.
#[test]
fn bytes_after_the_end_marker_of_an_uncompressed_archive_are_ignored_by_verify_and_restore() {
    let t = TestHome::new();
    let src = random_source(&t, "src", 50_000);
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "src", "--compression", "none"]);
    append_with_matching_manifest(&archive, GARBAGE);
    assert_eq!(
        t.ctl(&["verify", archive.to_str().unwrap()]).ok(),
        format!("{}: OK\n", file_name(&archive))
    );
    let target = t.work().join("out");
    t.ctl(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(snapshot(&target.join("src")), snapshot(&src));
}

/// Regular files under `dir`, at any depth, with their sizes.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) if meta.is_file() => found.push((entry.path(), meta.len())),
                _ => {}
            }
        }
    }
    found
}

/// The size of a file under `dir` that process `pid` has open, if any: what it is writing.
fn writing_under(pid: u32, dir: &Path) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .find(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to.starts_with(dir)))
        .and_then(|fd| std::fs::metadata(fd.path()).ok())
        .map(|meta| meta.len())
}

#[test]
fn a_restore_killed_midway_leaves_no_partial_file_under_its_name() {
    const SIZE: u64 = 512 << 20;
    let t = TestHome::new();
    common::sparse_source(&t, "big", SIZE);
    let daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "big", "--compression", "none"]);
    let target = t.work().join("target");
    let mut restore = t
        .ctl_command(&[
            "restore",
            archive.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed while the file's bytes are being written, as a crash would.
    wait_for(PATIENCE, "the file to be partly written", || {
        writing_under(daemon.pid(), &target).filter(|size| (1..SIZE).contains(size))
    });
    daemon.signal("KILL");
    let _ = restore.wait();
    // What was being written has no name, its own or another.
    assert_eq!(files_under(&target), Vec::new());
}

#[test]
fn a_stop_during_a_restore_ends_it_removes_what_it_wrote_and_says_so() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), b"restored first\n").unwrap();
    // Stored as a sparse entry of no data; its restore reads 2 TiB of hole, minutes of it.
    std::fs::File::create(src.join("huge"))
        .unwrap()
        .set_len(2 << 40)
        .unwrap();
    let mut daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "src"]);
    let target = t.work().join("target");
    let restore = t
        .ctl_command(&[
            "restore",
            archive.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(PATIENCE, "the restore to write the large file", || {
        writing_under(daemon.pid(), &target)
    });
    t.ctl(&["stop"]).ok();
    let out = restore.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "backupd is stopping: the restore from {} stopped; everything this restore created \
             was removed",
            archive.display()
        )),
        "{stderr}"
    );
    assert!(!target.exists(), "{:?}", files_under(&target));
    assert!(daemon.wait().success());
}

#[test]
fn a_restore_never_follows_another_user_s_link_on_the_way_to_its_target() {
    // A user who owns a folder above the target swapped it for a link to a folder of root's
    // while the restore began: the target's path was opened whole, and followed the link.
    let t = TestHome::new();
    random_source(&t, "src", 1000);
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "src"]);
    let (theirs, roots) = (t.work().join("alice"), t.work().join("roots"));
    std::fs::create_dir(&theirs).unwrap();
    std::fs::create_dir(&roots).unwrap();
    std::os::unix::fs::chown(&theirs, Some(54321), Some(54321)).unwrap();
    let swapped = theirs.join("restored");
    std::os::unix::fs::symlink(&roots, &swapped).unwrap();
    std::os::unix::fs::lchown(&swapped, Some(54321), Some(54321)).unwrap();
    for target in [swapped.join("docs"), swapped.join("docs/deeper")] {
        let out = t.ctl(&[
            "restore",
            archive.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
        ]);
        assert_eq!(out.code(), 1, "{out:?}");
        let expected = format!(
            "Error: restore target {}: {} on the way to it is a symlink owned by uid 54321; \
             backupd follows only root's and its own user's symlinks, in folders no other user \
             may change: give the path it leads to\n",
            target.display(),
            swapped.display()
        );
        assert_eq!(out.stderr(), expected);
    }
    assert!(names(&roots).is_empty(), "nothing written through the link");
    // Root's own links are followed, as the system's are.
    let ours = t.work().join("ours");
    std::os::unix::fs::symlink(&roots, &ours).unwrap();
    t.ctl(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        ours.join("docs").to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        names(&roots.join("docs")),
        BTreeSet::from(["src".to_owned()])
    );
}
