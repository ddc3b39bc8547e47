//! `delete`: removes the schedule at an index.

use super::{HandlerError, HandlerResult};
use crate::state::Daemon;
use proto::ErrorCode;
use proto::response::{ScheduleChanged, ScheduleInfo};

pub async fn handle(daemon: &Daemon, index: usize) -> HandlerResult<ScheduleChanged> {
    let removed = daemon
        .schedules
        .update(|file| {
            if index < file.schedules.len() {
                Ok(file.schedules.remove(index))
            } else {
                Err(HandlerError::new(
                    ErrorCode::ScheduleNotFound,
                    format!("can't find schedule at index {index}"),
                ))
            }
        })
        .await?;
    tracing::info!("Schedule at index {index} deleted");
    Ok(ScheduleChanged {
        schedule: ScheduleInfo {
            index,
            id: removed.id,
            display: removed.spec.to_string(),
            spec: removed.spec,
        },
    })
}
