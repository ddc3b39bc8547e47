//! Encryption with age: `backupctl keygen`, `--encrypt-to` / `--encrypt-to-file`, verify
//! without and with `--identity`, restore with an identity (and its failures leaving nothing
//! behind), identity files the daemon refuses, no secret key anywhere in the home, and interop
//! with the Debian `age` CLI and GNU tar; a passphrase typed at a terminal for one-off runs,
//! verifies, listings and restores, kept nowhere and never part of a schedule.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::terminal::Terminal;
use common::{Client, TestHome, sha256sum, snapshot};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `<work>/<dir>` with a small tree and one file of `size` incompressible bytes, so that the
/// ciphertext spans several 64 KiB age chunks.
fn source(t: &TestHome, dir: &str, size: usize) -> PathBuf {
    let src = t.work().join(dir);
    std::fs::create_dir_all(src.join("docs")).unwrap();
    std::fs::write(src.join("docs/a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("b.txt"), "bravo\n").unwrap();
    std::fs::write(src.join("data.bin"), common::incompressible(size, 0)).unwrap();
    src
}

/// `backupctl keygen --out <work>/<file>`; returns the path and the public key it printed.
fn keygen(t: &TestHome, file: &str) -> (PathBuf, String) {
    let path = t.work().join(file);
    let public = t.ctl(&["keygen", "--out", path.to_str().unwrap()]).ok();
    (path, public.trim().to_owned())
}

use common::run_for_archive as backup;

fn manifest_of(archive: &Path) -> PathBuf {
    let name = archive.file_name().unwrap().to_str().unwrap();
    let stem = name.split(".tar").next().unwrap();
    archive.with_file_name(format!("{stem}.json"))
}

/// Makes the manifest vouch for the archive's current bytes, as an attacker who can write
/// both would: only age's authentication is left to catch the change.
fn rewrite_manifest(archive: &Path) {
    let manifest = manifest_of(archive);
    let mut value: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    value["checksum_sha256"] = Value::String(sha256sum(archive));
    value["size_bytes"] = Value::from(std::fs::metadata(archive).unwrap().len());
    std::fs::write(&manifest, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

/// Every file under `root` that holds `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

fn is_empty_or_absent(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

#[test]
fn keygen_writes_a_private_identity_once_and_prints_its_public_key() {
    let t = TestHome::new();
    let (key, public) = keygen(&t, "key.txt");
    assert!(public.starts_with("age1"), "{public}");
    let text = std::fs::read_to_string(&key).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("# created: "), "{text}");
    assert_eq!(lines[1], format!("# public key: {public}"));
    assert!(lines[2].starts_with("AGE-SECRET-KEY-1"));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let again = t.ctl(&["keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(again.code(), 1, "{}", again.stderr());
    assert!(
        again.stderr().contains("never replaced"),
        "{}",
        again.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        text,
        "left as it was"
    );

    // Without --out: the identity on stdout, the public key on stderr, as age-keygen does.
    let out = t.ctl(&["keygen"]);
    assert_eq!(out.code(), 0);
    assert!(out.stdout().contains("AGE-SECRET-KEY-1"));
    assert!(
        out.stderr().starts_with("Public key: age1"),
        "{}",
        out.stderr()
    );
}

#[test]
fn keygen_makes_the_missing_folders_of_its_file_private() {
    // README's line on a fresh account, where ~/.config/backupd does not exist yet.
    let t = TestHome::new();
    let (key, public) = keygen(&t, "fresh/.config/backupd/key.txt");
    assert!(public.starts_with("age1"), "{public}");
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("AGE-SECRET-KEY-1")
    );
    for folder in ["fresh", "fresh/.config", "fresh/.config/backupd"] {
        let mode = std::fs::metadata(t.work().join(folder))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{folder}");
    }
    // An existing folder keeps its mode.
    std::fs::set_permissions(t.work(), std::fs::Permissions::from_mode(0o755)).unwrap();
    keygen(&t, "second.txt");
    let mode = std::fs::metadata(t.work()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn the_readme_encryption_example_works_on_a_fresh_account() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    source(&t, "docs", 1000);
    let example = &common::readme_examples("Commands")["keygen"];
    common::run_readme_example(&t, "keygen", example);
    let folder = t.work().join(".config/backupd");
    let key = std::fs::read_to_string(folder.join("key.txt")).unwrap();
    let recipients = std::fs::read_to_string(folder.join("recipients.txt")).unwrap();
    assert!(recipients.starts_with("age1"), "{recipients}");
    assert!(
        key.contains(&format!("# public key: {recipients}")),
        "{key}\n{recipients}"
    );
    let list = t.ctl(&["list"]).ok();
    assert!(list.contains("nightly"), "{list}");
}

/// `keygen --out key` under a file size limit of 0, after the shell's `trap` for SIGXFSZ.
fn keygen_with_no_room(key: &Path, trap: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", &format!("{trap}; ulimit -f 0; exec \"$@\""), "sh"])
        .arg(common::backupctl_bin())
        .args(["keygen", "--out", key.to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn keygen_that_cannot_write_leaves_no_file_behind() {
    let t = TestHome::new();
    let keys = t.work().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let key = keys.join("key.txt");
    // A file size limit of 0 makes every write to a file fail (EFBIG), as a full disk would,
    // without root; SIGXFSZ ignored, so the write returns the error instead of killing.
    let failed = keygen_with_no_room(&key, "trap '' XFSZ");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    assert!(stderr.contains(key.to_str().unwrap()), "{stderr}");
    assert!(is_empty_or_absent(&keys), "no partial identity left");

    // So a second try is not refused by a half-written key.
    let (made, public) = keygen(&t, "keys/key.txt");
    assert_eq!(made, key);
    assert!(public.starts_with("age1"), "{public}");
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("AGE-SECRET-KEY-1")
    );
}

#[test]
fn keygen_killed_while_writing_leaves_no_copy_of_the_key() {
    let t = TestHome::new();
    let keys = t.work().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let key = keys.join("key.txt");
    // With SIGXFSZ at its default, the first write past the size limit kills the process
    // there, as a SIGKILL or a crash would: no destructor, no clean-up runs.
    let killed = keygen_with_no_room(&key, "trap - XFSZ");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        killed.status.signal(),
        Some(rustix::process::Signal::XFSZ.as_raw()),
        "{killed:?}"
    );
    assert!(
        is_empty_or_absent(&keys),
        "no key, whole or partial, under any name: {:?}",
        std::fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
}

#[test]
fn an_encrypted_run_round_trips_and_the_home_holds_no_secret_key() {
    let t = TestHome::new();
    let src = source(&t, "tree", 300_000);
    let (key, public) = keygen(&t, "key.txt");
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "tree", "--encrypt-to", &public]);
    let name = archive.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("tree_") && name.ends_with(".tar.gz.age"),
        "{name}"
    );
    assert!(
        std::fs::read(&archive)
            .unwrap()
            .starts_with(b"age-encryption.org/v1\n")
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(manifest_of(&archive)).unwrap()).unwrap();
    assert_eq!(manifest["encryption"], "age");
    assert_eq!(manifest["recipients"], serde_json::json!([public]));
    assert_eq!(manifest["checksum_sha256"], sha256sum(&archive));

    // Without a key: the checksum only, and it says so.
    let plain = t.ctl(&["verify", archive.to_str().unwrap()]);
    assert_eq!(plain.code(), 0, "{}", plain.stderr());
    assert!(
        plain.stdout().contains(
            "checksum only: content not read (encrypted; give --identity or --passphrase)"
        ),
        "{}",
        plain.stdout()
    );
    let keyed = t
        .ctl(&[
            "verify",
            archive.to_str().unwrap(),
            "--identity",
            key.to_str().unwrap(),
        ])
        .ok();
    assert!(
        keyed.contains(": OK") && !keyed.contains("checksum only"),
        "{keyed}"
    );

    let long = t.ctl(&["backups", "--long"]).ok();
    assert!(
        long.contains(&format!("encrypted (age) to {public}")),
        "{long}"
    );

    // ls reads the entries with the key, and without it says what to give.
    let path = archive.to_str().unwrap();
    let listed = t
        .ctl(&["ls", path, "docs", "--identity", key.to_str().unwrap()])
        .ok();
    assert!(listed.contains("docs/a.txt"), "{listed}");
    let keyless = t.ctl(&["ls", path]);
    assert_eq!(keyless.code(), 1);
    assert!(
        keyless.stderr().contains("give --identity"),
        "{}",
        keyless.stderr()
    );

    let target = t.work().join("restored");
    t.ctl(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
        "--identity",
        key.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(snapshot(&target.join("tree")), snapshot(&src));

    // A restore without the key is refused before anything is written.
    let keyless = t.work().join("keyless");
    let out = t.ctl(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        keyless.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr().contains("--identity"), "{}", out.stderr());
    assert!(is_empty_or_absent(&keyless));

    let secrets = files_containing(&t.home(), b"AGE-SECRET-KEY");
    assert!(secrets.is_empty(), "secret keys in the home: {secrets:?}");
}

#[test]
fn identity_files_others_can_read_or_that_do_not_match_are_refused_and_nothing_is_written() {
    let t = TestHome::new();
    source(&t, "tree", 10_000);
    let (key, public) = keygen(&t, "key.txt");
    let (stranger, _) = keygen(&t, "stranger.txt");
    let _daemon = t.start_daemon();
    let archive = backup(&t, &["--sources", "tree", "--encrypt-to", &public]);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let target = t.work().join("restored");
    let restore = |identity: &Path| {
        t.ctl(&[
            "restore",
            archive.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
            "--identity",
            identity.to_str().unwrap(),
        ])
    };
    let exposed = restore(&key);
    assert_eq!(exposed.code(), 1);
    assert!(
        exposed.stderr().contains("readable by group or others"),
        "{}",
        exposed.stderr()
    );
    let verify = t.ctl(&[
        "verify",
        archive.to_str().unwrap(),
        "--identity",
        key.to_str().unwrap(),
    ]);
    assert_eq!(verify.code(), 1, "{}", verify.stdout());

    let link = t.work().join("link.txt");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&key, &link).unwrap();
    let linked = restore(&link);
    assert_eq!(linked.code(), 1, "a symlink is not followed");

    let wrong = restore(&stranger);
    assert_eq!(wrong.code(), 1);
    assert!(
        wrong.stderr().contains("does not match any recipient"),
        "{}",
        wrong.stderr()
    );
    assert!(is_empty_or_absent(&target));
    for out in [&exposed, &wrong] {
        assert!(!out.stderr().contains("AGE-SECRET-KEY"));
    }
    assert!(files_containing(&t.home(), b"AGE-SECRET-KEY").is_empty());
}

#[test]
fn truncated_or_bit_flipped_ciphertext_fails_the_restore_and_leaves_nothing() {
    let t = TestHome::new();
    // Uncompressed, so early chunks decrypt to whole entries that get written before the
    // damage is reached: the undo has work to do.
    source(&t, "tree", 600_000);
    let (key, public) = keygen(&t, "key.txt");
    let _daemon = t.start_daemon();
    for (damage, what) in [
        (0, "truncated"),
        (1, "bit-flipped"),
        (2, "overwrite+flipped"),
    ] {
        let archive = backup(
            &t,
            &[
                "--sources",
                "tree",
                "--compression",
                "none",
                "--encrypt-to",
                &public,
            ],
        );
        let mut bytes = std::fs::read(&archive).unwrap();
        if damage == 0 {
            bytes.truncate(bytes.len() - 100_000);
        } else {
            let at = bytes.len() * 3 / 4;
            bytes[at] ^= 0x01;
        }
        std::fs::write(&archive, &bytes).unwrap();
        rewrite_manifest(&archive);

        let target = t.work().join(format!("restored-{damage}"));
        std::fs::create_dir(&target).unwrap();
        let mut args = vec![
            "restore",
            archive.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
            "--identity",
            key.to_str().unwrap(),
        ];
        if damage == 2 {
            std::fs::create_dir(target.join("tree")).unwrap();
            std::fs::write(target.join("tree/b.txt"), "mine\n").unwrap();
            args.push("--overwrite");
        }
        let out = t.ctl(&args);
        assert_eq!(out.code(), 1, "{what}: {}", out.stdout());
        if damage == 2 {
            assert_eq!(
                std::fs::read_to_string(target.join("tree/b.txt")).unwrap(),
                "mine\n",
                "{what}: nothing replaced"
            );
            assert!(
                out.stderr().contains("nothing was written"),
                "{}",
                out.stderr()
            );
        } else {
            assert!(is_empty_or_absent(&target), "{what}: {}", out.stderr());
        }

        let verify = t.ctl(&[
            "verify",
            archive.to_str().unwrap(),
            "--identity",
            key.to_str().unwrap(),
        ]);
        assert_eq!(verify.code(), 1, "{what}: {}", verify.stdout());
        std::fs::remove_file(&archive).unwrap();
        std::fs::remove_file(manifest_of(&archive)).unwrap();
    }
}

#[test]
fn recipients_files_and_defaults_encrypt_and_schedules_keep_only_public_keys() {
    let t = TestHome::new();
    source(&t, "tree", 1_000);
    let (key, public) = keygen(&t, "key.txt");
    let recipients = t.work().join("recipients.txt");
    std::fs::write(&recipients, format!("# backups\n\n{public}\n")).unwrap();
    let _daemon = t.start_daemon();

    let bad = t.ctl(&["run", "--sources", "tree", "--encrypt-to", "age1nope"]);
    assert_eq!(bad.code(), 1, "{}", bad.stderr());
    assert!(bad.stderr().contains("not an age X25519 recipient"));
    let secret = t.ctl(&[
        "run",
        "--sources",
        "tree",
        "--encrypt-to",
        "AGE-SECRET-KEY-1QQQQ",
    ]);
    assert_eq!(secret.code(), 1);
    assert!(!secret.stderr().contains("AGE-SECRET-KEY-1QQQQ"));

    t.ctl(&[
        "create",
        "--name",
        "nightly",
        "--source",
        "tree",
        "--daily",
        "03:00",
        "--encrypt-to-file",
        recipients.to_str().unwrap(),
    ])
    .ok();
    let stored = std::fs::read_to_string(t.home().join("schedules.json")).unwrap();
    assert!(stored.contains("recipients.txt"), "{stored}");
    t.ctl(&["run", "--name", "nightly"]).ok();
    let archives: Vec<String> = std::fs::read_dir(t.home().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("nightly_") && n.ends_with(".tar.gz.age"))
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    let archive = t.home().join("backups").join(&archives[0]);
    t.ctl(&[
        "verify",
        archive.to_str().unwrap(),
        "--identity",
        key.to_str().unwrap(),
    ])
    .ok();

    // A recipients file that is a symlink is not followed.
    let link = t.work().join("recipients-link.txt");
    std::os::unix::fs::symlink(&recipients, &link).unwrap();
    let linked = t.ctl(&[
        "run",
        "--sources",
        "tree",
        "--encrypt-to-file",
        link.to_str().unwrap(),
    ]);
    assert_eq!(linked.code(), 1, "{}", linked.stderr());
    assert!(files_containing(&t.home(), b"AGE-SECRET-KEY").is_empty());
}

/// `age` and `age-keygen`, or why the test cannot run; in CI they must be there.
fn age_cli() -> bool {
    let present = Command::new("age")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var("CI").is_err(),
            "the age CLI is missing in CI (.ci/run installs it)"
        );
        eprintln!("skipped: the age CLI is not installed (apt-get install age)");
    }
    present
}

