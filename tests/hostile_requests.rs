//! A corpus of hostile request lines sent over the raw socket to a real daemon: each earns one
//! error line with its stable code, nothing is acted on, the connection goes on, and the daemon
//! answers `hello` afterwards.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Client, TestHome};

/// Bytes nested `depth` levels deep: `[[[…]]]`.
fn nested(depth: usize) -> Vec<u8> {
    let mut line = vec![b'['; depth];
    line.extend(std::iter::repeat_n(b']', depth));
    line
}

fn corpus(t: &TestHome) -> Vec<(String, Vec<u8>, &'static str)> {
    let missing = t.work().join("no-such-source").display().to_string();
    let text = |name: &str, line: &str, code: &'static str| {
        (name.to_owned(), line.as_bytes().to_vec(), code)
    };
    let bytes =
        |name: &str, line: &[u8], code: &'static str| (name.to_owned(), line.to_vec(), code);
    let mut deep_in_object = b"{\"cmd\":\"hello\",\"x\":".to_vec();
    deep_in_object.extend(nested(5000));
    deep_in_object.push(b'}');
    let huge_id = format!(r#"{{"id":"{}","cmd":"nope"}}"#, "i".repeat(900 * 1024));
    let huge_arg = format!(r#"{{"cmd":"delete","name":"{}"}}"#, "n".repeat(800 * 1024));
    vec![
        text("empty line", "", "invalid_json"),
        text("blank line", " \t ", "invalid_json"),
        bytes("a NUL byte", b"\x00", "invalid_json"),
        bytes(
            "raw NUL in a string",
            b"{\"cmd\":\"hel\x00lo\"}",
            "invalid_json",
        ),
        text(
            "escaped NUL in cmd",
            r#"{"cmd":"hello\u0000"}"#,
            "unknown_command",
        ),
        bytes("invalid UTF-8", b"\xff\xfe{}", "invalid_utf8"),
        bytes(
            "broken UTF-8 in cmd",
            b"{\"cmd\":\"\xc3\x28\"}",
            "invalid_utf8",
        ),
        bytes("overlong UTF-8", b"{\"cmd\":\"\xc0\xaf\"}", "invalid_utf8"),
        bytes(
            "UTF-8 surrogate",
            b"{\"cmd\":\"\xed\xa0\x80\"}",
            "invalid_utf8",
        ),
        bytes(
            "byte order mark",
            b"\xef\xbb\xbf{\"cmd\":\"hello\"}",
            "invalid_json",
        ),
        text(
            "CRLF after a bad request",
            "{\"cmd\":\"nope\"}\r",
            "unknown_command",
        ),
        text(
            "a lone CR in a string",
            "{\"cmd\":\"hel\rlo\"}",
            "invalid_json",
        ),
        text("null", "null", "invalid_request"),
        text("a number", "42", "invalid_request"),
        text("a string", r#""hello""#, "invalid_request"),
        text(
            "an array of requests",
            r#"[{"cmd":"hello"}]"#,
            "invalid_request",
        ),
        text("cmd null", r#"{"cmd":null}"#, "invalid_request"),
        text("cmd array", r#"{"cmd":["hello"]}"#, "invalid_request"),
        text("cmd object", r#"{"cmd":{"hello":1}}"#, "invalid_request"),
        text("cmd number", r#"{"cmd":1e999999}"#, "invalid_json"),
        text("no cmd", "{}", "missing_command"),
        text("CMD in capitals", r#"{"CMD":"hello"}"#, "missing_command"),
        text("empty cmd", r#"{"cmd":""}"#, "unknown_command"),
        text("cmd in capitals", r#"{"cmd":"HELLO"}"#, "unknown_command"),
        text("shell in cmd", r#"{"cmd":"rm -rf /"}"#, "unknown_command"),
        text(
            "path in cmd",
            r#"{"cmd":"../../bin/sh"}"#,
            "unknown_command",
        ),
        text(
            "duplicate cmd",
            r#"{"cmd":"hello","cmd":"stop"}"#,
            "invalid_request",
        ),
        text(
            "escaped duplicate cmd",
            r#"{"cmd":"hello","\u0063md":"stop"}"#,
            "invalid_request",
        ),
        text(
            "duplicate nested key",
            r#"{"cmd":"prune","retention":{"days":1,"days":0},"dry_run":true}"#,
            "invalid_request",
        ),
        text(
            "duplicate key in the id",
            r#"{"id":{"a":1,"a":2},"cmd":"hello"}"#,
            "invalid_request",
        ),
        text(
            "two objects on a line",
            r#"{"cmd":"hello"}{"cmd":"stop"}"#,
            "invalid_json",
        ),
        text("trailing garbage", r#"{"cmd":"hello"} x"#, "invalid_json"),
        text("unterminated", r#"{"cmd":"hello""#, "invalid_json"),
        bytes("deep nesting", &nested(100_000), "invalid_json"),
        bytes(
            "deep nesting in an argument",
            &deep_in_object,
            "invalid_json",
        ),
        text(
            "negative index",
            r#"{"cmd":"delete","index":-1}"#,
            "invalid_arguments",
        ),
        text(
            "index past u64",
            r#"{"cmd":"delete","index":18446744073709551616}"#,
            "invalid_arguments",
        ),
        text(
            "index out of f64",
            r#"{"cmd":"delete","index":1e400}"#,
            "invalid_json",
        ),
        text(
            "fractional index",
            r#"{"cmd":"delete","index":1.5}"#,
            "invalid_arguments",
        ),
        text(
            "index as a string",
            r#"{"cmd":"delete","index":"0"}"#,
            "invalid_arguments",
        ),
        text(
            "huge index",
            r#"{"cmd":"delete","index":4294967296}"#,
            "schedule_not_found",
        ),
        text(
            "traversal as a schedule name",
            r#"{"cmd":"delete","name":"../../etc/passwd"}"#,
            "schedule_not_found",
        ),
        (
            "a huge name".to_owned(),
            huge_arg.into_bytes(),
            "schedule_not_found",
        ),
        (
            "a huge id".to_owned(),
            huge_id.into_bytes(),
            "invalid_request",
        ),
        text(
            "a stored schedule run with settings of its own",
            r#"{"cmd":"run","schedule":"nightly","compression":"zstd","destination":"/tmp"}"#,
            "invalid_arguments",
        ),
        (
            "a line over 1 MiB".to_owned(),
            vec![b'{'; 1024 * 1024 + 1],
            "request_too_large",
        ),
        text(
            "negative job",
            r#"{"cmd":"cancel","job":-5}"#,
            "invalid_arguments",
        ),
        text(
            "unknown job",
            r#"{"cmd":"cancel","job":987654321}"#,
            "job_not_found",
        ),
        text(
            "impossible time",
            r#"{"cmd":"create","spec":"/tmp;25:99;x"}"#,
            "malformed_schedule",
        ),
        text(
            "relative source",
            r#"{"cmd":"create","spec":"tmp;01:00;x"}"#,
            "malformed_schedule",
        ),
        text(
            "traversal as a backup name",
            r#"{"cmd":"create","spec":"/tmp;01:00;../../etc"}"#,
            "malformed_schedule",
        ),
        (
            "a missing source".to_owned(),
            format!(r#"{{"cmd":"run","sources":["{missing}"]}}"#).into_bytes(),
            "backup_failed",
        ),
        text(
            "sources not a list",
            r#"{"cmd":"run","sources":"/"}"#,
            "invalid_arguments",
        ),
        text(
            "a level out of range",
            r#"{"cmd":"run","sources":["/"],"compression":"gzip","level":99999999999}"#,
            "invalid_arguments",
        ),
        text(
            "an unknown argument",
            r#"{"cmd":"list","bogus":true}"#,
            "invalid_arguments",
        ),
        text(
            "an argument to watch",
            r#"{"cmd":"watch","x":1}"#,
            "invalid_arguments",
        ),
        text(
            "a NUL log level",
            r#"{"cmd":"log_level","level":"\u0000"}"#,
            "invalid_arguments",
        ),
        text(
            "a relative destination",
            r#"{"cmd":"backups","destination":"../.."}"#,
            "invalid_arguments",
        ),
        text(
            "an unknown remote",
            r#"{"cmd":"backups","remote":"nowhere"}"#,
            "invalid_arguments",
        ),
        text(
            "a remote and a destination",
            r#"{"cmd":"verify","all":true,"remote":"s3://bkt/p","destination":"/tmp"}"#,
            "invalid_arguments",
        ),
        text(
            "traversal in a remote prefix",
            r#"{"cmd":"prune","remote":"s3://bkt/../../etc","dry_run":true}"#,
            "invalid_arguments",
        ),
        text(
            "a bad bucket to sync to",
            r#"{"cmd":"sync","remote":"s3://../x"}"#,
            "invalid_arguments",
        ),
        text(
            "a name no backup can have, to prune",
            r#"{"cmd":"prune","name":"../x","dry_run":true}"#,
            "invalid_arguments",
        ),
        text(
            "an empty name to verify",
            r#"{"cmd":"verify","name":""}"#,
            "invalid_arguments",
        ),
        text(
            "a remote as a number",
            r#"{"cmd":"restore","archive":"a.tar.gz","to":"/tmp/x","remote":7}"#,
            "invalid_arguments",
        ),
    ]
}

#[test]
fn every_hostile_request_gets_one_error_line_and_the_daemon_stays_up() {
    let t = TestHome::new();
    let mut daemon = t.start_daemon();
    let cases = corpus(&t);
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    for (name, line, code) in cases {
        let mut client = Client::connect(&t.socket()).unwrap();
        // Another thread writes: the daemon may answer a huge line before it has read it all.
        let mut writer = client.writer_clone();
        let sender = std::thread::spawn(move || {
            use std::io::Write;
            let _ = writer.write_all(&line);
            let _ = writer.write_all(b"\n");
        });
        let answer = client.read_response();
        sender.join().unwrap();
        assert_eq!(answer["ok"], false, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{name}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty(), "{name}");
        // One answer per line, and the connection goes on.
        let hello = client.request(r#"{"id":"after","cmd":"hello"}"#);
        assert_eq!(hello["id"], "after", "{name}: {hello}");
        assert_eq!(hello["ok"], true, "{name}: {hello}");
        assert!(daemon.is_running(), "{name} stopped the daemon");
    }
    // Nothing was acted on: no schedule, the daemon still up.
    let mut client = Client::connect(&t.socket()).unwrap();
    let list = client.request(r#"{"cmd":"list"}"#);
    assert_eq!(list["data"]["schedules"], serde_json::json!([]), "{list}");
    assert!(daemon.is_running());
}

#[test]
fn a_newline_in_a_request_cannot_forge_a_log_line() {
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let forged = "[26/11/2026 23:00] Deleting old backup: forged_20261120_000000.tar.gz";
    let line =
        serde_json::json!({"cmd": "run", "sources": ["/x"], "compression": format!("a\n{forged}")});
    let answer = Client::connect(&t.socket())
        .unwrap()
        .request(&line.to_string());
    assert_eq!(answer["error"]["code"], "invalid_arguments", "{answer}");
    let log = common::wait_for(std::time::Duration::from_secs(30), "the log line", || {
        Some(t.log()).filter(|log| log.contains("forged_"))
    });
    // Every line is stamped by the daemon, and the forged one is inside the logged one.
    let messages = common::log_messages(&log);
    assert!(
        !messages
            .iter()
            .any(|m| m.starts_with("Deleting old backup")),
        "{messages:#?}"
    );
    assert!(log.contains(&format!("a\\n{forged}")), "{log}");
}

#[test]
fn the_log_keeps_a_bounded_part_of_what_a_refused_request_quotes() {
    // Logged whole, 200 refused specs of 1 MiB rotated every earlier line out of the log.
    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let spec = "x".repeat(512 * 1024);
    let line = serde_json::json!({"cmd": "create", "spec": spec});
    let answer = Client::connect(&t.socket())
        .unwrap()
        .request(&line.to_string());
    assert_eq!(answer["error"]["code"], "malformed_schedule", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains(&spec), "the client is told all of it");
    let log = common::wait_for(std::time::Duration::from_secs(30), "the log line", || {
        Some(t.log()).filter(|log| log.contains("malformed schedule: xxx"))
    });
    let logged = log
        .lines()
        .find(|line| line.contains("malformed schedule: xxx"))
        .unwrap();
    assert!(logged.len() < 1200, "{} bytes logged", logged.len());
    assert!(
        logged.ends_with(&format!("… ({} bytes)", message.len())),
        "{logged}"
    );
}
