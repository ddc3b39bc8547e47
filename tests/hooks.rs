//! Hooks (`--before`, `--after`, `--on-failure`, `--finally`) through `backupctl`, the raw
//! protocol and `[defaults]`, their environment, log lines, timeout and shutdown; and the
//! Prometheus textfile `<home>/metrics/backupd.prom`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Client, TestHome, run_json, wait_for};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn source(t: &TestHome) -> std::path::PathBuf {
    let dir = t.work().join("docs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), b"hello\n").unwrap();
    dir
}

/// `KEY=value` lines as a map.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn archives_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tar"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn after_and_finally_hooks_get_the_jobs_facts_and_log_their_output() {
    let t = TestHome::new();
    source(&t);
    let _daemon = t.start_daemon();
    let after_env = t.work().join("after.env");
    let finally = t.work().join("finally");
    let after = format!(
        "sh -c 'env | grep ^BACKUPD_ > {}; echo said-by-hook'",
        after_env.display()
    );
    let finally_hook = format!("sh -c 'echo \"$BACKUPD_STATUS\" > {}'", finally.display());
    let on_failure = format!("touch {}", t.work().join("on-failure-ran").display());
    let (code, answer) = run_json(
        &t,
        &[
            "--sources",
            "docs",
            "--after",
            &after,
            "--on-failure",
            &on_failure,
            "--finally",
            &finally_hook,
        ],
    );
    assert_eq!(code, 0, "{answer}");
    let report = &answer["data"]["sources"][0];
    let env = env_file(&after_env);
    assert_eq!(env["BACKUPD_NAME"], "docs");
    assert_eq!(env["BACKUPD_STATUS"], "success");
    assert_eq!(env["BACKUPD_ARCHIVE"], report["archive"].as_str().unwrap());
    assert_eq!(
        env["BACKUPD_MANIFEST"],
        report["manifest"].as_str().unwrap()
    );
    assert_eq!(
        env["BACKUPD_SHA256"],
        report["checksum_sha256"].as_str().unwrap()
    );
    assert_eq!(env["BACKUPD_SIZE_BYTES"], report["size_bytes"].to_string());
    assert_eq!(env.get("BACKUPD_ERROR").map(String::as_str), Some(""));
    assert_eq!(std::fs::read_to_string(&finally).unwrap(), "success\n");
    assert!(
        !t.work().join("on-failure-ran").exists(),
        "on-failure ran after a success"
    );
    let log = t.log();
    assert!(
        log.lines()
            .any(|l| l.contains("[docs #") && l.ends_with("after hook: said-by-hook")),
        "{log}"
    );
}

#[test]
fn a_failing_before_hook_fails_the_job_before_anything_is_written() {
    let t = TestHome::new();
    source(&t);
    let _daemon = t.start_daemon();
    let failure = t.work().join("failure.env");
    let on_failure = format!("sh -c 'env | grep ^BACKUPD_ > {}'", failure.display());
    let (code, answer) = run_json(
        &t,
        &[
            "--sources",
            "docs",
            "--before",
            "sh -c 'echo no-db >&2; exit 7'",
            "--on-failure",
            &on_failure,
        ],
    );
    assert_eq!(code, 1, "{answer}");
    let error = answer["data"]["sources"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("before hook failed: exit status: 7"),
        "{error}"
    );
    assert!(archives_in(&t.home().join("backups")).is_empty());
    let env = env_file(&failure);
    assert_eq!(env["BACKUPD_STATUS"], "failure");
    assert!(
        env["BACKUPD_ERROR"].contains("before hook failed"),
        "{env:?}"
    );
    assert_eq!(env["BACKUPD_SIZE_BYTES"], "0");
    assert!(t.log().contains("before hook: no-db"), "{}", t.log());
}

#[test]
fn a_hanging_hook_is_killed_with_its_process_group_after_its_timeout() {
    let t = TestHome::new();
    source(&t);
    let _daemon = t.start_daemon();
    let pidfile = t.work().join("sleeper.pid");
    let hang = format!("sh -c 'sleep 300 & echo $! > {}; wait'", pidfile.display());
    let started = Instant::now();
    let (code, answer) = run_json(
        &t,
        &["--sources", "docs", "--after", &hang, "--hook-timeout", "1"],
    );
    // The archive stands: an after hook's failure is logged, not the job's.
    assert_eq!(code, 0, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        t.log()
            .contains("after hook timed out after 1 s and was killed"),
        "{}",
        t.log()
    );
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    wait_for(
        Duration::from_secs(10),
        "the hook's background sleep to die",
        || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z "))
                .then_some(())
        },
    );
}

