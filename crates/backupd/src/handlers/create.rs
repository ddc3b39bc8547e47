//! `create`: adds a schedule — the schedule manager's one-shot `path;HH:MM;name`, or a
//! recurring one (`daily` or `cron`) with its job options; with `replace`, gives a schedule
//! of that name this definition instead, checked the same way.

use super::list::schedule_info;
use super::{HandlerError, HandlerResult, blocking};
use crate::engine::{self, EngineError};
use crate::name_owner::{self, Writer};
use crate::plan::{self, PlanError};
use crate::schedules::ScheduleFile;
use crate::state::Daemon;
use crate::timing;
use chrono::Local;
use proto::JobOptions;
use proto::event::ScheduleChange;
use proto::request::CreateArgs;
use proto::response::ScheduleChanged;
use proto::schedule::{Schedule, Timing};
use proto::schedule_spec::{TimeOfDay, validate_name};
use proto::{ErrorCode, Event, ScheduleSpec};
use std::sync::Arc;

pub async fn handle(daemon: &Daemon, args: CreateArgs) -> HandlerResult<ScheduleChanged> {
    let now = Local::now();
    let replace = args.replace;
    let schedule = match args.spec.clone() {
        Some(spec) if is_spec_only(&args) => one_shot(&spec, &now)?,
        Some(_) => {
            return Err(invalid(
                "give either a spec \"path;HH:MM;name\" or a name, sources and a timing, not both",
            ));
        }
        None => recurring(args, &now)?,
    };
    // Everything a run of it would check, so that a schedule that can never run is refused
    // now rather than failing at 02:00 (a dry run: nothing is created).
    let planned = plan::for_schedule(&daemon.plan_defaults(), &schedule, true).await?;
    for source in &schedule.sources {
        let problem = match tokio::fs::metadata(source).await {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => "source is not a directory",
            Err(_) => "can't find source directory",
        };
        return Err(HandlerError::new(
            ErrorCode::SourceNotFound,
            format!("{problem}: {source}"),
        ));
    }
    // A schedule given a new definition carries on its set, whatever folder it now backs up.
    let is_new =
        !(daemon.schedules.snapshot().await.schedules.iter()).any(|s| s.name == schedule.name);
    let (defaults, remotes) = (daemon.plan_defaults(), Arc::clone(&daemon.remotes));
    let writer = Writer::Schedule(schedule.name.clone());
    let refusal = blocking(move || {
        // A source its own archives would go into: every run of it would fail.
        let jobs = &planned.jobs;
        if let Some(e) = jobs
            .iter()
            .find_map(|job| match engine::check_job_source(job) {
                Err(e @ EngineError::SourceIsDestination { .. }) => Some(e),
                _ => None,
            })
        {
            return Some(invalid(e.to_string()));
        }
        // Another schedule's names are refused wherever it writes, once the file is locked.
        let stored = name_owner::Stored {
            schedules: &[],
            defaults: &defaults,
            remotes: &remotes,
        };
        let in_use = is_new
            .then(|| name_owner::check_plan(&writer, &planned, &stored))
            .and_then(Result::err)?;
        Some(PlanError::NameInUse(in_use).into())
    })
    .await?;
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    let (index, schedule, replaced) = daemon
        .schedules
        .update(|file| {
            if let Some(index) = file.position_of_name(&schedule.name) {
                if !replace {
                    return Err(HandlerError::new(
                        ErrorCode::ScheduleExists,
                        format!(
                            "a schedule named {} already exists; create it with --replace to change it",
                            schedule.name
                        ),
                    ));
                }
                refuse_shared_archive_names(&schedule, file, Some(index))?;
                file.replace(index, schedule, now);
                return Ok((index, file.schedules[index].clone(), true));
            }
            refuse_shared_archive_names(&schedule, file, None)?;
            let index = file.add(schedule).ok_or_else(|| {
                HandlerError::new(
                    ErrorCode::Io,
                    format!(
                        "no id left for a new schedule: next_id in {} is {}; stop the daemon and renumber the schedules and next_id",
                        daemon.schedules.path().display(),
                        u64::MAX
                    ),
                )
            })?;
            Ok((index, file.schedules[index].clone(), false))
        })
        .await?;
    let change = if replaced {
        tracing::info!("Schedule replaced: {}", schedule.display());
        ScheduleChange::Replaced
    } else {
        tracing::info!("New schedule added: {}", schedule.display());
        ScheduleChange::Created
    };
    daemon.publish(Event::ScheduleChanged {
        name: schedule.name.clone(),
        change,
    });
    Ok(ScheduleChanged {
        schedule: schedule_info(index, schedule, &now),
        replaced,
    })
}

