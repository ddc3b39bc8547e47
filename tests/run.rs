//! `backupctl run`: archives that GNU tar reads back exactly, manifests that match
//! `sha256sum`, the original backup script's log lines and summary, partial failure, dry run, `.env` defaults,
//! events, and crash safety.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Client, TestHome, log_messages, run_json, sha256sum, snapshot};
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// A tree with the cases the archive must keep.
fn make_tree(root: &Path) {
    common::base_tree(root);
    let file = |p: &str, content: &[u8]| std::fs::write(root.join(p), content).unwrap();
    file("old.txt", b"old\n");
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(root.join("old.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::os::unix::fs::symlink("docs/readme.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("outside")).unwrap();
    std::fs::hard_link(root.join("docs/readme.txt"), root.join("hard")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(root.join("pipe"))
        .status()
        .unwrap();
    assert!(fifo.success());
}

fn round_trip(compression: &str, tar_flags: &[&str]) {
    let t = TestHome::new();
    let source = t.work().join("tree");
    make_tree(&source);
    let _daemon = t.start_daemon();
    let (code, answer) = run_json(&t, &["--sources", "tree", "--compression", compression]);
    assert_eq!(code, 0, "{answer}");
    let report = &answer["data"]["sources"][0];
    let archive = PathBuf::from(report["archive"].as_str().unwrap());
    assert!(archive.starts_with(t.home().join("backups")));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(report["manifest"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(manifest["checksum_sha256"], sha256sum(&archive));
    assert_eq!(
        manifest["size_bytes"],
        std::fs::metadata(&archive).unwrap().len()
    );
    assert_eq!(manifest["compression"], compression);
    assert_eq!(
        manifest["warnings"],
        serde_json::json!([]),
        "the FIFO is stored, as GNU tar does"
    );

    let out = t.work().join("extracted");
    std::fs::create_dir(&out).unwrap();
    let status = Command::new("tar")
        .args(tar_flags)
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "GNU tar reads the archive");
    let top: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        top,
        ["tree"],
        "everything sits under the source folder's name"
    );
    assert_eq!(snapshot(&out.join("tree")), snapshot(&source));
    let extracted = out.join("tree");
    assert_eq!(
        std::fs::metadata(extracted.join("hard")).unwrap().ino(),
        std::fs::metadata(extracted.join("docs/readme.txt"))
            .unwrap()
            .ino(),
        "the hard link is restored as a hard link"
    );
}

#[test]
fn gzip_archives_round_trip_through_gnu_tar() {
    round_trip("gzip", &["-xzf"]);
}

#[test]
fn zstd_archives_round_trip_through_gnu_tar() {
    round_trip("zstd", &["--zstd", "-xf"]);
}

#[test]
fn uncompressed_archives_round_trip_through_gnu_tar() {
    round_trip("none", &["-xf"]);
}

#[test]
fn a_run_writes_the_manifest_and_logs_the_backup_script_lines() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("projects")).unwrap();
    std::fs::write(t.work().join("projects/a.txt"), b"some text\n").unwrap();
    let _daemon = t.start_daemon();
    let out = t.ctl(&["run", "--sources", "projects", "--level", "9"]);
    let stdout = out.ok();
    let backups = t.home().join("backups");
    let mut names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    let stem = names[0].strip_suffix(".json").unwrap();
    assert_eq!(names[1], format!("{stem}.tar.gz"));
    let timestamp = stem.strip_prefix("projects_").unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(timestamp, "%Y%m%d_%H%M%S").is_ok(),
        "{stem}"
    );
    let archive = backups.join(&names[1]);
    for file in [&archive, &backups.join(&names[0])] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is private", file.display());
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backups.join(&names[0])).unwrap()).unwrap();
    for field in [
        "backup_file",
        "source",
        "created",
        "size_bytes",
        "size_human",
        "checksum_sha256",
        "name",
        "compression",
        "level",
        "files",
        "dirs",
        "symlinks",
        "bytes_in",
        "duration_ms",
        "warnings",
        "backupd_version",
        "format_version",
    ] {
        assert!(
            manifest.get(field).is_some(),
            "manifest has {field}: {manifest}"
        );
    }
    assert_eq!(manifest["backup_file"], archive.display().to_string());
    assert_eq!(
        manifest["source"],
        t.work().join("projects").display().to_string()
    );
    assert_eq!(manifest["created"], timestamp);
    assert_eq!(manifest["level"], 9);
    assert_eq!(manifest["files"], 1);
    assert_eq!(manifest["bytes_in"], 10);
    let checksum = sha256sum(&archive);
    assert_eq!(manifest["checksum_sha256"], checksum);

    let size_human = manifest["size_human"].as_str().unwrap();
    assert!(
        stdout.contains(&format!("Backup created {}", archive.display())),
        "{stdout}"
    );
    assert!(stdout.ends_with(&format!(
        "=== Backup Summary ===\nTotal sources: 1\nSuccessful: 1\nFailed: 0\nOld backups deleted: 0\nTotal backup size: {size_human}\n"
    )), "{stdout}");
    let log = log_messages(&t.log());
    let source = t.work().join("projects").display().to_string();
    // The per-source lines name their job (the first of this daemon); the summary is as the
    // original backup script writes it.
    let expected = [
        "Starting backup process".to_owned(),
        "Configuration loaded successfully".to_owned(),
        format!("[projects #1] Compressing {source}"),
        format!("[projects #1] Backup created {}", archive.display()),
        format!("[projects #1] Archive size: {size_human}"),
        format!("[projects #1] Checksum: {checksum}"),
        format!("[projects #1] Manifest created: {stem}.json"),
        format!("[projects #1] Backup done for {source} in backups/{stem}.tar.gz"),
        "=== Backup Summary ===".to_owned(),
        "Total sources: 1".to_owned(),
        "Successful: 1".to_owned(),
        "Failed: 0".to_owned(),
        "Old backups deleted: 0".to_owned(),
        format!("Total backup size: {size_human}"),
    ];
    let start = (log.iter())
        .position(|l| l == "Starting backup process")
        .unwrap();
    assert_eq!(log[start..], expected);
}

