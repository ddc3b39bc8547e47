//! Schedules firing: the schedule manager's one-shot scenario on the real clock, recurring daily and cron
//! schedules, running a schedule now, catching up missed runs at start, and never running a
//! schedule twice at once.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use chrono::{Datelike, Local, TimeDelta, Timelike};
use common::{StopOnDrop, TestHome, far_time, log_messages, wait_for};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn archives(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".tar.gz"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn list_json(t: &TestHome) -> Vec<Value> {
    let value: Value = serde_json::from_str(&t.ctl(&["--json", "list"]).ok()).unwrap();
    value["data"]["schedules"].as_array().unwrap().clone()
}

#[test]
fn the_one_shot_scenario_backs_up_at_the_next_minute_and_removes_the_schedules() {
    let t = TestHome::new();
    let _stop = StopOnDrop(&t);
    for dir in ["test", "test1", "test2"] {
        std::fs::create_dir(t.work().join(dir)).unwrap();
    }
    std::fs::write(t.work().join("test/a"), b"hi\n").unwrap();
    let work = t.work().canonicalize().unwrap();

    assert_eq!(t.ctl(&["start"]).ok(), "backupd started\n");
    let next_minute = (Local::now() + TimeDelta::minutes(1))
        .format("%H:%M")
        .to_string();
    for (dir, name) in [
        ("test", "backup_test"),
        ("test1", "personal_data"),
        ("test2", "office_docs"),
    ] {
        t.ctl(&["create", &format!("{dir};{next_minute};{name}")])
            .ok();
    }
    let malformed = t.ctl(&["create", "test;"]);
    assert_eq!(malformed.code(), 1);
    assert_eq!(malformed.stderr(), "Error: malformed schedule: test;\n");
    let listed = t.ctl(&["list"]).ok();
    assert!(
        listed.starts_with(&format!(
            "0: {};{next_minute};backup_test\n",
            work.join("test").display()
        )),
        "{listed}"
    );
    assert_eq!(listed.lines().count(), 3);

    // The minute passes; three archives appear and the one-shot schedules are gone.
    let backups = t.home().join("backups");
    let made = wait_for(Duration::from_secs(150), "three archives", || {
        let made = archives(&backups);
        (made.len() == 3).then_some(made)
    });
    let due_minute = next_minute.replace(':', "");
    for (archive, name) in made
        .iter()
        .zip(["backup_test", "office_docs", "personal_data"])
    {
        assert!(archive.starts_with(&format!("{name}_")), "{made:?}");
        // `<name>_YYYYMMDD_HHMMSS.tar.gz`: started in the due minute, within seconds of it.
        let stamp = &archive[archive.len() - "HHMMSS.tar.gz".len()..][..6];
        assert_eq!(&stamp[..4], due_minute, "{archive}");
        let seconds: u32 = stamp[4..].parse().unwrap();
        assert!(
            seconds <= 5,
            "started {seconds} s after the due time: {archive}"
        );
    }
    wait_for(common::PATIENCE, "the schedules to be removed", || {
        t.ctl(&["list"]).ok().is_empty().then_some(())
    });
    let listed_backups = t.ctl(&["backups"]).ok();
    assert_eq!(listed_backups.lines().collect::<Vec<_>>(), made);
    t.ctl(&["stop"]).ok();

    let log = log_messages(&t.log());
    for (dir, name) in [
        ("test", "backup_test"),
        ("test1", "personal_data"),
        ("test2", "office_docs"),
    ] {
        let done = format!(
            "Backup done for {} in backups/{name}_",
            work.join(dir).display()
        );
        assert!(
            log.iter()
                .any(|l| l.starts_with(&format!("[{name} #")) && l.contains(&done)),
            "{done} in {log:#?}"
        );
    }
    assert!(log.contains(&"Error: malformed schedule: test;".to_owned()));
}

#[test]
fn recurring_schedules_show_their_next_run_and_bad_ones_are_refused() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    let _daemon = t.start_daemon();
    let src = t.work().join("src").display().to_string();

    t.ctl(&[
        "create", "--source", "src", "--name", "nightly", "--daily", "02:00",
    ])
    .ok();
    t.ctl(&[
        "create",
        "--source",
        "src",
        "--name",
        "weekly",
        "--cron",
        "30 3 * * 1",
        "--compression",
        "zstd",
        "--exclude",
        "*.tmp",
    ])
    .ok();
    let listed = t.ctl(&["list"]).ok();
    let lines: Vec<&str> = listed.lines().collect();
    assert!(
        lines[0].starts_with(&format!("0: nightly: daily 02:00 {src} (next ")),
        "{listed}"
    );
    assert!(lines[0].ends_with(" 02:00; last never)"), "{listed}");
    assert!(lines[1].starts_with(&format!("1: weekly: cron \"30 3 * * 1\" {src} (next ")));

    let schedules = list_json(&t);
    let weekly = &schedules[1];
    assert_eq!(weekly["kind"], "cron");
    assert_eq!(weekly["cron"], "30 3 * * 1");
    assert_eq!(weekly["compression"], "zstd");
    assert_eq!(weekly["exclude"][0], "*.tmp");
    assert_eq!(weekly["sources"][0], src);
    let next = chrono::DateTime::parse_from_rfc3339(weekly["next_run"].as_str().unwrap()).unwrap();
    assert_eq!(chrono::Datelike::weekday(&next), chrono::Weekday::Mon);
    assert_eq!((next.hour(), next.minute()), (3, 30));
    assert!(next > Local::now());

    let refusals: [(&[&str], &str); 5] = [
        (
            &["--name", "bad", "--source", "src", "--cron", "61 * * * *"],
            "invalid cron expression",
        ),
        (
            &["--name", "bad", "--source", "src", "--daily", "25:00"],
            "invalid time",
        ),
        (
            &["--name", "nightly", "--source", "src", "--daily", "03:00"],
            "already exists",
        ),
        (
            &["--name", "bad", "--source", "nowhere", "--daily", "03:00"],
            "can't find source directory",
        ),
        (
            &[
                "--name", "bad", "--source", "src", "--daily", "03:00", "--level", "42",
            ],
            "level",
        ),
    ];
    for (args, needle) in refusals {
        let mut full = vec!["create"];
        full.extend_from_slice(args);
        let out = t.ctl(&full);
        assert_eq!(out.code(), 1, "{args:?}");
        assert!(out.stderr().contains(needle), "{args:?}: {}", out.stderr());
    }
    assert_eq!(
        t.ctl(&["create", "--name", "x", "--source", "src"]).code(),
        2
    );

    t.ctl(&["delete", "--name", "weekly"]).ok();
    assert_eq!(t.ctl(&["list"]).ok().lines().count(), 1);
    let missing = t.ctl(&["delete", "--name", "weekly"]);
    assert_eq!(missing.code(), 1);
    assert_eq!(
        missing.stderr(),
        "Error: can't find schedule named weekly\n"
    );
}

