//! `list`: the schedules in index order.

use super::HandlerResult;
use crate::state::Daemon;
use proto::response::{ScheduleInfo, ScheduleList};

pub async fn handle(daemon: &Daemon) -> HandlerResult<ScheduleList> {
    let file = daemon.schedules.snapshot().await;
    tracing::info!("Show schedules list");
    let schedules = file
        .schedules
        .into_iter()
        .enumerate()
        .map(|(index, schedule)| ScheduleInfo {
            index,
            id: schedule.id,
            display: schedule.spec.to_string(),
            spec: schedule.spec,
        })
        .collect();
    Ok(ScheduleList { schedules })
}
