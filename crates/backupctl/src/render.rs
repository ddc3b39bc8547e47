//! Human-readable text for each answer; `--json` bypasses this module.

use proto::Event;
use proto::response::{
    BackupList, Hello, PruneReport, RestoreSummary, RunReport, ScheduleInfo, ScheduleList,
    VerifyList,
};
use proto::schedule::Timestamp;
use proto::size::human_size;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Lines to print for a successful `list`: the seed's `0: path;HH:MM;name` for a one-shot;
/// a recurring schedule adds its next run and how the last one went.
pub fn schedules(data: Value) -> Result<Vec<String>, String> {
    let list: ScheduleList = decode(data)?;
    Ok(list.schedules.iter().map(schedule_line).collect())
}

fn schedule_line(info: &ScheduleInfo) -> String {
    let line = format!("{}: {}", info.index, info.display);
    if info.schedule.is_once() {
        return line;
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

/// Lines to print for `backups`: one file name each; with `long`, per backup name its
/// archives, newest first, with created time, size, compression, files and last verify.
pub fn backups(data: Value, long: bool) -> Result<Vec<String>, String> {
    let list: BackupList = decode(data)?;
    let Some(groups) = list.groups.filter(|_| long) else {
        return Ok(list.backups);
    };
    let mut lines = Vec::new();
    for group in groups {
        lines.push(format!("{}:", group.name));
        for archive in group.archives {
            let created = chrono::NaiveDateTime::parse_from_str(&archive.created, "%Y%m%d_%H%M%S")
                .map_or(archive.created.clone(), |t| {
                    t.format("%d/%m/%Y %H:%M:%S").to_string()
                });
            let files = archive
                .files
                .map_or_else(|| "? files".to_owned(), |n| format!("{n} files"));
            let verify = archive.verify.map_or_else(
                || "not verified".to_owned(),
                |mark| {
                    format!(
                        "verified {} {}",
                        mark.status.replace('_', " "),
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
    Ok(lines)
}

/// Lines for `prune`, in the seed's words.
pub fn prune(data: Value) -> Result<Vec<String>, String> {
    let report: PruneReport = decode(data)?;
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
    Ok(lines)
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
pub fn verify(data: Value) -> Result<Vec<String>, String> {
    let list: VerifyList = decode(data)?;
    Ok(list
        .archives
        .iter()
        .map(|check| {
            let file = file_name(&check.archive);
            let words = check.status.replace('_', " ");
            match (check.status.as_str(), &check.detail) {
                ("ok", _) => format!("{file}: OK"),
                (_, Some(detail)) => format!("{file}: {words} ({detail})"),
                (_, None) => format!("{file}: {words}"),
            }
        })
        .collect())
}

/// Lines for `restore`: what was restored, then each refused entry.
pub fn restore(data: Value) -> Result<Vec<String>, String> {
    let summary: RestoreSummary = decode(data)?;
    let mut lines = vec![format!(
        "Restored {} files, {} dirs, {} symlinks ({}) to {}",
        summary.files,
        summary.dirs,
        summary.symlinks,
        human_size(summary.bytes),
        summary.to
    )];
    lines.extend(summary.refused.iter().map(|r| format!("Refused: {r}")));
    Ok(lines)
}

pub fn status(data: Value, socket: &std::path::Path) -> Result<Vec<String>, String> {
    let hello: Hello = decode(data)?;
    Ok(vec![format!(
        "backupd {} running (protocol {}, socket {})",
        hello.daemon_version,
        hello.protocol_version,
        socket.display()
    )])
}

fn decode<T: DeserializeOwned>(data: Value) -> Result<T, String> {
    serde_json::from_value(data).map_err(|e| format!("unexpected answer from backupd: {e}"))
}

/// Lines for a run's report, in the seed's words.
pub fn run_report(data: Value) -> Result<Vec<String>, String> {
    let report: RunReport = decode(data)?;
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
    Ok(lines)
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
