//! How a `backupctl` invocation can fail, and the exit code of each kind.

use proto::{ErrorBody, ErrorCode, Response};
use std::process::ExitCode;

/// A failed invocation.
#[derive(Debug)]
pub enum Failure {
    /// Bad command line or configuration: exit 2.
    Usage(String),
    /// The daemon answered with an error (and logged it itself): exit 1.
    Refused(ErrorBody),
    /// Something failed on this side (start-up of the daemon, a broken answer): exit 1.
    Local(String),
    /// A request the daemon would refuse, caught by the shared rules before sending: exit 1.
    Invalid(String),
    /// `start` found a daemon answering already: exit 1.
    AlreadyRunning(String),
    /// This user may not open the socket (EACCES, EPERM): exit 1, as the daemon's own
    /// `permission_denied` is; a daemon may be running there.
    Denied(String),
    /// No daemon answers at the socket: exit 3.
    Unreachable(String),
    /// A run succeeded but left entries out (the daemon logged them): exit 4.
    Warnings(String),
    /// A run wrote its archives but an offsite upload failed (the local archives stay): exit 5.
    OffsiteFailed(String),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Refused(_)
            | Self::Local(_)
            | Self::Invalid(_)
            | Self::AlreadyRunning(_)
            | Self::Denied(_) => 1,
            Self::Usage(_) => 2,
            Self::Unreachable(_) => 3,
            Self::Warnings(_) => 4,
            Self::OffsiteFailed(_) => 5,
        })
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Refused(body) => &body.message,
            Self::Usage(m)
            | Self::Local(m)
            | Self::Invalid(m)
            | Self::AlreadyRunning(m)
            | Self::Denied(m)
            | Self::Unreachable(m)
            | Self::Warnings(m)
            | Self::OffsiteFailed(m) => m,
        }
    }

    /// The line `--json` prints for a failure (exit 1) that no answer of the daemon's was
    /// printed for, shaped as the daemon's answers: exit 1 always comes with one.
    pub fn json_line(&self) -> Option<String> {
        let code = match self {
            // What the daemon answers to the same request.
            Self::Invalid(_) => ErrorCode::InvalidArguments,
            Self::AlreadyRunning(_) => ErrorCode::AlreadyRunning,
            Self::Denied(_) => ErrorCode::PermissionDenied,
            // The daemon did not start, or the exchange with it broke.
            Self::Local(_) => ErrorCode::Internal,
            Self::Refused(_)
            | Self::Usage(_)
            | Self::Unreachable(_)
            | Self::Warnings(_)
            | Self::OffsiteFailed(_) => return None,
        };
        Some(Response::failure(None, code, self.message()).to_line())
    }

    /// Whether only this side knows of the failure (the daemon logs what it refuses).
    pub fn is_client_side(&self) -> bool {
        !matches!(
            self,
            Self::Refused(_) | Self::Warnings(_) | Self::OffsiteFailed(_)
        )
    }

    /// Whether the invocation did its work, with something to say about it.
    pub fn is_warning(&self) -> bool {
        matches!(self, Self::Warnings(_) | Self::OffsiteFailed(_))
    }
}
