//! One rotation at a time per backup name and destination folder.
//!
//! Runs of one name finish in any order; each rotates what it saw before it wrote. Holding
//! the name's lock while listing, planning and deleting keeps two rotations from planning on
//! the same listing. A folder is keyed by device and inode, so two spellings of one ad-hoc
//! `--destination` (a symlink, `..`) share a lock.
//!
//! The start-up manifest repair holds the locks of the names it rebuilds while it runs beside
//! serving ([`RotationLocks::hold_for_repair`]); whoever must not see an archive before its
//! manifest is back waits for them ([`RotationLocks::wait_for_repair`]), and says so in the log.
//! A repair a stop cut short, or one that failed, leaves its names unrepaired: their waiters
//! fail, acting on nothing, until the next start repairs them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Which folder: its device and inode, or its path when it cannot be read. Two spellings of
/// one folder (a symlink and its target) have one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FolderKey {
    Inode(u64, u64),
    Path(PathBuf),
    /// An offsite remote's `s3://BUCKET/PREFIX`.
    Remote(String),
}

impl FolderKey {
    pub fn of(folder: &Path) -> Self {
        // A remote's location (an offsite-only run's) is its URL, never a path to look up.
        if let Some(url) = folder.to_str().filter(|text| text.starts_with("s3://")) {
            return FolderKey::Remote(url.to_owned());
        }
        match std::fs::metadata(folder) {
            Ok(meta) => FolderKey::Inode(meta.dev(), meta.ino()),
            Err(_) => FolderKey::Path(folder.to_owned()),
        }
    }
}

/// One backup name in one folder.
type LockKey = (FolderKey, String);

/// The rotation locks of the daemon, created on first use.
#[derive(Debug, Default)]
pub struct RotationLocks {
    locks: Mutex<HashMap<LockKey, Arc<AsyncMutex<()>>>>,
    /// The locks the start-up manifest repair holds.
    repairing: Arc<Mutex<HashSet<LockKey>>>,
    /// The names whose repair ended before their manifests were back, and why: still without
    /// them, to the end.
    unrepaired: Arc<Mutex<HashMap<LockKey, Unfinished>>>,
}

/// Why the start-up repair of a name ended before its manifests were back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// The daemon is stopping.
    Stopped,
    /// The repair itself failed (a bug: its thread panicked); the log says how.
    Failed,
}

/// The start-up repair of a name ended before its manifests were back.
#[derive(Debug, thiserror::Error)]
pub struct RepairUnfinished {
    pub name: String,
    pub folder: PathBuf,
    pub why: Unfinished,
}

impl fmt::Display for RepairUnfinished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, folder) = (&self.name, self.folder.display());
        match self.why {
            Unfinished::Stopped => write!(
                f,
                "the daemon is stopping: the manifests of {name} in {folder} were not rebuilt \
                 (they are at next start)"
            ),
            Unfinished::Failed => write!(
                f,
                "the start-up repair of the manifests of {name} in {folder} failed (see the \
                 daemon's log); nothing was done, so as not to act on archives without their \
                 manifests: restart the daemon to repair them again"
            ),
        }
    }
}

/// Held while a rotation of one name runs.
pub type RotationGuard = OwnedMutexGuard<()>;

/// The locks of the names whose manifests the start-up repair rebuilds in one folder; dropping
/// it ends the repair's hold.
#[derive(Debug)]
pub struct RepairHold {
    keys: Vec<LockKey>,
    repairing: Arc<Mutex<HashSet<LockKey>>>,
    unrepaired: Arc<Mutex<HashMap<LockKey, Unfinished>>>,
    _guards: Vec<RotationGuard>,
}

impl RepairHold {
    /// Ends the hold of a repair that ended before its manifests were back (`why`): its
    /// waiters then fail rather than act on archives still without manifests.
    pub fn unfinished(self, why: Unfinished) {
        // Marked before the locks go: no waiter sees them free and the names unmarked.
        let mut unrepaired = self
            .unrepaired
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        unrepaired.extend(self.keys.iter().map(|key| (key.clone(), why)));
    }
}

