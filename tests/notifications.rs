//! Notifications end to end: a real daemon tells a local HTTP receiver (webhook JSON,
//! healthchecks pings, ntfy messages) and a local SMTP server (aiosmtpd) how its jobs ended,
//! only when due, and a notification that cannot be delivered never fails a backup.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::http_receiver::HttpReceiver;
use common::smtp::{SmtpServer, python_with_aiosmtpd};
use common::{TestHome, base_tree};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn write_config(t: &TestHome, text: &str) {
    std::fs::create_dir_all(t.home()).unwrap();
    std::fs::write(t.home().join("backupd.toml"), text).unwrap();
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// A source folder with a few files, `<work>/docs`.
fn docs(t: &TestHome) -> String {
    let docs = t.work().join("docs");
    base_tree(&docs);
    docs.display().to_string()
}

#[test]
fn a_failed_job_posts_its_outcome_and_a_success_posts_nothing_by_default() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let hook = HttpReceiver::start();
    let url = hook.url("/hooks/backupd?token=s3cret");
    let missing = t.work().join("missing").display().to_string();

    let failed = t.ctl(&["run", "--sources", &missing, "--notify", &url]);
    assert_eq!(failed.code(), 1, "{}", failed.stderr());
    let received = hook.received();
    assert_eq!(
        received.len(),
        1,
        "sent before the run answered: {received:?}"
    );
    let post = &received[0];
    assert_eq!(post.method, "POST");
    assert_eq!(post.path, "/hooks/backupd?token=s3cret");
    assert_eq!(post.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(body["name"], "missing");
    assert_eq!(body["status"], "failure");
    assert_eq!(body["source"], missing.as_str());
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("Backup source does not exist"), "{error}");
    assert_eq!(body["host"], host_name().as_str());
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        body["archive"].is_null() && body["sha256"].is_null(),
        "{body}"
    );
    for time in ["started", "finished"] {
        chrono::DateTime::parse_from_rfc3339(body[time].as_str().unwrap()).unwrap();
    }

    // On success, with the default --notify-on failure: nothing.
    let docs = docs(&t);
    t.ctl(&["run", "--sources", &docs, "--notify", &url]).ok();
    assert_eq!(hook.received().len(), 1, "{:?}", hook.received());

    // With --notify-on always, the success too, with what was written.
    t.ctl(&[
        "run",
        "--sources",
        &docs,
        "--notify",
        &url,
        "--notify-on",
        "always",
    ])
    .ok();
    let received = hook.received();
    assert_eq!(received.len(), 2);
    let body: Value = serde_json::from_str(&received[1].body).unwrap();
    assert_eq!(body["status"], "success");
    assert!(body["error"].is_null());
    let archive = body["archive"].as_str().unwrap();
    assert!(Path::new(archive).is_file(), "{body}");
    assert_eq!(
        body["size_bytes"].as_u64().unwrap(),
        std::fs::metadata(archive).unwrap().len()
    );
    assert_eq!(
        body["sha256"],
        common::sha256sum(Path::new(archive)).as_str()
    );
    // The URL's path and token are never logged, only scheme and host.
    let log = t.log();
    assert!(
        log.contains(&format!("] Notified webhook {}", hook.url(""))),
        "{log}"
    );
    assert!(!log.contains("s3cret") && !log.contains("/hooks/"), "{log}");
}

#[test]
fn healthchecks_hear_the_start_then_success_or_fail_with_the_error() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let hc = HttpReceiver::start();
    let check = format!("hc+{}", hc.url("/ping/0a1b2c"));
    let docs = docs(&t);

    // Pinged on success although --notify-on is failure: that ping is what healthchecks waits for.
    t.ctl(&["run", "--sources", &docs, "--notify", &check]).ok();
    let pings = hc.received();
    let paths: Vec<&str> = pings.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["/ping/0a1b2c/start", "/ping/0a1b2c"]);

    let missing = t.work().join("missing").display().to_string();
    let failed = t.ctl(&["run", "--sources", &missing, "--notify", &check]);
    assert_eq!(failed.code(), 1);
    let pings = hc.received();
    let paths: Vec<&str> = pings.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths[2..], ["/ping/0a1b2c/start", "/ping/0a1b2c/fail"]);
    assert!(
        pings[3].body.contains("Backup source does not exist"),
        "{:?}",
        pings[3]
    );
}