#[test]
fn the_age_cli_decrypts_our_archives_and_its_keys_work_with_backupd() {
    if !age_cli() {
        return;
    }
    let t = TestHome::new();
    let src = source(&t, "tree", 200_000);
    let key = t.work().join("age-key.txt");
    let made = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let text = std::fs::read_to_string(&key).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_owned();
    let (ours, our_public) = keygen(&t, "ours.txt");
    let _daemon = t.start_daemon();
    let archive = backup(
        &t,
        &[
            "--sources",
            "tree",
            "--encrypt-to",
            &public,
            "--encrypt-to",
            &our_public,
        ],
    );

    // The README's command: age -d -i key.txt x.tar.gz.age | tar -xz
    for identity in [&key, &ours] {
        let out = t.work().join(format!(
            "by-age-{}",
            identity.file_stem().unwrap().to_str().unwrap()
        ));
        std::fs::create_dir(&out).unwrap();
        let script = "age -d -i \"$1\" \"$2\" | tar -xz -C \"$3\"";
        let status = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script, "sh"])
            .arg(identity)
            .arg(&archive)
            .arg(&out)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(snapshot(&out.join("tree")), snapshot(&src));
    }

    // And age-keygen's identity restores through backupd.
    let target = t.work().join("restored");
    t.ctl(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
        "--identity",
        key.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(snapshot(&target.join("tree")), snapshot(&src));
}

