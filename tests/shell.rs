//! Shell integration: completion scripts that each shell accepts, a manual page for every
//! subcommand (and the daemon's), and `--json` printing exactly one answer line for every
//! command that talks to the daemon.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Ctl, StopOnDrop, TestHome, backupctl_bin, backupd_bin};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The subcommands as `backupctl --help` lists them, without clap's own `help`.
fn subcommands() -> Vec<String> {
    let help = String::from_utf8(ok(Command::new(backupctl_bin()).arg("--help"))).unwrap();
    let names: Vec<String> = help
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    for expected in ["run", "restore", "completions", "man"] {
        assert!(names.iter().any(|n| n == expected), "{names:?} in {help}");
    }
    names
}

/// `backupctl` with no home anywhere: no HOME, no BACKUPD_HOME, no XDG_STATE_HOME.
fn homeless_ctl(args: &[&str]) -> Command {
    let mut command = Command::new(backupctl_bin());
    command
        .args(args)
        .env_remove("HOME")
        .env_remove("BACKUPD_HOME")
        .env_remove("BACKUPD_SOCKET")
        .env_remove("XDG_STATE_HOME")
        .stdin(Stdio::null());
    command
}

#[track_caller]
fn ok(command: &mut Command) -> Vec<u8> {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Whether `program` can be run at all.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// How a shell's script names a subcommand it completes.
fn completes(shell: &str, name: &str) -> String {
    match shell {
        "bash" => format!("backupctl,{name})"),
        "zsh" => format!("'{name}:"),
        _ => format!("-a \"{name}\""),
    }
}

#[test]
fn completion_scripts_name_every_subcommand_and_each_shell_parses_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let subcommands = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let script = String::from_utf8(ok(&mut homeless_ctl(&["completions", shell]))).unwrap();
        assert!(!script.trim().is_empty(), "{shell}: empty script");
        for sub in &subcommands {
            assert!(
                script.contains(&completes(shell, sub)),
                "{shell} script does not complete `{sub}`"
            );
        }
        let file = dir.path().join(format!("backupctl.{shell}"));
        std::fs::write(&file, &script).unwrap();
        // bash is everywhere these tests run; the others only where someone installed them.
        if shell != "bash" && !installed(shell) {
            eprintln!("skipped `{shell} -n` on the {shell} script: {shell} is not installed");
            continue;
        }
        let check = Command::new(shell).arg("-n").arg(&file).output().unwrap();
        assert!(
            check.status.success() && check.stderr.is_empty(),
            "`{shell} -n` refuses the script: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[test]
fn the_bash_script_completes_subcommands_and_shells() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backupctl.bash");
    std::fs::write(&file, ok(&mut homeless_ctl(&["completions", "bash"]))).unwrap();
    // What bash does on TAB: set COMP_WORDS and COMP_CWORD, call the function with the
    // command, the word being completed and the word before it.
    let complete = |words: &str, cword: usize, cur: &str, prev: &str| {
        let script = format!(
            r#"source "$1"; COMP_WORDS=({words}); COMP_CWORD={cword}
               _backupctl backupctl "{cur}" "{prev}"; printf '%s\n' "${{COMPREPLY[@]}}""#
        );
        let out = ok(Command::new("bash")
            .args(["-c", &script, "bash"])
            .arg(&file));
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        complete("backupctl res", 1, "res", "backupctl"),
        ["restore"]
    );
    let shells = complete("backupctl completions ''", 2, "", "completions");
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|s| s == shell), "{shells:?}");
    }
}

/// Checks a page's roff header and, where groff is installed, that groff reads it without a
/// warning and renders its name.
#[track_caller]
fn check_page(path: &Path, title: &str) {
    let page = std::fs::read_to_string(path).unwrap();
    let header = page
        .lines()
        .find(|line| line.starts_with(".TH "))
        .unwrap_or_else(|| panic!("{} has no .TH header: {page}", path.display()));
    assert!(
        header.starts_with(&format!(".TH {title} 1 ")),
        "{}: {header}",
        path.display()
    );
    assert!(page.contains("\n.SH NAME\n"), "{page}");
    if !installed("groff") {
        eprintln!(
            "skipped parsing {} with groff: not installed",
            path.display()
        );
        return;
    }
    // -k reads UTF-8 as man-db does; -ww turns on every warning.
    let rendered = Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-ww"])
        .arg(path)
        .output()
        .unwrap();
    let warnings = String::from_utf8_lossy(&rendered.stderr);
    assert!(
        rendered.status.success() && warnings.is_empty(),
        "groff on {}: {warnings}",
        path.display()
    );
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains(&format!("{title}(1)")), "{text}");
}

