//! Crash-safe file creation: `.partial` files, no-clobber publish, atomic small writes.
//!
//! An archive is written as `<final>.partial` and only renamed to its final name once
//! complete and synced, so a final name always means a whole archive; a crash leaves at
//! most a `.partial`, which [`remove_stale_partials`] sweeps at daemon start.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const PARTIAL_SUFFIX: &str = ".partial";

/// `<path>.partial`
pub fn partial_path(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(PARTIAL_SUFFIX);
    PathBuf::from(s)
}

/// A `.partial` file that is deleted when dropped unless [`PartialFile::publish`]ed.
#[derive(Debug)]
pub struct PartialFile {
    partial: PathBuf,
    target: PathBuf,
    armed: bool,
}

impl PartialFile {
    /// Creates `<target>.partial`; fails if it exists (another run owns it).
    pub fn create(target: &Path) -> io::Result<(Self, File)> {
        let partial = partial_path(target);
        // Private like the manifest: an archive holds a copy of the user's data.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)?;
        Ok((
            PartialFile {
                partial,
                target: target.to_owned(),
                armed: true,
            },
            file,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// Renames the (already synced) partial file to its final name, refusing to replace
    /// an existing file, then syncs the folder so the rename survives a crash.
    pub fn publish(mut self) -> io::Result<PathBuf> {
        rename_noreplace(&self.partial, &self.target)?;
        self.armed = false;
        if let Some(dir) = parent_dir(&self.target) {
            sync_dir(dir)?;
        }
        Ok(self.target.clone())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: a leftover is swept by `remove_stale_partials` at next start.
            let _ = fs::remove_file(&self.partial);
        }
    }
}

/// Renames without ever replacing `to`: `renameat2(RENAME_NOREPLACE)`, falling back to
/// `link` + `unlink` on file systems that lack it (both fail if `to` exists).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {}
            Err(e) => return Err(e.into()),
        }
    }
    fs::hard_link(from, to)?;
    fs::remove_file(from)
}

fn parent_dir(path: &Path) -> Option<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

/// Flushes a folder's entries (creations, renames) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same folder is
/// written, synced and renamed over `path`, then the folder is synced. Readers see the
/// old content or the new, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_temp(path, bytes, true)
}

/// Like [`write_atomically`], but fails with `AlreadyExists` instead of replacing a file.
pub fn write_new_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_temp(path, bytes, false)
}

fn write_via_temp(path: &Path, bytes: &[u8], replace: bool) -> io::Result<()> {
    let dir = parent_dir(path)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    if replace {
        tmp.persist(path).map_err(|e| e.error)?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| e.error)?;
    }
    sync_dir(dir)
}

/// Deletes every partial archive (`<name>_<YYYYMMDD_HHMMSS>.tar….partial`) directly in `dir`
/// and returns their paths.
pub fn remove_stale_partials(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        // Only what the engine names `<name>_<YYYYMMDD_HHMMSS>.tar….partial`: a user's own
        // `thesis.partial` in a destination folder is not ours to delete.
        let is_ours = entry.file_name().to_str().is_some_and(|name| {
            name.strip_suffix(PARTIAL_SUFFIX)
                .is_some_and(|archive| super::naming::parse_archive_name(archive).is_some())
        });
        if is_ours && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_is_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.tar");
        let (partial, mut file) = PartialFile::create(&target).unwrap();
        file.write_all(b"x").unwrap();
        assert!(partial.path().exists());
        assert!(partial.path().ends_with("a.tar.partial"));
        drop(partial);
        assert!(!partial_path(&target).exists());
        assert!(!target.exists());
    }

    #[test]
    fn publish_renames_and_never_clobbers() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.tar");
        let (partial, mut file) = PartialFile::create(&target).unwrap();
        file.write_all(b"new").unwrap();
        assert_eq!(partial.publish().unwrap(), target);
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert!(!partial_path(&target).exists());

        let (partial, mut file) = PartialFile::create(&target).unwrap();
        file.write_all(b"newer").unwrap();
        let err = partial.publish().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert!(
            !partial_path(&target).exists(),
            "dropped partial is removed"
        );
    }

    #[test]
    fn partial_create_fails_if_one_exists() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.tar");
        let _first = PartialFile::create(&target).unwrap();
        assert!(PartialFile::create(&target).is_err());
    }

    #[test]
    fn write_atomically_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedule.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn remove_stale_partials_removes_only_partial_archives() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "a_20250101_000000.tar.gz.partial",
            "my_job_20250101_000000.tar.partial",
            "b.partial",
            "thesis.partial",
            "keep_20250101_000000.tar.gz",
            "keep_20250101_000000.json",
            "partial",
        ] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        fs::create_dir(dir.path().join("d_20250101_000000.tar.partial")).unwrap();
        let removed = remove_stale_partials(dir.path()).unwrap();
        assert_eq!(
            removed,
            vec![
                dir.path().join("a_20250101_000000.tar.gz.partial"),
                dir.path().join("my_job_20250101_000000.tar.partial")
            ]
        );
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "b.partial",
                "d_20250101_000000.tar.partial",
                "keep_20250101_000000.json",
                "keep_20250101_000000.tar.gz",
                "partial",
                "thesis.partial"
            ]
        );
    }
}
