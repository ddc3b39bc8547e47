//! Command sources: a command's standard output archived as one file (a database dump).
//!
//! A tar header carries the entry's size before its data. Where the archive is a local file
//! stored as written (not encrypted), the output streams straight in, with no copy anywhere:
//! the header goes first, with size 0, as a [`StoredSegment`] the codec frames but does not
//! compress; the output follows through the compressor; once the command has exited the
//! header is rewritten in place with the real size, and the archive is hashed from the file
//! rather than on the way (see `run_backup`). Where written bytes cannot be rewritten (age
//! authenticates every chunk; an `s3://` destination has uploaded them) the output is spilled
//! to an unlinked temporary file (`O_TMPFILE`) first and appended with its size.
//!
//! Either way a command that fails fails the run, so no archive with a truncated dump is ever
//! published. The command runs without a shell, in a process group of its own that is killed
//! when the backup is cancelled, and once the command has exited: its output ends there, though
//! a process that left the group may still hold the pipe.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use proto::Codec;
use proto::job::CommandSource;
use rustix::process::{Pid, Signal, kill_process_group};
use tar::{Builder, EntryType, Header};

use super::archive::append_body;
use super::error::EngineError;
use super::hashing_writer::HashingWriter;
use super::progress::{Meter, MeteredReader, cancelled_read, is_cancellation};
use crate::destination::PendingArchive;
use crate::format::stored_segment::{SEGMENT_LEN, StoredSegment};
use crate::format::{CommandRecord, Encoder, Sealer, WriteFrom, tar_padding};

/// Bytes of a failed command's stderr quoted in the error: its end, where the reason is.
const STDERR_TAIL: usize = 2048;

/// The layers an archive is written through, outermost first.
pub(crate) type ArchiveWriter = Encoder<Sealer<HashingWriter<Box<dyn PendingArchive>>>>;

/// How a command's output reaches the archive.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route<'a> {
    /// Straight into the archive, whose header is rewritten afterwards.
    Stream(Codec),
    /// Through a temporary file in this folder (or the system's temp folder).
    Spill(&'a Path),
}

/// How dumps reach `writer`'s archive: streamed where its bytes can be rewritten once
/// written, else spilled into `spill_dir`. A streamed archive's digest is taken from the file
/// once its headers are final (see `run_backup`), so none is taken on the way.
pub(crate) fn route_for<'a>(
    writer: &mut ArchiveWriter,
    codec: Codec,
    spill_dir: &'a Path,
) -> Route<'a> {
    // One walk down the layers, so a streamed route always comes with `count_only`.
    let Some(hashing) = writer.get_mut().ok().and_then(Sealer::plain_mut) else {
        return Route::Spill(spill_dir);
    };
    let rewritable = hashing
        .get_mut()
        .is_ok_and(|pending| pending.written_file().is_some());
    if !rewritable {
        return Route::Spill(spill_dir);
    }
    hashing.count_only();
    Route::Stream(codec)
}

/// The file the archive is written to, when its bytes can be rewritten once written.
pub(crate) fn rewritable_file(writer: &mut ArchiveWriter) -> Option<io::Result<&File>> {
    let sealer = match writer.get_mut() {
        Ok(sealer) => sealer,
        Err(e) => return Some(Err(e)),
    };
    match sealer.plain_mut()?.get_mut() {
        Ok(pending) => pending.written_file(),
        Err(e) => Some(Err(e)),
    }
}

/// Where the output went while the command ran.
enum Copied {
    Streamed {
        segment: StoredSegment,
        start: u64,
        bytes: u64,
    },
    Spilled {
        file: File,
        bytes: u64,
    },
}

