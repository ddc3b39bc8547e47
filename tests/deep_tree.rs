//! A tree far deeper than `PATH_MAX`: the walk's and a restore's memory grow with the depth,
//! not its square, and a name longer than any reader accepts (1 MiB) is left out with a
//! warning, so that the archive stays readable by `verify` and `restore`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{TestHome, ctl_json, run_json};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::os::fd::OwnedFd;
use std::path::Path;

/// The longest name a folder may have.
const LONGEST: usize = 255;
/// The daemon's peak memory allowed for a run or a restore of these trees: before the walk
/// kept only each folder's own name, 2000 levels took 1 GB and 4096 levels 4.5 GB; before a
/// restore kept its folders as a tree of names, restoring 1500 levels took 1 GB, and before
/// the walk kept the first paths of linked files so, 2000 levels with a link each 548 MB.
const PEAK_LIMIT: u64 = 256 << 20;
/// The reader's bound on a long name (`MAX_LONG_NAME`), terminating NUL included.
const MAX_LONG_NAME: usize = 1 << 20;

/// Makes `depth` nested folders named `a` × 255 below `top` (through each parent's handle,
/// so past `PATH_MAX`) and returns the deepest one's handle.
fn deep_chain(top: &Path, depth: usize) -> OwnedFd {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let name = "a".repeat(LONGEST);
    let mut dir = rustix::fs::open(top, flags, Mode::empty()).unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(&dir, name.as_str(), flags, Mode::empty()).unwrap();
    }
    dir
}

fn write_at(dir: &OwnedFd, name: &str, content: &[u8]) {
    let flags = OFlags::WRONLY | OFlags::CREATE;
    let file = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o644)).unwrap();
    std::io::Write::write_all(&mut std::fs::File::from(file), content).unwrap();
}

/// The peak resident memory of process `pid`.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

#[test]
fn the_walks_memory_grows_with_the_depth_not_its_square() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    // 2000 levels: 512 KB of path at the bottom, 256 MB of paths summed over the levels.
    let bottom = deep_chain(&src, 2000);
    write_at(&bottom, "leaf.txt", b"bottom\n");
    drop(bottom);
    let daemon = t.start_daemon();

    let (code, answer) = run_json(&t, &["--sources", "src", "--compression", "zstd"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["sources"][0]["files"], 1, "{answer}");
    let peak = peak_memory(daemon.pid());
    assert!(
        peak < PEAK_LIMIT,
        "the daemon's peak memory was {peak} bytes"
    );
}

#[test]
fn a_name_longer_than_any_reader_accepts_is_left_out_and_the_archive_stays_readable() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("top.txt"), b"top\n").unwrap();
    // In the archive, the folder at level k is `src` and k × (`/` and 255 bytes), then `/`.
    let fitting_levels = (MAX_LONG_NAME - 2 - "src".len()) / (LONGEST + 1);
    assert_eq!(fitting_levels, 4095);
    let last = deep_chain(&src, fitting_levels);
    let last_len = "src".len() + fitting_levels * (LONGEST + 1);
    // The longest file name that fits (with `/` and the NUL), and one byte more.
    let fits = "f".repeat(MAX_LONG_NAME - last_len - 2);
    let too_long = "g".repeat(fits.len() + 1);
    write_at(&last, &fits, b"fits\n");
    write_at(&last, &too_long, b"too long\n");
    // A folder one level deeper, and what is below it, cannot be named in the archive.
    let deeper = {
        let name = "a".repeat(LONGEST);
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        rustix::fs::mkdirat(&last, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        rustix::fs::openat(&last, name.as_str(), flags, Mode::empty()).unwrap()
    };
    write_at(&deeper, "leaf.txt", b"bottom\n");
    drop((last, deeper));
    let daemon = t.start_daemon();

    let (code, answer) = run_json(&t, &["--sources", "src", "--compression", "zstd"]);
    assert_eq!(code, 4, "completed with warnings: {answer}");
    let report = &answer["data"]["sources"][0];
    assert_eq!(report["skipped"], 2, "{answer}");
    assert_eq!(
        report["files"], 2,
        "top.txt and the longest name that fits: {answer}"
    );
    let warnings: Vec<&str> = (report["warnings"].as_array().unwrap().iter())
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    // Each names its entry by both ends of its path, shortened.
    let folder = format!("/{}: its name in the archive would be", "a".repeat(LONGEST));
    let file = format!("/{too_long}: its name in the archive would be");
    assert!(warnings[0].contains(&folder), "{}", &warnings[0][..2000]);
    assert!(warnings[0].contains("skipped with everything in it"));
    assert!(warnings[1].contains(&file), "{}", &warnings[1][..2000]);
    assert!(
        warnings
            .iter()
            .all(|w| w.len() < 8192 && w.contains(" bytes]…"))
    );
    let peak = peak_memory(daemon.pid());
    assert!(
        peak < PEAK_LIMIT,
        "the daemon's peak memory was {peak} bytes"
    );

    // Every reader takes the archive, the longest name it holds included.
    let archive = report["archive"].as_str().unwrap();
    t.ctl(&["verify", archive]).ok();
    let target = t.work().join("restored");
    t.ctl(&[
        "restore",
        archive,
        "--to",
        target.to_str().unwrap(),
        "--path",
        "top.txt",
    ])
    .ok();
    assert_eq!(std::fs::read(target.join("src/top.txt")).unwrap(), b"top\n");
}

