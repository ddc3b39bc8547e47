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
//! names they owed are left unrepaired, and their waiters fail with the daemon stopping. The
//! names of a rebuild that failed stay unrepaired too, until the next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

use crate::destination::{Destination, LocalFolder};
use crate::rotation_locks::{RotationLocks, Unfinished};
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
/// destination's names, and those of the destinations after it, stay unrepaired. So do the
/// names of a destination whose rebuild failed (panicked).
pub async fn start(daemon: &Daemon, planned: Vec<Planned>) {
    start_with(
        &daemon.rotation_locks,
        daemon.shutdown.clone(),
        planned,
        crate::store::rebuild_manifests,
    )
    .await;
}

/// How one destination's manifests are rebuilt: [`crate::store::rebuild_manifests`], but for
/// tests of a rebuild that fails.
type Rebuild = fn(&dyn Destination, &[String], &Arc<AtomicBool>, &mut dyn FnMut(ManifestRepair));

async fn start_with(
    locks: &RotationLocks,
    shutdown: CancellationToken,
    planned: Vec<Planned>,
    rebuild: Rebuild,
) {
    if planned.is_empty() {
        return;
    }
    let mut held = Vec::with_capacity(planned.len());
    for repair in planned {
        let names = repair.plan.names();
        let hold = locks.hold_for_repair(&repair.dir, &names).await;
        held.push((repair, hold));
    }
    let stop = Arc::new(AtomicBool::new(false));
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
            let dir = repair.dir.clone();
            let rebuilt = tokio::task::spawn_blocking(move || {
                let folder = LocalFolder::new(&repair.dir);
                let mut stopped = false;
                rebuild(&folder, &repair.plan.rebuild, &stop, &mut |r| {
                    stopped |= matches!(r, ManifestRepair::Stopped { .. });
                    log(&r);
                });
                stopped
            })
            .await;
            // Its waiters must not take the archives left without manifests as repaired.
            match rebuilt {
                Ok(true) => hold.unfinished(Unfinished::Stopped),
                Ok(false) => drop(hold),
                Err(panic) => {
                    tracing::error!(
                        "the manifest repair of {} failed: {panic}; its archives without \
                         manifests are left alone until the next start",
                        dir.display()
                    );
                    hold.unfinished(Unfinished::Failed);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rotation_locks::RepairUnfinished;

    fn panics(
        _: &dyn Destination,
        _: &[String],
        _: &Arc<AtomicBool>,
        _: &mut dyn FnMut(ManifestRepair),
    ) {
        panic!("a bug in the rebuild");
    }

    /// What a waiter for `name` in `dir` gets once `rebuild` ran on a planned repair there.
    async fn waited_after(rebuild: Rebuild) -> Result<(), RepairUnfinished> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("docs_20250101_000000.tar.gz"), b"not read").unwrap();
        let planned = plan(dir.path()).expect("an archive without its manifest");
        let locks = RotationLocks::default();
        start_with(&locks, CancellationToken::new(), vec![planned], rebuild).await;
        let waited = locks.wait_for_repair(dir.path(), Some("docs"));
        tokio::time::timeout(Duration::from_secs(30), waited)
            .await
            .expect("the repair ends")
    }

    #[tokio::test]
    async fn a_rebuild_that_panics_leaves_its_names_unrepaired() {
        let failed = waited_after(panics)
            .await
            .expect_err("not taken as repaired");
        assert_eq!(failed.why, Unfinished::Failed);
        assert_eq!(failed.name, "docs");
        assert!(
            failed.to_string().contains("restart the daemon"),
            "{failed}"
        );
    }

    #[tokio::test]
    async fn a_rebuild_that_ends_releases_its_names() {
        fn nothing(
            _: &dyn Destination,
            _: &[String],
            _: &Arc<AtomicBool>,
            _: &mut dyn FnMut(ManifestRepair),
        ) {
        }
        waited_after(nothing).await.expect("repaired");
    }
}
