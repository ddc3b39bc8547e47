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