#[test]
fn one_missing_source_among_three_fails_alone() {
    let t = TestHome::new();
    for dir in ["a", "b"] {
        std::fs::create_dir(t.work().join(dir)).unwrap();
        std::fs::write(t.work().join(dir).join("f"), dir).unwrap();
    }
    let _daemon = t.start_daemon();
    let out = t.ctl(&["run", "--sources", "a", "missing", "b"]);
    assert_eq!(out.code(), 1);
    assert_eq!(out.stderr(), "Error: 1 of 3 sources failed\n");
    let stdout = out.stdout();
    let missing = t.work().join("missing").display().to_string();
    assert!(
        stdout.contains(&format!("Backup source does not exist: {missing}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("Total sources: 3\nSuccessful: 2\nFailed: 1\nOld backups deleted: 0\n"),
        "{stdout}"
    );
    let archives: Vec<String> = std::fs::read_dir(t.home().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tar.gz"))
        .collect();
    assert_eq!(archives.len(), 2, "{archives:?}");
    assert!(
        log_messages(&t.log())
            .iter()
            .any(|l| l.starts_with("Error: [missing #")
                && l.contains("] Backup failed for ")
                && l.contains(&missing))
    );

    let (code, answer) = run_json(&t, &["--sources", "a", "missing"]);
    assert_eq!(code, 1);
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["error"]["code"], "backup_failed");
    assert_eq!(answer["data"]["failed"], 1);
    assert_eq!(answer["data"]["successful"], 1);
    // Only the source that wrote its archive names files: the other's were never written.
    let sources = answer["data"]["sources"].as_array().unwrap();
    let (written, failed) = (&sources[0], &sources[1]);
    let archive = written["archive"].as_str().unwrap();
    assert!(Path::new(archive).is_file(), "{archive}");
    assert!(Path::new(written["manifest"].as_str().unwrap()).is_file());
    assert_eq!(failed["ok"], false);
    assert!(failed.get("archive").is_none(), "{failed}");
    assert!(failed.get("manifest").is_none(), "{failed}");
    let (_, dry) = run_json(&t, &["--sources", "missing", "--dry-run"]);
    assert!(dry["data"]["sources"][0].get("archive").is_none(), "{dry}");
}

fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = snapshot(dir).into_keys().collect();
    all.sort();
    all
}

#[test]
fn a_dry_run_writes_nothing_and_names_what_it_would_create() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    std::fs::write(t.work().join("src/f"), b"x").unwrap();
    let _daemon = t.start_daemon();
    let before = listing(&t.home().join("backups"));
    let out = t.ctl(&["run", "--sources", "src", "--dry-run"]);
    let stdout = out.ok();
    assert_eq!(listing(&t.home().join("backups")), before);
    assert!(before.is_empty());
    let all: Vec<&str> = stdout.lines().collect();
    // The original backup script's header: what the run resolved to, defaults filled in.
    assert_eq!(
        all[..4],
        [
            "[DRY-RUN MODE] No files will be created or deleted".to_owned(),
            format!(
                "Backup sources: [PosixPath('{}')]",
                t.work().join("src").display()
            ),
            format!("Destination: {}", t.home().join("backups").display()),
            "Retention: 7 days".to_owned(),
        ]
    );
    let lines = &all[3..];
    assert_eq!(
        lines[1],
        format!(
            "[DRY-RUN] Would compress {}",
            t.work().join("src").display()
        )
    );
    let prefix = format!(
        "[DRY-RUN] Would create: {}/src_",
        t.home().join("backups").display()
    );
    assert!(
        lines[2].starts_with(&prefix) && lines[2].ends_with(".tar.gz"),
        "{}",
        lines[2]
    );
    assert!(lines[3].starts_with("[DRY-RUN] Would create manifest: src_"));
    assert_eq!(
        lines[4..],
        [
            "=== [DRY-RUN] Backup Summary ===",
            "Total sources: 1",
            "Would create: 1 backups",
            "Would delete: 0 old backups"
        ]
    );
    // A destination that does not exist yet is not created by a dry run.
    let elsewhere = t.work().join("new/dest");
    let stdout = t
        .ctl(&[
            "run",
            "--sources",
            "src",
            "--dry-run",
            "--destination",
            elsewhere.to_str().unwrap(),
            "--retention-days",
            "30",
        ])
        .ok();
    assert!(!t.work().join("new").exists());
    let header = [
        format!("Destination: {}", elsewhere.display()),
        "Retention: 30 days".to_owned(),
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[2..4], header, "{stdout}");
    // The daemon's log says it too, as the original's did.
    let log = common::log_messages(&t.log());
    assert!(header.iter().all(|line| log.contains(line)), "{log:?}");
}

