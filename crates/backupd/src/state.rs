//! What every request handler and the scheduler share: the home, the schedules, the job
//! limits, the running jobs, which schedules are running, the event broadcast for watchers,
//! the shutdown signal, and what the service manager is told.

use crate::home::Home;
use crate::jobs::JobRegistry;
use crate::notify::Notifier;
use crate::schedules::ScheduleStore;
use crate::verify_ledger::VerifyLedger;
use chrono::{DateTime, Local, TimeDelta};
use proto::Event;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug)]
pub struct Daemon {
    pub home: Home,
    pub schedules: ScheduleStore,
    /// Cancelled once to shut down: by `stop`, SIGTERM or SIGINT.
    pub shutdown: CancellationToken,
    /// Backups that may write at once, across all requests and schedules.
    pub job_slots: Semaphore,
    /// Answers built whole in memory from a whole folder or archive (`backups --long`, `ls`)
    /// made at once: one of 60,000 archives took 200 MB, and sixty at once 13 GB. The others
    /// wait their turn.
    pub listings: Semaphore,
    /// Scheduled runs in progress, so that shutdown can wait for them.
    pub jobs: TaskTracker,
    /// How old a missed occurrence may be and still be caught up at start.
    pub catch_up_grace: TimeDelta,
    /// The last verification of each archive.
    pub verify_ledger: VerifyLedger,
    /// Whether shutdown removes the socket file (backupd bound it); `stop` tells the client.
    pub removes_socket: bool,
    /// The job options of the configuration file, under each job's own.
    pub job_defaults: proto::JobOptions,
    /// Whether backups store files with holes as GNU sparse entries (`sparse_files`).
    pub holes: crate::engine::Holes,
    /// Readiness and status for a service manager; disabled unless `main` enables it.
    pub notify: Notifier,
    /// Every archive being written, with its progress and cancellation.
    pub registry: JobRegistry,
    /// The socket's path, for `status` (unknown for an unnamed inherited socket).
    pub socket: Option<PathBuf>,
    /// When the daemon started: the wall clock to show, the monotonic one for the uptime.
    pub started: (DateTime<Local>, Instant),
    /// One rotation at a time per backup name and destination folder.
    pub rotation_locks: crate::rotation_locks::RotationLocks,
    /// The configuration's `[remote.NAME]` tables, for offsite copies.
    pub remotes: Arc<std::collections::BTreeMap<String, crate::remote::RemoteConfig>>,
    /// Events for `watch` requests. Sending never waits: a watcher that falls behind by more
    /// than [`WATCH_BUFFER`] events is told how many it missed.
    watchers: broadcast::Sender<Event>,
    running: Arc<Mutex<HashSet<u64>>>,
    /// Webhooks, healthchecks, ntfy and email about finished jobs.
    pub notifications: crate::notifications::Notifications,
}

/// Listings ([`Daemon::listings`]) made at once.
pub const LISTINGS_AT_ONCE: usize = 2;

/// Events kept for the slowest watcher before it lags.
pub const WATCH_BUFFER: usize = 256;

impl Daemon {
    /// A daemon on a fresh home in `dir`, with one job slot, for unit tests.
    #[cfg(test)]
    pub(crate) fn in_test_home(dir: &std::path::Path) -> Self {
        let home = Home::new(dir);
        home.create_dirs().expect("create the test home");
        let schedules = ScheduleStore::load(home.schedules_file()).expect("load no schedules");
        Self::new(home, schedules, 1, TimeDelta::hours(1))
    }

    /// Where archives go when neither a job nor a request names a folder: `[defaults]
    /// destination`, else the home's backups folder. The commands that read archives
    /// (`backups`, `verify`, `restore`, `ls`, `prune`) look there too.
    pub fn default_destination(&self) -> PathBuf {
        (self.job_defaults.destination.clone())
            .map_or_else(|| self.home.backups_dir(), PathBuf::from)
    }

    /// What jobs fall back on: the configured defaults, and the home's backups folder.
    pub fn plan_defaults(&self) -> crate::plan::Defaults {
        crate::plan::Defaults {
            destination: self.home.backups_dir(),
            job: self.job_defaults.clone(),
            remotes: Arc::clone(&self.remotes),
            requester: crate::key_files::Requester::daemon(),
            passphrase: None,
            holes: self.holes,
        }
    }

    pub fn new(
        home: Home,
        schedules: ScheduleStore,
        max_jobs: usize,
        catch_up_grace: TimeDelta,
    ) -> Self {
        Self {
            schedules,
            shutdown: CancellationToken::new(),
            job_slots: Semaphore::new(max_jobs.max(1)),
            listings: Semaphore::new(LISTINGS_AT_ONCE),
            jobs: TaskTracker::new(),
            catch_up_grace,
            verify_ledger: VerifyLedger::load(home.root().join(crate::verify_ledger::LEDGER_FILE)),
            home,
            removes_socket: true,
            job_defaults: proto::JobOptions::default(),
            holes: crate::engine::Holes::default(),
            notify: Notifier::disabled(),
            registry: JobRegistry::default(),
            socket: None,
            started: (Local::now(), Instant::now()),
            rotation_locks: crate::rotation_locks::RotationLocks::default(),
            remotes: Arc::default(),
            watchers: broadcast::channel(WATCH_BUFFER).0,
            running: Arc::default(),
            notifications: crate::notifications::Notifications::new(None),
        }
    }

    /// Sends an event to every `watch` (none: dropped).
    pub fn publish(&self, event: Event) {
        let _ = self.watchers.send(event);
    }

    /// A sender for events from a blocking thread (progress).
    pub fn publisher(&self) -> broadcast::Sender<Event> {
        self.watchers.clone()
    }

    /// The events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.watchers.subscribe()
    }

    pub fn is_running(&self, schedule_id: u64) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&schedule_id)
    }

    /// Marks a schedule as running until the guard is dropped; `None` if it already runs.
    pub fn try_mark_running(&self, schedule_id: u64) -> Option<RunningGuard> {
        let inserted = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(schedule_id);
        inserted.then(|| RunningGuard {
            running: Arc::clone(&self.running),
            schedule_id,
        })
    }
}

/// A schedule's run in progress; dropping it ends the run.
#[derive(Debug)]
pub struct RunningGuard {
    running: Arc<Mutex<HashSet<u64>>>,
    schedule_id: u64,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.schedule_id);
    }
}