impl Drop for RepairHold {
    fn drop(&mut self) {
        // Unmarked before the locks go (fields drop after this): nobody waits unannounced.
        let mut repairing = self
            .repairing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for key in &self.keys {
            repairing.remove(key);
        }
    }
}

impl RotationLocks {
    /// Waits for the lock of `name` in `folder`.
    pub async fn lock(&self, folder: &Path, name: &str) -> RotationGuard {
        self.acquire((FolderKey::of(folder), name.to_owned()), folder)
            .await
    }

    /// Waits for the locks of every name in `names`, in order (a run holds one lock at a
    /// time, so taking several in a fixed order cannot deadlock).
    pub async fn lock_all(&self, folder: &Path, names: &BTreeSet<String>) -> Vec<RotationGuard> {
        let key = FolderKey::of(folder);
        let mut guards = Vec::with_capacity(names.len());
        for name in names {
            guards.push(self.acquire((key.clone(), name.clone()), folder).await);
        }
        guards
    }

    /// Takes the locks of `names` in `folder` for the start-up manifest repair, until the
    /// hold is dropped. Taken before the daemon serves, so nothing else holds them yet.
    pub async fn hold_for_repair(&self, folder: &Path, names: &BTreeSet<String>) -> RepairHold {
        let guards = self.lock_all(folder, names).await;
        let key = FolderKey::of(folder);
        let keys: Vec<LockKey> = names.iter().map(|n| (key.clone(), n.clone())).collect();
        self.repairing_now().extend(keys.iter().cloned());
        RepairHold {
            keys,
            repairing: Arc::clone(&self.repairing),
            unrepaired: Arc::clone(&self.unrepaired),
            _guards: guards,
        }
    }

    /// Returns once the start-up manifest repair is done with `name` in `folder` (with
    /// `None`, with every name there): at once when it holds none of them. Fails when that
    /// repair was cut short or failed: the archives are still without their manifests.
    pub async fn wait_for_repair(
        &self,
        folder: &Path,
        name: Option<&str>,
    ) -> Result<(), RepairUnfinished> {
        if self.repairing_now().is_empty() && self.unrepaired_now().is_empty() {
            return Ok(());
        }
        let folder_key = FolderKey::of(folder);
        let concerned = |(f, n): &&LockKey| *f == folder_key && name.is_none_or(|name| n == name);
        let held: Vec<LockKey> = self
            .repairing_now()
            .iter()
            .filter(concerned)
            .cloned()
            .collect();
        for key in held {
            drop(self.acquire(key, folder).await);
        }
        match self.unrepaired_now().iter().find(|(key, _)| concerned(key)) {
            Some(((_, name), why)) => Err(RepairUnfinished {
                name: name.clone(),
                folder: folder.to_owned(),
                why: *why,
            }),
            None => Ok(()),
        }
    }

    /// Waits for the lock of `key`, saying so when the start-up repair holds it: that wait
    /// may be long (the repair reads whole archives).
    async fn acquire(&self, key: LockKey, folder: &Path) -> RotationGuard {
        let lock = self.entry(key.0.clone(), &key.1);
        if self.repairing_now().contains(&key) {
            tracing::info!(
                "Waiting for the manifests of {} in {} to be rebuilt (start-up repair)",
                key.1,
                folder.display()
            );
        }
        lock.lock_owned().await
    }

    fn repairing_now(&self) -> std::sync::MutexGuard<'_, HashSet<LockKey>> {
        self.repairing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unrepaired_now(&self) -> std::sync::MutexGuard<'_, HashMap<LockKey, Unfinished>> {
        self.unrepaired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// As [`lock_all`](Self::lock_all), for the names of an offsite remote (`s3://…`).
    pub async fn lock_all_remote(&self, url: &str, names: &BTreeSet<String>) -> Vec<RotationGuard> {
        let key = FolderKey::Remote(url.to_owned());
        let mut guards = Vec::with_capacity(names.len());
        for name in names {
            guards.push(self.entry(key.clone(), name).lock_owned().await);
        }
        guards
    }