#[test]
fn an_unwritable_destination_fails_the_whole_run_before_anything_is_written() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    std::fs::write(t.work().join("blocker"), b"a file, not a folder").unwrap();
    let _daemon = t.start_daemon();
    let destination = t.work().join("blocker/backups");
    let out = t.ctl(&[
        "run",
        "--sources",
        "src",
        "--destination",
        destination.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr().starts_with(&format!(
            "Error: Backup destination not writable: {}",
            destination.display()
        )),
        "{}",
        out.stderr()
    );
    assert!(
        !log_messages(&t.log())
            .iter()
            .any(|l| l.contains("Compressing"))
    );
}

#[test]
fn sources_and_destination_come_from_dotenv_and_flags_override_them() {
    let t = TestHome::new();
    for dir in ["one", "two"] {
        std::fs::create_dir(t.work().join(dir)).unwrap();
    }
    let _daemon = t.start_daemon();
    let missing = t.ctl(&["run"]);
    assert_eq!(missing.code(), 2);
    assert_eq!(
        missing.stderr(),
        "Error: Missing required environment variables: BACKUP_SOURCES\n"
    );

    std::fs::write(
        t.work().join(".env"),
        "# the original backup script's settings\nBACKUP_SOURCES=one,two\nBACKUP_DESTINATION=out\nRETENTION_DAYS=7\n",
    )
    .unwrap();
    t.ctl(&["run"]).ok();
    let archives = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .filter(|n| n.ends_with(".tar.gz"))
                    .map(|n| n.split('_').next().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    assert_eq!(archives(&t.work().join("out")), ["one", "two"]);

    let flag_dest = t.work().join("flagged");
    t.ctl(&[
        "run",
        "--sources",
        "two",
        "--destination",
        flag_dest.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(archives(&flag_dest), ["two"]);

    // The environment wins over .env.
    let env_dest = t.work().join("from_env");
    let out = t
        .ctl_command(&["run"])
        .env("BACKUP_SOURCES", "one")
        .env("BACKUP_DESTINATION", &env_dest)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(archives(&env_dest), ["one"]);
}

#[test]
fn excludes_leave_matching_entries_out() {
    let t = TestHome::new();
    let src = t.work().join("src");
    for dir in ["node_modules/pkg", "keep", ".cache"] {
        std::fs::create_dir_all(src.join(dir)).unwrap();
    }
    for file in [
        "keep/a.txt",
        "keep/b.tmp",
        "node_modules/pkg/index.js",
        ".cache/x",
        "top.tmp",
    ] {
        std::fs::write(src.join(file), b"x").unwrap();
    }
    let _daemon = t.start_daemon();
    let (code, answer) = run_json(
        &t,
        &[
            "--sources",
            "src",
            "--exclude",
            "*.tmp",
            "--exclude",
            "node_modules/",
            "--exclude",
            ".cache/",
        ],
    );
    assert_eq!(code, 0, "{answer}");
    let archive = answer["data"]["sources"][0]["archive"].as_str().unwrap();
    let out = Command::new("tar")
        .args(["-tzf", archive])
        .output()
        .unwrap();
    let mut entries: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    entries.sort();
    assert_eq!(entries, ["src/", "src/keep/", "src/keep/a.txt"]);

    let bad = t.ctl(&["run", "--sources", "src", "--exclude", "[oops"]);
    assert_eq!(bad.code(), 1);
    assert!(bad.stderr().contains("[oops"), "{}", bad.stderr());
}

#[test]
fn bad_options_are_refused_before_anything_is_written() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("a")).unwrap();
    std::fs::create_dir_all(t.work().join("x/a")).unwrap();
    let _daemon = t.start_daemon();
    for (args, needle) in [
        (vec!["--sources", "a", "--level", "12"], "level"),
        (
            vec!["--sources", "a", "--compression", "zstd", "--level", "0"],
            "level",
        ),
        (vec!["--sources", "a", "x/a"], "--name"),
        (vec!["--sources", "a", "x", "--name", "same"], "one source"),
        (
            vec!["--sources", "a", "--name", "../up"],
            "invalid backup name",
        ),
    ] {
        let mut full = vec!["run"];
        full.extend(args.iter().copied());
        let out = t.ctl(&full);
        assert_eq!(out.code(), 1, "{args:?}: {}", out.stderr());
        assert!(out.stderr().contains(needle), "{args:?}: {}", out.stderr());
    }
    assert!(listing(&t.home().join("backups")).is_empty());
}

#[test]
fn events_stream_before_the_response_with_the_request_id() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    std::fs::write(t.work().join("src/f"), vec![7u8; 100_000]).unwrap();
    let _daemon = t.start_daemon();
    let mut client = Client::connect(&t.socket()).unwrap();
    let request = serde_json::json!({
        "id": "ev", "cmd": "run", "sources": [t.work().join("src")], "events": true
    });
    client.send_bytes(format!("{request}\n").as_bytes());
    let mut kinds = Vec::new();
    let response = loop {
        let line = client.read_response();
        assert_eq!(line["id"], "ev");
        match line.get("event") {
            Some(kind) => kinds.push((kind.as_str().unwrap().to_owned(), line)),
            None => break line,
        }
    };
    assert_eq!(response["ok"], true);
    // First the run's jobs, named before any of them waits for a slot.
    assert_eq!(kinds[0].0, "run_started");
    let jobs = kinds[0].1["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0]["source"],
        t.work().join("src").display().to_string()
    );
    assert!(jobs[0]["job"].as_u64().is_some());
    assert_eq!(kinds[1].0, "source_started");
    assert_eq!(kinds.last().unwrap().0, "source_finished");
    assert_eq!(kinds.last().unwrap().1["ok"], true);
    let last_progress = kinds.iter().rev().find(|(k, _)| k == "progress").unwrap();
    assert_eq!(last_progress.1["bytes_in"], 100_000);
    assert_eq!(last_progress.1["files"], 1);

    // Without "events" there is exactly one line.
    let plain = serde_json::json!({"cmd": "run", "sources": [t.work().join("src")]});
    let answer = client.request(&plain.to_string());
    assert_eq!(answer["ok"], true);
    assert!(answer.get("event").is_none());
}