#[test]
fn man_writes_a_page_for_every_subcommand_and_groff_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("share/man/man1");
    let printed = ok(&mut homeless_ctl(&["man", "--out", out.to_str().unwrap()]));
    assert!(printed.is_empty(), "{}", String::from_utf8_lossy(&printed));

    let mut expected: BTreeSet<String> = subcommands()
        .iter()
        .map(|sub| format!("backupctl-{sub}.1"))
        .collect();
    expected.insert("backupctl.1".to_owned());
    let written: BTreeSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(written, expected);
    for file in &written {
        check_page(&out.join(file), file.trim_end_matches(".1"));
    }
    let run = std::fs::read_to_string(out.join("backupctl-run.1")).unwrap();
    assert!(
        run.contains("\\-\\-dry\\-run"),
        "the page has the flags: {run}"
    );

    // Without --out, the same top page goes to stdout.
    let top = ok(&mut homeless_ctl(&["man"]));
    assert_eq!(top, std::fs::read(out.join("backupctl.1")).unwrap());

    let refused = homeless_ctl(&["--json", "man"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "man prints no JSON");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--json"));
}

#[test]
fn backupd_prints_its_page_with_a_hidden_flag() {
    let page = ok(Command::new(backupd_bin())
        .arg("--print-man")
        .env_remove("HOME")
        .env_remove("BACKUPD_HOME")
        .env_remove("XDG_STATE_HOME"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backupd.1");
    std::fs::write(&file, &page).unwrap();
    check_page(&file, "backupd");
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("\\-\\-catch\\-up\\-grace"), "{page}");
    for hidden in ["print\\-man", "detach"] {
        assert!(!page.contains(hidden), "{hidden} is for scripts: {page}");
    }
}

/// Asserts that stdout is exactly one line holding one JSON object with `ok`, and returns it.
#[track_caller]
fn one_json_line(ctl: &Ctl) -> Value {
    let stdout = ctl.stdout();
    assert!(
        stdout.ends_with('\n') && stdout.lines().count() == 1,
        "one line on stdout: {stdout:?} (stderr {:?})",
        ctl.stderr()
    );
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert!(value.is_object() && value["ok"].is_boolean(), "{value}");
    value
}

#[test]
fn json_prints_one_answer_line_for_every_command_that_talks_to_the_daemon() {
    let t = TestHome::new();
    let _stop = StopOnDrop(&t);
    std::fs::create_dir(t.work().join("src")).unwrap();
    std::fs::write(t.work().join("src/file.txt"), b"data\n").unwrap();
    // A remote for `sync`, its credentials in a file (the daemon inherits no AWS environment).
    let server = common::s3::S3Server::start();
    let creds = t.work().join("aws-credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            common::s3::ACCESS_KEY,
            common::s3::SECRET_KEY
        ),
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let extra = format!("credentials_file = \"{}\"\n", creds.display());
    t.append_config(&server.remote_table("off", "host", &extra));
    let mut covered = BTreeSet::new();
    let mut json = |args: &[&str]| {
        covered.insert(args[0].to_owned());
        let ctl = t.ctl(&[&["--json"], args].concat());
        let value = one_json_line(&ctl);
        assert_eq!(value["ok"], true, "{args:?}: {value}");
        assert_eq!(ctl.code(), 0, "{args:?}");
        value
    };

    let started = json(&["start"]);
    assert_eq!(started["data"]["daemon_version"], env!("CARGO_PKG_VERSION"));
    json(&["status"]);
    json(&["jobs"]);
    json(&["log-level", "info"]);
    let spec = format!("src;{};once", common::far_time());
    json(&["create", &spec]);
    json(&[
        "create", "--name", "daily", "--source", "src", "--daily", "02:00",
    ]);
    let list = json(&["list"]);
    assert_eq!(list["data"]["schedules"].as_array().unwrap().len(), 2);
    let run = json(&["run", "--sources", "src"]);
    let archive = run["data"]["sources"][0]["archive"]
        .as_str()
        .unwrap()
        .to_owned();
    json(&["backups", "--long"]);
    json(&["verify", &archive]);
    json(&["restore", &archive, "--to", "restored"]);
    json(&["ls", &archive]);
    json(&["prune", "--dry-run"]);
    let synced = json(&["sync", "--remote", "off"]);
    assert_eq!(synced["data"]["uploads"][0]["ok"], true, "{synced}");
    json(&["delete", "--name", "daily"]);
    json(&["delete", "0"]);
    // Nothing runs, so there is nothing to cancel: the refusal is one line too.
    let cancel = t.ctl(&["--json", "cancel", "--name", "nothing"]);
    assert_eq!(cancel.code(), 1);
    assert_eq!(one_json_line(&cancel)["error"]["code"], "job_not_found");
    let stopped = json(&["stop"]);
    assert!(stopped["data"]["pid"].is_u64(), "{stopped}");

    covered.insert("cancel".to_owned());
    // `completions`, `man` and `keygen` ask no daemon; `watch` is a stream of event lines, not one
    // answer (tests/jobs.rs follows it with --json).
    let local = ["completions", "man", "watch", "keygen"];
    let untested: Vec<String> = subcommands()
        .into_iter()
        .filter(|sub| !covered.contains(sub) && !local.contains(&sub.as_str()))
        .collect();
    assert!(
        untested.is_empty(),
        "every command that talks to the daemon has a --json line here; add {untested:?}"
    );
}

#[test]
fn json_prints_the_refusal_as_one_line_too() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let refused = t.ctl(&["--json", "delete", "5"]);
    assert_eq!(refused.code(), 1);
    let value = one_json_line(&refused);
    assert_eq!(value["error"]["code"], "schedule_not_found", "{value}");
    assert!(
        refused.stderr().starts_with("Error: "),
        "{}",
        refused.stderr()
    );
}

