//! `jobs`: the running jobs, with their progress.

use crate::state::Daemon;
use proto::response::JobList;

pub fn handle(daemon: &Daemon) -> JobList {
    JobList {
        jobs: daemon.registry.list(),
    }
}
