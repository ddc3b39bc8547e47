//! `cancel`: stops one running job by id, or every running job of a backup or schedule name.
//! Each job removes its partial file as on shutdown, and its run answers `backup_failed`
//! saying it was cancelled; the answer here names the jobs told to stop.

use super::{HandlerError, HandlerResult};
use crate::state::Daemon;
use proto::ErrorCode;
use proto::response::CancelReport;

pub fn handle(
    daemon: &Daemon,
    job: Option<u64>,
    name: Option<String>,
) -> HandlerResult<CancelReport> {
    let cancelled = match (job, &name) {
        (Some(id), None) => daemon.registry.cancel(|job| job.id == id),
        (None, Some(name)) => daemon
            .registry
            .cancel(|job| job.name == *name || job.schedule.as_ref() == Some(name)),
        _ => {
            return Err(HandlerError::new(
                ErrorCode::InvalidArguments,
                "cancel takes a job id or a name",
            ));
        }
    };
    if cancelled.is_empty() {
        let message = match (job, name) {
            (Some(id), _) => format!("no running job with id {id}"),
            (_, name) => format!("no running job named {}", name.unwrap_or_default()),
        };
        return Err(HandlerError::new(ErrorCode::JobNotFound, message));
    }
    for job in &cancelled {
        if job.state == proto::response::JobState::Finishing {
            tracing::info!(
                "[{} #{}] Cancel asked once its archive was written: the archive stays; what goes on after it (a verify, an upload, a notification) stops",
                job.name,
                job.id
            );
        } else {
            tracing::info!(
                "[{} #{}] Cancelling backup of {}",
                job.name,
                job.id,
                job.source
            );
        }
    }
    Ok(CancelReport { cancelled })
}
