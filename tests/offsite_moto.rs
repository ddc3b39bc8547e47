//! Offsite copies against a black-box S3 server, moto: what awscli (the standard client) sees
//! of backupd's uploads, which GNU tar then reads; and a missing bucket.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::moto::MotoServer;
use common::{TestHome, ctl_json};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn source(t: &TestHome) -> PathBuf {
    let src = t.work().join("tree");
    common::base_tree(&src);
    std::fs::write(src.join("data.bin"), common::incompressible(300_000, 7)).unwrap();
    src
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_owned()
}

#[test]
fn awscli_lists_and_downloads_what_backupd_uploaded_and_gnu_tar_reads_it() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    moto.create_bucket("backups", false);
    let t = TestHome::new();
    t.append_config(&moto.remote_table("moto", "backups", "host1", ""));
    source(&t);
    let _daemon = t.start_daemon_with_env(&moto.env());

    let (code, answer) = ctl_json(&t, &["run", "--sources", "tree", "--offsite", "moto"]);
    assert_eq!(code, 0, "{answer}");
    let archive = PathBuf::from(answer["data"]["sources"][0]["archive"].as_str().unwrap());
    let name = file_name(&archive);
    let manifest = name.replace(".tar.gz", ".json");

    let Some(listed) = moto.aws(&["s3", "ls", "s3://backups/host1/"]) else {
        return;
    };
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listed = text(&listed.stdout);
    assert!(
        listed.contains(&name) && listed.contains(&manifest),
        "{listed}"
    );

    let download = t.work().join("download");
    std::fs::create_dir(&download).unwrap();
    for object in [&name, &manifest] {
        let copied = moto
            .aws(&[
                "s3",
                "cp",
                &format!("s3://backups/host1/{object}"),
                download.join(object).to_str().unwrap(),
            ])
            .unwrap();
        assert!(copied.status.success(), "{}", text(&copied.stderr));
    }
    // The bytes are the local archive's, and the manifest vouches for them.
    assert_eq!(
        std::fs::read(download.join(&name)).unwrap(),
        std::fs::read(&archive).unwrap()
    );
    let vouched: Value =
        serde_json::from_slice(&std::fs::read(download.join(&manifest)).unwrap()).unwrap();
    assert_eq!(
        vouched["checksum_sha256"],
        common::sha256sum(&download.join(&name))
    );
    let tar = Command::new("tar")
        .arg("-tzf")
        .arg(download.join(&name))
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", text(&tar.stderr));
    assert!(text(&tar.stdout).contains("tree/data.bin"));
}

#[test]
fn a_missing_bucket_is_an_offsite_failure_that_names_the_remote_and_keeps_the_archive() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let t = TestHome::new();
    t.append_config(&moto.remote_table("gone", "no-such-bucket", "", ""));
    source(&t);
    let _daemon = t.start_daemon_with_env(&moto.env());

    let (code, answer) = ctl_json(&t, &["run", "--sources", "tree", "--offsite", "gone"]);
    assert_eq!(code, 5, "{answer}");
    let report = &answer["data"]["sources"][0];
    let local = PathBuf::from(report["archive"].as_str().unwrap());
    assert!(local.is_file(), "the local archive stays");
    let upload = &report["offsite"][0];
    assert_eq!(upload["ok"], false, "{upload}");
    let error = upload["error"].as_str().unwrap();
    assert!(error.contains("gone"), "{error}");
    assert!(
        error.contains("no-such-bucket") || error.contains("NoSuchBucket"),
        "{error}"
    );
}