#[test]
fn ntfy_gets_a_title_a_high_priority_and_tags_on_failure() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let ntfy = HttpReceiver::start();
    let topic = format!("ntfy+{}", ntfy.url("/backups"));
    let missing = t.work().join("missing").display().to_string();
    let failed = t.ctl(&[
        "run",
        "--sources",
        &missing,
        "--name",
        "nightly",
        "--notify",
        &topic,
    ]);
    assert_eq!(failed.code(), 1);
    let received = ntfy.received();
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(
        (message.method.as_str(), message.path.as_str()),
        ("POST", "/backups")
    );
    assert_eq!(
        message.header("title"),
        Some(format!("backupd: nightly failed on {}", host_name()).as_str())
    );
    assert_eq!(message.header("priority"), Some("high"));
    assert!(message.header("tags").unwrap().contains("warning"));
    assert!(
        message.body.contains("Backup source does not exist"),
        "{message:?}"
    );
}

#[test]
fn an_unreachable_webhook_is_logged_and_the_backup_still_succeeds() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let closed = common::ports::refusing_port();
    let port = closed.port;
    let url = format!("http://127.0.0.1:{port}/secret-path");
    let docs = docs(&t);
    let out = t.ctl(&[
        "run",
        "--sources",
        &docs,
        "--notify",
        &url,
        "--notify-on",
        "always",
    ]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let log = t.log();
    let line = log
        .lines()
        .find(|l| l.contains("Notification failed"))
        .unwrap_or_else(|| panic!("no failure logged: {log}"));
    assert!(
        line.contains(&format!(
            "Warning: [docs #1] Notification failed: webhook http://127.0.0.1:{port}: "
        )),
        "{line}"
    );
    assert!(line.contains("after 3 attempts"), "{line}");
    assert!(!log.contains("secret-path"), "{log}");
}

#[test]
fn bad_notify_urls_are_refused_before_anything_is_written() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let docs = docs(&t);
    let out = t.ctl(&[
        "run",
        "--sources",
        &docs,
        "--notify",
        "ftp://example.org/x0",
    ]);
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr().contains("invalid notify URL"),
        "{}",
        out.stderr()
    );
    assert!(!out.stderr().contains("x0"), "{}", out.stderr());
    let backups = std::fs::read_dir(t.home().join("backups")).unwrap().count();
    assert_eq!(backups, 0);
    let create = t.ctl(&[
        "create", "--name", "n", "--source", &docs, "--daily", "03:00", "--notify", "nope",
    ]);
    assert_ne!(create.code(), 0);
    assert!(
        create.stderr().contains("invalid notify URL"),
        "{}",
        create.stderr()
    );
}

#[test]
fn schedules_and_config_defaults_carry_the_notifications() {
    let t = TestHome::new();
    let hook = HttpReceiver::start();
    let from_config = hook.url("/from-config");
    write_config(
        &t,
        &format!("[defaults]\nnotify = [\"{from_config}\"]\nnotify_on = \"always\"\n"),
    );
    let _daemon = t.start_daemon();
    let docs = docs(&t);
    t.ctl(&["run", "--sources", &docs]).ok();
    assert_eq!(hook.received()[0].path, "/from-config");

    let own = hook.url("/own");
    let far = common::far_time();
    t.ctl(&[
        "create",
        "--name",
        "docs-daily",
        "--source",
        &docs,
        "--daily",
        &far,
        "--notify",
        &own,
    ])
    .ok();
    let stored = std::fs::read_to_string(t.home().join("schedules.json")).unwrap();
    assert!(stored.contains(&own), "{stored}");
    t.ctl(&["run", "--name", "docs-daily"]).ok();
    let received = hook.received();
    assert_eq!(received.len(), 2, "{received:?}");
    // The schedule's own URL replaces the default's; notify_on still comes from the config.
    assert_eq!(received[1].path, "/own");
    let body: Value = serde_json::from_str(&received[1].body).unwrap();
    assert_eq!(body["name"], "docs-daily");
    assert_eq!(body["status"], "success");
}

