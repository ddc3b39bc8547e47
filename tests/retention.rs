//! Retention: `backupctl prune` and the rotation after `backupctl run` keep what is young, the
//! newest `min-keep` and the GFS keeps of each backup name, delete the rest with their
//! manifests, and never touch another name's archives or files that are not archives.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use chrono::{Datelike, Local, NaiveDateTime, TimeDelta, Timelike};
use common::{Ctl, TestHome, log_messages};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// `backupctl` without retention settings inherited from the test runner's environment.
fn ctl(t: &TestHome, args: &[&str]) -> Ctl {
    Ctl(t
        .ctl_command(args)
        .env_remove("RETENTION_DAYS")
        .env_remove("MIN_BACKUPS_TO_KEEP")
        .output()
        .unwrap())
}

fn stamp(at: NaiveDateTime) -> String {
    at.format("%Y%m%d_%H%M%S").to_string()
}

/// Writes `<name>_<stamp>.<ext>` (and its manifest unless `manifest` is false); returns the
/// archive's file name.
fn fabricate(dir: &Path, name: &str, at: NaiveDateTime, ext: &str, manifest: bool) -> String {
    let stem = format!("{name}_{}", stamp(at));
    let file = format!("{stem}.{ext}");
    std::fs::write(dir.join(&file), b"not really an archive").unwrap();
    if manifest {
        std::fs::write(dir.join(format!("{stem}.json")), b"{}").unwrap();
    }
    file
}

/// Archives of `name` (with manifests) made the given numbers of days ago, in that order.
fn days_old(dir: &Path, name: &str, days: &[i64]) -> Vec<String> {
    let now = Local::now().naive_local();
    (days.iter())
        .map(|days| fabricate(dir, name, now - TimeDelta::days(*days), "tar.gz", true))
        .collect()
}

/// One fabricated archive and whether it is older than 7 days.
struct Fake {
    file: String,
    old: bool,
}

/// Ten archives of `name`, newest first: `10 - old` of the last hours, then `old` about a
/// month old. Extensions cycle through the three compressions.
fn ten_archives(dir: &Path, name: &str, old: usize) -> Vec<Fake> {
    let now = Local::now().naive_local();
    let exts = ["tar.gz", "tar.zst", "tar"];
    (0..10)
        .map(|i| {
            let is_old = i >= 10 - old;
            let at = if is_old {
                now - TimeDelta::days(30) - TimeDelta::hours(i as i64)
            } else {
                now - TimeDelta::hours(i as i64 + 1)
            };
            Fake {
                file: fabricate(dir, name, at, exts[i % 3], true),
                old: is_old,
            }
        })
        .collect()
}

/// What a policy of `min_keep` (and 7 days) deletes from `fakes` (newest first).
fn expected_deleted(fakes: &[Fake], min_keep: usize) -> BTreeSet<String> {
    fakes
        .iter()
        .enumerate()
        .filter(|(i, f)| *i >= min_keep && f.old)
        .map(|(_, f)| f.file.clone())
        .collect()
}

fn manifest_of(file: &str) -> String {
    let stem = file
        .strip_suffix(".tar.gz")
        .or_else(|| file.strip_suffix(".tar.zst"))
        .or_else(|| file.strip_suffix(".tar"))
        .unwrap();
    format!("{stem}.json")
}

fn dir_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Every archive of `fakes` with its manifest, minus `deleted`.
fn remaining(fakes: &[Fake], deleted: &BTreeSet<String>) -> BTreeSet<String> {
    fakes
        .iter()
        .filter(|f| !deleted.contains(&f.file))
        .flat_map(|f| [f.file.clone(), manifest_of(&f.file)])
        .collect()
}

/// `prune` output: one `Deleting old backup: <file>` per deletion, then the count.
#[track_caller]
fn assert_pruned(stdout: &str, deleted: &BTreeSet<String>) {
    let lines: Vec<&str> = stdout.lines().collect();
    let (last, deletions) = lines.split_last().expect("prune prints something");
    assert_eq!(
        *last,
        format!("Old backups deleted: {}", deleted.len()),
        "{stdout}"
    );
    let named: BTreeSet<String> = deletions
        .iter()
        .map(|l| {
            l.strip_prefix("Deleting old backup: ")
                .unwrap_or_else(|| panic!("unexpected line {l:?} in {stdout}"))
                .to_owned()
        })
        .collect();
    assert_eq!(named.len(), deletions.len(), "each deletion once: {stdout}");
    assert_eq!(&named, deleted, "{stdout}");
}

/// The dry-run block: `[DRY-RUN] Found N old backups that would be deleted:`, one
/// `[DRY-RUN]   - <file>` line each, and `Would delete: N old backups` as the last line.
#[track_caller]
fn assert_dry_block(stdout: &str, deleted: &BTreeSet<String>) {
    let lines: Vec<&str> = stdout.lines().collect();
    let header = format!(
        "[DRY-RUN] Found {} old backups that would be deleted:",
        deleted.len()
    );
    let start = lines
        .iter()
        .position(|l| *l == header)
        .unwrap_or_else(|| panic!("no {header:?} in {stdout}"));
    let listed: BTreeSet<String> = lines[start + 1..]
        .iter()
        .take(deleted.len())
        .map(|l| {
            l.strip_prefix("[DRY-RUN]   - ")
                .unwrap_or_else(|| panic!("unexpected line {l:?} in {stdout}"))
                .to_owned()
        })
        .collect();
    assert_eq!(&listed, deleted, "{stdout}");
    assert_eq!(
        *lines.last().unwrap(),
        format!("Would delete: {} old backups", deleted.len()),
        "{stdout}"
    );
    assert!(
        !stdout.contains("Deleting old backup"),
        "a dry run deletes nothing: {stdout}"
    );
}

