//! `create`: adds a seed schedule `path;HH:MM;name`.

use super::{HandlerError, HandlerResult};
use crate::state::Daemon;
use proto::response::{ScheduleChanged, ScheduleInfo};
use proto::{ErrorCode, ScheduleSpec};

pub async fn handle(daemon: &Daemon, text: &str) -> HandlerResult<ScheduleChanged> {
    let spec = ScheduleSpec::parse_absolute(text)
        .map_err(|e| HandlerError::new(ErrorCode::MalformedSchedule, e.to_string()))?;
    let is_dir = tokio::fs::metadata(&spec.path)
        .await
        .is_ok_and(|meta| meta.is_dir());
    if !is_dir {
        return Err(HandlerError::new(
            ErrorCode::SourceNotFound,
            format!("can't find source directory: {}", spec.path),
        ));
    }
    let (index, schedule) = daemon
        .schedules
        .update(|file| {
            let index = file.add(spec);
            Ok::<_, HandlerError>((index, file.schedules[index].clone()))
        })
        .await?;
    tracing::info!("New schedule added: {}", schedule.spec);
    Ok(ScheduleChanged {
        schedule: ScheduleInfo {
            index,
            id: schedule.id,
            display: schedule.spec.to_string(),
            spec: schedule.spec,
        },
    })
}