#[test]
fn stopping_the_daemon_kills_a_running_hook() {
    let t = TestHome::new();
    source(&t);
    let mut daemon = t.start_daemon();
    let mut client = Client::connect(&t.socket()).unwrap();
    let request = json!({"cmd": "run", "sources": [t.work().join("docs")], "hooks": {"after": ["sleep", "300"]}});
    client.send_bytes(format!("{request}\n").as_bytes());
    wait_for(Duration::from_secs(30), "the hook to start", || {
        t.log()
            .contains("Running after hook: sleep 300")
            .then_some(())
    });
    let started = Instant::now();
    t.ctl(&["stop"]).ok();
    assert!(daemon.wait().success());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown waited for the hook"
    );
    assert!(
        t.log().contains("after hook killed: backupd is stopping"),
        "{}",
        t.log()
    );
}

#[test]
fn a_job_the_stop_cancels_still_runs_its_on_failure_and_finally_hooks() {
    // `--before "systemctl stop app"` / `--finally "systemctl start app"`: a stop during the
    // backup must not leave the app stopped.
    let t = TestHome::new();
    source(&t);
    let mut daemon = t.start_daemon();
    let started = t.work().join("dump-started");
    let dump = format!("touch {}; exec sleep 300", started.display());
    // Each takes a second, so a kill as it starts cannot miss it.
    let hook = |file: &str, what: &str| {
        let path = t.work().join(file);
        let argv = json!([
            "sh",
            "-c",
            format!("sleep 1; echo {what} > {}", path.display())
        ]);
        (path, argv)
    };
    let (on_failure, on_failure_hook) = hook("on-failure", "$BACKUPD_STATUS");
    let (finally, finally_hook) = hook("finally", "restarted");
    let mut client = Client::connect(&t.socket()).unwrap();
    let request = json!({
        "cmd": "run",
        "sources": [t.work().join("docs")],
        "source_commands": [{"name": "db.sql", "command": ["sh", "-c", dump]}],
        "hooks": {"on_failure": on_failure_hook, "finally": finally_hook}
    });
    client.send_bytes(format!("{request}\n").as_bytes());
    wait_for(common::PATIENCE, "the job to start", || {
        started.exists().then_some(())
    });
    t.ctl(&["stop"]).ok();
    assert!(daemon.wait().success());
    let log = t.log();
    assert!(!log.contains("hook killed"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&on_failure).ok().as_deref(),
        Some("cancelled\n"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&finally).ok().as_deref(),
        Some("restarted\n"),
        "{log}"
    );
}

#[test]
fn hooks_come_over_the_raw_protocol_and_from_the_configs_defaults() {
    let t = TestHome::new();
    source(&t);
    let marker = t.work().join("from-defaults");
    std::fs::create_dir_all(t.home()).unwrap();
    std::fs::write(
        t.home().join("backupd.toml"),
        format!(
            "[defaults]\nhook_timeout = 30\nhooks = {{ finally = [\"touch\", \"{}\"] }}\n",
            marker.display()
        ),
    )
    .unwrap();
    let _daemon = t.start_daemon();
    let before = t.work().join("before-ran");
    let mut client = Client::connect(&t.socket()).unwrap();
    let request = json!({
        "cmd": "run",
        "sources": [t.work().join("docs")],
        "hooks": {"before": ["touch", before]}
    });
    let answer = client.request(&request.to_string());
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(before.exists(), "the request's before hook did not run");
    assert!(marker.exists(), "the configured finally hook did not run");
    let bad = client_request(
        &t,
        &json!({"cmd": "run", "sources": ["/x"], "hooks": {"befor": ["x"]}}),
    );
    assert_eq!(bad["ok"], false, "{bad}");
    assert!(
        bad["error"]["message"].as_str().unwrap().contains("befor"),
        "{bad}"
    );
}

