//! Remembers the last verification of each archive (`<home>/verify-status.json`), for
//! `backups --long`. A cache of facts that can be recomputed: an unreadable file is logged and
//! started afresh rather than stopping the daemon. Each mark holds what the file verified was
//! ([`Fingerprint`]), so that another file put under the same name later is not shown as
//! verified.

use crate::destination::FileIdentity;
use crate::fsutil::write_atomically;
use proto::VerifyStatus;
use proto::response::VerifyMark;
use proto::schedule::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::sync::Mutex;

pub const LEDGER_FILE: &str = "verify-status.json";

/// The most marks kept: a remote's copies (`s3://…`) cannot be seen to go without a request
/// each, so beyond this many the oldest checks are forgotten.
const MOST_MARKS: usize = 10_000;

/// One archive's last verification, as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Mark {
    status: VerifyStatus,
    checked: Timestamp,
    /// The file verified; absent in marks saved by earlier versions, which are shown as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<Fingerprint>,
}

/// What tells the file verified from another put under its name later: its identity without
/// the device number, which can change across reboots (device-mapper, NFS) while the file
/// stays the same. A remote copy's `ino` is its ETag's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Fingerprint {
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

impl Fingerprint {
    fn of(identity: &FileIdentity) -> Option<Self> {
        Some(Self {
            ino: identity.ino,
            size: identity.size,
            mtime_ns: i64::try_from(identity.mtime_ns).ok()?,
        })
    }
}

type Marks = BTreeMap<String, Mark>;

#[derive(Debug)]
pub struct VerifyLedger {
    path: PathBuf,
    marks: Mutex<Marks>,
}

impl VerifyLedger {
    pub fn load(path: PathBuf) -> Self {
        let marks = match crate::fsutil::read_nofollow(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("ignoring unreadable {}: {e}", path.display());
                Marks::new()
            }),
            Err(_) => Marks::new(),
        };
        Self {
            path,
            marks: Mutex::new(marks),
        }
    }

    /// Records a verification of `archive` now, whose file was `identity` when the check
    /// began (`None`: unknown, and the mark is then shown for no file). A failure to save is
    /// logged, not returned.
    pub async fn record(
        &self,
        archive: &Path,
        identity: Option<FileIdentity>,
        status: VerifyStatus,
    ) {
        let mut marks = self.marks.lock().await;
        let key = archive.display().to_string();
        match identity.as_ref().and_then(Fingerprint::of) {
            Some(file) => {
                let checked = chrono::Local::now().fixed_offset();
                let file = Some(file);
                marks.insert(
                    key,
                    Mark {
                        status,
                        checked,
                        file,
                    },
                );
            }
            // Not knowing which file was checked, no earlier mark can be trusted for it either.
            None => {
                marks.remove(&key);
            }
        }
        let (candidates, path) = (marks.clone(), self.path.clone());
        // Looking for gone archives and saving both touch the disk: not on an async thread.
        let saved = tokio::task::spawn_blocking(move || {
            let kept = forget_gone(candidates);
            let bytes = serde_json::to_vec_pretty(&kept)?;
            write_atomically(&path, &bytes).map(|()| kept)
        })
        .await;
        match saved {
            Ok(Ok(kept)) => *marks = kept,
            Ok(Err(e)) => tracing::warn!("can't save {}: {e}", self.path.display()),
            Err(e) => tracing::warn!("can't save {}: {e}", self.path.display()),
        }
    }

    /// The last verification of `archive`, if it checked the file `identity` names now.
    pub async fn get(&self, archive: &Path, identity: Option<&FileIdentity>) -> Option<VerifyMark> {
        let marks = self.marks.lock().await;
        let mark = marks.get(&archive.display().to_string())?;
        let same_file = match mark.file {
            Some(verified) => identity.and_then(Fingerprint::of) == Some(verified),
            None => true,
        };
        same_file.then_some(VerifyMark {
            status: mark.status,
            checked: mark.checked,
        })
    }
}

