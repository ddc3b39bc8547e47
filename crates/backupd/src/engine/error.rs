//! The engine's typed errors.
//!
//! Only failures that abort a backup live here; per-file trouble met during the walk
//! (vanished, unreadable, changed while read) is a warning in the manifest instead.

use std::io;
use std::path::PathBuf;

/// Why a backup (or its preparation) failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("Backup source does not exist: {path}")]
    SourceNotFound { path: PathBuf },

    #[error("Backup source is not a directory: {path}")]
    SourceNotDirectory { path: PathBuf },

    #[error("Backup source not readable: {path}: {source}")]
    SourceUnreadable { path: PathBuf, source: io::Error },

    /// Each archive would hold all the earlier ones.
    #[error(
        "Backup source {path} is where archives are written ({destination}); choose another destination"
    )]
    SourceIsDestination { path: PathBuf, destination: PathBuf },

    #[error("invalid exclude pattern {pattern:?}: {reason}")]
    InvalidPattern {
        pattern: String,
        reason: &'static str,
    },

    #[error("{0}")]
    InvalidName(String),

    /// Two runs in the same second: the older archive is kept, never overwritten.
    #[error("archive {path} already exists")]
    ArchiveExists { path: PathBuf },

    /// Another user's file, in a destination others may write, holds a name this backup needs.
    #[error(
        "{path} belongs to another user (uid {uid}) and holds the name this backup needs; it \
         is not a backup: remove it, or choose a destination others cannot write"
    )]
    NameHeld { path: PathBuf, uid: u32 },

    #[error("cannot create archive in {path}: {source}")]
    Destination { path: PathBuf, source: io::Error },

    #[error("cannot write archive {path}: {source}")]
    Write { path: PathBuf, source: io::Error },

    #[error("cannot write manifest {path}: {source}")]
    Manifest { path: PathBuf, source: io::Error },

    /// What reached the disk is not what was written.
    #[error("archive {path} failed validation: {reason}")]
    Invalid { path: PathBuf, reason: String },

    #[error("backup cancelled")]
    Cancelled,

    /// A command source could not start, failed, or its output could not be stored.
    #[error("command source {name} failed: {reason}")]
    CommandSource { name: String, reason: String },
}
