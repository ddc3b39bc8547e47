//! Offsite copies to S3, against a real S3 server (s3s-fs, in the test process on loopback):
//! the archive and its manifest land on the server and GNU tar reads the copy; offsite-only
//! runs keep nothing locally; a server lost mid-upload ends the run with offsite failure
//! (exit 5), leaves nothing half-visible, and the next run uploads what is missing; a wrong
//! secret is a clear error that never shows the secret; credentials files are trusted only
//! when no one else can write them; a bad `[remote.X]` table names the file and line; an
//! encrypted archive goes up as its ciphertext, which the age CLI opens.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::http_receiver::HttpReceiver;
use common::watcher::Watcher;

use common::s3::{ACCESS_KEY, S3Server, SECRET_KEY, env_for};
use common::{Client, TestHome, backupd_bin, sha256sum};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A folder `<work>/<dir>` with a small tree and one file of `size` incompressible bytes.
fn source(t: &TestHome, dir: &str, size: usize) -> PathBuf {
    let src = t.work().join(dir);
    common::base_tree(&src);
    std::fs::write(
        src.join("data.bin"),
        common::incompressible(size, size as u64),
    )
    .unwrap();
    src
}

/// `backupctl --json run ARGS`: exit code, answer, stderr.
fn run(t: &TestHome, args: &[&str]) -> (i32, Value, String) {
    let mut full = vec!["--json", "run"];
    full.extend_from_slice(args);
    let out = t.ctl(&full);
    let answer = serde_json::from_str(out.stdout().trim()).unwrap_or_else(|e| {
        panic!(
            "bad JSON {:?} ({e}); stderr {:?}",
            out.stdout(),
            out.stderr()
        )
    });
    (out.code(), answer, out.stderr())
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// The files `tar -t` lists in an archive.
fn tar_list(archive: &Path) -> String {
    let out = Command::new("tar")
        .arg("-tzf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_offsite_copy_lands_with_its_manifest_and_gnu_tar_reads_it() {
    let server = S3Server::start();
    let t = TestHome::new();
    t.append_config(&server.remote_table("off", "host1", ""));
    source(&t, "tree", 200_000);
    let _daemon = t.start_daemon_with_env(&env_for(&server, SECRET_KEY));
    let watcher = Watcher::start(&t);
    watcher.wait_until_watching(&t, "tree", "ready");

    let (code, answer, stderr) = run(&t, &["--sources", "tree", "--offsite", "off"]);
    assert_eq!(code, 0, "{answer} {stderr}");
    let report = &answer["data"]["sources"][0];
    let local = PathBuf::from(report["archive"].as_str().unwrap());
    assert!(local.is_file(), "the local archive stays");
    let upload = &report["offsite"][0];
    assert_eq!(upload["ok"], true, "{upload}");
    assert_eq!(upload["remote"], "off");
    // Watchers hear of each upload as it ends, with the run's report of it.
    let heard = watcher.next("uploaded");
    assert_eq!(heard["name"], "tree");
    assert_eq!(&heard["upload"], upload);
    let archive = file_name(report["archive"].as_str().unwrap());
    let manifest = file_name(report["manifest"].as_str().unwrap());
    assert_eq!(upload["url"], format!("s3://backups/host1/{archive}"));
    assert_eq!(upload["bytes"], std::fs::metadata(&local).unwrap().len());

    // On the server's disk: both objects, the copy byte for byte the archive.
    assert_eq!(server.objects("host1"), {
        let mut both = vec![archive.clone(), manifest.clone()];
        both.sort();
        both
    });
    let copy = server.object(&format!("host1/{archive}"));
    let remote_manifest: Value = serde_json::from_slice(
        &std::fs::read(server.object(&format!("host1/{manifest}"))).unwrap(),
    )
    .unwrap();
    assert_eq!(remote_manifest["checksum_sha256"], sha256sum(&copy));
    assert_eq!(sha256sum(&copy), sha256sum(&local));
    let listed = tar_list(&copy);
    assert!(listed.contains("data.bin"), "{listed}");
    assert!(listed.contains("docs/readme.txt"), "{listed}");

    // The log says where it went, how much and how fast.
    let log = t.log();
    assert!(
        log.contains(&format!("Uploaded s3://backups/host1/{archive} to off: ")),
        "{log}"
    );
    assert!(log.contains("Offsite uploads: 1 ok, 0 failed"), "{log}");

    // The text report says it too.
    let out = t.ctl(&["run", "--sources", "tree", "--offsite", "off"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        out.stdout()
            .contains("Uploaded to off: s3://backups/host1/"),
        "{}",
        out.stdout()
    );
}

#[test]
fn offsite_only_keeps_no_local_archive_and_a_complete_remote_pair() {
    let server = S3Server::start();
    let t = TestHome::new();
    source(&t, "tree", 50_000);
    let _daemon = t.start_daemon_with_env(&env_for(&server, SECRET_KEY));

    for (args, prefix) in [
        (
            vec![
                "--sources",
                "tree",
                "--offsite-only",
                "--offsite",
                "s3://backups/only",
            ],
            "only",
        ),
        (
            vec!["--sources", "tree", "--destination", "s3://backups/dest"],
            "dest",
        ),
    ] {
        let (code, answer, stderr) = run(&t, &args);
        assert_eq!(code, 0, "{answer} {stderr}");
        let report = &answer["data"]["sources"][0];
        let archive = report["archive"].as_str().unwrap();
        assert!(
            archive.starts_with(&format!("s3://backups/{prefix}/tree_")),
            "{archive}"
        );
        let objects = server.objects(prefix);
        assert_eq!(objects.len(), 2, "{objects:?}");
        let copy = server.object(&format!("{prefix}/{}", file_name(archive)));
        assert_eq!(
            report["checksum_sha256"].as_str().unwrap(),
            sha256sum(&copy)
        );
        assert!(tar_list(&copy).contains("data.bin"));
    }
    let local: Vec<_> = std::fs::read_dir(t.home().join("backups"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(local.is_empty(), "nothing local: {local:?}");

    // Offsite-only needs exactly one remote.
    let out = t.ctl(&[
        "run",
        "--sources",
        "tree",
        "--offsite-only",
        "--offsite",
        "s3://backups/a",
        "--offsite",
        "s3://backups/b",
    ]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr().contains("exactly one remote"),
        "{}",
        out.stderr()
    );
}

#[test]
fn a_dump_into_an_s3_destination_goes_through_a_temporary_file_and_lands_whole() {
    // Uploaded bytes cannot be rewritten, so the dump is spilled first; the object must still
    // hold it whole, with the SHA-256 the manifest records.
    let server = S3Server::start();
    let t = TestHome::new();
    source(&t, "tree", 10_000);
    let _daemon = t.start_daemon_with_env(&env_for(&server, SECRET_KEY));
    let (code, answer, stderr) = run(
        &t,
        &[
            "--sources",
            "tree",
            "--destination",
            "s3://backups/dump",
            "--source-command",
            "db.sql=sh -c 'yes row | head -c 3000000'",
        ],
    );
    assert_eq!(code, 0, "{answer} {stderr}");
    let report = &answer["data"]["sources"][0];
    let archive = report["archive"].as_str().unwrap();
    let copy = server.object(&format!("dump/{}", file_name(archive)));
    assert_eq!(
        report["checksum_sha256"].as_str().unwrap(),
        sha256sum(&copy)
    );
    let out = t.work().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&copy)
        .arg("-C")
        .arg(&out)
        .arg("db.sql")
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::metadata(out.join("db.sql")).unwrap().len(),
        3_000_000
    );
}

#[test]
fn metrics_count_an_offsite_only_schedules_archives_on_its_remote() {
    let server = S3Server::start();
    let t = TestHome::new();
    source(&t, "tree", 10_000);
    let _daemon = t.start_daemon_with_env(&env_for(&server, SECRET_KEY));
    t.ctl(&[
        "create",
        "--name",
        "far",
        "--source",
        "tree",
        "--daily",
        "03:00",
        "--destination",
        "s3://backups/far",
    ])
    .ok();
    let mut sizes = Vec::new();
    for _ in 0..2 {
        let answer = Client::connect(&t.socket())
            .unwrap()
            .request(r#"{"cmd":"run","schedule":"far"}"#);
        assert_eq!(answer["ok"], true, "{answer}");
        sizes.push(answer["data"]["sources"][0]["size_bytes"].as_u64().unwrap());
    }
    let text = std::fs::read_to_string(t.home().join("metrics/backupd.prom")).unwrap();
    let value = |family: &str| {
        let prefix = format!("{family}{{schedule=\"far\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {family} in\n{text}"))
            .to_owned()
    };
    assert_eq!(value("backupd_schedule_archives"), "2");
    assert_eq!(
        value("backupd_schedule_last_size_bytes"),
        sizes[1].to_string()
    );
    assert!(
        std::fs::read_dir(t.home().join("backups"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    );
}

#[test]
fn a_server_lost_mid_upload_ends_with_offsite_failure_and_the_next_run_uploads() {
    let mut server = S3Server::start();
    let t = TestHome::new();
    t.append_config(&server.remote_table("off", "host", "part_size = \"5MiB\"\n"));
    source(&t, "tree", 24 << 20);
    let _daemon = t.start_daemon_with_env(&env_for(&server, SECRET_KEY));
    // Lost after about one and a half parts of the archive.
    server.stop_after_receiving(8 << 20);

    let (code, answer, stderr) = run(
        &t,
        &[
            "--sources",
            "tree",
            "--compression",
            "none",
            "--offsite",
            "off",
        ],
    );
    assert_eq!(code, 5, "{answer} {stderr}");
    assert!(
        stderr.contains("Completed with offsite failure: 1 upload failed"),
        "{stderr}"
    );
    assert!(!server.is_serving(), "the server stopped mid-upload");
    let data = &answer["data"];
    assert_eq!(data["offsite_failed"], 1, "{data}");
    let report = &data["sources"][0];
    assert_eq!(report["ok"], true, "the local backup succeeded: {report}");
    let first = PathBuf::from(report["archive"].as_str().unwrap());
    assert!(first.is_file(), "the local archive stays");
    let upload = &report["offsite"][0];
    assert_eq!(upload["ok"], false);
    assert_eq!(upload["retries"], 2, "retried whole: {upload}");
    assert!(
        upload["error"].as_str().unwrap().contains("remote off"),
        "{upload}"
    );
    // Nothing half-visible: no object under the prefix, the parts only in s3s-fs's own store.
    assert_eq!(server.objects("host"), Vec::<String>::new());
    assert!(
        t.log().contains("Completed with offsite failure"),
        "{}",
        t.log()
    );

    // The next run sends its own archive and the one the remote lacks.
    server.restart();
    let (code, answer, stderr) = run(
        &t,
        &[
            "--sources",
            "tree",
            "--compression",
            "none",
            "--offsite",
            "off",
        ],
    );
    assert_eq!(code, 0, "{answer} {stderr}");
    let uploads = answer["data"]["sources"][0]["offsite"].as_array().unwrap();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert!(uploads.iter().all(|u| u["ok"] == true), "{uploads:?}");
    let objects = server.objects("host");
    assert_eq!(objects.len(), 4, "two archives, two manifests: {objects:?}");
    let first_name = first.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        sha256sum(&server.object(&format!("host/{first_name}"))),
        sha256sum(&first)
    );
}

#[test]
fn a_wrong_secret_names_the_remote_and_never_shows_a_secret() {
    let server = S3Server::start();
    let t = TestHome::new();
    t.append_config(&server.remote_table("off", "host", ""));
    source(&t, "tree", 10_000);
    let wrong = "WrongSecret-77c1d0-backupd";
    let _daemon = t.start_daemon_with_env(&env_for(&server, wrong));

    let out = t.ctl(&["run", "--sources", "tree", "--offsite", "off"]);
    assert_eq!(out.code(), 5, "{} {}", out.stdout(), out.stderr());
    let text = format!("{}{}", out.stdout(), out.stderr());
    assert!(text.contains("Offsite upload to off failed"), "{text}");
    assert!(text.contains("remote off: "), "{text}");
    for place in [text, t.log(), t.daemon_stderr()] {
        assert!(!place.contains(wrong), "{place}");
        assert!(!place.contains(SECRET_KEY), "{place}");
    }
    assert!(server.objects("host").is_empty());
}

#[test]
fn without_credentials_a_failed_upload_says_none_were_given() {
    let server = S3Server::start();
    let t = TestHome::new();
    t.append_config(&server.remote_table("off", "host", ""));
    source(&t, "tree", 10_000);
    // Not an EC2 instance: nothing answers where the instance metadata would.
    let closed = common::ports::refusing_port();
    let metadata = format!("http://127.0.0.1:{}", closed.port);
    let _daemon =
        t.start_daemon_with_env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), metadata.clone())]);

    let out = t.ctl(&["run", "--sources", "tree", "--offsite", "off"]);
    assert_eq!(out.code(), 5, "{} {}", out.stdout(), out.stderr());
    let text = format!("{}{}", out.stdout(), out.stderr());
    assert!(text.contains("Offsite upload to off failed"), "{text}");
    assert!(
        text.contains(&format!("{metadata}/latest/api/token")),
        "{text}"
    );
    assert!(
        text.contains("no credentials were given: neither AWS_ACCESS_KEY_ID"),
        "{text}"
    );
    assert!(server.objects("host").is_empty());
}

