//! Archives compressed on every core stay standard: a gzip archive of several MiB (many
//! parallel blocks, incompressible and compressible parts) passes `gzip -t` and extracts
//! identically with GNU `tar -xzf` and Python's `tarfile`; an empty source and a tiny one
//! too; a zstd one passes `zstd -t` and extracts with `zstd -dc | tar -x`; and our own verify
//! and restore read them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{TestHome, snapshot};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Deterministic pseudo-random bytes (incompressible).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15 ^ seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

/// A source of about 7 MiB: random and repetitive large files, many small ones, an empty
/// file and a nested folder, so the stream spans many compression blocks of both kinds.
fn mixed_source(t: &TestHome, dir: &str) -> PathBuf {
    let src = t.work().join(dir);
    std::fs::create_dir_all(src.join("small/deeper")).unwrap();
    std::fs::write(src.join("random.bin"), noise(3 * 1024 * 1024 + 17, 1)).unwrap();
    let text: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|i: usize| b"log line 0123456789 status=ok\n"[i % 30] ^ u8::from(i % 4099 == 7))
        .collect();
    std::fs::write(src.join("repetitive.log"), text).unwrap();
    for i in 0..200u64 {
        let size = usize::try_from(i * 37 % 5000).unwrap();
        std::fs::write(src.join(format!("small/f{i}")), noise(size, i)).unwrap();
    }
    std::fs::write(src.join("small/deeper/empty"), b"").unwrap();
    src
}

/// Runs one backup with `compression` and returns the archive's path.
fn backup(t: &TestHome, src: &Path, compression: &str) -> PathBuf {
    let dest = t.work().join(format!("dest-{compression}"));
    let out = t.ctl(&[
        "--json",
        "run",
        "--sources",
        src.to_str().unwrap(),
        "--destination",
        dest.to_str().unwrap(),
        "--compression",
        compression,
    ]);
    let answer: Value = serde_json::from_str(out.stdout().trim())
        .unwrap_or_else(|e| panic!("bad JSON {:?} ({e}): {}", out.stdout(), out.stderr()));
    assert_eq!(out.code(), 0, "{answer}");
    PathBuf::from(answer["data"]["sources"][0]["archive"].as_str().unwrap())
}

fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Extracts with GNU tar into a fresh folder and returns the extracted source folder.
fn extract_with_tar(archive: &Path, into: &Path, tar_args: &[&str], top: &str) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    run_ok(
        Command::new("tar")
            .args(tar_args)
            .arg(archive)
            .arg("-C")
            .arg(into),
    );
    into.join(top)
}

fn python3_available() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Extracts with Python's `tarfile` (mode `r:gz`, its own gzip reader).
fn extract_with_python(archive: &Path, into: &Path, top: &str) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    let script = "import sys, tarfile\n\
                  with tarfile.open(sys.argv[1], 'r:gz') as t:\n    \
                  t.extractall(sys.argv[2], filter='tar')\n";
    run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(archive)
            .arg(into),
    );
    into.join(top)
}

fn restore_and_compare(t: &TestHome, archive: &Path, src: &Path, into: &str) {
    let target = t.work().join(into);
    t.ctl(&["verify", archive.to_str().unwrap()]).ok();
    t.ctl(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ])
    .ok();
    let top = src.file_name().unwrap();
    assert!(snapshot(&target.join(top)) == snapshot(src), "restore");
}

#[test]
fn a_multi_block_gzip_archive_is_one_standard_stream() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let src = mixed_source(&t, "mixed");
    let archive = backup(&t, &src, "gzip");

    run_ok(Command::new("gzip").arg("-t").arg(&archive));
    let expected = snapshot(&src);
    let by_tar = extract_with_tar(&archive, &t.work().join("by-tar"), &["-xzf"], "mixed");
    assert!(snapshot(&by_tar) == expected, "tar -xzf differs");
    if python3_available() {
        let by_python = extract_with_python(&archive, &t.work().join("by-python"), "mixed");
        assert!(snapshot(&by_python) == expected, "python tarfile differs");
    } else {
        println!("skipped: python3 not installed, tarfile check not run");
    }
    restore_and_compare(&t, &archive, &src, "restored");
}

#[test]
fn an_empty_and_a_one_block_source_make_valid_gzip_archives() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let empty = t.work().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    // One file whose tar stream (header, data, end blocks) stays within one block.
    let tiny = t.work().join("tiny");
    std::fs::create_dir_all(&tiny).unwrap();
    std::fs::write(tiny.join("note"), b"small").unwrap();
    for (src, top) in [(&empty, "empty"), (&tiny, "tiny")] {
        let archive = backup(&t, src, "gzip");
        run_ok(Command::new("gzip").arg("-t").arg(&archive));
        let by_tar = extract_with_tar(&archive, &t.work().join(format!("x-{top}")), &["-xzf"], top);
        assert!(snapshot(&by_tar) == snapshot(src), "{top}");
        if python3_available() {
            let out = t.work().join(format!("py-{top}"));
            let by_python = extract_with_python(&archive, &out, top);
            assert!(snapshot(&by_python) == snapshot(src), "{top}, python");
        }
    }
}

#[test]
fn a_multithreaded_zstd_archive_reads_with_the_zstd_tool() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let src = mixed_source(&t, "mixed");
    let archive = backup(&t, &src, "zstd");

    run_ok(Command::new("zstd").arg("-q").arg("-t").arg(&archive));
    let into = t.work().join("by-zstd");
    std::fs::create_dir_all(&into).unwrap();
    let tar_stream = run_ok(Command::new("zstd").arg("-dc").arg(&archive));
    let mut tar = Command::new("tar")
        .arg("-xf")
        .arg("-")
        .arg("-C")
        .arg(&into)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut tar.stdin.take().unwrap(), &tar_stream).unwrap();
    assert!(tar.wait().unwrap().success());
    assert!(
        snapshot(&into.join("mixed")) == snapshot(&src),
        "zstd -dc | tar -x"
    );
    restore_and_compare(&t, &archive, &src, "restored");
}
