//! `backupctl` as a script sees it: exit codes, error messages, `--json`, and its own log.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Ctl, TestHome, log_messages};

#[test]
fn an_unknown_command_is_a_usage_error_and_is_logged() {
    let t = TestHome::new();
    std::fs::create_dir_all(t.home().join("logs")).unwrap();
    let out = t.ctl(&["explode"]);
    assert_eq!(out.code(), 2);
    assert!(out.stderr().contains("explode"), "{}", out.stderr());
    assert_eq!(
        log_messages(&t.client_log()),
        ["Error: bad usage: unrecognized subcommand 'explode'"]
    );
    let bad_index = t.ctl(&["delete", "minus-one"]);
    assert_eq!(bad_index.code(), 2);
    assert_eq!(t.ctl(&["--help"]).code(), 0);
}

#[test]
fn usage_errors_name_what_is_missing_in_the_log_and_both_timings_in_the_usage() {
    let t = TestHome::new();
    std::fs::create_dir_all(t.home().join("logs")).unwrap();
    let out = t.ctl(&["create", "--name", "x", "--source", "src"]);
    assert_eq!(out.code(), 2);
    assert!(
        out.stderr().contains("--daily HH:MM | --cron EXPR"),
        "{}",
        out.stderr()
    );
    assert_eq!(
        log_messages(&t.client_log()),
        [
            "Error: bad usage: the following required arguments were not provided: \
          <--daily <HH:MM>|--cron <EXPR>>"
        ]
    );

    // `verify` takes an archive, a name or all: the usage says all three.
    let out = t.ctl(&["verify"]);
    assert_eq!(out.code(), 2);
    assert!(
        out.stderr()
            .contains("Usage: backupctl verify <ARCHIVE|--name <NAME>|--all>"),
        "{}",
        out.stderr()
    );
    assert_eq!(t.ctl(&["verify", "a.tar.gz", "--all"]).code(), 2);
}

#[test]
fn an_unreachable_daemon_is_exit_three_and_names_the_socket() {
    let t = TestHome::new();
    let out = t.ctl(&["status"]);
    assert_eq!(out.code(), 3);
    let stderr = out.stderr();
    assert!(
        stderr.contains(&t.socket().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("backupctl start"), "{stderr}");
    // No home exists yet, so there is nowhere to log and nothing is created.
    assert!(!t.home().exists());

    std::fs::create_dir_all(t.home().join("logs")).unwrap();
    assert_eq!(t.ctl(&["jobs"]).code(), 3);
    let logged = log_messages(&t.client_log());
    assert_eq!(logged.len(), 1);
    assert!(logged[0].starts_with("Error: can't reach backupd at "));
}

#[test]
fn json_prints_the_raw_response_line_for_success_and_failure() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let ok = t.ctl(&["--json", "list"]);
    assert_eq!(ok.code(), 0);
    let value: serde_json::Value = serde_json::from_str(&ok.stdout()).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"id": null, "ok": true, "data": {"schedules": []}})
    );

    let failed = t.ctl(&["--json", "delete", "3"]);
    assert_eq!(failed.code(), 1);
    let value: serde_json::Value = serde_json::from_str(&failed.stdout()).unwrap();
    assert_eq!(value["error"]["code"], "schedule_not_found");
    assert_eq!(value["error"]["message"], "can't find schedule at index 3");
}

