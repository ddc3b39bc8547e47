//! A schedule's run that fails before any job starts: its plan fails (the destination is
//! unplugged, read-only or has become a file; a recipients file is gone). No job is
//! registered, but each job the run would have had ends as a `failure` all the same: its
//! `on_failure` and `finally` hooks run (its `before` never did) and its notifications go out,
//! with the error and no archive. The timetabled run and `run --name` both come here.

use crate::hooks::JobHooks;
use crate::notifications::{JobNotifications, JobOutcome, Started};
use crate::plan::{Naming, PlanError};
use crate::state::Daemon;
use chrono::{DateTime, Local};
use proto::schedule::{RunRecord, Schedule};
use std::path::Path;
use std::time::Duration;

/// Logs why `schedule`'s run started at `started` could not run, tells its would-be jobs'
/// hooks and notifications, and returns the run's record for the caller to keep.
pub async fn conclude(
    daemon: &Daemon,
    schedule: &Schedule,
    started: DateTime<Local>,
    error: &PlanError,
) -> RunRecord {
    let message = format!("Schedule {} can't run: {error}", schedule.name);
    tracing::error!("{message}");
    let options = schedule.options.clone().or(&daemon.job_defaults);
    let notify = JobNotifications::sendable_of(&options);
    let hooks = JobHooks {
        hooks: options.hooks.clone(),
        timeout: Duration::from_secs(options.hook_timeout_secs()),
    };
    let naming = Naming::of_schedule(schedule);
    let host = daemon.notifications.host();
    let jobs = schedule.sources.iter().map(|source| {
        let name = naming.name_of(Path::new(source));
        let outcome = JobOutcome::never_started(
            &name,
            &schedule.name,
            source,
            &message,
            started.fixed_offset(),
            host,
        );
        let (hooks, notify) = (&hooks, &notify);
        async move {
            // No job id: the log names the job by its name alone.
            let tag = format!("[{name}]");
            futures_util::future::join(
                hooks.after_job(&outcome, &tag, &daemon.shutdown),
                daemon.notifications.job_finished(
                    notify,
                    Started::default(),
                    &tag,
                    &outcome,
                    &daemon.shutdown,
                    &daemon.shutdown,
                ),
            )
            .await;
        }
    });
    futures_util::future::join_all(jobs).await;
    crate::schedules::run_record(started, Err(&message))
}
