//! `backups`: the archive files in `<home>/backups` (or another destination), by name; with
//! `long`, grouped by backup name, newest first, with size, compression, file count and last
//! verification, and whether each is encrypted and to whom.

use super::{HandlerError, HandlerResult, blocking, destination_or_default};
use crate::destination::{self, ArchiveInfo, LocalFolder};
use crate::format::TIMESTAMP_FORMAT;
use crate::format::naming::has_archive_extension;
use crate::state::Daemon;
use crate::store::{self, StoreError};
use proto::ErrorCode;
use proto::response::{BackupEntry, BackupGroup, BackupList};
use proto::size::human_size;
use std::io;

pub async fn handle(
    daemon: &Daemon,
    long: bool,
    destination: Option<String>,
    remote: Option<String>,
) -> HandlerResult<BackupList> {
    if let Some(remote) = remote {
        super::remote::refuse_destination(destination.as_deref())?;
        return super::remote::backups(daemon, &remote, long).await;
    }
    let named = destination.is_some();
    let dir = destination_or_default(daemon, destination.as_deref())?
        .dir()
        .to_owned();
    let unreadable = |e: io::Error| {
        let error = missing_or_io(&e);
        if named {
            HandlerError::new(error.code, format!("{}: {}", error.message, dir.display()))
        } else {
            error
        }
    };
    let mut entries = tokio::fs::read_dir(&dir).await.map_err(unreadable)?;
    let mut backups = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(unreadable)? {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if has_archive_extension(&name) {
            backups.push(name);
        }
    }
    backups.sort();
    let groups = if long {
        Some(groups(daemon, LocalFolder::new(&dir)).await?)
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

async fn groups(daemon: &Daemon, folder: LocalFolder) -> HandlerResult<Vec<BackupGroup>> {
    // Not waiting for the start-up manifest repair: a listing acts on nothing, and waiting
    // would leave it unanswered for as long as a large archive takes to read. An archive
    // still without its manifest shows as it is (no file count), as any such archive does.
    let path = folder.dir().to_owned();
    let archives = blocking(move || destination::list(&folder))
        .await?
        .map_err(|source| StoreError::ReadDir { path, source })?;
    Ok(groups_of(daemon, &archives, false).await)
}

/// `archives` grouped by name, newest first; with `mark_incomplete` (a remote), a copy
/// without its manifest is marked incomplete.
pub(super) async fn groups_of(
    daemon: &Daemon,
    archives: &[ArchiveInfo],
    mark_incomplete: bool,
) -> Vec<BackupGroup> {
    let mut groups = Vec::new();
    for (name, archives) in destination::group_by_name(archives) {
        let mut entries = Vec::with_capacity(archives.len());
        for archive in archives {
            entries.push(BackupEntry {
                created: archive.timestamp.format(TIMESTAMP_FORMAT).to_string(),
                size_bytes: archive.size_bytes,
                size_human: human_size(archive.size_bytes),
                compression: archive.compression,
                // The original backup script's manifests do not count files.
                files: archive
                    .manifest
                    .as_ref()
                    .filter(|m| m.format_version > 0)
                    .map(|m| m.files),
                verify: (daemon.verify_ledger)
                    .get(&archive.path, archive.identity.as_ref())
                    .await,
                encrypted: store::is_encrypted(&archive.file_name, archive.manifest.as_ref()),
                recipients: archive
                    .manifest
                    .as_ref()
                    .map(|m| m.recipients.clone())
                    .unwrap_or_default(),
                incomplete: mark_incomplete && archive.manifest.is_none(),
                passphrase: archive.manifest.as_ref().is_some_and(|m| m.passphrase),
                file: archive.file_name,
            });
        }
        groups.push(BackupGroup {
            name,
            archives: entries,
        });
    }
    groups
}

/// The messages of the schedule manager's `backups`.
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
