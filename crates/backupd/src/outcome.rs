//! What a job came to, in one place: the facts that hooks (`BACKUPD_*` variables),
//! notifications (the webhook's JSON, emails, ntfy messages, healthchecks pings) and the log
//! report. The runner builds one [`JobOutcome`] when each job of a real run ends; its readers
//! never look at the report or the registry themselves.

use crate::jobs::Job;
use proto::response::{OffsiteStep, SourceReport};
use proto::schedule::Timestamp;
use serde::Serialize;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// The archive is published (and verified, when asked).
    Success,
    /// Published, but some entries were left out (`skipped` > 0).
    Warning,
    /// Published (and verified, when asked) here, but an offsite upload failed after its
    /// retries, or the catch-up or rotation of a remote could not run: `completed with
    /// offsite failure`. The local archive counts; what the remote lacks waits for the next
    /// run or `sync`.
    OffsiteFailure,
    Failure,
    /// Cancelled by `cancel` or by the daemon stopping.
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Success => "success",
            JobStatus::Warning => "warning",
            JobStatus::OffsiteFailure => "offsite_failure",
            JobStatus::Failure => "failure",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the archive was published and counts as a backup.
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Warning | JobStatus::OffsiteFailure
        )
    }
}

/// The facts of one finished job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    /// The job's id in the registry (`[name #id]` in the log).
    pub job: u64,
    /// The backup name of its archives.
    pub name: String,
    /// The schedule it ran for, if any.
    pub schedule: Option<String>,
    pub source: String,
    /// The archive's path (the one it would have had, when the job failed).
    pub archive: String,
    pub manifest: String,
    pub status: JobStatus,
    pub error: Option<String>,
    /// Its archive was published (and so exists), whatever came after: a verify that failed
    /// or was stopped keeps it.
    pub published: bool,
    /// Bytes of the published archive; 0 when none was published.
    pub size_bytes: u64,
    pub sha256: Option<String>,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub duration_ms: u64,
    /// The machine's name, as notifications say it.
    pub host: String,
    /// The job's last lines in the daemon's log, oldest first (bounded).
    pub log_lines: Vec<String>,
}

impl JobOutcome {
    /// The outcome of `job` as its `report` tells it, finished now on `host`.
    pub fn new(job: &Job, report: &SourceReport, log_lines: Vec<String>, host: &str) -> Self {
        let finished = chrono::Local::now().fixed_offset();
        let failed_uploads: Vec<String> = report
            .offsite
            .iter()
            .filter(|u| !u.ok)
            .map(|u| {
                let why = u.error.as_deref().unwrap_or("failed");
                format!("offsite upload to {} failed: {why}", u.remote)
            })
            .chain(report.offsite_errors.iter().map(|e| {
                let step = match e.step {
                    OffsiteStep::CatchUp => "offsite catch-up",
                    OffsiteStep::Rotation => "remote rotation",
                };
                format!("{step} on {} failed: {}", e.remote, e.error)
            }))
            .collect();
        let status = if report.ok && !failed_uploads.is_empty() {
            JobStatus::OffsiteFailure
        } else if report.ok && report.skipped > 0 {
            JobStatus::Warning
        } else if report.ok {
            JobStatus::Success
        } else if report.cancelled {
            JobStatus::Cancelled
        } else {
            JobStatus::Failure
        };
        let elapsed = (finished - job.started).num_milliseconds();
        let published = job.is_written();
        Self {
            job: job.id,
            name: job.name.clone(),
            schedule: job.schedule.clone(),
            source: report.source.clone(),
            archive: report.archive.clone(),
            manifest: report.manifest.clone(),
            status,
            error: report
                .error
                .clone()
                .or_else(|| (!failed_uploads.is_empty()).then(|| failed_uploads.join("; "))),
            published,
            size_bytes: if published { report.size_bytes } else { 0 },
            sha256: report.checksum_sha256.clone().filter(|_| published),
            started: job.started,
            finished,
            duration_ms: u64::try_from(elapsed).unwrap_or(0),
            host: host.to_owned(),
            log_lines,
        }
    }

    /// The `failure` of a job that never started, its run having failed before any job did
    /// (see `crate::plan_failure`): no job id (0, which the registry never gives), no archive.
    pub fn never_started(
        name: &str,
        schedule: Option<&str>,
        source: &str,
        error: &str,
        started: Timestamp,
        host: &str,
    ) -> Self {
        let finished = chrono::Local::now().fixed_offset();
        let elapsed = (finished - started).num_milliseconds();
        Self {
            job: 0,
            name: name.to_owned(),
            schedule: schedule.map(str::to_owned),
            source: source.to_owned(),
            archive: String::new(),
            manifest: String::new(),
            status: JobStatus::Failure,
            error: Some(error.to_owned()),
            published: false,
            size_bytes: 0,
            sha256: None,
            started,
            finished,
            duration_ms: u64::try_from(elapsed).unwrap_or(0),
            host: host.to_owned(),
            log_lines: Vec::new(),
        }
    }