fn wait_for_partial(dir: &Path) -> PathBuf {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        if let Some(partial) = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "partial"))
        {
            return partial;
        }
        assert!(Instant::now() < deadline, "no partial archive appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn final_named_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|e| e != "partial"))
        .collect()
}

#[test]
fn kill_9_mid_backup_leaves_no_final_archive_and_the_next_start_removes_the_partial() {
    let t = TestHome::new();
    let src = common::sparse_source(&t, "big", common::ENDLESS);
    let mut daemon = t.start_daemon();
    let mut client = Client::connect(&t.socket()).unwrap();
    let request = serde_json::json!({"cmd": "run", "sources": [src]});
    client.send_bytes(format!("{request}\n").as_bytes());
    let backups = t.home().join("backups");
    let partial = wait_for_partial(&backups);
    daemon.signal("KILL");
    assert!(!daemon.wait().success());
    assert!(partial.exists());
    assert_eq!(final_named_files(&backups), Vec::<PathBuf>::new());

    let _restarted = t.start_daemon();
    assert!(!partial.exists(), "the stale partial is removed at start");
    assert!(log_messages(&t.log()).contains(&format!(
        "Removed stale partial archive {}",
        partial.display()
    )));
    assert_eq!(t.ctl(&["backups"]).ok(), "");
}

