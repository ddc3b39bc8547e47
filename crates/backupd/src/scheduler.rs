//! Fires schedules on time. A loop on tokio timers: it decides for every schedule (see
//! [`crate::timing`]), starts what is due, then sleeps until the next due instant but never
//! longer than a minute — tokio's monotonic timers stand still while the machine sleeps, so
//! the wall clock is read again at least that often. A change to the schedules wakes it.

use crate::events::EventSink;
use crate::notify::NextRun;
use crate::plan;
use crate::runner;
use crate::schedules::run_record;
use crate::state::Daemon;
use crate::timing::{self, Decision};
use chrono::{DateTime, Local};
use proto::Event;
use proto::event::ScheduleChange;
use proto::schedule::Schedule;
use std::sync::Arc;
use std::time::Duration;

/// Longest sleep between two looks at the wall clock.
const MAX_NAP: Duration = Duration::from_secs(60);

/// Runs until shutdown.
pub async fn run(daemon: Arc<Daemon>) {
    reopen_interrupted(&daemon, &Local::now()).await;
    loop {
        let now = Local::now();
        let next = tick(&daemon, &now).await;
        let nap = next
            .as_ref()
            .and_then(|next| (next.at - now).to_std().ok())
            .map_or(MAX_NAP, |until| until.min(MAX_NAP));
        daemon.notify.next_run(next);
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            () = daemon.schedules.changed() => {}
            () = daemon.shutdown.cancelled() => break,
        }
    }
}

/// Makes the runs that a crash or a stop interrupted due again, and says what becomes of each:
/// the next look runs it now (catching up) or skips it as missed, by the usual grace rule.
async fn reopen_interrupted(daemon: &Daemon, now: &DateTime<Local>) {
    let interrupted = daemon.schedules.interrupted().await;
    if interrupted.is_empty() {
        return;
    }
    for (schedule, interrupted) in interrupted {
        let due = interrupted.due.format(proto::LOG_TIME_FORMAT);
        let started = interrupted.at.format(proto::LOG_TIME_FORMAT);
        match timing::decide(&schedule, now, daemon.catch_up_grace, false) {
            Decision::Run { .. } => tracing::warn!(
                "Interrupted run of {} (due {due}, started {started}) will run now",
                schedule.name
            ),
            Decision::Missed { .. } => tracing::warn!(
                "Interrupted run of {} (due {due}, started {started}) missed, outside the catch-up grace of {}",
                schedule.name,
                timing::format_duration(daemon.catch_up_grace)
            ),
            Decision::Wait { until } => tracing::warn!(
                "Interrupted run of {} (due {due}, started {started}) will run at {}",
                schedule.name,
                until.format(proto::LOG_TIME_FORMAT)
            ),
            Decision::Idle
            | Decision::Overlap { .. }
            | Decision::Spent
            | Decision::SetBack { .. } => tracing::warn!(
                "Interrupted run of {} (due {due}, started {started}) will not run again",
                schedule.name
            ),
        }
    }
    // Said in the log before it is saved: a kill in between says it again at the next start.
    crate::log::flushed().await;
    daemon.schedules.reopen_interrupted().await;
}

/// Deals with every schedule at `now`; returns the schedule due first after it, and when.
async fn tick(daemon: &Arc<Daemon>, now: &DateTime<Local>) -> Option<NextRun> {
    let mut next_due: Option<NextRun> = None;
    for schedule in daemon.schedules.snapshot().await.schedules {
        let running = daemon.is_running(schedule.id);
        match timing::decide(&schedule, now, daemon.catch_up_grace, running) {
            Decision::Idle => {}
            Decision::Wait { until } => {
                if next_due.as_ref().is_none_or(|next| until < next.at) {
                    next_due = Some(NextRun {
                        name: schedule.name.clone(),
                        at: until,
                    });
                }
            }
            Decision::Run { latest, catch_up } => {
                if catch_up {
                    tracing::info!(
                        "Catching up missed run of {} (due {})",
                        schedule.name,
                        latest.format(proto::LOG_TIME_FORMAT)
                    );
                }
                start(daemon, schedule, latest).await;
            }
            Decision::Missed { latest } => {
                tracing::warn!(
                    "Missed run of {} due {}, older than the catch-up grace of {}; skipped",
                    schedule.name,
                    latest.format(proto::LOG_TIME_FORMAT),
                    timing::format_duration(daemon.catch_up_grace)
                );
                skip(daemon, &schedule, latest).await;
            }
            Decision::Overlap { latest } => skip_overlap(daemon, &schedule, latest).await,
            Decision::Spent => {
                tracing::warn!(
                    "Removed one-shot {}: its time came while a run of it was going, which counted as its run",
                    schedule.name
                );
                remove(daemon, &schedule).await;
            }
            Decision::SetBack { last } => {
                tracing::warn!(
                    "The last run of {} was due {}, ahead of the clock (was it set back?); its runs are counted from now",
                    schedule.name,
                    last.format(proto::LOG_TIME_FORMAT)
                );
                // Saved, it wakes the loop to look again, counted from now.
                daemon.schedules.mark_handled(schedule.id, *now).await;
            }
        }
    }
    next_due
}

