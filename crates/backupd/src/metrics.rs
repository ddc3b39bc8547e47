//! Prometheus metrics in node_exporter's textfile format: `<home>/metrics/backupd.prom`, for
//! node_exporter's `--collector.textfile.directory`, replaced atomically at start (beside
//! serving, never before it), after every run and at a clean stop (`backupd_up 0`). Per
//! schedule: when it last ran and last succeeded, how long its last run took, what it wrote,
//! how it ended and how many archives of it are kept (on its remote, for an offsite-only
//! one); and the daemon's `backupd_up` and `backupd_build_info`.

use crate::destination::{self, LocalFolder};
use crate::state::Daemon;
use proto::schedule::{RunRecord, Schedule};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The folder node_exporter is pointed at, inside the home.
pub const METRICS_DIR: &str = "metrics";
pub const METRICS_FILE: &str = "backupd.prom";

/// What one schedule's lines are made of.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleFacts {
    pub name: String,
    pub last_run: Option<RunRecord>,
    /// When a run last succeeded (seconds since the epoch).
    pub last_success: Option<i64>,
    /// Bytes of the archives its last run wrote.
    pub last_size_bytes: u64,
    /// Archives of the schedule in its destination now; `None` when it cannot be listed.
    pub archives: Option<usize>,
}

/// Whether the daemon is serving: the file says `backupd_up 0` once it has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Up {
    Yes,
    No,
}

/// Gathers the facts and replaces the file; a failure is logged, never more.
pub async fn refresh(daemon: &Daemon) {
    refresh_as(daemon, Up::Yes).await;
}

/// The last word at shutdown, after the runs have ended: the daemon is down.
pub async fn write_down(daemon: &Daemon) {
    refresh_as(daemon, Up::No).await;
}

