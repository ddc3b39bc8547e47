//! The remote commands against a real S3 server (s3s-fs, in the test process on loopback):
//! `backups --remote` lists complete copies (and incomplete ones with `--long`), `verify
//! --remote` streams copies back and catches a corrupted one, `restore --remote` restores a
//! copy with no local archive left and writes nothing from a bad one, `prune --remote` applies
//! a retention policy to the remote set only (and finishes a rotation cut between an archive
//! and its manifest by the manifest's mark), `sync --remote` uploads what the remote lacks,
//! and an encrypted copy is read (verified, restored) only with `--identity` or, encrypted to
//! one, `--passphrase`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::s3::{S3Server, SECRET_KEY, env_for};
use common::{TestHome, ctl_json, sha256sum, snapshot};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// `<work>/tree`: the base tree.
fn source(t: &TestHome) -> PathBuf {
    let src = t.work().join("tree");
    common::base_tree(&src);
    src
}

/// Runs a backup of `tree` (uploaded to `off` when `offsite`); the archive's file name.
fn back_up(t: &TestHome, offsite: bool) -> String {
    let mut args = vec!["run", "--sources", "tree"];
    if offsite {
        args.extend(["--offsite", "off"]);
    }
    let (code, answer) = ctl_json(t, &args);
    assert_eq!(code, 0, "{answer}");
    common::first_archive_name(&answer)
}

/// Runs a backup of `tree` uploaded to `off`, with `extra` options; the archive's file name.
fn back_up_offsite_with(t: &TestHome, extra: &[&str]) -> String {
    let mut args = vec!["run", "--sources", "tree", "--offsite", "off"];
    args.extend_from_slice(extra);
    let (code, answer) = ctl_json(t, &args);
    assert_eq!(code, 0, "{answer}");
    common::first_archive_name(&answer)
}

/// The manifest beside an archive: its stem with `.json`.
fn manifest_of(archive: &str) -> String {
    let stem = [
        ".tar.gz.age",
        ".tar.zst.age",
        ".tar.age",
        ".tar.gz",
        ".tar.zst",
        ".tar",
    ]
    .iter()
    .find_map(|ext| archive.strip_suffix(ext))
    .unwrap_or_else(|| panic!("not an archive name: {archive}"));
    format!("{stem}.json")
}

/// Copies of the remote copy `copy` and its manifest under each of the older names `old`, as
/// earlier runs would have left them.
fn plant_old_copies(server: &S3Server, copy: &str, old: &[&str]) {
    for name in old {
        server.copy_object(&format!("host/{copy}"), &format!("host/{name}"));
        server.copy_object(
            &format!("host/{}", manifest_of(copy)),
            &format!("host/{}", manifest_of(name)),
        );
    }
}

/// Four copies from 2020, more than the defaults' three kept.
const FOUR_OLD: [&str; 4] = [
    "tree_20200101_000000.tar.gz",
    "tree_20200102_000000.tar.gz",
    "tree_20200103_000000.tar.gz",
    "tree_20200104_000000.tar.gz",
];

/// Stores the schedule `tree`, copied to `off` and kept for a century.
fn create_century_schedule(t: &TestHome) {
    let (code, answer) = ctl_json(
        t,
        &[
            "create",
            "--name",
            "tree",
            "--source",
            "tree",
            "--offsite",
            "off",
            "--daily",
            "03:00",
            "--retention-days",
            "36500",
            "--min-keep",
            "1",
        ],
    );
    assert_eq!(code, 0, "{answer}");
}

/// A server with the remote `off` (prefix `host`), a daemon that reaches it, and `tree`.
fn setup() -> (S3Server, TestHome, common::Daemon) {
    let server = S3Server::start();
    let t = TestHome::new();
    t.append_config(&server.remote_table("off", "host", ""));
    source(&t);
    let daemon = t.start_daemon_with_env(&env_for(&server, SECRET_KEY));
    (server, t, daemon)
}

