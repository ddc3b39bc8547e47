//! `backupctl watch --json` as a child of the test; its event lines arrive on a channel.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{PATIENCE, TestHome, far_time, wait_for};

pub struct Watcher {
    child: std::process::Child,
    pub lines: mpsc::Receiver<Value>,
}

impl Watcher {
    pub fn start(t: &TestHome) -> Self {
        let mut child = t
            .ctl_command(&["watch", "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn backupctl watch");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line).expect("a JSON line");
                if send.send(value).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits until the daemon has begun the watch: creates one-shot schedules
    /// `<prefix>_1`, `<prefix>_2`, … (far in the future) until one is seen; returns that
    /// first `schedule_changed` event.
    pub fn wait_until_watching(&self, t: &TestHome, src: &str, prefix: &str) -> Value {
        let mut created = 0;
        wait_for(PATIENCE, "the watch to see a create", || {
            created += 1;
            let spec = format!("{src};{};{prefix}_{created}", far_time());
            t.ctl(&["create", &spec]).ok();
            self.lines.recv_timeout(Duration::from_millis(200)).ok()
        })
    }

    /// The next event of `kind`, skipping others, within [`PATIENCE`].
    #[track_caller]
    pub fn next(&self, kind: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {kind} event"));
            if line["event"] == kind {
                return line;
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
