//! `ls`: an archive's entries (kind, mode, size, mtime, path), or those under one path. An
//! encrypted archive is listed with the identity file or passphrase the request gives.

use super::{HandlerResult, blocking, identities_of, resolve_archive};
use crate::key_files::Requester;
use crate::state::Daemon;
use crate::store;
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
    let listing = blocking(move || {
        store::list_contents(&folder, &file, path.as_deref(), identities.as_deref())
    })
    .await??;
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