/// `marks` without the local archives that no longer exist, so the file does not grow forever,
/// and within [`MOST_MARKS`] by forgetting the oldest checks.
fn forget_gone(marks: Marks) -> Marks {
    let mut kept: Vec<(String, Mark)> = marks
        .into_iter()
        .filter(|(archive, _)| {
            let path = Path::new(archive);
            // A remote copy's mark is named by its URL, not a path: kept.
            !path.is_absolute() || path.exists()
        })
        .collect();
    if kept.len() > MOST_MARKS {
        kept.sort_by_key(|(_, mark)| std::cmp::Reverse(mark.checked));
        kept.truncate(MOST_MARKS);
    }
    kept.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn mark(second: i64) -> Mark {
        Mark {
            status: VerifyStatus::Ok,
            checked: chrono::FixedOffset::east_opt(0)
                .unwrap()
                .timestamp_opt(second, 0)
                .unwrap(),
            file: None,
        }
    }

    #[test]
    fn gone_local_archives_are_forgotten_and_remote_copies_kept() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().join("docs_20250101_000000.tar.gz");
        std::fs::write(&here, b"").unwrap();
        let gone = dir.path().join("docs_20240101_000000.tar.gz");
        let remote = "s3://backups/host/docs_20250101_000000.tar.gz";
        let marks: Marks = [
            (here.display().to_string(), mark(1)),
            (gone.display().to_string(), mark(2)),
            (remote.to_owned(), mark(3)),
        ]
        .into_iter()
        .collect();
        let kept = forget_gone(marks);
        let names: Vec<&str> = kept.keys().map(String::as_str).collect();
        assert_eq!(names, [here.to_str().unwrap(), remote]);
    }

    fn identity(ino: u64, mtime_ns: i128) -> FileIdentity {
        FileIdentity {
            dev: 1,
            ino,
            size: 10,
            mtime_ns,
        }
    }

    #[tokio::test]
    async fn a_mark_is_shown_only_for_the_file_that_was_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEDGER_FILE);
        let archive = Path::new("s3://b/p/docs_20250101_000000.tar");
        let checked = identity(7, 1_000);
        let ledger = VerifyLedger::load(path.clone());
        ledger
            .record(archive, Some(checked), VerifyStatus::Ok)
            .await;
        let on_another_device = FileIdentity { dev: 2, ..checked };
        for ledger in [ledger, VerifyLedger::load(path)] {
            assert!(ledger.get(archive, Some(&checked)).await.is_some());
            assert!(
                ledger
                    .get(archive, Some(&on_another_device))
                    .await
                    .is_some()
            );
            for other in [identity(8, 1_000), identity(7, 2_000)] {
                assert_eq!(ledger.get(archive, Some(&other)).await, None);
            }
            assert_eq!(ledger.get(archive, None).await, None);
            // A check of a file whose identity was unknown leaves no mark at all.
            ledger.record(archive, None, VerifyStatus::Ok).await;
            assert_eq!(ledger.get(archive, Some(&checked)).await, None);
            ledger
                .record(archive, Some(checked), VerifyStatus::Ok)
                .await;
        }
    }

    #[tokio::test]
    async fn marks_saved_by_earlier_versions_are_shown_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEDGER_FILE);
        let archive = Path::new("s3://b/p/docs_20250101_000000.tar");
        let old = r#"{"s3://b/p/docs_20250101_000000.tar":
            {"status":"ok","checked":"2025-01-01T00:00:00+00:00"}}"#;
        std::fs::write(&path, old).unwrap();
        let ledger = VerifyLedger::load(path);
        let shown = ledger.get(archive, Some(&identity(7, 1_000))).await;
        assert_eq!(shown.map(|m| m.status), Some(VerifyStatus::Ok));
    }

    #[test]
    fn beyond_the_most_marks_the_oldest_checks_go() {
        let marks: Marks = (0..MOST_MARKS as i64 + 5)
            .map(|i| (format!("s3://b/p/docs_{i:06}.tar"), mark(i)))
            .collect();
        let kept = forget_gone(marks);
        assert_eq!(kept.len(), MOST_MARKS);
        let oldest = kept.values().map(|m| m.checked).min().unwrap();
        assert_eq!(oldest, mark(5).checked);
    }
}
