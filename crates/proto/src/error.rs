//! The closed, documented set of error codes a response can carry.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Machine-readable error code of a failed request (`error.code` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request line exceeded [`crate::MAX_LINE_BYTES`].
    RequestTooLarge,
    /// The request line was not valid UTF-8.
    InvalidUtf8,
    /// The request line was not valid JSON.
    InvalidJson,
    /// The request was JSON but not an object, had a key twice, or `cmd` was not a string.
    InvalidRequest,
    /// The request object had no `cmd`.
    MissingCommand,
    /// `cmd` named no known command.
    UnknownCommand,
    /// The command's arguments were missing, unknown or of the wrong type.
    InvalidArguments,
    /// A schedule spec did not follow `path;HH:MM;name`.
    MalformedSchedule,
    /// No schedule at the given index (or with the given name).
    ScheduleNotFound,
    /// A schedule with that name exists already.
    ScheduleExists,
    /// The schedule is running now; it is not started twice.
    ScheduleBusy,
    /// A source directory does not exist or is not a directory.
    SourceNotFound,
    /// The backups directory does not exist.
    BackupsDirMissing,
    /// The destination folder cannot be created or written; nothing was written.
    DestinationNotWritable,
    /// A one-off run's archives would be named after its folder, but that name already holds
    /// the backups of another folder in the destination (rotation would delete them); nothing
    /// was written.
    NameInUse,
    /// At least one source of a run failed; `data` holds the full report.
    BackupFailed,
    /// No archive at the given path or name.
    ArchiveNotFound,
    /// At least one archive failed verification; `data` holds the full report.
    VerifyFailed,
    /// A restore target already holds entries the restore would write (and `overwrite` was
    /// not asked); nothing was written.
    TargetNotEmpty,
    /// The archive does not match its manifest, or has none; nothing was restored.
    ArchiveInvalid,
    /// Some entries of the archive were refused (unsafe paths); `data` holds the report.
    RestoreRefused,
    /// No running job has the given id (or name).
    JobNotFound,
    /// The daemon could not read or write its files.
    Io,
    /// The connecting user is not the daemon's user (nor root).
    PermissionDenied,
    /// The daemon is shutting down and takes no new work.
    ShuttingDown,
    /// Anything else that went wrong inside the daemon.
    Internal,
    /// A request line was started but not finished within the daemon's line timeout; the
    /// connection is closed.
    RequestTimeout,
    /// The daemon serves as many connections as it allows (for this user, or in all); the
    /// connection is closed. Try again later.
    TooManyConnections,
    /// `backupctl start` found a daemon answering at the socket. Only backupctl's `--json`
    /// output carries it; the daemon never sends it.
    AlreadyRunning,
}

impl ErrorCode {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestTooLarge => "request_too_large",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson => "invalid_json",
            Self::InvalidRequest => "invalid_request",
            Self::MissingCommand => "missing_command",
            Self::UnknownCommand => "unknown_command",
            Self::InvalidArguments => "invalid_arguments",
            Self::MalformedSchedule => "malformed_schedule",
            Self::ScheduleNotFound => "schedule_not_found",
            Self::ScheduleExists => "schedule_exists",
            Self::ScheduleBusy => "schedule_busy",
            Self::SourceNotFound => "source_not_found",
            Self::BackupsDirMissing => "backups_dir_missing",
            Self::DestinationNotWritable => "destination_not_writable",
            Self::NameInUse => "name_in_use",
            Self::BackupFailed => "backup_failed",
            Self::ArchiveNotFound => "archive_not_found",
            Self::VerifyFailed => "verify_failed",
            Self::TargetNotEmpty => "target_not_empty",
            Self::ArchiveInvalid => "archive_invalid",
            Self::RestoreRefused => "restore_refused",
            Self::JobNotFound => "job_not_found",
            Self::Io => "io",
            Self::PermissionDenied => "permission_denied",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
            Self::RequestTimeout => "request_timeout",
            Self::TooManyConnections => "too_many_connections",
            Self::AlreadyRunning => "already_running",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in [
            ErrorCode::RequestTooLarge,
            ErrorCode::InvalidUtf8,
            ErrorCode::InvalidJson,
            ErrorCode::InvalidRequest,
            ErrorCode::MissingCommand,
            ErrorCode::UnknownCommand,
            ErrorCode::InvalidArguments,
            ErrorCode::MalformedSchedule,
            ErrorCode::ScheduleNotFound,
            ErrorCode::ScheduleExists,
            ErrorCode::ScheduleBusy,
            ErrorCode::SourceNotFound,
            ErrorCode::BackupsDirMissing,
            ErrorCode::DestinationNotWritable,
            ErrorCode::NameInUse,
            ErrorCode::BackupFailed,
            ErrorCode::ArchiveNotFound,
            ErrorCode::VerifyFailed,
            ErrorCode::TargetNotEmpty,
            ErrorCode::ArchiveInvalid,
            ErrorCode::RestoreRefused,
            ErrorCode::JobNotFound,
            ErrorCode::Io,
            ErrorCode::PermissionDenied,
            ErrorCode::ShuttingDown,
            ErrorCode::Internal,
            ErrorCode::RequestTimeout,
            ErrorCode::TooManyConnections,
            ErrorCode::AlreadyRunning,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
