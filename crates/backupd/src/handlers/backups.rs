//! `backups`: the archive files in `<home>/backups`, by name.

use super::{HandlerError, HandlerResult};
use crate::state::Daemon;
use proto::ErrorCode;
use proto::response::BackupList;
use std::io;

/// File endings of the archives backupd writes.
const ARCHIVE_SUFFIXES: [&str; 3] = [".tar.gz", ".tar.zst", ".tar"];

pub async fn handle(daemon: &Daemon) -> HandlerResult<BackupList> {
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
    tracing::info!("Show backups list");
    Ok(BackupList {
        directory: dir.display().to_string(),
        backups,
    })
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