async fn skip_overlap(daemon: &Daemon, schedule: &Schedule, latest: DateTime<Local>) {
    let latest_text = latest.format(proto::LOG_TIME_FORMAT);
    if schedule.is_once() {
        // The run going on stands in for the one-shot's only run: marked as dealt with, it
        // would wait for nothing and never be removed.
        tracing::warn!(
            "Skipped run of {} due {latest_text}: a run of it is still going, which counts as its run; one-shot removed",
            schedule.name
        );
    } else {
        tracing::warn!(
            "Skipped run of {} due {latest_text}: its previous run is still going",
            schedule.name
        );
    }
    skip(daemon, schedule, latest).await;
}

/// Deals with every occurrence up to `latest` without running it: a one-shot, which has no
/// other, is removed.
async fn skip(daemon: &Daemon, schedule: &Schedule, latest: DateTime<Local>) {
    if schedule.is_once() {
        remove(daemon, schedule).await;
    } else {
        daemon.schedules.mark_handled(schedule.id, latest).await;
    }
}

async fn remove(daemon: &Daemon, schedule: &Schedule) {
    daemon.schedules.remove(schedule.id).await;
    deleted(daemon, schedule);
}

/// Starts a due schedule in the background, once its run is recorded as started (so that a
/// restart neither runs a finished run again nor loses an interrupted one; unsaved, a
/// restart runs it again rather than lose it).
async fn start(daemon: &Arc<Daemon>, schedule: Arc<Schedule>, latest: DateTime<Local>) {
    let Some(guard) = daemon.try_mark_running(schedule.id) else {
        // A run outside the timetable (`run --name`) began since the decision.
        skip_overlap(daemon, &schedule, latest).await;
        return;
    };
    if !daemon.schedules.mark_started(&schedule, latest).await {
        tracing::info!(
            "Not starting the run of {} due {}: the schedule was deleted or changed meanwhile",
            schedule.name,
            latest.format(proto::LOG_TIME_FORMAT)
        );
        return;
    }
    let daemon_for_job = Arc::clone(daemon);
    daemon.jobs.spawn(async move {
        let daemon = daemon_for_job;
        let started = Local::now();
        let record = match plan::for_schedule(&daemon.plan_defaults(), &schedule, false).await {
            Ok(plan) => {
                let report = runner::execute(&daemon, plan, &EventSink::disabled()).await;
                if daemon.shutdown.is_cancelled() && report.sources.iter().any(|s| s.cancelled) {
                    // Cut short by a stop, not ended: it stays started, and the next start
                    // catches it up (a one-shot is kept for that).
                    tracing::warn!(
                        "Run of {} interrupted by the shutdown; it will be caught up at the next start",
                        schedule.name
                    );
                    drop(guard);
                    return;
                }
                run_record(started, Ok(&report))
            }
            Err(e) => crate::plan_failure::conclude(&daemon, &schedule, started, &e).await,
        };
        let removed = daemon.schedules.record_run(&schedule, record, true).await;
        crate::metrics::refresh(&daemon).await;
        if removed {
            deleted(&daemon, &schedule);
        }
        drop(guard);
    });
}

