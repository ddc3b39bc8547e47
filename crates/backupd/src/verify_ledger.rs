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
            // Forget archives that no longer exist, so the file does not grow forever.
            let kept: Marks = candidates
                .into_iter()
                .filter(|(archive, _)| Path::new(archive).exists())
                .collect();
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