#[test]
fn stop_during_a_backup_cancels_it_cleanly() {
    let t = TestHome::new();
    let src = common::sparse_source(&t, "big", common::ENDLESS);
    let mut daemon = t.start_daemon();
    let mut client = Client::connect(&t.socket()).unwrap();
    let request = serde_json::json!({"id": 1, "cmd": "run", "sources": [src]});
    client.send_bytes(format!("{request}\n").as_bytes());
    let backups = t.home().join("backups");
    wait_for_partial(&backups);
    t.ctl(&["stop"]).ok();
    assert!(daemon.wait().success());
    let answer = client.read_response();
    assert_eq!(answer["error"]["code"], "backup_failed");
    let error = answer["data"]["sources"][0]["error"].as_str().unwrap();
    assert!(error.contains("cancelled"), "{error}");
    assert!(
        std::fs::read_dir(&backups).unwrap().next().is_none(),
        "nothing left behind"
    );
    assert_eq!(log_messages(&t.log()).last().unwrap(), "backupd stopped");
}

#[test]
fn progress_is_drawn_when_stdout_is_a_terminal() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    std::fs::write(t.work().join("src/f"), vec![1u8; 50_000]).unwrap();
    let _daemon = t.start_daemon();
    let ctl = common::backupctl_bin();
    // `script` gives backupctl a pseudo-terminal as stdout.
    let command = format!("{} run --sources src", ctl.display());
    let in_terminal = || {
        let out = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .current_dir(t.work())
            .env("BACKUPD_HOME", t.home())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = in_terminal();
    let source = t.work().join("src").display().to_string();
    assert!(
        text.contains(&format!("{source}: 1 file, 48.83 KB read")),
        "{text:?}"
    );
    assert!(
        text.contains("\r\x1b[2K"),
        "the line is redrawn in place: {text:?}"
    );
    assert!(text.contains("=== Backup Summary ==="), "{text:?}");
    assert!(
        !text.contains("%)"),
        "a first backup has nothing to compare with"
    );

    // The second backup of a name knows from the first how much there is to read.
    let text = in_terminal();
    assert!(
        text.contains(&format!("{source}: 1 file, 48.83 KB read (")) && text.contains("%)"),
        "{text:?}"
    );

    // Piped, there is no progress at all.
    let piped = t.ctl(&["run", "--sources", "src"]).ok();
    assert!(!piped.contains("KB read"), "{piped:?}");
}

