//! Archives compressed on every core stay standard: a gzip archive of several MiB (many
//! parallel blocks, each a gzip member of its own, incompressible and compressible parts)
//! passes `gzip -t` and extracts identically with GNU `tar -xzf` and Python's `tarfile`; an
//! empty source and a tiny one too; a zstd one passes `zstd -t` and extracts with
//! `zstd -dc | tar -x`; our own verify, restore and `ls` read them all; and a run cancelled
//! while blocks are in flight stops its compression threads and leaves nothing.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Client, PATIENCE, TestHome, snapshot, threads_of, wait_for};
use serde_json::Value;
use std::io::Read;
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

/// Whether python3 is there; in CI it must be (`.ci/run` installs it), so its absence fails.
fn python3_available() -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "python3 is missing in CI"
    );
    found
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

/// The tar stream in the first gzip member of `archive`, and in all of them.
fn first_member_and_whole(archive: &Path) -> (usize, usize) {
    let bytes = std::fs::read(archive).unwrap();
    let mut first = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_end(&mut first)
        .unwrap();
    let mut whole = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut whole)
        .unwrap();
    (first.len(), whole.len())
}

#[test]
fn a_multi_block_gzip_archive_is_standard_gzip_in_several_members() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let src = mixed_source(&t, "mixed");
    let archive = backup(&t, &src, "gzip");

    // Several members: the first one holds only the start of the tar stream.
    let (first, whole) = first_member_and_whole(&archive);
    assert!(
        first > 0 && first < whole,
        "first member {first} of {whole} bytes"
    );
    run_ok(Command::new("gzip").arg("-t").arg(&archive));
    let expected = snapshot(&src);
    let by_tar = extract_with_tar(&archive, &t.work().join("by-tar"), &["-xzf"], "mixed");
    assert!(snapshot(&by_tar) == expected, "tar -xzf differs");
    if python3_available() {
        let by_python = extract_with_python(&archive, &t.work().join("by-python"), "mixed");
        assert!(snapshot(&by_python) == expected, "python tarfile differs");
    } else {
        eprintln!("skipped: python3 not installed, tarfile check not run");
    }
    restore_and_compare(&t, &archive, &src, "restored");
    // `ls` reads past the first member too: the last file of the walk is listed.
    let listed = t.ctl(&["ls", archive.to_str().unwrap()]).ok();
    assert!(listed.contains("mixed/small/deeper/empty"), "{listed}");
    assert!(listed.contains("mixed/random.bin"), "{listed}");
}

/// Starts job 1, a run of a source that never ends into `<work>/dest`, over the raw socket.
fn start_endless_run(t: &TestHome, compression: &str) -> (common::Daemon, Client, PathBuf) {
    let src = common::sparse_source(t, "endless", common::ENDLESS);
    let daemon = t.start_daemon();
    let dest = t.work().join("dest");
    let mut client = Client::connect(&t.socket()).unwrap();
    let request = serde_json::json!({"id": 1, "cmd": "run", "sources": [src],
        "destination": dest, "compression": compression});
    client.send_bytes(format!("{request}\n").as_bytes());
    (daemon, client, dest)
}

/// Cancels job 1, whose answer must say so, and checks that `dest` holds nothing.
fn cancel_and_expect_nothing_left(t: &TestHome, client: &mut Client, dest: &Path) {
    t.ctl(&["cancel", "1"]).ok();
    let answer = client.read_response();
    assert_eq!(answer["error"]["code"], "backup_failed", "{answer}");
    assert_eq!(answer["data"]["sources"][0]["cancelled"], true, "{answer}");
    let left: Vec<_> = std::fs::read_dir(dest).unwrap().collect();
    assert!(left.is_empty(), "nothing is left: {left:?}");
}

