//! `restore`: extracts an archive (or some paths of it) into a directory, after checking it
//! against its manifest; unsafe entries are refused and reported, never written, and
//! existing files are only replaced when `overwrite` asks. An encrypted archive is decrypted
//! with the identity file the request names, which the daemon reads (`key_files`).

use super::{HandlerError, HandlerResult, blocking, identities_of, resolve_archive};
use crate::destination::Destination;
use crate::format::naming::parse_archive_name;
use crate::key_files::Requester;
use crate::plan;
use crate::state::Daemon;
use crate::store;
use proto::request::RestoreArgs;
use proto::response::RestoreSummary;
use proto::{ErrorCode, Reply};
use std::sync::Arc;

pub async fn handle(
    daemon: &Daemon,
    args: RestoreArgs,
    requester: Requester,
) -> HandlerResult<RestoreSummary> {
    let identities =
        identities_of(args.identity.clone(), args.passphrase.clone(), requester).await?;
    let (folder, file): (Arc<dyn Destination>, String) = match &args.remote {
        Some(remote) => super::remote::restore_source(daemon, remote, &args.archive).await?,
        None => {
            let (folder, file) =
                resolve_archive(&daemon.default_destination(), &args.archive).await?;
            // Checked against the manifest the start-up repair may still be rebuilding.
            if let Some(parsed) = parse_archive_name(&file) {
                daemon
                    .rotation_locks
                    .wait_for_repair(folder.dir(), Some(&parsed.name))
                    .await?;
            }
            (Arc::new(folder) as Arc<dyn Destination>, file)
        }
    };
    let archive = folder.path_of(&file);
    let to = plan::absolute(&args.to, "restore target")?;
    let into = to.clone();
    let options = store::RestoreOptions {
        paths: args.paths.clone(),
        overwrite: args.overwrite,
        no_sync: args.no_sync,
    };
    let shutdown = daemon.shutdown.clone();
    let report = blocking(move || {
        store::restore_with(
            folder.as_ref(),
            &file,
            &into,
            &options,
            identities.as_deref(),
            &|| shutdown.is_cancelled(),
        )
    })
    .await??;
    for refused in &report.refused {
        tracing::warn!("Refused to restore {refused}");
    }
    if report.refused_not_listed > 0 {
        tracing::warn!(
            "Refused to restore {} more entries, not listed",
            report.refused_not_listed
        );
    }
    tracing::info!(
        "Restored {} to {}: {} files, {} dirs, {} symlinks, {} replaced",
        archive.display(),
        to.display(),
        report.files,
        report.dirs,
        report.symlinks,
        report.replaced
    );
    if report.swept > 0 {
        tracing::info!(
            "Removed {} temporary files an interrupted restore had left in {}",
            report.swept,
            to.display()
        );
    }
    let summary = RestoreSummary {
        archive: archive.display().to_string(),
        to: to.display().to_string(),
        files: report.files,
        dirs: report.dirs,
        symlinks: report.symlinks,
        bytes: report.bytes,
        refused: report.refused,
        refused_not_listed: report.refused_not_listed,
    };
    if summary.refused.is_empty() {
        return Ok(summary);
    }
    let refused = summary.refused.len() as u64 + summary.refused_not_listed;
    let message = format!("{refused} entries refused");
    Err(HandlerError::partial(
        ErrorCode::RestoreRefused,
        message,
        Reply::Restore(summary),
    ))
}