#[test]
fn backups_verify_and_restore_read_the_remote_copies() {
    let (server, t, _daemon) = setup();
    let first = back_up(&t, true);
    let second = back_up(&t, true);
    // An upload cut short before its manifest: an archive object alone.
    let cut = "tree_20200101_000000.tar.gz";
    server.copy_object(&format!("host/{first}"), &format!("host/{cut}"));
    // Nothing local any more: everything below reads the bucket.
    for entry in std::fs::read_dir(t.home().join("backups")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }

    // backups: the complete copies only; --long shows the cut one as incomplete.
    let out = t.ctl(&["backups", "--remote", "off"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(out.stdout().lines().collect::<Vec<_>>(), expected);
    let out = t.ctl(&["backups", "--remote", "off", "--long"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let text = out.stdout();
    let cut_line = text.lines().find(|l| l.contains(cut)).unwrap();
    assert!(cut_line.ends_with("incomplete (no manifest)"), "{text}");
    let first_line = text.lines().find(|l| l.contains(&first)).unwrap();
    assert!(!first_line.contains("incomplete"), "{text}");
    let (code, answer) = ctl_json(&t, &["backups", "--remote", "off", "--long"]);
    assert_eq!(code, 0);
    assert_eq!(answer["data"]["directory"], "s3://backups/host");
    let archives = answer["data"]["groups"][0]["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 3, "{archives:?}");
    let incomplete: Vec<_> = archives
        .iter()
        .filter(|a| a["incomplete"] == true)
        .map(|a| a["file"].as_str().unwrap())
        .collect();
    assert_eq!(incomplete, [cut]);

    // verify: both complete copies streamed back and read to the end.
    let (code, answer) = ctl_json(&t, &["verify", "--remote", "off", "--all"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["ok"], 2, "{answer}");
    assert_eq!(
        answer["data"]["archives"][0]["archive"],
        format!("s3://backups/host/{first}")
    );
    let out = t.ctl(&["verify", "--remote", "off", &second]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    // `backups --long` remembers each copy's verification, not only the last one's.
    let (code, answer) = ctl_json(&t, &["backups", "--remote", "off", "--long"]);
    assert_eq!(code, 0, "{answer}");
    let archives = answer["data"]["groups"][0]["archives"].as_array().unwrap();
    for copy in [&first, &second] {
        let listed = archives
            .iter()
            .find(|a| a["file"] == copy.as_str())
            .unwrap();
        assert_eq!(listed["verify"]["status"], "ok", "{answer}");
    }

    // restore: the copy, with no local archive, exactly as the source.
    let target = t.work().join("restored");
    let out = t.ctl(&[
        "restore",
        "--remote",
        "off",
        &second,
        "--to",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 0, "{} {}", out.stdout(), out.stderr());
    assert_eq!(
        snapshot(&target.join("tree")),
        snapshot(&t.work().join("tree"))
    );
    // --path: only that part.
    let part = t.work().join("part");
    let out = t.ctl(&[
        "restore",
        "--remote",
        "off",
        &second,
        "--to",
        part.to_str().unwrap(),
        "--path",
        "docs",
    ]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(
        snapshot(&part.join("tree/docs")),
        snapshot(&t.work().join("tree/docs"))
    );
    assert!(!part.join("tree/run.sh").exists());
    // Into the same target again: refused without --overwrite, done with it.
    let again = |extra: &[&str]| {
        let mut args = vec!["restore", "--remote", "off", &second, "--to"];
        args.push(target.to_str().unwrap());
        args.extend_from_slice(extra);
        t.ctl(&args)
    };
    assert_eq!(again(&[]).code(), 1);
    assert_eq!(again(&["--overwrite"]).code(), 0);

    // A corrupted copy (same size, one byte changed) fails verify and restores nothing.
    let object = server.object(&format!("host/{first}"));
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&object, &bytes).unwrap();
    let (code, answer) = ctl_json(&t, &["verify", "--remote", "off", &first]);
    assert_eq!(code, 1, "{answer}");
    assert_eq!(
        answer["data"]["archives"][0]["status"], "checksum_mismatch",
        "{answer}"
    );
    let bad = t.work().join("bad");
    let out = t.ctl(&[
        "restore",
        "--remote",
        "off",
        &first,
        "--to",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 1, "{}", out.stdout());
    assert!(!bad.exists(), "nothing written from a bad copy");

    // An incomplete copy is no backup; a path or a stranger is no archive name.
    let out = t.ctl(&["verify", "--remote", "off", cut]);
    assert_eq!(out.code(), 1);
    let text = format!("{}{}", out.stdout(), out.stderr());
    assert!(text.contains("manifest"), "{text}");
    for name in ["../tree_20250101_000000.tar.gz", "notes.txt"] {
        let out = t.ctl(&["restore", "--remote", "off", name, "--to", "/tmp/unused"]);
        assert_eq!(out.code(), 1);
        assert!(
            out.stderr().contains("by its file name"),
            "{}",
            out.stderr()
        );
    }
    let out = t.ctl(&["backups", "--remote", "nowhere"]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr().contains("unknown remote \"nowhere\""),
        "{}",
        out.stderr()
    );
    assert!(!t.log().contains(SECRET_KEY));
}

#[test]
fn prune_remote_applies_the_policy_to_the_remote_set_only() {
    let (server, t, _daemon) = setup();
    let newest = back_up(&t, true);
    // Two old copies of the same backup, complete, on the remote only.
    let old = ["tree_20200101_000000.tar.gz", "tree_20200102_000000.tar.gz"];
    plant_old_copies(&server, &newest, &old);
    let policy = ["--retention-days", "7", "--min-keep", "1"];
    let mut args = vec!["prune", "--remote", "off", "--dry-run"];
    args.extend(policy);
    let (code, answer) = ctl_json(&t, &args);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(
        answer["data"]["deleted"],
        serde_json::json!(old),
        "{answer}"
    );
    assert_eq!(server.objects("host").len(), 6, "a dry run deletes nothing");

    let mut args = vec!["prune", "--remote", "off"];
    args.extend(policy);
    let (code, answer) = ctl_json(&t, &args);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["destination"], "s3://backups/host");
    assert_eq!(answer["data"]["kept"], 1);
    let mut left = vec![newest.clone(), manifest_of(&newest)];
    left.sort();
    assert_eq!(
        server.objects("host"),
        left,
        "the old copies and their manifests are gone"
    );
    assert!(
        t.home().join("backups").join(&newest).is_file(),
        "the local archive stays"
    );
    assert!(
        t.log()
            .contains("Deleting old backup: tree_20200101_000000.tar.gz"),
        "{}",
        t.log()
    );
}

#[test]
fn prune_remote_keeps_what_the_schedule_copying_there_keeps_unless_told_otherwise() {
    // A bare `prune --remote` took the defaults (7 days, 3 copies) for every name.
    let (server, t, _daemon) = setup();
    let newest = back_up(&t, true);
    let old = FOUR_OLD;
    plant_old_copies(&server, &newest, &old);
    create_century_schedule(&t);
    let (code, answer) = ctl_json(&t, &["prune", "--remote", "off", "--dry-run"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["deleted"], serde_json::json!([]), "{answer}");
    let given = [
        "prune",
        "--remote",
        "off",
        "--dry-run",
        "--retention-days",
        "7",
        "--min-keep",
        "1",
    ];
    let (code, answer) = ctl_json(&t, &given);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(
        answer["data"]["deleted"],
        serde_json::json!(old),
        "{answer}"
    );
}

#[test]
fn a_remote_listing_takes_no_request_per_copy_and_reads_manifests_several_at_once() {
    let (server, t, _daemon) = setup();
    let newest = back_up(&t, true);
    // Twelve older complete copies, on the remote only.
    let old: Vec<String> = (1..=12)
        .map(|day| format!("tree_202001{day:02}_000000.tar.gz"))
        .collect();
    for name in &old {
        for (from, to) in [
            (newest.clone(), name.clone()),
            (manifest_of(&newest), manifest_of(name)),
        ] {
            let to = server.object(&format!("host/{to}"));
            std::fs::copy(server.object(&format!("host/{from}")), to).unwrap();
        }
    }

    server.gate_manifest_reads();
    let heads = server.heads();
    let (code, answer) = ctl_json(&t, &["backups", "--remote", "off", "--long"]);
    assert_eq!(code, 0, "{answer}");
    let listed = answer["data"]["groups"][0]["archives"].as_array().unwrap();
    assert_eq!(listed.len(), 13, "{answer}");
    assert!(
        listed.iter().all(|a| a["incomplete"] != true),
        "every manifest read: {answer}"
    );
    // The listing tells each copy's identity: one request per copy would be a round trip
    // each, minutes for a thousand copies.
    assert_eq!(server.heads(), heads, "HEAD requests while listing");
    assert!(server.most_manifest_reads_at_once() >= 2);

    // What rotation saw in the listing is what it checks before each removal: the listing
    // and a `HEAD` tell the same copy alike.
    let (code, answer) = ctl_json(
        &t,
        &[
            "prune",
            "--remote",
            "off",
            "--retention-days",
            "7",
            "--min-keep",
            "1",
        ],
    );
    assert_eq!(code, 0, "{answer}");
    assert_eq!(
        answer["data"]["deleted"],
        serde_json::json!(old),
        "{answer}"
    );
    let mut left = vec![newest.clone(), manifest_of(&newest)];
    left.sort();
    assert_eq!(server.objects("host"), left);
}

#[test]
fn prune_remote_never_keeps_a_copy_without_its_manifest_in_place_of_a_complete_one() {
    // Two uploads cut short before their manifest, newer than three complete copies: with
    // `--min-keep 2` the two were kept and the three complete ones deleted.
    let (server, t, _daemon) = setup();
    let newest = back_up(&t, true);
    let copy =
        |from: &str, to: &str| server.copy_object(&format!("host/{from}"), &format!("host/{to}"));
    let complete = [
        "tree_20200101_000000.tar.gz",
        "tree_20200102_000000.tar.gz",
        "tree_20200103_000000.tar.gz",
    ];
    let cut_short = ["tree_20200104_000000.tar.gz", "tree_20200105_000000.tar.gz"];
    for name in complete {
        copy(&newest, name);
        copy(&manifest_of(&newest), &manifest_of(name));
    }
    for name in cut_short {
        copy(&newest, name);
    }
    for own in [newest.clone(), manifest_of(&newest)] {
        std::fs::remove_file(server.object(&format!("host/{own}"))).unwrap();
    }
    let (code, answer) = ctl_json(
        &t,
        &[
            "prune",
            "--remote",
            "off",
            "--retention-days",
            "7",
            "--min-keep",
            "2",
        ],
    );
    assert_eq!(code, 0, "{answer}");
    let mut left = Vec::new();
    for name in &complete[1..] {
        left.extend([name.to_string(), manifest_of(name)]);
    }
    left.sort();
    assert_eq!(server.objects("host"), left, "{answer}");
    let (code, answer) = ctl_json(&t, &["backups", "--remote", "off"]);
    assert_eq!(code, 0, "{answer}");
    assert!(answer.to_string().contains(complete[2]), "{answer}");
}

/// The mark a rotation sets on the manifest it is deleting.
fn mark_of(manifest: &str) -> String {
    format!(".backupd-deleting-{manifest}")
}

/// `names`, sorted.
fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    names.sort();
    names
}

#[test]
fn a_remote_rotation_cut_before_a_manifest_is_finished_by_the_next_and_a_user_s_manifest_stays() {
    // The server refuses the manifest's DELETE, as a kill or a lost network right after the
    // archive's leaves the rotation: the manifest stayed for good, without its archive.
    let (server, t, _daemon) = setup();
    let newest = back_up(&t, true);
    let copy =
        |from: &str, to: &str| server.copy_object(&format!("host/{from}"), &format!("host/{to}"));
    // A manifest its user keeps after moving the archive to tape: never the rotation's.
    let kept = "tree_20190101_000000.json";
    copy(&manifest_of(&newest), kept);
    let prune = |extra: &[&str]| {
        let mut args = vec!["prune", "--remote", "off", "--retention-days", "7"];
        args.extend(["--min-keep", "1"]);
        args.extend(extra);
        ctl_json(&t, &args)
    };
    let cut = |old: &str| {
        copy(&newest, old);
        copy(&manifest_of(&newest), &manifest_of(old));
        server.refuse_deletes_of(Some(&format!("host/{}", manifest_of(old))));
        let (_, answer) = prune(&[]);
        server.refuse_deletes_of(None);
        assert_eq!(
            answer["data"]["deleted"],
            serde_json::json!([old]),
            "{answer}"
        );
        let manifest = manifest_of(old);
        let objects = [
            newest.as_str(),
            &manifest_of(&newest),
            kept,
            &manifest,
            &mark_of(&manifest),
        ];
        assert_eq!(
            server.objects("host"),
            sorted(&objects),
            "the archive gone, its manifest left marked"
        );
    };
    let old = "tree_20200101_000000.tar.gz";
    cut(old);

    // Neither the mark nor the manifest without its archive is a backup.
    let (code, answer) = ctl_json(&t, &["backups", "--remote", "off", "--long"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["backups"], serde_json::json!([newest]));
    let groups = answer["data"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{answer}");
    assert_eq!(
        groups[0]["archives"].as_array().unwrap().len(),
        1,
        "{answer}"
    );
    let cut_state = server.objects("host");
    let (code, answer) = prune(&["--dry-run"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(
        server.objects("host"),
        cut_state,
        "a dry run removes nothing"
    );

    // The next rotation removes the manifest with its mark before it plans.
    let (code, answer) = prune(&[]);
    assert_eq!(code, 0, "{answer}");
    let complete = [newest.as_str(), &manifest_of(&newest), kept];
    assert_eq!(server.objects("host"), sorted(&complete));
    let removed = |manifest: &str| {
        format!(
            "Removed stale manifest s3://backups/host/{manifest}: a rotation cut short had \
             deleted its archive"
        )
    };
    assert!(t.log().contains(&removed(&manifest_of(old))), "{}", t.log());
    assert!(!t.log().contains(&removed(kept)), "{}", t.log());

    // So does the rotation after a run's upload.
    let older = "tree_20200102_000000.tar.gz";
    cut(older);
    let newer = back_up(&t, true);
    let complete = [
        newest.as_str(),
        &manifest_of(&newest),
        &newer,
        &manifest_of(&newer),
        kept,
    ];
    assert_eq!(server.objects("host"), sorted(&complete));
    assert!(
        t.log().contains(&removed(&manifest_of(older))),
        "{}",
        t.log()
    );
}

#[test]
fn a_mark_left_alone_is_no_manifest_to_sync_and_goes_alone_once_the_copy_is_back() {
    // Cut after the manifest's DELETE: the mark alone is left, and the local archive stays.
    let (server, t, _daemon) = setup();
    let archive = back_up(&t, true);
    let mark = mark_of(&manifest_of(&archive));
    server.refuse_deletes_of(Some(&format!("host/{mark}")));
    let args = [
        "prune",
        "--remote",
        "off",
        "--retention-days",
        "0",
        "--min-keep",
        "0",
    ];
    let (code, answer) = ctl_json(&t, &args);
    server.refuse_deletes_of(None);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(server.objects("host"), sorted(&[&mark]));
    let (code, answer) = ctl_json(&t, &["backups", "--remote", "off", "--long"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["backups"], serde_json::json!([]), "{answer}");
    assert_eq!(answer["data"]["groups"], serde_json::json!([]), "{answer}");

    // The mark is not the manifest: the copy is sent again, the same bytes.
    let (code, answer) = ctl_json(&t, &["sync", "--remote", "off"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["uploads"].as_array().unwrap().len(), 1);
    let copy = [archive.as_str(), &manifest_of(&archive), &mark];
    assert_eq!(server.objects("host"), sorted(&copy));

    // Its archive is there: the mark goes, and the copy stays.
    let (code, answer) = ctl_json(&t, &["prune", "--remote", "off"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["deleted"], serde_json::json!([]), "{answer}");
    let complete = [archive.as_str(), &manifest_of(&archive)];
    assert_eq!(server.objects("host"), sorted(&complete));
    assert!(
        t.log().contains(&format!(
            "Removed the mark of a rotation cut short s3://backups/host/{mark}"
        )),
        "{}",
        t.log()
    );
}

#[test]
fn sync_uploads_what_the_remote_lacks_manifest_last() {
    let (server, t, _daemon) = setup();
    let first = back_up(&t, false);
    let second = back_up(&t, false);
    // A local archive without its manifest is not a backup: never sent.
    let orphan = "tree_20200101_000000.tar.gz";
    std::fs::copy(
        t.home().join("backups").join(&first),
        t.home().join("backups").join(orphan),
    )
    .unwrap();
    assert!(server.objects("host").is_empty());

    let (code, answer) = ctl_json(&t, &["sync", "--remote", "off", "--name", "other"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["uploads"], serde_json::json!([]));

    let (code, answer) = ctl_json(&t, &["sync", "--remote", "off"]);
    assert_eq!(code, 0, "{answer}");
    let uploads = answer["data"]["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert!(uploads.iter().all(|u| u["ok"] == true), "{uploads:?}");
    let mut expected = vec![
        first.clone(),
        manifest_of(&first),
        second.clone(),
        manifest_of(&second),
    ];
    expected.sort();
    assert_eq!(server.objects("host"), expected);
    for archive in [&first, &second] {
        assert_eq!(
            sha256sum(&server.object(&format!("host/{archive}"))),
            sha256sum(&t.home().join("backups").join(archive))
        );
    }

    // Nothing left to send; the text says so.
    let out = t.ctl(&["sync", "--remote", "off"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        out.stdout()
            .contains("Sync to off (s3://backups/host): 0 uploaded, 0 failed, 2 already there"),
        "{}",
        out.stdout()
    );

    // A copy whose manifest is missing remotely (an upload cut short) is sent again.
    std::fs::remove_file(server.object(&format!("host/{}", manifest_of(&first)))).unwrap();
    let (code, answer) = ctl_json(&t, &["sync", "--remote", "off"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(
        answer["data"]["uploads"].as_array().unwrap().len(),
        1,
        "{answer}"
    );
    assert_eq!(server.objects("host"), expected);

    // So is one whose manifest outlived its archive (removed by hand, a lifecycle rule): a
    // manifest alone is no copy.
    std::fs::remove_file(server.object(&format!("host/{first}"))).unwrap();
    let (code, answer) = ctl_json(&t, &["sync", "--remote", "off"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(
        answer["data"]["uploads"][0]["bytes"].as_u64(),
        Some(
            std::fs::metadata(t.home().join("backups").join(&first))
                .unwrap()
                .len()
        ),
        "{answer}"
    );
    assert_eq!(server.objects("host"), expected);
    assert_eq!(
        sha256sum(&server.object(&format!("host/{first}"))),
        sha256sum(&t.home().join("backups").join(&first))
    );

    // Another backup's manifest under its name (a daemon sharing the prefix) is not its copy
    // either: that upload fails, saying so, and the other's is left alone.
    let theirs = server.object(&format!("host/{}", manifest_of(&second)));
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&theirs).unwrap()).unwrap();
    manifest["checksum_sha256"] = "00".repeat(32).into();
    std::fs::write(&theirs, manifest.to_string()).unwrap();
    let (code, answer) = ctl_json(&t, &["sync", "--remote", "off"]);
    assert_eq!(code, 1, "{answer}");
    let upload = &answer["data"]["uploads"][0];
    assert_eq!(upload["ok"], false, "{answer}");
    let error = upload["error"].as_str().unwrap();
    assert!(
        error.contains("already holds another backup named"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        manifest.to_string().as_bytes()
    );
}

#[test]
fn a_run_never_sends_again_what_the_remote_s_rotation_deleted() {
    // The folder keeps 10 backups, the remote 1: each run's catch-up sent the remote every
    // older backup its rotation had deleted, for the rotation to delete them again.
    let (server, t, _daemon) = setup();
    let keep = [
        "--retention-days",
        "30",
        "--min-keep",
        "10",
        "--offsite-keep-days",
        "0",
        "--offsite-keep-min",
        "1",
    ];
    // The remote keeps a run's own copy and the newest 1 of those before it.
    let mut previous = None;
    for run in 0..4 {
        let args = [&["run", "--sources", "tree", "--offsite", "off"][..], &keep].concat();
        let (code, answer) = ctl_json(&t, &args);
        assert_eq!(code, 0, "{answer}");
        let uploads = answer["data"]["sources"][0]["offsite"].as_array().unwrap();
        assert_eq!(uploads.len(), 1, "run {run}: {uploads:?}");
        let own = common::first_archive_name(&answer);
        let mut kept = vec![own.clone(), manifest_of(&own)];
        if let Some(previous) = previous.replace(own) {
            kept.extend([manifest_of(&previous), previous]);
        }
        kept.sort();
        assert_eq!(server.objects("host"), kept, "run {run}");
    }
    // What the remote's rotation keeps is still caught up: here, once it keeps them all, the
    // two oldest.
    let mut all = keep.to_vec();
    all[7] = "30";
    let args = [&["run", "--sources", "tree", "--offsite", "off"][..], &all].concat();
    let (code, answer) = ctl_json(&t, &args);
    assert_eq!(code, 0, "{answer}");
    let uploads = answer["data"]["sources"][0]["offsite"].as_array().unwrap();
    assert_eq!(uploads.len(), 3, "{uploads:?}");
    assert_eq!(server.objects("host").len(), 10);
}

#[test]
fn a_run_rotates_the_remote_copies_after_its_upload_by_the_offsite_policy() {
    let (server, t, _daemon) = setup();
    let first = back_up(&t, true);
    // Old copies on the remote only (the local folder never had them).
    let old = ["tree_20200101_000000.tar.gz", "tree_20200102_000000.tar.gz"];
    plant_old_copies(&server, &first, &old);
    // As a local rotation, a run counts only the copies there before its own: kept is the
    // newest 1 of those (--offsite-keep-min 1, where the job's default would keep 3), days from
    // the job's retention (7 by default), and the run's own copy.
    let second = back_up_offsite_with(&t, &["--offsite-keep-min", "1"]);
    let mut left = vec![
        first.clone(),
        manifest_of(&first),
        second.clone(),
        manifest_of(&second),
    ];
    left.sort();
    assert_eq!(server.objects("host"), left, "the old remote copies went");
    assert!(
        t.log().contains("Old copies deleted from off: 2"),
        "{}",
        t.log()
    );

    // A policy that would keep nothing still never deletes the run's own copy. Once the clock
    // is past the second's name (a name can be claimed a second ahead), both are old.
    let stamp = second
        .trim_start_matches("tree_")
        .trim_end_matches(".tar.gz");
    let stamp = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S").unwrap();
    common::wait_for(
        Duration::from_secs(10),
        "the clock to pass the last archive",
        || {
            (chrono::Local::now().naive_local() > stamp + chrono::TimeDelta::seconds(1))
                .then_some(())
        },
    );
    let third = back_up_offsite_with(&t, &["--offsite-keep-days", "0", "--offsite-keep-min", "0"]);
    let mut left = vec![third.clone(), manifest_of(&third)];
    left.sort();
    assert_eq!(server.objects("host"), left);
    // Local rotation is the job's own: the three local archives stay (7 days, keep 3).
    assert_eq!(
        std::fs::read_dir(t.home().join("backups")).unwrap().count(),
        6
    );
}

#[test]
fn a_one_off_run_keeps_the_remote_copies_the_schedule_copying_there_keeps() {
    // Its remote rotation took the run's defaults (7 days, 3 copies).
    let (server, t, _daemon) = setup();
    let first = back_up(&t, true);
    let old = FOUR_OLD;
    plant_old_copies(&server, &first, &old);
    create_century_schedule(&t);
    let second = back_up(&t, true);
    let mut kept: Vec<String> = old
        .iter()
        .chain([&first.as_str(), &second.as_str()])
        .flat_map(|a| [a.to_string(), manifest_of(a)])
        .collect();
    kept.sort();
    assert_eq!(server.objects("host"), kept, "every copy stays");
    // A policy the run gives wins.
    back_up_offsite_with(&t, &["--offsite-keep-min", "1"]);
    assert!(
        old.iter()
            .all(|a| !server.objects("host").contains(&a.to_string())),
        "{:?}",
        server.objects("host")
    );
}

#[test]
fn an_encrypted_copy_tells_the_provider_nothing_of_its_contents() {
    // Its manifest went up as written locally: the source's path, warnings quoting paths
    // inside the archive, the dump commands.
    let (server, t, _daemon) = setup();
    let public = t
        .ctl(&[
            "keygen",
            "--out",
            t.work().join("key.txt").to_str().unwrap(),
        ])
        .ok();
    let private = t.work().join("tree/Medical records");
    std::fs::create_dir(&private).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(private.join("agent.sock")).unwrap();
    let source = t.work().canonicalize().unwrap().join("tree");
    for only in [false, true] {
        let mut args = vec![
            "run",
            "--sources",
            "tree",
            "--encrypt-to",
            public.trim(),
            "--offsite",
            "off",
            "--source-command",
            "secret-db.sql=echo dump of secret-db",
        ];
        if only {
            args.push("--offsite-only");
        }
        let placement = args.join(" ");
        let (code, answer) = ctl_json(&t, &args);
        assert!(code == 0 || code == 4, "{answer}");
        let archive = common::first_archive_name(&answer);
        let stored =
            std::fs::read_to_string(server.object(&format!("host/{}", manifest_of(&archive))))
                .unwrap();
        for secret in ["Medical records", "secret-db", source.to_str().unwrap()] {
            assert!(
                !stored.contains(secret),
                "{placement}: {secret} in {stored}"
            );
        }
        let stored: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(stored["backup_file"], archive.as_str(), "{stored}");
        assert_eq!(stored["encryption"], "age", "{stored}");
        assert_eq!(stored["recipients"][0], public.trim(), "{stored}");
        if !only {
            let local =
                std::fs::read_to_string(t.home().join("backups").join(manifest_of(&archive)))
                    .unwrap();
            assert!(local.contains("Medical records"), "kept locally: {local}");
            assert_eq!(
                serde_json::from_str::<Value>(&local).unwrap()["checksum_sha256"],
                stored["checksum_sha256"]
            );
        }
    }
    let (code, answer) = ctl_json(&t, &["verify", "--remote", "off", "--all"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["ok"], 2, "{answer}");
}

#[test]
fn an_encrypted_remote_copy_is_read_only_with_an_identity() {
    let (_server, t, _daemon) = setup();
    let key = t.work().join("key.txt");
    let public = t.ctl(&["keygen", "--out", key.to_str().unwrap()]).ok();
    let stranger = t.work().join("stranger.txt");
    t.ctl(&["keygen", "--out", stranger.to_str().unwrap()]).ok();
    let (code, answer) = ctl_json(
        &t,
        &[
            "run",
            "--sources",
            "tree",
            "--encrypt-to",
            public.trim(),
            "--offsite",
            "off",
        ],
    );
    assert_eq!(code, 0, "{answer}");
    let archive = common::first_archive_name(&answer);
    assert!(archive.ends_with(".tar.gz.age"), "{archive}");
    // Nothing local any more: everything below reads the bucket.
    for entry in std::fs::read_dir(t.home().join("backups")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let long = t.ctl(&["backups", "--remote", "off", "--long"]).ok();
    assert!(
        long.contains(&format!("encrypted (age) to {}", public.trim())),
        "{long}"
    );

    // Without a key: the checksum only, and it says so.
    let (code, answer) = ctl_json(&t, &["verify", "--remote", "off", &archive]);
    assert_eq!(code, 0, "{answer}");
    let check = &answer["data"]["archives"][0];
    assert_eq!(check["status"], "ok", "{answer}");
    assert!(
        check["detail"]
            .as_str()
            .is_some_and(|d| d.contains("checksum only")),
        "{answer}"
    );
    assert_eq!(check["entries"], 0, "{answer}");
    // With the key: decrypted and read to the end.
    let key_arg = key.to_str().unwrap();
    let (code, answer) = ctl_json(
        &t,
        &["verify", "--remote", "off", &archive, "--identity", key_arg],
    );
    assert_eq!(code, 0, "{answer}");
    let check = &answer["data"]["archives"][0];
    assert_eq!(check["status"], "ok", "{answer}");
    assert!(check["detail"].is_null(), "{answer}");
    assert!(check["entries"].as_u64().unwrap() > 3, "{answer}");
    let (code, answer) = ctl_json(
        &t,
        &["verify", "--remote", "off", "--all", "--identity", key_arg],
    );
    assert_eq!(
        (code, &answer["data"]["ok"]),
        (0, &Value::from(1)),
        "{answer}"
    );

    // restore: refused without the key or with another one, nothing written; done with it.
    let target = t.work().join("restored");
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "--remote", "off", &archive, "--to"];
        args.push(target.to_str().unwrap());
        args.extend_from_slice(extra);
        t.ctl(&args)
    };
    let keyless = restore(&[]);
    assert_eq!(keyless.code(), 1);
    assert!(
        keyless.stderr().contains("--identity"),
        "{}",
        keyless.stderr()
    );
    let wrong = restore(&["--identity", stranger.to_str().unwrap()]);
    assert_eq!(wrong.code(), 1);
    assert!(
        wrong.stderr().contains("does not match any recipient"),
        "{}",
        wrong.stderr()
    );
    assert!(!target.exists(), "nothing written without the right key");
    let out = restore(&["--identity", key_arg]);
    assert_eq!(out.code(), 0, "{} {}", out.stdout(), out.stderr());
    assert_eq!(
        snapshot(&target.join("tree")),
        snapshot(&t.work().join("tree"))
    );
    assert!(!t.log().contains("AGE-SECRET-KEY"));
}

#[test]
fn a_copy_encrypted_to_a_passphrase_is_read_from_the_remote_with_it() {
    const PASSPHRASE: &str = "remote horse battery staple";
    let typing = |t: &TestHome, args: &[&str], lines: &[&str]| {
        common::terminal::Terminal::open().run(&mut t.ctl_command(args), lines)
    };
    let (_server, t, _daemon) = setup();
    let ran = typing(
        &t,
        &[
            "--json",
            "run",
            "--sources",
            "tree",
            "--passphrase",
            "--offsite",
            "off",
        ],
        &[PASSPHRASE, PASSPHRASE],
    );
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let answer: Value = serde_json::from_slice(&ran.stdout).unwrap();
    let archive = common::first_archive_name(&answer);
    for entry in std::fs::read_dir(t.home().join("backups")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }

    let unread = t.ctl(&["verify", "--remote", "off", &archive]).ok();
    assert!(unread.contains("checksum only"), "{unread}");
    let read = typing(
        &t,
        &["verify", "--remote", "off", &archive, "--passphrase"],
        &[PASSPHRASE],
    );
    let shown = String::from_utf8_lossy(&read.stdout).into_owned();
    assert!(read.status.success(), "{shown}");
    assert!(
        shown.contains(": OK") && !shown.contains("checksum only"),
        "{shown}"
    );
    let wrong = typing(
        &t,
        &["verify", "--remote", "off", &archive, "--passphrase"],
        &["not it"],
    );
    assert_eq!(wrong.status.code(), Some(1));

    let target = t.work().join("restored");
    let target_arg = target.to_str().unwrap();
    let restored = typing(
        &t,
        &[
            "restore",
            "--remote",
            "off",
            &archive,
            "--to",
            target_arg,
            "--passphrase",
        ],
        &[PASSPHRASE],
    );
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert_eq!(
        snapshot(&target.join("tree")),
        snapshot(&t.work().join("tree"))
    );
    assert!(!t.log().contains(PASSPHRASE));
}

/// `run ARGS` of `tree` straight to `off` (`--offsite-only`), which must succeed.
fn offsite_only(t: &TestHome, extra: &[&str]) -> Value {
    let to = [
        "run",
        "--sources",
        "tree",
        "--offsite-only",
        "--offsite",
        "off",
    ];
    let (code, answer) = ctl_json(t, &[&to[..], extra].concat());
    assert_eq!(code, 0, "{answer}");
    answer
}

#[test]
fn an_offsite_only_set_is_kept_by_its_offsite_retention_whoever_runs_it() {
    // With --offsite-only the remote's copies are the archives: --offsite-keep-days was
    // stored and ignored, and they went by the job's 7 days / 3; a one-off offsite-only run of
    // the schedule's folder rotated them by the defaults, not by the schedule's policy.
    let (server, t, _daemon) = setup();
    let (code, answer) = ctl_json(
        &t,
        &[
            "create",
            "--name",
            "tree",
            "--source",
            "tree",
            "--offsite-only",
            "--offsite",
            "off",
            "--daily",
            "03:00",
            "--offsite-keep-days",
            "36500",
            "--offsite-keep-min",
            "1",
        ],
    );
    assert_eq!(code, 0, "{answer}");
    let (code, answer) = ctl_json(&t, &["run", "--name", "tree"]);
    assert_eq!(code, 0, "{answer}");
    let first = common::first_archive_name(&answer);
    plant_old_copies(&server, &first, &FOUR_OLD);
    let all_there = |objects: Vec<String>| {
        FOUR_OLD
            .iter()
            .all(|old| objects.contains(&old.to_string()))
    };

    let (code, answer) = ctl_json(&t, &["run", "--name", "tree"]);
    assert_eq!(code, 0, "{answer}");
    assert!(all_there(server.objects("host")), "{answer}");
    let answer = offsite_only(&t, &[]);
    assert!(all_there(server.objects("host")), "{answer}");
    // A run's own offsite retention is its own to give.
    let answer = offsite_only(&t, &["--offsite-keep-days", "0", "--offsite-keep-min", "1"]);
    let left = server.objects("host");
    assert!(
        FOUR_OLD.iter().all(|old| !left.contains(&old.to_string())),
        "{answer}"
    );
}

#[test]
fn an_offsite_only_run_finishes_a_rotation_cut_before_a_manifest() {
    // Only `prune --remote` and a copying run's remote rotation finished a cut rotation: an
    // offsite-only set kept the manifest without its archive, and its mark, for good.
    let (server, t, _daemon) = setup();
    let newest = common::first_archive_name(&offsite_only(&t, &[]));
    let old = FOUR_OLD[0];
    plant_old_copies(&server, &newest, &[old]);
    server.refuse_deletes_of(Some(&format!("host/{}", manifest_of(old))));
    let keep_one = ["--retention-days", "0", "--min-keep", "1"];
    let answer = offsite_only(&t, &keep_one);
    server.refuse_deletes_of(None);
    let left = server.objects("host");
    assert!(
        left.contains(&mark_of(&manifest_of(old))),
        "{left:?} {answer}"
    );
    assert!(!left.contains(&old.to_string()), "{left:?}");

    offsite_only(&t, &keep_one);
    let left = server.objects("host");
    let cut = [manifest_of(old), mark_of(&manifest_of(old))];
    assert!(cut.iter().all(|file| !left.contains(file)), "{left:?}");
}

#[test]
fn the_catch_up_sends_what_the_rotation_keeps_whatever_newer_copies_are_there() {
    // The catch-up planned the remote's rotation counting a copy newer than the run's own
    // (another run's, or a clock set back), which that rotation leaves out: keeping one, it
    // counted that one and sent nothing of what the rotation would have kept.
    let (server, t, _daemon) = setup();
    let made = back_up(&t, false);
    let backups = t.home().join("backups");
    // Older backups: one copied to the remote, a newer one never (the remote was down), and
    // on the remote a copy dated ahead of every run.
    let put = |stem: &str, folder: &std::path::Path| {
        std::fs::create_dir_all(folder).unwrap();
        std::fs::copy(backups.join(&made), folder.join(format!("{stem}.tar.gz"))).unwrap();
        let manifest = backups.join(manifest_of(&made));
        std::fs::copy(manifest, folder.join(format!("{stem}.json"))).unwrap();
    };
    let remote = server.object("host");
    for (stem, places) in [
        ("tree_20200101_000000", vec![&backups, &remote]),
        ("tree_20200102_000000", vec![&backups]),
        ("tree_29990101_000000", vec![&remote]),
    ] {
        places.into_iter().for_each(|folder| put(stem, folder));
    }
    std::fs::remove_file(backups.join(manifest_of(&made))).unwrap();
    std::fs::remove_file(backups.join(&made)).unwrap();
    let keep_one = ["--offsite-keep-days", "0", "--offsite-keep-min", "1"];
    let args = [
        &["run", "--sources", "tree", "--offsite", "off"][..],
        &keep_one,
    ]
    .concat();
    let (code, answer) = ctl_json(&t, &args);
    assert_eq!(code, 0, "{answer}");
    let sent: Vec<&str> = (answer["data"]["sources"][0]["offsite"]
        .as_array()
        .unwrap()
        .iter())
    .map(|upload| upload["url"].as_str().unwrap())
    .collect();
    assert!(
        sent.iter()
            .any(|url| url.ends_with("tree_20200102_000000.tar.gz")),
        "{sent:?}"
    );
    let left = server.objects("host");
    assert!(
        left.contains(&"tree_20200102_000000.tar.gz".to_owned()),
        "{left:?}"
    );
}

#[test]
fn a_copy_cut_short_is_replaced_only_by_a_whole_one() {
    // An archive whose manifest never arrived was deleted before the local archive was read:
    // a local archive rotten since left neither.
    let (server, t, _daemon) = setup();
    let archive = back_up(&t, true);
    std::fs::remove_file(server.object(&format!("host/{}", manifest_of(&archive)))).unwrap();
    let remote_copy = server.object(&format!("host/{archive}"));
    let before = sha256sum(&remote_copy);
    let local = t.home().join("backups").join(&archive);
    let mut rotten = std::fs::read(&local).unwrap();
    let middle = rotten.len() / 2;
    rotten[middle] ^= 0xff;
    std::fs::write(&local, rotten).unwrap();
    let (code, answer) = ctl_json(&t, &["sync", "--remote", "off"]);
    assert_eq!(code, 1, "{answer}");
    let error = answer["data"]["uploads"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("no longer matches its manifest's SHA-256"),
        "{error}"
    );
    assert_eq!(sha256sum(&remote_copy), before);
}
