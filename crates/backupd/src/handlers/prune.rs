//! `prune`: applies a retention policy to a destination now, for every backup name or one:
//! the request's, else each name's schedule's (its own, else `[defaults]`).

use super::{HandlerResult, blocking, destination_or_default};
use crate::retention::{self, NameRetention};
use crate::state::Daemon;
use proto::request::PruneArgs;
use proto::response::PruneReport;

pub async fn handle(daemon: &Daemon, args: PruneArgs) -> HandlerResult<PruneReport> {
    super::backup_name(args.name.as_deref())?;
    if let Some(remote) = args.remote.clone() {
        super::remote::refuse_destination(args.destination.as_deref())?;
        return super::remote::prune(daemon, &remote, args).await;
    }
    let folder = destination_or_default(daemon, args.destination.as_deref())?;
    let destination = folder.dir().display().to_string();
    // Each name by its schedule's retention unless the request gives one.
    let schedules = daemon.schedules.snapshot().await.schedules;
    let (defaults, dir) = (daemon.plan_defaults(), folder.dir().to_owned());
    let retention = blocking(move || NameRetention::in_folder(&schedules, &defaults, &dir)).await?;
    let given = args.retention;
    let name = args.name.clone();
    let dry_run = args.dry_run;
    // The names this prune may touch, each locked against a run's rotation.
    let names = match &name {
        Some(name) => std::collections::BTreeSet::from([name.clone()]),
        None => {
            let listed = folder.clone();
            blocking(move || crate::destination::list(&listed))
                .await?
                .unwrap_or_default()
                .into_iter()
                .map(|a| a.name)
                .collect()
        }
    };
    // Not on archives whose manifests a stop kept the start-up repair from rebuilding.
    daemon
        .rotation_locks
        .wait_for_repair(folder.dir(), name.as_deref())
        .await?;
    let _locks = daemon.rotation_locks.lock_all(folder.dir(), &names).await;
    let rotated = blocking(move || {
        let policy_of = |name: &str| retention.policy(name, given.as_ref());
        retention::rotate_by(&folder, name.as_deref(), &policy_of, None, dry_run)
    })
    .await??;
    if dry_run {
        tracing::info!("Would delete: {} old backups", rotated.deleted.len());
    } else {
        tracing::info!("Old backups deleted: {}", rotated.deleted.len());
        if !rotated.deleted.is_empty() {
            daemon.publish(proto::Event::Rotated {
                destination: destination.clone(),
                deleted: rotated.deleted.clone(),
            });
        }
    }
    Ok(PruneReport {
        dry_run,
        destination,
        deleted: rotated.deleted,
        failed: rotated.failed,
        kept: rotated.kept,
        locked: rotated.locked,
    })
}