fn backup_script_scenario_through_prune(old: usize, deleted_count: usize) {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    let fakes = ten_archives(&backups, "proj", old);
    let deleted = expected_deleted(&fakes, 3);
    assert_eq!(deleted.len(), deleted_count);
    let before = dir_names(&backups);
    assert_eq!(before.len(), 20);

    let dry = ctl(
        &t,
        &[
            "prune",
            "--retention-days",
            "7",
            "--min-keep",
            "3",
            "--dry-run",
        ],
    )
    .ok();
    assert_dry_block(&dry, &deleted);
    assert_eq!(dir_names(&backups), before, "a dry run deletes nothing");

    let out = ctl(&t, &["prune", "--retention-days", "7", "--min-keep", "3"]).ok();
    assert_pruned(&out, &deleted);
    assert_eq!(dir_names(&backups), remaining(&fakes, &deleted));
    let log = log_messages(&t.log());
    for file in &deleted {
        assert!(
            log.contains(&format!("Deleting old backup: {file}")),
            "{log:#?}"
        );
    }

    // A second prune finds nothing more to do.
    assert_pruned(
        &ctl(&t, &["prune", "--retention-days", "7", "--min-keep", "3"]).ok(),
        &BTreeSet::new(),
    );
    assert_eq!(dir_names(&backups), remaining(&fakes, &deleted));
}

#[test]
fn prune_eight_old_of_ten_deletes_seven() {
    backup_script_scenario_through_prune(8, 7);
}

#[test]
fn prune_two_old_of_ten_deletes_both() {
    backup_script_scenario_through_prune(2, 2);
}

#[test]
fn prune_ten_old_of_ten_keeps_the_newest_three() {
    backup_script_scenario_through_prune(10, 7);
}

#[test]
fn the_policy_comes_from_dotenv_the_environment_and_flags() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    let fakes = ten_archives(&backups, "proj", 10);
    let newest = |n: usize| -> BTreeSet<String> {
        fakes[..n]
            .iter()
            .flat_map(|f| [f.file.clone(), manifest_of(&f.file)])
            .collect()
    };
    let files = |range: std::ops::Range<usize>| -> BTreeSet<String> {
        fakes[range].iter().map(|f| f.file.clone()).collect()
    };

    // 60 days: the month-old archives are young.
    std::fs::write(
        t.work().join(".env"),
        "RETENTION_DAYS=60\nMIN_BACKUPS_TO_KEEP=5\n",
    )
    .unwrap();
    assert_pruned(&ctl(&t, &["prune"]).ok(), &BTreeSet::new());
    assert_eq!(dir_names(&backups), newest(10));

    std::fs::write(
        t.work().join(".env"),
        "# retention\nRETENTION_DAYS=7\nMIN_BACKUPS_TO_KEEP=5\n",
    )
    .unwrap();
    assert_pruned(&ctl(&t, &["prune"]).ok(), &files(5..10));
    assert_eq!(dir_names(&backups), newest(5));

    // A flag wins over .env.
    assert_pruned(&ctl(&t, &["prune", "--min-keep", "3"]).ok(), &files(3..5));
    assert_eq!(dir_names(&backups), newest(3));

    // The environment wins over .env.
    let out = Ctl(t
        .ctl_command(&["prune"])
        .env("MIN_BACKUPS_TO_KEEP", "1")
        .env_remove("RETENTION_DAYS")
        .output()
        .unwrap());
    assert_pruned(&out.ok(), &files(1..3));
    assert_eq!(dir_names(&backups), newest(1));
}

#[test]
fn names_are_rotated_apart_and_prune_name_touches_one_name() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let dest = t.work().join("elsewhere");
    std::fs::create_dir(&dest).unwrap();
    let dest_arg = dest.to_str().unwrap();
    // `proj` has 10 month-old archives, `other` 5 and `few` 2; all of `proj` are older.
    let proj = ten_archives(&dest, "proj", 10);
    let now = Local::now().naive_local();
    let other: Vec<String> = (0..5)
        .map(|i| {
            fabricate(
                &dest,
                "other",
                now - TimeDelta::days(20) - TimeDelta::minutes(i),
                "tar.gz",
                true,
            )
        })
        .collect();
    let few: Vec<String> = (0..2)
        .map(|i| {
            fabricate(
                &dest,
                "few",
                now - TimeDelta::days(90) - TimeDelta::minutes(i),
                "tar.gz",
                true,
            )
        })
        .collect();
    let with_manifests = |files: &[String]| -> BTreeSet<String> {
        files
            .iter()
            .flat_map(|f| [f.clone(), manifest_of(f)])
            .collect()
    };
    // The default backups folder is not this one: pruning it changes nothing here.
    assert_pruned(&ctl(&t, &["prune"]).ok(), &BTreeSet::new());
    assert_eq!(dir_names(&dest).len(), 34);

    let proj_deleted = expected_deleted(&proj, 3);
    let out = ctl(&t, &["prune", "--destination", dest_arg, "--name", "proj"]).ok();
    assert_pruned(&out, &proj_deleted);
    let mut expected = remaining(&proj, &proj_deleted);
    expected.extend(with_manifests(&other));
    expected.extend(with_manifests(&few));
    assert_eq!(dir_names(&dest), expected, "only proj was pruned");

    // All names: `other` keeps its own newest 3 (not pushed out by `proj`'s), and `few` keeps
    // both of its archives although they are the oldest in the folder.
    let out = ctl(&t, &["prune", "--destination", dest_arg]).ok();
    let other_deleted: BTreeSet<String> = other[3..].iter().cloned().collect();
    assert_pruned(&out, &other_deleted);
    let mut expected = remaining(&proj, &proj_deleted);
    expected.extend(with_manifests(&other[..3]));
    expected.extend(with_manifests(&few));
    assert_eq!(dir_names(&dest), expected);
}

