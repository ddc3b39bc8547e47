//! Command sources: a command's standard output archived as one file (a database dump).
//!
//! A tar header carries the entry's size before its data, and neither GNU tar nor PAX headers
//! can leave it open, so a stream of unknown length cannot go straight into a standard
//! archive. The output is therefore spilled to an unlinked temporary file (`O_TMPFILE`) in the
//! destination folder (or the system's temp folder when that one has no local path), then
//! appended with its size. That also means a command that fails never leaves a truncated entry:
//! its exit status is known before a byte of it is archived. The command runs without a shell,
//! in a process group of its own that is killed when the backup is cancelled.

use std::io::{self, Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use proto::job::CommandSource;
use rustix::process::{Pid, Signal, kill_process_group};
use tar::{Builder, EntryType, Header};

use super::error::EngineError;
use super::progress::{Meter, MeteredReader};
use crate::format::CommandRecord;

/// Bytes of a failed command's stderr quoted in the error: its end, where the reason is.
const STDERR_TAIL: usize = 2048;

/// Runs `source`, spills its output into a temporary file in `spill_dir` and appends it to the
/// archive as `source.name`. Fails (and archives nothing of it) if the command cannot start,
/// exits non-zero or dies of a signal.
pub(crate) fn append_command<W: Write>(
    builder: &mut Builder<W>,
    source: &CommandSource,
    spill_dir: &Path,
    meter: &mut Meter<'_>,
    cancel: &AtomicBool,
) -> Result<CommandRecord, EngineError> {
    let failed = |reason: String| EngineError::CommandSource {
        name: source.name.clone(),
        reason,
    };
    let (program, args) = source
        .command
        .split_first()
        .ok_or_else(|| failed("empty command".into()))?;
    let mut spill = tempfile::tempfile_in(spill_dir)
        .or_else(|_| tempfile::tempfile())
        .map_err(|e| failed(format!("no room for its output: {e}")))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| failed(format!("can't start {program}: {e}")))?;
    let group = Pid::from_raw(child.id().cast_signed());
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");

    let done = AtomicBool::new(false);
    let (copied, stderr_tail, status) = std::thread::scope(|scope| {
        let tail = scope.spawn(move || read_tail(&mut stderr));
        // Cancelling kills the command's whole group; its pipes then close and the copy ends.
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if cancel.load(Ordering::Relaxed) {
                    if let Some(group) = group {
                        let _ = kill_process_group(group, Signal::KILL);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let copied = io::copy(&mut stdout, &mut spill);
        drop(stdout);
        let status = child.wait();
        done.store(true, Ordering::Relaxed);
        (copied, tail.join().unwrap_or_default(), status)
    });
    meter.check_cancel()?;
    let status = status.map_err(|e| failed(e.to_string()))?;
    if !status.success() {
        return Err(failed(describe(status, &stderr_tail)));
    }
    let bytes = copied.map_err(|e| failed(format!("can't store its output: {e}")))?;
    spill
        .rewind()
        .map_err(|e| failed(format!("can't read its output back: {e}")))?;

    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_size(bytes);
    header.set_mode(0o600);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    header.set_mtime(now);
    header.set_uid(rustix::process::getuid().as_raw().into());
    header.set_gid(rustix::process::getgid().as_raw().into());
    let mut limited = Read::by_ref(&mut spill).take(bytes);
    builder
        .append_data(
            &mut header,
            &source.name,
            MeteredReader::new(&mut limited, meter),
        )
        .map_err(|e| {
            if super::progress::is_cancellation(&e) {
                EngineError::Cancelled
            } else {
                failed(format!("can't archive its output: {e}"))
            }
        })?;
    meter.progress.files += 1;
    Ok(CommandRecord {
        name: source.name.clone(),
        command: source.command.clone(),
        exit_status: status.code().unwrap_or(0),
        bytes,
    })
}

/// The last [`STDERR_TAIL`] bytes of a stream, read to its end.
fn read_tail(stream: &mut impl Read) -> String {
    let mut tail = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
    let start = tail.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&tail[start..]).trim().to_owned()
}

/// "exited with status 1" or "killed by signal 9", and the stderr tail.
fn describe(status: ExitStatus, stderr_tail: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    };
    if stderr_tail.is_empty() {
        how
    } else {
        format!("{how}: {stderr_tail}")
    }
}
