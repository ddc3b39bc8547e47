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

    let t = TestHome::new();
    let _daemon = t.start_daemon();
    let output = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("BACKUPD_HOME", t.home())
        .output()
        .expect("run bash");
    assert!(
        output.status.success(),
        "the example failed (is socat installed? apt-get install socat): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one response line: {stdout:?}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["ok"], true);
    assert!(answer["data"]["schedules"].is_array());
}

fn client_writer(t: &TestHome) -> std::os::unix::net::UnixStream {
    std::os::unix::net::UnixStream::connect(t.socket()).unwrap()
}
