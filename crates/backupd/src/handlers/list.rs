//! `list`: the schedules in index order, with when each runs next.

use crate::state::Daemon;
use crate::timing;
use chrono::{DateTime, Local};
use proto::response::{ScheduleInfo, ScheduleList};
use proto::schedule::Schedule;
use std::sync::Arc;

pub async fn handle(daemon: &Daemon) -> ScheduleList {
    let file = daemon.schedules.snapshot().await;
    tracing::info!("Show schedules list");
    let now = Local::now();
    let schedules = file
        .schedules
        .into_iter()
        .enumerate()
        .map(|(index, schedule)| schedule_info(index, schedule, &now))
        .collect();
    ScheduleList { schedules }
}

/// A schedule as clients see it.
pub fn schedule_info(index: usize, schedule: Arc<Schedule>, now: &DateTime<Local>) -> ScheduleInfo {
    ScheduleInfo {
        index,
        display: schedule.display(),
        next_run: timing::pending_due(&schedule, &now.timezone()).map(|due| due.fixed_offset()),
        schedule,
    }
}
