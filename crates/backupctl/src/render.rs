//! Human-readable text for each answer; `--json` bypasses this module.

use proto::response::{
    BackupList, Hello, PruneReport, RestoreSummary, RunReport, ScheduleInfo, ScheduleList,
    VerifyList,
};
use proto::schedule::Timestamp;
use proto::size::human_size;
use proto::{Event, Reply, VerifyStatus};
use std::path::Path;

/// The day a one-shot runs, when it is not today.
const ONE_SHOT_DAY_FORMAT: &str = "%d/%m/%Y";

/// How `backups --long` shows when an archive was made: the log's format, to the second.
const CREATED_FORMAT: &str = "%d/%m/%Y %H:%M:%S";

/// The lines to print for an answer's data; `socket` is named by `status`.
pub fn reply(reply: Reply, socket: &Path) -> Vec<String> {
    match reply {
        Reply::Hello(hello) => status(&hello, socket),
        Reply::Schedules(list) => schedules(&list),
        Reply::ScheduleChanged(_) => Vec::new(),
        // Printed once the daemon is gone (see `stop` in main.rs).
        Reply::Stopping(_) => vec!["backupd stopped".to_owned()],
        Reply::Backups(list) => backups(list),
        Reply::Prune(report) => prune(&report),
        Reply::Verify(list) => verify(&list),
        Reply::Restore(summary) => restore(&summary),
        Reply::Run(report) => run_report(&report),
    }
}

/// Lines for `list`: the schedule manager's `0: path;HH:MM;name` for a one-shot; a recurring
/// schedule adds its next run and how the last one went.
fn schedules(list: &ScheduleList) -> Vec<String> {
    list.schedules.iter().map(schedule_line).collect()
}

fn schedule_line(info: &ScheduleInfo) -> String {
    let line = format!("{}: {}", info.index, info.display);
    if info.schedule.is_once() {
        // `HH:MM` alone reads as today; say the day when it is another one.
        let today = chrono::Local::now().date_naive();
        return match info.next_run.map(|due| due.with_timezone(&chrono::Local)) {
            Some(due) if due.date_naive() != today => {
                format!("{line} (on {})", due.format(ONE_SHOT_DAY_FORMAT))
            }
            _ => line,
        };
    }
    let when = |t: &Timestamp| t.format(proto::LOG_TIME_FORMAT).to_string();
    let next = info
        .next_run
        .as_ref()
        .map_or_else(|| "never".to_owned(), when);
    let last = info.schedule.last_run.as_ref().map_or_else(
        || "never".to_owned(),
        |run| {
            format!(
                "{} {}",
                if run.ok { "ok" } else { "failed" },
                when(&run.started)
            )
        },
    );
    format!("{line} (next {next}; last {last})")
}

/// Lines for `backups`: one file name each; with `--long` (the daemon then sends groups), per
/// backup name its archives, newest first, with created time, size, compression, files and
/// last verify.
fn backups(list: BackupList) -> Vec<String> {
    let Some(groups) = list.groups else {
        return list.backups;
    };
    let mut lines = Vec::new();
    for group in groups {
        lines.push(format!("{}:", group.name));
        for archive in group.archives {
            let created =
                chrono::NaiveDateTime::parse_from_str(&archive.created, proto::ARCHIVE_TIME_FORMAT)
                    .map_or(archive.created.clone(), |t| {
                        t.format(CREATED_FORMAT).to_string()
                    });
            let files = archive
                .files
                .map_or_else(|| "? files".to_owned(), |n| format!("{n} files"));
            let verify = archive.verify.map_or_else(
                || "not verified".to_owned(),
                |mark| {
                    format!(
                        "verified {} {}",
                        mark.status.as_str().replace('_', " "),
                        mark.checked.format(proto::LOG_TIME_FORMAT)
                    )
                },
            );
            lines.push(format!(
                "  {}  {created}  {}  {}  {files}  {verify}",
                archive.file, archive.size_human, archive.compression
            ));
        }
    }
    lines
}

/// Lines for `prune`, in the original backup script's words.
fn prune(report: &PruneReport) -> Vec<String> {
    let mut lines = Vec::new();
    if report.dry_run {
        lines.extend(dry_run_deletions(&report.deleted));
        lines.push(format!(
            "Would delete: {} old backups",
            report.deleted.len()
        ));
    } else {
        lines.extend(
            report
                .deleted
                .iter()
                .map(|f| format!("Deleting old backup: {f}")),
        );
        lines.extend(
            report
                .failed
                .iter()
                .map(|f| format!("Failed to delete: {f}")),
        );
        lines.push(format!("Old backups deleted: {}", report.deleted.len()));
    }
    lines
}

fn dry_run_deletions(files: &[String]) -> Vec<String> {
    if files.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "[DRY-RUN] Found {} old backups that would be deleted:",
        files.len()
    )];
    lines.extend(files.iter().map(|f| format!("[DRY-RUN]   - {f}")));
    lines
}

