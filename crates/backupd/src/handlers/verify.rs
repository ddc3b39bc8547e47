//! `verify`: checks archives against their manifests and reads them to the end; one archive,
//! every archive of a name, or all. Encrypted archives are read only with an identity file
//! the request names; without one their checksum alone is checked.

use super::{
    HandlerError, HandlerResult, blocking, destination_or_default, identities_of, resolve_archive,
};
use crate::destination::{self, Destination, LocalFolder};
use crate::format::Identities;
use crate::format::naming::parse_archive_name;
use crate::key_files::Requester;
use crate::state::Daemon;
use crate::store::{self, StoreError};
use proto::request::VerifyArgs;
use proto::response::{ArchiveCheck, VerifyList};
use proto::{ErrorCode, Reply};
use std::sync::Arc;

pub async fn handle(
    daemon: &Daemon,
    args: VerifyArgs,
    requester: Requester,
) -> HandlerResult<VerifyList> {
    super::backup_name(args.name.as_deref())?;
    let identities =
        identities_of(args.identity.clone(), args.passphrase.clone(), requester).await?;
    if let Some(remote) = &args.remote {
        super::remote::refuse_destination(args.destination.as_deref())?;
        return super::remote::verify(daemon, remote, &args, identities).await;
    }
    let folder = destination_or_default(daemon, args.destination.as_deref())?;
    let (folder, files) = select(folder, &args).await?;
    let listed = Listed::from_selection(args.archive.is_none());
    check(daemon, Arc::new(folder), files, identities, listed).await
}

/// How the archives to verify were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listed {
    /// The one archive the request named: its absence is the answer.
    Named,
    /// Those of a name, or all, as listed when the verify began: one deleted since (by a
    /// rotation) is left out, neither OK nor failed.
    FromFolder,
}

impl Listed {
    pub(super) fn from_selection(listed: bool) -> Self {
        if listed {
            Listed::FromFolder
        } else {
            Listed::Named
        }
    }
}

/// Verifies `files` of `folder` one after the other, recording each in the ledger; an
/// encrypted one is read to the end only with `identities`.
pub(super) async fn check(
    daemon: &Daemon,
    folder: Arc<dyn Destination>,
    files: Vec<String>,
    identities: Option<Arc<Identities>>,
    listed: Listed,
) -> HandlerResult<VerifyList> {
    let mut list = VerifyList {
        archives: Vec::with_capacity(files.len()),
        ok: 0,
        failed: 0,
    };
    let total = files.len();
    // A stop ends the archive being read at its next read, unrecorded, and the rest unread:
    // the answer says how far it got.
    let stopped = |list: VerifyList| {
        let message = format!(
            "backupd is stopping: verify stopped after {} of {total} archives ({} failed)",
            list.ok + list.failed,
            list.failed
        );
        Err(HandlerError::partial(
            ErrorCode::ShuttingDown,
            message,
            Reply::Verify(list),
        ))
    };
    for file in files {
        if daemon.shutdown.is_cancelled() {
            return stopped(list);
        }
        // Not before the start-up repair has rebuilt its manifest: else "no manifest" would
        // be recorded against it. Nor at all when a stop cut the repair short.
        if let Some(parsed) = parse_archive_name(&file) {
            daemon
                .rotation_locks
                .wait_for_repair(&folder.location(), Some(&parsed.name))
                .await?;
        }
        let (from, name) = (Arc::clone(&folder), file.clone());
        let keys = identities.clone();
        let shutdown = daemon.shutdown.clone();
        // Taken before the check: a file put under the name meanwhile then gets no mark.
        let checked = blocking(move || {
            let identity = from.identity(&name).ok();
            let stopping = || shutdown.is_cancelled();
            store::verify_with(from.as_ref(), &name, keys.as_deref(), &stopping)
                .map(|r| (identity, r))
        })
        .await?;
        if daemon.shutdown.is_cancelled() {
            return stopped(list);
        }
        let failed = checked
            .as_ref()
            .map_or(true, |(_, report)| !report.finding.is_ok());
        if failed && listed == Listed::FromFolder && gone(&folder, &file).await? {
            tracing::warn!("Verify left out {file}: deleted since it was listed (by a rotation?)");
            continue;
        }
        let (identity, report) = checked?;
        let finding = &report.finding;
        daemon
            .verify_ledger
            .record(&report.archive, identity, finding.status())
            .await;
        daemon.publish(proto::Event::Verified {
            archive: report.archive.display().to_string(),
            status: finding.status(),
        });
        if finding.is_ok() {
            list.ok += 1;
            match &report.detail {
                Some(detail) if detail == store::CHECKSUM_ONLY => {
                    tracing::info!("Verify OK ({detail}): {file}");
                }
                _ => tracing::info!("Verify OK: {file}"),
            }
        } else {
            list.failed += 1;
            tracing::error!("Verify failed for {file}: {finding}");
        }
        let detail = match (finding.reason(), report.detail.clone()) {
            (Some(reason), Some(more)) => Some(format!("{reason}; {more}")),
            (reason, more) => reason.or(more),
        };
        list.archives.push(ArchiveCheck {
            archive: report.archive.display().to_string(),
            status: finding.status(),
            detail,
            entries: report.entries,
        });
    }
    if list.failed > 0 {
        let message = format!(
            "{} of {} archives failed verification",
            list.failed,
            list.failed + list.ok
        );
        return Err(HandlerError::partial(
            ErrorCode::VerifyFailed,
            message,
            Reply::Verify(list),
        ));
    }
    Ok(list)
}