#[test]
fn a_hook_timeout_of_0_is_refused_by_the_client_and_the_daemon() {
    // It would kill every hook as it starts.
    let t = TestHome::new();
    let docs = source(&t);
    let _daemon = t.start_daemon();
    let out = t.ctl(&[
        "run",
        "--sources",
        "docs",
        "--before",
        "true",
        "--hook-timeout",
        "0",
    ]);
    assert_eq!(out.code(), 2, "{}", out.stderr());
    assert!(
        out.stderr().contains("--hook-timeout")
            && out.stderr().contains("must be at least 1 second"),
        "{}",
        out.stderr()
    );
    let run = json!({"cmd": "run", "sources": [docs], "hooks": {"before": ["true"]},
        "hook_timeout": 0});
    let create = json!({"cmd": "create", "name": "docs", "sources": [docs],
        "daily": common::far_time(), "hook_timeout": 0});
    for request in [run, create] {
        let answer = client_request(&t, &request);
        assert_eq!(answer["error"]["code"], "invalid_arguments", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("hook_timeout must be at least 1 second"),
            "{message}"
        );
    }
    assert!(!t.log().contains("Running before hook"), "{}", t.log());
    assert!(archives_in(&t.home().join("backups")).is_empty());
}

fn client_request(t: &TestHome, request: &Value) -> Value {
    Client::connect(&t.socket())
        .unwrap()
        .request(&request.to_string())
}

fn metrics_path(t: &TestHome) -> std::path::PathBuf {
    t.home().join("metrics/backupd.prom")
}

/// `name{labels} value` lines of the metrics file, after checking that every family has its
/// `# HELP` and `# TYPE` lines, as node_exporter's textfile collector wants.
fn metrics_text(text: &str) -> BTreeMap<String, String> {
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' ').map(|(name, _)| name))
        .collect();
    let helped = text.lines().filter(|l| l.starts_with("# HELP ")).count();
    assert_eq!(typed.len(), helped, "{text}");
    let samples: BTreeMap<String, String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            assert!(v.parse::<f64>().is_ok(), "not a number: {l:?}");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    for key in samples.keys() {
        let family = key.split('{').next().unwrap();
        assert!(typed.contains(&family), "{family} has no # TYPE line");
    }
    samples
}

fn metrics(t: &TestHome) -> BTreeMap<String, String> {
    metrics_text(&std::fs::read_to_string(metrics_path(t)).unwrap())
}

