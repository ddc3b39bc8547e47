//! Scheduled runs cut short by a SIGKILL or a `stop`: the daemon saves "started" before a run
//! and its outcome after, so at the next start the interrupted run is caught up and logged, and
//! a one-shot is removed only once its run has succeeded or failed (or a user cancelled it).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use chrono::{Local, TimeDelta, Timelike};
use common::{Daemon, TestHome, log_messages, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The schedules as saved on disk (read directly: the daemon may be down).
fn saved_schedules(t: &TestHome) -> Vec<Value> {
    let text = std::fs::read_to_string(t.home().join("schedules.json")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    file["schedules"].as_array().unwrap().clone()
}

/// A source `hog` that takes far longer to back up than any test waits.
fn endless_source(t: &TestHome) -> PathBuf {
    common::sparse_source(t, "hog", common::ENDLESS)
}

/// Makes the `hog` source quick: its endless file becomes a small one.
fn make_quick(source: &Path) {
    std::fs::remove_file(source.join("sparse")).unwrap();
    std::fs::write(source.join("small"), b"small now\n").unwrap();
}

/// Waits until the scheduled run writes its partial archive.
fn wait_until_writing(t: &TestHome) {
    let backups = t.home().join("backups");
    wait_for(common::PATIENCE, "the scheduled run to start", || {
        (!files_ending(&backups, ".partial").is_empty()).then_some(())
    });
}

/// A one-shot `hog` for the current minute: due at once.
fn create_one_shot_now(t: &TestHome) {
    // Near the end of a minute, wait for the next, so that the minute cannot pass meanwhile.
    if Local::now().second() >= 55 {
        std::thread::sleep(Duration::from_secs(6));
    }
    let now = Local::now().format("%H:%M").to_string();
    t.ctl(&["create", &format!("hog;{now};hog")]).ok();
}

fn kill(mut daemon: Daemon) {
    daemon.signal("KILL");
    daemon.wait();
}

#[track_caller]
fn assert_logged_interrupted_and_run_now(t: &TestHome) {
    let log = log_messages(&t.log());
    assert!(
        log.iter()
            .any(|l| l.starts_with("Warning: Interrupted run of hog (due ")
                && l.ends_with(") will run now")),
        "{log:#?}"
    );
}

#[test]
fn a_cron_run_killed_midway_is_caught_up_at_the_next_start() {
    let t = TestHome::new();
    let source = endless_source(&t);
    let daemon = t.start_daemon();
    // Once a day, at a second three seconds from now.
    let at = Local::now() + TimeDelta::seconds(3);
    let cron = format!("{} {} {} * * *", at.second(), at.minute(), at.hour());
    t.ctl(&[
        "create", "--source", "hog", "--name", "hog", "--cron", &cron,
    ])
    .ok();
    wait_until_writing(&t);
    kill(daemon);
    let saved = saved_schedules(&t);
    assert!(saved[0]["started_run"]["due"].is_string(), "{saved:#?}");

    make_quick(&source);
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    wait_for(
        common::PATIENCE,
        "the interrupted run to be caught up",
        || (files_ending(&backups, ".tar.gz").len() == 1).then_some(()),
    );
    let schedule = wait_for(common::PATIENCE, "the run to be recorded", || {
        saved_schedules(&t)
            .into_iter()
            .find(|s| s["name"] == "hog" && s["last_run"]["ok"] == true)
    });
    assert!(schedule["started_run"].is_null(), "{schedule:#?}");
    assert_logged_interrupted_and_run_now(&t);
    assert!(
        files_ending(&backups, ".partial").is_empty(),
        "the killed run's partial archive is swept"
    );
}

#[test]
fn a_one_shot_killed_midway_runs_after_the_restart_and_only_then_goes() {
    let t = TestHome::new();
    let source = endless_source(&t);
    let daemon = t.start_daemon();
    create_one_shot_now(&t);
    wait_until_writing(&t);
    kill(daemon);
    assert_eq!(saved_schedules(&t).len(), 1, "still listed after the kill");

    make_quick(&source);
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    wait_for(
        common::PATIENCE,
        "the one-shot to run and be removed",
        || {
            (files_ending(&backups, ".tar.gz").len() == 1 && saved_schedules(&t).is_empty())
                .then_some(())
        },
    );
    assert_logged_interrupted_and_run_now(&t);
}

#[test]
fn a_one_shot_whose_run_is_cut_short_by_stop_is_kept_and_caught_up() {
    let t = TestHome::new();
    let source = endless_source(&t);
    let mut daemon = t.start_daemon();
    create_one_shot_now(&t);
    wait_until_writing(&t);
    t.ctl(&["stop"]).ok();
    assert!(daemon.wait().success());
    let saved = saved_schedules(&t);
    assert_eq!(saved.len(), 1, "a stop does not end a one-shot: {saved:#?}");
    assert!(saved[0]["started_run"]["due"].is_string(), "{saved:#?}");
    let log = log_messages(&t.log());
    assert!(
        log.iter()
            .any(|l| l.starts_with("Warning: Run of hog interrupted by the shutdown")),
        "{log:#?}"
    );

    make_quick(&source);
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    wait_for(
        common::PATIENCE,
        "the one-shot to run and be removed",
        || {
            (files_ending(&backups, ".tar.gz").len() == 1 && saved_schedules(&t).is_empty())
                .then_some(())
        },
    );
    assert_logged_interrupted_and_run_now(&t);
}

#[test]
fn a_one_shot_cancelled_by_its_user_is_removed() {
    let t = TestHome::new();
    endless_source(&t);
    let _daemon = t.start_daemon();
    create_one_shot_now(&t);
    wait_until_writing(&t);
    t.ctl(&["cancel", "--name", "hog"]).ok();
    wait_for(common::PATIENCE, "the cancelled one-shot to go", || {
        saved_schedules(&t).is_empty().then_some(())
    });
    assert!(files_ending(&t.home().join("backups"), ".tar.gz").is_empty());
}

#[test]
fn an_interrupted_run_older_than_the_grace_is_logged_as_missed() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    // A daily run that started two hours ago and never finished; the grace is one hour.
    let due = Local::now() - TimeDelta::hours(2);
    let file = serde_json::json!({
        "version": 1,
        "next_id": 2,
        "schedules": [{
            "id": 1, "name": "hog", "sources": [src],
            "kind": "daily", "time": due.format("%H:%M").to_string(),
            "created": (due - TimeDelta::days(3)).to_rfc3339(),
            "last_due": due.to_rfc3339(),
            "started_run": {
                "due": due.to_rfc3339(),
                "at": due.to_rfc3339(),
                "previous_due": (due - TimeDelta::days(1)).to_rfc3339()
            }
        }]
    });
    std::fs::create_dir_all(t.home()).unwrap();
    std::fs::write(t.home().join("schedules.json"), file.to_string()).unwrap();
    let _daemon = t.spawn_daemon(&["--catch-up-grace", "1h"]);
    common::wait_until_answering(&t.socket());
    wait_for(common::PATIENCE, "the interrupted run to be logged", || {
        log_messages(&t.log())
            .iter()
            .any(|l| {
                l.starts_with("Warning: Interrupted run of hog (due ")
                    && l.ends_with("missed, outside the catch-up grace of 1h")
            })
            .then_some(())
    });
    let schedule = wait_for(common::PATIENCE, "the miss to be saved", || {
        saved_schedules(&t)
            .into_iter()
            .find(|s| s["started_run"].is_null())
    });
    assert!(schedule["last_run"].is_null(), "nothing ran");
    assert!(files_ending(&t.home().join("backups"), ".tar.gz").is_empty());
}
