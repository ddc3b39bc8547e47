//! What a job came to, in one place: the facts hooks, notifications and metrics report (name,
//! archive, manifest, status, error, size, checksum, duration and the job's last log lines).
//! The runner builds one [`JobOutcome`] after each job of a real run; readers never look at the
//! report or the registry themselves.

use crate::jobs::Job;
use proto::response::SourceReport;
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
    Failure,
    /// Cancelled by `cancel` or by the daemon stopping.
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Success => "success",
            JobStatus::Warning => "warning",
            JobStatus::Failure => "failure",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the archive was published and counts as a backup.
    pub fn is_ok(self) -> bool {
        matches!(self, JobStatus::Success | JobStatus::Warning)
    }
}

/// The facts of one finished job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    pub size_bytes: u64,
    pub sha256: Option<String>,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub duration_ms: u64,
    /// The job's last lines in the daemon's log, oldest first (bounded).
    pub log_lines: Vec<String>,
}

impl JobOutcome {
    /// The outcome of `job` as its `report` tells it, finished now.
    pub fn new(job: &Job, report: &SourceReport, log_lines: Vec<String>) -> Self {
        let finished = chrono::Local::now().fixed_offset();
        let status = if report.ok && report.skipped > 0 {
            JobStatus::Warning
        } else if report.ok {
            JobStatus::Success
        } else if report.cancelled {
            JobStatus::Cancelled
        } else {
            JobStatus::Failure
        };
        let elapsed = (finished - job.started).num_milliseconds();
        Self {
            job: job.id,
            name: job.name.clone(),
            schedule: job.schedule.clone(),
            source: report.source.clone(),
            archive: report.archive.clone(),
            manifest: report.manifest.clone(),
            status,
            error: report.error.clone(),
            size_bytes: if report.ok { report.size_bytes } else { 0 },
            sha256: report.checksum_sha256.clone(),
            started: job.started,
            finished,
            duration_ms: u64::try_from(elapsed).unwrap_or(0),
            log_lines,
        }
    }

    /// The facts as `BACKUPD_*` environment variables, for hooks (empty where unknown).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BACKUPD_NAME", self.name.clone()),
            ("BACKUPD_ARCHIVE", self.archive.clone()),
            ("BACKUPD_MANIFEST", self.manifest.clone()),
            ("BACKUPD_STATUS", self.status.as_str().to_owned()),
            ("BACKUPD_ERROR", self.error.clone().unwrap_or_default()),
            ("BACKUPD_SIZE_BYTES", self.size_bytes.to_string()),
            ("BACKUPD_SHA256", self.sha256.clone().unwrap_or_default()),
        ]
    }
}