/// The metric names of README's "Monitoring" sample.
fn readme_metric_names() -> Vec<String> {
    let readme = include_str!("../README.md");
    let section = &readme[readme.find("## Monitoring").unwrap()..];
    let sample = &section[section.find("```text\n").unwrap() + 8..];
    let sample = &sample[..sample.find("```").unwrap()];
    sample
        .lines()
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

#[test]
fn metrics_are_written_at_start_and_after_every_run() {
    let t = TestHome::new();
    source(&t);
    let _daemon = t.start_daemon();
    // Written beside serving, never before it: the daemon answered already; the file follows.
    let at_start = wait_for(common::PATIENCE, "metrics at start", || {
        std::fs::read_to_string(metrics_path(&t)).ok()
    });
    let at_start = metrics_text(&at_start);
    assert_eq!(at_start["backupd_up"], "1");
    let version = format!(
        "backupd_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(at_start[&version], "1");
    t.ctl(&[
        "create", "--name", "nightly", "--source", "docs", "--daily", "03:00",
    ])
    .ok();
    let before = chrono::Utc::now().timestamp();
    let answer = client_request(&t, &json!({"cmd": "run", "schedule": "nightly"}));
    assert_eq!(answer["ok"], true, "{answer}");
    let report = &answer["data"]["sources"][0];
    let m = metrics(&t);
    let of = |family: &str| m[&format!("{family}{{schedule=\"nightly\"}}")].clone();
    assert_eq!(of("backupd_schedule_last_status"), "1");
    assert_eq!(of("backupd_schedule_archives"), "1");
    assert_eq!(
        of("backupd_schedule_last_size_bytes"),
        report["size_bytes"].to_string()
    );
    let success: i64 = of("backupd_schedule_last_success_timestamp_seconds")
        .parse()
        .unwrap();
    assert!(success >= before - 1, "{success} < {before}");
    let last_run: i64 = of("backupd_schedule_last_run_timestamp_seconds")
        .parse()
        .unwrap();
    assert_eq!(last_run, success);
    let duration: f64 = of("backupd_schedule_last_duration_seconds")
        .parse()
        .unwrap();
    assert!((0.0..60.0).contains(&duration));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(metrics_path(&t)).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o644);
    // README's sample names exactly the families the daemon writes.
    let mut written: Vec<String> = m
        .keys()
        .map(|k| k.split('{').next().unwrap().to_owned())
        .collect();
    written.sort();
    written.dedup();
    let mut documented = readme_metric_names();
    documented.sort();
    documented.dedup();
    assert_eq!(written, documented);

    // A one-off run rewrites the file too, here with a second archive of the schedule's name.
    std::fs::remove_file(metrics_path(&t)).unwrap();
    let out = t.ctl(&["run", "--sources", "docs", "--name", "nightly"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let m = metrics(&t);
    assert_eq!(m["backupd_schedule_archives{schedule=\"nightly\"}"], "2");

    // A failed run: status 0, the last success stays.
    std::fs::remove_dir_all(t.work().join("docs")).unwrap();
    let answer = client_request(&t, &json!({"cmd": "run", "schedule": "nightly"}));
    assert_eq!(answer["data"]["failed"], 1, "{answer}");
    let m = metrics(&t);
    assert_eq!(m["backupd_schedule_last_status{schedule=\"nightly\"}"], "0");
    assert_eq!(
        m["backupd_schedule_last_success_timestamp_seconds{schedule=\"nightly\"}"],
        success.to_string()
    );
}

#[test]
fn the_readme_hooks_example_stops_and_starts_the_worker_and_records_the_status() {
    let t = TestHome::new();
    let app = t.work().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("data.txt"), b"data\n").unwrap();
    // `systemctl` here records what it was asked, into calls.txt.
    let systemctl = t.work().join("systemctl");
    let calls = t.work().join("calls.txt");
    std::fs::write(
        &systemctl,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &systemctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let status = t.work().join("backup-status");
    let _daemon = t.start_daemon();
    let examples = common::readme_examples("Hooks");
    let script = examples["hooks"]
        .replace("/srv/app", &app.display().to_string())
        .replace("systemctl", &systemctl.display().to_string())
        .replace("/var/log/backup-status", &status.display().to_string());
    common::run_readme_example(&t, "hooks", &script);
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "stop app-worker\nstart app-worker\n"
    );
    let archive = archives_in(&t.home().join("backups"));
    assert_eq!(archive.len(), 1, "{archive:?}");
    let size = std::fs::metadata(t.home().join("backups").join(&archive[0]))
        .unwrap()
        .len();
    // `finally` ran before the run answered.
    assert_eq!(
        std::fs::read_to_string(&status).unwrap(),
        format!("success {size}\n")
    );

    // The [defaults] example is a valid configuration.
    std::fs::write(t.home().join("backupd.toml"), &examples["hooks-defaults"]).unwrap();
    let out = std::process::Command::new(common::backupd_bin())
        .arg("--home")
        .arg(t.home())
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_failed_jobs_hook_and_webhook_tell_the_same_outcome() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let receiver = common::http_receiver::HttpReceiver::start();
    let failure_env = t.work().join("failure.env");
    let on_failure = format!("sh -c 'env | grep ^BACKUPD_ > {}'", failure_env.display());
    let missing = t.work().join("missing");
    let (code, answer) = run_json(
        &t,
        &[
            "--sources",
            missing.to_str().unwrap(),
            "--on-failure",
            &on_failure,
            "--notify",
            &receiver.url("/hook"),
        ],
    );
    assert_eq!(code, 1, "{answer}");
    let env = env_file(&failure_env);
    let received = receiver.wait_for(1);
    let body: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(env["BACKUPD_STATUS"], "failure");
    assert_eq!(body["status"], "failure");
    assert_eq!(env["BACKUPD_NAME"], body["name"].as_str().unwrap());
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("missing"), "{error}");
    assert_eq!(env["BACKUPD_ERROR"], error);
    assert_eq!(env["BACKUPD_SIZE_BYTES"], "0");
    assert!(body["archive"].is_null() && body["size_bytes"].is_null());
    assert!(body["schedule"].is_null());
    assert!(body["duration_ms"].is_u64());
}

#[test]
fn the_hooks_of_a_job_that_published_nothing_get_no_archive_or_manifest() {
    // The archive was named and begun, then the dump failed: neither file exists.
    let t = TestHome::new();
    source(&t);
    let _daemon = t.start_daemon();
    let hook = |file: &str| {
        let path = t.work().join(file);
        let line = format!("sh -c 'env | grep ^BACKUPD_ > {}'", path.display());
        (path, line)
    };
    let (failure_env, on_failure) = hook("failure.env");
    let (finally_env, finally) = hook("finally.env");
    let (code, answer) = run_json(
        &t,
        &[
            "--sources",
            "docs",
            "--source-command",
            "db.sql=false",
            "--on-failure",
            &on_failure,
            "--finally",
            &finally,
        ],
    );
    assert_eq!(code, 1, "{answer}");
    for env in [env_file(&failure_env), env_file(&finally_env)] {
        assert_eq!(env["BACKUPD_STATUS"], "failure", "{env:?}");
        assert_eq!(env["BACKUPD_ARCHIVE"], "", "{env:?}");
        assert_eq!(env["BACKUPD_MANIFEST"], "", "{env:?}");
        assert_eq!(env["BACKUPD_SHA256"], "", "{env:?}");
    }
}

#[test]
fn the_last_success_outlives_the_runs_kept() {
    // It was read from the runs kept: `runs_kept` failures in a row made the series vanish,
    // and an alert on its age went quiet for a schedule that keeps failing.
    let t = TestHome::new();
    let docs = source(&t);
    t.append_config("runs_kept = 1\n");
    let _daemon = t.start_daemon();
    t.ctl(&[
        "create", "--name", "nightly", "--source", "docs", "--daily", "03:00",
    ])
    .ok();
    let success_metric = "backupd_schedule_last_success_timestamp_seconds{schedule=\"nightly\"}";
    let answer = client_request(&t, &json!({"cmd": "run", "schedule": "nightly"}));
    assert_eq!(answer["ok"], true, "{answer}");
    let succeeded = metrics(&t)[success_metric].clone();
    std::fs::remove_dir_all(&docs).unwrap();
    for _ in 0..2 {
        let answer = client_request(&t, &json!({"cmd": "run", "schedule": "nightly"}));
        assert_eq!(answer["data"]["sources"][0]["ok"], false, "{answer}");
    }
    let m = metrics(&t);
    assert_eq!(m["backupd_schedule_last_status{schedule=\"nightly\"}"], "0");
    assert_eq!(m.get(success_metric), Some(&succeeded), "{m:?}");
    let listed: Value = serde_json::from_str(&t.ctl(&["--json", "list"]).ok()).unwrap();
    let schedule = &listed["data"]["schedules"][0];
    assert!(
        schedule["earlier_runs"].is_null(),
        "one run kept: {schedule}"
    );
    assert!(schedule["last_success"].is_string(), "{schedule}");
}

#[test]
fn metrics_say_down_once_the_daemon_has_stopped() {
    let t = TestHome::new();
    let mut daemon = t.start_daemon();
    wait_for(common::PATIENCE, "metrics at start", || {
        let text = std::fs::read_to_string(metrics_path(&t)).ok()?;
        (metrics_text(&text)["backupd_up"] == "1").then_some(())
    });
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    assert_eq!(metrics(&t)["backupd_up"], "0");
}

#[test]
fn hooks_and_dumps_inherit_the_environment_but_not_the_daemons_secrets() {
    let t = TestHome::new();
    source(&t);
    std::fs::create_dir_all(t.home()).unwrap();
    // Never reached: no email is sent, but the password is read at start.
    std::fs::write(
        t.home().join("backupd.toml"),
        "[email]\nserver = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nfrom = \"b@example.org\"\n\
         to = [\"a@example.org\"]\nusername = \"b\"\npassword_env = \"TEST_SMTP_PASSWORD\"\n",
    )
    .unwrap();
    let secrets = [
        ("AWS_ACCESS_KEY_ID", "AKIASECRETKEYID"),
        ("AWS_SECRET_ACCESS_KEY", "secret-access-key"),
        ("AWS_SESSION_TOKEN", "session-token"),
        ("TEST_SMTP_PASSWORD", "smtp-password"),
    ];
    let mut env: Vec<(String, String)> = secrets
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.push(("PGPASSWORD".into(), "the-users-own".into()));
    let _daemon = t.start_daemon_with_env(&env);
    let hook_env = t.work().join("hook.env");
    let before = format!("sh -c 'env > {}'", hook_env.display());
    let (code, answer) = run_json(
        &t,
        &[
            "--sources",
            "docs",
            "--before",
            &before,
            "--source-command",
            "env.txt=env",
        ],
    );
    assert_eq!(code, 0, "{answer}");
    let out = t.work().join("out");
    std::fs::create_dir(&out).unwrap();
    let archive = answer["data"]["sources"][0]["archive"].as_str().unwrap();
    let status = std::process::Command::new("tar")
        .args(["-xf", archive, "-C"])
        .arg(&out)
        .arg("env.txt")
        .status()
        .unwrap();
    assert!(status.success());
    for env in [env_file(&hook_env), env_file(&out.join("env.txt"))] {
        assert_eq!(env["PGPASSWORD"], "the-users-own", "{env:?}");
        for (name, value) in secrets {
            assert!(!env.contains_key(name), "{name} passed on: {env:?}");
            assert!(
                !env.values().any(|v| v == value),
                "{value} passed on: {env:?}"
            );
        }
    }
}

#[test]
fn a_hooks_odd_output_is_logged_whole_and_never_stops_the_hook() {
    let t = TestHome::new();
    source(&t);
    let _daemon = t.start_daemon();
    // Latin-1, not UTF-8, then more than a pipe holds; then one line of 100 kB.
    let before = "sh -c 'printf \"caf\\351\\n\"; sleep 1; i=0; while [ $i -lt 3000 ]; do \
                  echo line-$i; i=$((i+1)); done; head -c 100000 /dev/zero | tr \"\\0\" x; echo; \
                  echo last-line'";
    let (code, answer) = run_json(&t, &["--sources", "docs", "--before", before]);
    assert_eq!(code, 0, "{answer}");
    let log = wait_for(Duration::from_secs(30), "the hook's last line", || {
        Some(t.log()).filter(|log| log.contains("before hook: last-line"))
    });
    assert!(log.contains("before hook: caf\u{fffd}"), "{log}");
    assert!(log.contains("before hook: line-2999"));
    let cut = log
        .lines()
        .find(|l| l.contains("before hook: xxx"))
        .expect("the long line");
    assert!(cut.ends_with(" [line cut at 4096 bytes]"), "{}", cut.len());
    assert!(cut.len() < 4200, "{}", cut.len());
}

/// The daemon's open file descriptors, once a closed connection's have gone: the same count
/// three times in a row, 100 ms apart.
fn settled_fds(pid: u32) -> usize {
    let count = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let mut seen = vec![count()];
    while seen.len() < 3
        || seen[seen.len() - 3..]
            .iter()
            .any(|&n| n != seen[seen.len() - 1])
    {
        std::thread::sleep(Duration::from_millis(100));
        seen.push(count());
        assert!(
            seen.len() < 300,
            "the daemon's descriptors never settled: {seen:?}"
        );
    }
    seen[seen.len() - 1]
}

#[test]
fn a_process_that_leaves_the_hooks_group_does_not_keep_its_pipe_in_the_daemon() {
    let t = TestHome::new();
    source(&t);
    let daemon = t.start_daemon();
    let pid_file = t.work().join("escaped.pid");
    // `setsid` takes the sleep out of the hook's group, beyond its kill; it keeps stdout.
    let before = format!(
        "sh -c 'setsid sh -c \"echo \\$\\$ > {}; exec sleep 60\" & sleep 0.5'",
        pid_file.display()
    );
    let (code, answer) = run_json(&t, &["--sources", "docs"]);
    assert_eq!(code, 0, "{answer}");
    let fds = settled_fds(daemon.pid());
    let (code, answer) = run_json(&t, &["--sources", "docs", "--before", &before]);
    let escaped = std::fs::read_to_string(&pid_file).unwrap();
    // Checked while it still runs (60 s); it goes when the test ends, passed or not.
    struct KillOnDrop(String);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").arg(&self.0).status();
        }
    }
    let _escaped = KillOnDrop(escaped.trim().to_owned());
    assert_eq!(code, 0, "{answer}");
    assert!(
        settled_fds(daemon.pid()) <= fds,
        "the daemon still holds the escaped process's pipe"
    );
}

