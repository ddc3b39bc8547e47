//! `ls`: an archive's entries (kind, mode, size, mtime, path), or those under one path. An
//! encrypted archive is listed with the identity file or passphrase the request gives.

use super::{HandlerError, HandlerResult, blocking, identities_of, resolve_archive};
use crate::key_files::Requester;
use crate::state::Daemon;
use crate::store;
use proto::ErrorCode;
use proto::request::LsArgs;
use proto::response::{ArchiveEntry, ArchiveListing};

pub async fn handle(
    daemon: &Daemon,
    args: LsArgs,
    requester: Requester,
) -> HandlerResult<ArchiveListing> {
    let identities =
        identities_of(args.identity.clone(), args.passphrase.clone(), requester).await?;
    let (folder, file) = resolve_archive(&daemon.default_destination(), &args.archive).await?;
    let archive = folder.dir().join(&file);
    let path = args.path.clone();
    let shutdown = daemon.shutdown.clone();
    let listed = blocking(move || {
        let stopping = || shutdown.is_cancelled();
        store::list_contents(
            &folder,
            &file,
            path.as_deref(),
            identities.as_deref(),
            &stopping,
        )
    })
    .await?;
    // A stop ends the reading of a long archive: what it left is no listing.
    if daemon.shutdown.is_cancelled() {
        return Err(HandlerError::new(
            ErrorCode::ShuttingDown,
            format!("backupd is stopping: ls of {} stopped", archive.display()),
        ));
    }
    let listing = listed?;
    if listing.not_listed > 0 {
        tracing::warn!(
            "Listed the first {} entries of {}; {} more not listed",
            listing.entries.len(),
            archive.display(),
            listing.not_listed
        );
    }
    Ok(ArchiveListing {
        archive: archive.display().to_string(),
        not_listed: listing.not_listed,
        entries: listing
            .entries
            .into_iter()
            .map(|e| ArchiveEntry {
                kind: e.kind.to_owned(),
                mode: e.mode,
                size: e.size,
                mtime: e.mtime,
                path: e.path,
                link: e.link,
                device: e.device,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{backup, build_tree};
    use proto::Compression;

    #[tokio::test]
    async fn a_stop_ends_a_listing_with_shutting_down() {
        let home = tempfile::tempdir().unwrap();
        let daemon = Daemon::in_test_home(home.path());
        let src = build_tree(home.path());
        let backups = daemon.default_destination();
        let outcome = backup(
            &src,
            &backups,
            "docs",
            Compression::default(),
            "20250101_000000",
        );
        let args = LsArgs {
            archive: outcome.archive.display().to_string(),
            path: None,
            identity: None,
            passphrase: None,
        };
        let listed = handle(&daemon, args.clone(), Requester::daemon()).await;
        assert!(listed.unwrap().entries.len() > 5);

        daemon.shutdown.cancel();
        let stopped = handle(&daemon, args, Requester::daemon())
            .await
            .unwrap_err();
        assert_eq!(stopped.code, ErrorCode::ShuttingDown);
        assert!(
            stopped.message.ends_with("_20250101_000000.tar.gz stopped"),
            "{}",
            stopped.message
        );
    }
}
