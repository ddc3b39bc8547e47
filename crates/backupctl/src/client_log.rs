//! `<home>/logs/backupctl.log`: what the daemon cannot log because it never saw it (daemon
//! unreachable, bad usage, a daemon the client started), in the daemon log's line format.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const LOG_FILE: &str = "backupctl.log";

/// Past this size the log becomes `backupctl.log.1` (replacing the one before) and a new one
/// starts: a monitoring probe during a long outage writes a line a minute.
const ROTATE_AT_BYTES: u64 = 1 << 20;

/// Appends `[dd/mm/yyyy hh:mm] Error: <message>` when the logs folder exists, is writable and
/// can be trusted (see [`trusted_folder`]); otherwise does nothing, since failing to log must
/// not hide the failure itself.
pub fn log_error(home: Option<&Path>, message: &str) {
    append(home, &format!("Error: {message}"));
}

/// Appends `[dd/mm/yyyy hh:mm] <message>`, as [`log_error`] does.
pub fn log_info(home: Option<&Path>, message: &str) {
    append(home, message);
}

fn append(home: Option<&Path>, message: &str) {
    let Some(home) = home else { return };
    let logs = home.join(proto::paths::LOGS_DIR);
    if !trusted_folder(&logs) {
        return;
    }
    let now = chrono::Local::now().format(proto::LOG_TIME_FORMAT);
    // One line per message, as in the daemon's log: a message may quote the daemon's text.
    let line = format!("[{now}] {}\n", proto::escape_controls(message));
    let path = logs.join(LOG_FILE);
    if std::fs::symlink_metadata(&path)
        .is_ok_and(|meta| meta.is_file() && meta.len() >= ROTATE_AT_BYTES)
    {
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        // Best effort, as logging is: another backupctl may have just done it.
        let _ = std::fs::rename(&path, rotated);
    }
    let file = std::fs::OpenOptions::new()
        .mode(0o600)
        .create(true)
        .append(true)
        // A link planted in place of the log is never written through (backupctl may be
        // root), nor a FIFO waited on.
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(&path);
    if let Ok(mut file) = file
        && file.metadata().is_ok_and(|meta| meta.is_file())
    {
        let _ = file.write_all(line.as_bytes());
    }
}

/// The daemon's own rule for its folders: a real folder (not a link) of ours that no one else
/// may write, so nobody else can have planted anything in it.
fn trusted_folder(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).is_ok_and(|meta| {
        meta.is_dir()
            && meta.uid() == rustix::process::geteuid().as_raw()
            && meta.mode() & 0o022 == 0
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;
    use std::os::unix::fs::DirBuilderExt;

    #[test]
    fn a_full_log_is_rotated_to_one_older_file() {
        let home = tempfile::tempdir().unwrap();
        let logs = home.path().join(proto::paths::LOGS_DIR);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&logs)
            .unwrap();
        let full = "x".repeat(usize::try_from(ROTATE_AT_BYTES).unwrap());
        std::fs::write(logs.join(LOG_FILE), &full).unwrap();
        log_error(Some(home.path()), "daemon unreachable");
        let rotated = std::fs::read_to_string(logs.join("backupctl.log.1")).unwrap();
        assert_eq!(rotated, full);
        let current = std::fs::read_to_string(logs.join(LOG_FILE)).unwrap();
        assert!(
            current.ends_with("] Error: daemon unreachable\n"),
            "{current}"
        );
        // Below the size, it grows on.
        log_info(Some(home.path()), "again");
        let current = std::fs::read_to_string(logs.join(LOG_FILE)).unwrap();
        assert_eq!(current.lines().count(), 2);
    }
}
