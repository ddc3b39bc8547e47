//! The schedule manager's scenario through the real `backupctl` and a detached daemon.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{StopOnDrop, TestHome, far_time, log_messages};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[test]
fn the_schedule_manager_scenario_works_end_to_end() {
    let t = TestHome::new();
    let _stop = StopOnDrop(&t);
    for dir in ["test", "test1", "test2"] {
        std::fs::create_dir(t.work().join(dir)).unwrap();
    }
    let work = t.work().canonicalize().unwrap();
    let abs = |dir: &str| work.join(dir).display().to_string();
    // The schedule manager's 16:07, moved to where it will not fire while this test runs.
    let hhmm = far_time();
    let spec = |dir: &str, name: &str| format!("{dir};{hhmm};{name}");
    // `list` names the day of a one-shot that runs on another day than today.
    let day = |t: &TestHome| {
        let listed: serde_json::Value =
            serde_json::from_str(&t.ctl(&["--json", "list"]).ok()).unwrap();
        let due = listed["data"]["schedules"][0]["next_run"]
            .as_str()
            .unwrap()
            .to_owned();
        let due = chrono::DateTime::parse_from_rfc3339(&due)
            .unwrap()
            .with_timezone(&chrono::Local);
        if due.date_naive() == chrono::Local::now().date_naive() {
            String::new()
        } else {
            format!(" (on {})", due.format("%d/%m/%Y"))
        }
    };

    assert_eq!(t.ctl(&["start"]).ok(), "backupd started\n");
    let again = t.ctl(&["start"]);
    assert_eq!(again.code(), 1);
    assert_eq!(again.stderr(), "Error: backupd already running\n");

    assert_eq!(t.ctl(&["create", &spec("test", "backup_test")]).ok(), "");
    assert_eq!(t.ctl(&["create", &spec("test1", "personal_data")]).ok(), "");
    assert_eq!(t.ctl(&["create", &spec("test2", "office_docs")]).ok(), "");
    let malformed = t.ctl(&["create", "test;"]);
    assert_eq!(malformed.code(), 1);
    assert_eq!(malformed.stderr(), "Error: malformed schedule: test;\n");

    let on = day(&t);
    assert_eq!(
        t.ctl(&["list"]).ok(),
        format!(
            "0: {}{on}\n1: {}{on}\n2: {}{on}\n",
            spec(&abs("test"), "backup_test"),
            spec(&abs("test1"), "personal_data"),
            spec(&abs("test2"), "office_docs")
        )
    );
    assert_eq!(t.ctl(&["delete", "1"]).ok(), "");
    let missing = t.ctl(&["delete", "7"]);
    assert_eq!(missing.code(), 1);
    assert_eq!(missing.stderr(), "Error: can't find schedule at index 7\n");
    assert_eq!(
        t.ctl(&["list"]).ok(),
        format!(
            "0: {}{on}\n1: {}{on}\n",
            spec(&abs("test"), "backup_test"),
            spec(&abs("test2"), "office_docs")
        )
    );
    // No archive exists yet: schedules fire in a later step.
    assert_eq!(t.ctl(&["backups"]).ok(), "");

    assert_eq!(t.ctl(&["stop"]).ok(), "backupd stopped\n");
    assert!(!t.socket().exists(), "stop removes the socket");
    let stopped = t.ctl(&["stop"]);
    assert_ne!(stopped.code(), 0);
    assert!(
        stopped
            .stderr()
            .starts_with("Error: can't stop backupd: not running"),
        "{}",
        stopped.stderr()
    );

    assert_eq!(
        log_messages(&t.log()),
        [
            "backupd started".to_owned(),
            format!("New schedule added: {}", spec(&abs("test"), "backup_test")),
            format!(
                "New schedule added: {}",
                spec(&abs("test1"), "personal_data")
            ),
            format!("New schedule added: {}", spec(&abs("test2"), "office_docs")),
            "Error: malformed schedule: test;".to_owned(),
            "Show schedules list".to_owned(), // the test's own `--json list`
            "Show schedules list".to_owned(),
            "Schedule at index 1 deleted".to_owned(),
            "Error: can't find schedule at index 7".to_owned(),
            "Show schedules list".to_owned(),
            "Show backups list".to_owned(),
            "backupd stopped".to_owned(),
        ]
    );
    let client_log = log_messages(&t.client_log());
    assert_eq!(client_log.len(), 2, "{client_log:?}");
    assert_eq!(client_log[0], "Error: backupd already running");
    assert!(client_log[1].starts_with("Error: can't stop backupd: not running"));

    // The schedules outlive the daemon.
    assert_eq!(t.ctl(&["start"]).ok(), "backupd started\n");
    assert_eq!(t.ctl(&["list"]).ok().lines().count(), 2);
    t.ctl(&["stop"]).ok();
}

