//! The JSON-lines protocol on the raw socket: answers, ids, precise error codes, and a daemon
//! that survives garbage and many clients at once.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Client, TestHome};
use serde_json::Value;
use std::io::Write;

#[test]
fn hello_reports_versions_and_ids_are_echoed() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let mut client = Client::connect(&t.socket()).unwrap();
    let hello = client.request(r#"{"id":42,"cmd":"hello"}"#);
    assert_eq!(hello["ok"], true);
    assert_eq!(hello["id"], 42);
    assert_eq!(hello["data"]["protocol_version"], 1);
    assert_eq!(hello["data"]["daemon_version"], env!("CARGO_PKG_VERSION"));
    // Many requests on one connection, answered in order.
    for i in 0..20 {
        let answer = client.request(&format!(r#"{{"id":"r{i}","cmd":"list"}}"#));
        assert_eq!(answer["id"], format!("r{i}"));
        assert_eq!(answer["ok"], true);
    }
    let no_id = client.request(r#"{"cmd":"list"}"#);
    assert_eq!(no_id["id"], Value::Null);
}

#[test]
fn every_bad_request_gets_its_code_and_the_connection_goes_on() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let mut client = Client::connect(&t.socket()).unwrap();
    let cases: [(&[u8], &str); 8] = [
        (b"\x00\xff\xfe\x80garbage", "invalid_utf8"),
        (b"{\"cmd\":\"list\"", "invalid_json"),
        (b"[\"list\"]", "invalid_request"),
        (b"{\"cmd\":7}", "invalid_request"),
        (b"{\"id\":1}", "missing_command"),
        (b"{\"id\":2,\"cmd\":\"launch\"}", "unknown_command"),
        (
            b"{\"id\":3,\"cmd\":\"delete\",\"index\":\"zero\"}",
            "invalid_arguments",
        ),
        (b"{\"id\":4,\"cmd\":\"create\"}", "invalid_arguments"),
    ];
    for (line, code) in cases {
        client.send_bytes(line);
        client.send_bytes(b"\n");
        let answer = client.read_response();
        assert_eq!(answer["ok"], false, "{answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    let answer = client.request(r#"{"id":9,"cmd":"delete","index":"zero"}"#);
    assert_eq!(answer["id"], 9, "the id is echoed even on bad arguments");
    assert_eq!(client.request(r#"{"cmd":"hello"}"#)["ok"], true);
}

#[test]
fn a_two_mebibyte_line_is_refused_and_the_connection_still_serves() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let mut client = Client::connect(&t.socket()).unwrap();
    let mut huge = vec![b'x'; 2 * 1024 * 1024];
    huge.push(b'\n');
    // Write from another thread: the daemon answers before it has read everything.
    let mut writer = client_writer(&t);
    let sender = std::thread::spawn(move || {
        writer.write_all(&huge).unwrap();
        writer
    });
    drop(sender.join().unwrap());
    // That was another connection; now the same connection: oversized, then a valid request.
    let mut long = vec![b' '; 1024 * 1024 + 10];
    long.push(b'\n');
    let mut writer = client.writer_clone();
    let sender = std::thread::spawn(move || writer.write_all(&long).unwrap());
    let answer = client.read_response();
    sender.join().unwrap();
    assert_eq!(answer["error"]["code"], "request_too_large");
    assert_eq!(client.request(r#"{"cmd":"hello"}"#)["ok"], true);
}

#[test]
fn half_a_request_then_a_disconnect_leaves_the_daemon_serving() {
    let t = TestHome::new();
    let mut daemon = t.start_daemon();
    for _ in 0..5 {
        let mut client = Client::connect(&t.socket()).unwrap();
        client.send_bytes(br#"{"cmd":"cre"#);
        drop(client);
        let mut binary = Client::connect(&t.socket()).unwrap();
        binary.send_bytes(&[0, 159, 146, 150, 10, 255]);
        drop(binary);
    }
    let mut client = Client::connect(&t.socket()).unwrap();
    assert_eq!(client.request(r#"{"cmd":"hello"}"#)["ok"], true);
    assert!(daemon.is_running());
}

#[test]
fn fifty_clients_at_once_are_all_served() {
    let t = TestHome::new();
    std::fs::create_dir(t.work().join("src")).unwrap();
    let _daemon = t.start_daemon();
    let source = t.work().join("src").display().to_string();
    let hhmm = common::far_time();
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let socket = t.socket();
            let source = source.clone();
            let hhmm = hhmm.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&socket).unwrap();
                let spec = format!("{source};{hhmm};job{i}");
                let create = serde_json::json!({"id": i, "cmd": "create", "spec": spec});
                let answer = client.request(&create.to_string());
                assert_eq!(answer["ok"], true, "{answer}");
                assert_eq!(answer["id"], i);
                for _ in 0..5 {
                    assert_eq!(client.request(r#"{"cmd":"list"}"#)["ok"], true);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let mut client = Client::connect(&t.socket()).unwrap();
    let list = client.request(r#"{"cmd":"list"}"#);
    let schedules = list["data"]["schedules"].as_array().unwrap();
    assert_eq!(schedules.len(), 50, "no concurrent change was lost");
    let mut ids: Vec<u64> = schedules
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50, "ids are unique");
}

#[test]
fn the_readme_socat_example_works() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- socat-example -->")
        .expect("README marks its socat example");
    let block = &readme[start..];
    let code_start = block.find("```sh\n").unwrap() + "```sh\n".len();
    let code_end = code_start + block[code_start..].find("```").unwrap();
    let script = &block[code_start..code_end];
    assert!(script.contains("socat"), "{script}");

    // As after the quick start: the default home, none of backupd's variables set.
    let user = DefaultUser::new(false);
    user.start();
    let stdout = user.run_example("", "socat-example", script);
    assert_eq!(stdout.lines().count(), 1, "one response line: {stdout:?}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["ok"], true);
    assert!(answer["data"]["schedules"].is_array());
}

fn client_writer(t: &TestHome) -> std::os::unix::net::UnixStream {
    std::os::unix::net::UnixStream::connect(t.socket()).unwrap()
}

// The README's Scripting section: every `sh` block in it runs here, in order, against a real
// daemon found the way backupctl finds it by default (no --home, no BACKUPD_HOME).

/// The `sh` blocks of the README's Scripting section, in order, each named by the
/// `<!-- scripting-example: NAME -->` line right above it.
fn scripting_examples() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("\n## Scripting\n")
        .expect("README has a Scripting section");
    let section = &readme[start + 1..];
    let section = &section[..section[1..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 1)];
    let mut examples = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let marker = rest[..open].trim_end().lines().last().unwrap_or_default();
        let name = marker
            .strip_prefix("<!-- scripting-example: ")
            .and_then(|m| m.strip_suffix(" -->"))
            .unwrap_or_else(|| {
                panic!(
                    "every sh block of README's Scripting section needs a \
                     `<!-- scripting-example: NAME -->` line above it; this one has {marker:?}"
                )
            });
        let code = &rest[open + "```sh\n".len()..];
        let close = code.find("```").expect("closed code block");
        examples.push((name.to_owned(), code[..close].to_owned()));
        rest = &code[close + 3..];
    }
    examples
}

/// A user with a temporary `$HOME` (and `$XDG_STATE_HOME`, if `xdg`), none of backupd's own
/// variables, and a daemon in the home that those give. The daemon is stopped on drop.
struct DefaultUser {
    dir: tempfile::TempDir,
    xdg: bool,
}

impl DefaultUser {
    fn new(xdg: bool) -> Self {
        let dir = tempfile::Builder::new().prefix("bkd").tempdir().unwrap();
        let user = Self { dir, xdg };
        std::fs::create_dir_all(user.documents()).unwrap();
        std::fs::write(user.documents().join("notes.txt"), b"notes\n").unwrap();
        user
    }

    fn user_home(&self) -> std::path::PathBuf {
        self.dir.path().join("me")
    }

    fn documents(&self) -> std::path::PathBuf {
        self.user_home().join("Documents")
    }

    /// Where the daemon's home must end up.
    fn daemon_home(&self) -> std::path::PathBuf {
        if self.xdg {
            self.dir.path().join("state/backupd")
        } else {
            self.user_home().join(".local/state/backupd")
        }
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command
            .current_dir(self.dir.path())
            .env("HOME", self.user_home())
            .env_remove("BACKUPD_HOME")
            .env_remove("BACKUPD_SOCKET")
            .env_remove("XDG_STATE_HOME")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null());
        if self.xdg {
            command.env("XDG_STATE_HOME", self.dir.path().join("state"));
        }
        command
    }

    fn start(&self) {
        let out = self
            .command(common::backupctl_bin())
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(self.daemon_home().join("backupd.sock").exists());
    }

    /// Runs a README block after the socket block, as one bash script; its stdout.
    #[track_caller]
    fn run_example(&self, prelude: &str, name: &str, code: &str) -> String {
        let out = self
            .command("bash")
            .args(["-euo", "pipefail", "-c", &format!("{prelude}\n{code}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README example {name} failed (socat and jq installed?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for DefaultUser {
    fn drop(&mut self) {
        if self.daemon_home().join("backupd.sock").exists() {
            let _ = self.command(common::backupctl_bin()).arg("stop").output();
        }
    }
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn readme_scripting_examples_work(xdg: bool) {
    let user = DefaultUser::new(xdg);
    user.start();
    let examples = scripting_examples();
    let (first, prelude) = examples.first().expect("README has Scripting examples");
    assert_eq!(first, "socket", "the first example finds the socket");
    let documents = user.documents().display().to_string();
    let backups = user.daemon_home().join("backups").display().to_string();
    for (name, code) in &examples[1..] {
        if name == "jq" && !installed("jq") {
            eprintln!("skipped the README's jq example: jq is not installed");
            continue;
        }
        let stdout = user.run_example(prelude, name, code);
        match name.as_str() {
            "create" => {
                let lines = json_lines(&stdout);
                assert_eq!(lines.len(), 1, "{stdout}");
                assert_eq!(lines[0]["ok"], true, "{stdout}");
                let schedule = &lines[0]["data"]["schedule"];
                assert_eq!(schedule["name"], "documents");
                assert_eq!(schedule["kind"], "daily");
                assert_eq!(schedule["sources"][0], documents.as_str());
            }
            "list" => {
                let lines = json_lines(&stdout);
                assert_eq!(lines.len(), 1, "{stdout}");
                assert_eq!(lines[0]["data"]["schedules"][0]["name"], "documents");
            }
            "run" => {
                let lines = json_lines(&stdout);
                let (response, events) = lines.split_last().expect("output");
                assert_eq!(response["ok"], true, "the response comes last: {stdout}");
                assert_eq!(response["id"], 1);
                assert!(
                    events
                        .iter()
                        .all(|e| e["id"] == 1 && e["event"].is_string())
                );
                assert_eq!(events[0]["event"], "run_started");
                assert_eq!(events[1]["event"], "source_started");
                assert_eq!(events.last().unwrap()["event"], "source_finished");
                let archive = response["data"]["sources"][0]["archive"].as_str().unwrap();
                assert!(archive.starts_with(&backups), "{archive} in {backups}");
            }
            "jq" => {
                let lines: Vec<&str> = stdout.lines().collect();
                assert_eq!(lines.len(), 4, "{stdout}");
                assert!(lines[0].starts_with("0: documents, next run "), "{stdout}");
                assert_eq!(lines[1], format!("source_started: {documents}"));
                assert_eq!(lines[2], format!("source_finished: {documents}"));
                assert!(
                    lines[3].starts_with(&format!("done: {backups}/documents_"))
                        && lines[3].ends_with(".tar.gz"),
                    "{stdout}"
                );
            }
            other => panic!("README's Scripting example {other:?} has no check here"),
        }
    }
}

fn installed(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn readme_scripting_examples_work_with_the_home_under_home() {
    readme_scripting_examples_work(false);
}

#[test]
fn readme_scripting_examples_work_with_the_home_under_xdg_state_home() {
    readme_scripting_examples_work(true);
}

#[test]
fn the_readme_socket_lookup_matches_backupctls() {
    let examples = scripting_examples();
    let (_, prelude) = examples.first().expect("README has Scripting examples");
    // (BACKUPD_SOCKET, BACKUPD_HOME, XDG_STATE_HOME); HOME is always /home/me.
    let cases: [(Option<&str>, Option<&str>, Option<&str>); 9] = [
        (None, None, None),
        (None, None, Some("/xdg/state")),
        (None, None, Some("relative/state")),
        (None, None, Some("")),
        (None, Some("/b/home"), Some("/xdg/state")),
        (None, Some(""), Some("/xdg/state")),
        (Some("/s/backupd.sock"), Some("/b/home"), None),
        (Some(""), Some("/b/home"), None),
        (Some(""), Some(""), Some("")),
    ];
    for (socket, home, xdg) in cases {
        let mut command = std::process::Command::new("bash");
        command
            .args([
                "-euo",
                "pipefail",
                "-c",
                &format!("{prelude}\nprintf '%s' \"$sock\""),
            ])
            .env("HOME", "/home/me")
            .env_remove("BACKUPD_SOCKET")
            .env_remove("BACKUPD_HOME")
            .env_remove("XDG_STATE_HOME");
        for (name, value) in [
            ("BACKUPD_SOCKET", socket),
            ("BACKUPD_HOME", home),
            ("XDG_STATE_HOME", xdg),
        ] {
            if let Some(value) = value {
                command.env(name, value);
            }
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // As `Env::from_process` reads them: empty counts as unset.
        let path = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
        let env = proto::paths::Env {
            backupd_home: path(home),
            backupd_socket: path(socket),
            xdg_state_home: path(xdg),
            home: Some("/home/me".into()),
        };
        let daemon_home = proto::paths::resolve_home(None, &env).unwrap();
        let expected = proto::paths::resolve_socket(None, &env, &daemon_home).unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            expected.display().to_string(),
            "BACKUPD_SOCKET={socket:?} BACKUPD_HOME={home:?} XDG_STATE_HOME={xdg:?}"
        );
    }
}
