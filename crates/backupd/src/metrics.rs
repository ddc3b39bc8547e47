//! Prometheus metrics in node_exporter's textfile format: `<home>/metrics/backupd.prom`,
//! replaced atomically at start (beside serving, never before it) and after every run, for
//! node_exporter's `--collector.textfile.directory`. Per schedule: when it last ran and last succeeded, how
//! long its last run took, what it wrote, how it ended and how many archives of it are kept;
//! and the daemon's `backupd_up` and `backupd_build_info`.

use crate::destination::{self, LocalFolder};
use crate::plan::folder_name;
use crate::state::Daemon;
use proto::schedule::{RunRecord, Schedule};
use proto::schedule_spec::MAX_NAME_LEN;
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
    /// Archives of the schedule in its destination now.
    pub archives: usize,
}

/// Gathers the facts and replaces the file; a failure is logged, never more.
pub async fn refresh(daemon: &Daemon) {
    let schedules = daemon.schedules.snapshot().await.schedules;
    let default_destination = daemon
        .job_defaults
        .destination
        .clone()
        .map_or_else(|| daemon.home.backups_dir(), PathBuf::from);
    let dir = daemon.home.root().join(METRICS_DIR);
    let written = tokio::task::spawn_blocking(move || {
        let facts: Vec<_> = schedules
            .iter()
            .map(|s| facts_of(s, &default_destination))
            .collect();
        write(&dir, &render(&facts))
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("can't write metrics: {e}"),
        Err(e) => tracing::warn!("can't write metrics: {e}"),
    }
}

fn facts_of(schedule: &Schedule, default_destination: &Path) -> ScheduleFacts {
    let runs = schedule.last_run.iter().chain(&schedule.earlier_runs);
    let last_success = runs.filter(|r| r.ok).map(|r| r.finished.timestamp()).max();
    let last_size_bytes = schedule.last_run.as_ref().map_or(0, |run| {
        run.archives
            .iter()
            .filter_map(|a| std::fs::metadata(a).ok())
            .map(|m| m.len())
            .sum()
    });
    // The archive names `plan` gives the schedule's sources.
    let names: Vec<String> = if schedule.sources.len() == 1 {
        vec![schedule.name.clone()]
    } else {
        schedule
            .sources
            .iter()
            .map(|s| {
                let mut name = format!("{}-{}", schedule.name, folder_name(Path::new(s)));
                name.truncate(MAX_NAME_LEN);
                name
            })
            .collect()
    };
    let folder = schedule
        .options
        .destination
        .as_ref()
        .map_or_else(|| default_destination.to_owned(), PathBuf::from);
    let archives = destination::list(&LocalFolder::new(folder))
        .map(|all| all.iter().filter(|a| names.contains(&a.name)).count())
        .unwrap_or(0);
    ScheduleFacts {
        name: schedule.name.clone(),
        last_run: schedule.last_run.clone(),
        last_success,
        last_size_bytes,
        archives,
    }
}

/// The file's text.
pub fn render(schedules: &[ScheduleFacts]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, lines: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in lines {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "backupd_up",
        "1 while backupd runs (the file is rewritten at start).",
        vec![(String::new(), "1".into())],
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
        per(&|s| Some(s.archives.to_string())),
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
            }),
            last_success: Some(1_700_000_000),
            last_size_bytes: 0,
            archives: 4,
        };
        let never = ScheduleFacts {
            name: "new".into(),
            last_run: None,
            last_success: None,
            last_size_bytes: 0,
            archives: 0,
        };
        let text = render(&[facts, never]);
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