/// Tells watchers that a one-shot is gone (it ran, failed, was cancelled by a user, was
/// missed, or was skipped while a run of it went on).
fn deleted(daemon: &Daemon, schedule: &Schedule) {
    daemon.publish(Event::ScheduleChanged {
        name: schedule.name.clone(),
        change: ScheduleChange::Deleted,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::schedule::Timing;

    /// A daemon on a fresh home holding one one-shot due at `due`, already dealt with up to
    /// `last_due`; its id.
    async fn daemon_with_one_shot(
        home: &std::path::Path,
        due: DateTime<Local>,
        last_due: Option<DateTime<Local>>,
    ) -> (Arc<Daemon>, u64) {
        let daemon = Arc::new(Daemon::in_test_home(home));
        let once = Schedule {
            id: 0,
            name: "os1".into(),
            sources: vec![home.display().to_string()],
            timing: Timing::Once {
                time: due.format("%H:%M").to_string().parse().unwrap(),
                due: due.fixed_offset(),
            },
            options: proto::JobOptions::default(),
            created: (due - chrono::TimeDelta::minutes(5)).fixed_offset(),
            last_due: last_due.map(|at| at.fixed_offset()),
            last_run: None,
            earlier_runs: Vec::new(),
            last_success: None,
            started_run: None,
        };
        let position = daemon
            .schedules
            .update(|file| Ok::<_, crate::schedules::ScheduleFileError>(file.add(once).unwrap()))
            .await
            .unwrap();
        let id = daemon.schedules.snapshot().await.schedules[position].id;
        (daemon, id)
    }

    fn names(file: &crate::schedules::ScheduleFile) -> Vec<String> {
        file.schedules.iter().map(|s| s.name.clone()).collect()
    }

    #[tokio::test]
    async fn a_one_shot_due_while_a_run_of_it_goes_on_counts_as_run_and_is_removed() {
        let home = tempfile::tempdir().unwrap();
        let due = Local::now();
        let (daemon, id) = daemon_with_one_shot(home.path(), due, None).await;
        let mut events = daemon.subscribe();
        let manual_run = daemon.try_mark_running(id).unwrap(); // `run --name os1`
        let next = tick(&daemon, &(due + chrono::TimeDelta::milliseconds(300))).await;
        assert!(next.is_none());
        assert_eq!(
            names(&daemon.schedules.snapshot().await),
            Vec::<String>::new()
        );
        assert_eq!(
            events.try_recv().unwrap(),
            Event::ScheduleChanged {
                name: "os1".into(),
                change: ScheduleChange::Deleted,
            }
        );
        drop(manual_run);
        // Saved: a restart does not find it either.
        let reloaded = crate::schedules::ScheduleStore::load(daemon.schedules.path().into());
        assert!(reloaded.unwrap().snapshot().await.schedules.is_empty());
    }

    #[tokio::test]
    async fn a_schedule_that_ran_while_the_clock_was_ahead_counts_from_now_once_it_is_set_back() {
        let home = tempfile::tempdir().unwrap();
        let daemon = Arc::new(Daemon::in_test_home(home.path()));
        let now = Local::now();
        let ran_ahead = (now + chrono::TimeDelta::days(2)).fixed_offset();
        let every_minute = Schedule {
            id: 0,
            name: "minutely".into(),
            sources: vec![home.path().display().to_string()],
            timing: Timing::Cron {
                cron: "* * * * *".into(),
            },
            options: proto::JobOptions::default(),
            created: (now - chrono::TimeDelta::days(1)).fixed_offset(),
            last_due: Some(ran_ahead),
            last_run: None,
            earlier_runs: Vec::new(),
            last_success: None,
            started_run: None,
        };
        daemon
            .schedules
            .update(|file| Ok::<_, crate::schedules::ScheduleFileError>(file.add(every_minute)))
            .await
            .unwrap()
            .unwrap();
        tick(&daemon, &now).await;
        let saved = daemon.schedules.snapshot().await.schedules[0].last_due;
        assert_eq!(
            saved,
            Some(now.fixed_offset()),
            "counted from now, and saved"
        );
        // The next look waits for the next minute, not for two days.
        let next = tick(&daemon, &now).await.unwrap();
        assert!(
            next.at <= now + chrono::TimeDelta::minutes(1),
            "{:?}",
            next.at
        );
    }

    #[tokio::test]
    async fn a_one_shot_left_dealt_with_but_not_removed_is_removed_at_the_next_look() {
        // As an older backupd left a one-shot it skipped while a run of it went on.
        let home = tempfile::tempdir().unwrap();
        let due = Local::now() - chrono::TimeDelta::hours(2);
        let (daemon, _) = daemon_with_one_shot(home.path(), due, Some(due)).await;
        tick(&daemon, &Local::now()).await;
        assert_eq!(
            names(&daemon.schedules.snapshot().await),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn a_one_shot_stays_while_its_timetabled_run_goes_on() {
        let home = tempfile::tempdir().unwrap();
        let due = Local::now();
        let (daemon, id) = daemon_with_one_shot(home.path(), due, None).await;
        let _run = daemon.try_mark_running(id).unwrap();
        let schedule = Arc::clone(&daemon.schedules.snapshot().await.schedules[0]);
        assert!(daemon.schedules.mark_started(&schedule, due).await);
        tick(&daemon, &(due + chrono::TimeDelta::seconds(30))).await;
        assert_eq!(names(&daemon.schedules.snapshot().await), ["os1"]);
    }
}