/// Stores the schedule `name` of the folder `source`, keeping a year (and at least one).
fn create_yearly(t: &TestHome, name: &str, source: &str) {
    ctl(
        t,
        &[
            "create",
            "--name",
            name,
            "--source",
            source,
            "--daily",
            "03:00",
            "--retention-days",
            "365",
            "--min-keep",
            "1",
        ],
    )
    .ok();
}

#[test]
fn prune_keeps_what_each_name_s_schedule_keeps_unless_told_otherwise() {
    // `prune` took the defaults (7 days, 3 kept) for every name: a schedule keeping a year of
    // archives lost all but three to a bare `prune`.
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    create_yearly(&t, "yearly", "src");
    let backups = t.home().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let yearly = days_old(&backups, "yearly", &[10, 40, 70, 100]);
    let other = days_old(&backups, "other", &[10, 40, 70, 100]);
    let deleted = |files: &[String]| -> BTreeSet<String> { files.iter().cloned().collect() };

    // `other` has no schedule: the defaults keep its newest 3.
    let out = ctl(&t, &["prune"]).ok();
    assert_pruned(&out, &deleted(&other[3..]));
    let out = ctl(&t, &["prune", "--name", "yearly"]).ok();
    assert_pruned(&out, &BTreeSet::new());
    // A policy given wins over the schedule's.
    let out = ctl(
        &t,
        &[
            "prune",
            "--name",
            "yearly",
            "--retention-days",
            "30",
            "--min-keep",
            "1",
        ],
    )
    .ok();
    assert_pruned(&out, &deleted(&yearly[1..]));
}

#[test]
fn a_one_off_run_of_a_schedule_s_name_keeps_what_the_schedule_keeps() {
    // Its rotation took the defaults: `run --sources ~/docs` deleted all but three of the
    // archives the schedule `docs` keeps for a year.
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let src = t.work().join("docs");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    create_yearly(&t, "docs", "docs");
    let backups = t.home().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let planted = days_old(&backups, "docs", &[10, 40, 70, 100, 130]);
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--json", "run", "--sources", "docs"];
        args.extend_from_slice(extra);
        serde_json::from_str(&ctl(&t, &args).ok()).unwrap()
    };
    let deleted = |answer: &serde_json::Value| answer["data"]["old_backups_deleted"].clone();
    // A dry run says so, and would delete nothing.
    let answer = run(&["--dry-run"]);
    assert_eq!(answer["data"]["retention_days"], 365, "{answer}");
    assert_eq!(deleted(&answer), 0, "{answer}");
    // Named after the folder, as the schedule names them.
    let answer = run(&[]);
    assert_eq!(deleted(&answer), 0, "{answer}");
    assert!(planted.iter().all(|f| backups.join(f).exists()));
    // A policy given wins.
    let answer = run(&["--retention-days", "30", "--min-keep", "1"]);
    assert_eq!(deleted(&answer), 4, "{answer}");
    assert!(backups.join(&planted[0]).exists());
}

#[test]
fn files_that_are_not_archives_are_never_touched() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    let fakes = ten_archives(&backups, "proj", 10);
    let strangers = [
        "notes.txt",
        "proj_latest.tar.gz",
        "proj_latest.json",
        "proj_20200101_000000.txt",
        "proj_20200101_000000.tar.gz.bak",
        "proj_2020_old.tar.gz",
        "proj_20201399_250000.tar.gz",
    ];
    for stranger in strangers {
        std::fs::write(backups.join(stranger), b"keep me").unwrap();
    }
    std::fs::create_dir(backups.join("proj_20200101_000000.d")).unwrap();
    let deleted = expected_deleted(&fakes, 3);
    let out = ctl(&t, &["prune", "--retention-days", "7", "--min-keep", "3"]).ok();
    assert_pruned(&out, &deleted);
    let mut expected = remaining(&fakes, &deleted);
    expected.extend(strangers.iter().map(|s| s.to_string()));
    expected.insert("proj_20200101_000000.d".to_owned());
    assert_eq!(dir_names(&backups), expected);
    for stranger in strangers {
        assert_eq!(std::fs::read(backups.join(stranger)).unwrap(), b"keep me");
    }
}

#[test]
fn a_missing_manifest_is_not_an_error() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    let fakes = ten_archives(&backups, "proj", 10);
    // Two archives that go and one that stays have no manifest.
    for fake in [&fakes[1], &fakes[5], &fakes[9]] {
        std::fs::remove_file(backups.join(manifest_of(&fake.file))).unwrap();
    }
    let deleted = expected_deleted(&fakes, 3);
    let out = ctl(&t, &["prune", "--retention-days", "7", "--min-keep", "3"]);
    assert_eq!(out.stderr(), "");
    assert_pruned(&out.ok(), &deleted);
    let mut expected = remaining(&fakes, &deleted);
    expected.remove(&manifest_of(&fakes[1].file));
    assert_eq!(dir_names(&backups), expected);
    let log = log_messages(&t.log());
    assert!(!log.iter().any(|l| l.starts_with("Error: ")), "{log:#?}");
}