#[test]
fn a_gzip_run_cancelled_mid_stream_stops_its_workers_and_leaves_nothing() {
    let t = TestHome::new();
    let (daemon, mut client, dest) = start_endless_run(&t, "gzip");
    // Blocks are in flight once the compression threads exist (after the first full block).
    wait_for(PATIENCE, "gzip workers at work", || {
        let jobs: Value = serde_json::from_str(&t.ctl(&["--json", "jobs"]).stdout()).ok()?;
        let read = jobs["data"]["jobs"].get(0)?["bytes_in"].as_u64()?;
        (read > 0 && threads_of(daemon.pid(), "gzip-") > 0).then_some(())
    });

    cancel_and_expect_nothing_left(&t, &mut client, &dest);
    // Dropping the encoder joins its workers: none outlives the run.
    assert_eq!(threads_of(daemon.pid(), "gzip-"), 0);

    // The daemon goes on: the next gzip run of a real source is whole.
    let mixed = mixed_source(&t, "mixed");
    let archive = backup(&t, &mixed, "gzip");
    run_ok(Command::new("gzip").arg("-t").arg(&archive));
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
        } else {
            eprintln!("skipped: python3 not installed, tarfile check not run");
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

/// The manifest of `archive`, read from the file beside it.
fn manifest_of(archive: &Path) -> Value {
    let name = archive.file_name().unwrap().to_str().unwrap();
    let stem = name
        .split(".tar")
        .next()
        .unwrap_or_else(|| panic!("archive name {name}"));
    let manifest = archive.with_file_name(format!("{stem}.json"));
    serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap()
}

#[test]
fn the_checksum_of_a_large_archive_hashed_on_its_own_thread_is_sha256sum() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    // 12 MiB of noise: every archive is far past the 1 MiB chunk after which the SHA-256
    // runs on its own thread, and many chunks (more than the four buffers) pass through it.
    let src = t.work().join("large");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("noise.bin"), noise(12 * 1024 * 1024 + 4321, 7)).unwrap();
    std::fs::write(src.join("tail.txt"), b"the last bytes of the stream").unwrap();
    let public = t.ctl(&[
        "keygen",
        "--out",
        t.work().join("key.txt").to_str().unwrap(),
    ]);
    let public = public.ok();
    let recipient = public.trim();
    for (compression, extra) in [
        ("none", None),
        ("gzip", None),
        ("zstd", None),
        ("gzip", Some(recipient)),
    ] {
        let dest = t
            .work()
            .join(format!("dest-{compression}-{}", extra.is_some()));
        let mut args = vec![
            "--sources",
            src.to_str().unwrap(),
            "--destination",
            dest.to_str().unwrap(),
            "--compression",
            compression,
        ];
        if let Some(recipient) = extra {
            args.extend(["--encrypt-to", recipient]);
        }
        let archive = common::run_for_archive(&t, &args);
        let size = std::fs::metadata(&archive).unwrap().len();
        assert!(size > 4 * 1024 * 1024, "{compression}: {size} bytes");
        let manifest = manifest_of(&archive);
        assert_eq!(
            manifest["checksum_sha256"],
            common::sha256sum(&archive),
            "{compression}, encrypted: {}",
            extra.is_some()
        );
        assert_eq!(manifest["size_bytes"], size, "{compression}");
        t.ctl(&["verify", archive.to_str().unwrap()]).ok();
    }
}

#[test]
fn a_run_cancelled_while_hashing_on_its_own_thread_leaves_nothing_and_no_thread() {
    let t = TestHome::new();
    // Uncompressed, so the archive passes the 1 MiB chunk at once and the hashing thread
    // starts, then 8 MiB and the thread that syncs it to disk in the background starts.
    let (daemon, mut client, dest) = start_endless_run(&t, "none");
    wait_for(PATIENCE, "the SHA-256 and the sync threads at work", || {
        let hashing = threads_of(daemon.pid(), "sha256");
        (hashing > 0 && threads_of(daemon.pid(), "archive-sync") > 0).then_some(())
    });

    cancel_and_expect_nothing_left(&t, &mut client, &dest);
    // Dropping the writer joins the SHA-256 thread: it does not outlive the run.
    assert_eq!(threads_of(daemon.pid(), "sha256"), 0);
    // The abandoned archive's sync thread is not joined, but it ends too.
    wait_for(PATIENCE, "the sync thread gone", || {
        (threads_of(daemon.pid(), "archive-sync") == 0).then_some(())
    });

    // The daemon goes on: the next runs' checksums are right.
    let mixed = mixed_source(&t, "mixed");
    let archive = backup(&t, &mixed, "none");
    assert_eq!(
        manifest_of(&archive)["checksum_sha256"],
        common::sha256sum(&archive)
    );
    // Past 8 MiB, so synced in the background: publishing joins that thread.
    let zeros = t.work().join("zeros");
    std::fs::create_dir(&zeros).unwrap();
    std::fs::write(zeros.join("zeros"), vec![0; 24 << 20]).unwrap();
    let archive = backup(&t, &zeros, "none");
    assert_eq!(
        manifest_of(&archive)["checksum_sha256"],
        common::sha256sum(&archive)
    );
    assert_eq!(threads_of(daemon.pid(), "archive-sync"), 0);
}

