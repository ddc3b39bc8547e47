//! `prune`: applies a retention policy to a destination now, for every backup name or one.

use super::{HandlerError, HandlerResult, blocking};
use crate::plan;
use crate::retention;
use crate::state::Daemon;
use proto::ErrorCode;
use proto::request::PruneArgs;
use proto::response::PruneReport;

pub async fn handle(daemon: &Daemon, args: PruneArgs) -> HandlerResult<PruneReport> {
    let destination = match &args.destination {
        Some(path) => plan::absolute(path, "destination")?,
        None => daemon.home.backups_dir(),
    };
    let policy = retention::policy(args.retention.as_ref());
    let dir = destination.clone();
    let name = args.name.clone();
    let dry_run = args.dry_run;
    let rotated =
        blocking(move || retention::rotate(&dir, name.as_deref(), &policy, None, dry_run))
            .await?
            .map_err(|e| HandlerError::new(ErrorCode::Io, e.to_string()))?;
    if dry_run {
        tracing::info!("Would delete: {} old backups", rotated.deleted.len());
    } else {
        tracing::info!("Old backups deleted: {}", rotated.deleted.len());
    }
    Ok(PruneReport {
        dry_run,
        destination: destination.display().to_string(),
        deleted: rotated.deleted,
        failed: rotated.failed,
        kept: rotated.kept,
    })
}