#[test]
fn unreadable_entries_become_warnings_and_the_run_completes_with_warnings() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir_all(src.join("locked_dir")).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    std::fs::write(src.join("locked.txt"), b"secret").unwrap();
    std::fs::write(src.join("locked_dir/inner.txt"), b"secret").unwrap();
    for locked in ["locked.txt", "locked_dir"] {
        std::fs::set_permissions(src.join(locked), PermissionsExt::from_mode(0o000)).unwrap();
    }
    // Root reads everything, so as root the daemon runs as `nobody`, for whom the locked
    // entries are unreadable like for any user.
    let is_root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let _daemon = if is_root {
        let nobody = 65534;
        std::fs::set_permissions(t.work(), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(t.home()).unwrap();
        std::os::unix::fs::chown(t.home(), Some(nobody), Some(nobody)).unwrap();
        let daemon = t.spawn_daemon_via(
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ],
            &[],
        );
        common::wait_until_answering(&t.socket());
        daemon
    } else {
        t.start_daemon()
    };
    let (code, answer) = run_json(&t, &["--sources", "src"]);
    // Entries were left out: the run says so with its own exit code.
    assert_eq!(code, 4, "{answer}");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["data"]["with_warnings"], 1, "{answer}");
    let report = &answer["data"]["sources"][0];
    assert_eq!(report["skipped"], 2, "{answer}");
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("locked.txt")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("locked_dir")),
        "{warnings:?}"
    );
    let out = Command::new("tar")
        .args(["-tzf", report["archive"].as_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains("src/ok.txt"), "{listing}");
    assert!(!listing.contains("locked.txt"), "{listing}");
    let log = log_messages(&t.log());
    assert!(
        log.iter()
            .any(|l| l.starts_with("Warning: ") && l.contains("locked.txt")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l == "Completed with warnings: 2 entries skipped"),
        "{log:#?}"
    );

    // As text: the original backup script's summary, then the warnings line, exit 4.
    let out = t.ctl(&["run", "--sources", "src"]);
    assert_eq!(out.code(), 4, "{}", out.stderr());
    let text = out.stdout();
    assert!(text.contains("Failed: 0\n"), "{text}");
    assert!(
        text.ends_with("Completed with warnings: 2 entries skipped\n"),
        "{text}"
    );
    assert!(
        out.stderr()
            .contains("Warning: Completed with warnings: 2 entries skipped"),
        "{}",
        out.stderr()
    );

    // A schedule's run records the warnings in its history and status.
    let src_abs = src.to_str().unwrap();
    t.ctl(&[
        "create", "--name", "warned", "--source", src_abs, "--daily", "03:00",
    ])
    .ok();
    assert_eq!(t.ctl(&["run", "--name", "warned"]).code(), 4);
    let list = t.ctl(&["--json", "list"]).ok();
    let list: Value = serde_json::from_str(list.trim()).unwrap();
    let last_run = &list["data"]["schedules"][0]["last_run"];
    assert_eq!(last_run["ok"], true, "{list}");
    assert_eq!(last_run["skipped"], 2, "{list}");
    let long = t.ctl(&["list", "--long"]).ok();
    assert!(long.contains("  ok with warnings "), "{long}");
    assert!(long.contains(", 2 entries skipped"), "{long}");
    let status = t.ctl(&["status"]).ok();
    assert!(status.contains("ok with warnings "), "{status}");
    // Let the temporary directory be removed.
    std::fs::set_permissions(src.join("locked_dir"), PermissionsExt::from_mode(0o755)).unwrap();
}

fn partials(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "partial")
        })
        .count()
}

