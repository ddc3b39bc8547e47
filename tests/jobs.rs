//! Jobs: `status`, `jobs`, `cancel` and `watch` against real runs of a source that never
//! finishes on its own (a huge sparse file), Ctrl-C in `backupctl run`, and `run --detach`.

mod common;

use common::watcher::Watcher;
use common::{Client, PATIENCE, TestHome, log_messages, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn json(t: &TestHome, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = t.ctl(&full);
    serde_json::from_str(&out.stdout()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.expect("dir entry").path()).collect())
        .unwrap_or_default()
}

/// Sends a run of `src` on a raw connection, with `id` 1, and returns the connection.
fn start_run(t: &TestHome, src: &Path) -> Client {
    let mut client = Client::connect(&t.socket()).expect("connect");
    let request = serde_json::json!({"id": 1, "cmd": "run", "sources": [src]});
    client.send_bytes(format!("{request}\n").as_bytes());
    client
}

/// The running job, once it has written some bytes.
fn job_with_progress(t: &TestHome) -> Value {
    wait_for(PATIENCE, "a job with progress", || {
        let jobs = json(t, &["jobs"]);
        let job = jobs["data"]["jobs"].get(0)?.clone();
        (job["bytes_in"].as_u64()? > 0).then_some(job)
    })
}

#[test]
fn status_and_jobs_show_a_running_job_and_cancel_by_name_stops_it_cleanly() {
    let t = TestHome::new();
    let src = common::sparse_source(&t, "big", common::ENDLESS);
    std::fs::create_dir(t.work().join("docs")).unwrap();
    let _daemon = t.start_daemon();
    // A schedule whose destination does not exist yet: status says so.
    t.ctl(&[
        "create",
        "--name",
        "nightly",
        "--source",
        "docs",
        "--daily",
        "02:00",
        "--destination",
        "later",
    ])
    .ok();
    let mut run = start_run(&t, &src);

    let job = job_with_progress(&t);
    assert_eq!(job["id"], 1);
    assert_eq!(job["name"], "big");
    assert_eq!(job["state"], "running");
    assert_eq!(job["source"], src.display().to_string());
    assert!(
        job["archive"].as_str().unwrap().ends_with(".tar.gz"),
        "{job}"
    );

    let status = json(&t, &["status"]);
    let data = &status["data"];
    assert_eq!(data["home"], t.home().display().to_string());
    assert_eq!(data["socket"], t.socket().display().to_string());
    assert_eq!(data["jobs"][0]["id"], 1);
    assert!(data["jobs"][0]["bytes_in"].as_u64().unwrap() > 0);
    assert_eq!(data["next_run"]["name"], "nightly");
    let backups = &data["destinations"][0];
    assert_eq!(
        backups["path"],
        t.home().join("backups").display().to_string()
    );
    assert_eq!(backups["exists"], true);
    assert!(backups["free_bytes"].as_u64().unwrap() > 0);
    let later = &data["destinations"][1];
    assert_eq!(later["path"], t.work().join("later").display().to_string());
    assert_eq!(later["exists"], false);

    let text = t.ctl(&["status"]).ok();
    assert!(text.contains("\n  #1 big running "), "{text}");
    assert!(text.contains(" free of "), "{text}");
    assert!(
        text.contains(&format!("{}: missing", t.work().join("later").display())),
        "{text}"
    );
    assert!(text.contains("next run: nightly at "), "{text}");
    let listed = t.ctl(&["jobs"]).ok();
    assert!(listed.starts_with("#1 big running "), "{listed}");
    assert!(
        listed.trim_end().ends_with(&src.display().to_string()),
        "{listed}"
    );

    let cancelled = t.ctl(&["cancel", "--name", "big"]).ok();
    assert_eq!(
        cancelled,
        format!("Cancelled job 1 (big): {}\n", src.display())
    );
    let answer = run.read_response();
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["error"]["code"], "backup_failed");
    assert_eq!(answer["error"]["message"], "1 of 1 sources cancelled");
    let source = &answer["data"]["sources"][0];
    assert_eq!(source["cancelled"], true);
    // How far it got, as its last progress said.
    assert!(source["bytes_in"].as_u64().unwrap() > 0, "{source}");
    assert!(source["duration_ms"].as_u64().unwrap() > 0, "{source}");
    let error = source["error"].as_str().unwrap();
    assert_eq!(
        error,
        format!(
            "Backup cancelled for {}: cancelled by request",
            src.display()
        )
    );
    assert_eq!(files_in(&t.home().join("backups")), Vec::<PathBuf>::new());
    assert_eq!(json(&t, &["jobs"])["data"]["jobs"], serde_json::json!([]));
    let log = log_messages(&t.log());
    assert!(
        log.contains(&format!("Warning: [big #1] {error}")),
        "{log:#?}"
    );
}

#[test]
fn cancelling_an_unknown_job_is_a_clear_error() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let by_id = t.ctl(&["cancel", "7"]);
    assert_eq!(by_id.code(), 1);
    assert_eq!(by_id.stderr(), "Error: no running job with id 7\n");
    let by_name = json(&t, &["cancel", "--name", "nothing"]);
    assert_eq!(by_name["error"]["code"], "job_not_found");
    assert_eq!(by_name["error"]["message"], "no running job named nothing");
    let mut client = Client::connect(&t.socket()).unwrap();
    let both = client.request(r#"{"cmd":"cancel","job":1,"name":"x"}"#);
    assert_eq!(both["error"]["code"], "invalid_arguments");
}

