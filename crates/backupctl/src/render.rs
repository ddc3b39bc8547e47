//! Human-readable text for each answer; `--json` bypasses this module.

use proto::response::{
    ArchiveEntry, BackupList, CancelReport, DestinationSpace, DeviceKind, Hello, JobInfo, JobList,
    JobState, PruneReport, RestoreSummary, RunReport, ScheduleInfo, ScheduleList, StatusInfo,
    VerifyList,
};
use proto::schedule::RunRecord;
use proto::schedule::Timestamp;
use proto::size::human_size;
use proto::{Event, Reply};
use std::path::Path;

/// The day a one-shot runs, when it is not today.
const ONE_SHOT_DAY_FORMAT: &str = "%d/%m/%Y";

/// How `backups --long` shows when an archive was made: the log's format, to the second.
const CREATED_FORMAT: &str = "%d/%m/%Y %H:%M:%S";

/// The lines to print for an answer's data; `socket` is named by `status`, `long` asks `list`
/// for each schedule's recent runs.
pub fn reply(reply: Reply, socket: &Path, long: bool) -> Vec<String> {
    let lines = match reply {
        Reply::Hello(hello) => status(&hello, socket),
        Reply::Schedules(list) => schedules(&list, long),
        // Silent when it adds one, as the schedule manager's `create`; a replacement says so.
        Reply::ScheduleChanged(changed) if changed.replaced => {
            vec![format!(
                "Schedule {} replaced",
                changed.schedule.schedule.name
            )]
        }
        Reply::ScheduleChanged(_) => Vec::new(),
        // Printed once the daemon is gone (see `stop` in main.rs).
        Reply::Stopping(_) => vec!["backupd stopped".to_owned()],
        Reply::Backups(list) => backups(list),
        Reply::Prune(report) => prune(&report),
        Reply::Verify(list) => verify(&list),
        Reply::Restore(summary) => restore(&summary),
        Reply::Run(report) => run_report(&report),
        Reply::Status(info) => full_status(&info),
        Reply::Jobs(list) => jobs(&list),
        Reply::Cancelled(report) => cancelled(&report),
        Reply::WatchEnded(_) => vec!["backupd is stopping".to_owned()],
        Reply::LogLevel(set) => vec![format!("log level: {}", set.level)],
        Reply::Listing(listing) => archive_listing(&listing),
        Reply::Synced(report) => synced(&report),
    };
    lines.into_iter().map(one_line).collect()
}

/// `line` with its control characters escaped, as the daemon's log writes them. Done once per
/// line rather than per field: paths, link targets and error texts come from archives and
/// folders anyone may have written, and one field missed would forge lines or reach the
/// terminal as an escape sequence.
fn one_line(line: String) -> String {
    if line.chars().any(char::is_control) {
        proto::escape_controls(&line).into_owned()
    } else {
        line
    }
}

/// A moment as the log writes it, in this machine's local time: a daemon's timestamp keeps
/// the offset it was computed with, which around a clock change is not the one the clock
/// shows then (a cron's 02:00 in the gap of a spring-forward day happens at 03:00).
fn local_time(at: &Timestamp) -> String {
    at.with_timezone(&chrono::Local)
        .format(proto::LOG_TIME_FORMAT)
        .to_string()
}

/// `status`: the daemon, its jobs, its schedules and the space left where archives go.
fn full_status(info: &StatusInfo) -> Vec<String> {
    let when = local_time;
    let mut lines = vec![
        format!(
            "backupd {} running (protocol {}, pid {}), up {}",
            info.daemon_version,
            info.protocol_version,
            info.pid,
            uptime(info.uptime_secs)
        ),
        format!("home: {}", info.home),
        format!("socket: {}", info.socket.as_deref().unwrap_or("(unnamed)")),
    ];
    if info.jobs.is_empty() {
        lines.push("jobs: none running".to_owned());
    } else {
        lines.push("jobs:".to_owned());
        lines.extend(info.jobs.iter().map(|job| format!("  {}", job_line(job))));
    }
    lines.push(match &info.next_run {
        Some(next) => format!("next run: {} at {}", next.name, when(&next.at)),
        None => "next run: none scheduled".to_owned(),
    });
    if !info.schedules.is_empty() {
        lines.push("schedules:".to_owned());
        for schedule in &info.schedules {
            let next = schedule
                .next_run
                .as_ref()
                .map_or_else(|| "never".to_owned(), when);
            let state = if schedule.running { "; running" } else { "" };
            lines.push(format!(
                "  {} (next {next}; last {}{state})",
                schedule.display,
                last_outcome(schedule.last_run.as_ref())
            ));
        }
    }
    lines.push("free space:".to_owned());
    lines.extend(
        info.destinations
            .iter()
            .map(|d| format!("  {}", space_line(d))),
    );
    lines
}

