//! Responses, `{"id": …, "ok": true, "data": …}` or `{"id": …, "ok": false, "error": {"code",
//! "message"}}`, and the typed payloads that travel in `data`.

use crate::error::ErrorCode;
use crate::job::Codec;
use crate::request::Command;
use crate::schedule::{RunRecord, Schedule, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// The final answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's `id`, or `null` when it had none or could not be read.
    #[serde(default)]
    pub id: Option<Value>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// What went wrong: a stable code for scripts and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl Response {
    /// A success carrying `data` (anything serializable; `()` becomes `null`).
    pub fn success(id: Option<Value>, data: impl Serialize) -> Self {
        let data = serde_json::to_value(data).unwrap_or(Value::Null);
        Self {
            id,
            ok: true,
            data: Some(data),
            error: None,
        }
    }

    pub fn failure(id: Option<Value>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            ok: false,
            data: None,
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }

    /// A failure that still carries a result, such as the report of a run in which some
    /// sources failed.
    pub fn failure_with_data(
        id: Option<Value>,
        code: ErrorCode,
        message: impl Into<String>,
        data: impl Serialize,
    ) -> Self {
        Self {
            data: serde_json::to_value(data).ok(),
            ..Self::failure(id, code, message)
        }
    }

    /// The response as one line of JSON, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a response always serializes");
        line.push('\n');
        line
    }

    /// The line of a success carrying `data`, serialized straight from its type (no
    /// `Value` tree on the way): the same JSON as `Response::success(id, data).to_line()`.
    pub fn success_line(id: Option<Value>, data: &impl Serialize) -> String {
        #[derive(Serialize)]
        struct Success<'a, T> {
            id: Option<Value>,
            ok: bool,
            data: &'a T,
        }
        let success = Success { id, ok: true, data };
        match serde_json::to_string(&success) {
            Ok(mut line) => {
                line.push('\n');
                line
            }
            Err(err) => Self::failure(
                success.id,
                ErrorCode::Internal,
                format!("internal error: can't encode the answer: {err}"),
            )
            .to_line(),
        }
    }

    /// `data` on success, the error otherwise (a failure without a body is `internal`).
    pub fn into_result(self) -> Result<Value, ErrorBody> {
        if self.ok {
            Ok(self.data.unwrap_or(Value::Null))
        } else {
            Err(self.error.unwrap_or_else(|| ErrorBody {
                code: ErrorCode::Internal,
                message: "the daemon reported a failure without a reason".to_owned(),
            }))
        }
    }
}

/// The typed `data` of a successful answer (or of a failure that still reports, such as a run
/// in which some sources failed): one variant per kind of command. The JSON carries no tag,
/// so a client reads it with [`Reply::decode`] for the command it sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Hello(Hello),
    Schedules(ScheduleList),
    /// `create` and `delete`; boxed, a schedule being much larger than the other replies.
    ScheduleChanged(Box<ScheduleChanged>),
    /// `stop`: what to wait for until the daemon is gone.
    Stopping(StopInfo),
    Backups(BackupList),
    Prune(PruneReport),
    Verify(VerifyList),
    Restore(RestoreSummary),
    Run(RunReport),
    /// `status`; boxed, being much larger than the other replies.
    Status(Box<StatusInfo>),
    Jobs(JobList),
    Cancelled(CancelReport),
    /// `watch`, once the daemon ends the stream.
    WatchEnded(WatchEnd),
    /// `log_level`: the level now in force.
    LogLevel(LogLevelSet),
    /// `ls`: an archive's entries.
    Listing(ArchiveListing),
    /// `sync`: what was uploaded to the remote.
    Synced(SyncReport),
}