#[test]
fn the_schedule_file_is_versioned_json_with_stable_ids() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    let _daemon = t.start_daemon();
    let hhmm = far_time();
    t.ctl(&["create", &format!("src;{hhmm};a")]).ok();
    t.ctl(&["create", &format!("src;{hhmm};b")]).ok();
    t.ctl(&["delete", "0"]).ok();
    t.ctl(&["create", &format!("src;{hhmm};c")]).ok();
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.home().join("schedules.json")).unwrap()).unwrap();
    assert_eq!(file["version"], 1);
    let ids: Vec<u64> = file["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [2, 3], "ids are never reused");
    let listed: serde_json::Value = serde_json::from_str(&t.ctl(&["--json", "list"]).ok()).unwrap();
    assert_eq!(listed["data"]["schedules"][1]["id"], 3);
    assert_eq!(listed["data"]["schedules"][1]["name"], "c");
    assert_eq!(listed["data"]["schedules"][1]["time"], hhmm);
    assert_eq!(listed["data"]["schedules"][1]["kind"], "once");
}

#[test]
fn a_schedule_for_a_missing_directory_is_refused() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    // A file is there, but it is not a folder to back up.
    std::fs::write(t.work().join("afile"), b"x").unwrap();
    for (source, problem) in [
        ("nowhere", "can't find source directory"),
        ("afile", "source is not a directory"),
    ] {
        let out = t.ctl(&["create", &format!("{source};{};x", far_time())]);
        assert_eq!(out.code(), 1);
        let expected = format!("Error: {problem}: {}\n", t.work().join(source).display());
        assert_eq!(out.stderr(), expected);
        assert_eq!(t.ctl(&["list"]).ok(), "");
    }
}

#[test]
fn a_relative_path_sent_raw_is_malformed() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let mut client = common::Client::connect(&t.socket()).unwrap();
    let answer = client.request(r#"{"cmd":"create","spec":"rel;01:00;x"}"#);
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["error"]["code"], "malformed_schedule");
    assert_eq!(
        answer["error"]["message"],
        "malformed schedule: rel;01:00;x: the path must be absolute"
    );
}

#[test]
fn backups_without_a_backups_directory_is_an_error() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    std::fs::remove_dir(t.home().join("backups")).unwrap();
    let out = t.ctl(&["backups"]);
    assert_eq!(out.code(), 1);
    assert_eq!(out.stderr(), "Error: can't find backups directory\n");
    assert!(log_messages(&t.log()).contains(&"Error: can't find backups directory".to_owned()));
}

#[test]
fn backups_lists_only_archives_sorted() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let backups = t.home().join("backups");
    for name in [
        "b_20260101_000000.tar.gz",
        "a_20260101_000000.tar.zst",
        "c.tar",
        "a_20260101_000000.json",
        "x.tar.gz.partial",
        "notes.txt",
    ] {
        std::fs::write(backups.join(name), b"x").unwrap();
    }
    assert_eq!(
        t.ctl(&["backups"]).ok(),
        "a_20260101_000000.tar.zst\nb_20260101_000000.tar.gz\nc.tar\n"
    );
}

#[test]
fn list_long_shows_each_schedules_recent_runs_newest_first() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    std::fs::write(t.work().join("src/f"), b"x").unwrap();
    let _daemon = t.start_daemon();
    t.ctl(&[
        "create", "--name", "docs", "--source", "src", "--daily", "03:00",
    ])
    .ok();
    t.ctl(&["run", "--name", "docs"]).ok();
    t.ctl(&["run", "--name", "docs"]).ok();
    std::fs::remove_dir_all(t.work().join("src")).unwrap();
    assert_eq!(t.ctl(&["run", "--name", "docs"]).code(), 1);

    let long = t.ctl(&["list", "--long"]).ok();
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 4, "{long}");
    assert!(lines[0].starts_with("0: docs: daily 03:00"), "{long}");
    assert!(
        lines[1].starts_with("  failed "),
        "the newest first: {long}"
    );
    assert!(
        lines[1].contains("does not exist"),
        "with its error: {long}"
    );
    assert!(lines[2].starts_with("  ok ") && lines[2].ends_with(", 1 archive"));
    assert!(lines[3].starts_with("  ok "));
    assert_eq!(
        t.ctl(&["list"]).ok().lines().count(),
        1,
        "plain list: one line"
    );
    let json: serde_json::Value = serde_json::from_str(&t.ctl(&["--json", "list"]).ok()).unwrap();
    let earlier = json["data"]["schedules"][0]["earlier_runs"]
        .as_array()
        .unwrap();
    assert_eq!(earlier.len(), 2);
}