/// Two slow sources in one run: with `--max-jobs 2` both are written at once; with
/// `--max-jobs 1` the second waits for the first.
fn sources_at_once(max_jobs: &str) -> usize {
    let t = TestHome::new();
    for dir in ["one", "two"] {
        common::sparse_source(&t, dir, common::ENDLESS);
    }
    let mut daemon = t.spawn_daemon(&["--max-jobs", max_jobs]);
    common::wait_until_answering(&t.socket());
    let mut client = Client::connect(&t.socket()).unwrap();
    let request = serde_json::json!({
        "cmd": "run", "sources": [t.work().join("one"), t.work().join("two")]
    });
    client.send_bytes(format!("{request}\n").as_bytes());
    let backups = t.home().join("backups");
    wait_for_partial(&backups);
    // Watch for a while: the most archives ever being written at the same time.
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until && most < 2 {
        most = most.max(partials(&backups));
        std::thread::sleep(Duration::from_millis(10));
    }
    t.ctl(&["stop"]).ok();
    assert!(daemon.wait().success());
    most
}

#[test]
fn sources_are_written_concurrently_up_to_the_job_limit() {
    assert_eq!(sources_at_once("2"), 2);
    assert_eq!(sources_at_once("1"), 1);
}

#[test]
fn backups_lists_another_destination_too() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    std::fs::write(t.work().join("src/f"), b"x").unwrap();
    let _daemon = t.start_daemon();
    t.ctl(&["run", "--sources", "src", "--destination", "out"])
        .ok();
    let listed = t.ctl(&["backups", "--destination", "out"]).ok();
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.starts_with("src_") && listed.trim_end().ends_with(".tar.gz"));
    let long = t.ctl(&["backups", "--long", "--destination", "out"]).ok();
    assert!(long.starts_with("src:\n"), "{long}");
    assert!(
        t.ctl(&["backups"]).ok().is_empty(),
        "the home's folder is empty"
    );
    let missing = t.ctl(&["backups", "--destination", "nowhere"]);
    assert_eq!(missing.code(), 1);
    assert!(
        missing
            .stderr()
            .starts_with("Error: can't find backups directory: /"),
        "{}",
        missing.stderr()
    );
}

/// Builds `depth` nested folders of 20-byte names under `top` through directory handles (their
/// paths pass `PATH_MAX`, which path-based tools refuse), with `f.txt` in the deepest one.
/// Returns the deepest folder's path relative to `top`.
fn deep_tree(top: &Path, depth: usize) -> PathBuf {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let mut dir = rustix::fs::open(top, flags, Mode::empty()).unwrap();
    let mut rel = PathBuf::new();
    for level in 1..=depth {
        let name = format!("{level:0>20}");
        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(&dir, name.as_str(), flags, Mode::empty()).unwrap();
        rel.push(name);
    }
    let file = rustix::fs::openat(
        &dir,
        "f.txt",
        OFlags::WRONLY | OFlags::CREATE,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    std::io::Write::write_all(&mut std::fs::File::from(file), b"deepest\n").unwrap();
    rel
}

/// GNU tar's listing of an archive, sorted.
fn gnu_listing(args: &[&str]) -> Vec<String> {
    let out = Command::new("tar").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
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
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("top.txt"), b"top").unwrap();
    // 230 levels of 21 bytes: 4,830 bytes of path.
    let depth = 230;
    let deepest = deep_tree(&src, depth);
    assert!(deepest.as_os_str().len() > 4096);
    let _daemon = t.start_daemon();

    let (code, answer) = run_json(&t, &["--sources", "src"]);
    assert_eq!(code, 0, "{answer}");
    let report = &answer["data"]["sources"][0];
    assert_eq!(report["warnings"], serde_json::json!([]), "{answer}");
    assert_eq!(report["files"], 2, "{answer}");
    let archive = report["archive"].as_str().unwrap();

    // GNU tar finds in it exactly what it stores itself from the same tree.
    let ours = gnu_listing(&["-tzf", archive]);
    let gnu = t.work().join("gnu.tar");
    let work = t.work().to_str().unwrap();
    gnu_listing(&["-C", work, "-cf", gnu.to_str().unwrap(), "src"]);
    assert_eq!(ours, gnu_listing(&["-tf", gnu.to_str().unwrap()]));
    assert_eq!(ours.len(), depth + 3);
    let bottom = Path::new("src").join(&deepest).join("f.txt");
    let bottom = bottom.to_str().unwrap();
    assert_eq!(gnu_listing(&["-xzOf", archive, bottom]), ["deepest"]);
    t.ctl(&["verify", archive]).ok();

    // And it comes back whole: the restore too works beneath folder handles.
    let target = t.work().join("restored");
    t.ctl(&["restore", archive, "--to", target.to_str().unwrap()])
        .ok();
    assert_eq!(
        read_deep(&target.join("src"), &deepest.join("f.txt")),
        b"deepest\n"
    );
}