impl Reply {
    /// Reads the `data` of the answer to `command`.
    pub fn decode(command: &Command, data: Value) -> serde_json::Result<Self> {
        use serde_json::from_value;
        Ok(match command {
            Command::Hello {} => Reply::Hello(from_value(data)?),
            Command::Create(_) | Command::Delete { .. } => {
                Reply::ScheduleChanged(from_value(data)?)
            }
            Command::List {} => Reply::Schedules(from_value(data)?),
            Command::Stop {} => Reply::Stopping(from_value(data)?),
            Command::Backups { .. } => Reply::Backups(from_value(data)?),
            Command::Prune(_) => Reply::Prune(from_value(data)?),
            Command::Verify(_) => Reply::Verify(from_value(data)?),
            Command::Restore(_) => Reply::Restore(from_value(data)?),
            Command::Run(_) => Reply::Run(from_value(data)?),
            Command::Status {} => Reply::Status(from_value(data)?),
            Command::Jobs {} => Reply::Jobs(from_value(data)?),
            Command::Cancel { .. } => Reply::Cancelled(from_value(data)?),
            Command::Watch {} => Reply::WatchEnded(from_value(data)?),
            Command::LogLevel { .. } => Reply::LogLevel(from_value(data)?),
            Command::Ls(_) => Reply::Listing(from_value(data)?),
            Command::Sync(_) => Reply::Synced(from_value(data)?),
        })
    }
}

/// `data` of `ls`: the archive's entries in archive order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveListing {
    pub archive: String,
    pub entries: Vec<ArchiveEntry>,
    /// Entries after those listed, left out to bound the answer (its entries, and the bytes
    /// of their paths and links). Absent from an older daemon's answer, which said it only in
    /// its log.
    #[serde(default)]
    pub not_listed: u64,
}

/// One entry of an archive, as its tar header says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    /// `file`, `dir`, `symlink`, `hardlink`, `fifo`, `device` or `other`.
    pub kind: String,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Content bytes (0 but for files).
    pub size: u64,
    /// Seconds since the Unix epoch; negative before it.
    pub mtime: i64,
    pub path: String,
    /// Where a symlink or hard link points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Which kind of `device`. A field beside `kind` rather than kinds of their own: a client
    /// or script that knows `device` reads it still, and an older daemon's answer lacks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceKind>,
}

/// A device node's kind, as tar's header types `3` and `4` tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Char,
    Block,
}

/// `data` of `log_level`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevelSet {
    pub level: String,
}

/// `data` of `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub daemon_version: String,
    pub protocol_version: u32,
}

/// `data` of `stop`: the daemon answers, then shuts down; a client that wants to know when it
/// is gone waits for the process to end and, if the daemon removes it, for the socket file to
/// go. A socket passed by a service manager stays: its file never disappears.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopInfo {
    /// The daemon's process id.
    pub pid: u32,
    /// Whether the daemon removes its socket file on the way out.
    pub removes_socket: bool,
}

/// One stored schedule, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    /// Position in the list, from 0; what `delete` takes.
    pub index: usize,
    /// The one-line form: `path;HH:MM;name` for a one-shot.
    pub display: String,
    /// When it fires next, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Timestamp>,
    /// Shared with the daemon's own copy: a `list` of 10,000 schedules copies none of them.
    #[serde(flatten)]
    pub schedule: Arc<Schedule>,
}

/// `data` of `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleInfo>,
}

/// `data` of `create` and `delete`: the schedule that was added, replaced or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleChanged {
    pub schedule: ScheduleInfo,
    /// `create` with `replace` found a schedule of that name and replaced it (absent when it
    /// created one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaced: bool,
}

/// `data` of `backups`: archive file names in the backups directory, sorted; with `long`,
/// also grouped by backup name, newest first, with details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupList {
    pub directory: String,
    pub backups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<BackupGroup>>,
}

/// The archives of one backup name, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupGroup {
    pub name: String,
    pub archives: Vec<BackupEntry>,
}

/// One archive, as `backups --long` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupEntry {
    pub file: String,
    /// `YYYYMMDD_HHMMSS`, from the file name.
    pub created: String,
    pub size_bytes: u64,
    pub size_human: String,
    pub compression: Codec,
    /// From the manifest; absent when it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// The last verification, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyMark>,
    /// Encrypted with age (`.age`, or the manifest says so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// The public keys it is encrypted to, from the manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// A remote copy whose manifest is not there (an upload cut short): not a backup yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
    /// Encrypted to a passphrase rather than to keys, from the manifest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passphrase: bool,
}

