//! One rotation at a time per backup name and destination folder.
//!
//! Runs of one name finish in any order; each rotates what it saw before it wrote. Holding
//! the name's lock while listing, planning and deleting keeps two rotations from planning on
//! the same listing. A folder is keyed by device and inode, so two spellings of one ad-hoc
//! `--destination` (a symlink, `..`) share a lock.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Which folder: its device and inode, or its path when it cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FolderKey {
    Inode(u64, u64),
    Path(PathBuf),
    /// An offsite remote's `s3://BUCKET/PREFIX`.
    Remote(String),
}

impl FolderKey {
    fn of(folder: &Path) -> Self {
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
}

/// Held while a rotation of one name runs.
pub type RotationGuard = OwnedMutexGuard<()>;

impl RotationLocks {
    /// Waits for the lock of `name` in `folder`.
    pub async fn lock(&self, folder: &Path, name: &str) -> RotationGuard {
        let lock = self.entry(FolderKey::of(folder), name);
        lock.lock_owned().await
    }

    /// Waits for the locks of every name in `names`, in order (a run holds one lock at a
    /// time, so taking several in a fixed order cannot deadlock).
    pub async fn lock_all(&self, folder: &Path, names: &BTreeSet<String>) -> Vec<RotationGuard> {
        let key = FolderKey::of(folder);
        let mut guards = Vec::with_capacity(names.len());
        for name in names {
            guards.push(self.entry(key.clone(), name).lock_owned().await);
        }
        guards
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
}