#[test]
fn a_key_the_client_cannot_read_is_named_and_a_run_it_stops_ends_with_offsite_failure() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    moto.create_bucket("backups", false);
    let t = TestHome::new();
    t.append_config(&moto.remote_table("m", "backups", "host", ""));
    source(&t);
    let _daemon = t.start_daemon_with_env(&moto.env());
    let run = [
        "run",
        "--sources",
        "tree",
        "--name",
        "docs",
        "--offsite",
        "m",
    ];
    let (code, answer) = ctl_json(&t, &run);
    assert_eq!(code, 0, "{answer}");

    // Anyone who may write the bucket can add a key object_store cannot parse as a path,
    // which fails every listing of the prefix.
    let (status, body) = moto.request("PUT", "/backups/host/..");
    assert_eq!(status, 200, "{body}");
    let named = r#"remote m: the object "host/.." in bucket backups has a name"#;
    for listing in [
        &["backups", "--remote", "m"][..],
        &[
            "prune",
            "--remote",
            "m",
            "--retention-days",
            "0",
            "--min-keep",
            "0",
        ],
        &["verify", "--remote", "m", "--all"],
    ] {
        let out = t.ctl(listing);
        assert_ne!(out.code(), 0, "{listing:?}: {}", out.stdout());
        let stderr = out.stderr();
        assert!(stderr.contains(named), "{listing:?}: {stderr}");
        assert!(stderr.contains("remove or rename it"), "{stderr}");
    }

    // A run still uploads its own archive, but can neither list what the remote lacks nor
    // rotate its copies there: it says so and ends with an offsite failure.
    let status_file = t.work().join("status");
    let finally = format!(
        "sh -c 'echo \"$BACKUPD_STATUS: $BACKUPD_ERROR\" > {}'",
        status_file.display()
    );
    let rotating = [
        &run[..],
        &[
            "--offsite-keep-days",
            "0",
            "--offsite-keep-min",
            "0",
            "--finally",
            &finally,
        ],
    ]
    .concat();
    let (code, answer) = ctl_json(&t, &rotating);
    assert_eq!(code, 5, "{answer}");
    let data = &answer["data"];
    assert_eq!(data["offsite_failed"], 2, "{data}");
    let report = &data["sources"][0];
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["offsite"][0]["ok"], true,
        "its own copy went: {report}"
    );
    let failed = &report["offsite_errors"];
    assert_eq!(failed[0]["remote"], "m", "{failed}");
    assert_eq!(failed[0]["step"], "catch_up", "{failed}");
    assert_eq!(failed[1]["step"], "rotation", "{failed}");
    for step in failed.as_array().unwrap() {
        let error = step["error"].as_str().unwrap();
        assert!(error.contains(named), "{error}");
    }
    let hook_saw = std::fs::read_to_string(&status_file).unwrap();
    assert!(
        hook_saw.starts_with("offsite_failure: offsite catch-up on m failed: "),
        "{hook_saw}"
    );

    let out = t.ctl(&rotating);
    assert_eq!(out.code(), 5, "{}", out.stderr());
    let stdout = out.stdout();
    assert!(
        stdout.contains("Offsite catch-up on m failed: can't list what the remote lacks of docs: "),
        "{stdout}"
    );
    assert!(stdout.contains("Remote rotation on m failed: "), "{stdout}");
    assert!(
        out.stderr().contains(
            "Completed with offsite failure: 1 catch-up listing failed, 1 remote rotation failed"
        ),
        "{}",
        out.stderr()
    );

    // An --offsite-only job's own rotation is on the remote too.
    let (code, answer) = ctl_json(
        &t,
        &[
            "run",
            "--sources",
            "tree",
            "--name",
            "docs",
            "--offsite-only",
            "--offsite",
            "m",
            "--retention-days",
            "0",
            "--min-keep",
            "0",
        ],
    );
    assert_eq!(code, 5, "{answer}");
    let failed = &answer["data"]["sources"][0]["offsite_errors"];
    assert_eq!(failed[0]["remote"], "s3://backups/host", "{failed}");
    assert_eq!(failed[0]["step"], "rotation", "{failed}");
    assert!(
        failed[0]["error"].as_str().unwrap().contains(named),
        "{failed}"
    );

    // Once the key is gone, the next run rotates again: only its own copy stays. (moto
    // refuses an unsigned DELETE of that key; awscli's goes.)
    let Some(deleted) = moto.aws(&[
        "s3api",
        "delete-object",
        "--bucket",
        "backups",
        "--key",
        "host/..",
    ]) else {
        return;
    };
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    let (code, answer) = ctl_json(&t, &rotating);
    assert_eq!(code, 0, "{answer}");
    let own = file_name(&PathBuf::from(
        answer["data"]["sources"][0]["archive"].as_str().unwrap(),
    ));
    let listed = t.ctl(&["backups", "--remote", "m"]);
    assert_eq!(listed.code(), 0, "{}", listed.stderr());
    assert_eq!(listed.stdout().lines().collect::<Vec<_>>(), [own]);
}

#[test]
fn archives_take_the_remote_s_storage_class_and_manifests_stay_readable() {
    // With `storage_class = "GLACIER"` the manifests went there too, where S3 refuses to read
    // them: every run took the earlier copies for missing, sent each again and failed (exit 5).
    let Some(moto) = MotoServer::start() else {
        return;
    };
    moto.create_bucket("backups", false);
    let t = TestHome::new();
    let class = "storage_class = \"GLACIER\"";
    t.append_config(&moto.remote_table("cold", "backups", "host1", class));
    source(&t);
    let _daemon = t.start_daemon_with_env(&moto.env());
    let mut archive = String::new();
    for run in 0..3 {
        let (code, answer) = ctl_json(&t, &["run", "--sources", "tree", "--offsite", "cold"]);
        assert_eq!(code, 0, "run {run}: {answer}");
        let uploads = answer["data"]["sources"][0]["offsite"].as_array().unwrap();
        assert_eq!(uploads.len(), 1, "run {run}: {uploads:?}");
        archive = common::first_archive_name(&answer);
    }
    let class_of = |key: &str| {
        let key = format!("host1/{key}");
        let head = ["s3api", "head-object", "--bucket", "backups", "--key", &key];
        let out = moto.aws(&head)?;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let head: Value = serde_json::from_slice(&out.stdout).unwrap();
        Some(
            head["StorageClass"]
                .as_str()
                .unwrap_or("STANDARD")
                .to_owned(),
        )
    };
    let Some(archive_class) = class_of(&archive) else {
        return;
    };
    assert_eq!(archive_class, "GLACIER");
    let manifest = archive.replace(".tar.gz", ".json");
    assert_eq!(class_of(&manifest).unwrap(), "STANDARD");

    // A lifecycle rule moves the manifest there anyway: what cannot be read is taken on the
    // listing's word, neither sent again nor taken for an upload cut short by rotation.
    let key = format!("s3://backups/host1/{manifest}");
    let moved = moto
        .aws(&["s3", "cp", &key, &key, "--storage-class", "GLACIER"])
        .unwrap();
    assert!(moved.status.success(), "{}", text(&moved.stderr));
    assert_eq!(class_of(&manifest).unwrap(), "GLACIER");
    let (code, answer) = ctl_json(&t, &["run", "--sources", "tree", "--offsite", "cold"]);
    assert_eq!(code, 0, "{answer}");
    let uploads = answer["data"]["sources"][0]["offsite"].as_array().unwrap();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    let prune = [
        "prune",
        "--remote",
        "cold",
        "--retention-days",
        "0",
        "--min-keep",
        "4",
    ];
    let (code, answer) = ctl_json(&t, &prune);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["deleted"], serde_json::json!([]), "{answer}");
}
