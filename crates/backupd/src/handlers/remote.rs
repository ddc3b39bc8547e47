//! The `--remote NAME` forms of `backups`, `verify`, `restore` and `prune`: the same store
//! code (listing, verify, restore, rotation) over an offsite remote's [`S3Prefix`] instead of
//! a folder. A remote copy counts as a backup only once its manifest is there; one without is
//! shown as incomplete by `backups --long` and left out of everything else but rotation.

use std::collections::BTreeSet;
use std::sync::Arc;

use proto::ErrorCode;
use proto::request::{PruneArgs, VerifyArgs};
use proto::response::{BackupList, PruneReport, VerifyList};

use super::{HandlerError, HandlerResult, backups, blocking, verify};
use crate::destination::{self, ArchiveInfo, Destination, S3Prefix};
use crate::format::Identities;
use crate::format::naming::{manifest_condemned_by, name_of_manifest, parse_archive_name};
use crate::offsite::{self, Offsite};
use crate::offsite_retention;
use crate::remote::RemoteError;
use crate::state::Daemon;
use crate::store::StoreError;

/// The remote `spec` names (a `[remote.NAME]` or `s3://BUCKET/PREFIX`), with its client;
/// credentials are read on a blocking thread.
pub async fn open(daemon: &Daemon, spec: &str) -> HandlerResult<Offsite> {
    crate::remote::check_spec(spec, &daemon.remotes).map_err(remote_error)?;
    let (spec, remotes) = (spec.to_owned(), Arc::clone(&daemon.remotes));
    let runtime = tokio::runtime::Handle::current();
    blocking(move || offsite::prepare(&spec, &remotes, runtime))
        .await?
        .map_err(remote_error)
}

fn remote_error(error: RemoteError) -> HandlerError {
    let code = match error {
        RemoteError::Unknown(_) | RemoteError::Invalid { .. } => ErrorCode::InvalidArguments,
        RemoteError::Credentials { .. } | RemoteError::Client { .. } => ErrorCode::Io,
    };
    HandlerError::new(code, error.to_string())
}

/// A request naming a remote works on it alone: a folder named too is refused, not ignored.
pub fn refuse_destination(destination: Option<&str>) -> HandlerResult<()> {
    match destination {
        Some(_) => Err(HandlerError::new(
            ErrorCode::InvalidArguments,
            "name a remote or a destination folder, not both",
        )),
        None => Ok(()),
    }
}

/// The archives on `remote`, oldest first, complete or not.
async fn list(remote: &Arc<S3Prefix>) -> HandlerResult<Vec<ArchiveInfo>> {
    let listed = Arc::clone(remote);
    let location = remote.location();
    Ok(blocking(move || destination::list(listed.as_ref()))
        .await?
        .map_err(|source| StoreError::ReadDir {
            path: location,
            source,
        })?)
}

/// The backup names on `remote`: of its archives, and of the manifests that marks of cut
/// rotations condemn, which a rotation of every name finishes under their names' locks too.
async fn names_on(remote: &Arc<S3Prefix>) -> HandlerResult<BTreeSet<String>> {
    let listed = Arc::clone(remote);
    let location = remote.location();
    let files = blocking(move || listed.files())
        .await?
        .map_err(|source| StoreError::ReadDir {
            path: location,
            source,
        })?;
    Ok(files
        .iter()
        .filter_map(|(file, _)| match manifest_condemned_by(file) {
            Some(manifest) => name_of_manifest(manifest),
            None => parse_archive_name(file).map(|parsed| parsed.name),
        })
        .collect())
}

/// `archive` as a file name on the remote: an archive name, no path.
fn remote_archive(remote: &S3Prefix, archive: &str) -> HandlerResult<String> {
    if archive.contains('/') || parse_archive_name(archive).is_none() {
        return Err(HandlerError::new(
            ErrorCode::InvalidArguments,
            format!(
                "name an archive on remote {} by its file name: {archive}",
                remote.config().name
            ),
        ));
    }
    Ok(archive.to_owned())
}

