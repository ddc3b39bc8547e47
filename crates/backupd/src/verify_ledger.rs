//! Remembers the last verification of each archive (`<home>/verify-status.json`), for
//! `backups --long`. A cache of facts that can be recomputed: an unreadable file is logged and
//! started afresh rather than stopping the daemon.

use crate::fsutil::write_atomically;
use proto::VerifyStatus;
use proto::response::VerifyMark;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::sync::Mutex;

pub const LEDGER_FILE: &str = "verify-status.json";

/// The most marks kept: a remote's copies (`s3://…`) cannot be seen to go without a request
/// each, so beyond this many the oldest checks are forgotten.
const MOST_MARKS: usize = 10_000;

type Marks = BTreeMap<String, VerifyMark>;

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

    /// Records a verification of `archive` now; a failure to save is logged, not returned.
    pub async fn record(&self, archive: &Path, status: VerifyStatus) {
        let mut marks = self.marks.lock().await;
        marks.insert(
            archive.display().to_string(),
            VerifyMark {
                status,
                checked: chrono::Local::now().fixed_offset(),
            },
        );
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

    pub async fn get(&self, archive: &Path) -> Option<VerifyMark> {
        self.marks
            .lock()
            .await
            .get(&archive.display().to_string())
            .cloned()
    }
}

/// `marks` without the local archives that no longer exist, so the file does not grow forever,
/// and within [`MOST_MARKS`] by forgetting the oldest checks.
fn forget_gone(marks: Marks) -> Marks {
    let mut kept: Vec<(String, VerifyMark)> = marks
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

    fn mark(second: i64) -> VerifyMark {
        VerifyMark {
            status: VerifyStatus::Ok,
            checked: chrono::FixedOffset::east_opt(0)
                .unwrap()
                .timestamp_opt(second, 0)
                .unwrap(),
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