/// Follows `depth` folders named `a` × 255 down from `top`, through each parent's handle.
fn down_chain(top: &Path, depth: usize) -> OwnedFd {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let name = "a".repeat(LONGEST);
    let mut dir = rustix::fs::open(top, flags, Mode::empty()).unwrap();
    for _ in 0..depth {
        dir = rustix::fs::openat(&dir, name.as_str(), flags, Mode::empty()).unwrap();
    }
    dir
}

#[test]
fn a_restores_memory_grows_with_the_depth_not_its_square() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    let depth = 1500;
    let bottom = deep_chain(&src, depth);
    write_at(&bottom, "leaf.txt", b"bottom\n");
    drop(bottom);
    let mut daemon = t.start_daemon();
    let (code, answer) = run_json(&t, &["--sources", "src", "--compression", "zstd"]);
    assert_eq!(code, 0, "{answer}");
    let archive = answer["data"]["sources"][0]["archive"]
        .as_str()
        .unwrap()
        .to_owned();
    // A daemon of its own, so that its peak is the restore's.
    t.ctl(&["stop"]).ok();
    daemon.wait();
    let daemon = t.start_daemon();

    let target = t.work().join("restored");
    let to = target.to_str().unwrap();
    let (code, answer) = ctl_json(&t, &["restore", &archive, "--to", to]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["dirs"], depth + 1, "{answer}");
    assert_eq!(answer["data"]["files"], 1, "{answer}");
    let peak = peak_memory(daemon.pid());
    eprintln!("restore of {depth} levels: the daemon's peak memory was {peak} bytes");
    assert!(
        peak < PEAK_LIMIT,
        "the daemon's peak memory was {peak} bytes"
    );
    let bottom = down_chain(&target.join("src"), depth);
    let flags = OFlags::RDONLY;
    let leaf = rustix::fs::openat(&bottom, "leaf.txt", flags, Mode::empty()).unwrap();
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(leaf), &mut content).unwrap();
    assert_eq!(content, b"bottom\n");
}

#[test]
fn hard_links_deep_down_take_memory_with_the_depth_not_its_square() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    // At each of 2000 levels a file `f` whose other link is `link<level>` at the top. The
    // deep one is archived first (`a…` sorts before `link…`) and each link names it: 512 MB
    // of paths summed over the levels.
    let depth = 2000;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let name = "a".repeat(LONGEST);
    let top = rustix::fs::open(&src, flags, Mode::empty()).unwrap();
    let mut dir = rustix::fs::open(&src, flags, Mode::empty()).unwrap();
    for level in 1..=depth {
        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(&dir, name.as_str(), flags, Mode::empty()).unwrap();
        write_at(&dir, "f", format!("{level}\n").as_bytes());
        let link = format!("link{level:04}");
        rustix::fs::linkat(&dir, "f", &top, link.as_str(), AtFlags::empty()).unwrap();
    }
    drop((top, dir));
    let daemon = t.start_daemon();

    let (code, answer) = run_json(&t, &["--sources", "src", "--compression", "none"]);
    assert_eq!(code, 0, "{answer}");
    let report = &answer["data"]["sources"][0];
    assert_eq!(report["files"], 2 * depth, "{answer}");
    let peak = peak_memory(daemon.pid());
    eprintln!("backup of {depth} linked levels: the daemon's peak memory was {peak} bytes");
    assert!(
        peak < PEAK_LIMIT,
        "the daemon's peak memory was {peak} bytes"
    );

    // GNU tar lists each top-level name as a link to the deep file of its level: the path
    // the walk rebuilt is whole. (Restoring links is tested in verify_restore; restoring this
    // deep a tree would take minutes, walking down from the top for each link.)
    let archive = report["archive"].as_str().unwrap().to_owned();
    let mut tar = std::process::Command::new("tar")
        .args(["-tvf", &archive])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut listing = std::io::BufReader::new(tar.stdout.take().unwrap());
    let (mut links, mut line) = (Vec::new(), Vec::new());
    while std::io::BufRead::read_until(&mut listing, b'\n', &mut line).unwrap() > 0 {
        let text = String::from_utf8_lossy(&line);
        if let Some((entry, target)) = text.trim_end().split_once(" link to ")
            && let Some((_, level)) = entry.rsplit_once(" src/link")
        {
            let level: usize = level.parse().unwrap();
            let deep = format!("src/{}f", format!("{name}/").repeat(level));
            assert!(target == deep, "link{level:04} links to a wrong path");
            links.push(level);
        }
        line.clear();
    }
    assert!(tar.wait().unwrap().success());
    assert_eq!(links, (1..=depth).collect::<Vec<_>>());
}
