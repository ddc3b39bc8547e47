//! The start-up repair of archives a crash left without their manifest, run beside serving.
//!
//! Rebuilding a manifest reads the whole archive (twice): hours for a large one, so it must
//! not keep the daemon from answering. Before serving, each destination's repair is planned
//! (a listing, no archive read) and the rotation locks of the names it rebuilds are taken
//! ([`RotationLocks::hold_for_repair`](crate::rotation_locks::RotationLocks::hold_for_repair));
//! the rebuilds then run on a blocking thread, releasing a destination's locks once it is
//! done. Runs, rotations, `prune`, `verify`, `restore` and `sync` of those names wait for
//! them, so none acts on an archive whose manifest is still missing; `backups` and `ls`, which
//! only show what is there, do not wait. A stop ends the rebuilds at their next read; the
//! names they owed are left unrepaired, and their waiters fail with the daemon stopping.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::destination::LocalFolder;
use crate::state::Daemon;
use crate::store::{ManifestRepair, RepairPlan};

/// The repair one destination needs, found before serving.
#[derive(Debug)]
pub struct Planned {
    dir: PathBuf,
    plan: RepairPlan,
}

/// Plans the repair of `dir`: lists it and looks for each archive's manifest, reads no
/// archive. Archives it cannot repair (another user holds the manifest name) are logged now;
/// `None` when there is nothing to rebuild.
pub fn plan(dir: &Path) -> Option<Planned> {
    match crate::store::plan_manifest_repairs(&LocalFolder::new(dir)) {
        Ok(plan) => {
            for held in &plan.held {
                log(held);
            }
            (!plan.rebuild.is_empty()).then(|| Planned {
                dir: dir.to_owned(),
                plan,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!("can't check manifests in {}: {e}", dir.display());
            None
        }
    }
}

/// Takes the rotation locks of every name `planned` rebuilds, then rebuilds in the background,
/// one destination after the other, releasing each destination's locks when it is done.
/// Returns once the locks are held: call it before serving, so that nothing can come first.
/// Shutdown stops a rebuild at its next read, writing nothing for that archive; that
/// destination's names, and those of the destinations after it, stay unrepaired.
pub async fn start(daemon: &Daemon, planned: Vec<Planned>) {
    if planned.is_empty() {
        return;
    }
    let mut held = Vec::with_capacity(planned.len());
    for repair in planned {
        let names = repair.plan.names();
        let hold = daemon
            .rotation_locks
            .hold_for_repair(&repair.dir, &names)
            .await;
        held.push((repair, hold));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let shutdown = daemon.shutdown.clone();
    let watcher = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            shutdown.cancelled().await;
            stop.store(true, Ordering::Relaxed);
            tracing::info!("Stopping the manifest repair: the daemon is stopping");
        }
    });
    tokio::spawn(async move {
        for (repair, hold) in held {
            let stop = Arc::clone(&stop);
            let rebuilt = tokio::task::spawn_blocking(move || {
                let folder = LocalFolder::new(&repair.dir);
                let mut stopped = false;
                crate::store::rebuild_manifests(&folder, &repair.plan.rebuild, &stop, &mut |r| {
                    stopped |= matches!(r, ManifestRepair::Stopped { .. });
                    log(&r);
                });
                stopped
            })
            .await;
            match rebuilt {
                // Its waiters must not take the archives left without manifests as repaired.
                Ok(true) => hold.stopped(),
                Ok(false) => drop(hold),
                Err(panic) => {
                    tracing::error!("the manifest repair stopped: {panic}");
                    drop(hold);
                }
            }
        }
        watcher.abort();
    });
}

fn log(repair: &ManifestRepair) {
    match repair {
        ManifestRepair::Rebuilt { archive, .. } => {
            tracing::warn!("Rebuilt manifest for {}", archive.display());
        }
        ManifestRepair::NameHeld {
            archive,
            manifest,
            uid,
        } => tracing::error!(
            "{} has no manifest, and {} belongs to another user (uid {uid}); left as it is: \
             remove that file to have the manifest rebuilt at next start",
            archive.display(),
            manifest.display()
        ),
        ManifestRepair::Undecodable { archive, reason } => tracing::error!(
            "{} has no manifest and does not read as an archive ({reason}); left as it is",
            archive.display()
        ),
        ManifestRepair::Stopped { archive } => tracing::info!(
            "Stopped rebuilding the manifest of {}: the daemon is stopping (it is rebuilt at \
             next start)",
            archive.display()
        ),
    }
}