#[test]
fn a_credentials_file_with_a_profile_works_and_is_refused_when_others_may_write_or_read_it() {
    let server = S3Server::start();
    let t = TestHome::new();
    let creds = t.work().join("aws-credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n\
             [backup]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let extra = format!(
        "credentials_file = \"{}\"\nprofile = \"backup\"\n",
        creds.display()
    );
    t.append_config(&server.remote_table("off", "host", &extra));
    source(&t, "tree", 10_000);
    // No credentials in the environment: only the file gives them.
    let _daemon = t.start_daemon_with_env(&[]);

    let (code, answer, stderr) = run(&t, &["--sources", "tree", "--offsite", "off"]);
    assert_eq!(code, 0, "{answer} {stderr}");
    assert_eq!(server.objects("host").len(), 2);

    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o620)).unwrap();
    let out = t.ctl(&["run", "--sources", "tree", "--offsite", "off"]);
    assert_eq!(out.code(), 1, "refused before writing: {}", out.stdout());
    let stderr = out.stderr();
    assert!(stderr.contains("remote off"), "{stderr}");
    assert!(stderr.contains("writable by group or others"), "{stderr}");
    assert!(!stderr.contains(SECRET_KEY) && !t.log().contains(SECRET_KEY));
    assert_eq!(server.objects("host").len(), 2, "nothing more was written");

    // Secret keys others may read, even only the file's group, are refused as well.
    for mode in [0o644, 0o640] {
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = t.ctl(&["run", "--sources", "tree", "--offsite", "off"]);
        assert_eq!(out.code(), 1, "refused before writing: {}", out.stdout());
        let stderr = out.stderr();
        assert!(
            stderr.contains(&format!(
                "credentials file {}: is readable by group or others (mode {mode:o})",
                creds.display()
            )),
            "{stderr}"
        );
        assert!(stderr.contains("chmod 600 it"), "{stderr}");
        assert!(!stderr.contains(SECRET_KEY) && !t.log().contains(SECRET_KEY));
    }
    assert_eq!(server.objects("host").len(), 2, "nothing more was written");
}

