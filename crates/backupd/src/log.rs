//! Logging: every event becomes one line `[dd/mm/yyyy hh:mm] <message>` (the original backup
//! script's format, local time), errors prefixed `Error: ` and warnings `Warning: `, written to
//! `<home>/logs/backupd.log` and to stderr. The file is written by a thread of its own, so that a slow disk never stalls
//! the async workers that log.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::thread::JoinHandle;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// File name of the daemon's log inside `<home>/logs`.
pub const LOG_FILE: &str = "backupd.log";

/// Formats events as the original backup script's log lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptLineFormat;

impl<S, N> FormatEvent<S, N> for ScriptLineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = chrono::Local::now().format(proto::LOG_TIME_FORMAT);
        write!(writer, "[{now}] ")?;
        match *event.metadata().level() {
            Level::ERROR => writer.write_str("Error: ")?,
            Level::WARN => writer.write_str("Warning: ")?,
            _ => {}
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    #[error("invalid log level {0:?}: use error, warn, info, debug or trace (or target=level,…)")]
    Level(String),
    #[error("can't open log file {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("can't start the log writer thread: {0}")]
    Thread(std::io::Error),
}

/// Lines waiting for the writer thread; past this, whoever logs waits for room.
const QUEUE_LINES: usize = 1024;

/// Hands each formatted line to the writer thread. The fmt layer writes one whole event per
/// `write` call, so one queued buffer is one line, and the thread writes it with one `write`
/// (O_APPEND keeps it whole next to other writers). Lines are written in the order they were
/// queued; none is dropped: a full queue makes the logging thread wait.
#[derive(Debug, Clone)]
struct LineQueue {
    inner: Arc<QueueInner>,
}

#[derive(Debug)]
struct QueueInner {
    /// `None` once the guard has stopped the thread: later lines are written in place.
    sender: RwLock<Option<SyncSender<Message>>>,
    file: Arc<File>,
}

#[derive(Debug)]
enum Message {
    Line(Vec<u8>),
    /// Answered once every line queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
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
static QUEUE: OnceLock<LineQueue> = OnceLock::new();

/// Whether the log is set up: lines logged now reach the log file and stderr.
pub fn is_active() -> bool {
    QUEUE.get().is_some()
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
            (&*self.inner.file).write_all(line)?;
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

/// Starts the thread that writes queued lines to `file`.
fn spawn_writer(file: File, capacity: usize) -> io::Result<(LineQueue, LogGuard)> {
    let file = Arc::new(file);
    let (sender, messages) = sync_channel(capacity);
    let thread = std::thread::Builder::new()
        .name("backupd-log".to_owned())
        .spawn({
            let file = Arc::clone(&file);
            move || {
                for message in messages {
                    match message {
                        Message::Line(line) => {
                            if let Err(e) = (&*file).write_all(&line) {
                                // Not through tracing: that would queue to this very thread.
                                let _ = writeln!(io::stderr(), "backupd: can't write the log: {e}");
                            }
                        }
                        Message::Flush(done) => {
                            let _ = done.send(());
                        }
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

/// Parses `info` or `target=level,…`. Stricter than `Targets`, which would read a misspelt
/// level as a target name and silently log nothing.
fn parse_filter(directive: &str) -> Result<Targets, LogInitError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |word: &str| LEVELS.contains(&word.to_ascii_lowercase().as_str());
    let valid = directive.split(',').all(|part| match part.split_once('=') {
        Some((target, level)) => !target.is_empty() && is_level(level),
        None => is_level(part),
    });
    let invalid = || LogInitError::Level(directive.to_owned());
    if !valid {
        return Err(invalid());
    }
    directive.parse().map_err(|_| invalid())
}

/// Checks a `--log-level` directive without installing anything.
pub fn check_level(directive: &str) -> Result<(), LogInitError> {
    parse_filter(directive).map(drop)
}

/// Installs the global subscriber. `level` is `--log-level`, else `RUST_LOG`, else `info`.
/// The returned guard flushes the log file when dropped.
pub fn init(logs_dir: &Path, level: Option<&str>) -> Result<LogGuard, LogInitError> {
    let directive = level
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "info".to_owned());
    let filter = parse_filter(&directive)?;
    let path = logs_dir.join(LOG_FILE);
    // O_APPEND and one write per event keep lines whole even with several writers.
    let file = OpenOptions::new()
        .mode(0o600)
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| LogInitError::Open {
            path: path.display().to_string(),
            source,
        })?;
    let (queue, guard) = spawn_writer(file, QUEUE_LINES).map_err(LogInitError::Thread)?;
    // `init` runs once per process: installing the subscriber below would panic otherwise.
    let _ = QUEUE.set(queue.clone());
    let to_file = tracing_subscriber::fmt::layer()
        .event_format(ScriptLineFormat)
        .with_ansi(false)
        .with_writer(queue)
        .with_filter(filter.clone());
    // Detached by `backupctl start`, stderr may be a closed pipe: losing those copies is fine.
    let to_stderr = tracing_subscriber::fmt::layer()
        .event_format(ScriptLineFormat)
        .with_ansi(false)
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(to_file)
        .with(to_stderr)
        .init();
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_target_directives_parse_and_typos_do_not() {
        for good in [
            "info",
            "ERROR",
            "backupd=debug",
            "warn,backupd=trace",
            "off",
        ] {
            assert!(parse_filter(good).is_ok(), "{good}");
        }
        for bad in ["loud", "", "info,", "=info", "backupd=loud", "backupd"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }

    fn log_file(dir: &Path) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))
            .unwrap()
    }

    #[test]
    fn every_queued_line_is_written_whole_and_in_order_when_the_guard_drops() {
        use tracing_subscriber::fmt::MakeWriter;
        let dir = tempfile::tempdir().unwrap();
        // A tiny queue, so that loggers often find it full and must wait.
        let (queue, guard) = spawn_writer(log_file(dir.path()), 2).unwrap();
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
        use tracing_subscriber::fmt::MakeWriter;
        let dir = tempfile::tempdir().unwrap();
        let (queue, _guard) = spawn_writer(log_file(dir.path()), 8).unwrap();
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
        use tracing_subscriber::fmt::MakeWriter;
        let dir = tempfile::tempdir().unwrap();
        let (queue, guard) = spawn_writer(log_file(dir.path()), 8).unwrap();
        queue.make_writer().write_all(b"queued\n").unwrap();
        drop(guard);
        queue.make_writer().write_all(b"late\n").unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(text, "queued\nlate\n");
    }
}