/// What a verification found, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyStatus {
    Ok,
    /// The bytes are not what the manifest recorded (hash or size).
    ChecksumMismatch,
    /// The compressed or tar stream ends early.
    Truncated,
    /// The stream is corrupt in some other way.
    Unreadable,
    /// No manifest beside the archive.
    ManifestMissing,
    /// A manifest exists but is not valid.
    ManifestInvalid,
}

impl VerifyStatus {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ChecksumMismatch => "checksum_mismatch",
            Self::Truncated => "truncated",
            Self::Unreadable => "unreadable",
            Self::ManifestMissing => "manifest_missing",
            Self::ManifestInvalid => "manifest_invalid",
        }
    }
}

/// In words for people: `OK`, `checksum mismatch`, `manifest missing`, …
impl std::fmt::Display for VerifyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok => f.write_str("OK"),
            other => f.write_str(&other.as_str().replace('_', " ")),
        }
    }
}

/// The outcome of an archive's last verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyMark {
    pub status: VerifyStatus,
    pub checked: Timestamp,
}

/// `data` of `prune`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub destination: String,
    /// Archive file names deleted (or, in a dry run, that would be).
    pub deleted: Vec<String>,
    /// Deletions that failed, with the reason.
    pub failed: Vec<String>,
    pub kept: usize,
    /// `<file>: kept (locked until …)`: archives an S3 object lock keeps (remotes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locked: Vec<String>,
}

/// `data` of `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyList {
    pub archives: Vec<ArchiveCheck>,
    pub ok: usize,
    pub failed: usize,
}

/// One archive's verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveCheck {
    pub archive: String,
    pub status: VerifyStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub entries: u64,
}

/// `data` of `restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSummary {
    pub archive: String,
    pub to: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// `<entry>: <reason>` for each entry not restored because it was unsafe: the first 100,
    /// each part cut at 4096 bytes.
    pub refused: Vec<String>,
    /// Refused entries after those in `refused`, counted only. Absent from an older
    /// daemon's answer, which listed them all.
    #[serde(default)]
    pub refused_not_listed: u64,
}

/// `data` of `run`: one entry per source, then the summary the original backup script logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub dry_run: bool,
    pub destination: String,
    /// The rotation's `retention_days`, defaults filled in (absent from older daemons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    pub sources: Vec<SourceReport>,
    pub total: usize,
    pub successful: usize,
    pub failed: usize,
    /// Older archives deleted by rotation (or, in a dry run, that would be).
    #[serde(default)]
    pub old_backups_deleted: usize,
    /// Bytes of the archives created (0 in a dry run).
    pub total_size_bytes: u64,
    pub total_size_human: String,
    /// Sources that succeeded but left entries out (`skipped`): the run completed with
    /// warnings.
    #[serde(default)]
    pub with_warnings: usize,
    /// Offsite uploads that failed after their retries, and offsite steps that failed
    /// (`SourceReport::offsite_errors`): the run completed with offsite failure (the local
    /// archives stay).
    #[serde(default, skip_serializing_if = "is_zero_count")]
    pub offsite_failed: usize,
}

/// The original backup script's dry-run header, after `[DRY-RUN MODE] …`: its sources as
/// Python printed its list of paths, the destination and the retention.
pub fn dry_run_header<'a>(
    sources: impl IntoIterator<Item = &'a str>,
    destination: &str,
    retention_days: Option<u32>,
) -> Vec<String> {
    let sources: Vec<String> = sources
        .into_iter()
        .map(|source| format!("PosixPath({})", python_str_repr(source)))
        .collect();
    let mut lines = vec![
        format!("Backup sources: [{}]", sources.join(", ")),
        format!("Destination: {destination}"),
    ];
    lines.extend(retention_days.map(|days| format!("Retention: {days} days")));
    lines
}

/// A string as Python's `repr` writes it: single quotes unless it holds one and no double.
fn python_str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

