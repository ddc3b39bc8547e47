//! What every request handler shares: the home, the schedules and the shutdown signal.

use crate::home::Home;
use crate::schedules::ScheduleStore;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct Daemon {
    pub home: Home,
    pub schedules: ScheduleStore,
    /// Cancelled once to shut down: by `stop`, SIGTERM or SIGINT.
    pub shutdown: CancellationToken,
    /// Backups that may write at once, across all requests and schedules.
    pub job_slots: Semaphore,
}

impl Daemon {
    pub fn new(home: Home, schedules: ScheduleStore, max_jobs: usize) -> Self {
        Self {
            home,
            schedules,
            shutdown: CancellationToken::new(),
            job_slots: Semaphore::new(max_jobs.max(1)),
        }
    }
}