#[test]
fn a_failure_is_emailed_with_the_error_and_the_jobs_last_log_lines() {
    let Some(python) = python_with_aiosmtpd() else {
        return;
    };
    let t = TestHome::new();
    let smtp = SmtpServer::start(
        &python,
        &t.work().join("mail"),
        Some(("backupd", "pa55word")),
    );
    let password = t.work().join("smtp-password");
    std::fs::write(&password, "pa55word\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    write_config(
        &t,
        &format!(
            "[email]\nserver = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             from = \"backupd <backupd@example.org>\"\nto = [\"admin@example.org\", \
             \"ops@example.org\"]\nusername = \"backupd\"\npassword_file = \"{}\"\n",
            smtp.port,
            password.display()
        ),
    );
    let _daemon = t.start_daemon();
    let missing = t.work().join("missing").display().to_string();
    let failed = t.ctl(&["run", "--sources", &missing, "--name", "db", "--email"]);
    assert_eq!(failed.code(), 1);
    let mail = smtp.wait_for(1);
    let message = &mail[0];
    assert!(message.contains("X-Test-Login: backupd\n"), "{message}");
    assert!(
        message.contains("X-Test-Mail-From: backupd@example.org\n"),
        "{message}"
    );
    assert!(
        message.contains("X-Test-Rcpt-To: admin@example.org,ops@example.org\n"),
        "{message}"
    );
    let subject = format!("Subject: backupd: db failed on {}", host_name());
    assert!(message.contains(&subject), "{message}");
    assert!(
        message.contains("Backup source does not exist"),
        "{message}"
    );
    assert!(message.contains("Last log lines of the job:"), "{message}");
    assert!(
        message.contains(&format!("[db #1] Compressing {missing}")),
        "{message}"
    );
    assert!(
        message.contains("Error: [db #1] Backup failed for"),
        "{message}"
    );
    let log = t.log();
    assert!(log.contains("[db #1] Notified by email"), "{log}");
    assert!(!log.contains("pa55word"), "{log}");

    // A success with the default --notify-on failure sends nothing; with always, it does.
    let docs = docs(&t);
    t.ctl(&["run", "--sources", &docs, "--email"]).ok();
    assert_eq!(smtp.messages().len(), 1);
    t.ctl(&[
        "run",
        "--sources",
        &docs,
        "--email",
        "--notify-on",
        "always",
    ])
    .ok();
    let mail = smtp.wait_for(2);
    let subject = format!("Subject: backupd: docs succeeded on {}", host_name());
    assert!(mail[1].contains(&subject), "{}", mail[1]);
}

/// An SMTP server on loopback that never finishes its greeting: it sends a `220-` line every
/// 200 ms, to each connection, for as long as the client listens.
struct DrippingSmtp {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl DrippingSmtp {
    fn start() -> Self {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::<std::sync::atomic::AtomicUsize>::default();
        let counted = std::sync::Arc::clone(&connections);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(move || {
                    while stream.write_all(b"220-still greeting\r\n").is_ok() {
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                });
            }
        });
        Self { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Waits (within the tests' patience) for `child` to exit; its status and standard output.
#[track_caller]
fn exited(child: &mut std::process::Child, what: &str) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let status = common::wait_for(common::PATIENCE, what, || child.try_wait().unwrap());
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out).unwrap();
    }
    (status, out)
}