impl RunReport {
    /// Entries left out of the run's archives for a reason other than vanishing.
    pub fn skipped(&self) -> u64 {
        self.sources
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.skipped)
            .sum()
    }

    /// The summary's last line when the run left entries out:
    /// `Completed with warnings: 2 entries skipped`.
    pub fn warnings_summary(&self) -> Option<String> {
        let skipped = self.skipped();
        let entries = if skipped == 1 { "entry" } else { "entries" };
        (self.with_warnings > 0)
            .then(|| format!("Completed with warnings: {skipped} {entries} skipped"))
    }

    /// The summary's line when offsite uploads or steps failed:
    /// `Completed with offsite failure: 1 upload failed, 1 remote rotation failed`.
    pub fn offsite_summary(&self) -> Option<String> {
        if self.offsite_failed == 0 {
            return None;
        }
        let steps: Vec<OffsiteStep> = self
            .sources
            .iter()
            .flat_map(|s| &s.offsite_errors)
            .map(|e| e.step)
            .collect();
        let count = |step| steps.iter().filter(|s| **s == step).count();
        let uploads = self.offsite_failed.saturating_sub(steps.len());
        let parts: Vec<String> = [
            (uploads, "upload failed", "uploads failed"),
            (
                count(OffsiteStep::CatchUp),
                "catch-up listing failed",
                "catch-up listings failed",
            ),
            (
                count(OffsiteStep::Rotation),
                "remote rotation failed",
                "remote rotations failed",
            ),
        ]
        .into_iter()
        .filter(|(n, _, _)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if n == 1 { one } else { many }))
        .collect();
        Some(format!(
            "Completed with offsite failure: {}",
            parts.join(", ")
        ))
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero_count(n: &usize) -> bool {
    *n == 0
}

/// One upload of an archive and its manifest to an offsite remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsiteUpload {
    /// The remote as the job names it (`NAME` or `s3://…`).
    pub remote: String,
    /// Where the archive went: `s3://bucket/prefix/archive`.
    pub url: String,
    pub ok: bool,
    /// Bytes uploaded (0 when the remote had the archive already).
    pub bytes: u64,
    pub duration_ms: u64,
    /// Whole-upload attempts beyond the first (each request is also retried on its own).
    #[serde(default)]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The remote had this archive with its manifest already; nothing was sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_there: bool,
}

/// An offsite step of a run other than an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsiteStep {
    /// Listing what the remote lacks of the name, to upload what earlier runs could not.
    CatchUp,
    /// Rotating the copies of the name on the remote.
    Rotation,
}

/// An offsite step that failed: its uploads, or its rotation, never happened. Counts as an
/// offsite failure, as a failed upload does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsiteError {
    /// The remote as the job names it (`NAME` or `s3://…`).
    pub remote: String,
    pub step: OffsiteStep,
    pub error: String,
}

impl OffsiteUpload {
    /// Bytes per second, for reports.
    pub fn rate(&self) -> u64 {
        self.bytes.saturating_mul(1000) / self.duration_ms.max(1)
    }
}

/// The outcome of one source in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceReport {
    pub source: String,
    pub name: String,
    pub ok: bool,
    /// The archive written (or, in a dry run, that would be written); absent (empty) when none
    /// was.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub archive: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manifest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default)]
    pub size_human: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_sha256: Option<String>,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub duration_ms: u64,
    /// Files that changed, vanished or could not be read; the backup still succeeded.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Entries among `warnings` left out for a reason other than vanishing (unreadable,
    /// changed type, a failed read): the source completed with warnings.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// Older archives of this name deleted by rotation (in a dry run: that would be).
    #[serde(default)]
    pub deleted: Vec<String>,
    /// Whether the archive verified, when the job asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// The source failed because its job was cancelled (`cancel`, or the daemon stopping).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    /// The offsite uploads after the local write (this archive's, and any an earlier run left
    /// missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsite: Vec<OffsiteUpload>,
    /// The offsite steps besides uploads that failed (the catch-up listing, the remote
    /// rotation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsite_errors: Vec<OffsiteError>,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a job slot (`backupd --max-jobs`).
    Waiting,
    /// Writing its archive.
    Running,
    /// Cancelled; removing its partial file.
    Cancelling,
    /// Its archive written and kept: verifying, rotating, uploading or notifying after it. A
    /// `cancel` now stops what can stop of that (a verify, an upload, a notification), never the
    /// archive.
    Finishing,
}