#[test]
fn run_with_json_on_a_terminal_prints_only_the_answer() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    std::fs::write(t.work().join("src/f"), b"data").unwrap();
    let _daemon = t.start_daemon();
    // `script` gives backupctl a pseudo-terminal as stdout, where it would draw progress.
    let command = format!("{} --json run --sources src", backupctl_bin().display());
    let Output { status, stdout, .. } = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(t.work())
        .env("BACKUPD_HOME", t.home())
        .output()
        .unwrap();
    assert!(status.success());
    let text = String::from_utf8_lossy(&stdout);
    assert!(!text.contains('\x1b'), "no progress drawn: {text:?}");
    // The terminal turns the newline into \r\n.
    let line = text.strip_suffix("\r\n").unwrap_or(&text);
    assert!(!line.contains('\n'), "one line: {text:?}");
    let value: Value = serde_json::from_str(line).unwrap();
    assert_eq!(value["ok"], true, "{value}");
}

#[test]
fn readme_and_help_describe_every_command_and_argument() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table: Vec<&str> = readme
        .lines()
        .filter(|line| line.starts_with("| `backupctl "))
        .collect();
    for name in subcommands() {
        let row = format!("| `backupctl {name}");
        assert!(
            table.iter().any(|line| line
                .strip_prefix(&row)
                .is_some_and(|rest| rest.starts_with([' ', '`']))),
            "README's command table has no row for {name}"
        );
    }

    let help = |args: &[&str]| String::from_utf8(ok(&mut homeless_ctl(args))).unwrap();
    // Every positional argument says what it is.
    for (args, argument) in [
        (&["log-level", "-h"][..], "<LEVEL>"),
        (&["ls", "-h"][..], "[PATH]"),
    ] {
        let text = help(args);
        let line = text
            .lines()
            .find(|line| line.trim_start().starts_with(argument))
            .unwrap_or_else(|| panic!("{argument} in {text}"));
        assert!(
            line.trim().len() > argument.len(),
            "{argument} has no description: {text}"
        );
    }
    // The hooks' help says when they run, as crates/backupd/src/hooks.rs runs them.
    let run = help(&["run", "-h"]);
    // An option and its description, which clap puts on the line below when others are long.
    let option = |name: &str| {
        let lines: Vec<&str> = run.lines().collect();
        let at = lines
            .iter()
            .position(|line| line.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {run}"));
        lines[at..=at + 1].join(" ")
    };
    assert!(option("--after ").contains("offsite failure"), "{run}");
    assert!(option("--on-failure ").contains("cancelled"), "{run}");
}
