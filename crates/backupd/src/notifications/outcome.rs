//! What a notification says about a job: its facts after the run, as the webhook's JSON body
//! and the text of emails, ntfy messages and healthchecks failure pings.

use proto::response::SourceReport;
use serde::Serialize;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Success,
    Failure,
    Cancelled,
}

/// A job's outcome, as webhooks receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobOutcome {
    pub name: String,
    pub status: Status,
    pub error: Option<String>,
    pub source: String,
    pub archive: Option<String>,
    pub size_bytes: Option<u64>,
    pub sha256: Option<String>,
    /// RFC 3339, local time.
    pub started: String,
    pub finished: String,
    pub host: String,
    /// The daemon's version.
    pub version: String,
}

impl JobOutcome {
    pub fn new(
        report: &SourceReport,
        started: chrono::DateTime<chrono::FixedOffset>,
        host: &str,
    ) -> Self {
        let status = if report.ok {
            Status::Success
        } else if report.cancelled {
            Status::Cancelled
        } else {
            Status::Failure
        };
        Self {
            name: report.name.clone(),
            status,
            error: report.error.clone(),
            source: report.source.clone(),
            archive: report.ok.then(|| report.archive.clone()),
            size_bytes: report.ok.then_some(report.size_bytes),
            sha256: report.checksum_sha256.clone().filter(|_| report.ok),
            started: started.to_rfc3339(),
            finished: chrono::Local::now().fixed_offset().to_rfc3339(),
            host: host.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.status == Status::Success
    }

    /// `backupd: <name> failed on <host>` (or `succeeded`, `was cancelled`).
    pub fn title(&self) -> String {
        let what = match self.status {
            Status::Success => "succeeded",
            Status::Failure => "failed",
            Status::Cancelled => "was cancelled",
        };
        format!("backupd: {} {what} on {}", self.name, self.host)
    }

    /// A few lines for people: the error, or what was written.
    pub fn summary(&self) -> String {
        let mut text = format!("Backup {} of {}", self.name, self.source);
        match (&self.error, &self.archive) {
            (Some(error), _) => text.push_str(&format!(": {error}")),
            (None, Some(archive)) => {
                text.push_str(&format!("\nArchive: {archive}"));
                if let Some(size) = self.size_bytes {
                    text.push_str(&format!(" ({})", proto::size::human_size(size)));
                }
                if let Some(sha256) = &self.sha256 {
                    text.push_str(&format!("\nSHA-256: {sha256}"));
                }
            }
            (None, None) => {}
        }
        text.push_str(&format!(
            "\nStarted: {}\nFinished: {}",
            self.started, self.finished
        ));
        text
    }
}

/// The machine's name, as notifications say it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
