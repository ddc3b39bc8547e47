//! Archives backupd did not write, read by `verify`, `restore`, `ls` and the repair of a
//! lost manifest at start: GNU tar's own (sparse files, times before 1970), pax archives with
//! a global header (`git archive`'s kind) or names no file can have, and one whose long-name
//! header claims more memory than any archive needs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{TestHome, sha256sum, wait_for};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const BLOCK: usize = 512;
/// 1960-01-01 00:00:00 UTC.
const BEFORE_1970: i64 = -315_619_200;

/// Places `archive` in the home's `backups/` under `<stem><suffix>`, with the manifest the
/// original backup script wrote for it (six fields).
fn with_manifest(t: &TestHome, stem: &str, suffix: &str, bytes: &[u8]) -> PathBuf {
    let backups = t.home().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let archive = backups.join(format!("{stem}{suffix}"));
    std::fs::write(&archive, bytes).unwrap();
    let manifest = serde_json::json!({
        "backup_file": archive,
        "source": "/somewhere/src",
        "created": stem.split_once('_').unwrap().1,
        "size_bytes": bytes.len(),
        "size_human": format!("{} B", bytes.len()),
        "checksum_sha256": sha256sum(&archive),
    });
    std::fs::write(
        backups.join(format!("{stem}.json")),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    archive
}

/// `src/` with a sparse file of 40 data regions (more than a GNU sparse header holds, so
/// GNU tar writes extension blocks), a file last changed in 1960, and a file whose name is
/// long enough for a GNU long-name header.
fn source(t: &TestHome) -> (PathBuf, String) {
    let src = t.work().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    for region in 0..40u64 {
        use std::os::unix::fs::FileExt;
        sparse
            .write_all_at(&[region as u8 + 1; 4096], region * 256 * 1024)
            .unwrap();
    }
    sparse.set_len(40 * 256 * 1024).unwrap();
    std::fs::write(src.join("old"), b"from before 1970\n").unwrap();
    let touched = Command::new("touch")
        .args(["-m", "-d", &format!("@{BEFORE_1970}")])
        .arg(src.join("old"))
        .status()
        .unwrap();
    assert!(touched.success());
    let long = format!("{}.txt", "n".repeat(120));
    std::fs::write(src.join(&long), b"long\n").unwrap();
    (src, long)
}

/// GNU tar's archive of `members` of the work folder, uncompressed, sparse files kept sparse.
fn gnu_tar(t: &TestHome, members: &[&str]) -> Vec<u8> {
    let out = Command::new("tar")
        .args(["--sparse", "--format=gnu", "-cf", "-", "-C"])
        .arg(t.work())
        .args(members)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// The offset of the first header block of `kind`.
fn header_of_kind(tar: &[u8], kind: u8) -> usize {
    (0..tar.len() / BLOCK)
        .map(|block| block * BLOCK)
        .find(|at| tar[at + 156] == kind && tar[at + 257..at + 262] == *b"ustar")
        .unwrap_or_else(|| panic!("no {:?} header", kind as char))
}

/// Gives the header at `at` a size of `size` and its checksum again.
fn set_size(tar: &mut [u8], at: usize, size: u64) {
    let mut header = tar::Header::from_byte_slice(&tar[at..at + BLOCK]).clone();
    header.set_size(size);
    header.set_cksum();
    tar[at..at + BLOCK].copy_from_slice(header.as_bytes());
}

#[test]
fn gnu_tar_archives_with_sparse_files_and_times_before_1970_verify_and_restore() {
    let t = TestHome::new();
    let (src, _) = source(&t);
    let plain = gnu_tar(&t, &["src/sparse", "src/old"]);
    // The sparse entry's map does not fit its header: extension blocks follow it.
    let sparse = header_of_kind(&plain, b'S');
    assert_ne!(plain[sparse + 482], 0, "GNU tar wrote no extension block");
    with_manifest(&t, "src_20250101_000000", ".tar.gz", &gzip(&plain));
    let _daemon = t.start_daemon();

    let verified = t.ctl(&["verify", "src_20250101_000000.tar.gz"]);
    assert_eq!(
        verified.stdout().trim(),
        "src_20250101_000000.tar.gz: OK",
        "{}",
        verified.stderr()
    );
    assert_eq!(verified.code(), 0);

    // `ls` as `tar -tv` shows them: a file, and 1960.
    let listed = t.ctl(&["ls", "src_20250101_000000.tar.gz"]).ok();
    let line = |name: &str| {
        listed
            .lines()
            .find(|line| line.ends_with(name))
            .unwrap_or_else(|| panic!("{name}: {listed}"))
            .to_owned()
    };
    assert!(line("src/sparse").starts_with("-rw"), "{listed}");
    assert!(line("src/sparse").contains(" 10485760 "), "{listed}");
    assert!(
        line("src/old").contains(" 1960-01-01 00:00:00 "),
        "{listed}"
    );

    let to = t.work().join("restored");
    t.ctl(&[
        "restore",
        "src_20250101_000000.tar.gz",
        "--to",
        to.to_str().unwrap(),
    ])
    .ok();
    let restored = to.join("src/sparse");
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(src.join("sparse")).unwrap()
    );
    // Its holes stay holes, as GNU tar keeps them: 40 blocks of data, not 10 MiB of zeros.
    let blocks = std::fs::metadata(&restored).unwrap().blocks() * 512;
    assert!(blocks < 1 << 20, "{blocks} bytes allocated");
    let old = std::fs::metadata(to.join("src/old")).unwrap();
    assert_eq!(
        old.mtime(),
        BEFORE_1970,
        "restored as in 1960, as GNU tar does"
    );
}

#[test]
fn a_long_name_claiming_more_than_any_archive_needs_is_refused_unread() {
    let t = TestHome::new();
    let (_, long) = source(&t);
    let long_member = format!("src/{long}");
    let mut plain = gnu_tar(&t, &["src/sparse", &long_member]);
    // After the sparse entry and its extension blocks, so the check must follow them.
    let long_name = header_of_kind(&plain, b'L');
    assert!(long_name > header_of_kind(&plain, b'S'));
    // The name stays as it is; its header says 512 MiB, and the stream holds that many
    // bytes: the tar reader alone would take them all into memory.
    let claimed: u64 = 512 << 20;
    set_size(&mut plain, long_name, claimed);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain[..long_name + BLOCK]).unwrap();
    let zeros = vec![b'n'; 1 << 20];
    for _ in 0..claimed / zeros.len() as u64 {
        gz.write_all(&zeros).unwrap();
    }
    gz.write_all(&[0; 2 * BLOCK]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 8 << 20, "{} bytes", bomb.len());
    with_manifest(&t, "src_20250101_000000", ".tar.gz", &bomb);
    // And the same without a manifest, for the repair at start.
    let backups = t.home().join("backups");
    std::fs::write(backups.join("lost_20250102_000000.tar.gz"), &bomb).unwrap();

    let daemon = t.start_daemon();
    let said = "says it is 536870912 bytes; no archive needs more than 1048576";
    let verified = t.ctl(&["verify", "src_20250101_000000.tar.gz"]);
    assert_eq!(verified.code(), 1);
    assert!(verified.stdout().contains(said), "{}", verified.stdout());
    for args in [
        vec!["ls", "src_20250101_000000.tar.gz"],
        vec!["restore", "src_20250101_000000.tar.gz", "--to"],
    ] {
        let mut args = args;
        let to = t.work().join("restored");
        if args[0] == "restore" {
            args.push(to.to_str().unwrap());
        }
        let out = t.ctl(&args);
        assert_eq!(out.code(), 1, "{args:?}");
        assert!(out.stderr().contains(said), "{args:?}: {}", out.stderr());
        assert!(!to.exists(), "nothing restored");
    }
    wait_for(
        Duration::from_secs(30),
        "the repair at start to refuse it too",
        || {
            let log = t.log();
            log.lines()
                .any(|line| line.contains("lost_20250102_000000.tar.gz") && line.contains(said))
                .then_some(())
        },
    );
    assert!(!backups.join("lost_20250102_000000.json").exists());

    // Nothing close to the claimed size was ever held.
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .map(|kib| kib.trim().parse().unwrap())
        .unwrap();
    assert!(peak_kib < 256 << 10, "peak RSS {peak_kib} KiB");
}