/// How the last run went, with the error text of a failure.
fn last_outcome(run: Option<&RunRecord>) -> String {
    let Some(run) = run else {
        return "never".to_owned();
    };
    let at = local_time(&run.started);
    match (&run.error, run.ok) {
        (_, true) if run.offsite_failed > 0 => format!("completed with offsite failure {at}"),
        (_, true) if run.skipped > 0 => format!("ok with warnings {at}: {}", skipped(run.skipped)),
        (_, true) => format!("ok {at}"),
        (Some(error), false) => format!("failed {at}: {error}"),
        (None, false) => format!("failed {at}"),
    }
}

fn space_line(space: &DestinationSpace) -> String {
    match (
        space.exists,
        &space.error,
        space.free_bytes,
        space.total_bytes,
    ) {
        (false, _, _, _) => format!("{}: missing", space.path),
        (true, Some(error), _, _) => format!("{}: {error}", space.path),
        (true, None, Some(free), Some(total)) => format!(
            "{}: {} free of {}",
            space.path,
            human_size(free),
            human_size(total)
        ),
        _ => format!("{}: unknown", space.path),
    }
}

/// `2d 3h`, `3h 4m`, `4m 5s`: the two largest units.
fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Lines for `jobs`: one per running job.
fn jobs(list: &JobList) -> Vec<String> {
    list.jobs.iter().map(job_line).collect()
}

/// `#3 docs running 12 files, 1.00 MB read, 512.00 KB written: /home/me/docs`.
fn job_line(job: &JobInfo) -> String {
    let state = match job.state {
        JobState::Waiting => "waiting",
        JobState::Running => "running",
        JobState::Cancelling => "cancelling",
        JobState::Finishing => "finishing",
    };
    let schedule = job
        .schedule
        .as_ref()
        .map_or_else(String::new, |s| format!(" (schedule {s})"));
    format!(
        "#{} {}{schedule} {state} {}, {} read, {} written, since {}: {}",
        job.id,
        job.name,
        files(job.files),
        human_size(job.bytes_in),
        human_size(job.bytes_out),
        job.started.format("%H:%M:%S"),
        job.source
    )
}

/// Lines for `cancel`: each job told to stop.
fn cancelled(report: &CancelReport) -> Vec<String> {
    report
        .cancelled
        .iter()
        .map(|job| match (job.state, &job.archive) {
            (JobState::Finishing, Some(archive)) => format!(
                "Job {} ({}) had already written {archive}, which is kept; what goes on after it (a verify, an upload, a notification) is stopped",
                job.id, job.name
            ),
            _ => format!("Cancelled job {} ({}): {}", job.id, job.name, job.source),
        })
        .collect()
}

/// `1 file`, `2 files`.
fn files(n: u64) -> String {
    if n == 1 {
        "1 file".to_owned()
    } else {
        format!("{n} files")
    }
}