/// Lines for `verify`: `<file>: OK` or `<file>: <what is wrong>`.
fn verify(list: &VerifyList) -> Vec<String> {
    list.archives
        .iter()
        .map(|check| {
            let file = file_name(&check.archive);
            let status = check.status;
            match &check.detail {
                Some(detail) if status != VerifyStatus::Ok => {
                    format!("{file}: {status} ({detail})")
                }
                _ => format!("{file}: {status}"),
            }
        })
        .collect()
}

/// Lines for `restore`: what was restored, then each refused entry.
fn restore(summary: &RestoreSummary) -> Vec<String> {
    let mut lines = vec![format!(
        "Restored {} files, {} dirs, {} symlinks ({}) to {}",
        summary.files,
        summary.dirs,
        summary.symlinks,
        human_size(summary.bytes),
        summary.to
    )];
    lines.extend(summary.refused.iter().map(|r| format!("Refused: {r}")));
    lines
}

/// `status`: who answers where.
fn status(hello: &Hello, socket: &Path) -> Vec<String> {
    vec![format!(
        "backupd {} running (protocol {}, socket {})",
        hello.daemon_version,
        hello.protocol_version,
        socket.display()
    )]
}

/// Lines for a run's report, in the original backup script's words.
fn run_report(report: &RunReport) -> Vec<String> {
    let mut lines = Vec::new();
    if report.dry_run {
        lines.push("[DRY-RUN MODE] No files will be created or deleted".to_owned());
    }
    for source in &report.sources {
        match (&source.error, report.dry_run) {
            (Some(error), _) => lines.push(format!("Failed: {error}")),
            (None, true) => {
                lines.push(format!("[DRY-RUN] Would compress {}", source.source));
                lines.push(format!("[DRY-RUN] Would create: {}", source.archive));
                lines.push(format!(
                    "[DRY-RUN] Would create manifest: {}",
                    file_name(&source.manifest)
                ));
                lines.extend(dry_run_deletions(&source.deleted));
            }
            (None, false) => {
                lines.push(format!(
                    "Backup created {} ({}, sha256 {})",
                    source.archive,
                    source.size_human,
                    source.checksum_sha256.as_deref().unwrap_or("?")
                ));
                lines.extend(source.warnings.iter().map(|w| format!("  warning: {w}")));
                if source.verified == Some(true) {
                    lines.push(format!("Verify OK: {}", file_name(&source.archive)));
                }
                lines.extend(
                    source
                        .deleted
                        .iter()
                        .map(|f| format!("Deleting old backup: {f}")),
                );
            }
        }
    }
    if report.dry_run {
        lines.push("=== [DRY-RUN] Backup Summary ===".to_owned());
        lines.push(format!("Total sources: {}", report.total));
        lines.push(format!("Would create: {} backups", report.successful));
        lines.push(format!(
            "Would delete: {} old backups",
            report.old_backups_deleted
        ));
    } else {
        lines.push("=== Backup Summary ===".to_owned());
        lines.push(format!("Total sources: {}", report.total));
        lines.push(format!("Successful: {}", report.successful));
        lines.push(format!("Failed: {}", report.failed));
        lines.push(format!(
            "Old backups deleted: {}",
            report.old_backups_deleted
        ));
        lines.push(format!("Total backup size: {}", report.total_size_human));
    }
    lines
}

/// A one-line progress display, redrawn in place on a terminal.
pub fn progress(event: &Event) -> Option<String> {
    match event {
        Event::Progress {
            source,
            files,
            bytes_in,
            bytes_out,
        } => Some(format!(
            "{source}: {files} files, {} read, {} written",
            human_size(*bytes_in),
            human_size(*bytes_out)
        )),
        Event::SourceStarted { source, .. } => Some(format!("{source}: starting")),
        Event::SourceFinished { .. } => None,
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::schedule::{Schedule, Timing};

    fn one_shot(due: chrono::DateTime<chrono::Local>) -> ScheduleInfo {
        let due = due.fixed_offset();
        ScheduleInfo {
            index: 0,
            display: "/src;16:33;docs".into(),
            next_run: Some(due),
            schedule: Schedule {
                id: 1,
                name: "docs".into(),
                sources: vec!["/src".into()],
                timing: Timing::Once {
                    time: "16:33".parse().unwrap(),
                    due,
                },
                options: proto::JobOptions::default(),
                created: due,
                last_due: None,
                last_run: None,
            },
        }
    }

    #[test]
    fn a_one_shot_on_another_day_says_which() {
        let now = chrono::Local::now();
        assert_eq!(schedule_line(&one_shot(now)), "0: /src;16:33;docs");
        let later = now + chrono::TimeDelta::days(2);
        assert_eq!(
            schedule_line(&one_shot(later)),
            format!("0: /src;16:33;docs (on {})", later.format("%d/%m/%Y"))
        );
    }
}