#[test]
fn gfs_keep_daily_keeps_the_newest_of_each_of_the_last_days() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    let today = Local::now().date_naive();
    // Three archives on each of the five days before today, newest first.
    let mut files = Vec::new();
    for days_ago in 1..=5u64 {
        let day = today - chrono::Days::new(days_ago);
        for hour in [16, 12, 8] {
            let at = day.and_hms_opt(hour, 0, 0).unwrap();
            files.push((
                days_ago,
                hour,
                fabricate(&backups, "gfs", at, "tar.gz", true),
            ));
        }
    }
    // Everything is old (0 days). Kept: the newest of each of the last 3 days that have
    // archives (days 1, 2, 3 at 16:00), and the newest 2 overall (adds day 1 at 12:00).
    let kept: BTreeSet<String> = files
        .iter()
        .filter(|(d, h, _)| (*d <= 3 && *h == 16) || (*d == 1 && *h == 12))
        .map(|(_, _, f)| f.clone())
        .collect();
    assert_eq!(kept.len(), 4);
    let deleted: BTreeSet<String> = files
        .iter()
        .map(|(_, _, f)| f.clone())
        .filter(|f| !kept.contains(f))
        .collect();
    let policy = [
        "prune",
        "--retention-days",
        "0",
        "--min-keep",
        "2",
        "--keep-daily",
        "3",
    ];
    let mut dry = policy.to_vec();
    dry.push("--dry-run");
    assert_dry_block(&ctl(&t, &dry).ok(), &deleted);
    assert_eq!(dir_names(&backups).len(), 30);

    assert_pruned(&ctl(&t, &policy).ok(), &deleted);
    let expected: BTreeSet<String> = kept
        .iter()
        .flat_map(|f| [f.clone(), manifest_of(f)])
        .collect();
    assert_eq!(dir_names(&backups), expected);
}

#[test]
fn a_run_rotates_its_own_name_and_never_deletes_the_new_archive() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("proj")).unwrap();
    std::fs::write(t.work().join("proj/a.txt"), b"data\n").unwrap();
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    let fakes = ten_archives(&backups, "proj", 10);
    let others = ten_archives(&backups, "other", 10);
    let deleted = expected_deleted(&fakes, 3);
    assert_eq!(deleted.len(), 7);
    let before = dir_names(&backups);

    // Dry run: the would-be deletions are listed, nothing is written or deleted.
    let dry = ctl(&t, &["run", "--sources", "proj", "--dry-run"]).ok();
    assert_dry_block(&dry, &deleted);
    let lines: Vec<&str> = dry.lines().collect();
    assert_eq!(
        lines[lines.len() - 2..],
        ["Would create: 1 backups", "Would delete: 7 old backups"],
        "{dry}"
    );
    assert_eq!(dir_names(&backups), before);

    let out = ctl(&t, &["run", "--sources", "proj"]).ok();
    assert!(
        out.contains("\nFailed: 0\nOld backups deleted: 7\nTotal backup size: "),
        "{out}"
    );
    let now = dir_names(&backups);
    let new: Vec<&String> = now.difference(&before).collect();
    assert_eq!(new.len(), 2, "the new archive and its manifest: {new:?}");
    let new_archive = new.iter().find(|f| f.ends_with(".tar.gz")).unwrap();
    assert!(new_archive.starts_with("proj_"));
    let mut expected = remaining(&fakes, &deleted);
    expected.extend(remaining(&others, &BTreeSet::new()));
    expected.extend(new.iter().map(|f| f.to_string()));
    assert_eq!(now, expected, "3 old + 1 new of proj, all of other");
    assert_eq!(
        now.iter()
            .filter(|f| f.starts_with("proj_") && !f.ends_with(".json"))
            .count(),
        4
    );

    let log = log_messages(&t.log());
    for file in &deleted {
        assert!(
            log.contains(&format!("Deleting old backup: {file}")),
            "{log:#?}"
        );
    }
    let failed = log.iter().rposition(|l| l == "Failed: 0").unwrap();
    assert_eq!(log[failed + 1], "Old backups deleted: 7", "{log:#?}");
    assert!(
        log[failed + 2].starts_with("Total backup size: "),
        "{log:#?}"
    );

    // The next run considers only what existed before it (the first run's archive and 3 old
    // ones): the newest 3 of those stay, so one old archive goes, and the new one stays.
    let out = ctl(&t, &["run", "--sources", "proj"]).ok();
    assert!(out.contains("\nOld backups deleted: 1\n"), "{out}");
    let proj_archives: Vec<String> = dir_names(&backups)
        .into_iter()
        .filter(|f| f.starts_with("proj_") && !f.ends_with(".json"))
        .collect();
    assert_eq!(proj_archives.len(), 4, "{proj_archives:?}");
    assert!(proj_archives.contains(new_archive));
}