#[test]
fn run_name_runs_a_stored_schedule_now_and_records_the_outcome() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    std::fs::write(t.work().join("src/f"), b"data").unwrap();
    let _daemon = t.start_daemon();
    t.ctl(&[
        "create",
        "--source",
        "src",
        "--name",
        "docs",
        "--daily",
        &far_time(),
    ])
    .ok();
    let out = t.ctl(&["run", "--name", "docs"]).ok();
    assert!(out.contains("Successful: 1"), "{out}");
    let made = archives(&t.home().join("backups"));
    assert_eq!(made.len(), 1);
    assert!(made[0].starts_with("docs_"));
    let schedules = list_json(&t);
    let last = &schedules[0]["last_run"];
    assert_eq!(last["ok"], true);
    assert!(last["archives"][0].as_str().unwrap().ends_with(&made[0]));
    assert!(t.ctl(&["list"]).ok().contains("; last ok "));
    // A stored schedule stays after a run outside its timetable.
    assert_eq!(schedules.len(), 1);

    let missing = t.ctl(&["run", "--name", "nope"]);
    assert_eq!(missing.code(), 1);
    assert_eq!(missing.stderr(), "Error: can't find schedule named nope\n");
}

/// A schedule file as a daemon that was down for days left it.
fn write_stale_schedules(t: &TestHome) {
    let now = Local::now()
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    let latest = now - TimeDelta::hours(2);
    let src = t.work().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let file = serde_json::json!({
        "version": 1,
        "next_id": 3,
        "schedules": [
            {
                "id": 1, "name": "daily_job", "sources": [src],
                "kind": "daily", "time": latest.format("%H:%M").to_string(),
                "created": (latest - TimeDelta::days(10)).to_rfc3339(),
                "last_due": (latest - TimeDelta::days(4)).to_rfc3339()
            },
            {
                "id": 2, "name": "old_once", "sources": [src],
                "kind": "once", "time": "04:00",
                "due": (now - TimeDelta::days(3)).to_rfc3339(),
                "created": (now - TimeDelta::days(4)).to_rfc3339()
            }
        ]
    });
    std::fs::create_dir_all(t.home()).unwrap();
    std::fs::write(t.home().join("schedules.json"), file.to_string()).unwrap();
}