/// Kills the process whose pid `file` holds when the test ends, passed or not.
struct KillPidIn(std::path::PathBuf);

impl Drop for KillPidIn {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn alive(pid_file: &Path) -> bool {
    let pid = std::fs::read_to_string(pid_file).unwrap();
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn what_a_hook_starts_in_the_background_outlives_it_as_from_a_shell() {
    // An `after` hook restarting a service without systemd (`nohup app &`): the daemon killed
    // the hook's whole group as it exited, so the service was down after every backup.
    let t = TestHome::new();
    source(&t);
    let _daemon = t.start_daemon();
    let pid_file = t.work().join("service.pid");
    let _service = KillPidIn(pid_file.clone());
    let after = format!(
        "sh -c 'nohup sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {}'",
        pid_file.display()
    );
    let (code, answer) = run_json(&t, &["--sources", "docs", "--after", &after]);
    assert_eq!(code, 0, "{answer}");
    wait_for(Duration::from_secs(30), "the after hook to end", || {
        t.log().contains("after hook done").then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(&pid_file), "{}", t.log());
}

#[test]
fn a_hook_that_cannot_start_says_why_in_the_log() {
    let t = TestHome::new();
    source(&t);
    let _daemon = t.start_daemon();
    let missing = t.work().join("no-such-hook");
    let missing = missing.to_str().unwrap();
    let (code, answer) = run_json(&t, &["--sources", "docs", "--before", missing]);
    assert_eq!(code, 1, "{answer}");
    let expected = format!("before hook could not start ({missing}): No such file or directory");
    assert!(t.log().contains(&expected), "{}", t.log());
}

#[test]
fn every_hook_gets_every_variable_and_an_error_with_a_nul_still_reaches_them() {
    // A dump's stderr with a NUL made BACKUPD_ERROR one no environment can hold: neither the
    // on-failure nor the finally hook could start (`systemctl start app` never ran). And the
    // before hook lacked BACKUPD_ERROR, BACKUPD_SIZE_BYTES and BACKUPD_SHA256 (`set -u`).
    let t = TestHome::new();
    source(&t);
    let _daemon = t.start_daemon();
    let before = "sh -c 'set -u; : $BACKUPD_ERROR $BACKUPD_SIZE_BYTES $BACKUPD_SHA256'";
    let ran = t.work().join("finally-ran");
    let finally = format!("sh -c 'printf %s \"$BACKUPD_ERROR\" > {}'", ran.display());
    let dump = "db.sql=sh -c 'printf \"bad\\000byte\" >&2; exit 1'";
    let (code, answer) = run_json(
        &t,
        &[
            "--sources",
            "docs",
            "--before",
            before,
            "--source-command",
            dump,
            "--finally",
            &finally,
        ],
    );
    assert_eq!(code, 1, "{answer}");
    let error = std::fs::read_to_string(&ran).unwrap_or_else(|e| panic!("{e}: {}", t.log()));
    assert!(error.contains("bad\\0byte"), "{error:?}");
    assert!(!t.log().contains("before hook failed"), "{}", t.log());
}

#[test]
fn hooks_get_the_allocator_tunables_the_user_set_not_the_daemon_s() {
    // The daemon re-executes itself with a fixed malloc threshold for its own memory: every
    // hook and dump inherited it.
    for users in [None, Some("glibc.malloc.arena_max=2")] {
        let t = TestHome::new();
        source(&t);
        let wrapper = match users {
            Some(tunables) => vec!["env".to_owned(), format!("GLIBC_TUNABLES={tunables}")],
            None => vec![
                "env".to_owned(),
                "-u".to_owned(),
                "GLIBC_TUNABLES".to_owned(),
            ],
        };
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let _daemon = t.spawn_daemon_via(&wrapper, &[]);
        common::wait_until_answering(&t.socket());
        let env_out = t.work().join("hook.env");
        let after = format!("sh -c 'env > {}'", env_out.display());
        let (code, answer) = run_json(&t, &["--sources", "docs", "--after", &after]);
        assert_eq!(code, 0, "{answer}");
        let env = env_file(&env_out);
        assert_eq!(
            env.get("GLIBC_TUNABLES").map(String::as_str),
            users,
            "{env:?}"
        );
        assert!(
            !env.keys().any(|k| k.starts_with("BACKUPD_USERS")),
            "{env:?}"
        );
    }
}
