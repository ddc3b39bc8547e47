//! The last log lines of each job, for the body of its email: a tracing layer keeps, for every
//! job someone [`watch`]es, a small ring of the lines whose message starts with the job's tag
//! (`[name #id]`, as the runner writes them). Lines of jobs nobody watches are not kept.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines kept per job; the oldest go first.
pub const LINES_KEPT: usize = 20;

type Rings = Arc<Mutex<HashMap<String, VecDeque<String>>>>;

fn rings() -> &'static Rings {
    static RINGS: OnceLock<Rings> = OnceLock::new();
    RINGS.get_or_init(Rings::default)
}

fn lock(rings: &Rings) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<String>>> {
    rings.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The layer that fills the rings; `log::init` installs it.
pub fn layer() -> JobLogLayer {
    JobLogLayer {
        rings: Arc::clone(rings()),
    }
}

/// Keeps the job's lines from now until the returned guard is dropped.
pub fn watch(tag: &str) -> JobLog {
    lock(rings()).insert(tag.to_owned(), VecDeque::new());
    JobLog {
        rings: Arc::clone(rings()),
        tag: tag.to_owned(),
    }
}

/// A watched job's lines.
#[derive(Debug)]
pub struct JobLog {
    rings: Rings,
    tag: String,
}

impl JobLog {
    /// The job's last lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.rings)
            .get(&self.tag)
            .map(|ring| ring.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for JobLog {
    fn drop(&mut self) {
        lock(&self.rings).remove(&self.tag);
    }
}

#[derive(Debug)]
pub struct JobLogLayer {
    rings: Rings,
}

impl<S: Subscriber> Layer<S> for JobLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let message = message.0;
        // `[name #id] …`: the tag is everything up to the first `] `.
        let Some(tag_end) = message.strip_prefix('[').and_then(|_| message.find("] ")) else {
            return;
        };
        let tag = &message[..=tag_end];
        let mut rings = lock(&self.rings);
        let Some(ring) = rings.get_mut(tag) else {
            return;
        };
        if ring.len() == LINES_KEPT {
            ring.pop_front();
        }
        let time = chrono::Local::now().format("%d/%m/%Y %H:%M:%S");
        let level = match *event.metadata().level() {
            Level::ERROR => "Error: ",
            Level::WARN => "Warning: ",
            _ => "",
        };
        // As in the log file: one line each, whatever a file name holds.
        let message = proto::escape_controls(&message);
        ring.push_back(format!("[{time}] {level}{message}"));
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
    fn a_watched_job_keeps_its_own_last_lines() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("[early #1] before anyone watches");
            let job = watch("[early #1]");
            let other = watch("[other #2]");
            tracing::info!("[early #1] Compressing /src");
            tracing::info!("[other #2] not mine");
            tracing::info!("no tag at all");
            for n in 0..LINES_KEPT {
                tracing::error!("[early #1] line {n}");
            }
            let lines = job.lines();
            assert_eq!(lines.len(), LINES_KEPT);
            assert!(
                lines[0].ends_with("] Error: [early #1] line 0"),
                "{lines:?}"
            );
            assert!(lines.iter().all(|l| l.contains("[early #1]")));
            assert_eq!(other.lines().len(), 1);
            drop(job);
            tracing::info!("[early #1] after");
            assert!(!lock(rings()).contains_key("[early #1]"));
        });
    }

    #[test]
    fn a_line_stays_one_line_whatever_a_file_name_holds() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            let job = watch("[names #3]");
            tracing::warn!("[names #3] /src/x\n[26/11/2026 23:59] [names #3] Backup verified OK");
            let lines = job.lines();
            assert_eq!(lines.len(), 1);
            assert!(
                lines[0].ends_with("/src/x\\n[26/11/2026 23:59] [names #3] Backup verified OK"),
                "{lines:?}"
            );
        });
    }
}
