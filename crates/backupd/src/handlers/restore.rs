//! `restore`: extracts an archive into an empty directory, after checking it against its
//! manifest; unsafe entries are refused and reported, never written.

use super::{HandlerError, HandlerResult, blocking, resolve_archive};
use crate::plan;
use crate::state::Daemon;
use crate::store::{self, StoreError};
use proto::ErrorCode;
use proto::request::RestoreArgs;
use proto::response::RestoreSummary;

pub async fn handle(daemon: &Daemon, args: RestoreArgs) -> HandlerResult<RestoreSummary> {
    let archive = resolve_archive(&daemon.home.backups_dir(), &args.archive)?;
    let to = plan::absolute(&args.to, "restore target")?;
    let (from, into, paths) = (archive.clone(), to.clone(), args.paths.clone());
    let report = blocking(move || store::restore(&from, &into, &paths))
        .await?
        .map_err(|e| {
            let code = match &e {
                StoreError::TargetNotEmpty { .. } => ErrorCode::TargetNotEmpty,
                StoreError::ManifestMissing { .. }
                | StoreError::ManifestInvalid { .. }
                | StoreError::ChecksumMismatch { .. } => ErrorCode::ArchiveInvalid,
                StoreError::PathNotInArchive { .. } | StoreError::TargetNotDirectory { .. } => {
                    ErrorCode::InvalidArguments
                }
                StoreError::ReadArchive { .. } => ErrorCode::ArchiveNotFound,
                _ => ErrorCode::Io,
            };
            HandlerError::new(code, e.to_string())
        })?;
    for refused in &report.refused {
        tracing::warn!("Refused to restore {refused}");
    }
    tracing::info!(
        "Restored {} to {}: {} files, {} dirs, {} symlinks",
        archive.display(),
        to.display(),
        report.files,
        report.dirs,
        report.symlinks
    );
    Ok(RestoreSummary {
        archive: archive.display().to_string(),
        to: to.display().to_string(),
        files: report.files,
        dirs: report.dirs,
        symlinks: report.symlinks,
        bytes: report.bytes,
        refused: report.refused,
    })
}
