//! Human-readable text for each answer; `--json` bypasses this module.

use proto::Event;
use proto::response::{BackupList, Hello, RunReport, ScheduleInfo, ScheduleList};
use proto::schedule::Timestamp;
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

/// Lines to print for a successful `backups`: one file name each.
pub fn backups(data: Value) -> Result<Vec<String>, String> {
    let list: BackupList = decode(data)?;
    Ok(list.backups)
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
pub fn run_report(report: &RunReport) -> Vec<String> {
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
            }
            (None, false) => {
                lines.push(format!(
                    "Backup created {} ({}, sha256 {})",
                    source.archive,
                    source.size_human,
                    source.checksum_sha256.as_deref().unwrap_or("?")
                ));
                lines.extend(source.warnings.iter().map(|w| format!("  warning: {w}")));
            }
        }
    }
    if report.dry_run {
        lines.push("=== [DRY-RUN] Backup Summary ===".to_owned());
        lines.push(format!("Total sources: {}", report.total));
        lines.push(format!("Would create: {} backups", report.successful));
    } else {
        lines.push("=== Backup Summary ===".to_owned());
        lines.push(format!("Total sources: {}", report.total));
        lines.push(format!("Successful: {}", report.successful));
        lines.push(format!("Failed: {}", report.failed));
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
            human_bytes(*bytes_in),
            human_bytes(*bytes_out)
        )),
        Event::SourceStarted { source, .. } => Some(format!("{source}: starting")),
        Event::SourceFinished { .. } => None,
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    // Lossy above 2^53 bytes, which no progress line needs.
    #[allow(clippy::cast_precision_loss)]
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.2} {}", UNITS[unit])
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