#[test]
fn a_bad_remote_table_names_the_file_and_the_line() {
    let t = TestHome::new();
    t.append_config("max_jobs = 1\n\n[remote.off]\nbucket = \"backups\"\npart_size = \"1MiB\"\n");
    let out = Command::new(backupd_bin())
        .arg("--home")
        .arg(t.home())
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = t.home().join("backupd.toml");
    assert!(
        stderr.contains(&format!("config file {}, line 5: ", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("remote.off.part_size"), "{stderr}");

    // An unknown remote is refused before anything is written.
    std::fs::write(t.home().join("backupd.toml"), "").unwrap();
    source(&t, "tree", 1_000);
    let _daemon = t.start_daemon();
    let out = t.ctl(&["run", "--sources", "tree", "--offsite", "nowhere"]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr().contains("unknown remote \"nowhere\""),
        "{}",
        out.stderr()
    );
}

#[test]
fn an_encrypted_archive_is_uploaded_as_the_encrypted_file_that_age_opens() {
    let server = S3Server::start();
    let t = TestHome::new();
    t.append_config(&server.remote_table("off", "host1", ""));
    source(&t, "tree", 50_000);
    let key = t.work().join("key.txt");
    let public = t.ctl(&["keygen", "--out", key.to_str().unwrap()]).ok();
    let public = public.trim();
    let _daemon = t.start_daemon_with_env(&env_for(&server, SECRET_KEY));

    let (code, answer, stderr) = run(
        &t,
        &[
            "--sources",
            "tree",
            "--encrypt-to",
            public,
            "--offsite",
            "off",
        ],
    );
    assert_eq!(code, 0, "{answer} {stderr}");
    let report = &answer["data"]["sources"][0];
    let archive = file_name(report["archive"].as_str().unwrap());
    let manifest = file_name(report["manifest"].as_str().unwrap());
    assert!(archive.ends_with(".tar.gz.age"), "{archive}");

    // The provider holds only ciphertext: the same bytes as the local encrypted file.
    let copy = server.object(&format!("host1/{archive}"));
    let local = PathBuf::from(report["archive"].as_str().unwrap());
    assert_eq!(sha256sum(&copy), sha256sum(&local));
    let bytes = std::fs::read(&copy).unwrap();
    assert!(
        bytes.starts_with(b"age-encryption.org/v1\n"),
        "not an age file"
    );
    let remote_manifest: Value = serde_json::from_slice(
        &std::fs::read(server.object(&format!("host1/{manifest}"))).unwrap(),
    )
    .unwrap();
    assert_eq!(remote_manifest["encryption"], "age", "{remote_manifest}");
    assert_eq!(
        remote_manifest["recipients"][0], public,
        "{remote_manifest}"
    );
    assert_eq!(remote_manifest["checksum_sha256"], sha256sum(&copy));
    assert!(
        !String::from_utf8_lossy(
            &std::fs::read(server.object(&format!("host1/{manifest}"))).unwrap()
        )
        .contains("AGE-SECRET-KEY"),
        "a secret key in the uploaded manifest"
    );

    // What a new machine does with the bucket alone: age -d | tar -t.
    if Command::new("age").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "age is missing in CI: .ci/run installs it"
        );
        eprintln!("skipped the age CLI part: age is not installed");
        return;
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg("age -d -i \"$1\" \"$2\" | tar -tz")
        .arg("bash")
        .arg(&key)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("data.bin"), "{listed}");
}