    /// Whether the job did all it was asked: published its archive (with or without
    /// warnings) and copied it to every remote. Notifications `on failure` go out otherwise.
    pub fn succeeded(&self) -> bool {
        matches!(self.status, JobStatus::Success | JobStatus::Warning)
    }

    /// Whether the job published its archive here, whatever became of its offsite copies or
    /// its verify.
    pub fn published(&self) -> bool {
        self.published
    }

    /// The facts as `BACKUPD_*` environment variables, for hooks (empty where unknown).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        // As in the webhook: an archive not published does not exist, and a later run may
        // take its name.
        let if_published = |path: &str| {
            if self.published() {
                path.to_owned()
            } else {
                String::new()
            }
        };
        vec![
            ("BACKUPD_NAME", self.name.clone()),
            ("BACKUPD_ARCHIVE", if_published(&self.archive)),
            ("BACKUPD_MANIFEST", if_published(&self.manifest)),
            ("BACKUPD_STATUS", self.status.as_str().to_owned()),
            ("BACKUPD_ERROR", self.error.clone().unwrap_or_default()),
            ("BACKUPD_SIZE_BYTES", self.size_bytes.to_string()),
            ("BACKUPD_SHA256", self.sha256.clone().unwrap_or_default()),
        ]
    }

    /// The JSON body a webhook receives.
    pub fn webhook_body(&self) -> WebhookBody<'_> {
        let published = self.published();
        WebhookBody {
            name: &self.name,
            status: self.status,
            error: self.error.as_deref(),
            source: &self.source,
            archive: published.then_some(self.archive.as_str()),
            size_bytes: published.then_some(self.size_bytes),
            sha256: self.sha256.as_deref(),
            started: self.started.to_rfc3339(),
            finished: self.finished.to_rfc3339(),
            duration_ms: self.duration_ms,
            schedule: self.schedule.as_deref(),
            host: &self.host,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// `backupd: <name> failed on <host>` (or `succeeded`, `succeeded with warnings`, `was
    /// cancelled`).
    pub fn title(&self) -> String {
        let what = match self.status {
            JobStatus::Success => "succeeded",
            JobStatus::Warning => "succeeded with warnings",
            JobStatus::OffsiteFailure => "completed with offsite failure",
            JobStatus::Failure => "failed",
            JobStatus::Cancelled => "was cancelled",
        };
        format!("backupd: {} {what} on {}", self.name, self.host)
    }

    /// A few lines for people: the error, or what was written.
    pub fn summary(&self) -> String {
        // A path or an error may hold a newline, which would start a line of its own.
        let source = proto::escape_controls(&self.source);
        let mut text = format!("Backup {} of {source}", self.name);
        if let Some(error) = &self.error {
            text.push_str(&format!(": {}", proto::escape_controls(error)));
        }
        // An offsite failure has both: the error, and the archive that stays here.
        if self.published() {
            text.push_str(&format!(
                "\nArchive: {} ({})",
                proto::escape_controls(&self.archive),
                proto::size::human_size(self.size_bytes)
            ));
            if let Some(sha256) = &self.sha256 {
                text.push_str(&format!("\nSHA-256: {sha256}"));
            }
        }
        text.push_str(&format!(
            "\nStarted: {}\nFinished: {}",
            self.started.to_rfc3339(),
            self.finished.to_rfc3339()
        ));
        text
    }
}

/// A job's outcome as webhooks receive it: the archive and its size only when one was
/// published; times in RFC 3339, local time.
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    pub name: &'a str,
    pub status: JobStatus,
    pub error: Option<&'a str>,
    pub source: &'a str,
    pub archive: Option<&'a str>,
    pub size_bytes: Option<u64>,
    pub sha256: Option<&'a str>,
    pub started: String,
    pub finished: String,
    pub duration_ms: u64,
    pub schedule: Option<&'a str>,
    pub host: &'a str,
    /// The daemon's version.
    pub version: &'static str,
}

/// The machine's name, as notifications say it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_keeps_a_path_s_newline_on_its_line() {
        let now = chrono::Local::now().fixed_offset();
        let outcome = JobOutcome {
            job: 3,
            name: "src".into(),
            schedule: None,
            source: "/srv/x\n[26/11/2026 23:59] Backup verified OK".into(),
            archive: String::new(),
            manifest: String::new(),
            status: JobStatus::Failure,
            error: Some("Backup failed\nforged".into()),
            published: false,
            size_bytes: 0,
            sha256: None,
            started: now,
            finished: now,
            duration_ms: 0,
            host: "h".into(),
            log_lines: Vec::new(),
        };
        let summary = outcome.summary();
        assert_eq!(
            summary.lines().next(),
            Some(
                "Backup src of /srv/x\\n[26/11/2026 23:59] Backup verified OK: Backup failed\\nforged"
            )
        );
    }
}