/// Refuses `schedule` when it would write archives under a name another schedule than the one
/// at `replaced` writes: their rotations would delete each other's backups.
fn refuse_shared_archive_names(
    schedule: &Schedule,
    file: &ScheduleFile,
    replaced: Option<usize>,
) -> HandlerResult<()> {
    let others = (file.schedules.iter().enumerate())
        .filter(|(index, _)| Some(*index) != replaced)
        .map(|(_, other)| other.as_ref());
    match plan::shares_archive_names(schedule, others) {
        None => Ok(()),
        Some((other, name)) => Err(invalid(format!(
            "schedule {} would write archives named {name}, as schedule {} does: the rotation \
             of each would delete the other's backups; give it another name",
            schedule.name, other.name
        ))),
    }
}

fn invalid(message: impl Into<String>) -> HandlerError {
    HandlerError::new(ErrorCode::InvalidArguments, message)
}

fn is_spec_only(args: &CreateArgs) -> bool {
    let CreateArgs {
        spec: _,
        name,
        sources,
        daily,
        cron,
        replace: _,
        job,
        strict: _,
    } = args;
    name.is_none()
        && sources.is_empty()
        && daily.is_none()
        && cron.is_none()
        && *job == JobOptions::default()
}

fn one_shot(text: &str, now: &chrono::DateTime<Local>) -> HandlerResult<Schedule> {
    let spec = ScheduleSpec::parse_absolute(text)
        .map_err(|e| HandlerError::new(ErrorCode::MalformedSchedule, e.to_string()))?;
    let due = timing::first_once_due(spec.time, now);
    Ok(Schedule {
        id: 0,
        name: spec.name,
        sources: vec![spec.path],
        timing: Timing::Once {
            time: spec.time,
            due: due.fixed_offset(),
        },
        options: JobOptions::default(),
        created: now.fixed_offset(),
        last_due: None,
        last_run: None,
        earlier_runs: Vec::new(),
        last_success: None,
        started_run: None,
    })
}

fn recurring(args: CreateArgs, now: &chrono::DateTime<Local>) -> HandlerResult<Schedule> {
    let name = args
        .name
        .ok_or_else(|| invalid("create needs a spec \"path;HH:MM;name\", or a name"))?;
    validate_name(&name).map_err(|e| invalid(e.to_string()))?;
    if args.sources.is_empty() {
        return Err(invalid("a recurring schedule needs at least one source"));
    }
    for source in &args.sources {
        plan::absolute(source, "source")?;
    }
    let timing = match (args.daily, args.cron) {
        (Some(time), None) => Timing::Daily {
            time: time
                .parse::<TimeOfDay>()
                .map_err(|e| invalid(e.to_string()))?,
        },
        (None, Some(cron)) => {
            timing::parse_cron(&cron)
                .and_then(|parsed| timing::next_fire(&parsed, now).map(drop))
                .map_err(|reason| invalid(format!("invalid cron expression {cron:?}: {reason}")))?;
            Timing::Cron { cron }
        }
        _ => {
            return Err(invalid(
                "a recurring schedule needs exactly one of daily or cron",
            ));
        }
    };
    Ok(Schedule {
        id: 0,
        name,
        sources: args.sources,
        timing,
        options: args.job,
        created: now.fixed_offset(),
        last_due: None,
        last_run: None,
        earlier_runs: Vec::new(),
        last_success: None,
        started_run: None,
    })
}