/// Reads a file whose path may be longer than `PATH_MAX`, one folder at a time.
fn read_deep(top: &Path, rel: &Path) -> Vec<u8> {
    use rustix::fs::{Mode, OFlags};
    let mut dir = rustix::fs::open(top, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let mut parts: Vec<_> = rel.components().collect();
    let file = parts.pop().unwrap();
    for part in parts {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        dir = rustix::fs::openat(&dir, part.as_os_str(), flags, Mode::empty()).unwrap();
    }
    let fd = rustix::fs::openat(&dir, file.as_os_str(), OFlags::RDONLY, Mode::empty()).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut bytes).unwrap();
    bytes
}

#[test]
fn a_destination_inside_the_source_is_left_out_and_said_once() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    let _daemon = t.start_daemon();
    let args = ["--sources", "src", "--destination", "src/backups"];
    let (code, first) = run_json(&t, &args);
    assert_eq!(code, 0, "{first}");
    let (code, second) = run_json(&t, &args);
    assert_eq!(code, 0, "{second}");

    let note = format!(
        "excluding destination {} inside source {}",
        src.join("backups").display(),
        src.display()
    );
    for answer in [&first, &second] {
        let report = &answer["data"]["sources"][0];
        assert_eq!(report["warnings"], serde_json::json!([note]), "{answer}");
        let listing = gnu_listing(&["-tzf", report["archive"].as_str().unwrap()]);
        assert_eq!(listing, ["src/", "src/a.txt"], "{answer}");
    }
    let log = log_messages(&t.log());
    let said = log.iter().filter(|l| l.contains(&note)).count();
    assert_eq!(said, 2, "once per run: {log:#?}");
}

#[test]
fn a_schedule_whose_source_is_where_its_archives_go_is_refused() {
    // Accepted before, it failed at every run.
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    let _daemon = t.start_daemon();
    let refused = t.ctl(&[
        "create",
        "--name",
        "self",
        "--source",
        "src",
        "--destination",
        "src",
        "--daily",
        "03:00",
    ]);
    assert_eq!(refused.code(), 1);
    assert!(
        refused.stderr().contains(&format!(
            "Backup source {} is where archives are written ({})",
            src.display(),
            src.display()
        )),
        "{}",
        refused.stderr()
    );
    let listed: serde_json::Value = serde_json::from_str(&t.ctl(&["--json", "list"]).ok()).unwrap();
    assert_eq!(listed["data"]["schedules"], serde_json::json!([]));
}

#[test]
fn a_source_that_is_where_archives_go_fails_and_writes_nothing() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    let backups_arg = backups.display().to_string();
    for (args, destination) in [
        (vec!["--sources", "src", "--destination", "src"], &src),
        (vec!["--sources", backups_arg.as_str()], &backups),
    ] {
        let before = listing(destination);
        let (code, answer) = run_json(&t, &args);
        assert_ne!(code, 0, "{answer}");
        let error = answer["data"]["sources"][0]["error"].as_str().unwrap();
        assert!(
            error.contains(&format!(
                "is where archives are written ({})",
                destination.display()
            )),
            "{answer}"
        );
        assert_eq!(listing(destination), before, "{answer}");
    }
}
