//! `sync`: uploads to an offsite remote every local archive (of one name, or all) it lacks
//! whole ([`offsite::is_there`]), oldest first, each as the offsite step copies it (the archive,
//! then its manifest, create-only). A local archive without its manifest is not a backup and
//! is not sent.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use proto::request::SyncArgs;
use proto::response::SyncReport;
use proto::size::human_size;
use proto::{ErrorCode, Reply};

use super::{HandlerError, HandlerResult, blocking, destination_or_default, remote};
use crate::destination::{self, Destination};
use crate::offsite;
use crate::state::Daemon;
use crate::store::StoreError;

pub async fn handle(daemon: &Daemon, args: SyncArgs) -> HandlerResult<SyncReport> {
    let folder = destination_or_default(daemon, args.destination.as_deref())?;
    let target = remote::open(daemon, &args.remote).await?;
    // An archive whose manifest the start-up repair is rebuilding would be passed over.
    daemon
        .rotation_locks
        .wait_for_repair(folder.dir(), args.name.as_deref())
        .await?;
    let url = target.remote.location().display().to_string();
    let (local, to, name) = (folder.clone(), target.clone(), args.name.clone());
    // Stops between uploads when the daemon shuts down; an upload under way is aborted.
    let cancel = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (cancel, shutdown) = (Arc::clone(&cancel), daemon.shutdown.clone());
        async move {
            shutdown.cancelled().await;
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let outcome = blocking(move || -> Result<_, StoreError> {
        let read_dir = |path, source| StoreError::ReadDir { path, source };
        let copies = destination::list_named(to.remote.as_ref(), name.as_deref())
            .map_err(|e| read_dir(to.remote.location(), e))?;
        let archives: Vec<_> = destination::list_named(&local, name.as_deref())
            .map_err(|e| read_dir(local.location(), e))?
            .into_iter()
            .filter(|a| a.manifest.is_some())
            .collect();
        let mut already_there = 0;
        let mut uploads = Vec::new();
        for archive in archives {
            if offsite::is_there(&archive, &copies) {
                already_there += 1;
                continue;
            }
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            uploads.push(offsite::copy(&local, &archive.file_name, &to, &cancel));
        }
        Ok((uploads, already_there))
    })
    .await;
    watcher.abort();
    let (uploads, already_there) = outcome??;
    for upload in &uploads {
        match &upload.error {
            None => tracing::info!(
                "Uploaded {} to {}: {} in {:.1}s",
                upload.url,
                upload.remote,
                human_size(upload.bytes),
                upload.duration_ms as f64 / 1000.0
            ),
            Some(error) => tracing::error!("Upload of {} failed: {error}", upload.url),
        }
    }
    let failed = uploads.iter().filter(|u| !u.ok).count();
    tracing::info!(
        "Sync to {}: {} uploaded, {failed} failed, {already_there} already there",
        args.remote,
        uploads.len() - failed
    );
    let report = SyncReport {
        remote: args.remote,
        url,
        uploads,
        already_there,
    };
    if failed > 0 {
        let message = format!("{failed} of {} uploads failed", report.uploads.len());
        return Err(HandlerError::partial(
            ErrorCode::BackupFailed,
            message,
            Reply::Synced(report),
        ));
    }
    Ok(report)
}