/// `backups --remote`: the complete copies by file name; with `long`, every copy grouped by
/// name, the incomplete ones marked.
pub async fn backups(daemon: &Daemon, spec: &str, long: bool) -> HandlerResult<BackupList> {
    let target = open(daemon, spec).await?;
    let archives = list(&target.remote).await?;
    let mut complete: Vec<String> = archives
        .iter()
        .filter(|a| a.manifest.is_some())
        .map(|a| a.file_name.clone())
        .collect();
    complete.sort();
    let groups = if long {
        Some(backups::groups_of(daemon, &archives, true).await)
    } else {
        None
    };
    tracing::info!("Show backups list of remote {spec}");
    Ok(BackupList {
        directory: target.remote.location().display().to_string(),
        backups: complete,
        groups,
    })
}

/// `verify --remote`: streams each copy back, hashes it and reads it to the end (an encrypted
/// one only with `identities`, else its checksum alone). `all` and `name` take the complete
/// copies only.
pub async fn verify(
    daemon: &Daemon,
    spec: &str,
    args: &VerifyArgs,
    identities: Option<Arc<Identities>>,
) -> HandlerResult<VerifyList> {
    let target = open(daemon, spec).await?;
    let remote = &target.remote;
    let files = match (&args.archive, &args.name, args.all) {
        (Some(archive), None, false) => vec![remote_archive(remote, archive)?],
        (None, name, all) if name.is_some() != all => {
            let selected: Vec<String> = list(remote)
                .await?
                .into_iter()
                .filter(|a| a.manifest.is_some())
                .filter(|a| name.as_ref().is_none_or(|n| &a.name == n))
                .map(|a| a.file_name)
                .collect();
            if selected.is_empty() {
                let url = remote.location();
                let what = name.as_ref().map_or_else(
                    || format!("no archives on {}", url.display()),
                    |n| format!("no archives named {n} on {}", url.display()),
                );
                return Err(HandlerError::new(ErrorCode::ArchiveNotFound, what));
            }
            selected
        }
        _ => {
            return Err(HandlerError::new(
                ErrorCode::InvalidArguments,
                "verify takes an archive, a name, or all",
            ));
        }
    };
    let from: Arc<dyn Destination> = Arc::clone(remote) as Arc<dyn Destination>;
    let listed = verify::Listed::from_selection(args.archive.is_none());
    verify::check(daemon, from, files, identities, listed).await
}

/// The archive a `restore --remote` names, on its remote.
pub async fn restore_source(
    daemon: &Daemon,
    spec: &str,
    archive: &str,
) -> HandlerResult<(Arc<dyn Destination>, String)> {
    let target = open(daemon, spec).await?;
    let file = remote_archive(&target.remote, archive)?;
    Ok((target.remote as Arc<dyn Destination>, file))
}

/// `prune --remote`: the retention policy applied to the remote set, under the same
/// per-name rotation locks a run's remote rotation takes.
pub async fn prune(daemon: &Daemon, spec: &str, args: PruneArgs) -> HandlerResult<PruneReport> {
    let target = open(daemon, spec).await?;
    let url = target.remote.location().display().to_string();
    // Each name by its schedule's retention of copies there unless the request gives one.
    let schedules = daemon.schedules.snapshot().await.schedules;
    let retention =
        offsite_retention::names_on_remote(&schedules, &daemon.job_defaults, &daemon.remotes, &url);
    let given = args.retention;
    let names: BTreeSet<String> = match &args.name {
        Some(name) => BTreeSet::from([name.clone()]),
        None => names_on(&target.remote).await?,
    };
    let _locks = daemon.rotation_locks.lock_all_remote(&url, &names).await;
    let (remote, name, dry_run) = (Arc::clone(&target.remote), args.name.clone(), args.dry_run);
    let rotated = blocking(move || {
        let policy_of = |name: &str| retention.policy(name, given.as_ref());
        offsite_retention::rotate_remote(&remote, name.as_deref(), &policy_of, dry_run)
    })
    .await??;
    if !dry_run && !rotated.deleted.is_empty() {
        daemon.publish(proto::Event::Rotated {
            destination: url.clone(),
            deleted: rotated.deleted.clone(),
        });
    }
    Ok(PruneReport {
        dry_run,
        destination: url,
        deleted: rotated.deleted,
        failed: rotated.failed,
        kept: rotated.kept,
        locked: rotated.locked,
    })
}