/// A running job: one source of a run or of a schedule's run, being written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// Small and increasing, never reused while the daemon runs; what `cancel` takes.
    pub id: u64,
    /// The backup name (of its archives).
    pub name: String,
    /// The schedule it runs for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    pub source: String,
    /// The archive being written, once the job has a slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    pub state: JobState,
    pub started: Timestamp,
    pub files: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// `data` of `jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobInfo>,
}

/// `data` of `cancel`: the jobs told to stop. Each ends soon after, its partial file removed,
/// and its run answers `backup_failed` saying it was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReport {
    pub cancelled: Vec<JobInfo>,
}

/// `data` of `watch`, the one answer it gets: the daemon ended the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEnd {
    pub reason: WatchEndReason,
}

/// Why a watch ended on the daemon's side (a client ends it by closing the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchEndReason {
    /// The daemon is shutting down.
    Stopping,
}

/// `data` of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub daemon_version: String,
    pub protocol_version: u32,
    pub pid: u32,
    pub started: Timestamp,
    pub uptime_secs: u64,
    pub home: String,
    /// The socket's path; absent for an unnamed socket passed by a service manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    pub jobs: Vec<JobInfo>,
    /// The schedule due first, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<NextRun>,
    pub schedules: Vec<ScheduleStatus>,
    /// The home's backups folder, then each other schedule destination.
    pub destinations: Vec<DestinationSpace>,
}

/// The next due run of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextRun {
    pub name: String,
    pub at: Timestamp,
}

/// A schedule as `status` shows it: when next, whether running, how the last run went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleStatus {
    pub name: String,
    pub display: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Timestamp>,
    pub running: bool,
    /// The last outcome; a failure carries its error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
}