/// A pax archive written by Python's `tarfile`, as `git archive` writes them: a global header
/// first, then `src/` with `ok.txt`, and `hostile` entries named by raw pax records.
fn pax_archive(t: &TestHome, hostile: &str) -> Vec<u8> {
    let script = format!(
        r#"
import io, sys, tarfile
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                  pax_headers={{"comment": "a commit id"}}) as tar:
    def add(name, data=b"", kind=tarfile.REGTYPE, link="", pax=None):
        info = tarfile.TarInfo(name)
        info.type, info.size, info.linkname, info.mode = kind, len(data), link, 0o644
        if pax:
            info.pax_headers = pax
        tar.addfile(info, io.BytesIO(data))
    add("src", kind=tarfile.DIRTYPE)
    add("src/ok.txt", b"kept\n")
{hostile}
sys.stdout.buffer.write(out.getvalue())
"#
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .current_dir(t.work())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn a_pax_global_header_is_no_entry_and_a_name_with_a_nul_byte_is_refused_alone() {
    let t = TestHome::new();
    let plain = pax_archive(&t, "");
    assert_eq!(plain[156], b'g', "a global header first");
    with_manifest(&t, "git_20250101_000000", ".tar", &plain);
    let hostile = pax_archive(
        &t,
        r#"    add("src/nul", pax={"path": "src/a\x00b"})
    add("src/link", kind=tarfile.SYMTYPE, pax={"linkpath": "x\x00y"})
    add("src/after.txt", b"after\n")"#,
    );
    with_manifest(&t, "nul_20250101_000000", ".tar", &hostile);
    let _daemon = t.start_daemon();

    // Restored whole and quietly, as GNU tar restores it; `ls` lists no `@PaxHeader`.
    let to = t.work().join("git");
    let restored = t.ctl(&[
        "restore",
        "git_20250101_000000.tar",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(restored.code(), 0, "{}", restored.stderr());
    assert!(
        !restored.stdout().contains("Refused"),
        "{}",
        restored.stdout()
    );
    assert_eq!(std::fs::read(to.join("src/ok.txt")).unwrap(), b"kept\n");
    assert_eq!(
        std::fs::read_dir(&to).unwrap().count(),
        1,
        "only src/ in the target"
    );
    let listed = t.ctl(&["ls", "git_20250101_000000.tar"]).ok();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(!listed.contains("PaxHeader"), "{listed}");

    // Each entry no file name can hold is refused; the others are restored.
    let to = t.work().join("nul");
    let refused = t.ctl(&[
        "restore",
        "nul_20250101_000000.tar",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(refused.code(), 1, "{}", refused.stderr());
    let said = format!("{}{}", refused.stdout(), refused.stderr());
    assert!(said.contains("name contains a NUL byte"), "{said}");
    assert!(
        said.contains("symlink target contains a NUL byte"),
        "{said}"
    );
    assert!(!said.contains("removed"), "nothing undone: {said}");
    assert_eq!(std::fs::read(to.join("src/ok.txt")).unwrap(), b"kept\n");
    assert_eq!(std::fs::read(to.join("src/after.txt")).unwrap(), b"after\n");
    let mut names: Vec<_> = std::fs::read_dir(to.join("src"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["after.txt", "ok.txt"]);
}

/// A 12-byte tar number field holding `value` in base 256, as GNU tar writes sizes past 8 GiB.
fn base256(value: u64) -> [u8; 12] {
    let mut field = [0; 12];
    field[4..].copy_from_slice(&value.to_be_bytes());
    field[0] = 0x80;
    field
}

/// An uncompressed tar of `top/sparse`, a GNU sparse entry whose last `stored` bytes are the
/// only data, claiming `real` bytes in all: the rest is a hole.
fn sparse_claiming(real: u64, stored: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    let mut folder = tar::Header::new_gnu();
    folder.set_path("top/").unwrap();
    folder.set_entry_type(tar::EntryType::Directory);
    folder.set_mode(0o755);
    folder.set_size(0);
    folder.set_cksum();
    tar.extend_from_slice(folder.as_bytes());
    let mut sparse = tar::Header::new_gnu();
    sparse.set_path("top/sparse").unwrap();
    sparse.set_entry_type(tar::EntryType::GNUSparse);
    sparse.set_mode(0o644);
    sparse.set_size(stored.len() as u64);
    let gnu = sparse.as_gnu_mut().unwrap();
    gnu.sparse[0].offset = base256(real - stored.len() as u64);
    gnu.sparse[0].numbytes = base256(stored.len() as u64);
    gnu.realsize = base256(real);
    sparse.set_cksum();
    tar.extend_from_slice(sparse.as_bytes());
    tar.extend_from_slice(stored);
    tar.resize(tar.len().next_multiple_of(BLOCK) + 2 * BLOCK, 0);
    tar
}

#[test]
fn a_sparse_entry_claiming_exabytes_is_verified_unread_and_refused_by_restore_at_once() {
    // 126 bytes gzipped: verify read the zeros of its hole, for years, and restore too.
    let t = TestHome::new();
    let stored = [b'Z'; BLOCK];
    with_manifest(
        &t,
        "huge_20250101_000000",
        ".tar.gz",
        &gzip(&sparse_claiming(1 << 63, &stored)),
    );
    // And without a manifest, for the repair at start.
    let backups = t.home().join("backups");
    let lost = gzip(&sparse_claiming(1 << 63, &stored));
    std::fs::write(backups.join("lost_20250102_000000.tar.gz"), lost).unwrap();
    // The same entry of 64 GiB, its data cut short.
    let mut cut = sparse_claiming(64 << 30, &stored);
    cut.truncate(3 * BLOCK - 100);
    with_manifest(&t, "cut_20250101_000000", ".tar", &cut);
    let _daemon = t.start_daemon();
    wait_for(Duration::from_secs(30), "the repair at start", || {
        t.log().contains("Rebuilt manifest for").then_some(())
    });
    assert!(backups.join("lost_20250102_000000.json").exists());

    let verified = t.ctl(&["verify", "huge_20250101_000000.tar.gz"]);
    assert_eq!(
        verified.stdout().trim(),
        "huge_20250101_000000.tar.gz: OK",
        "{}",
        verified.stderr()
    );
    let verified = t.ctl(&["verify", "cut_20250101_000000.tar"]);
    assert_eq!(verified.code(), 1);
    assert!(
        verified
            .stdout()
            .contains("cut_20250101_000000.tar: truncated"),
        "{}",
        verified.stdout()
    );

    // No file can be that large: refused before a byte is read, nothing left.
    let to = t.work().join("restored");
    let refused = t.ctl(&[
        "restore",
        "huge_20250101_000000.tar.gz",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(refused.code(), 1);
    assert!(
        refused
            .stderr()
            .contains("the entry claims 9223372036854775808 bytes, more than any file can hold"),
        "{}",
        refused.stderr()
    );
    assert!(!to.exists(), "everything it made is removed");
}