/// A `watch` event as one line of text, after the local time; `None` for kinds with nothing
/// to say.
pub fn event(event: &Event, now: &chrono::DateTime<chrono::Local>) -> Option<String> {
    let text = match event {
        Event::JobStarted {
            job,
            name,
            schedule,
            source,
        } => {
            let schedule = schedule
                .as_ref()
                .map_or_else(String::new, |s| format!(" for schedule {s}"));
            format!("job {job} started: {name}{schedule} ({source})")
        }
        Event::JobProgress {
            job,
            name,
            files: n,
            bytes_in,
            bytes_out,
        } => format!(
            "job {job} progress: {name} {}, {} read, {} written",
            files(*n),
            human_size(*bytes_in),
            human_size(*bytes_out)
        ),
        Event::JobFinished {
            job,
            name,
            archive,
            size_bytes,
            ..
        } => format!(
            "job {job} finished: {name} {archive} ({})",
            human_size(*size_bytes)
        ),
        Event::JobFailed {
            job, name, error, ..
        } => format!("job {job} failed: {name}: {error}"),
        Event::JobCancelled {
            job, name, error, ..
        } => format!("job {job} cancelled: {name}: {error}"),
        Event::Rotated {
            destination,
            deleted,
        } => format!("rotated {destination}: deleted {}", deleted.join(", ")),
        Event::Verified { archive, status } => format!("verified {archive}: {status}"),
        Event::Uploaded { job, name, upload } => {
            format!("[{name} #{job}] {}", offsite_line(upload))
        }
        Event::ScheduleChanged { name, change } => {
            let change = match change {
                proto::event::ScheduleChange::Created => "created",
                proto::event::ScheduleChange::Replaced => "replaced",
                proto::event::ScheduleChange::Deleted => "deleted",
                proto::event::ScheduleChange::Unknown => "changed",
            };
            format!("schedule {name} {change}")
        }
        Event::Lagged { missed } => format!("(missed {missed} events: reading too slowly)"),
        Event::SourceStarted { .. }
        | Event::Progress { .. }
        | Event::SourceFinished { .. }
        | Event::RunStarted { .. }
        | Event::Unknown => return None,
    };
    Some(one_line(format!("{} {text}", now.format("%H:%M:%S"))))
}

/// Lines for `list`: the schedule manager's `0: path;HH:MM;name` for a one-shot; a recurring
/// schedule adds its next run and how the last one went.
fn schedules(list: &ScheduleList, long: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for info in &list.schedules {
        lines.push(schedule_line(info));
        if long {
            let runs = info.schedule.last_run.iter();
            lines.extend(runs.chain(&info.schedule.earlier_runs).map(run_line));
        }
    }
    lines
}

/// `3 entries skipped`.
fn skipped(n: u64) -> String {
    if n == 1 {
        "1 entry skipped".to_owned()
    } else {
        format!("{n} entries skipped")
    }
}

/// One run under `list --long`: `  ok 25/11/2026 02:00, 12s, 1 archive` or
/// `  failed 25/11/2026 02:00, 3s: <error>`.
fn run_line(run: &proto::schedule::RunRecord) -> String {
    let started = local_time(&run.started);
    let seconds = (run.finished - run.started).num_seconds().max(0);
    if !run.ok {
        let error = run.error.as_deref().unwrap_or("no reason recorded");
        return format!("  failed {started}, {seconds}s: {error}");
    }
    let archives = match run.archives.len() {
        1 => "1 archive".to_owned(),
        n => format!("{n} archives"),
    };
    if run.offsite_failed > 0 {
        return format!("  completed with offsite failure {started}, {seconds}s, {archives}");
    }
    if run.skipped > 0 {
        let skipped = skipped(run.skipped);
        return format!("  ok with warnings {started}, {seconds}s, {archives}, {skipped}");
    }
    format!("  ok {started}, {seconds}s, {archives}")
}

