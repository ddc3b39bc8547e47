//! Files with holes (disk images): stored as GNU sparse entries, their holes neither read
//! nor stored, and restored as holes (with their extended attributes) by `backupctl
//! restore`, GNU tar and Python's `tarfile`; with `sparse_files = false`, stored whole.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::TestHome;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// A restored image holds its few KiB of data in at most this much disk.
const ALLOCATED_AT_MOST: u64 = MIB;

/// `src/` holding:
/// - `disk.img`, 9 GiB: data at its start, in its middle, and past 8 GiB (where a sparse
///   map's offsets no longer fit 11 octal digits), then a hole to its end;
/// - `many`, 40 data regions (more than a GNU sparse header holds: extension blocks) that
///   end with the file;
/// - `hole`, 1 GiB of hole only;
/// - `plain`, a file without holes.
fn source(t: &TestHome) -> PathBuf {
    let src = t.work().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let disk = File::create(src.join("disk.img")).unwrap();
    disk.write_all_at(&common::incompressible(4096, 1), 0)
        .unwrap();
    disk.write_all_at(b"middle", GIB + 3).unwrap();
    disk.write_all_at(&common::incompressible(8192, 2), 8 * GIB + 512 * KIB)
        .unwrap();
    disk.set_len(9 * GIB + 100).unwrap();
    rustix::fs::setxattr(
        src.join("disk.img"),
        "user.note",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let many = File::create(src.join("many")).unwrap();
    for region in 0..40 {
        many.write_all_at(&[region as u8 + 1; 4096], region * 256 * KIB)
            .unwrap();
    }
    File::create(src.join("hole"))
        .unwrap()
        .set_len(GIB)
        .unwrap();
    std::fs::write(src.join("plain"), b"no holes\n").unwrap();
    src
}

/// What `path` holds, read only where it has data: its size, and each 4 KiB block of its
/// data regions that is not all zeros (everything else reads as zeros).
fn content(path: &Path) -> (u64, BTreeMap<u64, Vec<u8>>) {
    use rustix::fs::SeekFrom;
    let file = File::open(path).unwrap();
    let size = file.metadata().unwrap().len();
    let mut blocks = BTreeMap::new();
    let mut from = 0;
    while from < size {
        let Ok(data) = rustix::fs::seek(&file, SeekFrom::Data(from)) else {
            break;
        };
        let hole = rustix::fs::seek(&file, SeekFrom::Hole(data)).unwrap();
        let mut at = data - data % 4096;
        while at < hole {
            let mut block = vec![0; 4096.min(size - at) as usize];
            file.read_exact_at(&mut block, at).unwrap();
            if block.iter().any(|&b| b != 0) {
                blocks.insert(at, block);
            }
            at += 4096;
        }
        from = hole;
    }
    (size, blocks)
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Checks that each file of `src` came back in `restored` (a copy of `src/`) by `how`, and
/// that the image's holes are holes again.
fn assert_restored(src: &Path, restored: &Path, how: &str) {
    for name in ["disk.img", "many", "hole", "plain"] {
        assert!(
            content(&restored.join(name)) == content(&src.join(name)),
            "{how}: {name} differs"
        );
    }
    for name in ["disk.img", "hole"] {
        let bytes = allocated(&restored.join(name));
        assert!(
            bytes <= ALLOCATED_AT_MOST,
            "{how}: {name} takes {bytes} bytes of disk"
        );
    }
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn files_with_holes_are_stored_sparse_and_come_back_with_their_holes() {
    let t = TestHome::new();
    let src = source(&t);
    let _daemon = t.start_daemon();
    let archive = common::run_for_archive(&t, &["--sources", src.to_str().unwrap()]);
    // 10 GiB of holes are not in it.
    let size = std::fs::metadata(&archive).unwrap().len();
    assert!(size < MIB, "archive of {size} bytes");

    // Python's `tarfile` sees sparse entries of the real sizes.
    let listed = run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, tarfile\n\
                 with tarfile.open(sys.argv[1]) as t:\n    \
                 for m in t.getmembers():\n        \
                 print(m.name, m.type.decode(), m.size, m.issparse())\n",
            )
            .arg(&archive),
    );
    for line in [
        format!("src/disk.img S {} True", 9 * GIB + 100),
        format!("src/many S {} True", 39 * 256 * KIB + 4096),
        format!("src/hole S {GIB} True"),
        "src/plain 0 9 False".to_owned(),
    ] {
        assert!(listed.lines().any(|l| l == line), "{line:?} in {listed}");
    }
    let ls = t
        .ctl(&["ls", archive.to_str().unwrap(), "src/disk.img"])
        .ok();
    assert!(ls.contains(&format!(" {} ", 9 * GIB + 100)), "{ls}");
    let verified = t.ctl(&["verify", archive.to_str().unwrap()]).ok();
    assert!(verified.trim_end().ends_with(": OK"), "{verified}");

    let ours = t.work().join("ours");
    t.ctl(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        ours.to_str().unwrap(),
    ])
    .ok();
    assert_restored(&src, &ours.join("src"), "backupctl restore");
    let mut note = [0; 16];
    let len = rustix::fs::getxattr(ours.join("src/disk.img"), "user.note", &mut note).unwrap();
    assert_eq!(&note[..len], b"kept", "its extended attributes too");

    let gnu = t.work().join("gnu");
    std::fs::create_dir(&gnu).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(&gnu),
    );
    assert_restored(&src, &gnu.join("src"), "GNU tar");

    let python = t.work().join("python");
    run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, tarfile\n\
                 with tarfile.open(sys.argv[1]) as t:\n    \
                 t.extractall(sys.argv[2], filter='tar')\n",
            )
            .arg(&archive)
            .arg(&python),
    );
    assert_restored(&src, &python.join("src"), "Python tarfile");
}

#[test]
fn with_sparse_files_off_holes_are_stored_as_zeros_in_plain_entries() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    let image = File::create(src.join("disk.img")).unwrap();
    image.write_all_at(b"data", 8 * MIB).unwrap();
    image.set_len(16 * MIB).unwrap();
    std::fs::create_dir_all(t.home()).unwrap();
    std::fs::write(t.home().join("backupd.toml"), "sparse_files = false\n").unwrap();
    let _daemon = t.start_daemon();
    let archive = common::run_for_archive(
        &t,
        &["--sources", src.to_str().unwrap(), "--compression", "none"],
    );
    // The zeros are stored: the archive is the file's size, and more.
    let size = std::fs::metadata(&archive).unwrap().len();
    assert!(size > 16 * MIB, "archive of {size} bytes");
    let mut tar = tar::Archive::new(File::open(&archive).unwrap());
    let kinds: Vec<_> = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().header().entry_type())
        .collect();
    assert_eq!(kinds, [tar::EntryType::Directory, tar::EntryType::Regular]);
    let to = t.work().join("restored");
    t.ctl(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ])
    .ok();
    assert!(content(&to.join("src/disk.img")) == content(&src.join("disk.img")));
}
