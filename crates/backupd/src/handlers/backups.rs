//! `backups`: the archive files in `<home>/backups`, by name; with `long`, grouped by backup
//! name, newest first, with size, compression, file count and last verification.

use super::{HandlerError, HandlerResult, blocking};
use crate::state::Daemon;
use crate::store;
use proto::ErrorCode;
use proto::response::{BackupEntry, BackupGroup, BackupList};
use std::io;

/// File endings of the archives backupd writes.
const ARCHIVE_SUFFIXES: [&str; 3] = [".tar.gz", ".tar.zst", ".tar"];

pub async fn handle(daemon: &Daemon, long: bool) -> HandlerResult<BackupList> {
    let dir = daemon.home.backups_dir();
    let mut entries = tokio::fs::read_dir(&dir)
        .await
        .map_err(|e| missing_or_io(&e))?;
    let mut backups = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(|e| missing_or_io(&e))? {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if ARCHIVE_SUFFIXES.iter().any(|suffix| name.ends_with(suffix)) {
            backups.push(name);
        }
    }
    backups.sort();
    let groups = if long {
        Some(groups(daemon, dir.clone()).await?)
    } else {
        None
    };
    tracing::info!("Show backups list");
    Ok(BackupList {
        directory: dir.display().to_string(),
        backups,
        groups,
    })
}

async fn groups(daemon: &Daemon, dir: std::path::PathBuf) -> HandlerResult<Vec<BackupGroup>> {
    let archives = blocking(move || store::scan(&dir))
        .await?
        .map_err(|e| HandlerError::new(ErrorCode::Io, e.to_string()))?;
    let mut groups = Vec::new();
    for (name, archives) in store::group_by_name(&archives) {
        let mut entries = Vec::with_capacity(archives.len());
        for archive in archives {
            entries.push(BackupEntry {
                file: archive.file_name(),
                created: archive
                    .timestamp
                    .format(crate::engine::TIMESTAMP_FORMAT)
                    .to_string(),
                size_bytes: archive.size_bytes,
                size_human: crate::engine::human_size(archive.size_bytes),
                compression: archive.compression.to_owned(),
                files: archive.manifest.as_ref().map(|m| m.files),
                verify: daemon.verify_ledger.get(&archive.path).await,
            });
        }
        groups.push(BackupGroup {
            name,
            archives: entries,
        });
    }
    Ok(groups)
}

fn missing_or_io(err: &io::Error) -> HandlerError {
    if err.kind() == io::ErrorKind::NotFound {
        HandlerError::new(ErrorCode::BackupsDirMissing, "can't find backups directory")
    } else {
        HandlerError::new(
            ErrorCode::Io,
            format!("can't read backups directory: {err}"),
        )
    }
}