#[test]
fn missed_runs_within_the_grace_period_are_caught_up_once_at_start() {
    let t = TestHome::new();
    write_stale_schedules(&t);
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    // Four daily occurrences were missed: one catch-up run.
    wait_for(common::PATIENCE, "the catch-up run to be recorded", || {
        list_json(&t)
            .iter()
            .any(|s| s["name"] == "daily_job" && s["last_run"]["ok"] == true)
            .then_some(())
    });
    let made = archives(&backups);
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(made[0].starts_with("daily_job_"));
    let log = log_messages(&t.log());
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("Catching up missed run of daily_job"))
            .count(),
        1,
        "{log:#?}"
    );
    // The one-shot missed three days ago is past the 24 h grace: skipped and removed.
    assert!(
        log.iter()
            .any(|l| l.starts_with("Warning: Missed run of old_once"))
    );
    let names: Vec<Value> = list_json(&t).iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, ["daily_job"]);
}

#[test]
fn missed_runs_older_than_the_grace_period_are_skipped() {
    let t = TestHome::new();
    write_stale_schedules(&t);
    let _daemon = t.spawn_daemon(&["--catch-up-grace", "90m"]);
    common::wait_until_answering(&t.socket());
    let schedules = wait_for(common::PATIENCE, "the missed runs to be handled", || {
        let schedules = list_json(&t);
        (schedules.len() == 1 && schedules[0]["last_due"] != Value::Null).then_some(schedules)
    });
    let last_due =
        chrono::DateTime::parse_from_rfc3339(schedules[0]["last_due"].as_str().unwrap()).unwrap();
    assert!(Local::now().fixed_offset() - last_due < TimeDelta::hours(3));
    assert!(schedules[0]["last_run"].is_null(), "nothing ran");
    assert!(archives(&t.home().join("backups")).is_empty());
    let log = log_messages(&t.log());
    assert!(
        log.iter()
            .any(|l| l.starts_with("Warning: Missed run of daily_job")
                && l.ends_with("older than the catch-up grace of 90m; skipped")),
        "{log:#?}"
    );
}

/// A `TZ` whose summer time (UTC+1) ends at `fall_back` (UTC seconds), for the daemon: the
/// hour of wall times before it comes twice, without waiting for the clock. Summer time
/// begins two days before, in the year before if that is in January.
fn posix_tz_falling_back_at(fall_back: i64) -> String {
    let end_wall = in_summer_time(fall_back);
    let end_day = end_wall.ordinal0(); // POSIX `n`: 0-based, counting 29 February
    let start_day = end_day.checked_sub(2).unwrap_or(363);
    format!(
        "STD0DST-1,{start_day}/0,{end_day}/{}",
        end_wall.format("%H:%M:%S")
    )
}

/// The wall time at `instant` (UTC seconds) in that summer time.
fn in_summer_time(instant: i64) -> chrono::NaiveDateTime {
    chrono::DateTime::from_timestamp(instant + 3600, 0)
        .unwrap()
        .naive_utc()
}

