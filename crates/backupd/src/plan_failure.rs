//! A run that fails before any job starts: its plan fails (the destination is unplugged,
//! read-only or has become a file; a recipients file is gone). No job is registered, but each
//! job the run would have had ends as a `failure` all the same: its `on_failure` and
//! `finally` hooks run (its `before` never did) and its notifications go out, with the error
//! and no archive. The timetabled run and `run --name` come here on any plan error; a one-off
//! run of sources only when its destination fails (see `handlers::run`).

use crate::hooks::JobHooks;
use crate::notifications::{JobNotifications, JobOutcome, Started};
use crate::plan::{Naming, PlanError};
use crate::state::Daemon;
use chrono::{DateTime, Local};
use proto::JobOptions;
use proto::schedule::{RunRecord, Schedule};
use std::path::Path;
use std::time::Duration;

/// A run that could not start: what its jobs would have been.
#[derive(Debug)]
pub struct Unstarted<'a> {
    /// The schedule whose run it was, if any.
    pub schedule: Option<&'a str>,
    pub sources: &'a [String],
    pub naming: Naming,
    /// The run's options, the daemon's defaults filled in.
    pub options: JobOptions,
    pub started: DateTime<Local>,
}

impl<'a> Unstarted<'a> {
    /// `schedule`'s run, started at `started`.
    pub fn schedule(daemon: &Daemon, schedule: &'a Schedule, started: DateTime<Local>) -> Self {
        Self {
            schedule: Some(&schedule.name),
            sources: &schedule.sources,
            naming: Naming::of_schedule(schedule),
            options: schedule.options.clone().or(&daemon.job_defaults),
            started,
        }
    }

    /// What the log, the hooks and the notifications say.
    fn message(&self, error: &PlanError) -> String {
        match self.schedule {
            Some(name) => format!("Schedule {name} can't run: {error}"),
            None => format!("Backup can't run: {error}"),
        }
    }
}

/// Logs why `schedule`'s run started at `started` could not run, tells its would-be jobs'
/// hooks and notifications, and returns the run's record for the caller to keep.
pub async fn conclude(
    daemon: &Daemon,
    schedule: &Schedule,
    started: DateTime<Local>,
    error: &PlanError,
) -> RunRecord {
    let message = tell(
        daemon,
        &Unstarted::schedule(daemon, schedule, started),
        error,
    )
    .await;
    crate::schedules::run_record(started, Err(&message))
}

/// Logs why `run` could not start and tells its would-be jobs' hooks and notifications;
/// returns what it told them.
pub async fn tell(daemon: &Daemon, run: &Unstarted<'_>, error: &PlanError) -> String {
    let message = run.message(error);
    tracing::error!("{message}");
    let notify = JobNotifications::sendable_of(&run.options);
    let hooks = JobHooks {
        hooks: run.options.hooks.clone(),
        timeout: Duration::from_secs(run.options.hook_timeout_secs()),
    };
    let host = daemon.notifications.host();
    let jobs = run.sources.iter().map(|source| {
        let name = run.naming.name_of(Path::new(source));
        let outcome = JobOutcome::never_started(
            &name,
            run.schedule,
            source,
            &message,
            run.started.fixed_offset(),
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
    message
}
