//! Remembers the last verification of each archive (`<home>/verify-status.json`), for
//! `backups --long`. A cache of facts that can be recomputed: an unreadable file is logged and
//! started afresh rather than stopping the daemon.

use crate::engine::write_atomically;
use crate::store::VerifyStatus;
use proto::response::VerifyMark;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::sync::Mutex;

pub const LEDGER_FILE: &str = "verify-status.json";

#[derive(Debug)]
pub struct VerifyLedger {
    path: PathBuf,
    marks: Mutex<BTreeMap<String, VerifyMark>>,
}

impl VerifyLedger {
    pub fn load(path: PathBuf) -> Self {
        let marks = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("ignoring unreadable {}: {e}", path.display());
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Self {
            path,
            marks: Mutex::new(marks),
        }
    }

    /// Records a verification of `archive` now; a failure to save is logged, not returned.
    pub async fn record(&self, archive: &Path, status: &VerifyStatus) {
        let mut marks = self.marks.lock().await;
        // Forget archives that no longer exist, so the file does not grow forever.
        marks.retain(|path, _| Path::new(path).exists());
        marks.insert(
            archive.display().to_string(),
            VerifyMark {
                status: status_name(status).to_owned(),
                checked: chrono::Local::now().fixed_offset(),
            },
        );
        let bytes = serde_json::to_vec_pretty(&*marks).expect("marks always serialize");
        let path = self.path.clone();
        let saved = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!("can't save {}", self.path.display());
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

/// The snake_case name of a verification outcome, as the protocol reports it.
pub fn status_name(status: &VerifyStatus) -> &'static str {
    match status {
        VerifyStatus::Ok => "ok",
        VerifyStatus::ChecksumMismatch { .. } => "checksum_mismatch",
        VerifyStatus::Truncated(_) => "truncated",
        VerifyStatus::Unreadable(_) => "unreadable",
        VerifyStatus::ManifestMissing => "manifest_missing",
        VerifyStatus::ManifestInvalid(_) => "manifest_invalid",
    }
}

/// Why a verification failed, beyond its status: the two checksums, or the reader's error.
pub fn reason(status: &VerifyStatus) -> Option<String> {
    match status {
        VerifyStatus::Ok | VerifyStatus::ManifestMissing => None,
        VerifyStatus::ChecksumMismatch { expected, actual } => {
            Some(format!("manifest {expected}, file {actual}"))
        }
        VerifyStatus::Truncated(reason)
        | VerifyStatus::Unreadable(reason)
        | VerifyStatus::ManifestInvalid(reason) => Some(reason.clone()),
    }
}

/// A sentence for a verification: `OK`, or `checksum mismatch (manifest …, file …)`.
pub fn describe(status: &VerifyStatus) -> String {
    if *status == VerifyStatus::Ok {
        return "OK".to_owned();
    }
    let words = status_name(status).replace('_', " ");
    match reason(status) {
        Some(reason) => format!("{words} ({reason})"),
        None => words,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_start_with_the_status_words() {
        assert_eq!(describe(&VerifyStatus::Ok), "OK");
        assert_eq!(describe(&VerifyStatus::ManifestMissing), "manifest missing");
        assert_eq!(
            describe(&VerifyStatus::ChecksumMismatch {
                expected: "aa".into(),
                actual: "bb".into()
            }),
            "checksum mismatch (manifest aa, file bb)"
        );
        assert_eq!(
            describe(&VerifyStatus::Truncated("unexpected end".into())),
            "truncated (unexpected end)"
        );
    }
}
