//! Human-readable text for each answer; `--json` bypasses this module.

use proto::response::{BackupList, Hello, ScheduleList};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Lines to print for a successful `list`: `0: path;HH:MM;name`.
pub fn schedules(data: Value) -> Result<Vec<String>, String> {
    let list: ScheduleList = decode(data)?;
    Ok(list
        .schedules
        .iter()
        .map(|s| format!("{}: {}", s.index, s.display))
        .collect())
}

/// Lines to print for a successful `backups`: one file name each.
pub fn backups(data: Value) -> Result<Vec<String>, String> {
    let list: BackupList = decode(data)?;
    Ok(list.backups)
}

pub fn status(data: Value, socket: &std::path::Path) -> Result<Vec<String>, String> {
    let hello: Hello = decode(data)?;
    Ok(vec![format!(
        "backupd {} running (protocol {}, socket {})",
        hello.daemon_version,
        hello.protocol_version,
        socket.display()
    )])
}

fn decode<T: DeserializeOwned>(data: Value) -> Result<T, String> {
    serde_json::from_value(data).map_err(|e| format!("unexpected answer from backupd: {e}"))
}
