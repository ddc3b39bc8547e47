//! `backupctl start`: launches `backupd` detached in its own session and waits until it
//! answers, or reports why it did not.

use crate::client::{self, Answer};
use crate::failure::Failure;
use proto::{Command, Request};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a starting daemon may take to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// `backupd`'s exit code when another daemon holds its home or socket.
const DAEMON_ALREADY_RUNNING: i32 = 3;

/// `log_level` gives the original backup script's `LOG_LEVEL`, handed to the daemon as
/// `--log-level`; asked only when a daemon is to be launched, since it may read `.env`.
pub fn start(
    home: &Path,
    socket: &Path,
    log_level: impl FnOnce() -> Result<Option<String>, Failure>,
) -> Result<Answer, Failure> {
    // A socket this user may not open may well have a daemon behind it: starting one of our
    // own there would not help.
    match client::call_answered_at_once(socket, &Request::new(Command::Hello {})) {
        Ok(answer) if answer.response.ok => {
            return Err(Failure::AlreadyRunning(
                "backupd already running".to_owned(),
            ));
        }
        Err(denied @ client::ClientError::Forbidden { .. }) => {
            return Err(Failure::Denied(denied.to_string()));
        }
        // Something holds the socket and does not answer: a second daemon would not help.
        Err(silent @ client::ClientError::Silent { .. }) => {
            return Err(silent_daemon(&silent, home));
        }
        _ => {}
    }
    let binary = daemon_binary();
    let mut command = std::process::Command::new(&binary);
    if let Some(level) = log_level()? {
        command.arg("--log-level").arg(level.to_ascii_lowercase());
    }
    let mut child = command
        .arg("--home")
        .arg(home)
        .arg("--socket")
        .arg(socket)
        .arg("--detach")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Failure::Local(format!(
                "can't run {}: {e}; install backupd next to backupctl or on PATH",
                binary.display()
            ))
        })?;
    // Drain stderr so a chatty start-up never blocks on a full pipe; kept to explain a failure.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(answer) = hello(socket, home)? {
            return Ok(answer);
        }
        if let Some(ended) = child.try_wait().transpose() {
            // Another client started a daemon on this home a moment before us: once it
            // answers, it is the one running.
            let code = ended.as_ref().ok().and_then(ExitStatus::code);
            if code == Some(DAEMON_ALREADY_RUNNING) && answers_by(socket, home, deadline) {
                return Err(Failure::AlreadyRunning(
                    "backupd already running".to_owned(),
                ));
            }
            let status = match ended {
                Ok(status) => status.to_string(),
                Err(e) => format!("can't watch it: {e}"),
            };
            let output = stderr
                .and_then(|reader| reader.join().ok())
                .unwrap_or_default();
            let reason = output.trim();
            return Err(Failure::Local(if reason.is_empty() {
                format!("backupd exited during start-up ({status})")
            } else {
                format!("backupd exited during start-up ({status}): {reason}")
            }));
        }
        if Instant::now() >= deadline {
            return Err(Failure::Local(format!(
                "backupd did not answer on {} within {}s; see {}",
                socket.display(),
                READY_TIMEOUT.as_secs(),
                home.join("logs/backupd.log").display()
            )));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The daemon's answer to `hello`, if it gave one; an error when it took the connection but
/// did not answer within the answer timeout (bound its socket, then stalled or hung), which
/// waiting longer would not mend.
fn hello(socket: &Path, home: &Path) -> Result<Option<Answer>, Failure> {
    match client::call_answered_at_once(socket, &Request::new(Command::Hello {})) {
        Ok(answer) => Ok(Some(answer).filter(|answer| answer.response.ok)),
        Err(silent @ client::ClientError::Silent { .. }) => Err(silent_daemon(&silent, home)),
        Err(_) => Ok(None),
    }
}

fn silent_daemon(silent: &client::ClientError, home: &Path) -> Failure {
    Failure::Unreachable(format!(
        "{silent}; see {}",
        home.join("logs/backupd.log").display()
    ))
}

/// Waits until a daemon answers at `socket`, or `deadline`.
fn answers_by(socket: &Path, home: &Path, deadline: Instant) -> bool {
    loop {
        if matches!(hello(socket, home), Ok(Some(_))) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `backupd` next to this executable (an install or a cargo build), else from PATH.
fn daemon_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("backupd")))
        .filter(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("backupd"))
}