/// Whether `file` is no longer in `folder`.
async fn gone(folder: &Arc<dyn Destination>, file: &str) -> HandlerResult<bool> {
    let (folder, file) = (Arc::clone(folder), file.to_owned());
    let identity = blocking(move || folder.identity(&file)).await?;
    Ok(identity.is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound))
}

/// The folder and the file names of the archives the request names.
async fn select(
    folder: LocalFolder,
    args: &VerifyArgs,
) -> HandlerResult<(LocalFolder, Vec<String>)> {
    let invalid = |m: &str| HandlerError::new(ErrorCode::InvalidArguments, m);
    match (&args.archive, &args.name, args.all) {
        (Some(archive), None, false) => {
            let (folder, file) = resolve_archive(folder.dir(), archive).await?;
            Ok((folder, vec![file]))
        }
        (None, name, all) if name.is_some() != all => {
            let listed = folder.clone();
            let found = blocking(move || destination::list(&listed))
                .await?
                .map_err(|source| StoreError::ReadDir {
                    path: folder.dir().to_owned(),
                    source,
                })?;
            let selected: Vec<String> = found
                .into_iter()
                .filter(|a| name.as_ref().is_none_or(|n| &a.name == n))
                .map(|a| a.file_name)
                .collect();
            if selected.is_empty() {
                let dir = folder.dir().display();
                let what = name.as_ref().map_or_else(
                    || format!("no archives in {dir}"),
                    |n| format!("no archives named {n} in {dir}"),
                );
                return Err(HandlerError::new(ErrorCode::ArchiveNotFound, what));
            }
            Ok((folder, selected))
        }
        _ => Err(invalid("verify takes an archive, a name, or all")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{OpenHooked, Opened, backup, build_tree};
    use proto::Compression;

    /// A daemon on a fresh home and a folder with an archive of `docs` for each of `stamps`;
    /// the folder and the archives' file names.
    fn folder_with_archives(
        home: &std::path::Path,
        stamps: &[&str],
    ) -> (Daemon, Arc<dyn Destination>, Vec<String>) {
        let daemon = Daemon::in_test_home(home);
        let src = build_tree(home);
        let dest = home.join("dest");
        std::fs::create_dir(&dest).unwrap();
        let files = (stamps.iter())
            .map(|stamp| {
                let outcome = backup(&src, &dest, "docs", Compression::default(), stamp);
                let name = outcome.archive.file_name().unwrap();
                name.to_str().unwrap().to_owned()
            })
            .collect();
        (daemon, Arc::new(LocalFolder::new(&dest)), files)
    }

    #[tokio::test]
    async fn an_archive_rotated_away_after_the_listing_is_left_out_not_failed() {
        let home = tempfile::tempdir().unwrap();
        let stamps = ["20250101_000000", "20250102_000000"];
        let (daemon, folder, files) = folder_with_archives(home.path(), &stamps);
        // As a prune between the listing and the check leaves it.
        std::fs::remove_file(home.path().join("dest").join(&files[0])).unwrap();

        let list = check(
            &daemon,
            Arc::clone(&folder),
            files.clone(),
            None,
            Listed::FromFolder,
        )
        .await
        .unwrap();
        assert_eq!((list.ok, list.failed), (1, 0));
        assert_eq!(list.archives.len(), 1);
        assert!(list.archives[0].archive.ends_with(&files[1]));

        // Named on its own, its absence is the answer.
        let named = check(&daemon, folder, vec![files[0].clone()], None, Listed::Named).await;
        assert_eq!(named.unwrap_err().code, ErrorCode::ArchiveNotFound);
    }

    #[tokio::test]
    async fn a_stop_ends_a_verify_of_many_between_archives_with_what_it_found() {
        let home = tempfile::tempdir().unwrap();
        let (daemon, folder, files) = folder_with_archives(home.path(), &["20250101_000000"]);
        daemon.shutdown.cancel();
        let stopped = check(&daemon, folder, files, None, Listed::FromFolder)
            .await
            .unwrap_err();
        assert_eq!(stopped.code, ErrorCode::ShuttingDown);
        assert!(
            stopped.message.contains("after 0 of 1 archives"),
            "{}",
            stopped.message
        );
        assert!(matches!(stopped.data.as_deref(), Some(Reply::Verify(_))));
    }

    /// Stops the daemon at its first read of `inner`.
    struct Stopper {
        inner: Opened,
        shutdown: tokio_util::sync::CancellationToken,
    }

    impl std::io::Read for Stopper {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.shutdown.cancel();
            Ok(n)
        }
    }

    #[tokio::test]
    async fn a_stop_while_an_archive_is_read_ends_it_unrecorded() {
        let home = tempfile::tempdir().unwrap();
        let (daemon, _, files) = folder_with_archives(home.path(), &["20250101_000000"]);
        let shutdown = daemon.shutdown.clone();
        let folder = Arc::new(OpenHooked {
            folder: LocalFolder::new(home.path().join("dest")),
            hook: move |_: &str, inner| -> std::io::Result<Opened> {
                let shutdown = shutdown.clone();
                Ok(Box::new(Stopper { inner, shutdown }))
            },
        });
        let stopped = check(&daemon, folder, files.clone(), None, Listed::Named)
            .await
            .unwrap_err();
        assert_eq!(stopped.code, ErrorCode::ShuttingDown);
        assert!(
            stopped.message.contains("after 0 of 1 archives (0 failed)"),
            "{}",
            stopped.message
        );
        let archive = home.path().join("dest").join(&files[0]);
        assert!(daemon.verify_ledger.get(&archive, None).await.is_none());
    }
}