#[test]
fn an_email_that_never_ends_holds_no_job_slot_and_gives_way_to_cancel_and_stop() {
    let smtp = DrippingSmtp::start();
    let t = TestHome::new();
    write_config(
        &t,
        &format!(
            "max_jobs = 1\n[email]\nserver = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             from = \"backupd <b@example.org>\"\nto = [\"a@example.org\"]\n",
            smtp.port
        ),
    );
    let _daemon = t.start_daemon();
    let docs = docs(&t);
    let other = t.work().join("other");
    base_tree(&other);
    let other = other.display().to_string();
    let mailed_run = || {
        t.ctl_command(&[
            "run",
            "--sources",
            &docs,
            "--email",
            "--notify-on",
            "always",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
    };

    let mut first = mailed_run();
    common::wait_for(common::PATIENCE, "job 1's email to begin", || {
        (smtp.connections() == 1).then_some(())
    });
    // Its archive is written: with max_jobs = 1, another backup runs while the email goes on.
    let mut second = t
        .ctl_command(&["run", "--sources", &other])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (status, out) = exited(&mut second, "a backup while job 1 sends its email");
    assert!(status.success() && out.contains("Successful: 1"), "{out}");
    assert!(first.try_wait().unwrap().is_none(), "job 1's email ended");
    // Cancelled, the job gives up its email and its run answers: the backup succeeded, and
    // the cancel says its archive is kept.
    assert!(t.ctl(&["cancel", "1"]).ok().contains("which is kept"));
    let (status, out) = exited(&mut first, "job 1's run to answer once cancelled");
    assert!(status.success() && out.contains("Successful: 1"), "{out}");
    let log = t.log();
    assert!(
        log.contains(
            "Warning: [docs #1] Notification failed: email: given up 5s after its job was \
             cancelled"
        ),
        "{log}"
    );

    // A stop does not wait for an email either, and the run still gets its answer.
    let mut third = mailed_run();
    common::wait_for(common::PATIENCE, "job 3's email to begin", || {
        (smtp.connections() == 2).then_some(())
    });
    let mut stop = t.ctl_command(&["stop"]).spawn().unwrap();
    let (status, out) = exited(&mut third, "job 3's run to answer at the stop");
    assert!(status.success() && out.contains("Successful: 1"), "{out}");
    assert!(exited(&mut stop, "the stop").0.success());
    let log = t.log();
    assert!(
        log.contains(
            "Warning: [docs #3] Notification failed: email: given up 5s after backupd began to \
             stop"
        ),
        "{log}"
    );
}

#[test]
fn a_schedule_run_that_fails_before_its_jobs_start_is_notified_hooked_and_recorded() {
    let t = TestHome::new();
    let hook = HttpReceiver::start();
    let docs = docs(&t);
    // The backup drive is gone: where its folder was, a file.
    let usb = t.work().join("usb");
    std::fs::write(&usb, b"not a folder").unwrap();
    let work = t.work().display().to_string();
    let now = chrono::Local::now();
    let latest = now - chrono::TimeDelta::hours(2);
    let schedule = |id: u64,
                    name: &str,
                    time: String,
                    last_due: chrono::DateTime<chrono::Local>| {
        serde_json::json!({
            "id": id, "name": name, "sources": [docs], "kind": "daily", "time": time,
            "created": (latest - chrono::TimeDelta::days(10)).to_rfc3339(),
            "last_due": last_due.to_rfc3339(),
            "destination": usb, "notify": [hook.url("/hook")],
            "hooks": {
                "on_failure": ["sh", "-c", format!(
                    "echo \"$BACKUPD_STATUS|$BACKUPD_ARCHIVE|$BACKUPD_MANIFEST|$BACKUPD_ERROR\" \
                     > {work}/on_failure_$BACKUPD_NAME"
                )],
                "finally": ["sh", "-c", format!("touch {work}/finally_$BACKUPD_NAME")]
            }
        })
    };
    // `nightly` missed its run while the daemon was down: caught up (on its timetable) at
    // start. `manual` runs by `run --name`.
    let file = serde_json::json!({
        "version": 1,
        "next_id": 3,
        "schedules": [
            schedule(
                1,
                "nightly",
                latest.format("%H:%M").to_string(),
                latest - chrono::TimeDelta::days(1)
            ),
            schedule(2, "manual", common::far_time(), now),
        ]
    });
    std::fs::create_dir_all(t.home()).unwrap();
    std::fs::write(t.home().join("schedules.json"), file.to_string()).unwrap();
    let _daemon = t.start_daemon();

    let out = t.ctl(&["run", "--name", "manual"]);
    assert_eq!(out.code(), 1, "{}", out.stderr());
    assert!(
        out.stderr().contains("Backup destination not writable"),
        "{}",
        out.stderr()
    );
    let last_status = |name: &str| format!("backupd_schedule_last_status{{schedule=\"{name}\"}} 0");
    // The metrics are written last.
    common::wait_for(common::PATIENCE, "both failures in the metrics", || {
        let metrics = std::fs::read_to_string(t.home().join("metrics/backupd.prom")).ok()?;
        let both =
            metrics.contains(&last_status("nightly")) && metrics.contains(&last_status("manual"));
        both.then_some(())
    });
    let list: Value = serde_json::from_str(&t.ctl(&["--json", "list"]).ok()).unwrap();
    let schedules = list["data"]["schedules"].as_array().unwrap();
    let received = hook.received();
    assert_eq!(received.len(), 2, "{received:?}");
    for name in ["nightly", "manual"] {
        let why = format!(
            "Schedule {name} can't run: Backup destination not writable: {}",
            usb.display()
        );
        let recorded = schedules.iter().find(|s| s["name"] == name).unwrap();
        assert_eq!(recorded["last_run"]["ok"], false, "{recorded}");
        let error = recorded["last_run"]["error"].as_str().unwrap();
        assert!(error.starts_with(&why), "{error}");
        // As a failed job tells it: what failed, why, and no archive.
        let body = received
            .iter()
            .map(|post| serde_json::from_str::<Value>(&post.body).unwrap())
            .find(|body| body["schedule"] == name)
            .unwrap_or_else(|| panic!("no webhook for {name}: {received:?}"));
        assert_eq!(body["name"], name);
        assert_eq!(body["status"], "failure");
        assert_eq!(body["source"], docs.as_str());
        assert!(body["error"].as_str().unwrap().starts_with(&why), "{body}");
        for unknown in ["archive", "size_bytes", "sha256"] {
            assert!(body[unknown].is_null(), "{body}");
        }
        assert_eq!(body["host"], host_name().as_str());
        // Its failure hooks ran, told of the failure and of no archive.
        let told = std::fs::read_to_string(t.work().join(format!("on_failure_{name}"))).unwrap();
        assert!(told.starts_with(&format!("failure|||{why}")), "{told}");
        assert!(t.work().join(format!("finally_{name}")).exists());
    }
}

#[test]
fn a_one_off_run_whose_destination_is_gone_is_notified_and_hooked_but_a_bad_argument_is_not() {
    let t = TestHome::new();
    let hook = HttpReceiver::start();
    let docs = docs(&t);
    let usb = t.work().join("usb");
    std::fs::write(&usb, b"not a folder").unwrap();
    let told = t.work().join("told");
    let on_failure = format!(
        "sh -c 'echo \"$BACKUPD_STATUS|$BACKUPD_NAME|$BACKUPD_ARCHIVE|$BACKUPD_ERROR\" >> {}'",
        told.display()
    );
    let url = hook.url("/hook");
    let _daemon = t.start_daemon();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--sources", &docs, "--notify", &url];
        args.extend(["--on-failure", &on_failure]);
        args.extend(extra);
        t.ctl(&args)
    };

    // Arguments the client got wrong are its own to see: nothing runs, nothing is sent.
    let wrong = run(&["--name", "a/b", "--destination", usb.to_str().unwrap()]);
    assert_ne!(wrong.code(), 0, "{}", wrong.stderr());
    let dry = run(&["--dry-run", "--destination", usb.to_str().unwrap()]);
    assert_ne!(dry.code(), 0, "{}", dry.stderr());

    // The drive a cron line backs up to is gone: the run fails before any job starts, and
    // is told as a failed job is.
    let out = run(&["--destination", usb.to_str().unwrap()]);
    assert_eq!(out.code(), 1, "{}", out.stderr());
    assert!(
        out.stderr().contains("Backup destination not writable"),
        "{}",
        out.stderr()
    );
    let why = format!(
        "Backup can't run: Backup destination not writable: {}",
        usb.display()
    );
    let received = hook.received();
    assert_eq!(
        received.len(),
        1,
        "sent before the run answered: {received:?}"
    );
    let body: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(body["name"], "docs");
    assert_eq!(body["status"], "failure");
    assert_eq!(body["source"], docs.as_str());
    assert!(body["schedule"].is_null(), "{body}");
    assert!(body["archive"].is_null(), "{body}");
    assert!(body["error"].as_str().unwrap().starts_with(&why), "{body}");
    let told = std::fs::read_to_string(&told).unwrap();
    assert_eq!(told.lines().count(), 1, "{told}");
    assert!(told.starts_with(&format!("failure|docs||{why}")), "{told}");
}

#[test]
fn a_wrong_smtp_password_is_logged_and_the_daemon_never_stores_it() {
    let Some(python) = python_with_aiosmtpd() else {
        return;
    };
    let t = TestHome::new();
    let smtp = SmtpServer::start(&python, &t.work().join("mail"), Some(("backupd", "right")));
    write_config(
        &t,
        &format!(
            "[email]\nserver = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             from = \"backupd@example.org\"\nto = [\"admin@example.org\"]\n\
             username = \"backupd\"\npassword_env = \"BACKUPD_TEST_SMTP_PASSWORD\"\n",
            smtp.port
        ),
    );
    let stderr = std::fs::File::create(t.work().join("daemon.stderr")).unwrap();
    let mut child = std::process::Command::new(common::backupd_bin())
        .arg("--home")
        .arg(t.home())
        .env("BACKUPD_TEST_SMTP_PASSWORD", "wrong-pw")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    common::wait_until_answering(&t.socket());
    let missing = t.work().join("missing").display().to_string();
    let failed = t.ctl(&["run", "--sources", &missing, "--email"]);
    assert_eq!(failed.code(), 1);
    let log = t.log();
    assert!(
        log.contains("Notification failed: email to admin@example.org"),
        "{log}"
    );
    assert!(smtp.messages().is_empty());
    assert!(!log.contains("wrong-pw"), "{log}");
    t.ctl(&[
        "create",
        "--name",
        "m",
        "--source",
        &docs(&t),
        "--daily",
        "03:00",
        "--email",
    ])
    .ok();
    let stored = std::fs::read_to_string(t.home().join("schedules.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(parsed["schedules"][0]["notify_email"], true, "{stored}");
    assert!(!stored.contains("wrong-pw"), "{stored}");
    t.ctl(&["stop"]).ok();
    child.wait().unwrap();
}

#[test]
fn a_daemon_whose_smtp_password_is_missing_does_not_start() {
    let t = TestHome::new();
    write_config(
        &t,
        "[email]\nserver = \"127.0.0.1\"\ntls = \"none\"\nfrom = \"b@example.org\"\n\
         to = [\"a@example.org\"]\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n",
    );
    let out = std::process::Command::new(common::backupd_bin())
        .arg("--home")
        .arg(t.home())
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("can't read password_file /nonexistent/pw"),
        "{stderr}"
    );
    // The password itself never goes in the file.
    write_config(
        &t,
        "[email]\nserver = \"h\"\nfrom = \"b@example.org\"\nto = [\"a@example.org\"]\n\
         password = \"x\"\n",
    );
    let out = std::process::Command::new(common::backupd_bin())
        .arg("--home")
        .arg(t.home())
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));
}