#[test]
fn status_reports_the_running_daemon() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let out = t.ctl(&["status"]).ok();
    assert!(out.starts_with(&format!("backupd {} running", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn a_socket_path_over_the_kernel_limit_is_a_clear_error_on_both_sides() {
    let t = TestHome::new();
    let long = t.work().join("s".repeat(120));
    let long_text = long.display().to_string();
    let out = t.ctl(&["--socket", &long_text, "list"]);
    assert_eq!(out.code(), 2);
    assert!(out.stderr().contains(&long_text), "{}", out.stderr());
    assert!(out.stderr().contains("--socket"), "{}", out.stderr());

    let mut daemon = t.spawn_daemon(&["--socket", &long_text]);
    assert!(!daemon.wait().success());
    assert!(
        t.daemon_stderr().contains(&long_text),
        "{}",
        t.daemon_stderr()
    );
}

#[test]
fn the_socket_flag_and_variable_are_honoured() {
    let t = TestHome::new();
    let socket = t.work().join("alt.sock");
    let socket_text = socket.display().to_string();
    let _daemon = t.spawn_daemon(&["--socket", &socket_text]);
    common::wait_until_answering(&socket);
    assert!(!t.socket().exists());
    t.ctl(&["--socket", &socket_text, "list"]).ok();
    let out = t
        .ctl_command(&["list"])
        .env("BACKUPD_SOCKET", &socket)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    // More output than a pipe holds (64 KiB), so backupctl must write after its reader is gone.
    let backups = t.home().join("backups");
    for n in 0..2000 {
        let name = format!("a_rather_long_backup_name_{n:04}_20250101_000000.tar.gz");
        std::fs::write(backups.join(name), b"").unwrap();
    }
    for args in [&["backups"][..], &["--json", "backups"]] {
        let mut child = t
            .ctl_command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // as `| head -1` does once it has its line
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}

#[test]
fn usage_errors_log_what_is_wrong_and_not_the_help() {
    let t = TestHome::new();
    std::fs::create_dir_all(t.home().join("logs")).unwrap();
    assert_eq!(t.ctl(&[]).code(), 2);
    assert_eq!(t.ctl(&["run", "--level", "x"]).code(), 2);
    assert_eq!(
        log_messages(&t.client_log()),
        [
            "Error: bad usage: no command given",
            "Error: bad usage: invalid value 'x' for '--level <LEVEL>': invalid digit found in \
             string"
        ]
    );
}

#[test]
fn a_home_flag_without_a_value_is_a_usage_error_logged_nowhere() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestHome::new();
    // Private logs folders where backupctl runs and in the home the environment names.
    for logs in [t.work().join("logs"), t.home().join("logs")] {
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    for args in [
        &["--home", "", "status"][..],
        &["--home=", "status"],
        &["status", "--home"],
        &["--home", "--json", "status"],
    ] {
        let out = t.ctl(args);
        assert_eq!(out.code(), 2, "{args:?}: {}", out.stderr());
        assert!(
            out.stderr().contains("--home"),
            "{args:?}: {}",
            out.stderr()
        );
    }
    // The user named a home but no folder: neither the working directory nor another home.
    assert!(!t.work().join("logs/backupctl.log").exists());
    assert_eq!(t.client_log(), "");
}

/// A `.env` that cannot be read as settings: a folder (unreadable for anyone, refused by root).
fn unreadable_dotenv(t: &TestHome) -> std::path::PathBuf {
    let dotenv = t.work().join(".env");
    std::fs::create_dir(&dotenv).unwrap();
    dotenv
}

#[test]
fn only_the_commands_that_use_dotenv_read_it() {
    let t = TestHome::new();
    let mut daemon = t.start_daemon();
    let dotenv = unreadable_dotenv(&t);
    let dotenv_text = dotenv.display().to_string();
    for args in [
        &["status"][..],
        &["jobs"],
        &["list"],
        &["backups"],
        &["log-level", "info"],
        &["cancel", "1"],
        &["delete", "0"],
        &["verify", "--all"],
        &["ls", "none.tar.gz"],
        // A stored schedule runs with its own settings.
        &["run", "--name", "none"],
        &["start"],
    ] {
        let out = t.ctl(args);
        assert_ne!(out.code(), 2, "{args:?}: {}", out.stderr());
        assert!(!out.stderr().contains(".env"), "{args:?}: {}", out.stderr());
    }
    // What does read it still refuses it.
    for args in [&["run"][..], &["prune", "--dry-run"]] {
        let out = t.ctl(args);
        assert_eq!(out.code(), 2, "{args:?}: {}", out.stderr());
        assert!(
            out.stderr().contains(&dotenv_text),
            "{args:?}: {}",
            out.stderr()
        );
    }
    t.ctl(&["stop"]).ok();
    assert!(daemon.wait().success());
    // Starting a daemon reads LOG_LEVEL, also when a schedule command starts one.
    for args in [&["start"][..], &["list"]] {
        let out = t.ctl(args);
        assert_eq!(out.code(), 2, "{args:?}: {}", out.stderr());
        assert!(
            out.stderr().contains(&dotenv_text),
            "{args:?}: {}",
            out.stderr()
        );
        assert!(!t.socket().exists(), "{args:?} started a daemon");
    }
}

#[test]
fn commands_work_from_a_deleted_working_directory_unless_a_path_is_relative() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let source = t.work().join("src");
    std::fs::create_dir(&source).unwrap();
    let gone = t.work().join("gone");
    let from_deleted_folder = |args: &[&str]| {
        std::fs::create_dir(&gone).unwrap();
        // The shell enters the folder and removes it: backupctl starts in a deleted folder.
        let out = std::process::Command::new("sh")
            .args(["-c", r#"cd "$1" && rmdir "$1" && shift && exec "$@""#, "sh"])
            .arg(&gone)
            .arg(common::backupctl_bin())
            .args(args)
            .env("BACKUPD_HOME", t.home())
            .env_remove("BACKUPD_SOCKET")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        common::Ctl(out)
    };
    from_deleted_folder(&["status"]).ok();
    from_deleted_folder(&["jobs"]).ok();
    let source_text = source.display().to_string();
    from_deleted_folder(&["run", "--sources", &source_text, "--dry-run"]).ok();
    let relative = from_deleted_folder(&["run", "--sources", "src", "--dry-run"]);
    assert_eq!(relative.code(), 2, "{}", relative.stderr());
    assert!(
        relative
            .stderr()
            .contains("can't read the working directory to resolve src"),
        "{}",
        relative.stderr()
    );
}

#[test]
fn json_prints_an_error_line_for_what_backupctl_refuses_itself() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let source = t.work().join("src");
    std::fs::create_dir(&source).unwrap();
    let src = source.display().to_string();
    let run = |extra: &[&'static str]| {
        let mut args = vec!["run", "--sources", src.as_str()];
        args.extend_from_slice(extra);
        args
    };
    for (args, code) in [
        (run(&["--level", "99"]), "invalid_arguments"),
        (run(&["--encrypt-to", "foo"]), "invalid_arguments"),
        (run(&["--source-command", "noequals"]), "invalid_arguments"),
        (run(&["--before", "'unclosed"]), "invalid_arguments"),
        (
            vec![
                "create",
                "--name",
                "n",
                "--source",
                &src,
                "--daily",
                "01:00",
                "--level",
                "0",
                "--compression",
                "zstd",
            ],
            "invalid_arguments",
        ),
        (vec!["start"], "already_running"),
    ] {
        let mut full = vec!["--json"];
        full.extend_from_slice(&args);
        let out = t.ctl(&full);
        assert_eq!(out.code(), 1, "{args:?}: {}", out.stderr());
        assert_eq!(
            out.stdout().lines().count(),
            1,
            "{args:?}: {}",
            out.stdout()
        );
        let answer: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
        let message = answer["error"]["message"].as_str().unwrap().to_owned();
        assert_eq!(
            answer,
            serde_json::json!({"id": null, "ok": false, "error": {"code": code, "message": message}}),
            "{args:?}"
        );
        assert_eq!(out.stderr(), format!("Error: {message}\n"), "{args:?}");
    }
    // The daemon answers the same request with the same code.
    let request =
        serde_json::json!({"cmd": "run", "sources": [src], "compression": "gzip", "level": 99});
    let answer = common::Client::connect(&t.socket())
        .unwrap()
        .request(&request.to_string());
    assert_eq!(answer["error"]["code"], "invalid_arguments", "{answer}");
}

#[test]
fn json_prints_an_error_line_when_the_daemon_does_not_start() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestHome::new();
    // A home others may write: the daemon refuses it and exits.
    std::fs::create_dir(t.home()).unwrap();
    std::fs::set_permissions(t.home(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = t.ctl(&["--json", "start"]);
    assert_eq!(out.code(), 1, "{}", out.stderr());
    let answer: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["error"]["code"], "internal", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("backupd exited during start-up"),
        "{message}"
    );
}

#[test]
fn a_socket_path_that_is_a_regular_file_is_named_as_such_and_left_alone() {
    // It advised `backupctl start`, which then refused to replace the file.
    let t = TestHome::new();
    let file = t.work().join("not.sock");
    std::fs::write(&file, b"mine").unwrap();
    let out = t.ctl(&["--socket", file.to_str().unwrap(), "status"]);
    assert_eq!(out.code(), 3, "{}", out.stderr());
    assert!(
        out.stderr().contains(&format!(
            "{} is not a socket, so no daemon listens there",
            file.display()
        )),
        "{}",
        out.stderr()
    );
    assert!(
        !out.stderr().contains("backupctl start"),
        "{}",
        out.stderr()
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}

#[test]
fn a_daemon_that_never_answers_is_exit_three_after_the_answer_timeout() {
    let t = TestHome::new();
    // Accepts, reads nothing, answers nothing: as a stopped (SIGSTOP) or hung daemon.
    let socket = t.work().join("mute.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    for command in ["status", "list", "jobs"] {
        let out = t.ctl_impatient(&["--socket", socket.to_str().unwrap(), command], 1);
        assert_eq!(out.code(), 3, "{command}: {}", out.stderr());
        assert!(
            out.stderr()
                .contains("did not answer within 1s: is it stopped or hung?"),
            "{command}: {}",
            out.stderr()
        );
        assert_eq!(out.stdout(), "", "{command}");
    }
    // A timeout that is no number of seconds is said, not taken for a minute.
    for bad in ["abc", "-1", "0", "1.5"] {
        let out = Ctl(t
            .ctl_command(&["--socket", socket.to_str().unwrap(), "status"])
            .env("BACKUPCTL_ANSWER_TIMEOUT", bad)
            .output()
            .unwrap());
        assert_eq!(out.code(), 1, "{bad}: {}", out.stderr());
        assert!(
            out.stderr().contains(&format!(
                "BACKUPCTL_ANSWER_TIMEOUT must be a whole number of seconds above 0, not \"{bad}\""
            )),
            "{bad}: {}",
            out.stderr()
        );
    }
}