/// `wall` in summer time, as the schedules file holds it.
fn summer_rfc3339(wall: chrono::NaiveDateTime) -> String {
    format!("{}+01:00", wall.format("%FT%T"))
}

/// Starts a daemon with `schedules` (ids from 1) and `TZ`, with a catch-up grace of 10 minutes.
fn start_with_schedules_in(t: &TestHome, tz: &str, schedules: &[Value]) -> common::Daemon {
    let mut schedules = schedules.to_vec();
    for (id, schedule) in (1..).zip(&mut schedules) {
        schedule["id"] = id.into();
    }
    let file = serde_json::json!({
        "version": 1,
        "next_id": schedules.len() + 1,
        "schedules": schedules,
    });
    std::fs::create_dir_all(t.home()).unwrap();
    std::fs::write(t.home().join("schedules.json"), file.to_string()).unwrap();
    let tz_env = format!("TZ={tz}");
    let daemon = t.spawn_daemon_via(&["env", &tz_env], &["--catch-up-grace", "10m"]);
    common::wait_until_answering(&t.socket());
    daemon
}

/// When a schedule was last due, in UTC seconds.
fn last_due_of(schedule: &Value) -> Option<i64> {
    let last_due = schedule["last_due"].as_str()?;
    Some(
        chrono::DateTime::parse_from_rfc3339(last_due)
            .unwrap()
            .timestamp(),
    )
}

#[test]
fn a_run_in_the_repeated_hour_of_a_fall_back_is_on_time_not_missed() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // The clock went back at the start of the previous minute: this minute's wall time, in
    // standard time (UTC+0), came an hour ago too, in summer time.
    let now = chrono::Utc::now().timestamp();
    let this_minute = now - now.rem_euclid(60);
    let tz = posix_tz_falling_back_at(this_minute - 60);
    let first_pass = in_summer_time(this_minute - 3600);
    let cron = format!("{} * * * *", first_pass.minute());
    let hourly = |name: &str, last_due: chrono::NaiveDateTime| {
        serde_json::json!({
            "name": name, "sources": [src], "kind": "cron", "cron": cron,
            "created": summer_rfc3339(first_pass - TimeDelta::days(1)),
            "last_due": summer_rfc3339(last_due)
        })
    };
    let _daemon = start_with_schedules_in(
        &t,
        &tz,
        &[
            // Ran at the first pass: the second is due now.
            hourly("ran_first", first_pass),
            // Down at the first pass, an hour ago: the second, due now, still runs.
            hourly("missed_first", first_pass - TimeDelta::hours(1)),
        ],
    );
    let missed = |log: &[String]| log.iter().any(|l| l.starts_with("Warning: Missed run"));
    let schedules = wait_for(common::PATIENCE, "both runs, or a miss", || {
        let schedules = list_json(&t);
        let ran = schedules.iter().all(|s| s["last_run"]["ok"] == true);
        (ran || missed(&log_messages(&t.log()))).then_some(schedules)
    });
    let log = log_messages(&t.log());
    assert!(!missed(&log), "TZ={tz}, cron {cron:?}: {log:#?}");
    for schedule in &schedules {
        assert_eq!(
            last_due_of(schedule),
            Some(this_minute),
            "{} ran for the second pass; TZ={tz}: {log:#?}",
            schedule["name"]
        );
    }
    assert!(
        log.iter()
            .any(|l| l.starts_with("Catching up missed run of missed_first")),
        "{log:#?}"
    );
}

