//! What every request handler shares: the home, the schedules and the shutdown signal.

use crate::home::Home;
use crate::schedules::ScheduleStore;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct Daemon {
    pub home: Home,
    pub schedules: ScheduleStore,
    /// Cancelled once to shut down: by `stop`, SIGTERM or SIGINT.
    pub shutdown: CancellationToken,
}

impl Daemon {
    pub fn new(home: Home, schedules: ScheduleStore) -> Self {
        Self {
            home,
            schedules,
            shutdown: CancellationToken::new(),
        }
    }
}