#[test]
fn uploads_carry_a_sha256_the_server_checks_unless_turned_off() {
    let server = S3Server::start();
    let t = TestHome::new();
    t.append_config(&server.remote_table("sums", "with", ""));
    t.append_config(&server.remote_table("nosums", "without", "checksums = false\n"));
    source(&t, "tree", 100_000);
    let _daemon = t.start_daemon_with_env(&env_for(&server, SECRET_KEY));
    for remote in ["sums", "nosums"] {
        let (code, answer, stderr) = run(&t, &["--sources", "tree", "--offsite", remote]);
        assert_eq!(code, 0, "{answer} {stderr}");
    }
    let manifest_in = |prefix: &str| {
        let objects = server.objects(prefix);
        let manifest = objects.iter().find(|o| o.ends_with(".json")).unwrap();
        format!("{prefix}/{manifest}")
    };
    assert!(server.kept_sha256_of(&manifest_in("with")));
    assert!(!server.kept_sha256_of(&manifest_in("without")));
}

#[test]
fn an_offsite_failure_is_notified_as_such_with_the_local_archive() {
    let server = S3Server::start();
    let t = TestHome::new();
    t.append_config(&server.remote_table("off", "host1", ""));
    source(&t, "tree", 10_000);
    // A wrong secret: every upload is refused, the local archive is fine.
    let _daemon = t.start_daemon_with_env(&env_for(&server, "not-the-secret"));
    let hook = HttpReceiver::start();
    let hc = HttpReceiver::start();
    let webhook = hook.url("/hook");
    let check = format!("hc+{}", hc.url("/ping/abc"));

    let (code, answer, stderr) = run(
        &t,
        &[
            "--sources",
            "tree",
            "--offsite",
            "off",
            "--notify",
            &webhook,
            "--notify",
            &check,
        ],
    );
    assert_eq!(code, 5, "{answer} {stderr}");
    let local = answer["data"]["sources"][0]["archive"].as_str().unwrap();
    // Due under the default --notify-on failure: the copy the job was asked for is missing.
    let posts = hook.received();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let body: Value = serde_json::from_str(&posts[0].body).unwrap();
    assert_eq!(body["status"], "offsite_failure", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("offsite upload to off failed: "),
        "{error}"
    );
    assert!(!error.contains("not-the-secret"), "{error}");
    assert_eq!(
        body["archive"], local,
        "the local archive is reported: {body}"
    );
    let pings: Vec<String> = hc.received().into_iter().map(|p| p.path).collect();
    assert_eq!(pings, ["/ping/abc/start", "/ping/abc/fail"]);
}

