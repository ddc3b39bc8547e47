//! The log file's writer: a thread of its own fed by a bounded queue, so that a slow disk never
//! stalls the async workers that log; it rotates the file by size and reopens it on request
//! (SIGHUP), so an external logrotate works too.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::thread::JoinHandle;

/// When the log file is rotated: past `max_bytes`, it becomes `<file>.1` (the older ones
/// shift to `.2` … `.<keep>`, the oldest is deleted) and a new file starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// `None`: never rotate.
    pub max_bytes: Option<u64>,
    /// Rotated files kept beside the current one.
    pub keep: usize,
}

impl Default for Rotation {
    /// 10 MiB, 5 old files: at most 60 MiB of logs.
    fn default() -> Self {
        Self {
            max_bytes: Some(10 << 20),
            keep: 5,
        }
    }
}

/// The open log file, with what rotation needs to know.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
}

impl LogFile {
    fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        // O_APPEND and one write per line keep lines whole even with several writers; a link
        // planted in place of the log is never written through, nor a FIFO waited on.
        let file = OpenOptions::new()
            .mode(0o600)
            .create(true)
            .append(true)
            .custom_flags(crate::fsutil::not_waiting_not_following())
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    io::Error::other("it is a symbolic link, which backupd never writes through")
                } else if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) {
                    // What a non-blocking open for writing says of a FIFO without a reader.
                    io::Error::other("it is not a regular file")
                } else {
                    e
                }
            })?;
        crate::fsutil::ensure_regular(&file)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            rotation,
        })
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        if let Some(max) = self.rotation.max_bytes
            && self.size >= max
            && let Err(e) = self.rotate()
        {
            // The line is written: the file only grows on. Said once per `max` bytes, not
            // on every line.
            self.size = 0;
            let _ = writeln!(
                io::stderr(),
                "backupd: can't rotate the log {}: {e}; it grows on, and is rotated again after another {max} bytes",
                self.path.display()
            );
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: usize| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        // Deleted or moved away with no SIGHUP (a logrotate without `postrotate`): a new file
        // starts there. Shifting the numbered ones would push the history out with nothing
        // to take its place.
        if !self.still_at_its_path()? {
            return self.reopen();
        }
        for past in self.rotated_past_keep()? {
            match fs::remove_file(past) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if self.rotation.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.rotation.keep).rev() {
                match fs::rename(numbered(n), numbered(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.path, numbered(1))?;
        }
        self.reopen()
    }

    /// The rotated files numbered past `keep`: left by a larger `log_keep` before.
    fn rotated_past_keep(&self) -> io::Result<Vec<PathBuf>> {
        let (Some(folder), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Ok(Vec::new());
        };
        let mut prefix = name.to_owned();
        prefix.push(".");
        let mut past = Vec::new();
        for entry in fs::read_dir(folder)? {
            let entry = entry?;
            let name = entry.file_name();
            let number = (name.as_encoded_bytes())
                .strip_prefix(prefix.as_encoded_bytes())
                .and_then(|n| std::str::from_utf8(n).ok())
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<usize>().ok());
            if number.is_some_and(|n| n > self.rotation.keep) {
                past.push(entry.path());
            }
        }
        Ok(past)
    }

    /// Whether the open file is still the one its path names.
    fn still_at_its_path(&self) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let open = self.file.metadata()?;
        match fs::symlink_metadata(&self.path) {
            Ok(named) => Ok((named.dev(), named.ino()) == (open.dev(), open.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Opens the file at its path again: after a rotation, or after someone moved it away.
    fn reopen(&mut self) -> io::Result<()> {
        *self = Self::open(&self.path, self.rotation)?;
        Ok(())
    }
}

/// Lines waiting for the writer thread; past this, whoever logs waits for room.
pub(super) const QUEUE_LINES: usize = 1024;

/// Hands each formatted line to the writer thread. The fmt layer writes one whole event per
/// `write` call, so one queued buffer is one line, and the thread writes it with one `write`
/// (O_APPEND keeps it whole next to other writers). Lines are written in the order they were
/// queued; none is dropped: a full queue makes the logging thread wait.
#[derive(Debug, Clone)]
pub(super) struct LineQueue {
    inner: Arc<QueueInner>,
}

#[derive(Debug)]
struct QueueInner {
    /// `None` once the guard has stopped the thread: later lines are written in place.
    sender: RwLock<Option<SyncSender<Message>>>,
    file: Arc<Mutex<LogFile>>,
}

#[derive(Debug)]
enum Message {
    Line(Vec<u8>),
    /// Answered once every line queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Open the file at its path again.
    Reopen,
}

impl LineQueue {
    /// Queues `message`; `false` if the writer thread no longer takes any.
    fn send(&self, message: Message) -> bool {
        let sender = self
            .inner
            .sender
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        sender
            .as_ref()
            .is_some_and(|sender| sender.send(message).is_ok())
    }

    /// Resolves once every line queued before the call is in the file.
    async fn flushed(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.send(Message::Flush(done)) {
            let _ = written.await;
        }
    }
}

/// The queue of the installed subscriber, for [`flushed`].
pub(super) static QUEUE: OnceLock<LineQueue> = OnceLock::new();

/// Whether the log is set up: lines logged now reach the log file and stderr.
pub fn is_active() -> bool {
    QUEUE.get().is_some()
}

/// Reopens the log file at its path (SIGHUP), after every line logged before the call.
pub fn reopen() {
    if let Some(queue) = QUEUE.get() {
        queue.send(Message::Reopen);
    }
}

/// Resolves once every line logged before the call is in the log file. The server awaits it
/// before each answer, so that a script reading the log after a command finds its lines.
pub async fn flushed() {
    if let Some(queue) = QUEUE.get() {
        queue.flushed().await;
    }
}

impl Write for &LineQueue {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        if !self.send(Message::Line(line.to_vec())) {
            // The thread is gone (stopped at exit, or dead): write in place rather than lose it.
            lock(&self.inner.file).write_line(line)?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineQueue {
    type Writer = &'a LineQueue;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// Keeps the log writer thread. Dropping it writes every queued line and stops the thread;
/// lines logged after that go straight to the file. Hold it until the process ends.
#[derive(Debug)]
#[must_use = "dropping the guard stops the log writer thread"]
pub struct LogGuard {
    queue: LineQueue,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        // Holding the lock until the thread has written the queue makes any line logged
        // meanwhile wait, then go to the file after the queued ones, in order.
        let mut sender = self
            .queue
            .inner
            .sender
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // The last sender gone, the thread ends once the queue is empty.
        drop(sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the thread that writes queued lines to the file at `path`.
pub(super) fn spawn_writer(
    path: &Path,
    rotation: Rotation,
    capacity: usize,
) -> io::Result<(LineQueue, LogGuard)> {
    let file = Arc::new(Mutex::new(LogFile::open(path, rotation)?));
    let (sender, messages) = sync_channel(capacity);
    let thread = std::thread::Builder::new()
        .name("backupd-log".to_owned())
        .spawn({
            let file = Arc::clone(&file);
            move || {
                for message in messages {
                    let done = match message {
                        Message::Line(line) => lock(&file).write_line(&line),
                        Message::Reopen => lock(&file).reopen(),
                        Message::Flush(done) => {
                            let _ = done.send(());
                            Ok(())
                        }
                    };
                    if let Err(e) = done {
                        // Not through tracing: that would queue to this very thread.
                        let _ = writeln!(io::stderr(), "backupd: can't write the log: {e}");
                    }
                }
            }
        })?;
    let queue = LineQueue {
        inner: Arc::new(QueueInner {
            sender: RwLock::new(Some(sender)),
            file,
        }),
    };
    let guard = LogGuard {
        queue: queue.clone(),
        thread: Some(thread),
    };
    Ok((queue, guard))
}

/// The log file, whoever panicked while holding it: a log line is not worth a second panic.
fn lock(file: &Mutex<LogFile>) -> std::sync::MutexGuard<'_, LogFile> {
    file.lock().unwrap_or_else(PoisonError::into_inner)
}
#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    const LOG_FILE: &str = "backupd.log";

    fn spawn(dir: &Path, capacity: usize) -> (LineQueue, LogGuard) {
        let unlimited = Rotation {
            max_bytes: None,
            keep: 0,
        };
        spawn_writer(&dir.join(LOG_FILE), unlimited, capacity).unwrap()
    }

    #[test]
    fn every_queued_line_is_written_whole_and_in_order_when_the_guard_drops() {
        let dir = tempfile::tempdir().unwrap();
        // A tiny queue, so that loggers often find it full and must wait.
        let (queue, guard) = spawn(dir.path(), 2);
        std::thread::scope(|scope| {
            for logger in 0..4 {
                let queue = queue.clone();
                scope.spawn(move || {
                    for n in 0..2000 {
                        let line = format!("logger {logger} line {n:04} {}\n", "x".repeat(200));
                        queue.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                });
            }
        });
        drop(guard);
        let text = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let logger: usize = words[1].parse().unwrap();
            let n: usize = words[3].parse().unwrap();
            assert_eq!(n, next[logger], "lines of logger {logger} out of order");
            assert_eq!(words[4].len(), 200, "a torn line: {line:?}");
            next[logger] += 1;
        }
        assert_eq!(next, [2000; 4], "every line reached the file");
    }

    #[tokio::test]
    async fn flushed_waits_until_the_queued_lines_are_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _guard) = spawn(dir.path(), 8);
        for n in 0..100 {
            let line = format!("line {n}\n");
            queue.make_writer().write_all(line.as_bytes()).unwrap();
        }
        queue.flushed().await;
        let text = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(text.lines().count(), 100);
    }

    #[test]
    fn lines_logged_after_the_guard_go_straight_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, guard) = spawn(dir.path(), 8);
        queue.make_writer().write_all(b"queued\n").unwrap();
        drop(guard);
        queue.make_writer().write_all(b"late\n").unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(text, "queued\nlate\n");
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_so_many() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let rotation = Rotation {
            max_bytes: Some(100),
            keep: 2,
        };
        let mut file = LogFile::open(&path, rotation).unwrap();
        for n in 0..10 {
            // 40 bytes a line: the file rotates after every third.
            file.write_line(format!("line {n:02} {}\n", "x".repeat(31)).as_bytes())
                .unwrap();
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(read(LOG_FILE).starts_with("line 09"));
        assert!(read("backupd.log.1").starts_with("line 06"));
        assert!(read("backupd.log.2").starts_with("line 03"));
        assert!(
            !dir.path().join("backupd.log.3").exists(),
            "only 2 are kept"
        );
    }

    #[test]
    fn a_log_deleted_or_moved_without_a_sighup_starts_anew_at_the_next_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let rotation = Rotation {
            max_bytes: Some(100),
            keep: 2,
        };
        let line = |n: usize| format!("line {n:02} {}\n", "x".repeat(31));
        // Left from a time `log_keep` was larger.
        std::fs::write(dir.path().join("backupd.log.4"), "long ago").unwrap();
        let mut file = LogFile::open(&path, rotation).unwrap();
        for n in 0..6 {
            file.write_line(line(n).as_bytes()).unwrap();
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(read("backupd.log.2").starts_with("line 00"));
        assert!(
            !dir.path().join("backupd.log.4").exists(),
            "only 2 are kept"
        );
        std::fs::remove_file(&path).unwrap();
        for n in 6..9 {
            file.write_line(line(n).as_bytes()).unwrap();
        }
        // The history stays; the next line starts a new file.
        assert!(read("backupd.log.1").starts_with("line 03"));
        assert!(read("backupd.log.2").starts_with("line 00"));
        file.write_line(line(9).as_bytes()).unwrap();
        assert_eq!(read(LOG_FILE), line(9));
    }

    #[test]
    fn reopen_starts_a_new_file_after_it_was_moved_away() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, guard) = spawn(dir.path(), 8);
        queue.make_writer().write_all(b"before\n").unwrap();
        let moved = dir.path().join("backupd.log.old");
        // As logrotate does: move the file, then tell the daemon.
        let flushed = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        flushed.block_on(queue.flushed());
        std::fs::rename(dir.path().join(LOG_FILE), &moved).unwrap();
        queue.send(Message::Reopen);
        queue.make_writer().write_all(b"after\n").unwrap();
        drop(guard);
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "before\n");
        let current = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(current, "after\n");
    }
}
