//! Scanning a backup folder for the archives the engine wrote.
//!
//! Only files whose names follow the archive grammar are listed; anything else (partials,
//! manifests, strangers) is invisible to the store, so rotation can never touch it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

use super::error::StoreError;
use crate::engine::naming::{manifest_path_for, parse_archive_name};
use crate::engine::{Manifest, TIMESTAMP_FORMAT};

/// One archive found in a backup folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveInfo {
    pub path: PathBuf,
    /// The backup name (the file-name prefix).
    pub name: String,
    /// When the backup was made: from the file name, or the manifest's `created` when the
    /// name's timestamp is not a real date.
    pub timestamp: NaiveDateTime,
    /// `gzip`, `zstd` or `none`, from the extension.
    pub compression: &'static str,
    pub size_bytes: u64,
    /// Where the manifest is or would be; it may not exist.
    pub manifest_path: PathBuf,
    /// `None` when the manifest is missing or unreadable.
    pub manifest: Option<Manifest>,
}

impl ArchiveInfo {
    /// The archive's file name, as the seed's log lines print it.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Lists the archives directly in `dir` (not recursive), oldest first, ties by path.
pub fn scan(dir: &Path) -> Result<Vec<ArchiveInfo>, StoreError> {
    let read_dir_error = |source| StoreError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let mut archives = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir_error)? {
        let entry = entry.map_err(read_dir_error)?;
        let Some(parsed) = entry.file_name().to_str().and_then(parse_archive_name) else {
            continue;
        };
        // A symlink or folder named like an archive was not written by the engine.
        let meta = match entry.metadata() {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => continue,
            // Deleted between listing and stat: it is no longer there to list.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(read_dir_error(source)),
        };
        let path = entry.path();
        let manifest_path = manifest_path_for(&path);
        let manifest = read_manifest(&manifest_path).ok();
        let timestamp = NaiveDateTime::parse_from_str(&parsed.stamp, TIMESTAMP_FORMAT)
            .ok()
            .or_else(|| {
                let created = &manifest.as_ref()?.created;
                NaiveDateTime::parse_from_str(created, TIMESTAMP_FORMAT).ok()
            });
        // Without any date it cannot be aged, so rotation must not see it.
        let Some(timestamp) = timestamp else {
            continue;
        };
        archives.push(ArchiveInfo {
            path,
            name: parsed.name,
            timestamp,
            compression: parsed.compression,
            size_bytes: meta.len(),
            manifest_path,
            manifest,
        });
    }
    archives.sort_by(|a, b| (a.timestamp, &a.path).cmp(&(b.timestamp, &b.path)));
    Ok(archives)
}

/// Groups archives by backup name (names in order), each group newest first.
pub fn group_by_name(archives: &[ArchiveInfo]) -> BTreeMap<String, Vec<ArchiveInfo>> {
    let mut groups: BTreeMap<String, Vec<ArchiveInfo>> = BTreeMap::new();
    for archive in archives {
        groups
            .entry(archive.name.clone())
            .or_default()
            .push(archive.clone());
    }
    for group in groups.values_mut() {
        sort_newest_first(group);
    }
    groups
}

/// Newest first; equal timestamps by path, descending, so the order is total.
pub(crate) fn sort_newest_first(archives: &mut [ArchiveInfo]) {
    archives.sort_by(|a, b| (b.timestamp, &b.path).cmp(&(a.timestamp, &a.path)));
}

/// Reads and parses a manifest file.
pub fn read_manifest(path: &Path) -> Result<Manifest, StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::ManifestInvalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Manifest::from_json(&bytes).map_err(|e| StoreError::ManifestInvalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{fake_manifest, stamp};

    fn touch(dir: &Path, name: &str, bytes: &[u8]) {
        fs::write(dir.join(name), bytes).unwrap();
    }

    #[test]
    fn lists_only_archives_and_parses_names_from_the_right() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(d, "my_docs_20250102_030405.tar.gz", b"12345");
        touch(d, "my_docs_20250102_030405.json", b"{}");
        touch(d, "photos_20250101_000000.tar.zst", b"1");
        touch(d, "plain_20241231_235959.tar", b"");
        touch(d, "my_docs_20250103_000000.tar.gz.partial", b"x");
        touch(d, "notes.txt", b"x");
        touch(d, "x_20261399_000000.tar.gz", b"x"); // not a date, no manifest
        fs::create_dir(d.join("dir_20250101_000000.tar")).unwrap();
        std::os::unix::fs::symlink("notes.txt", d.join("link_20250101_000000.tar")).unwrap();

        let list = scan(d).unwrap();
        let names: Vec<_> = list.iter().map(ArchiveInfo::file_name).collect();
        assert_eq!(
            names,
            [
                "plain_20241231_235959.tar",
                "photos_20250101_000000.tar.zst",
                "my_docs_20250102_030405.tar.gz"
            ]
        );
        let docs = &list[2];
        assert_eq!(docs.name, "my_docs");
        assert_eq!(docs.timestamp, stamp("20250102_030405"));
        assert_eq!(docs.compression, "gzip");
        assert_eq!(docs.size_bytes, 5);
        assert_eq!(docs.manifest_path, d.join("my_docs_20250102_030405.json"));
        assert_eq!(docs.manifest, None, "'{{}}' is not a valid manifest");
        assert_eq!(list[1].compression, "zstd");
        assert_eq!(list[0].compression, "none");
    }

    #[test]
    fn manifest_created_is_the_fallback_for_impossible_dates() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(d, "x_20261399_000000.tar.gz", b"x");
        let manifest = fake_manifest("x", "20260101_120000", b"x");
        fs::write(
            d.join("x_20261399_000000.json"),
            manifest.to_json().unwrap(),
        )
        .unwrap();
        let list = scan(d).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].timestamp, stamp("20260101_120000"));
        assert_eq!(list[0].manifest.as_ref(), Some(&manifest));
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = scan(&missing).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn groups_are_by_name_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(d, "a_20250101_000000.tar.gz", b"");
        touch(d, "a_20250103_000000.tar.gz", b"");
        touch(d, "a_b_20250102_000000.tar.gz", b"");
        touch(d, "a_20250102_000000.tar.zst", b"");
        let groups = group_by_name(&scan(d).unwrap());
        assert_eq!(groups.keys().collect::<Vec<_>>(), ["a", "a_b"]);
        let a: Vec<_> = groups["a"].iter().map(ArchiveInfo::file_name).collect();
        assert_eq!(
            a,
            [
                "a_20250103_000000.tar.gz",
                "a_20250102_000000.tar.zst",
                "a_20250101_000000.tar.gz"
            ]
        );
    }
}
