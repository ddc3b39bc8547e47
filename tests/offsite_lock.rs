//! S3 object lock on offsite copies, against moto (5.2.5), the one server here with object
//! lock: every uploaded object (archive and manifest; by a run's offsite step, `sync --remote`
//! and `--offsite-only`) carries the remote's retention, which awscli reads back; `prune
//! --remote` keeps locked copies and says so; a bucket without object lock fails the copy
//! (exit 5) with a clear error and keeps the local archive.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::TestHome;
use common::moto::MotoServer;
use serde_json::Value;
use std::path::Path;

fn source(t: &TestHome) {
    let src = t.work().join("tree");
    common::base_tree(&src);
    std::fs::write(src.join("data.bin"), common::incompressible(200_000, 11)).unwrap();
}

/// `backupctl --json ARGS`: exit code and answer.
fn json(t: &TestHome, args: &[&str]) -> (i32, Value) {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = t.ctl(&full);
    let answer = serde_json::from_str(out.stdout().trim())
        .unwrap_or_else(|e| panic!("bad JSON {:?} ({e}): {}", out.stdout(), out.stderr()));
    (out.code(), answer)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// The keys under `prefix/` of `bucket`, sorted (current versions: a delete marker hides one).
fn keys(moto: &MotoServer, bucket: &str, prefix: &str) -> Vec<String> {
    let out = moto
        .aws(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--prefix",
            &format!("{prefix}/"),
        ])
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut keys: Vec<String> = listed["Contents"]
        .as_array()
        .map(|objects| {
            objects
                .iter()
                .map(|o| o["Key"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

/// The lock awscli reads on `key`: mode and retain-until date.
fn lock_of(moto: &MotoServer, bucket: &str, key: &str) -> (String, DateTime<Utc>) {
    let out = moto
        .aws(&["s3api", "head-object", "--bucket", bucket, "--key", key])
        .unwrap();
    assert!(out.status.success(), "{key}: {}", text(&out.stderr));
    let head: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mode = head["ObjectLockMode"]
        .as_str()
        .unwrap_or_else(|| panic!("{key} has no lock: {head}"))
        .to_owned();
    let until = head["ObjectLockRetainUntilDate"].as_str().unwrap();
    let until = DateTime::parse_from_rfc3339(until)
        .unwrap_or_else(|e| panic!("{until}: {e}"))
        .with_timezone(&Utc);
    (mode, until)
}

/// Every object under `prefix` is locked in `mode` until `days` after a moment in `window`.
fn assert_locked(
    moto: &MotoServer,
    bucket: &str,
    prefix: &str,
    mode: &str,
    days: i64,
    window: (DateTime<Utc>, DateTime<Utc>),
) -> Vec<String> {
    let keys = keys(moto, bucket, prefix);
    assert!(!keys.is_empty(), "nothing under {prefix}/");
    let slack = TimeDelta::seconds(2);
    for key in &keys {
        let (found, until) = lock_of(moto, bucket, key);
        assert_eq!(found, mode, "{key}");
        let (earliest, latest) = (
            window.0 + TimeDelta::days(days) - slack,
            window.1 + TimeDelta::days(days) + slack,
        );
        assert!(
            earliest <= until && until <= latest,
            "{key} locked until {until}, expected {earliest} .. {latest}"
        );
    }
    keys
}

#[test]
fn uploads_in_a_locked_bucket_are_retained_and_prune_keeps_them_saying_so() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    if moto.aws(&["--version"]).is_none() {
        return;
    }
    moto.create_bucket("locked", true);
    let t = TestHome::new();
    t.append_config(&moto.remote_table("lockbox", "locked", "host", "object_lock_days = 3\n"));
    t.append_config(&moto.remote_table(
        "strict",
        "locked",
        "strict",
        "object_lock_days = 2\nobject_lock_mode = \"compliance\"\n",
    ));
    source(&t);
    let _daemon = t.start_daemon_with_env(&moto.env());
    let started = Utc::now();

    // A local archive, and an old one beside it (a copy under a 2020 name).
    let first = file_name(
        common::run_for_archive(&t, &["--sources", "tree"])
            .to_str()
            .unwrap(),
    );
    let backups = t.home().join("backups");
    let old = "tree_20200101_000000.tar.gz";
    std::fs::copy(backups.join(&first), backups.join(old)).unwrap();
    std::fs::copy(
        backups.join(first.replace(".tar.gz", ".json")),
        backups.join(old.replace(".tar.gz", ".json")),
    )
    .unwrap();

    // sync sends both; a run's offsite step sends its own archive.
    let (code, answer) = json(&t, &["sync", "--remote", "lockbox"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(
        answer["data"]["uploads"].as_array().unwrap().len(),
        2,
        "{answer}"
    );
    let (code, answer) = json(&t, &["run", "--sources", "tree", "--offsite", "lockbox"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(
        answer["data"]["sources"][0]["offsite"][0]["ok"], true,
        "{answer}"
    );
    let uploaded = assert_locked(
        &moto,
        "locked",
        "host",
        "GOVERNANCE",
        3,
        (started, Utc::now()),
    );
    assert_eq!(
        uploaded.len(),
        6,
        "three archives and their manifests: {uploaded:?}"
    );

    // A policy that would delete the 2020 copy: it is locked, so it stays, and the answer,
    // the text and the log say why.
    let policy = ["--retention-days", "7", "--min-keep", "1"];
    let mut args = vec!["prune", "--remote", "lockbox"];
    args.extend(policy);
    let (code, answer) = json(&t, &args);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["deleted"], serde_json::json!([]), "{answer}");
    let locked = answer["data"]["locked"].as_array().unwrap();
    assert_eq!(locked.len(), 1, "{answer}");
    let line = locked[0].as_str().unwrap();
    assert!(
        line.starts_with(&format!("{old}: kept (locked until 20")),
        "{line}"
    );
    assert_eq!(
        keys(&moto, "locked", "host"),
        uploaded,
        "nothing was deleted or hidden"
    );
    let out = t.ctl(&args);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        out.stdout()
            .contains(&format!("Not deleted: {old}: kept (locked until ")),
        "{}",
        out.stdout()
    );
    assert!(t.log().contains("kept (locked until "), "{}", t.log());

    // --offsite-only writes straight to the bucket, in the remote's COMPLIANCE mode.
    let before = Utc::now();
    let (code, answer) = json(
        &t,
        &[
            "run",
            "--sources",
            "tree",
            "--offsite-only",
            "--offsite",
            "strict",
        ],
    );
    assert_eq!(code, 0, "{answer}");
    let written = assert_locked(
        &moto,
        "locked",
        "strict",
        "COMPLIANCE",
        2,
        (before, Utc::now()),
    );
    assert_eq!(written.len(), 2, "{written:?}");
}

#[test]
fn a_bucket_without_object_lock_is_an_offsite_failure_and_the_archive_stays() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    if moto.aws(&["--version"]).is_none() {
        return;
    }
    moto.create_bucket("plain", false);
    let t = TestHome::new();
    t.append_config(&moto.remote_table("nolock", "plain", "host", "object_lock_days = 1\n"));
    source(&t);
    let _daemon = t.start_daemon_with_env(&moto.env());

    let (code, answer) = json(&t, &["run", "--sources", "tree", "--offsite", "nolock"]);
    assert_eq!(code, 5, "completed with offsite failure: {answer}");
    let report = &answer["data"]["sources"][0];
    let local = report["archive"].as_str().unwrap();
    assert!(Path::new(local).is_file(), "the local archive stays");
    let upload = &report["offsite"][0];
    assert_eq!(upload["ok"], false, "{upload}");
    assert_eq!(
        upload["retries"], 0,
        "another attempt would fail the same way: {upload}"
    );
    let error = upload["error"].as_str().unwrap();
    assert!(
        error.contains("remote nolock") && error.contains("bucket plain has no object lock"),
        "{error}"
    );
    // Checked before a byte went up: nothing half there.
    assert_eq!(keys(&moto, "plain", "host"), Vec::<String>::new());
}
