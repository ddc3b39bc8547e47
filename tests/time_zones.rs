//! A client in another time zone than the daemon's: `list` says which clock a schedule's
//! times are on, and when a one-shot is due on the client's.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use chrono::{TimeDelta, Utc};
use common::{Ctl, TestHome, wait_until_answering};

/// Newfoundland: UTC-03:30 in November, a zone no test machine is in by chance.
const DAEMON_ZONE: &str = "America/St_Johns";

fn ctl_in(t: &TestHome, zone: &str, args: &[&str]) -> Ctl {
    Ctl(t.ctl_command(args).env("TZ", zone).output().unwrap())
}

#[test]
fn list_says_whose_clock_a_schedule_is_on() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    let _daemon = t.spawn_daemon_via(&["env", &format!("TZ={DAEMON_ZONE}")], &[]);
    wait_until_answering(&t.socket());

    // A one-shot twelve hours ahead on the daemon's clock, as the schedule manager takes it.
    let due = Utc::now() + TimeDelta::hours(12);
    let there = due.with_timezone(&offset_of(DAEMON_ZONE, due));
    let spec = format!("{};{};late", src.display(), there.format("%H:%M"));
    ctl_in(&t, DAEMON_ZONE, &["create", &spec]).ok();
    ctl_in(
        &t,
        DAEMON_ZONE,
        &[
            "create",
            "--source",
            src.to_str().unwrap(),
            "--name",
            "d",
            "--daily",
            "02:00",
        ],
    )
    .ok();

    // On the daemon's clock the lines are as they always were.
    let same = ctl_in(&t, DAEMON_ZONE, &["list"]).ok();
    let lines: Vec<&str> = same.lines().collect();
    assert!(!lines[0].contains(" here)"), "{same}");
    assert!(!lines[1].contains("backupd's"), "{same}");

    // On UTC's, the one-shot says when it is due there, and the daily whose clock it is on.
    let utc = ctl_in(&t, "UTC", &["list"]).ok();
    let lines: Vec<&str> = utc.lines().collect();
    let due_in_utc = due.format("%d/%m/%Y %H:%M").to_string();
    assert!(
        lines[0].ends_with(&format!(";late (due {due_in_utc} here)")),
        "{utc}"
    );
    assert!(
        lines[1].ends_with("; its times are backupd's, UTC-03:30)"),
        "{utc}"
    );
}

/// The offset of `zone` at `at`, from the system's zone data (as the daemon finds it).
fn offset_of(zone: &str, at: chrono::DateTime<Utc>) -> chrono::FixedOffset {
    let out = std::process::Command::new("date")
        .env("TZ", zone)
        .args(["-d", &format!("@{}", at.timestamp()), "+%z"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let text = text.trim();
    let sign = if text.starts_with('-') { -1 } else { 1 };
    let hours: i32 = text[1..3].parse().unwrap();
    let minutes: i32 = text[3..5].parse().unwrap();
    chrono::FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).unwrap()
}

#[test]
fn a_backup_of_a_minute_ago_stays_young_when_the_daemon_s_zone_moves_east() {
    // A laptop flown east, a container given a `TZ`: archive names are local time, so under
    // UTC+14 a backup made under UTC-12 a minute ago is named 26 hours back, and a one-day
    // retention deleted it.
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "f").unwrap();
    let src = src.to_str().unwrap();
    let mut west = t.spawn_daemon_via(&["env", "TZ=Etc/GMT+12"], &[]);
    wait_until_answering(&t.socket());
    let first = common::run_for_archive(&t, &["--sources", src]);
    let manifest = first.to_str().unwrap().replace(".tar.gz", ".json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    assert_eq!(manifest["utc_offset"], "-12:00", "{manifest}");
    t.ctl(&["stop"]).ok();
    west.wait();

    let _east = t.spawn_daemon_via(&["env", "TZ=Etc/GMT-14"], &[]);
    wait_until_answering(&t.socket());
    let keep_a_day = ["--retention-days", "1", "--min-keep", "0"];
    let mut prune = vec!["prune"];
    prune.extend(keep_a_day);
    t.ctl(&prune).ok();
    assert!(first.exists(), "pruned: {}", t.log());
    let mut run = vec!["run", "--sources", src];
    run.extend(keep_a_day);
    let second = common::run_for_archive(&t, &run[1..]);
    assert!(first.exists(), "rotated away: {}", t.log());
    assert!(second.exists());
}