#[test]
fn create_delete_list_and_backups_start_the_daemon_when_none_runs() {
    let t = TestHome::new();
    let _stop = StopOnDrop(&t);
    std::fs::create_dir(t.work().join("src")).unwrap();
    let spec = format!("src;{};early", far_time());
    let out = t.ctl(&["create", &spec]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(out.stdout(), "", "stdout stays the command's own");
    assert_eq!(
        out.stderr(),
        "backupd was not running; started it for create\n"
    );
    assert_eq!(t.ctl(&["list"]).ok().lines().count(), 1);
    assert!(
        log_messages(&t.client_log())
            .contains(&"backupd was not running; started it for create".to_owned())
    );

    t.ctl(&["stop"]).ok();
    let out = t.ctl(&["delete", "--name", "early"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(out.stderr().ends_with("started it for delete\n"));
    assert_eq!(t.ctl(&["list"]).ok(), "");
    // Listing schedules or archives starts it too; asking about a running daemon does not.
    t.ctl(&["stop"]).ok();
    assert_eq!(t.ctl(&["status"]).code(), 3);
    let out = t.ctl(&["list"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(
        out.stderr(),
        "backupd was not running; started it for list\n"
    );
    t.ctl(&["stop"]).ok();
    let out = t.ctl(&["backups"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(
        out.stderr(),
        "backupd was not running; started it for backups\n"
    );
    t.ctl(&["stop"]).ok();
}

#[test]
fn list_that_loses_the_race_to_start_the_daemon_uses_the_one_that_won() {
    // Two clients on a home with no daemon each start one; the second daemon finds the home
    // locked and exits. Its client failed, `backupd exited during start-up`. Here the test
    // holds the lock, as the first daemon would while it starts.
    use rustix::fs::inotify;
    let t = TestHome::new();
    std::fs::create_dir_all(t.home()).unwrap();
    let lock_path = t.home().join("lock");
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.lock().unwrap();
    // The daemon opens the lock file to write, fails to take it, and closes it.
    let closes =
        inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
    inotify::add_watch(&closes, &lock_path, inotify::WatchFlags::CLOSE_WRITE).unwrap();
    let mut list = t
        .ctl_command(&["list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let gave_up = common::wait_for(
        Duration::from_secs(60),
        "its daemon to try the lock",
        || {
            if list.try_wait().unwrap().is_some() {
                return Some(true);
            }
            let mut event = [0u8; 1024];
            rustix::io::read(&closes, &mut event).ok().map(|_| false)
        },
    );
    if gave_up {
        let out = list.wait_with_output().unwrap();
        panic!("{}", String::from_utf8_lossy(&out.stderr));
    }
    drop(lock);
    let _daemon = t.start_daemon();
    let out = list.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr, "", "it started nothing");
}

#[test]
fn a_pretty_printed_schedule_file_of_older_daemons_loads_and_is_rewritten_compact() {
    let t = TestHome::new();
    let _stop = StopOnDrop(&t);
    std::fs::create_dir(t.work().join("src")).unwrap();
    assert_eq!(t.ctl(&["start"]).ok(), "backupd started\n");
    let hhmm = far_time();
    t.ctl(&["create", &format!("src;{hhmm};once")]).ok();
    t.ctl(&[
        "create",
        "--name",
        "nightly",
        "--source",
        "src",
        "--daily",
        "03:00",
        "--compression",
        "zstd",
        "--exclude",
        "*.tmp",
    ])
    .ok();
    // A run of the schedule, so the file holds a run record too.
    t.ctl(&["run", "--name", "nightly"]).ok();
    let listed = t.ctl(&["--json", "list"]).ok();
    t.ctl(&["stop"]).ok();

    // The file as daemons before the compact format wrote it: `serde_json::to_vec_pretty`.
    let path = t.home().join("schedules.json");
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(
        file["schedules"][1]["last_run"].is_object(),
        "the run is recorded: {file}"
    );
    let pretty = serde_json::to_vec_pretty(&file).unwrap();
    assert!(pretty.starts_with(b"{\n  \""), "pretty-printed");
    std::fs::write(&path, &pretty).unwrap();

    assert_eq!(t.ctl(&["start"]).ok(), "backupd started\n");
    assert_eq!(
        t.ctl(&["--json", "list"]).ok(),
        listed,
        "the same schedules"
    );
    // The next change writes the compact form: a line per schedule, the same content.
    t.ctl(&["create", &format!("src;{hhmm};third")]).ok();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2 + 3, "{text}");
    let rewritten: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schedules = |file: &serde_json::Value| file["schedules"].as_array().unwrap().clone();
    assert_eq!(schedules(&rewritten)[..2], schedules(&file)[..]);
    assert_eq!(rewritten["schedules"][2]["name"], "third");
    t.ctl(&["stop"]).ok();
    assert_eq!(t.ctl(&["start"]).ok(), "backupd started\n");
    assert_eq!(t.ctl(&["list"]).ok().lines().count(), 3);
}

#[test]
fn a_next_run_in_a_spring_forward_gap_shows_the_time_the_clock_will_show() {
    use chrono::Datelike;
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    let berlin = [("TZ".to_owned(), "Europe/Berlin".to_owned())];
    let _daemon = t.start_daemon_with_env(&berlin);
    let ctl = |args: &[&str]| {
        common::Ctl(
            t.ctl_command(args)
                .env("TZ", "Europe/Berlin")
                .output()
                .unwrap(),
        )
    };
    // Clocks go from 02:00 to 03:00 on the last Sunday of March: the next such day's 02:00
    // does not exist, and the run comes when the clock jumps, at 03:00 summer time.
    let spring_forward = |year: i32| {
        let last = chrono::NaiveDate::from_ymd_opt(year, 3, 31).unwrap();
        last - chrono::TimeDelta::days(i64::from(last.weekday().num_days_from_sunday()))
    };
    let today = chrono::Local::now().date_naive();
    let mut day = spring_forward(today.year());
    if day <= today {
        day = spring_forward(today.year() + 1);
    }
    let cron = format!("0 2 {} 3 *", day.day());
    let src = t.work().join("src");
    ctl(&[
        "create",
        "--name",
        "gap",
        "--source",
        src.to_str().unwrap(),
        "--cron",
        &cron,
    ])
    .ok();
    let listed = ctl(&["list"]).ok();
    let expected = format!("next {} 03:00", day.format("%d/%m/%Y"));
    assert!(listed.contains(&expected), "{expected}: {listed}");
}

/// Writes `schedules` (one JSON object a line, as the daemon writes them) into a fresh home's
/// schedule file under `next_id`; returns the file's path and text.
fn hand_edited_file(t: &TestHome, next_id: u64, schedules: &[String]) -> (PathBuf, String) {
    std::fs::create_dir_all(t.home()).unwrap();
    let path = t.home().join("schedules.json");
    let text = format!(
        "{{\"version\":1,\"next_id\":{next_id},\"schedules\":[\n{}\n]}}\n",
        schedules.join(",\n")
    );
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

/// A daily schedule's line, with `extra` keys appended.
fn daily(t: &TestHome, id: u64, name: &str, extra: &str) -> String {
    let src = t.work().join("src");
    format!(
        r#"{{"id":{id},"name":"{name}","sources":["{}"],"kind":"daily",{}{extra}}}"#,
        src.display(),
        nothing_due()
    )
}

/// The `time` and `created` of a daily schedule with no occurrence due while a test runs:
/// made an hour ago, due in twelve hours. (A fixed date and time went due one day, and the
/// start's catch-up run then rewrote the file that tests expect untouched.)
fn nothing_due() -> String {
    let created = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    format!(
        r#""time":"{}","created":"{}""#,
        far_time(),
        created.format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// Starts the daemon on a home whose schedule file it must refuse: it exits, names the file
/// with `expected` in the reason, on stderr and to a `backupctl list`, and leaves the file
/// as it was. Returns the reason.
#[track_caller]
fn refused_at_start(t: &TestHome, path: &Path, text: &str, expected: &str) -> String {
    let mut daemon = t.spawn_daemon(&[]);
    assert!(!daemon.wait().success(), "the daemon refuses to start");
    let stderr = t.daemon_stderr();
    assert_eq!(stderr.lines().count(), 1, "said once: {stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains(expected), "{expected}: {stderr}");
    assert!(stderr.contains("backupd will not overwrite it"), "{stderr}");
    assert!(!t.socket().exists(), "no socket left behind");
    let out = t.ctl(&["list"]);
    assert_eq!(out.code(), 1, "{}", out.stdout());
    assert!(out.stderr().contains(expected), "{}", out.stderr());
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        text,
        "left as it was"
    );
    stderr
}

#[test]
fn a_schedule_file_giving_two_schedules_one_id_is_refused_and_left_untouched() {
    // A line copied to make a second schedule, its id left as it was: the one-shot's run and
    // removal used to act on the daily one (deleted without a word).
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    let now = chrono::Local::now();
    let once = format!(
        r#"{{"id":1,"name":"once","sources":["{}"],"kind":"once","time":"{}","due":"{}","created":"{}"}}"#,
        src.display(),
        now.format("%H:%M"),
        now.fixed_offset().to_rfc3339(),
        now.fixed_offset().to_rfc3339()
    );
    let (path, text) = hand_edited_file(&t, 3, &[daily(&t, 1, "nightly", ""), once]);
    let reason = refused_at_start(
        &t,
        &path,
        &text,
        r#"id 1 is shared by "nightly" and "once""#,
    );
    assert!(
        reason.contains("give each schedule its own id (3 and up are free"),
        "{reason}"
    );
}

#[test]
fn a_schedule_file_giving_two_schedules_one_name_is_refused() {
    let t = TestHome::new();
    let (path, text) = hand_edited_file(
        &t,
        9,
        &[
            daily(&t, 1, "docs", ""),
            daily(&t, 2, "mail", ""),
            daily(&t, 5, "docs", ""),
        ],
    );
    let reason = refused_at_start(
        &t,
        &path,
        &text,
        r#"the name "docs" is shared by ids 1 and 5"#,
    );
    assert!(
        reason.contains("give each schedule its own name"),
        "{reason}"
    );
    assert!(!reason.contains("own id"), "the ids are fine: {reason}");
}

#[test]
fn a_schedule_writing_archives_under_another_schedule_s_name_is_refused() {
    // `web` with sources `…/prod` and `…/other` names its archives `web-prod` and
    // `web-other`: its rotation deleted every backup of the schedule `web-prod`.
    let t = TestHome::new();
    for dir in ["prodsite", "web/prod", "web/other"] {
        std::fs::create_dir_all(t.work().join(dir)).unwrap();
    }
    let _daemon = t.start_daemon();
    t.ctl(&[
        "create", "--name", "web-prod", "--source", "prodsite", "--daily", "03:00",
    ])
    .ok();
    let two_sources = [
        "create",
        "--name",
        "web",
        "--source",
        "web/prod",
        "web/other",
        "--daily",
        "04:00",
    ];
    let refused = t.ctl(&two_sources);
    assert_eq!(refused.code(), 1);
    let expected = "schedule web would write archives named web-prod, as schedule web-prod \
                    does: the rotation of each would delete the other's backups";
    assert!(refused.stderr().contains(expected), "{}", refused.stderr());
    let names = |t: &TestHome| -> Vec<String> {
        listed(t)
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&t), ["web-prod"]);
    // A replacement is checked the same way, against the others only.
    t.ctl(&[
        "create",
        "--name",
        "web",
        "--source",
        "web/other",
        "--daily",
        "04:00",
    ])
    .ok();
    let mut replace = two_sources.to_vec();
    replace.push("--replace");
    let refused = t.ctl(&replace);
    assert_eq!(refused.code(), 1);
    assert!(refused.stderr().contains(expected), "{}", refused.stderr());
    t.ctl(&[
        "create",
        "--replace",
        "--name",
        "web-prod",
        "--source",
        "prodsite",
        "--daily",
        "05:00",
    ])
    .ok();
    assert_eq!(names(&t), ["web-prod", "web"]);
}

#[test]
fn schedules_of_a_file_writing_archives_under_one_name_are_named_at_start() {
    let t = TestHome::new();
    let _stop = StopOnDrop(&t);
    for dir in ["src", "web/prod", "web/other"] {
        std::fs::create_dir_all(t.work().join(dir)).unwrap();
    }
    let two_sources = format!(
        r#"{{"id":2,"name":"web","sources":["{}","{}"],"kind":"daily",{}}}"#,
        t.work().join("web/prod").display(),
        t.work().join("web/other").display(),
        nothing_due()
    );
    hand_edited_file(&t, 3, &[daily(&t, 1, "web-prod", ""), two_sources]);
    assert_eq!(t.ctl(&["start"]).ok(), "backupd started\n");
    let expected = "Error: Schedules web-prod and web both write archives named web-prod: the \
                    rotation of each deletes the other's backups; rename one (create --replace)";
    assert!(
        log_messages(&t.log()).iter().any(|m| m == expected),
        "{expected}: {}",
        t.log()
    );
}

#[test]
fn a_misspelled_key_in_a_schedule_is_refused_naming_it_and_the_schedule() {
    // `retension` was ignored: the schedule ran with the 7-day default, and rotation deleted
    // archives meant to be kept 30 days.
    let t = TestHome::new();
    let (path, text) = hand_edited_file(
        &t,
        3,
        &[
            daily(&t, 1, "docs", ""),
            daily(&t, 2, "mail", r#","retension":{"days":30}"#),
        ],
    );
    let reason = refused_at_start(&t, &path, &text, "unknown field `retension`");
    assert!(reason.contains(r#"in schedule "mail" (id 2)"#), "{reason}");
    assert!(reason.contains("at line 3 column"), "{reason}");

    // A key of another kind of schedule is just as ignored: refused too.
    let t = TestHome::new();
    let (path, text) = hand_edited_file(&t, 2, &[daily(&t, 1, "docs", r#","cron":"0 3 * * *""#)]);
    refused_at_start(&t, &path, &text, "unknown field `cron` for kind `daily`");

    // And at the top of the file.
    let t = TestHome::new();
    std::fs::create_dir_all(t.home()).unwrap();
    let path = t.home().join("schedules.json");
    let text = r#"{"version":1,"next_id":1,"nextid":7,"schedules":[]}"#;
    std::fs::write(&path, text).unwrap();
    refused_at_start(&t, &path, text, "unknown field `nextid`");
}

#[test]
fn a_next_id_not_above_every_id_is_raised_and_logged() {
    // Left as it was, the next `create` got id 1 again.
    let t = TestHome::new();
    let _stop = StopOnDrop(&t);
    std::fs::create_dir(t.work().join("src")).unwrap();
    let (path, _) = hand_edited_file(&t, 1, &[daily(&t, 1, "a", ""), daily(&t, 4, "b", "")]);
    assert_eq!(t.ctl(&["start"]).ok(), "backupd started\n");
    let expected = format!(
        "Warning: Schedule file {}: next_id 1 was not above every id (the highest is 4); raised it to 5, so that a new schedule gets an id of its own",
        path.display()
    );
    assert!(
        log_messages(&t.log()).contains(&expected),
        "{expected}: {}",
        t.log()
    );
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(saved["next_id"], 5, "saved: {saved}");
    t.ctl(&[
        "create", "--name", "c", "--source", "src", "--daily", "03:00",
    ])
    .ok();
    let listed: serde_json::Value = serde_json::from_str(&t.ctl(&["--json", "list"]).ok()).unwrap();
    let ids: Vec<u64> = listed["data"]["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 4, 5]);
    // Said once: the next start finds nothing to raise.
    t.ctl(&["stop"]).ok();
    assert_eq!(t.ctl(&["start"]).ok(), "backupd started\n");
    assert_eq!(t.log().matches("raised it to").count(), 1, "{}", t.log());
}

#[test]
fn every_key_the_daemon_writes_loads_again() {
    // The file is read strictly now: what the daemon itself wrote (every option, run records,
    // a run started and never finished, each kind) must still load, and load the same.
    let t = TestHome::new();
    let _stop = StopOnDrop(&t);
    std::fs::create_dir(t.work().join("src")).unwrap();
    let dest = t.work().join("dest");
    assert_eq!(t.ctl(&["start"]).ok(), "backupd started\n");
    t.ctl(&["create", &format!("src;{};once", far_time())]).ok();
    t.ctl(&[
        "create",
        "--name",
        "weekly",
        "--source",
        "src",
        "--cron",
        "0 3 * * 1",
    ])
    .ok();
    t.ctl(&[
        "create",
        "--name",
        "nightly",
        "--source",
        "src",
        "--daily",
        "03:00",
        "--destination",
        dest.to_str().unwrap(),
        "--compression",
        "zstd",
        "--level",
        "5",
        "--exclude",
        "*.tmp",
        "--retention-days",
        "30",
        "--keep-last",
        "4",
        "--verify-after",
        "--notify-on",
        "always",
        "--hook-timeout",
        "60",
        "--before",
        "true",
        "--finally",
        "true",
        "--source-command",
        "db.sql=echo dump",
    ])
    .ok();
    t.ctl(&["run", "--name", "nightly"]).ok();
    t.ctl(&["run", "--name", "nightly"]).ok();
    t.ctl(&["stop"]).ok();
    // A run started and never finished, as the daemon saves it, and the last due time.
    let path = t.home().join("schedules.json");
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let weekly = &mut file["schedules"][1];
    assert_eq!(weekly["name"], "weekly");
    weekly["last_due"] = "2026-11-23T03:00:00+01:00".into();
    weekly["started_run"] = serde_json::json!({
        "due": "2026-11-30T03:00:00+01:00", "at": "2026-11-30T03:00:01+01:00",
        "previous_due": "2026-11-23T03:00:00+01:00"
    });
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    let nightly = &file["schedules"][2];
    assert!(nightly["earlier_runs"].is_array(), "{nightly}");
    assert!(nightly["retention"].is_object(), "{nightly}");

    assert_eq!(t.ctl(&["start"]).ok(), "backupd started\n");
    let listed: serde_json::Value = serde_json::from_str(&t.ctl(&["--json", "list"]).ok()).unwrap();
    let nightly_listed = &listed["data"]["schedules"][2];
    for (key, value) in nightly.as_object().unwrap() {
        assert_eq!(&nightly_listed[key], value, "{key} kept");
    }
}

#[test]
fn a_next_id_at_the_last_id_refuses_a_create_and_keeps_the_file() {
    // It overflowed: a panic in the handler, or (release) id 0 and then ids already taken.
    let t = TestHome::new();
    let _stop = StopOnDrop(&t);
    std::fs::create_dir(t.work().join("src")).unwrap();
    let (path, text) = hand_edited_file(&t, u64::MAX, &[daily(&t, 1, "a", "")]);
    assert_eq!(t.ctl(&["start"]).ok(), "backupd started\n");
    for _ in 0..2 {
        let out = t.ctl(&[
            "create", "--name", "b", "--source", "src", "--daily", "03:00",
        ]);
        assert_eq!(out.code(), 1, "{}", out.stdout());
        let expected = format!(
            "no id left for a new schedule: next_id in {} is {}",
            path.display(),
            u64::MAX
        );
        assert!(out.stderr().contains(&expected), "{}", out.stderr());
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "unchanged");
    let listed = t.ctl(&["list"]).ok();
    assert!(listed.contains("a") && !listed.contains(" b "), "{listed}");
}

/// `list --json`'s schedules.
fn listed(t: &TestHome) -> Vec<serde_json::Value> {
    let list: serde_json::Value = serde_json::from_str(&t.ctl(&["--json", "list"]).ok()).unwrap();
    list["data"]["schedules"].as_array().unwrap().clone()
}

#[test]
fn create_replace_changes_a_schedule_in_place_keeping_its_id_runs_and_place() {
    let t = TestHome::new();
    for dir in ["src", "src2"] {
        std::fs::create_dir(t.work().join(dir)).unwrap();
        std::fs::write(t.work().join(dir).join("f"), b"x").unwrap();
    }
    let _daemon = t.start_daemon();
    let watcher = common::watcher::Watcher::start(&t);
    watcher.wait_until_watching(&t, "src", "early");
    let docs = [
        "create", "--name", "docs", "--source", "src", "--daily", "03:00",
    ];
    t.ctl(&docs).ok();
    t.ctl(&[
        "create", "--name", "later", "--source", "src", "--daily", "04:00",
    ])
    .ok();
    t.ctl(&["run", "--name", "docs"]).ok();
    let before = listed(&t);
    let (position, original) = before
        .iter()
        .enumerate()
        .find(|(_, s)| s["name"] == "docs")
        .unwrap();

    let refused = t.ctl(&docs);
    assert_eq!(refused.code(), 1);
    assert!(
        refused.stderr().contains("already exists") && refused.stderr().contains("--replace"),
        "{}",
        refused.stderr()
    );

    let replace = [
        "create",
        "--replace",
        "--name",
        "docs",
        "--source",
        "src2",
        "--daily",
        "03:00",
        "--exclude",
        "*.tmp",
        "--retention-days",
        "30",
    ];
    assert_eq!(t.ctl(&replace).ok(), "Schedule docs replaced\n");
    let after = listed(&t);
    assert_eq!(after.len(), before.len(), "replaced, not added");
    let replaced = &after[position];
    assert_eq!(replaced["name"], "docs", "in its place");
    for kept in ["id", "created", "last_run", "last_success", "last_due"] {
        assert_eq!(replaced[kept], original[kept], "{kept}");
    }
    assert!(replaced["last_success"].is_string());
    let src2 = t.work().join("src2").display().to_string();
    assert_eq!(replaced["sources"], serde_json::json!([src2]));
    assert_eq!(replaced["exclude"], serde_json::json!(["*.tmp"]));
    assert_eq!(replaced["retention"]["days"], 30);
    assert!(
        log_messages(&t.log())
            .iter()
            .any(|m| m.starts_with("Schedule replaced: docs")),
        "{}",
        t.log()
    );
    // The probes of the watch's start may still come: skipped.
    let next_change = || {
        loop {
            let event = watcher.next("schedule_changed");
            if !event["name"].as_str().unwrap().starts_with("early_") {
                return (event["name"].clone(), event["change"].clone());
            }
        }
    };
    assert_eq!(next_change(), ("docs".into(), "created".into()));
    assert_eq!(next_change(), ("later".into(), "created".into()));
    assert_eq!(next_change(), ("docs".into(), "replaced".into()));

    // Validated as a create is: a bad definition changes nothing.
    let bad = t.ctl(&[
        "create",
        "--replace",
        "--name",
        "docs",
        "--source",
        "nowhere",
        "--daily",
        "03:00",
    ]);
    assert_eq!(bad.code(), 1);
    assert!(
        bad.stderr().contains("can't find source directory"),
        "{}",
        bad.stderr()
    );
    assert_eq!(listed(&t), after);

    // No schedule of that name: created, silently as a create, and said so in --json.
    let (code, answer) = common::ctl_json(
        &t,
        &[
            "create",
            "--replace",
            "--name",
            "new",
            "--source",
            "src",
            "--cron",
            "0 5 * * *",
        ],
    );
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["data"].get("replaced"), None, "{answer}");
    assert_eq!(next_change(), ("new".into(), "created".into()));
    let (_, answer) = common::ctl_json(
        &t,
        &[
            "create",
            "--replace",
            "--name",
            "new",
            "--source",
            "src",
            "--cron",
            "0 6 * * *",
        ],
    );
    assert_eq!(answer["data"]["replaced"], true, "{answer}");
    assert_eq!(answer["data"]["schedule"]["cron"], "0 6 * * *");

    // A one-shot too, by its name.
    let spec = format!("src2;{};docs", far_time());
    assert_eq!(
        t.ctl(&["create", "--replace", &spec]).ok(),
        "Schedule docs replaced\n"
    );
    let one_shot = &listed(&t)[position];
    assert_eq!(one_shot["kind"], "once");
    assert_eq!(one_shot["id"], original["id"]);
    assert_eq!(one_shot["last_run"], original["last_run"]);
}

#[test]
fn a_raw_create_with_replace_true_replaces_and_without_it_is_refused() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    let _daemon = t.start_daemon();
    let mut client = common::Client::connect(&t.socket()).unwrap();
    let create = |replace: &str, time: &str| {
        format!(
            r#"{{"cmd":"create","name":"raw","sources":["{}"],"daily":"{time}"{replace}}}"#,
            src.display()
        )
    };
    let first = client.request(&create("", "01:00"));
    assert_eq!(first["ok"], true, "{first}");
    let id = first["data"]["schedule"]["id"].clone();
    let again = client.request(&create("", "02:00"));
    assert_eq!(again["ok"], false);
    assert_eq!(again["error"]["code"], "schedule_exists", "{again}");
    let replaced = client.request(&create(r#","replace":true"#, "02:00"));
    assert_eq!(replaced["ok"], true, "{replaced}");
    assert_eq!(replaced["data"]["replaced"], true);
    assert_eq!(replaced["data"]["schedule"]["id"], id);
    assert_eq!(replaced["data"]["schedule"]["time"], "02:00");
}

/// A fresh home holding schedule `docs`, daily an hour from now, dealt with up to two hours
/// ago: not due yet. Returns its `last_due`.
fn home_with_a_daily_due_in_an_hour(t: &TestHome) -> String {
    std::fs::create_dir(t.work().join("src")).unwrap();
    let now = chrono::Local::now();
    let dealt_with = (now - chrono::TimeDelta::hours(2)).to_rfc3339();
    let line = daily(t, 1, "docs", &format!(r#","last_due":"{dealt_with}""#)).replace(
        r#""time":"02:00""#,
        &format!(r#""time":"{}""#, in_an_hour()),
    );
    hand_edited_file(t, 2, &[line]);
    dealt_with
}

fn in_an_hour() -> String {
    (chrono::Local::now() + chrono::TimeDelta::hours(1))
        .format("%H:%M")
        .to_string()
}

#[test]
fn a_replacement_with_the_same_timing_keeps_the_occurrences_dealt_with() {
    let t = TestHome::new();
    let dealt_with = home_with_a_daily_due_in_an_hour(&t);
    let _daemon = t.start_daemon();
    let time = listed(&t)[0]["time"].as_str().unwrap().to_owned();
    let (code, answer) = common::ctl_json(
        &t,
        &[
            "create",
            "--replace",
            "--name",
            "docs",
            "--source",
            "src",
            "--daily",
            &time,
            "--level",
            "9",
        ],
    );
    assert_eq!(code, 0, "{answer}");
    let schedule = &answer["data"]["schedule"];
    assert_eq!(schedule["level"], 9);
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(schedule["last_due"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&dealt_with).unwrap(),
        "nothing dealt with, nothing skipped"
    );
}

#[test]
fn a_replacement_with_a_new_timing_counts_from_now_and_catches_nothing_up() {
    let t = TestHome::new();
    // Dealt with two hours ago: the new time, an hour ago, has come since, and would be
    // caught up (or skipped as missed) at once if it counted from then.
    home_with_a_daily_due_in_an_hour(&t);
    let _daemon = t.start_daemon();
    let an_hour_ago = (chrono::Local::now() - chrono::TimeDelta::hours(1))
        .format("%H:%M")
        .to_string();
    let asked = chrono::Local::now();
    let (code, answer) = common::ctl_json(
        &t,
        &[
            "create",
            "--replace",
            "--name",
            "docs",
            "--source",
            "src",
            "--daily",
            &an_hour_ago,
        ],
    );
    assert_eq!(code, 0, "{answer}");
    let schedule = &answer["data"]["schedule"];
    let last_due =
        chrono::DateTime::parse_from_rfc3339(schedule["last_due"].as_str().unwrap()).unwrap();
    assert!(
        last_due >= asked - chrono::TimeDelta::seconds(1),
        "{last_due} < {asked}"
    );
    let next =
        chrono::DateTime::parse_from_rfc3339(schedule["next_run"].as_str().unwrap()).unwrap();
    assert!(
        next > asked + chrono::TimeDelta::hours(22),
        "tomorrow: {next}"
    );
    // The scheduler, woken by the change, finds nothing to do.
    t.ctl(&["status"]).ok();
    let messages = log_messages(&t.log());
    assert!(
        !messages
            .iter()
            .any(|m| m.contains("Catching up") || m.contains("Missed run")),
        "{messages:?}"
    );
    assert_eq!(listed(&t)[0]["last_run"], serde_json::Value::Null);
}

#[test]
fn a_run_going_on_finishes_with_its_settings_and_the_replacement_applies_next() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let (old_dest, new_dest) = (t.work().join("old"), t.work().join("new"));
    let (started, release) = (t.work().join("STARTED"), t.work().join("FLAG"));
    // Holds the run until the test releases it.
    let hold = format!(
        "sh -c 'touch {}; while [ ! -e {} ]; do sleep 0.05; done'",
        started.display(),
        release.display()
    );
    let _daemon = t.start_daemon();
    t.ctl(&[
        "create",
        "--name",
        "docs",
        "--source",
        "src",
        "--daily",
        &far_time(),
        "--destination",
        old_dest.to_str().unwrap(),
        "--before",
        &hold,
    ])
    .ok();
    let id = listed(&t)[0]["id"].clone();
    t.ctl(&["run", "--name", "docs", "--detach"]).ok();
    common::wait_for(common::PATIENCE, "the run's before hook", || {
        started.exists().then_some(())
    });

    let replace = [
        "create",
        "--replace",
        "--name",
        "docs",
        "--source",
        "src",
        "--daily",
        &far_time(),
        "--destination",
        new_dest.to_str().unwrap(),
    ];
    assert_eq!(t.ctl(&replace).ok(), "Schedule docs replaced\n");
    std::fs::write(&release, b"").unwrap();
    let recorded = common::wait_for(common::PATIENCE, "the run's record", || {
        let schedule = listed(&t)[0].clone();
        (!schedule["last_run"].is_null()).then_some(schedule)
    });
    assert_eq!(recorded["id"], id, "recorded into the same schedule");
    assert_eq!(recorded["last_run"]["ok"], true, "{recorded}");
    assert_eq!(recorded["destination"], new_dest.display().to_string());
    let archives = |dir: &Path| {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".tar.gz")
                })
                .count()
        })
    };
    assert_eq!(
        archives(&old_dest),
        1,
        "written with the settings it began with"
    );
    assert_eq!(archives(&new_dest), 0);

    // The next run has the new settings: no hook to hold it, the new destination.
    std::fs::remove_file(&started).unwrap();
    t.ctl(&["run", "--name", "docs"]).ok();
    assert!(!started.exists(), "the old hook is gone");
    assert_eq!(archives(&new_dest), 1);
    let runs = listed(&t)[0].clone();
    assert_eq!(runs["earlier_runs"].as_array().unwrap().len(), 1, "{runs}");
}