#[test]
fn gfs_keep_last_weekly_and_monthly() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    let today = Local::now().date_naive();
    let noon = |day: chrono::NaiveDate| day.and_hms_opt(12, 0, 0).unwrap();

    // Monthly: the 5th and the 20th of each of the six months before this one.
    let first = today.with_day(1).unwrap();
    let mut monthly = Vec::new();
    for months_ago in 1..=6u32 {
        let month = first - chrono::Months::new(months_ago);
        for day in [20, 5] {
            let at = noon(month.with_day(day).unwrap());
            monthly.push((
                months_ago,
                day,
                fabricate(&backups, "m", at, "tar.gz", true),
            ));
        }
    }
    // Kept: the newest of each of the last 3 months (the 20ths) and the last 2 overall
    // (adds the 5th of last month).
    let kept_monthly: BTreeSet<String> = monthly
        .iter()
        .filter(|(m, d, _)| (*m <= 3 && *d == 20) || *m == 1)
        .map(|(_, _, f)| f.clone())
        .collect();
    assert_eq!(kept_monthly.len(), 4);

    // Weekly: Tuesday and Thursday of each of the four ISO weeks before this one.
    let monday = today - chrono::Days::new(u64::from(today.weekday().num_days_from_monday()));
    let mut weekly = Vec::new();
    for weeks_ago in 1..=4u64 {
        let week = monday - chrono::Days::new(7 * weeks_ago);
        for offset in [3, 1] {
            let at = noon(week + chrono::Days::new(offset));
            weekly.push((
                weeks_ago,
                offset,
                fabricate(&backups, "w", at, "tar.gz", true),
            ));
        }
    }
    // Kept: the Thursdays of the last 2 weeks; min-keep 1 adds nothing.
    let kept_weekly: BTreeSet<String> = weekly
        .iter()
        .filter(|(w, o, _)| *w <= 2 && *o == 3)
        .map(|(_, _, f)| f.clone())
        .collect();
    assert_eq!(kept_weekly.len(), 2);

    fn deleted<A, B>(all: &[(A, B, String)], kept: &BTreeSet<String>) -> BTreeSet<String> {
        all.iter()
            .map(|(_, _, f)| f.clone())
            .filter(|f| !kept.contains(f))
            .collect()
    }
    let out = ctl(
        &t,
        &[
            "prune",
            "--name",
            "m",
            "--retention-days",
            "0",
            "--min-keep",
            "1",
            "--keep-last",
            "2",
            "--keep-monthly",
            "3",
        ],
    )
    .ok();
    assert_pruned(&out, &deleted(&monthly, &kept_monthly));
    let out = ctl(
        &t,
        &[
            "prune",
            "--name",
            "w",
            "--retention-days",
            "0",
            "--min-keep",
            "1",
            "--keep-weekly",
            "2",
        ],
    )
    .ok();
    assert_pruned(&out, &deleted(&weekly, &kept_weekly));
    let expected: BTreeSet<String> = kept_monthly
        .iter()
        .chain(&kept_weekly)
        .flat_map(|f| [f.clone(), manifest_of(f)])
        .collect();
    assert_eq!(dir_names(&backups), expected);
}

#[test]
fn a_runs_rotation_never_deletes_what_a_concurrent_run_just_wrote() {
    let t = TestHome::new();
    let big = common::sparse_source(&t, "big", 512 << 20);
    std::fs::create_dir(t.work().join("small")).unwrap();
    std::fs::write(t.work().join("small/f"), b"x").unwrap();
    let _daemon = t.spawn_daemon(&["--max-jobs", "2"]);
    common::wait_until_answering(&t.socket());
    let keep_nothing = serde_json::json!({"days": 0, "min_keep": 0});

    // A: slow, under the name X; B: quick, same name, written while A still runs.
    let mut slow = common::Client::connect(&t.socket()).unwrap();
    let request = serde_json::json!({
        "cmd": "run", "sources": [big], "name": "X", "retention": keep_nothing
    });
    slow.send_bytes(format!("{request}\n").as_bytes());
    let backups = t.home().join("backups");
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while !std::fs::read_dir(&backups).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    }) {
        assert!(std::time::Instant::now() < deadline, "A never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = t.ctl(&[
        "run",
        "--sources",
        "small",
        "--name",
        "X",
        "--retention-days",
        "0",
        "--min-keep",
        "0",
    ]);
    out.ok();
    let b_archive = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .expect("B's archive");

    let answer = slow.read_response();
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["data"]["old_backups_deleted"], 0, "{answer}");
    assert!(
        b_archive.exists(),
        "A's rotation left B's new archive alone"
    );
}

/// Sends a `run` request for `source` under `name` that keeps nothing, without waiting for
/// its answer.
fn start_keep_nothing_run(t: &TestHome, source: &Path, name: &str) -> common::Client {
    let mut client = common::Client::connect(&t.socket()).unwrap();
    let request = serde_json::json!({
        "cmd": "run", "sources": [source], "name": name,
        "retention": {"days": 0, "min_keep": 0}
    });
    client.send_bytes(format!("{request}\n").as_bytes());
    client
}

fn partials(dir: &Path) -> usize {
    dir_names(dir)
        .iter()
        .filter(|f| f.ends_with(".partial"))
        .count()
}