#[test]
fn a_daemon_whose_smtp_password_file_others_may_read_does_not_start() {
    let t = TestHome::new();
    let password = t.work().join("smtp-password");
    std::fs::write(&password, "pa55word\n").unwrap();
    write_config(
        &t,
        &format!(
            "[email]\nserver = \"127.0.0.1\"\ntls = \"none\"\nfrom = \"b@example.org\"\n\
             to = [\"a@example.org\"]\nusername = \"u\"\npassword_file = \"{}\"\n",
            password.display()
        ),
    );
    let check_config = || {
        std::process::Command::new(common::backupd_bin())
            .arg("--home")
            .arg(t.home())
            .arg("--check-config")
            .output()
            .unwrap()
    };
    // Group-readable is refused too, as ssh refuses such a private key.
    for mode in [0o644, 0o640] {
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = check_config();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "can't read password_file {}: is readable by group or others (mode {mode:o})",
                password.display()
            )),
            "{stderr}"
        );
        assert!(stderr.contains("chmod 600 it"), "{stderr}");
        assert!(!stderr.contains("pa55word"), "{stderr}");
    }
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = check_config();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_login_without_tls_is_refused_unless_the_smtp_server_is_on_loopback() {
    let t = TestHome::new();
    let check_config = |server: &str| {
        write_config(
            &t,
            &format!(
                "[email]\nserver = \"{server}\"\nfrom = \"b@example.org\"\n\
                 to = [\"a@example.org\"]\ntls = \"none\"\nusername = \"u\"\n\
                 password_env = \"BACKUPD_TEST_SMTP_PASSWORD\"\n"
            ),
        );
        std::process::Command::new(common::backupd_bin())
            .arg("--home")
            .arg(t.home())
            .arg("--check-config")
            .env("BACKUPD_TEST_SMTP_PASSWORD", "pa55word")
            .output()
            .unwrap()
    };
    for server in ["192.0.2.2", "smtp.example.org"] {
        let out = check_config(server);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let config = t.home().join("backupd.toml");
        assert!(
            stderr.contains(&format!(
                "config file {}, line 5: email: tls = \"none\" would send the password in clear \
                 text to {server}",
                config.display()
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("pa55word"), "{stderr}");
    }
    for server in ["127.0.0.1", "::1", "localhost"] {
        let out = check_config(server);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{server}: {stderr}");
    }
}

/// The blocks of README's Notifications section, each named by the
/// `<!-- notifications-example: NAME -->` line above it.
fn readme_examples() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("\n## Notifications\n")
        .expect("README has a Notifications section");
    let section = &readme[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
    let mut examples = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("\n```") {
        let marker = rest[..open].trim_end().lines().last().unwrap_or_default();
        let code = &rest[open + 4..];
        let code = &code[code.find('\n').unwrap() + 1..];
        let close = code.find("```").expect("closed code block");
        let name = marker
            .strip_prefix("<!-- notifications-example: ")
            .and_then(|m| m.strip_suffix(" -->"))
            .unwrap_or_else(|| panic!("README block without its example name: {marker:?}"));
        examples.push((name.to_owned(), code[..close].to_owned()));
        rest = &code[close + 3..];
    }
    examples
}

#[test]
fn the_readme_examples_notify_as_they_say() {
    let examples: std::collections::BTreeMap<_, _> = readme_examples().into_iter().collect();
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    docs(&t);
    let receiver = HttpReceiver::start();
    let base = receiver.url("");
    let run = |name: &str| {
        // The example's services are this test's receiver.
        let script = examples[name]
            .replace("https://hooks.example.org", &base)
            .replace("https://hc-ping.com", &base)
            .replace("https://ntfy.sh", &base);
        let bin = common::backupctl_bin();
        let path = format!(
            "{}:{}",
            bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(t.work())
            .env("HOME", t.work())
            .env("BACKUPD_HOME", t.home())
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README example {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    run("webhook");
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/backupd");
    let body: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(body["name"], "docs");
    assert_eq!(body["status"], "success");

    run("schedule");
    let received = receiver.received();
    let paths: Vec<&str> = received[1..].iter().map(|r| r.path.as_str()).collect();
    // A success with the default --notify-on failure: healthchecks only, start then success.
    assert_eq!(paths, ["/5f1c-your-check/start", "/5f1c-your-check"]);

    // The [email] example is a valid configuration once its password variable is set.
    write_config(&t, &examples["email"]);
    let out = std::process::Command::new(common::backupd_bin())
        .arg("--home")
        .arg(t.home())
        .arg("--check-config")
        .env("BACKUPD_SMTP_PASSWORD", "example")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(common::backupd_bin())
        .arg("--home")
        .arg(t.home())
        .arg("--check-config")
        .env_remove("BACKUPD_SMTP_PASSWORD")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password_env BACKUPD_SMTP_PASSWORD is not set"),
        "{stderr}"
    );
}