#[test]
fn a_server_that_ignores_if_none_match_is_refused_before_anything_is_uploaded() {
    let server = S3Server::start_ignoring_if_none_match();
    let t = TestHome::new();
    t.append_config(&server.remote_table("lax", "host1", ""));
    source(&t, "tree", 10_000);
    let _daemon = t.start_daemon_with_env(&env_for(&server, SECRET_KEY));

    let (code, answer, stderr) = run(&t, &["--sources", "tree", "--offsite", "lax"]);
    assert_eq!(code, 5, "{answer} {stderr}");
    let report = &answer["data"]["sources"][0];
    assert!(Path::new(report["archive"].as_str().unwrap()).is_file());
    let error = report["offsite"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("remote lax: the server ignores If-None-Match"),
        "{error}"
    );
    // Refused at the first request that would write: no archive, no manifest, no probe left.
    assert_eq!(server.objects("host1"), Vec::<String>::new());
}

/// A server, and a daemon reaching it with `a/data` and `b/data` to back up.
fn two_folders_named_data() -> (S3Server, TestHome, common::Daemon, PathBuf, PathBuf) {
    let server = S3Server::start();
    let t = TestHome::new();
    let a = source(&t, "a/data", 1_000);
    let b = source(&t, "b/data", 1_000);
    // Their backups differ, whenever they are made.
    std::fs::write(b.join("b.txt"), "b").unwrap();
    let daemon = t.start_daemon_with_env(&env_for(&server, SECRET_KEY));
    (server, t, daemon, a, b)
}