#[test]
fn a_runs_rotation_never_deletes_a_newer_archive_under_a_name_it_saw_before() {
    let t = TestHome::new();
    let slow_a = common::sparse_source(&t, "slow_a", 1 << 30);
    let slow_b = common::sparse_source(&t, "slow_b", 1 << 30);
    std::fs::create_dir(t.work().join("small")).unwrap();
    std::fs::write(t.work().join("small/f"), b"x").unwrap();
    let _daemon = t.spawn_daemon(&["--max-jobs", "3"]);
    common::wait_until_answering(&t.socket());
    let backups = t.home().join("backups");

    // Archives of X named for this second and the next nine: the two slow runs see them
    // before they write (and, pushed past them, name their own archives later still).
    let first = Local::now().naive_local().with_nanosecond(0).unwrap();
    let seen: Vec<String> = (0..10)
        .map(|s| fabricate(&backups, "X", first + TimeDelta::seconds(s), "tar.gz", true))
        .collect();
    // One after the other: two runs of a name started at the same instant can claim the same
    // file name, and the engine does not retry when creating the partial then fails.
    let mut slow = Vec::new();
    for (source, running) in [(&slow_a, 1), (&slow_b, 2)] {
        slow.push(start_keep_nothing_run(&t, source, "X"));
        let deadline = std::time::Instant::now() + common::PATIENCE;
        while partials(&backups) < running {
            assert!(
                std::time::Instant::now() < deadline,
                "slow run {running} never started: {:?}\n{}",
                dir_names(&backups),
                t.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    // The names are freed (as another rotation would), then a third run reuses one of them.
    for file in &seen {
        std::fs::remove_file(backups.join(file)).unwrap();
        std::fs::remove_file(backups.join(manifest_of(file))).unwrap();
    }
    ctl(&t, &["run", "--sources", "small", "--name", "X"]).ok();
    let reused: Vec<String> = dir_names(&backups)
        .into_iter()
        .filter(|f| f.ends_with(".tar.gz"))
        .collect();
    assert_eq!(reused.len(), 1, "{reused:?}");
    let reused = &reused[0];
    assert!(
        seen.contains(reused),
        "the third run took {reused}, not a freed name: the machine is too slow for this test"
    );
    assert_eq!(
        partials(&backups),
        2,
        "the slow runs ended before the third: make their sources larger"
    );

    // Both slow runs keep nothing of what they saw, and the third run's archive is older than
    // theirs and under a name they saw; but it is not the file they saw: it stays, with its
    // manifest, and verifies.
    for client in &mut slow {
        let answer = client.read_response();
        assert_eq!(answer["ok"], true, "{answer}");
        assert_eq!(answer["data"]["old_backups_deleted"], 0, "{answer}");
    }
    assert!(backups.join(reused).exists(), "{:?}", dir_names(&backups));
    assert!(backups.join(manifest_of(reused)).exists());
    t.ctl(&["verify", reused]).ok();
}

#[test]
fn a_decompressed_copy_counts_with_its_archive_and_never_takes_its_manifest() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("proj")).unwrap();
    std::fs::write(t.work().join("proj/a.txt"), b"data\n").unwrap();
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    let now = Local::now().naive_local();
    let older: Vec<String> = [1, 2]
        .map(|days| {
            fabricate(
                &backups,
                "proj",
                now - TimeDelta::days(days),
                "tar.gz",
                true,
            )
        })
        .into();
    ctl(&t, &["run", "--sources", "proj"]).ok();
    let archive = dir_names(&backups)
        .into_iter()
        .find(|f| f.ends_with(".tar.gz") && !older.contains(f))
        .unwrap();
    // What a user gets from `gunzip -k` in the backups folder: same stem, same manifest name.
    let gunzip = std::process::Command::new("gunzip")
        .arg("-k")
        .arg(backups.join(&archive))
        .status()
        .unwrap();
    assert!(gunzip.success());
    let copy = archive.strip_suffix(".gz").unwrap().to_owned();

    let out = ctl(&t, &["verify", &copy]);
    assert_ne!(out.code(), 0);
    assert!(
        out.stdout()
            .contains(&format!("is that of {archive}, not of")),
        "{}",
        out.stdout()
    );
    assert!(ctl(&t, &["verify", &archive]).ok().contains("OK"));

    // Two backups kept: the new one (both its files) and the newer fabricated one.
    let out = ctl(&t, &["prune", "--retention-days", "0", "--min-keep", "2"]).ok();
    assert_pruned(&out, &BTreeSet::from([older[1].clone()]));
    let manifest = manifest_of(&archive);
    let mut expected = BTreeSet::from([archive.clone(), copy.clone(), manifest.clone()]);
    expected.extend([older[0].clone(), manifest_of(&older[0])]);
    assert_eq!(dir_names(&backups), expected);
}

#[test]
fn a_new_backup_is_named_after_every_backup_of_its_name_so_rotation_keeps_it() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("proj")).unwrap();
    std::fs::write(t.work().join("proj/a.txt"), b"data\n").unwrap();
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    // A backup dated after now: written before the clock was set back, or in a second that
    // a rotation freed since (rapid runs with --retention-days 0).
    let later = Local::now().naive_local() + TimeDelta::hours(2);
    let dated_later = fabricate(&backups, "proj", later, "tar.gz", true);

    let out = ctl(&t, &["run", "--sources", "proj"]).ok();
    let new_archive = dir_names(&backups)
        .into_iter()
        .find(|f| f.starts_with("proj_") && f.ends_with(".tar.gz") && *f != dated_later)
        .unwrap();
    let one_second_after = format!("proj_{}.tar.gz", stamp(later + TimeDelta::seconds(1)));
    assert_eq!(new_archive, one_second_after, "{out}");
    assert!(
        log_messages(&t.log())
            .iter()
            .any(|line| line.contains(&format!(
                "a backup of it in {} is dated {} (was the clock set back?)",
                backups.display(),
                stamp(later)
            ))),
        "{}",
        t.log()
    );

    // So the newest backup is the one `min-keep` keeps (the other, dated ahead of the
    // clock, counts as young).
    ctl(&t, &["prune", "--retention-days", "0", "--min-keep", "1"]).ok();
    assert!(dir_names(&backups).contains(&new_archive));
}

#[test]
fn a_rotation_that_cannot_delete_says_so_in_the_runs_report() {
    // It was in the daemon's log only: the run said `Old backups deleted: 0` and nothing else
    // while the destination kept filling.
    let t = TestHome::new();
    let backups = t.home().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    std::fs::create_dir_all(t.work().join("docs")).unwrap();
    std::fs::write(t.work().join("docs/a.txt"), b"a\n").unwrap();
    let old = fabricate(
        &backups,
        "docs",
        Local::now().naive_local() - TimeDelta::days(30),
        "tar.gz",
        true,
    );
    // An immutable file: not even root may delete it (where the file system has the flag).
    let immutable = std::process::Command::new("chattr")
        .arg("+i")
        .arg(backups.join(&old))
        .status()
        .is_ok_and(|s| s.success());
    if !immutable {
        assert!(
            std::env::var("CI").as_deref() != Ok("true") || !cfg!(target_os = "linux"),
            "chattr +i failed in CI"
        );
        eprintln!("skipped: chattr +i is not available here");
        return;
    }
    let _daemon = t.start_daemon();
    let out = ctl(
        &t,
        &[
            "run",
            "--sources",
            "docs",
            "--retention-days",
            "0",
            "--min-keep",
            "0",
        ],
    );
    let _ = std::process::Command::new("chattr")
        .arg("-i")
        .arg(backups.join(&old))
        .status();
    let stdout = out.stdout();
    assert_eq!(out.code(), 0, "{stdout}{}", out.stderr());
    assert!(
        stdout.contains(&format!("can't delete old backup {old}: ")),
        "{stdout}"
    );
}