async fn refresh_as(daemon: &Daemon, up: Up) {
    let schedules = daemon.schedules.snapshot().await.schedules;
    // Each folder and remote listed once, however many schedules keep archives there: a
    // refresh follows every run.
    let mut remotes_listed = HashMap::new();
    let mut remote_counts = Vec::with_capacity(schedules.len());
    for schedule in &schedules {
        remote_counts.push(remote_archive_count(daemon, schedule, &mut remotes_listed).await);
    }
    let default_destination = daemon.default_destination();
    let dir = daemon.home.root().join(METRICS_DIR);
    let written = tokio::task::spawn_blocking(move || {
        let mut folders_listed = HashMap::new();
        let facts: Vec<_> = (schedules.iter().zip(remote_counts))
            .map(|(schedule, remote)| {
                let archives = remote.unwrap_or_else(|| {
                    let folder = (schedule.options.destination.as_ref())
                        .map_or_else(|| default_destination.clone(), PathBuf::from);
                    let counts = folders_listed.entry(folder).or_insert_with_key(|folder| {
                        destination::archive_counts(&LocalFolder::new(folder)).ok()
                    });
                    count_of(schedule, counts.as_ref())
                });
                facts_of(schedule, archives)
            })
            .collect();
        write(&dir, &render(up, &facts))
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("can't write metrics: {e}"),
        Err(e) => tracing::warn!("can't write metrics: {e}"),
    }
}

/// The archives of `schedule` among `counts` (by name), if its place could be listed.
fn count_of(schedule: &Schedule, counts: Option<&HashMap<String, usize>>) -> Option<usize> {
    let counts = counts?;
    let names = crate::plan::archive_names(schedule);
    Some(names.iter().filter_map(|name| counts.get(name)).sum())
}

/// Archives counted by name on each remote listed so far, by its spec; `None` where it could
/// not be listed.
type RemoteCounts = HashMap<String, Option<HashMap<String, usize>>>;

/// Where an offsite-only schedule keeps its archives: on its remote, listed there.
/// `Some(None)` when that remote cannot be listed now; `None` for a schedule with local archives.
async fn remote_archive_count(
    daemon: &Daemon,
    schedule: &Schedule,
    listed: &mut RemoteCounts,
) -> Option<Option<usize>> {
    let options = schedule.options.clone().or(&daemon.job_defaults);
    let (options, offsite_only) = crate::offsite::split(&options).ok()?;
    if !offsite_only {
        return None;
    }
    let Some(first) = options.offsite.first().cloned() else {
        return Some(None);
    };
    if !listed.contains_key(&first) {
        let counts = remote_counts(daemon, &first, &schedule.name).await;
        listed.insert(first.clone(), counts);
    }
    Some(count_of(schedule, listed.get(&first)?.as_ref()))
}

/// The archives on the remote `spec` counted by name, or `None` (logged) when it cannot be
/// listed now.
async fn remote_counts(
    daemon: &Daemon,
    spec: &str,
    schedule: &str,
) -> Option<HashMap<String, usize>> {
    let offsites = crate::offsite::prepare_all(&[spec.to_owned()], &daemon.remotes)
        .await
        .ok()?;
    let remote = offsites.into_iter().next()?.remote;
    let listed = tokio::task::spawn_blocking(move || destination::archive_counts(remote.as_ref()))
        .await
        .ok()?;
    listed
        .inspect_err(|e| tracing::warn!("metrics: can't list {schedule}'s remote: {e}"))
        .ok()
}

fn facts_of(schedule: &Schedule, archives: Option<usize>) -> ScheduleFacts {
    // Files of older daemons have only the runs kept to tell.
    let runs = schedule.last_run.iter().chain(&schedule.earlier_runs);
    let last_success = runs
        .filter(|r| r.ok)
        .map(|r| r.finished)
        .chain(schedule.last_success)
        .map(|at| at.timestamp())
        .max();
    let last_size_bytes = schedule.last_run.as_ref().map_or(0, |run| {
        if run.size_bytes > 0 {
            return run.size_bytes;
        }
        // Runs recorded before the size was.
        run.archives
            .iter()
            .filter_map(|a| std::fs::metadata(a).ok())
            .map(|m| m.len())
            .sum()
    });
    ScheduleFacts {
        name: schedule.name.clone(),
        last_run: schedule.last_run.clone(),
        last_success,
        last_size_bytes,
        archives,
    }
}

/// The file's text.
pub fn render(up: Up, schedules: &[ScheduleFacts]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, lines: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in lines {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "backupd_up",
        "1 while backupd runs (the file is rewritten at start), 0 once it has stopped.",
        vec![(String::new(), u8::from(up == Up::Yes).to_string())],
    );
    family(
        "backupd_build_info",
        "The running backupd's version.",
        vec![(
            format!("{{version=\"{}\"}}", escape(env!("CARGO_PKG_VERSION"))),
            "1".into(),
        )],
    );
    let per = |value: &dyn Fn(&ScheduleFacts) -> Option<String>| {
        schedules
            .iter()
            .filter_map(|s| Some((format!("{{schedule=\"{}\"}}", escape(&s.name)), value(s)?)))
            .collect::<Vec<_>>()
    };
    family(
        "backupd_schedule_last_run_timestamp_seconds",
        "When the schedule's last run finished.",
        per(&|s| Some(s.last_run.as_ref()?.finished.timestamp().to_string())),
    );
    family(
        "backupd_schedule_last_success_timestamp_seconds",
        "When a run of the schedule last succeeded.",
        per(&|s| Some(s.last_success?.to_string())),
    );
    family(
        "backupd_schedule_last_duration_seconds",
        "How long the schedule's last run took.",
        per(&|s| {
            let run = s.last_run.as_ref()?;
            let ms = (run.finished - run.started).num_milliseconds().max(0);
            Some(format!("{:.3}", ms as f64 / 1000.0))
        }),
    );
    family(
        "backupd_schedule_last_size_bytes",
        "Bytes of the archives the schedule's last run wrote.",
        per(&|s| Some(s.last_run.as_ref().map(|_| s.last_size_bytes)?.to_string())),
    );
    family(
        "backupd_schedule_last_status",
        "1 if the schedule's last run succeeded, 0 if it failed.",
        per(&|s| Some(u8::from(s.last_run.as_ref()?.ok).to_string())),
    );
    family(
        "backupd_schedule_archives",
        "Archives of the schedule kept in its destination.",
        per(&|s| Some(s.archives?.to_string())),
    );
    out
}

/// A label value as the text format quotes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Replaces `<dir>/backupd.prom`, readable by a node_exporter of another user.
fn write(dir: &Path, text: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let path = dir.join(METRICS_FILE);
    crate::fsutil::write_atomically(&path, text.as_bytes())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    #[test]
    fn the_text_format_has_every_family_and_escapes_labels() {
        let at = |s| DateTime::parse_from_rfc3339(s).unwrap();
        let facts = ScheduleFacts {
            name: "db\"x".into(),
            last_run: Some(RunRecord {
                started: at("2026-01-02T03:00:00+00:00"),
                finished: at("2026-01-02T03:00:02.5+00:00"),
                ok: false,
                archives: Vec::new(),
                error: Some("boom".into()),
                skipped: 0,
                offsite_failed: 0,
                size_bytes: 0,
            }),
            last_success: Some(1_700_000_000),
            last_size_bytes: 0,
            archives: Some(4),
        };
        let never = ScheduleFacts {
            name: "new".into(),
            last_run: None,
            last_success: None,
            last_size_bytes: 0,
            archives: Some(0),
        };
        let unlisted = ScheduleFacts {
            name: "remote".into(),
            archives: None,
            ..never.clone()
        };
        let down = render(Up::No, &[]);
        assert!(down.lines().any(|l| l == "backupd_up 0"), "{down}");
        let text = render(Up::Yes, &[facts, never, unlisted]);
        assert!(!text.contains("backupd_schedule_archives{schedule=\"remote\"}"));
        for line in [
            "backupd_up 1",
            "backupd_schedule_last_status{schedule=\"db\\\"x\"} 0",
            "backupd_schedule_last_duration_seconds{schedule=\"db\\\"x\"} 2.500",
            "backupd_schedule_last_success_timestamp_seconds{schedule=\"db\\\"x\"} 1700000000",
            "backupd_schedule_archives{schedule=\"db\\\"x\"} 4",
            "backupd_schedule_archives{schedule=\"new\"} 0",
            "# TYPE backupd_schedule_last_size_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("last_status{schedule=\"new\"}"));
        assert!(text.contains(&format!(
            "backupd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }
}