/// Runs `source` in `folder` (the job's source folder, so that `sqlite3 app.db .dump` given
/// beside `--sources .` reads that folder's `app.db`, not one the daemon's working directory
/// would make) and archives its output as the file `source.name`, by `route`. Fails if the
/// command cannot start, exits non-zero or dies of a signal.
pub(crate) fn append_command(
    builder: &mut Builder<ArchiveWriter>,
    source: &CommandSource,
    folder: &Path,
    route: Route<'_>,
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
    // `./dump.sh` is the folder's too: which directory a relative program path is taken in
    // once the working directory changes is not defined otherwise.
    let program_path = Path::new(program);
    let mut command = if program.contains('/') && program_path.is_relative() {
        Command::new(folder.join(program_path))
    } else {
        Command::new(program)
    };
    crate::child_env::prepare(&mut command);
    let mut child = command
        .current_dir(folder)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| failed(format!("can't start {program}: {e}")))?;
    let group = Pid::from_raw(child.id().cast_signed());
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mtime = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    // Not a scoped thread: a process that left the command's group could hold stderr open
    // for as long as it lives, and the job must not wait for it.
    let (tail_sender, tail) = std::sync::mpsc::sync_channel(1);
    let reader = std::thread::Builder::new()
        .name("dump-stderr".to_owned())
        .spawn(move || {
            let _ = tail_sender.send(read_tail(&mut stderr));
        });
    if let Err(e) = reader {
        if let Some(group) = group {
            let _ = kill_process_group(group, Signal::KILL);
        }
        let _ = child.wait();
        return Err(failed(format!("can't read its error output: {e}")));
    }
    let done = AtomicBool::new(false);
    let (copied, status) = std::thread::scope(|scope| {
        // Cancelling kills the command's whole group, here too while it is waited for below;
        // the copy stops by itself (see `CommandOutput`).
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
        let mut output = CommandOutput {
            stdout,
            command: &mut child,
            group,
            cancel,
            left_after_exit: None,
        };
        let copied = match route {
            Route::Stream(codec) => {
                stream_into(builder, codec, &source.name, mtime, &mut output, meter)
            }
            Route::Spill(dir) => spill(&mut output, dir),
        };
        // A command still writing gets EPIPE (or SIGPIPE) instead of blocking forever.
        drop(output);
        let status = child.wait();
        // What the command left running in its group would hold its stderr open: it goes too.
        if let Some(group) = group {
            let _ = kill_process_group(group, Signal::KILL);
        }
        done.store(true, Ordering::Relaxed);
        (copied, status)
    });
    let stderr_tail = tail
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    meter.check_cancel()?;
    // A failed write comes first: the command then died of the closed pipe, not of itself.
    let copied = copied.map_err(|e| {
        if is_cancellation(&e) {
            EngineError::Cancelled
        } else {
            failed(format!("can't archive its output: {e}"))
        }
    })?;
    let status = status.map_err(|e| failed(e.to_string()))?;
    if !status.success() {
        return Err(failed(describe(status, &stderr_tail)));
    }
    let bytes = match copied {
        Copied::Streamed {
            segment,
            start,
            bytes,
        } => {
            let header = entry_header(&source.name, bytes, mtime)
                .map_err(|e| failed(format!("can't describe its output: {e}")))?;
            rewrite_header(builder, segment, start, &header)
                .map_err(|e| failed(format!("can't write its size into the archive: {e}")))?;
            bytes
        }
        Copied::Spilled { file, bytes } => {
            append_spilled(builder, &source.name, mtime, file, bytes, meter).map_err(|e| {
                if is_cancellation(&e) {
                    EngineError::Cancelled
                } else {
                    failed(format!("can't archive its output: {e}"))
                }
            })?;
            bytes
        }
    };
    meter.progress.files += 1;
    Ok(CommandRecord {
        name: source.name.clone(),
        command: source.command.clone(),
        exit_status: status.code().unwrap_or(0),
        bytes,
    })
}

/// How long a read of the command's output waits for bytes before it looks again whether the
/// command has exited or the backup was cancelled.
const EXIT_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// A command's standard output, read until the command has exited, not until every process
/// holding the pipe has closed it: one the command left running in its group goes with the
/// group, and one that left the group (`setsid`) may hold the pipe for as long as it lives.
/// So on the command's exit its group is killed, what the pipe holds then is read, and the
/// pipe is let go. Cancelling ends the reading at once.
struct CommandOutput<'a> {
    stdout: ChildStdout,
    command: &'a mut Child,
    group: Option<Pid>,
    cancel: &'a AtomicBool,
    /// Once the command has exited: the bytes still to read of those in the pipe then.
    left_after_exit: Option<u64>,
}