#[test]
fn daily_and_cron_times_in_the_repeated_hour_of_a_fall_back_run_at_the_first_pass() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // The clock goes back at the start of the next minute: this minute's wall time comes
    // again in an hour.
    let now = chrono::Utc::now().timestamp();
    let this_minute = now - now.rem_euclid(60);
    let tz = posix_tz_falling_back_at(this_minute + 60);
    let first_pass = in_summer_time(this_minute);
    let created = summer_rfc3339(first_pass - TimeDelta::days(2));
    let _daemon = start_with_schedules_in(
        &t,
        &tz,
        &[
            serde_json::json!({
                "name": "daily", "sources": [src], "kind": "daily",
                "time": first_pass.format("%H:%M").to_string(), "created": created,
                "last_due": summer_rfc3339(first_pass - TimeDelta::days(1))
            }),
            serde_json::json!({
                "name": "hourly", "sources": [src], "kind": "cron",
                "cron": format!("{} * * * *", first_pass.minute()), "created": created,
                "last_due": summer_rfc3339(first_pass - TimeDelta::hours(1))
            }),
        ],
    );
    let schedules = wait_for(common::PATIENCE, "both runs, or a wait of an hour", || {
        let schedules = list_json(&t);
        let settled = schedules.iter().all(|s| {
            let next_run = s["next_run"].as_str().map(|next| {
                chrono::DateTime::parse_from_rfc3339(next)
                    .unwrap()
                    .timestamp()
            });
            s["last_run"]["ok"] == true || next_run.is_some_and(|next| next > now + 1800)
        });
        settled.then_some(schedules)
    });
    let log = log_messages(&t.log());
    for schedule in &schedules {
        assert_eq!(
            last_due_of(schedule),
            Some(this_minute),
            "{} ran at the first pass; TZ={tz}: {schedule:#} {log:#?}",
            schedule["name"]
        );
    }
}

#[test]
fn an_occurrence_while_the_previous_run_goes_on_is_skipped() {
    let t = TestHome::new();
    common::sparse_source(&t, "hog", common::ENDLESS);
    let mut daemon = t.start_daemon();
    // Every second, while one run takes far longer than a second.
    t.ctl(&[
        "create",
        "--source",
        "hog",
        "--name",
        "hog",
        "--cron",
        "* * * * * *",
    ])
    .ok();
    wait_for(common::PATIENCE, "a skipped occurrence", || {
        log_messages(&t.log())
            .iter()
            .any(|l| {
                l.starts_with("Warning: Skipped run of hog")
                    && l.ends_with("its previous run is still going")
            })
            .then_some(())
    });
    let partials: Vec<_> = std::fs::read_dir(t.home().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(partials.len(), 1, "one run at a time: {partials:?}");
    t.ctl(&["stop"]).ok();
    assert!(daemon.wait().success());
    assert!(
        std::fs::read_dir(t.home().join("backups"))
            .unwrap()
            .next()
            .is_none(),
        "the cancelled run left nothing"
    );
}

#[test]
fn a_running_one_shot_does_not_keep_the_scheduler_busy() {
    let t = TestHome::new();
    common::sparse_source(&t, "hog", common::ENDLESS);
    let mut daemon = t.start_daemon();
    // This minute counts: it fires at once and runs far longer than the test watches it.
    // Near the end of a minute, wait for the next, so that the minute cannot pass meanwhile.
    if Local::now().second() >= 55 {
        std::thread::sleep(Duration::from_secs(6));
    }
    let now = Local::now().format("%H:%M").to_string();
    t.ctl(&["create", &format!("hog;{now};hog")]).ok();
    let backups = t.home().join("backups");
    wait_for(common::PATIENCE, "the one-shot to start", || {
        std::fs::read_dir(&backups).unwrap().next().map(drop)
    });
    let schedules = t.home().join("schedules.json");
    let saved_at = std::fs::metadata(&schedules).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        std::fs::metadata(&schedules).unwrap().modified().unwrap(),
        saved_at,
        "the schedule file is not rewritten while the run goes on"
    );
    let skipped = log_messages(&t.log())
        .iter()
        .filter(|l| l.contains("Skipped run"))
        .count();
    assert_eq!(skipped, 0);
    t.ctl(&["stop"]).ok();
    assert!(daemon.wait().success());
}