#[test]
fn a_one_off_run_never_takes_a_remote_s_copies_of_another_folder_of_its_name_for_its_own() {
    // Schedule "data" copies a/data's backups to a remote. A one-off run of b/data into
    // another folder, copying there too, is named `data` as well: nothing in its own folder
    // refused it, and its rotation on the remote deleted the schedule's copies.
    let (server, t, _daemon, a, b) = two_folders_named_data();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let remote = "s3://backups/r";
    let schedule = ["--name", "data", "--source", a, "--daily", "03:00"];
    t.ctl(&[&["create"], &schedule[..], &["--offsite", remote]].concat())
        .ok();
    let answer = Client::connect(&t.socket())
        .unwrap()
        .request(r#"{"cmd":"run","schedule":"data"}"#);
    assert_eq!(answer["ok"], true, "{answer}");
    // Dated back to 2020, so that no run below takes its second (another backup's name there
    // is an upload failure of its own).
    for made in server.objects("r") {
        let (stem, extension) = made.split_at(made.find('.').unwrap());
        let day_back = format!("data_20200101_000000{extension}");
        assert!(stem.starts_with("data_"), "{made}");
        server.copy_object(&format!("r/{made}"), &format!("r/{day_back}"));
        std::fs::remove_file(server.object(&format!("r/{made}"))).unwrap();
    }
    let copies = server.objects("r");
    assert_eq!(copies.len(), 2, "{copies:?}");

    let elsewhere = t.work().join("elsewhere");
    let keep_nothing = ["--retention-days", "0", "--min-keep", "0"];
    let one_off = |offsite: &[&str]| {
        let to = ["--sources", b, "--destination", elsewhere.to_str().unwrap()];
        run(&t, &[&to[..], offsite, &keep_nothing[..]].concat())
    };
    let refused = |(code, answer, stderr): (i32, Value, String), owner: &str| {
        assert_eq!(code, 1, "{answer} {stderr}");
        assert_eq!(answer["error"]["code"], "name_in_use", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(owner), "{message}");
        let whose = [remote, &format!(" {a}, not {b}, ")];
        assert!(whose.iter().all(|part| message.contains(part)), "{message}");
    };
    refused(one_off(&["--offsite", remote]), "schedule \"data\" writes");
    let only = ["--offsite-only", "--offsite", remote];
    refused(
        run(&t, &[&["--sources", b][..], &only, &keep_nothing].concat()),
        "schedule",
    );
    assert_eq!(server.objects("r"), copies);

    // With the schedule gone, a copying run is not held up listing the remote (the local
    // archive must not wait for it), and the copies there still say whose they are: its
    // rotation leaves them.
    t.ctl(&["delete", "--name", "data"]).ok();
    let (code, answer, stderr) = one_off(&["--offsite", remote]);
    assert_eq!(code, 0, "{answer} {stderr}");
    let left = server.objects("r");
    assert!(copies.iter().all(|copy| left.contains(copy)), "{left:?}");
    assert_eq!(left.len(), 4, "{left:?}");
    // Its copy there is now the name's newest: an offsite-only run of its folder goes on,
    // and rotates its own copies only.
    let only = ["--offsite-only", "--offsite", remote];
    let (code, answer, stderr) = run(&t, &[&["--sources", b][..], &only, &keep_nothing].concat());
    assert_eq!(code, 0, "{answer} {stderr}");
    let left = server.objects("r");
    assert!(copies.iter().all(|copy| left.contains(copy)), "{left:?}");
    assert_eq!(left.len(), 4, "{left:?} {answer}");
}

#[test]
fn a_run_named_after_its_folder_never_rotates_another_folder_s_copy_on_a_remote() {
    // b/data took the name over with --name (a moved folder), so its runs may use it; the
    // copy a/data left there under the name is not b/data's to rotate.
    let (server, t, _daemon, a, b) = two_folders_named_data();
    let elsewhere = t.work().join("elsewhere");
    let to = [
        "--destination",
        elsewhere.to_str().unwrap(),
        "--offsite",
        "s3://backups/moved",
    ];
    let run_ok = |source: &Path, extra: &[&str]| {
        let args = [&["--sources", source.to_str().unwrap()][..], &to, extra].concat();
        let (code, answer, stderr) = run(&t, &args);
        assert_eq!(code, 0, "{answer} {stderr}");
        file_name(answer["data"]["sources"][0]["archive"].as_str().unwrap())
    };
    let a_copy = run_ok(&a, &["--name", "data"]);
    let b_first = run_ok(&b, &["--name", "data"]);
    let b_last = run_ok(&b, &["--retention-days", "0", "--min-keep", "0"]);
    let left = server.objects("moved");
    assert!(left.contains(&a_copy), "{left:?}");
    assert!(!left.contains(&b_first), "{left:?}");
    assert!(left.contains(&b_last), "{left:?}");
}

#[test]
fn a_backup_of_the_same_name_and_second_from_elsewhere_is_not_taken_for_this_one() {
    // Two daemons sharing a prefix, their schedules of one name run in the same second: the
    // second's upload found the first's manifest under its name, reported its archive
    // "already there" and never copied it.
    let server = S3Server::start();
    let t = TestHome::new();
    source(&t, "tree", 1_000);
    let _daemon = t.start_daemon_with_env(&env_for(&server, SECRET_KEY));
    // The other daemon's backups of `tree`, one for every second of the next two minutes.
    std::fs::create_dir_all(server.object("shared")).unwrap();
    let now = chrono::Local::now().naive_local();
    for second in 0..120 {
        let stamp = (now + chrono::TimeDelta::seconds(second)).format("%Y%m%d_%H%M%S");
        let theirs = serde_json::json!({
            "backup_file": format!("/elsewhere/tree_{stamp}.tar.gz"),
            "source": "/elsewhere/tree", "created": stamp.to_string(), "size_bytes": 1,
            "size_human": "1 B", "checksum_sha256": "00".repeat(32)});
        let key = format!("shared/tree_{stamp}.json");
        std::fs::write(server.object(&key), theirs.to_string()).unwrap();
    }
    let (code, answer, stderr) = run(
        &t,
        &["--sources", "tree", "--offsite", "s3://backups/shared"],
    );
    assert_eq!(code, 5, "{answer} {stderr}");
    let report = &answer["data"]["sources"][0];
    let upload = &report["offsite"][0];
    assert_eq!(upload["ok"], false, "{upload}");
    assert_ne!(upload["already_there"], true, "{upload}");
    let error = upload["error"].as_str().unwrap();
    assert!(
        error.contains("already holds another backup named tree_"),
        "{error}"
    );
    let archive = file_name(report["archive"].as_str().unwrap());
    assert!(!server.objects("shared").contains(&archive));
}
