//! The jobs registry: every archive being written, from a `run` request or a schedule, is a
//! job with a small increasing id, its names, source, start time, live progress and its own
//! cancellation. `jobs`, `status` and `cancel` read it; the runner registers each job and the
//! job leaves the registry when its guard is dropped, however the job ended.

use crate::engine::Progress;
use chrono::Local;
use proto::response::{JobInfo, JobState};
use proto::schedule::Timestamp;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

type Running = Arc<Mutex<BTreeMap<u64, Arc<Job>>>>;

/// The jobs running now; one per daemon.
#[derive(Debug, Default)]
pub struct JobRegistry {
    last_id: AtomicU64,
    running: Running,
}

/// What a new job is.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The backup name of its archives.
    pub name: String,
    /// The schedule it runs for, if any.
    pub schedule: Option<String>,
    pub source: String,
}

impl JobRegistry {
    /// Registers a job under a new id. Its cancellation is a child of `shutdown`, so stopping
    /// the daemon cancels every job as before, and `cancel` can stop one alone.
    pub fn register(&self, new: NewJob, shutdown: &CancellationToken) -> JobGuard {
        let id = self.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job {
            id,
            name: new.name,
            schedule: new.schedule,
            source: new.source,
            started: Local::now().fixed_offset(),
            cancel: shutdown.child_token(),
            running: AtomicBool::new(false),
            written: AtomicBool::new(false),
            archive: Mutex::new(None),
            files: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        });
        lock(&self.running).insert(id, Arc::clone(&job));
        JobGuard {
            running: Arc::clone(&self.running),
            job,
        }
    }

    /// The running jobs, by id.
    pub fn list(&self) -> Vec<JobInfo> {
        lock(&self.running).values().map(|job| job.info()).collect()
    }

    /// Cancels every job that `matches`; returns them as they are now (cancelling).
    pub fn cancel(&self, matches: impl Fn(&Job) -> bool) -> Vec<JobInfo> {
        lock(&self.running)
            .values()
            .filter(|job| matches(job))
            .map(|job| {
                job.cancel.cancel();
                job.info()
            })
            .collect()
    }
}

fn lock(running: &Running) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Job>>> {
    running.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One job. Progress is kept in atomics: the blocking thread writing the archive updates it
/// without taking a lock that a `status` request might hold.
#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub name: String,
    pub schedule: Option<String>,
    pub source: String,
    pub started: Timestamp,
    cancel: CancellationToken,
    running: AtomicBool,
    /// Its archive is published: a cancel can no longer take it back.
    written: AtomicBool,
    archive: Mutex<Option<String>>,
    files: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Job {
    pub fn info(&self) -> JobInfo {
        let state = if self.written.load(Ordering::Relaxed) {
            JobState::Finishing
        } else if self.cancel.is_cancelled() {
            JobState::Cancelling
        } else if self.running.load(Ordering::Relaxed) {
            JobState::Running
        } else {
            JobState::Waiting
        };
        JobInfo {
            id: self.id,
            name: self.name.clone(),
            schedule: self.schedule.clone(),
            source: self.source.clone(),
            archive: self
                .archive
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            state,
            started: self.started,
            files: self.files.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }

    /// The job has its slot and writes `archive`.
    pub fn set_running(&self, archive: &str) {
        *self.archive.lock().unwrap_or_else(PoisonError::into_inner) = Some(archive.to_owned());
        self.running.store(true, Ordering::Relaxed);
    }

    /// The job's archive is published; what is left is after it (verify, rotation, upload).
    pub fn set_written(&self) {
        self.written.store(true, Ordering::Relaxed);
    }

    /// Whether its archive was published, whatever came after (a failed or stopped verify
    /// keeps it).
    pub fn is_written(&self) -> bool {
        self.written.load(Ordering::Relaxed)
    }

    pub fn record_progress(&self, progress: &Progress) {
        self.files.store(progress.files, Ordering::Relaxed);
        self.bytes_in.store(progress.bytes_in, Ordering::Relaxed);
        self.bytes_out.store(progress.bytes_out, Ordering::Relaxed);
    }

    /// Resolves once the job is cancelled, by `cancel` or by shutdown.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// The job's cancellation, for what must stop with it.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// How the log names the job: `[name #id]`, so that runs at once are told apart.
    pub fn tag(&self) -> String {
        format!("[{} #{}]", self.name, self.id)
    }
}

/// A registered job; dropping it takes the job out of the registry.
#[derive(Debug)]
pub struct JobGuard {
    running: Running,
    job: Arc<Job>,
}

impl JobGuard {
    pub fn job(&self) -> &Arc<Job> {
        &self.job
    }
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        lock(&self.running).remove(&self.job.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, schedule: Option<&str>) -> NewJob {
        NewJob {
            name: name.into(),
            schedule: schedule.map(Into::into),
            source: format!("/src/{name}"),
        }
    }

    #[test]
    fn ids_increase_jobs_leave_with_their_guard_and_cancel_picks_by_predicate() {
        let registry = JobRegistry::default();
        let shutdown = CancellationToken::new();
        let a = registry.register(new("a", None), &shutdown);
        let b = registry.register(new("nightly-b", Some("nightly")), &shutdown);
        assert_eq!((a.job().id, b.job().id), (1, 2));
        b.job().set_running("/d/nightly-b.tar.gz");
        b.job().record_progress(&Progress {
            files: 2,
            dirs: 1,
            bytes_in: 30,
            bytes_out: 10,
        });
        let listed = registry.list();
        assert_eq!(listed[0].state, JobState::Waiting);
        assert_eq!(listed[1].state, JobState::Running);
        assert_eq!((listed[1].files, listed[1].bytes_in), (2, 30));

        let cancelled = registry.cancel(|job| job.schedule.as_deref() == Some("nightly"));
        assert_eq!(cancelled.len(), 1);
        assert_eq!(cancelled[0].state, JobState::Cancelling);
        assert!(b.job().is_cancelled() && !a.job().is_cancelled());
        drop(b);
        assert_eq!(registry.list().len(), 1);
        let c = registry.register(new("c", None), &shutdown);
        assert_eq!(c.job().id, 3, "ids are never reused");

        shutdown.cancel();
        assert!(a.job().is_cancelled() && c.job().is_cancelled());
    }
}