fn schedule_line(info: &ScheduleInfo) -> String {
    let line = format!("{}: {}", info.index, info.display);
    if let proto::schedule::Timing::Once { time, .. } = &info.schedule.timing {
        let Some(due) = info.next_run.map(|due| due.with_timezone(&chrono::Local)) else {
            return line;
        };
        // The `HH:MM` is the clock of the daemon that took it: another zone's (the daemon's,
        // or this one's since), it is not when the run is due here.
        if due.format("%H:%M").to_string() != time.to_string() {
            let here = format!("{ONE_SHOT_DAY_FORMAT} %H:%M");
            return format!("{line} (due {} here)", due.format(&here));
        }
        // `HH:MM` alone reads as today; say the day when it is another one.
        return if due.date_naive() == chrono::Local::now().date_naive() {
            line
        } else {
            format!("{line} (on {})", due.format(ONE_SHOT_DAY_FORMAT))
        };
    }
    let when = local_time;
    let next = info
        .next_run
        .as_ref()
        .map_or_else(|| "never".to_owned(), when);
    let last = info.schedule.last_run.as_ref().map_or_else(
        || "never".to_owned(),
        |run| {
            format!(
                "{} {}",
                match (run.ok, run.skipped) {
                    (false, _) => "failed",
                    (true, _) if run.offsite_failed > 0 => "completed with offsite failure",
                    (true, 0) => "ok",
                    (true, _) => "ok with warnings",
                },
                when(&run.started)
            )
        },
    );
    // A daily time or a cron's fields are the daemon's clock; `next` and `last` this one's.
    let zone = info.next_run.as_ref().and_then(|next| {
        let here = chrono::Offset::fix(next.with_timezone(&chrono::Local).offset());
        (here != *next.offset()).then(|| format!("; its times are backupd's, UTC{}", next.offset()))
    });
    format!(
        "{line} (next {next}; last {last}{})",
        zone.unwrap_or_default()
    )
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
                        local_time(&mark.checked)
                    )
                },
            );
            let sealed = match (archive.encrypted, archive.recipients.as_slice()) {
                (false, _) => String::new(),
                (true, _) if archive.passphrase => "  encrypted (age) to a passphrase".to_owned(),
                (true, []) => "  encrypted (age)".to_owned(),
                (true, keys) => format!("  encrypted (age) to {}", keys.join(", ")),
            };
            // A remote copy without its manifest is not a backup yet.
            let verify = if archive.incomplete {
                "incomplete (no manifest)".to_owned()
            } else {
                verify
            };
            lines.push(format!(
                "  {}  {created}  {}  {}  {files}  {verify}{sealed}",
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
        lines.extend(report.locked.iter().map(|f| format!("Not deleted: {f}")));
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
            // An OK with a detail is an encrypted archive checked without its key.
            match &check.detail {
                Some(detail) => format!("{file}: {status} ({detail})"),
                None => format!("{file}: {status}"),
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
    if summary.refused_not_listed > 0 {
        lines.push(format!(
            "… and {} more entries refused, not listed ({} in all)",
            summary.refused_not_listed,
            summary.refused.len() as u64 + summary.refused_not_listed
        ));
    }
    lines
}

/// A name as `tar -tv` shows it: a backslash doubled, so that a name holding a backslash and
/// an `n` (shown `\\n`) is told apart from one holding a newline ([`one_line`] shows `\n`).
fn listed_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains('\\') {
        name.replace('\\', "\\\\").into()
    } else {
        name.into()
    }
}

/// Lines for `ls`, as `tar -tv` shows them: type and mode, size, mtime (UTC), path.
fn archive_listing(listing: &proto::response::ArchiveListing) -> Vec<String> {
    listing
        .entries
        .iter()
        .map(|entry| {
            let kind = kind_letter(entry);
            let when = chrono::DateTime::from_timestamp(entry.mtime, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let mut line = format!(
                "{kind}{} {:>12} {when} {}",
                mode_text(entry.mode),
                entry.size,
                listed_name(&entry.path)
            );
            match (entry.kind.as_str(), &entry.link) {
                ("symlink", Some(link)) => line.push_str(&format!(" -> {}", listed_name(link))),
                ("hardlink", Some(link)) => {
                    line.push_str(&format!(" link to {}", listed_name(link)));
                }
                _ => {}
            }
            line
        })
        .collect()
}

/// What an `ls` answer left out, to say after its lines: a listing cut short must not read as
/// the whole archive.
pub fn not_listed(listing: &proto::response::ArchiveListing) -> Option<String> {
    (listing.not_listed > 0).then(|| {
        one_line(format!(
            "listed the first {} entries; {} more entries not listed, to keep the answer \
             bounded (give a PATH to list part of the archive)",
            listing.entries.len(),
            listing.not_listed
        ))
    })
}

/// The type letter `tar -tv` shows before the mode; `?` for a kind this client does not know,
/// and for a device from a daemon that did not say which kind.
fn kind_letter(entry: &ArchiveEntry) -> char {
    match (entry.kind.as_str(), entry.device) {
        ("file", _) => '-',
        ("dir", _) => 'd',
        ("symlink", _) => 'l',
        ("hardlink", _) => 'h',
        ("fifo", _) => 'p',
        ("device", Some(DeviceKind::Char)) => 'c',
        ("device", Some(DeviceKind::Block)) => 'b',
        _ => '?',
    }
}

/// `rwxr-x---` for `0o750`, and as `tar -tv` shows set-id and sticky bits (`rwsr-xr-x` for
/// `0o4755`, `rwxrwxrwt` for `0o1777`): in place of the execute bit they go with, capital
/// when that bit is not set. A setuid file is what a restore as root must not hide.
fn mode_text(mode: u32) -> String {
    let mut text: Vec<char> = (0..9)
        .map(|i| {
            let bit = 0o400 >> i;
            match (mode & bit != 0, i % 3) {
                (false, _) => '-',
                (true, 0) => 'r',
                (true, 1) => 'w',
                (true, _) => 'x',
            }
        })
        .collect();
    for (bit, at, letter) in [(0o4000, 2, 's'), (0o2000, 5, 's'), (0o1000, 8, 't')] {
        if mode & bit != 0 {
            text[at] = if text[at] == 'x' {
                letter
            } else {
                letter.to_ascii_uppercase()
            };
        }
    }
    text.into_iter().collect()
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
        lines.extend(proto::response::dry_run_header(
            report.sources.iter().map(|source| source.source.as_str()),
            &report.destination,
            report.retention_days,
        ));
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
                lines.extend(source.offsite.iter().map(offsite_line));
                lines.extend(source.offsite_errors.iter().map(offsite_error_line));
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
        lines.extend(report.warnings_summary());
        lines.extend(report.offsite_summary());
    }
    lines
}

/// One offsite upload of a run: where, how much, how fast, how many retries, or why not.
fn offsite_line(upload: &proto::response::OffsiteUpload) -> String {
    let retries = match upload.retries {
        0 => String::new(),
        1 => ", 1 retry".to_owned(),
        n => format!(", {n} retries"),
    };
    match (&upload.error, upload.already_there) {
        (Some(error), _) => format!(
            "Offsite upload to {} failed{retries}: {error}",
            upload.remote
        ),
        (None, true) => format!("Offsite {}: already there", upload.url),
        (None, false) => format!(
            "Uploaded to {}: {} ({}, {}/s{retries})",
            upload.remote,
            upload.url,
            human_size(upload.bytes),
            human_size(upload.rate())
        ),
    }
}

/// An offsite step of a run that failed besides its uploads.
fn offsite_error_line(failed: &proto::response::OffsiteError) -> String {
    let step = match failed.step {
        proto::response::OffsiteStep::CatchUp => "Offsite catch-up",
        proto::response::OffsiteStep::Rotation => "Remote rotation",
    };
    format!("{step} on {} failed: {}", failed.remote, failed.error)
}

/// Lines for `sync`: one per upload, then the totals.
fn synced(report: &proto::response::SyncReport) -> Vec<String> {
    let mut lines: Vec<String> = report.uploads.iter().map(offsite_line).collect();
    let failed = report.uploads.iter().filter(|u| !u.ok).count();
    lines.push(format!(
        "Sync to {} ({}): {} uploaded, {failed} failed, {} already there",
        report.remote,
        report.url,
        report.uploads.len() - failed,
        report.already_there
    ));
    lines
}

/// A one-line progress display, redrawn in place on a terminal.
/// The progress line of a run on a terminal: files and bytes, the rate, and, when the previous
/// backup of the same name says how much there is to read, the percentage and time left.
#[derive(Debug, Default)]
pub struct ProgressView {
    /// Per source: when it started and what it is expected to read.
    started: std::collections::HashMap<String, (std::time::Instant, Option<u64>)>,
}

impl ProgressView {
    /// The line to draw for `event`, received at `now`; `None` to leave the line as it is.
    pub fn line(&mut self, event: &Event, now: std::time::Instant) -> Option<String> {
        match event {
            Event::SourceStarted {
                source,
                expected_bytes,
                ..
            } => {
                self.started.insert(source.clone(), (now, *expected_bytes));
                Some(one_line(format!("{source}: starting")))
            }
            Event::Progress {
                source,
                files,
                bytes_in,
                bytes_out,
            } => {
                let (since, expected) = self.started.get(source).copied().unwrap_or((now, None));
                Some(one_line(progress_line(
                    source,
                    *files,
                    *bytes_in,
                    *bytes_out,
                    now.saturating_duration_since(since),
                    expected,
                )))
            }
            _ => None,
        }
    }
}

fn progress_line(
    source: &str,
    files: u64,
    bytes_in: u64,
    bytes_out: u64,
    elapsed: std::time::Duration,
    expected: Option<u64>,
) -> String {
    let files = if files == 1 {
        "1 file".to_owned()
    } else {
        format!("{files} files")
    };
    let mut line = format!("{source}: {files}, {} read", human_size(bytes_in));
    // Never 100% before the end: the source may have grown since the last backup.
    let expected = expected.filter(|&e| e > 0);
    if let Some(expected) = expected {
        let percent = (bytes_in.saturating_mul(100) / expected).min(99);
        line.push_str(&format!(" ({percent}%)"));
    }
    let seconds = elapsed.as_secs_f64();
    if seconds >= 0.5 {
        let rate = bytes_in as f64 / seconds;
        line.push_str(&format!(", {}/s", human_size(rate as u64)));
        if let Some(expected) = expected.filter(|&e| e > bytes_in && rate > 0.0) {
            let left = ((expected - bytes_in) as f64 / rate).ceil() as u64;
            line.push_str(&format!(", {} left", clock(left)));
        }
    }
    line.push_str(&format!(", {} written", human_size(bytes_out)));
    line
}

/// `m:ss`, or `h:mm:ss` from an hour on.
fn clock(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::schedule::{Schedule, Timing};

    /// A one-shot taken on this clock, due at `due`.
    fn one_shot(due: chrono::DateTime<chrono::Local>) -> ScheduleInfo {
        let time = due.format("%H:%M").to_string();
        let due = due.fixed_offset();
        ScheduleInfo {
            index: 0,
            display: format!("/src;{time};docs"),
            next_run: Some(due),
            schedule: std::sync::Arc::new(Schedule {
                id: 1,
                name: "docs".into(),
                sources: vec!["/src".into()],
                timing: Timing::Once {
                    time: time.parse().unwrap(),
                    due,
                },
                options: proto::JobOptions::default(),
                created: due,
                last_due: None,
                last_run: None,
                earlier_runs: Vec::new(),
                last_success: None,
                started_run: None,
            }),
        }
    }

    #[test]
    fn progress_shows_the_rate_and_with_an_estimate_the_percentage_and_time_left() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let mut view = ProgressView::default();
        let started = Event::SourceStarted {
            source: "/src".into(),
            archive: "/b/a.tar.gz".into(),
            expected_bytes: Some(10_000_000),
        };
        assert_eq!(view.line(&started, t0).unwrap(), "/src: starting");
        let progress = |files, bytes_in| Event::Progress {
            source: "/src".into(),
            files,
            bytes_in,
            bytes_out: 1024,
        };
        assert_eq!(
            view.line(&progress(1, 4_000_000), t0 + Duration::from_secs(2))
                .unwrap(),
            "/src: 1 file, 3.81 MB read (40%), 1.91 MB/s, 0:03 left, 1.00 KB written"
        );
        // Read more than the last time: never 100% and no time left before the end.
        assert_eq!(
            view.line(&progress(7, 12_000_000), t0 + Duration::from_secs(4))
                .unwrap(),
            "/src: 7 files, 11.44 MB read (99%), 2.86 MB/s, 1.00 KB written"
        );
        // Without an estimate (a first backup), the rate alone; too early for a rate at all.
        let mut first = ProgressView::default();
        let started = Event::SourceStarted {
            source: "/src".into(),
            archive: "/b/a.tar.gz".into(),
            expected_bytes: None,
        };
        first.line(&started, t0);
        assert_eq!(
            first
                .line(&progress(2, 100), t0 + Duration::from_millis(100))
                .unwrap(),
            "/src: 2 files, 100.00 B read, 1.00 KB written"
        );
        assert_eq!(clock(3725), "1:02:05");
    }

    #[test]
    fn modes_show_set_id_and_sticky_bits_as_tar_does() {
        assert_eq!(mode_text(0o750), "rwxr-x---");
        assert_eq!(mode_text(0o4755), "rwsr-xr-x");
        assert_eq!(mode_text(0o4644), "rwSr--r--");
        assert_eq!(mode_text(0o2755), "rwxr-sr-x");
        assert_eq!(mode_text(0o2705), "rwx--Sr-x");
        assert_eq!(mode_text(0o1777), "rwxrwxrwt");
        assert_eq!(mode_text(0o1776), "rwxrwxrwT");
        assert_eq!(mode_text(0o7000), "--S--S--T");
    }

    #[test]
    fn fifos_and_devices_have_tar_s_letters() {
        let entry = |kind: &str, device| ArchiveEntry {
            kind: kind.into(),
            mode: 0o620,
            size: 0,
            mtime: 0,
            path: "dev/x".into(),
            link: None,
            device,
        };
        let letters: String = [
            entry("file", None),
            entry("fifo", None),
            entry("device", Some(DeviceKind::Char)),
            entry("device", Some(DeviceKind::Block)),
            // An older daemon does not say which; nor can a kind this client does not know.
            entry("device", None),
            entry("whiteout", None),
        ]
        .iter()
        .map(kind_letter)
        .collect();
        assert_eq!(letters, "-pcb??");
        let listing = proto::response::ArchiveListing {
            archive: "/b/a.tar".into(),
            entries: vec![entry("device", Some(DeviceKind::Block))],
            not_listed: 0,
        };
        assert_eq!(
            archive_listing(&listing),
            ["brw--w----            0 1970-01-01 00:00:00 dev/x"]
        );
    }

    #[test]
    fn listed_names_with_a_backslash_are_told_from_names_with_a_newline() {
        let entry = |path: &str| ArchiveEntry {
            kind: "symlink".into(),
            mode: 0o777,
            size: 0,
            mtime: 0,
            path: path.into(),
            link: Some(path.into()),
            device: None,
        };
        let listing = proto::response::ArchiveListing {
            archive: "/b/a.tar".into(),
            entries: vec![entry("src/a\\nb"), entry("src/a\nb")],
            not_listed: 0,
        };
        let lines = reply(Reply::Listing(listing), Path::new("/s"), false);
        let names: Vec<&str> = lines
            .iter()
            .map(|l| &l[l.find("src/").unwrap()..])
            .collect();
        assert_eq!(names, [r"src/a\\nb -> src/a\\nb", r"src/a\nb -> src/a\nb"]);
    }

    #[test]
    fn a_one_shot_on_another_day_says_which() {
        let now = chrono::Local::now();
        let line =
            |at: chrono::DateTime<chrono::Local>| format!("0: /src;{};docs", at.format("%H:%M"));
        assert_eq!(schedule_line(&one_shot(now)), line(now));
        let later = now + chrono::TimeDelta::days(2);
        assert_eq!(
            schedule_line(&one_shot(later)),
            format!("{} (on {})", line(later), later.format("%d/%m/%Y"))
        );
    }

    #[test]
    fn watch_names_each_schedule_change_and_one_it_does_not_know() {
        use proto::event::ScheduleChange;
        let now = chrono::Local::now();
        let text = |change| {
            let changed = Event::ScheduleChanged {
                name: "docs".into(),
                change,
            };
            event(&changed, &now).unwrap()
        };
        let at = now.format("%H:%M:%S");
        assert_eq!(
            text(ScheduleChange::Replaced),
            format!("{at} schedule docs replaced")
        );
        assert_eq!(
            text(ScheduleChange::Unknown),
            format!("{at} schedule docs changed")
        );
    }
}
