//! The store's typed errors.
//!
//! Each names the path it is about, so the daemon can pass the message to the user as is.
//! Findings about an archive's health (bad checksum, truncation) are not errors but a
//! [`super::VerifyStatus`]; only restore turns them into refusals.

use std::io;
use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read backup folder {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },

    #[error("cannot read archive {path}: {source}")]
    ReadArchive { path: PathBuf, source: io::Error },

    #[error("manifest missing for {archive}: expected {manifest}")]
    ManifestMissing { archive: PathBuf, manifest: PathBuf },

    /// The manifest of the archive's name was written for another archive of the same stem.
    #[error("manifest {manifest} is that of {written_for}, not of {archive}")]
    ManifestOfSibling {
        archive: PathBuf,
        manifest: PathBuf,
        written_for: String,
    },

    #[error("manifest {path} is unreadable: {reason}")]
    ManifestInvalid { path: PathBuf, reason: String },

    #[error("archive {path} does not match its manifest: {reason}")]
    ChecksumMismatch { path: PathBuf, reason: String },

    #[error(
        "restore target {path} already has {total} of the entries to restore ({}{}); nothing was written (--overwrite replaces them)",
        entries.join(", "),
        if *total > entries.len() { ", ..." } else { "" }
    )]
    WouldOverwrite {
        path: PathBuf,
        entries: Vec<String>,
        total: usize,
    },

    #[error("restore target {path} is a symlink")]
    TargetIsSymlink { path: PathBuf },

    #[error(
        "restore target {path}: {link} on the way to it is a symlink {why}; backupd follows \
         only root's and its own user's symlinks, in folders no other user may change: give \
         the path it leads to"
    )]
    TargetUntrustedLink {
        path: PathBuf,
        link: PathBuf,
        why: String,
    },

    #[error("restore target {path} is not a directory")]
    TargetNotDirectory { path: PathBuf },

    #[error("cannot prepare restore target {path}: {source}")]
    Target { path: PathBuf, source: io::Error },

    #[error("no entry in {archive} matches path {path:?}")]
    PathNotInArchive { archive: PathBuf, path: String },

    /// An encrypted archive that cannot be decrypted: no identity, a wrong one, or a
    /// tampered or truncated ciphertext found before anything was written.
    #[error("cannot decrypt archive {path}: {source}; nothing was written")]
    Decrypt { path: PathBuf, source: io::Error },

    /// The daemon is stopping: the restore ended where it was; `cleanup` says what became
    /// of what it had written.
    #[error("backupd is stopping: the restore from {archive} stopped; {cleanup}")]
    Stopped { archive: PathBuf, cleanup: String },

    /// The restore stopped; `cleanup` says what became of what it had written.
    #[error("cannot restore {entry} from {archive}: {source}; {cleanup}")]
    Extract {
        archive: PathBuf,
        entry: String,
        source: io::Error,
        cleanup: String,
    },
}