#[test]
fn a_one_shot_due_while_a_run_of_it_goes_on_counts_as_run_and_is_removed() {
    let t = TestHome::new();
    common::sparse_source(&t, "hog", common::ENDLESS);
    let mut daemon = t.start_daemon();
    // The run by name must begin before the next minute does.
    if Local::now().second() >= 50 {
        std::thread::sleep(Duration::from_secs(11));
    }
    let next_minute = (Local::now() + TimeDelta::minutes(1))
        .format("%H:%M")
        .to_string();
    t.ctl(&["create", &format!("hog;{next_minute};os1")]).ok();
    t.ctl(&["run", "--name", "os1", "--detach"]).ok();
    let skipped = wait_for(Duration::from_secs(90), "the one-shot's time", || {
        log_messages(&t.log())
            .into_iter()
            .find(|l| l.starts_with("Warning: Skipped run of os1"))
    });
    wait_for(common::PATIENCE, "the one-shot to be removed", || {
        list_json(&t).is_empty().then_some(())
    });
    assert!(
        skipped.ends_with("a run of it is still going, which counts as its run; one-shot removed"),
        "{skipped}"
    );
    assert!(
        t.ctl(&["jobs"]).ok().contains("os1"),
        "the run by name goes on"
    );
    t.ctl(&["stop"]).ok();
    assert!(daemon.wait().success());
}

#[test]
fn a_one_shot_an_older_version_skipped_and_kept_is_removed_at_start() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let due = Local::now() - TimeDelta::hours(2);
    // Skipped as an overlap and marked dealt with, but never removed: `next_run: null`.
    let file = serde_json::json!({
        "version": 1,
        "next_id": 2,
        "schedules": [{
            "id": 1, "name": "os1", "sources": [src],
            "kind": "once", "time": due.format("%H:%M").to_string(),
            "due": due.to_rfc3339(),
            "created": (due - TimeDelta::minutes(5)).to_rfc3339(),
            "last_due": due.to_rfc3339()
        }]
    });
    std::fs::create_dir_all(t.home()).unwrap();
    std::fs::write(t.home().join("schedules.json"), file.to_string()).unwrap();
    let _daemon = t.start_daemon();
    wait_for(common::PATIENCE, "the left-over one-shot to go", || {
        list_json(&t).is_empty().then_some(())
    });
    assert!(
        log_messages(&t.log())
            .iter()
            .any(|l| l.starts_with("Warning: Removed one-shot os1:")),
        "{}",
        t.log()
    );
    assert!(
        archives(&t.home().join("backups")).is_empty(),
        "nothing ran"
    );
}

#[test]
fn a_schedule_that_could_never_run_is_refused_at_create() {
    let t = TestHome::new();
    for dir in ["a/docs", "b/docs"] {
        std::fs::create_dir_all(t.work().join(dir)).unwrap();
    }
    let _daemon = t.start_daemon();
    let out = t.ctl(&[
        "create", "--source", "a/docs", "--source", "b/docs", "--name", "dup", "--daily", "04:00",
    ]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr()
            .contains("two sources would both write archives named \"dup-docs\""),
        "{}",
        out.stderr()
    );
    assert_eq!(t.ctl(&["list"]).ok(), "");
}

#[test]
fn create_refuses_cron_expressions_with_seven_fields_or_that_never_fire() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    let _daemon = t.start_daemon();
    let refusals = [
        ("0 0 2 * * * 2030", "expected 5 fields"),
        ("* * * * * * *", "expected 5 fields"),
        ("0 0 31 2 *", "never fires"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 0 31 4 *", "never fires"),
    ];
    for (cron, needle) in refusals {
        let out = t.ctl(&["create", "--source", "src", "--name", "bad", "--cron", cron]);
        assert_eq!(out.code(), 1, "{cron}");
        let expected = format!("Error: invalid cron expression {cron:?}: ");
        assert!(
            out.stderr().starts_with(&expected),
            "{cron}: {}",
            out.stderr()
        );
        assert!(out.stderr().contains(needle), "{cron}: {}", out.stderr());
    }
    assert_eq!(t.ctl(&["list"]).ok(), "", "nothing was stored");
    // A leap day comes back every four years or so: it is a real schedule.
    t.ctl(&[
        "create",
        "--source",
        "src",
        "--name",
        "leap",
        "--cron",
        "0 0 29 2 *",
    ])
    .ok();
    let schedules = list_json(&t);
    let next =
        chrono::DateTime::parse_from_rfc3339(schedules[0]["next_run"].as_str().unwrap()).unwrap();
    assert_eq!(
        (chrono::Datelike::month(&next), chrono::Datelike::day(&next)),
        (2, 29)
    );
}