    fn entry(&self, key: FolderKey, name: &str) -> Arc<AsyncMutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget locks nobody holds or waits for, so the map stays as small as the work.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(locks.entry((key, name.to_owned())).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_offsite_only_run_s_rotation_and_a_remote_one_share_a_lock() {
        let locks = RotationLocks::default();
        let url = "s3://bucket/host";
        let held = locks.lock(Path::new(url), "docs").await;
        let names = BTreeSet::from(["docs".to_owned()]);
        let remote = locks.lock_all_remote(url, &names);
        let waited = tokio::time::timeout(Duration::from_millis(50), remote);
        assert!(waited.await.is_err(), "a remote rotation of the name waits");
        drop(held);
        let _remote = locks.lock_all_remote(url, &names).await;
    }

    #[tokio::test]
    async fn one_rotation_per_name_and_folder() {
        let dir = tempfile::tempdir().unwrap();
        let locks = RotationLocks::default();
        let held = locks.lock(dir.path(), "docs").await;
        // Another spelling of the same folder waits.
        let same = dir.path().join(".");
        let waited = tokio::time::timeout(Duration::from_millis(50), locks.lock(&same, "docs"));
        assert!(waited.await.is_err(), "the same name and folder waits");
        // Another name, or another folder, does not.
        let other = tempfile::tempdir().unwrap();
        let _a = locks.lock(dir.path(), "photos").await;
        let _b = locks.lock(other.path(), "docs").await;
        drop(held);
        let names = BTreeSet::from(["docs".to_owned()]);
        let all = tokio::time::timeout(Duration::from_secs(5), locks.lock_all(&same, &names));
        assert_eq!(all.await.expect("free once released").len(), 1);
    }

    #[tokio::test]
    async fn the_repair_s_names_wait_for_it_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let locks = RotationLocks::default();
        let names = BTreeSet::from(["docs".to_owned()]);
        let hold = locks.hold_for_repair(dir.path(), &names).await;
        let short = Duration::from_millis(50);
        let same = dir.path().join(".");
        let waits = |name| tokio::time::timeout(short, locks.wait_for_repair(&same, name));
        assert!(waits(Some("docs")).await.is_err(), "its name waits");
        assert!(waits(None).await.is_err(), "every name of the folder waits");
        let rotation = tokio::time::timeout(short, locks.lock(&same, "docs"));
        assert!(rotation.await.is_err(), "a rotation of its name waits");
        let photos = waits(Some("photos")).await;
        assert!(photos.unwrap().is_ok(), "another name does not");
        let other = tempfile::tempdir().unwrap();
        let elsewhere = locks.wait_for_repair(other.path(), Some("docs"));
        let elsewhere = tokio::time::timeout(short, elsewhere).await;
        assert!(elsewhere.unwrap().is_ok());

        drop(hold);
        let patience = Duration::from_secs(5);
        let done = tokio::time::timeout(patience, locks.wait_for_repair(&same, None));
        let done = done.await.expect("free once the repair is done");
        assert!(done.is_ok(), "done, not stopped");
        let rotation = tokio::time::timeout(patience, locks.lock(&same, "docs"));
        rotation.await.expect("free once the repair is done");
    }

    #[tokio::test]
    async fn the_waiters_of_a_stopped_repair_fail_before_and_after_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let locks = Arc::new(RotationLocks::default());
        let names = BTreeSet::from(["docs".to_owned()]);
        let hold = locks.hold_for_repair(dir.path(), &names).await;
        let folder = dir.path().to_owned();
        let waiting = tokio::spawn({
            let (locks, folder) = (Arc::clone(&locks), folder.clone());
            async move { locks.wait_for_repair(&folder, Some("docs")).await }
        });
        tokio::task::yield_now().await;
        hold.unfinished(Unfinished::Stopped);

        let patience = Duration::from_secs(5);
        let waited = tokio::time::timeout(patience, waiting).await.unwrap();
        let stopped = waited.unwrap().expect_err("released as stopped, not done");
        assert_eq!(stopped.name, "docs");
        assert_eq!(stopped.why, Unfinished::Stopped);
        let later = locks.wait_for_repair(&folder.join("."), None).await;
        assert!(later.is_err(), "a later waiter fails too");
        let photos = locks.wait_for_repair(&folder, Some("photos")).await;
        assert!(photos.is_ok(), "another name was never repaired");
    }
}
