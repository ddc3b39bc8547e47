//! The last log lines of each running job, kept so that the job's outcome can carry them (an
//! email says what happened). A tracing layer copies every message that starts with a
//! registered job's `[name #id]` tag into that job's bounded buffer; the runner registers the
//! tag when the job starts and takes the lines when it ends.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock, PoisonError};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines kept per job: the most recent.
pub const KEPT_LINES: usize = 30;

type Buffers = Mutex<HashMap<String, VecDeque<String>>>;

fn buffers() -> &'static Buffers {
    static BUFFERS: OnceLock<Buffers> = OnceLock::new();
    BUFFERS.get_or_init(Buffers::default)
}

/// Starts keeping the lines logged under `tag`.
pub fn start(tag: &str) {
    lock().insert(tag.to_owned(), VecDeque::new());
}

/// Stops keeping the lines of `tag` and returns them, oldest first.
pub fn take(tag: &str) -> Vec<String> {
    lock().remove(tag).map(Vec::from).unwrap_or_default()
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<String, VecDeque<String>>> {
    buffers().lock().unwrap_or_else(PoisonError::into_inner)
}

/// The layer that fills the buffers; installed with the daemon's log.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobLines;

impl<S: Subscriber> Layer<S> for JobLines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let line = message.0;
        let Some(tag_end) = line.starts_with('[').then(|| line.find("] ")).flatten() else {
            return;
        };
        let mut buffers = lock();
        let Some(lines) = buffers.get_mut(&line[..=tag_end]) else {
            return;
        };
        let prefix = match *event.metadata().level() {
            Level::ERROR => "Error: ",
            Level::WARN => "Warning: ",
            _ => "",
        };
        if lines.len() == KEPT_LINES {
            lines.pop_front();
        }
        lines.push_back(format!("{prefix}{line}"));
    }
}

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn only_the_registered_tags_lines_are_kept_and_bounded() {
        let subscriber = tracing_subscriber::registry().with(JobLines);
        tracing::subscriber::with_default(subscriber, || {
            start("[docs #7]");
            tracing::info!("[docs #7] Compressing /srv/docs");
            tracing::info!("[other #8] not ours");
            tracing::error!("[docs #7] Backup failed for /srv/docs: disk full");
            tracing::info!("no tag at all");
            assert_eq!(
                take("[docs #7]"),
                [
                    "[docs #7] Compressing /srv/docs",
                    "Error: [docs #7] Backup failed for /srv/docs: disk full"
                ]
            );
            start("[many #9]");
            for i in 0..KEPT_LINES + 5 {
                tracing::info!("[many #9] line {i}");
            }
            let lines = take("[many #9]");
            assert_eq!(lines.len(), KEPT_LINES);
            assert_eq!(lines[0], "[many #9] line 5");
            assert!(take("[many #9]").is_empty());
        });
    }
}