#[test]
fn multi_member_archives_are_read_whole_by_repair_and_the_remote_and_encrypted_readers() {
    use common::s3::{S3Server, SECRET_KEY, env_for};
    let server = S3Server::start();
    let t = TestHome::new();
    t.append_config(&server.remote_table("off", "host", ""));
    let env = env_for(&server, SECRET_KEY);
    let mut daemon = t.start_daemon_with_env(&env);
    let src = mixed_source(&t, "mixed");
    let key = t.work().join("key.txt");
    let public = t.ctl(&["keygen", "--out", key.to_str().unwrap()]).ok();
    let key_arg = key.to_str().unwrap();
    let source = src.to_str().unwrap();
    let plain = common::run_for_archive(&t, &["--sources", source, "--offsite", "off"]);
    let sealed = common::run_for_archive(
        &t,
        &[
            "--sources",
            source,
            "--offsite",
            "off",
            "--encrypt-to",
            public.trim(),
        ],
    );
    let (first, whole) = first_member_and_whole(&plain);
    assert!(first < whole, "several members: {first} of {whole}");

    // Encrypted, read locally: `ls` reaches the last entry, restore is whole.
    let listed = t
        .ctl(&["ls", sealed.to_str().unwrap(), "--identity", key_arg])
        .ok();
    assert!(listed.contains("mixed/small/deeper/empty"), "{listed}");
    let target = t.work().join("from-sealed");
    t.ctl(&[
        "restore",
        sealed.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
        "--identity",
        key_arg,
    ])
    .ok();
    assert!(snapshot(&target.join("mixed")) == snapshot(&src), "sealed");

    // The remote copies, plain and encrypted: verified to the end and restored whole.
    for (archive, extra) in [(&plain, vec![]), (&sealed, vec!["--identity", key_arg])] {
        let name = archive.file_name().unwrap().to_str().unwrap();
        let mut args = vec!["verify", "--remote", "off", name];
        args.extend(&extra);
        let (code, answer) = common::ctl_json(&t, &args);
        assert_eq!(code, 0, "{answer}");
        let check = &answer["data"]["archives"][0];
        assert_eq!(check["status"], "ok", "{answer}");
        assert!(check["detail"].is_null(), "read to the end: {answer}");
        let target = t.work().join(format!("remote-{name}"));
        let mut args = vec!["restore", "--remote", "off", name, "--to"];
        args.push(target.to_str().unwrap());
        args.extend(&extra);
        t.ctl(&args).ok();
        assert!(snapshot(&target.join("mixed")) == snapshot(&src), "{name}");
    }

    // A manifest lost to a crash is rebuilt at start from all the members.
    let manifest = plain.with_file_name(
        plain
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace(".tar.gz", ".json"),
    );
    let written: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    std::fs::remove_file(&manifest).unwrap();
    let _restarted = t.start_daemon_with_env(&env);
    // Rebuilt beside serving, and written whole (renamed into place).
    let rebuilt = common::wait_for(common::PATIENCE, "the rebuilt manifest", || {
        std::fs::read(&manifest).ok()
    });
    let rebuilt: Value = serde_json::from_slice(&rebuilt).unwrap();
    for field in ["checksum_sha256", "size_bytes", "files", "dirs", "bytes_in"] {
        assert_eq!(rebuilt[field], written[field], "{field}");
    }
}
