//! `verify`: checks archives against their manifests and reads them to the end; one archive,
//! every archive of a name, or all.

use super::{HandlerError, HandlerResult, blocking, resolve_archive};
use crate::plan;
use crate::state::Daemon;
use crate::store::{self, VerifyStatus};
use crate::verify_ledger::{describe, reason, status_name};
use proto::ErrorCode;
use proto::request::VerifyArgs;
use proto::response::{ArchiveCheck, VerifyList};
use std::path::PathBuf;

pub async fn handle(daemon: &Daemon, args: VerifyArgs) -> HandlerResult<VerifyList> {
    let folder = match &args.destination {
        Some(path) => plan::absolute(path, "destination")?,
        None => daemon.home.backups_dir(),
    };
    let archives = select(&folder, &args).await?;
    let mut list = VerifyList {
        archives: Vec::with_capacity(archives.len()),
        ok: 0,
        failed: 0,
    };
    for archive in archives {
        let path = archive.clone();
        let report = blocking(move || store::verify(&path))
            .await?
            .map_err(|e| HandlerError::new(ErrorCode::ArchiveNotFound, e.to_string()))?;
        daemon.verify_ledger.record(&archive, &report.status).await;
        let file = archive
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        if report.status == VerifyStatus::Ok {
            list.ok += 1;
            tracing::info!("Verify OK: {file}");
        } else {
            list.failed += 1;
            tracing::error!("Verify failed for {file}: {}", describe(&report.status));
        }
        let detail = match (reason(&report.status), report.detail.clone()) {
            (Some(reason), Some(more)) => Some(format!("{reason}; {more}")),
            (reason, more) => reason.or(more),
        };
        list.archives.push(ArchiveCheck {
            archive: archive.display().to_string(),
            status: status_name(&report.status).to_owned(),
            detail,
            entries: report.entries,
        });
    }
    Ok(list)
}

/// The archives the request names.
async fn select(folder: &std::path::Path, args: &VerifyArgs) -> HandlerResult<Vec<PathBuf>> {
    let invalid = |m: &str| HandlerError::new(ErrorCode::InvalidArguments, m);
    match (&args.archive, &args.name, args.all) {
        (Some(archive), None, false) => Ok(vec![resolve_archive(folder, archive)?]),
        (None, name, all) if name.is_some() != all => {
            let dir = folder.to_path_buf();
            let found = blocking(move || store::scan(&dir))
                .await?
                .map_err(|e| HandlerError::new(ErrorCode::Io, e.to_string()))?;
            let selected: Vec<PathBuf> = found
                .into_iter()
                .filter(|a| name.as_ref().is_none_or(|n| &a.name == n))
                .map(|a| a.path)
                .collect();
            if selected.is_empty() {
                let what = name.as_ref().map_or_else(
                    || format!("no archives in {}", folder.display()),
                    |n| format!("no archives named {n} in {}", folder.display()),
                );
                return Err(HandlerError::new(ErrorCode::ArchiveNotFound, what));
            }
            Ok(selected)
        }
        _ => Err(invalid("verify takes an archive, a name, or all")),
    }
}
