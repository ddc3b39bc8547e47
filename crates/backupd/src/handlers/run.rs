//! `run`: backs sources up now, or runs a stored schedule outside its timetable.
//! Configuration is checked first and a bad one fails the whole run before anything is
//! written; after that each source succeeds or fails on its own.

use super::{HandlerError, HandlerResult};
use crate::events::EventSink;
use crate::format::Passphrase;
use crate::key_files::Requester;
use crate::name_owner::{self, Writer};
use crate::offsite_retention;
use crate::plan::{self, Naming, PlanError};
use crate::plan_failure::{self, Unstarted};
use crate::retention::NameRetention;
use crate::runner;
use crate::schedules;
use crate::state::Daemon;
use proto::ErrorCode;
use proto::request::RunArgs;
use proto::response::RunReport;
use std::sync::Arc;

pub async fn handle(
    daemon: &Daemon,
    args: RunArgs,
    events: &EventSink,
    requester: Requester,
) -> HandlerResult<RunReport> {
    if let Some(name) = &args.schedule {
        if args.passphrase.is_some() {
            // Stored schedules encrypt to keys only: no secret is kept in schedules.json,
            // and a timetabled run has nobody to type one.
            return Err(HandlerError::new(
                ErrorCode::InvalidArguments,
                "a stored schedule never encrypts to a passphrase; give it --encrypt-to keys",
            ));
        }
        if !args.sources.is_empty() || args.name.is_some() {
            return Err(HandlerError::new(
                ErrorCode::InvalidArguments,
                "run a stored schedule, or sources, not both",
            ));
        }
        if args.job != proto::JobOptions::default() {
            // Taken silently, they would have been ignored: the run is the schedule's.
            return Err(HandlerError::new(
                ErrorCode::InvalidArguments,
                "a stored schedule runs with its own settings; send sources for an ad-hoc run",
            ));
        }
        return run_schedule(daemon, name, args.dry_run, events).await;
    }
    let naming = args.name.clone().map_or(Naming::ByFolder, Naming::Fixed);
    // A one-off run may read the client's own recipients file; a schedule's run reads files
    // as its timetabled runs do, with the daemon's trust (checked when it was created).
    let passphrase = args
        .passphrase
        .clone()
        .map(|p| Passphrase::new(p.into_string()))
        .transpose()
        .map_err(|e| HandlerError::new(ErrorCode::InvalidArguments, e.to_string()))?;
    let defaults = plan::Defaults {
        requester,
        passphrase,
        ..daemon.plan_defaults()
    };
    let started = chrono::Local::now();
    let planned = match plan::plan(&defaults, &args.sources, &naming, &args.job, args.dry_run).await
    {
        Ok(plan) => name_not_in_use(daemon, plan, &naming).await,
        Err(e) => Err(e),
    };
    let plan = match planned {
        Ok(plan) => plan,
        // A one-off run from cron whose drive is unplugged, or whose name another folder's
        // backups took meanwhile, must not fail unheard; a mistake in its arguments is only
        // the client's to see.
        Err(e @ (PlanError::DestinationNotWritable { .. } | PlanError::NameInUse(_)))
            if !args.dry_run =>
        {
            let run = Unstarted {
                schedule: None,
                sources: &args.sources,
                naming,
                options: args.job.clone().or(&daemon.job_defaults),
                started,
            };
            plan_failure::tell(daemon, &run, &e).await;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let plan = keeping_schedules_retention(daemon, plan, &args.job).await?;
    let report = runner::execute(daemon, plan, events).await;
    if !args.dry_run {
        // A one-off run may add or rotate archives a schedule counts.
        crate::metrics::refresh(daemon).await;
    }
    finish(report)
}

/// `plan`, unless a job named after its folder would write under a name that holds another
/// folder's backups in its destination or on a remote it copies to, whose rotation would
/// then delete them (see [`crate::name_owner`]).
async fn name_not_in_use(
    daemon: &Daemon,
    plan: runner::RunPlan,
    naming: &Naming,
) -> Result<runner::RunPlan, PlanError> {
    if *naming != Naming::ByFolder {
        return Ok(plan);
    }
    let schedules = daemon.schedules.snapshot().await.schedules;
    let (defaults, remotes) = (daemon.plan_defaults(), Arc::clone(&daemon.remotes));
    let checked = tokio::task::spawn_blocking(move || {
        let stored = name_owner::Stored {
            schedules: &schedules,
            defaults: &defaults,
            remotes: &remotes,
        };
        name_owner::check_plan(&Writer::Run, &plan, &stored)
            .map_err(PlanError::NameInUse)
            .map(|()| plan)
    })
    .await;
    checked.map_err(|e| PlanError::Invalid(format!("internal error: {e}")))?
}

/// `plan` (a one-off run with `options`), rotating each name a stored schedule writes into
/// its destination, or copies to one of its remotes, by that schedule's policy there where
/// the run gives none: a one-off backup of a schedule's folder must not delete what the
/// schedule keeps.
async fn keeping_schedules_retention(
    daemon: &Daemon,
    mut plan: runner::RunPlan,
    options: &proto::JobOptions,
) -> HandlerResult<runner::RunPlan> {
    if plan.destination.held_by_a_provider() {
        return Ok(keeping_remote_schedules_retention(daemon, plan, options).await);
    }
    if options.retention.is_some() {
        return Ok(plan);
    }
    let schedules = daemon.schedules.snapshot().await.schedules;
    let (defaults, folder) = (daemon.plan_defaults(), plan.destination.location());
    let in_folder = schedules.clone();
    let retention =
        super::blocking(move || NameRetention::in_folder(&in_folder, &defaults, &folder)).await?;
    for job in &plan.jobs {
        if let Some(policy) = retention.of_schedule(&job.name) {
            plan.rotation_by_name.insert(job.name.clone(), policy);
        }
    }
    if options.offsite_retention.is_some() {
        return Ok(plan);
    }
    let remotes: Vec<String> = (plan.after.iter())
        .filter_map(|step| match step {
            runner::AfterWrite::RotateRemote(offsite, _) => Some(offsite.remote.config().url()),
            _ => None,
        })
        .collect();
    for url in remotes {
        let retention = offsite_retention::names_on_remote(
            &schedules,
            &daemon.job_defaults,
            &daemon.remotes,
            &url,
        );
        for job in &plan.jobs {
            if let Some(policy) = retention.of_schedule(&job.name) {
                let key = (url.clone(), job.name.clone());
                plan.remote_rotation_by_name.insert(key, policy);
            }
        }
    }
    Ok(plan)
}

/// [`keeping_schedules_retention`] for an offsite-only run: its archives are copies on the
/// remote, rotated by the policy of the schedule copying the name there where the run gives
/// none (neither retention nor offsite retention).
async fn keeping_remote_schedules_retention(
    daemon: &Daemon,
    mut plan: runner::RunPlan,
    options: &proto::JobOptions,
) -> runner::RunPlan {
    if options.retention.is_some() || options.offsite_retention.is_some() {
        return plan;
    }
    let schedules = daemon.schedules.snapshot().await.schedules;
    let url = plan.destination.location().to_string_lossy().into_owned();
    let retention =
        offsite_retention::names_on_remote(&schedules, &daemon.job_defaults, &daemon.remotes, &url);
    for job in &plan.jobs {
        if let Some(policy) = retention.of_schedule(&job.name) {
            plan.rotation_by_name.insert(job.name.clone(), policy);
        }
    }
    plan
}

/// A run in which some sources failed still answers with its report; the message says when
/// sources were cancelled.
fn finish(report: RunReport) -> HandlerResult<RunReport> {
    if report.failed == 0 {
        return Ok(report);
    }
    let cancelled = report.sources.iter().filter(|s| s.cancelled).count();
    let message = match cancelled {
        0 => format!("{} of {} sources failed", report.failed, report.total),
        n if n == report.failed => format!("{n} of {} sources cancelled", report.total),
        n => format!(
            "{} of {} sources failed ({n} cancelled)",
            report.failed, report.total
        ),
    };
    Err(HandlerError::partial(
        ErrorCode::BackupFailed,
        message,
        proto::Reply::Run(report),
    ))
}

/// Runs a stored schedule now, outside its timetable: its settings, its name, its record;
/// never twice at once.
async fn run_schedule(
    daemon: &Daemon,
    name: &str,
    dry_run: bool,
    events: &EventSink,
) -> HandlerResult<RunReport> {
    let file = daemon.schedules.snapshot().await;
    let schedule = file
        .schedules
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            HandlerError::new(
                ErrorCode::ScheduleNotFound,
                format!("can't find schedule named {name}"),
            )
        })?;
    if dry_run {
        let plan = plan::for_schedule(&daemon.plan_defaults(), &schedule, true).await?;
        return finish(runner::execute(daemon, plan, events).await);
    }
    let _running = daemon.try_mark_running(schedule.id).ok_or_else(|| {
        HandlerError::new(
            ErrorCode::ScheduleBusy,
            format!("schedule {name} is already running"),
        )
    })?;
    let started = chrono::Local::now();
    let plan = match plan::for_schedule(&daemon.plan_defaults(), &schedule, false).await {
        Ok(plan) => plan,
        Err(e) => {
            // Failed before any job started: told and recorded as a failed run all the same.
            let record = plan_failure::conclude(daemon, &schedule, started, &e).await;
            daemon.schedules.record_run(&schedule, record, false).await;
            crate::metrics::refresh(daemon).await;
            return Err(e.into());
        }
    };
    let report = runner::execute(daemon, plan, events).await;
    let record = schedules::run_record(started, Ok(&report));
    daemon.schedules.record_run(&schedule, record, false).await;
    crate::metrics::refresh(daemon).await;
    finish(report)
}
