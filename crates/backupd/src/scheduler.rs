//! Fires schedules on time. A loop on tokio timers: it decides for every schedule (see
//! [`crate::timing`]), starts what is due, then sleeps until the next due instant but never
//! longer than a minute — tokio's monotonic timers stand still while the machine sleeps, so
//! the wall clock is read again at least that often. A change to the schedules wakes it.

use crate::events::EventSink;
use crate::plan;
use crate::runner;
use crate::state::Daemon;
use crate::timing::{self, Decision};
use chrono::{DateTime, Local};
use proto::response::RunReport;
use proto::schedule::{RunRecord, Schedule};
use std::sync::Arc;
use std::time::Duration;

/// Longest sleep between two looks at the wall clock.
const MAX_NAP: Duration = Duration::from_secs(60);

/// Runs until shutdown.
pub async fn run(daemon: Arc<Daemon>) {
    loop {
        let now = Local::now();
        let next_due = tick(&daemon, &now).await;
        let nap = next_due
            .and_then(|due| (due - now).to_std().ok())
            .map_or(MAX_NAP, |until| until.min(MAX_NAP));
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            () = daemon.schedules.changed() => {}
            () = daemon.shutdown.cancelled() => break,
        }
    }
}

/// Deals with every schedule at `now`; returns the earliest instant something is due.
async fn tick(daemon: &Arc<Daemon>, now: &DateTime<Local>) -> Option<DateTime<Local>> {
    let mut next_due: Option<DateTime<Local>> = None;
    for schedule in daemon.schedules.snapshot().await.schedules {
        let running = daemon.is_running(schedule.id);
        match timing::decide(&schedule, now, daemon.catch_up_grace, running) {
            Decision::Idle => {}
            Decision::Wait { until } => {
                next_due = Some(next_due.map_or(until, |n| n.min(until)));
            }
            Decision::Run { latest, catch_up } => {
                if catch_up {
                    tracing::info!(
                        "Catching up missed run of {} (due {})",
                        schedule.name,
                        latest.format("%d/%m/%Y %H:%M")
                    );
                }
                start(daemon, schedule, latest).await;
            }
            Decision::Missed { latest } => {
                tracing::warn!(
                    "Missed run of {} due {}, older than the catch-up grace of {}h; skipped",
                    schedule.name,
                    latest.format("%d/%m/%Y %H:%M"),
                    daemon.catch_up_grace.num_hours()
                );
                if schedule.is_once() {
                    remove(daemon, schedule.id).await;
                } else {
                    mark_handled(daemon, schedule.id, latest).await;
                }
            }
            Decision::Overlap { latest } => skip_overlap(daemon, &schedule, latest).await,
        }
    }
    next_due
}

async fn skip_overlap(daemon: &Daemon, schedule: &Schedule, latest: DateTime<Local>) {
    tracing::warn!(
        "Skipped run of {} due {}: its previous run is still going",
        schedule.name,
        latest.format("%d/%m/%Y %H:%M")
    );
    mark_handled(daemon, schedule.id, latest).await;
}

/// Starts a due schedule in the background, once its occurrence is recorded as handled (so a
/// restart does not run it again).
async fn start(daemon: &Arc<Daemon>, schedule: Schedule, latest: DateTime<Local>) {
    let Some(guard) = daemon.try_mark_running(schedule.id) else {
        // A run outside the timetable (`run --name`) began since the decision.
        skip_overlap(daemon, &schedule, latest).await;
        return;
    };
    if !mark_handled(daemon, schedule.id, latest).await {
        return; // logged; the next look tries again
    }
    let daemon_for_job = Arc::clone(daemon);
    daemon.jobs.spawn(async move {
        let daemon = daemon_for_job;
        let started = Local::now();
        match plan::for_schedule(&daemon.home.backups_dir(), &schedule, false) {
            Ok(plan) => {
                let report = runner::execute(&daemon, plan, &EventSink::disabled()).await;
                record_run(&daemon, &schedule, started, Ok(&report), true).await;
            }
            Err(e) => {
                let message = format!("Schedule {} can't run: {e}", schedule.name);
                tracing::error!("{message}");
                record_run(&daemon, &schedule, started, Err(&message), true).await;
            }
        }
        drop(guard);
    });
}

/// Records the outcome of a schedule's run; a one-shot that ran on its timetable is removed,
/// as in the seed. Returns after the file is saved (or the failure logged).
pub async fn record_run(
    daemon: &Daemon,
    schedule: &Schedule,
    started: DateTime<Local>,
    outcome: Result<&RunReport, &str>,
    timetabled: bool,
) {
    let record = run_record(started, outcome);
    let remove_once = timetabled && schedule.is_once();
    let saved = daemon
        .schedules
        .update(|file| {
            if let Some(position) = file.position_of_id(schedule.id) {
                if remove_once {
                    file.schedules.remove(position);
                } else {
                    file.schedules[position].last_run = Some(record);
                }
            }
            Ok::<_, crate::schedules::StoreError>(())
        })
        .await;
    if let Err(e) = saved {
        tracing::error!("can't record the run of {}: {e}", schedule.name);
    }
}

fn run_record(started: DateTime<Local>, outcome: Result<&RunReport, &str>) -> RunRecord {
    let finished = Local::now().fixed_offset();
    match outcome {
        Ok(report) => RunRecord {
            started: started.fixed_offset(),
            finished,
            ok: report.failed == 0,
            archives: report
                .sources
                .iter()
                .filter(|s| s.ok)
                .map(|s| s.archive.clone())
                .collect(),
            error: (report.failed > 0).then(|| {
                report
                    .sources
                    .iter()
                    .filter_map(|s| s.error.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
        },
        Err(error) => RunRecord {
            started: started.fixed_offset(),
            finished,
            ok: false,
            archives: Vec::new(),
            error: Some(error.to_owned()),
        },
    }
}

/// Saves that every occurrence up to `latest` has been dealt with.
async fn mark_handled(daemon: &Daemon, id: u64, latest: DateTime<Local>) -> bool {
    let latest = latest.fixed_offset();
    let current = daemon.schedules.snapshot().await;
    if current
        .schedules
        .iter()
        .any(|s| s.id == id && s.last_due == Some(latest))
    {
        return true; // nothing new: no write, no wake-up
    }
    let saved = daemon
        .schedules
        .update(|file| {
            if let Some(schedule) = file.by_id_mut(id) {
                schedule.last_due = Some(latest);
            }
            Ok::<_, crate::schedules::StoreError>(())
        })
        .await;
    saved
        .inspect_err(|e| tracing::error!("can't save the schedule state: {e}"))
        .is_ok()
}

async fn remove(daemon: &Daemon, id: u64) {
    let saved = daemon
        .schedules
        .update(|file| {
            if let Some(position) = file.position_of_id(id) {
                file.schedules.remove(position);
            }
            Ok::<_, crate::schedules::StoreError>(())
        })
        .await;
    if let Err(e) = saved {
        tracing::error!("can't save the schedule state: {e}");
    }
}