#[test]
fn folders_named_in_another_script_are_not_rotated_as_one_name() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let photos = t.work().join("照片");
    let documents = t.work().join("文档");
    for (dir, file) in [(&photos, "p.jpg"), (&documents, "t.pdf")] {
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join(file), file).unwrap();
    }
    let photos_archive = common::run_for_archive(&t, &["--sources", photos.to_str().unwrap()]);
    // A policy that keeps nothing old: it would delete every other archive of its name.
    let documents_archive = common::run_for_archive(
        &t,
        &[
            "--sources",
            documents.to_str().unwrap(),
            "--retention-days",
            "0",
            "--min-keep",
            "0",
        ],
    );
    assert!(photos_archive.exists(), "{}", photos_archive.display());
    assert!(documents_archive.exists());
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name(&photos_archive).starts_with("__-7b50017a_"),
        "{photos_archive:?}"
    );

    // `..` is the folder it names, not `backup`.
    let nested = t.work().join("photos_again").join("sub");
    std::fs::create_dir_all(&nested).unwrap();
    let up = format!("{}/..", nested.display());
    let archive = common::run_for_archive(&t, &["--sources", &up]);
    assert!(name(&archive).starts_with("photos_again_"), "{archive:?}");
}

/// `DIR/data` holding one file, under the test's work folder.
fn data_folder(t: &TestHome, parent: &str) -> std::path::PathBuf {
    let dir = t.work().join(parent).join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{parent}.txt")), parent).unwrap();
    dir
}

#[test]
fn a_folder_of_the_same_name_elsewhere_never_rotates_the_first_folder_s_backups() {
    // `run --sources /a/data` and `run --sources /b/data` both named their archives `data`:
    // the second run's rotation took the first folder's backups for its own and deleted them.
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let a = data_folder(&t, "a");
    let b = data_folder(&t, "b");
    let (a_path, b_path) = (a.to_str().unwrap(), b.to_str().unwrap());
    let backups = t.home().join("backups");
    let first = common::run_for_archive(&t, &["--sources", a_path]);
    let before = dir_names(&backups);
    let keep_nothing = ["--retention-days", "0", "--min-keep", "0"];

    // Refused before anything is written, saying why and what to do.
    let mut args = vec!["run", "--sources", b_path];
    args.extend_from_slice(&keep_nothing);
    let refused = ctl(&t, &args);
    assert_eq!(refused.code(), 1, "{refused:?}");
    let expected = format!(
        "the archives named \"data\" in {} are backups of {a_path}, not {b_path}, and this \
         run's rotation would delete them as its own older archives: give it a name of its \
         own (--name b-data), or --name data if {a_path} is now {b_path}",
        backups.display()
    );
    assert!(refused.stderr().contains(&expected), "{refused:?}");
    assert_eq!(dir_names(&backups), before);
    assert!(first.exists());
    let (code, answer) = common::run_json(&t, &["--sources", b_path, "--dry-run"]);
    assert_eq!((code, &answer["error"]["code"]), (1, &"name_in_use".into()));
    assert!(
        t.log().contains(&format!("Backup can't run: {expected}")),
        "the refusal is logged and told as a run that could not start"
    );

    // The name it suggests is free; a policy that keeps nothing leaves `data` alone.
    let mut args = vec!["--sources", b_path, "--name", "b-data"];
    args.extend_from_slice(&keep_nothing);
    common::run_for_archive(&t, &args);
    assert!(first.exists());

    // The first folder under other spellings is the same folder: its set carries on.
    std::fs::create_dir(t.work().join("a/sub")).unwrap();
    std::os::unix::fs::symlink(t.work().join("a"), t.work().join("alias")).unwrap();
    let via_dots = format!("{}/a/sub/../data", t.work().display());
    let via_link = format!("{}/alias/data", t.work().display());
    for spelling in [&via_dots, &via_link] {
        let archive = common::run_for_archive(&t, &["--sources", spelling]);
        assert!(first_name_is(&archive, "data_"), "{archive:?}");
    }

    // A folder moved elsewhere takes the set over with --name: after that its runs go on
    // under the folder's name, and the old folder's are the ones refused.
    common::run_for_archive(&t, &["--sources", b_path, "--name", "data"]);
    common::run_for_archive(&t, &["--sources", b_path]);
    let (code, answer) = common::run_json(&t, &["--sources", a_path]);
    assert_eq!((code, &answer["error"]["code"]), (1, &"name_in_use".into()));
    assert!(first.exists(), "{:?}", dir_names(&backups));
}

#[test]
fn a_folder_named_as_a_schedule_writing_there_from_elsewhere_is_refused() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let a = data_folder(&t, "a");
    let b = data_folder(&t, "b");
    create_yearly(&t, "data", a.to_str().unwrap());
    let refused = ctl(&t, &["run", "--sources", b.to_str().unwrap()]);
    assert_eq!(refused.code(), 1, "{refused:?}");
    let expected = format!(
        "schedule \"data\" writes archives named \"data\" into {}, from {}, not {}, and this \
         run's rotation would delete them as its own older archives: give it a name of its \
         own (--name b-data)\n",
        t.home().join("backups").display(),
        a.display(),
        b.display()
    );
    assert!(refused.stderr().contains(&expected), "{refused:?}");
    // Its own folder, and another destination, are the schedule's business no more.
    common::run_for_archive(&t, &["--sources", a.to_str().unwrap()]);
    let elsewhere = t.work().join("elsewhere");
    let other = common::run_for_archive(
        &t,
        &[
            "--sources",
            b.to_str().unwrap(),
            "--destination",
            elsewhere.to_str().unwrap(),
        ],
    );
    assert!(other.starts_with(&elsewhere));
}