/// Free space where archives go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationSpace {
    pub path: String,
    /// `false` for a folder that does not exist (yet: a run creates it).
    pub exists: bool,
    /// Bytes available to the daemon's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Why the space could not be read, for a folder that exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `data` of `sync`: the uploads to one remote, each as the offsite step reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    pub remote: String,
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// One per local archive the remote lacked, oldest first.
    pub uploads: Vec<OffsiteUpload>,
    /// Local archives the remote had already.
    pub already_there: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_dry_run_header_is_the_original_scripts() {
        assert_eq!(
            dry_run_header(["/home/user/projects"], "/home/user/backups", Some(7)),
            [
                "Backup sources: [PosixPath('/home/user/projects')]",
                "Destination: /home/user/backups",
                "Retention: 7 days",
            ]
        );
        assert_eq!(
            dry_run_header(["/a", "/it's", "/q'\"", "/b\\"], "/d", None)[0],
            "Backup sources: [PosixPath('/a'), PosixPath(\"/it's\"), \
             PosixPath('/q\\'\"'), PosixPath('/b\\\\')]"
        );
    }

    #[test]
    fn the_offsite_summary_tells_failed_uploads_and_failed_steps_apart() {
        let report = |offsite_failed: usize, offsite_errors: Value| -> RunReport {
            serde_json::from_value(json!({
                "dry_run": false, "destination": "/b", "total": 1, "successful": 1,
                "failed": 0, "total_size_bytes": 0, "total_size_human": "0 B",
                "offsite_failed": offsite_failed,
                "sources": [{"source": "/s", "name": "s", "ok": true,
                             "offsite_errors": offsite_errors}],
            }))
            .unwrap()
        };
        assert_eq!(report(0, json!([])).offsite_summary(), None);
        assert_eq!(
            report(1, json!([])).offsite_summary().as_deref(),
            Some("Completed with offsite failure: 1 upload failed")
        );
        let steps = json!([
            {"remote": "m", "step": "catch_up", "error": "x"},
            {"remote": "m", "step": "rotation", "error": "x"},
        ]);
        assert_eq!(
            report(4, steps).offsite_summary().as_deref(),
            Some(
                "Completed with offsite failure: 2 uploads failed, 1 catch-up listing failed, \
                 1 remote rotation failed"
            )
        );
    }

    #[test]
    fn replies_decode_by_the_command_sent_and_keep_their_json() {
        let hello = Reply::Hello(Hello {
            daemon_version: "1".into(),
            protocol_version: 1,
        });
        let data = serde_json::to_value(&hello).unwrap();
        assert_eq!(data, json!({"daemon_version": "1", "protocol_version": 1}));
        assert_eq!(
            Reply::decode(&Command::Hello {}, data.clone()).unwrap(),
            hello
        );
        // The same data as the answer to another command is an error, not a guess.
        assert!(Reply::decode(&Command::List {}, data).is_err());
        let stopping = Reply::Stopping(StopInfo {
            pid: 42,
            removes_socket: false,
        });
        let data = serde_json::to_value(&stopping).unwrap();
        assert_eq!(data, json!({"pid": 42, "removes_socket": false}));
        assert_eq!(Reply::decode(&Command::Stop {}, data).unwrap(), stopping);
        // The `null` of daemons before socket activation says too little to wait on.
        assert!(Reply::decode(&Command::Stop {}, Value::Null).is_err());
        let mark = json!({"status": "checksum_mismatch", "checked": "2026-11-24T16:00:00+01:00"});
        let mark: VerifyMark = serde_json::from_value(mark).unwrap();
        assert_eq!(mark.status, VerifyStatus::ChecksumMismatch);
        assert_eq!(mark.status.to_string(), "checksum mismatch");
        assert_eq!(VerifyStatus::Ok.to_string(), "OK");
    }

    #[test]
    fn a_device_says_its_kind_beside_kind_and_older_answers_still_read() {
        let older = json!({"kind": "device", "mode": 420, "size": 0, "mtime": 0, "path": "d/n"});
        let entry: ArchiveEntry = serde_json::from_value(older.clone()).unwrap();
        assert_eq!(entry.device, None);
        assert_eq!(serde_json::to_value(&entry).unwrap(), older);
        let block = ArchiveEntry {
            device: Some(DeviceKind::Block),
            ..entry
        };
        let newer = serde_json::to_value(&block).unwrap();
        assert_eq!(
            (&newer["kind"], &newer["device"]),
            (&json!("device"), &json!("block"))
        );
        assert_eq!(
            serde_json::from_value::<ArchiveEntry>(newer).unwrap(),
            block
        );
    }

    #[test]
    fn a_listing_says_what_it_left_out_and_an_older_daemons_still_reads() {
        let older = json!({"archive": "/b/a.tar", "entries": []});
        let listing: ArchiveListing = serde_json::from_value(older).unwrap();
        assert_eq!(listing.not_listed, 0);
        assert_eq!(
            serde_json::to_value(&listing).unwrap(),
            json!({"archive": "/b/a.tar", "entries": [], "not_listed": 0})
        );
    }

    #[test]
    fn a_restore_says_how_many_refusals_it_left_out_and_an_older_daemons_still_reads() {
        let older = json!({"archive": "/b/a.tar", "to": "/r", "files": 1, "dirs": 0,
            "symlinks": 0, "bytes": 2, "refused": ["../x: path contains '..'"]});
        let summary: RestoreSummary = serde_json::from_value(older.clone()).unwrap();
        assert_eq!(summary.refused_not_listed, 0);
        let mut newer = older;
        newer["refused_not_listed"] = json!(0);
        assert_eq!(serde_json::to_value(&summary).unwrap(), newer);
    }

    #[test]
    fn a_success_line_is_the_success_response_serialized_directly() {
        let data = ScheduleList {
            schedules: Vec::new(),
        };
        let line = Response::success_line(Some(json!("x")), &data);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let back: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(back, Response::success(Some(json!("x")), &data));
    }

    #[test]
    fn success_and_failure_have_the_documented_shape() {
        let ok = Response::success(Some(json!(1)), json!({"a": 1}));
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            json!({"id": 1, "ok": true, "data": {"a": 1}})
        );
        let err = Response::failure(None, ErrorCode::UnknownCommand, "nope");
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"id": null, "ok": false, "error": {"code": "unknown_command", "message": "nope"}})
        );
        let line = err.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        let back: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(
            back.into_result().unwrap_err().code,
            ErrorCode::UnknownCommand
        );
    }
}