impl Read for CommandOutput<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let interval = Timespec::try_from(EXIT_CHECK_INTERVAL).map_err(io::Error::other)?;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(cancelled_read());
            }
            if let Some(left) = self.left_after_exit {
                let wanted = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
                if wanted == 0 {
                    return Ok(0);
                }
                // Those bytes are in the pipe: the read does not wait.
                let read = self.stdout.read(&mut buf[..wanted])?;
                self.left_after_exit = Some(if read == 0 { 0 } else { left - read as u64 });
                return Ok(read);
            }
            if self.command.try_wait()?.is_some() {
                // Killed first, so that nothing of the group writes after the count.
                if let Some(group) = self.group {
                    let _ = kill_process_group(group, Signal::KILL);
                }
                self.left_after_exit = Some(rustix::io::ioctl_fionread(&self.stdout)?);
                continue;
            }
            let mut fds = [PollFd::new(&self.stdout, PollFlags::IN)];
            match poll(&mut fds, Some(&interval)) {
                // Bytes, or the end: the read does not wait.
                Ok(ready) if ready > 0 => return self.stdout.read(buf),
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Writes a placeholder header as a stored segment, then the output through the compressor,
/// padded to a whole tar block.
fn stream_into(
    builder: &mut Builder<ArchiveWriter>,
    codec: Codec,
    name: &str,
    mtime: u64,
    stdout: &mut CommandOutput<'_>,
    meter: &mut Meter<'_>,
) -> io::Result<Copied> {
    let writer = builder.get_mut();
    writer.end_segment()?;
    let start = meter.bytes_out();
    let placeholder = entry_header(name, 0, mtime)?;
    let segment = StoredSegment::write(codec, placeholder.as_bytes(), writer.get_mut()?)?;
    let bytes = writer.write_from(&mut MeteredReader::new(stdout, meter), u64::MAX)?;
    let padding = usize::try_from(tar_padding(bytes)).unwrap_or(0);
    writer.write_all(&[0u8; SEGMENT_LEN][..padding])?;
    Ok(Copied::Streamed {
        segment,
        start,
        bytes,
    })
}

/// Puts the real header over the placeholder `stream_into` wrote at `start`.
fn rewrite_header(
    builder: &mut Builder<ArchiveWriter>,
    segment: StoredSegment,
    start: u64,
    header: &Header,
) -> io::Result<()> {
    let file = rewritable_file(builder.get_mut())
        .ok_or_else(|| io::Error::other("the archive can no longer be rewritten"))??;
    for rewrite in segment.rewrites(header.as_bytes()) {
        file.write_all_at(&rewrite.bytes, start + rewrite.offset)?;
    }
    Ok(())
}

fn spill(stdout: &mut CommandOutput<'_>, dir: &Path) -> io::Result<Copied> {
    let mut file = tempfile::tempfile_in(dir).or_else(|_| tempfile::tempfile())?;
    let bytes = io::copy(stdout, &mut file)?;
    Ok(Copied::Spilled { file, bytes })
}

fn append_spilled(
    builder: &mut Builder<ArchiveWriter>,
    name: &str,
    mtime: u64,
    mut file: File,
    bytes: u64,
    meter: &mut Meter<'_>,
) -> io::Result<()> {
    file.rewind()?;
    let mut header = entry_header(name, bytes, mtime)?;
    let mut output = MeteredReader::new(&mut file, meter);
    append_body(builder, &mut header, Path::new(name), &mut output, bytes)
}

/// The tar header of a command's output: a private regular file owned by the daemon's user.
fn entry_header(name: &str, size: u64, mtime: u64) -> io::Result<Header> {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    header.set_uid(rustix::process::getuid().as_raw().into());
    header.set_gid(rustix::process::getgid().as_raw().into());
    header.set_cksum();
    Ok(header)
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