#[test]
fn status_shows_the_error_text_of_a_failed_schedule_run() {
    let t = TestHome::new();
    let src = t.work().join("docs");
    std::fs::create_dir(&src).unwrap();
    let _daemon = t.start_daemon();
    t.ctl(&[
        "create", "--name", "docs", "--source", "docs", "--daily", "02:00",
    ])
    .ok();
    std::fs::remove_dir(&src).unwrap();
    assert_eq!(t.ctl(&["run", "--name", "docs"]).code(), 1);
    let status = json(&t, &["status"]);
    let last = &status["data"]["schedules"][0]["last_run"];
    assert_eq!(last["ok"], false);
    let error = last["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("Backup failed for {}", src.display())),
        "{error}"
    );
    let text = t.ctl(&["status"]).ok();
    assert!(text.contains(&format!(": {error})")), "{text}");
    assert!(text.contains("jobs: none running"), "{text}");
}

#[test]
fn watch_follows_schedule_changes_and_a_run_from_start_to_finish() {
    let t = TestHome::new();
    let src = t.work().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), vec![3u8; 200_000]).unwrap();
    let _daemon = t.start_daemon();
    let watcher = Watcher::start(&t);
    let first = watcher.wait_until_watching(&t, "src", "one");
    assert_eq!(first["event"], "schedule_changed");
    assert_eq!(first["change"], "created");
    assert!(first["name"].as_str().unwrap().starts_with("one_"));

    t.ctl(&["run", "--sources", "src"]).ok();
    let started = watcher.next("job_started");
    assert_eq!(started["name"], "src");
    assert_eq!(started["source"], src.display().to_string());
    let job = started["job"].clone();
    let progress = watcher.next("job_progress");
    assert_eq!(progress["job"], job);
    let finished = watcher.next("job_finished");
    assert_eq!(finished["job"], job);
    assert!(finished["archive"].as_str().unwrap().ends_with(".tar.gz"));
    assert!(finished["size_bytes"].as_u64().unwrap() > 0);

    t.ctl(&["delete", "--name", "one_1"]).ok();
    let deleted = watcher.next("schedule_changed");
    assert_eq!(deleted["change"], "deleted");
    assert_eq!(deleted["name"], "one_1");
}

#[test]
fn ctrl_c_in_backupctl_run_cancels_the_run_and_waits_for_its_report() {
    let t = TestHome::new();
    let src = common::sparse_source(&t, "big", common::ENDLESS);
    let _daemon = t.start_daemon();
    let run = t
        .ctl_command(&["run", "--sources", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    job_with_progress(&t);
    let status = Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Error: 1 of 1 sources cancelled"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "Failed: Backup cancelled for {}: cancelled by request",
            src.display()
        )),
        "{stdout}"
    );
    assert_eq!(files_in(&t.home().join("backups")), Vec::<PathBuf>::new());
    t.ctl(&["status"]).ok();
}

#[test]
fn a_detached_run_prints_its_jobs_returns_and_goes_on_until_cancelled() {
    let t = TestHome::new();
    let src = common::sparse_source(&t, "big", common::ENDLESS);
    let _daemon = t.start_daemon();
    let out = t.ctl(&["run", "--sources", "big", "--detach"]).ok();
    assert_eq!(out, format!("Started job 1: big ({})\n", src.display()));
    // The client is gone; the job goes on.
    let job = job_with_progress(&t);
    assert_eq!(job["id"], 1);
    t.ctl(&["cancel", "1"]).ok();
    wait_for(PATIENCE, "the cancelled job to end", || {
        let jobs = json(&t, &["jobs"]);
        jobs["data"]["jobs"].as_array()?.is_empty().then_some(())
    });
    assert_eq!(files_in(&t.home().join("backups")), Vec::<PathBuf>::new());

    // With --json the answer is the `run_started` line. Detached, a missing source is its
    // job's failure, not the client's: a `before` hook may be what makes it.
    let out = t
        .ctl(&["--json", "run", "--sources", "gone", "--detach"])
        .ok();
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["event"], "run_started", "{out}");
    assert_eq!(line["jobs"][0]["name"], "gone", "{out}");

    // A source is printed on one line whatever it holds: a newline in it forged a line.
    let out = t
        .ctl(&["run", "--sources", "gone\nStarted job 9: x", "--detach"])
        .ok();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.ends_with("gone\\nStarted job 9: x)\n"), "{out}");
}

#[test]
fn a_cancel_after_the_archive_is_written_says_the_archive_stays() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("docs")).unwrap();
    std::fs::write(t.work().join("docs/a.txt"), "a").unwrap();
    let _daemon = t.start_daemon();
    let (started, release) = (t.work().join("started"), t.work().join("release"));
    // An after hook that holds the job, its archive written, until the test lets it go.
    let hold = format!(
        "sh -c 'touch {}; while [ ! -e {} ]; do sleep 0.05; done'",
        started.display(),
        release.display()
    );
    let run = t
        .ctl_command(&["--json", "run", "--sources", "docs", "--after", &hold])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(PATIENCE, "the after hook", || {
        started.exists().then_some(())
    });

    let jobs = json(&t, &["jobs"]);
    assert_eq!(jobs["data"]["jobs"][0]["state"], "finishing", "{jobs}");
    let out = t.ctl(&["--json", "cancel", "--name", "docs"]);
    let answer: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(
        answer["data"]["cancelled"][0]["state"], "finishing",
        "{answer}"
    );
    let text = t.ctl(&["cancel", "--name", "docs"]).ok();
    assert!(text.contains("which is kept"), "{text}");

    std::fs::write(&release, "").unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let archive = report["data"]["sources"][0]["archive"].as_str().unwrap();
    assert!(Path::new(archive).exists(), "{report}");
}
