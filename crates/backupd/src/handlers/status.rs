//! `status`: the daemon at a glance — versions, uptime, home and socket, the running jobs with
//! their progress, the next due run, each schedule's last outcome, and the free space at every
//! destination (the default one and each schedule's).

use super::{HandlerResult, blocking};
use crate::state::Daemon;
use crate::timing;
use chrono::Local;
use proto::response::{DestinationSpace, NextRun, ScheduleStatus, StatusInfo};
use std::path::{Path, PathBuf};

pub async fn handle(daemon: &Daemon) -> HandlerResult<StatusInfo> {
    let now = Local::now();
    let schedules = daemon.schedules.snapshot().await.schedules;
    let mut next_run: Option<NextRun> = None;
    let mut destinations = vec![daemon.default_destination()];
    let mut statuses = Vec::with_capacity(schedules.len());
    for schedule in schedules {
        let due = timing::pending_due(&schedule, &now.timezone()).map(|d| d.fixed_offset());
        if let Some(at) = due
            && next_run.as_ref().is_none_or(|next| at < next.at)
        {
            next_run = Some(NextRun {
                name: schedule.name.clone(),
                at,
            });
        }
        if let Some(destination) = &schedule.options.destination {
            let destination = PathBuf::from(destination);
            if !destinations.contains(&destination) {
                destinations.push(destination);
            }
        }
        statuses.push(ScheduleStatus {
            name: schedule.name.clone(),
            display: schedule.display(),
            next_run: due,
            running: daemon.is_running(schedule.id),
            last_run: schedule.last_run.clone(),
        });
    }
    let destinations =
        blocking(move || destinations.iter().map(|d| free_space(d)).collect()).await?;
    Ok(StatusInfo {
        daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: proto::PROTOCOL_VERSION,
        pid: std::process::id(),
        started: daemon.started.0.fixed_offset(),
        uptime_secs: daemon.started.1.elapsed().as_secs(),
        home: daemon.home.root().display().to_string(),
        socket: daemon.socket.as_ref().map(|s| s.display().to_string()),
        jobs: daemon.registry.list(),
        next_run,
        schedules: statuses,
        destinations,
    })
}

/// The space left in a folder for the daemon's user; a missing folder says so (a run creates
/// it), other failures give their reason.
fn free_space(dir: &Path) -> DestinationSpace {
    let mut space = DestinationSpace {
        path: dir.display().to_string(),
        exists: false,
        free_bytes: None,
        total_bytes: None,
        error: None,
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return space,
        Err(e) => space.error = Some(e.to_string()),
        Ok(meta) if !meta.is_dir() => {
            space.exists = true;
            space.error = Some("not a directory".to_owned());
        }
        Ok(_) => {
            space.exists = true;
            match rustix::fs::statvfs(dir) {
                Ok(stat) => {
                    space.free_bytes = Some(stat.f_bavail.saturating_mul(stat.f_frsize));
                    space.total_bytes = Some(stat.f_blocks.saturating_mul(stat.f_frsize));
                }
                Err(e) => space.error = Some(std::io::Error::from(e).to_string()),
            }
        }
    }
    space
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_tells_a_missing_folder_from_a_real_one() {
        let dir = tempfile::tempdir().unwrap();
        let here = free_space(dir.path());
        assert!(here.exists && here.error.is_none());
        assert!(here.free_bytes.unwrap() <= here.total_bytes.unwrap());
        assert!(here.total_bytes.unwrap() > 0);
        let missing = free_space(&dir.path().join("not/yet"));
        assert!(!missing.exists && missing.free_bytes.is_none() && missing.error.is_none());
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(free_space(&file).error.as_deref(), Some("not a directory"));
    }
}
