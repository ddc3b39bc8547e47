//! `delete`: removes a schedule, by index (the schedule manager's way) or by name.

use super::list::schedule_info;
use super::{HandlerError, HandlerResult};
use crate::state::Daemon;
use proto::event::ScheduleChange;
use proto::response::ScheduleChanged;
use proto::{ErrorCode, Event};

pub async fn handle(
    daemon: &Daemon,
    index: Option<usize>,
    name: Option<String>,
) -> HandlerResult<ScheduleChanged> {
    let (index, removed) = daemon
        .schedules
        .update(|file| {
            let found =
                match (index, &name) {
                    (Some(index), None) => (index < file.schedules.len())
                        .then_some(index)
                        .ok_or_else(|| {
                            HandlerError::new(
                                ErrorCode::ScheduleNotFound,
                                format!("can't find schedule at index {index}"),
                            )
                        }),
                    (None, Some(name)) => file.position_of_name(name).ok_or_else(|| {
                        HandlerError::new(
                            ErrorCode::ScheduleNotFound,
                            format!("can't find schedule named {name}"),
                        )
                    }),
                    _ => Err(HandlerError::new(
                        ErrorCode::InvalidArguments,
                        "delete takes an index or a name",
                    )),
                }?;
            Ok::<_, HandlerError>((found, file.schedules.remove(found)))
        })
        .await?;
    tracing::info!("Schedule at index {index} deleted");
    daemon.publish(Event::ScheduleChanged {
        name: removed.name.clone(),
        change: ScheduleChange::Deleted,
    });
    Ok(ScheduleChanged {
        schedule: schedule_info(index, removed, &chrono::Local::now()),
        replaced: false,
    })
}