fn first_name_is(archive: &Path, prefix: &str) -> bool {
    (archive.file_name().and_then(|n| n.to_str())).is_some_and(|n| n.starts_with(prefix))
}

#[test]
fn a_new_schedule_never_takes_another_folder_s_backups_for_its_own() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let a = data_folder(&t, "a");
    let b = data_folder(&t, "b");
    let first = common::run_for_archive(&t, &["--sources", a.to_str().unwrap()]);
    let create = |source: &Path, extra: &[&str]| {
        let mut args = vec![
            "create",
            "--name",
            "data",
            "--source",
            source.to_str().unwrap(),
        ];
        args.extend_from_slice(&["--daily", "03:00"]);
        args.extend_from_slice(extra);
        ctl(&t, &args)
    };
    let refused = create(&b, &[]);
    assert_eq!(refused.code(), 1, "{refused:?}");
    let (a, b) = (a.display(), b.display());
    let expected = format!(
        "the archives named \"data\" in {} are backups of {a}, not {b}, and schedule \"data\"'s \
         rotation would delete them as its own older archives: give it another name, or, if \
         {a} is now {b}, back it up once with run --name data --sources {b} first\n",
        t.home().join("backups").display(),
    );
    assert!(refused.stderr().contains(&expected), "{refused:?}");
    assert_eq!(ctl(&t, &["list"]).ok(), "", "nothing was stored");

    // The folder's own schedule carries its set on, and so does a new definition of it.
    create(Path::new(&a.to_string()), &[]).ok();
    create(Path::new(&b.to_string()), &["--replace"]).ok();
    assert!(first.exists());
}

#[test]
fn a_run_of_another_folder_that_wrote_while_this_one_waited_is_not_rotated() {
    // Both runs were planned into an empty destination; the first waited in its before
    // hook while the second wrote, then rotated the second folder's only backup away.
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let a = data_folder(&t, "a");
    let b = data_folder(&t, "b");
    let (waiting, go) = (t.work().join("waiting"), t.work().join("go"));
    let hook = format!(
        "sh -c 'touch {}; while [ ! -e {} ]; do sleep 0.05; done'",
        waiting.display(),
        go.display()
    );
    let first = t
        .ctl_command(&["--json", "run", "--sources", a.to_str().unwrap()])
        .args([
            "--before",
            &hook,
            "--retention-days",
            "0",
            "--min-keep",
            "0",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for(Duration::from_secs(60), "the first run's hook", || {
        waiting.exists().then_some(())
    });
    let second = common::run_for_archive(&t, &["--sources", b.to_str().unwrap()]);
    std::fs::write(&go, b"").unwrap();
    let out = first.wait_with_output().unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{answer}");
    let error = answer["data"]["sources"][0]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "the archives named \"data\" in {} are backups of {}, not {}",
            t.home().join("backups").display(),
            b.display(),
            a.display()
        )),
        "{error}"
    );
    assert!(second.exists());
    assert_eq!(
        answer["data"]["sources"][0]["archive"],
        serde_json::Value::Null
    );
}

#[test]
fn a_rule_a_job_adds_keeps_the_configured_others() {
    // `--keep-last 1` replaced the whole `[defaults] retention`: its `days = 30` fell back to
    // 7, and the run deleted archives 12-25 days old that the configuration keeps.
    let t = TestHome::new();
    std::fs::create_dir_all(t.home()).unwrap();
    std::fs::write(
        t.home().join("backupd.toml"),
        "[defaults]\nretention = { days = 30, min_keep = 1 }\n",
    )
    .unwrap();
    let _daemon = t.start_daemon();
    let src = t.work().join("docs");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    let backups = t.home().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let planted = days_old(&backups, "docs", &[12, 15, 20, 25, 40]);
    let prune = ctl(&t, &["prune", "--dry-run", "--keep-last", "1"]).ok();
    assert_dry_block(&prune, &[planted[4].clone()].into());
    let (code, answer) = common::run_json(&t, &["--sources", "docs", "--keep-last", "1"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"]["retention_days"], 30, "{answer}");
    assert_eq!(
        answer["data"]["sources"][0]["deleted"],
        serde_json::json!([planted[4]]),
        "{answer}"
    );
    assert!(planted[..4].iter().all(|f| backups.join(f).exists()));
}

#[test]
fn a_run_named_after_its_folder_never_rotates_another_folder_s_archive_under_its_name() {
    // Two runs that wrote at once each passed the check before the other's archive existed;
    // the name then held both folders' backups, and the next run deleted the other's.
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let a = data_folder(&t, "a");
    let b = data_folder(&t, "b");
    let theirs = common::run_for_archive(&t, &["--sources", b.to_str().unwrap()]);
    // Taken over by name, as a moved folder carries its set on: the name now holds both.
    let (a_path, keep_nothing) = (
        a.to_str().unwrap(),
        ["--retention-days", "0", "--min-keep", "0"],
    );
    let first = common::run_for_archive(&t, &["--sources", a_path, "--name", "data"]);
    assert!(theirs.exists());
    let mut args = vec!["--sources", a_path];
    args.extend_from_slice(&keep_nothing);
    let (code, answer) = common::run_json(&t, &args);
    assert_eq!(code, 0, "{answer}");
    let deleted = &answer["data"]["sources"][0]["deleted"];
    assert_eq!(deleted, &serde_json::json!([file_of(&first)]), "{answer}");
    assert!(theirs.exists(), "{answer}");
}

fn file_of(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_owned()
}