/// `backupctl ARGS` with the test typing `lines` at its terminal.
fn ctl_typing(t: &TestHome, args: &[&str], lines: &[&str]) -> std::process::Output {
    Terminal::open().run(&mut t.ctl_command(args), lines)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const PASSPHRASE: &str = "correct horse battery staple";

/// `backupctl run --sources SOURCE --passphrase`, typing [`PASSPHRASE`] twice; the archive.
fn run_with_passphrase(t: &TestHome, source: &str) -> PathBuf {
    let typed = ctl_typing(
        t,
        &["--json", "run", "--sources", source, "--passphrase"],
        &[PASSPHRASE, PASSPHRASE],
    );
    assert!(typed.status.success(), "{}", text(&typed.stderr));
    assert!(text(&typed.stderr).contains("Confirm passphrase: "));
    let answer: Value = serde_json::from_slice(&typed.stdout).unwrap();
    PathBuf::from(answer["data"]["sources"][0]["archive"].as_str().unwrap())
}

#[test]
fn a_passphrase_typed_at_the_terminal_encrypts_a_one_off_run_and_opens_it() {
    let t = TestHome::new();
    let src = source(&t, "tree", 200_000);
    let _daemon = t.start_daemon();

    let archive = run_with_passphrase(&t, "tree");
    assert!(
        archive.to_str().unwrap().ends_with(".tar.gz.age"),
        "{archive:?}"
    );
    // age's passphrase stanza, at the work factor the age CLI uses.
    let head = std::fs::read(&archive).unwrap();
    let header = text(&head[..200]);
    let stanza = header.lines().nth(1).unwrap();
    assert!(
        stanza.starts_with("-> scrypt ") && stanza.ends_with(" 18"),
        "{stanza}"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(manifest_of(&archive)).unwrap()).unwrap();
    assert_eq!(manifest["encryption"], "age");
    assert_eq!(manifest["passphrase"], true);
    assert!(manifest.get("recipients").is_none(), "{manifest}");
    let long = t.ctl(&["backups", "--long"]).ok();
    assert!(long.contains("encrypted (age) to a passphrase"), "{long}");

    let path = archive.to_str().unwrap();
    let unread = t.ctl(&["verify", path]).ok();
    assert!(unread.contains("checksum only"), "{unread}");
    let read = ctl_typing(&t, &["verify", path, "--passphrase"], &[PASSPHRASE]);
    assert!(read.status.success(), "{}", text(&read.stderr));
    let read = text(&read.stdout);
    assert!(
        read.contains(": OK") && !read.contains("checksum only"),
        "{read}"
    );
    let wrong = ctl_typing(&t, &["verify", path, "--passphrase"], &["not it"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        text(&wrong.stdout).contains("the passphrase is wrong"),
        "{}",
        text(&wrong.stdout)
    );

    let listed = ctl_typing(&t, &["ls", path, "docs", "--passphrase"], &[PASSPHRASE]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        text(&listed.stdout).contains("docs/a.txt"),
        "{}",
        text(&listed.stdout)
    );
    let keyless = t.ctl(&["ls", path]);
    assert_eq!(keyless.code(), 1);
    assert!(
        keyless.stderr().contains("--passphrase"),
        "{}",
        keyless.stderr()
    );

    let refused = t.work().join("refused");
    let out = ctl_typing(
        &t,
        &[
            "restore",
            path,
            "--to",
            refused.to_str().unwrap(),
            "--passphrase",
        ],
        &["not it"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the passphrase is wrong"),
        "{}",
        text(&out.stderr)
    );
    assert!(is_empty_or_absent(&refused));
    let target = t.work().join("restored");
    let out = ctl_typing(
        &t,
        &[
            "restore",
            path,
            "--to",
            target.to_str().unwrap(),
            "--passphrase",
        ],
        &[PASSPHRASE],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(snapshot(&target.join("tree")), snapshot(&src));

    // Kept nowhere: not in the home (schedules, logs, manifests), not in the client log.
    let kept = files_containing(&t.home(), PASSPHRASE.as_bytes());
    assert!(kept.is_empty(), "the passphrase is in {kept:?}");
}

#[test]
fn a_passphrase_is_typed_twice_at_a_terminal_and_never_kept_in_a_schedule() {
    let t = TestHome::new();
    source(&t, "tree", 1000);
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    let mistyped = ctl_typing(
        &t,
        &["run", "--sources", "tree", "--passphrase"],
        &[PASSPHRASE, "correct horse battery stapel"],
    );
    assert_eq!(mistyped.status.code(), Some(2));
    assert!(text(&mistyped.stderr).contains("the passphrases do not match"));
    let empty = ctl_typing(&t, &["run", "--sources", "tree", "--passphrase"], &[""]);
    assert_eq!(empty.status.code(), Some(2));
    assert!(text(&empty.stderr).contains("the passphrase is empty"));
    // Not from a pipe: a script or a schedule has nobody to type it.
    let piped = t.ctl(&["run", "--sources", "tree", "--passphrase"]);
    assert_eq!(piped.code(), 2);
    assert!(
        piped.stderr().contains("typed at a terminal"),
        "{}",
        piped.stderr()
    );
    assert!(is_empty_or_absent(&backups));

    let src = t.work().join("tree");
    t.ctl(&["create", &format!("{};03:00;nightly", src.display())])
        .ok();
    let stored = t.ctl(&["run", "--name", "nightly", "--passphrase"]);
    assert_eq!(stored.code(), 2);
    assert!(stored.stderr().contains("never encrypts to a passphrase"));
    let both = t.ctl(&[
        "run",
        "--sources",
        "tree",
        "--passphrase",
        "--encrypt-to",
        "age1x",
    ]);
    assert_eq!(both.code(), 2, "{}", both.stderr());
    assert!(is_empty_or_absent(&backups));

    // The daemon holds the same rules for a client that skips backupctl's.
    let mut client = Client::connect(&t.socket()).unwrap();
    let tree = src.display().to_string();
    let cases = [
        (
            serde_json::json!({"cmd": "create", "name": "n", "sources": [tree], "daily": "03:00", "passphrase": PASSPHRASE}),
            "passphrase",
        ),
        (
            serde_json::json!({"cmd": "run", "schedule": "nightly", "passphrase": PASSPHRASE}),
            "never encrypts to a passphrase",
        ),
        (
            serde_json::json!({"cmd": "run", "sources": [tree], "passphrase": PASSPHRASE, "encrypt_to": ["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"]}),
            "not both",
        ),
        (
            serde_json::json!({"cmd": "run", "sources": [tree], "passphrase": ""}),
            "the passphrase is empty",
        ),
        (
            serde_json::json!({"cmd": "verify", "all": true, "passphrase": PASSPHRASE, "identity": "/k.txt"}),
            "not both",
        ),
    ];
    for (request, said) in cases {
        let answer = client.request(&request.to_string());
        assert_eq!(answer["ok"], false, "{request} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(said), "{request} → {message}");
        assert!(!message.contains(PASSPHRASE), "{message}");
    }
    assert!(is_empty_or_absent(&backups));
    let kept = files_containing(&t.home(), PASSPHRASE.as_bytes());
    assert!(kept.is_empty(), "the passphrase is in {kept:?}");
}

#[test]
fn the_age_cli_opens_a_passphrase_archive_typed_at_its_terminal() {
    if !age_cli() {
        return;
    }
    let t = TestHome::new();
    let src = source(&t, "tree", 100_000);
    let _daemon = t.start_daemon();
    let archive = run_with_passphrase(&t, "tree");

    // age reads a passphrase only from its controlling terminal: give it ours.
    let plain = t.work().join("plain.tar.gz");
    let mut age = Command::new("setsid");
    age.args(["--ctty", "--wait", "age", "-d", "-o"])
        .arg(&plain)
        .arg(&archive);
    let out = Terminal::open().run(&mut age, &[PASSPHRASE]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let into = t.work().join("by-age");
    std::fs::create_dir(&into).unwrap();
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(&plain)
        .arg("-C")
        .arg(&into)
        .status()
        .unwrap();
    assert!(untar.success());
    assert_eq!(snapshot(&into.join("tree")), snapshot(&src));
}

/// A copy of `archive` and its manifest under the stamp `days` days ago, as an older run of
/// the same name would have left them.
fn older_copy(archive: &Path, days: i64) -> PathBuf {
    let name = archive.file_name().unwrap().to_str().unwrap();
    let (stem, ext) = name.split_once(".tar").unwrap();
    let (backup, _) = stem.rsplit_once('_').unwrap();
    let (backup, _) = backup.rsplit_once('_').unwrap();
    let at = chrono::Local::now().naive_local() - chrono::TimeDelta::days(days);
    let stamp = at.format("%Y%m%d_%H%M%S");
    let copy = archive.with_file_name(format!("{backup}_{stamp}.tar{ext}"));
    std::fs::copy(archive, &copy).unwrap();
    std::fs::copy(manifest_of(archive), manifest_of(&copy)).unwrap();
    copy
}

#[test]
fn encrypted_archives_rotate_and_verify_after_writing_without_a_key() {
    let t = TestHome::new();
    source(&t, "tree", 100_000);
    let (_, public) = keygen(&t, "key.txt");
    let _daemon = t.start_daemon();
    let first = backup(&t, &["--sources", "tree", "--encrypt-to", &public]);
    let kept = older_copy(&first, 30);
    let expired = older_copy(&first, 31);

    let args = [
        "--sources",
        "tree",
        "--encrypt-to",
        &public,
        "--verify-after",
        "--retention-days",
        "7",
        "--min-keep",
        "2",
    ];
    let newest = backup(&t, &args);
    assert!(newest.to_str().unwrap().ends_with(".tar.gz.age"));
    // Rotation treats .age archives as archives of their name: of those the run found, the
    // newest two stay (its own is never a candidate), the one past 7 days goes.
    assert!(first.exists() && kept.exists() && newest.exists());
    assert!(
        !expired.exists() && !manifest_of(&expired).exists(),
        "{}",
        t.log()
    );
    let log = t.log();
    let expired_name = expired.file_name().unwrap().to_str().unwrap();
    assert!(
        log.contains(&format!("Deleting old backup: {expired_name}")),
        "{log}"
    );
    // --verify-after has no key: it checks the checksum and says the content was not read.
    let newest_name = newest.file_name().unwrap().to_str().unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("Verify OK (checksum only") && l.contains(newest_name)),
        "{log}"
    );
}
