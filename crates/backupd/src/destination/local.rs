//! A destination that is a local folder.
//!
//! An archive is written as `<final>.partial` and only renamed to its final name once
//! complete and synced, so a final name always means a whole archive; a crash leaves at
//! most a `.partial`, which [`LocalFolder::remove_stale_partials`] sweeps at daemon start. A
//! rotation killed between an archive and its manifest leaves the manifest, which
//! [`LocalFolder::remove_stale_manifests`] sweeps then.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, flock, openat, unlinkat};

use super::background_sync::SyncedFile;
use super::{
    Destination, FileIdentity, Holder, MANIFEST_SIZE_LIMIT, PendingArchive, PublishError, Removal,
    manifest_too_large,
};
use crate::format::Manifest;
use crate::format::naming::{
    archives_sharing, is_partial_archive, parse_archive_name, partial_name,
};
use crate::fsutil::{rename_noreplace, sync_dir, trusted_owners, write_new_atomically};

/// Size of the buffer in front of an archive file: few, large writes.
const FILE_BUFFER: usize = 1 << 20;
/// Size of the buffer behind an archive being read.
const READ_BUFFER: usize = 256 * 1024;

/// A folder holding archives and manifests side by side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFolder {
    dir: PathBuf,
}

impl LocalFolder {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder of an archive given by path, and the archive's file name in it.
    pub fn containing(archive: &Path) -> Option<(Self, String)> {
        let file = archive.file_name()?.to_str()?.to_owned();
        let dir = archive.parent().filter(|d| !d.as_os_str().is_empty())?;
        Some((Self::new(dir), file))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder, opened once so that a check and a removal name the same folder.
    fn open_dir(&self) -> io::Result<std::os::fd::OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(rustix::fs::open(&self.dir, flags, Mode::empty())?)
    }

    /// Who can have written our files: the daemon's user, and root and the folder's owner, who
    /// could delete them anyway. Anyone else's file is not ours whatever its name: in a folder
    /// others may write (sticky, as /tmp), a planted "newer archive" must never count towards
    /// what rotation keeps, nor a user's file named like a partial be swept.
    fn trusted_owners(&self) -> io::Result<[u32; 3]> {
        trusted_owners(&self.dir)
    }

    /// Opens `file` in the folder for reading, only if it is a regular file: never through a
    /// link, and never waiting on a FIFO, which anyone able to write the folder could plant.
    fn open_regular(&self, file: &str) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let opened = match openat(self.open_dir()?, file, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::LOOP) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is a symbolic link", self.dir.join(file).display()),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if !opened.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", self.dir.join(file).display()),
            ));
        }
        Ok(opened)
    }

    /// Deletes every partial archive (`<name>_<YYYYMMDD_HHMMSS>.tar….partial`) directly in the
    /// folder that no one is writing, and returns their paths. A user's own `thesis.partial`
    /// is not ours to delete, nor a partial another daemon sharing the folder still writes:
    /// its writer holds a lock on it.
    pub fn remove_stale_partials(&self) -> io::Result<Vec<PathBuf>> {
        let trusted = self.trusted_owners()?;
        let mut removed = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_partial_archive(&name) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !meta.is_file() || !trusted.contains(&meta.uid()) {
                continue;
            }
            // Held until the file is gone, so no writer can take it up meanwhile.
            let Ok(partial) = self.open_regular(&name) else {
                continue;
            };
            if flock(&partial, FlockOperation::NonBlockingLockExclusive).is_err() {
                continue;
            }
            fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
        removed.sort();
        Ok(removed)
    }

    /// Deletes every manifest of ours directly in the folder whose archive is gone, and
    /// returns their paths: what a rotation killed between unlinking an archive and its
    /// manifest leaves. A manifest is written only once its archive is published, so no live
    /// backup lacks it. Ours means named `<name>_<YYYYMMDD_HHMMSS>.json`, a regular file of
    /// [`Self::trusted_owners`] that reads as a manifest (a user's own JSON file named so is
    /// not). Any entry under a name of its stem's archives (whatever codec, encrypted or not,
    /// whoever's) keeps it.
    pub fn remove_stale_manifests(&self) -> io::Result<Vec<PathBuf>> {
        let trusted = self.trusted_owners()?;
        let mut removed = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let archives = archives_sharing(&name);
            let named_as_manifest = name.ends_with(".json")
                && archives
                    .first()
                    .is_some_and(|a| parse_archive_name(a).is_some());
            if !named_as_manifest {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !meta.is_file() || !trusted.contains(&meta.uid()) {
                continue;
            }
            if self.holder(&archives)?.is_some() {
                continue;
            }
            let reads_as_manifest = self
                .get(&name)
                .is_ok_and(|bytes| Manifest::from_json(&bytes).is_ok());
            if !reads_as_manifest {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => removed.push(entry.path()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        removed.sort();
        Ok(removed)
    }
}

impl Destination for LocalFolder {
    fn location(&self) -> PathBuf {
        self.dir.clone()
    }

    fn path_of(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn files(&self) -> io::Result<Vec<(String, u64)>> {
        let trusted = self.trusted_owners()?;
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // A symlink or folder named like an archive was not written by backupd.
            match entry.metadata() {
                Ok(meta) if meta.is_file() && trusted.contains(&meta.uid()) => {
                    files.push((name, meta.len()));
                }
                Ok(_) => {}
                // Deleted between listing and stat: it is no longer there to list.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(files)
    }

    fn any_exists(&self, files: &[String]) -> io::Result<bool> {
        Ok(self.holder(files)? == Some(Holder::Ours))
    }

    fn holder(&self, files: &[String]) -> io::Result<Option<Holder>> {
        let trusted = self.trusted_owners()?;
        let mut stranger = None;
        for file in files {
            match fs::symlink_metadata(self.dir.join(file)) {
                Ok(meta) if trusted.contains(&meta.uid()) => return Ok(Some(Holder::Ours)),
                Ok(meta) => {
                    stranger.get_or_insert_with(|| Holder::Stranger {
                        file: file.clone(),
                        uid: meta.uid(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(stranger)
    }

    fn rename_new(&self, from: &str, to: &str) -> io::Result<()> {
        rename_noreplace(&self.dir.join(from), &self.dir.join(to))?;
        sync_dir(&self.dir)
    }

    fn open(&self, file: &str) -> io::Result<Box<dyn Read + Send>> {
        let file = self.open_regular(file)?;
        Ok(Box::new(BufReader::with_capacity(READ_BUFFER, file)))
    }

    fn get(&self, file: &str) -> io::Result<Vec<u8>> {
        let opened = self.open_regular(file)?;
        let size = opened.metadata()?.len();
        if size > MANIFEST_SIZE_LIMIT {
            return Err(manifest_too_large(file, size));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // A file still growing stops at the limit too.
        opened
            .take(MANIFEST_SIZE_LIMIT + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MANIFEST_SIZE_LIMIT {
            return Err(manifest_too_large(file, bytes.len() as u64));
        }
        Ok(bytes)
    }

    fn put_new(&self, file: &str, bytes: &[u8]) -> io::Result<()> {
        write_new_atomically(&self.dir.join(file), bytes)
    }

    fn begin(&self, archive: &str) -> io::Result<Box<dyn PendingArchive>> {
        Ok(Box::new(PartialFile::create(&self.dir.join(archive))?))
    }

    fn remove(&self, file: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(file)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn sync(&self) -> io::Result<()> {
        sync_dir(&self.dir)
    }

    fn identity(&self, file: &str) -> io::Result<FileIdentity> {
        identity_at(&self.open_dir()?, file)
    }

    fn remove_if_same(&self, file: &str, expected: &FileIdentity) -> io::Result<Removal> {
        let dir = self.open_dir()?;
        match identity_at(&dir, file) {
            Ok(found) if found == *expected => {}
            Ok(_) => return Ok(Removal::Replaced),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removal::Gone),
            Err(e) => return Err(e),
        }
        // Our writers never replace a name (no-replace renames, create-only files), so
        // between the check and the unlink the name can only change hands by being freed
        // first; the window is the two system calls.
        match unlinkat(&dir, file, AtFlags::empty()) {
            Ok(()) => Ok(Removal::Removed),
            Err(rustix::io::Errno::NOENT) => Ok(Removal::Gone),
            Err(e) => Err(e.into()),
        }
    }
}

/// The identity of `file` in `dir`, read from a handle on the name itself (`O_PATH`, no
/// symlink followed, no read permission needed). Only a regular file has one.
fn identity_at(dir: &std::os::fd::OwnedFd, file: &str) -> io::Result<FileIdentity> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let handle = openat(dir, file, flags, Mode::empty())?;
    let stat = rustix::fs::fstat(&handle)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{file} is not a regular file"),
        ));
    }
    Ok(FileIdentity {
        dev: stat.st_dev,
        ino: stat.st_ino,
        size: u64::try_from(stat.st_size).unwrap_or(0),
        mtime_ns: i128::from(stat.st_mtime) * 1_000_000_000 + i128::from(stat.st_mtime_nsec),
    })
}

/// `<target>.partial`, deleted when dropped unless published.
#[derive(Debug)]
struct PartialFile {
    partial: PathBuf,
    target: PathBuf,
    file: BufWriter<SyncedFile>,
    id: Option<(u64, u64)>,
    armed: bool,
}

impl PartialFile {
    /// Creates `<target>.partial`; fails if it exists (another run owns it).
    fn create(target: &Path) -> io::Result<Self> {
        let file_name = target.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "archive name is not UTF-8")
        })?;
        let partial = target.with_file_name(partial_name(file_name));
        // Private like the manifest: an archive holds a copy of the user's data.
        // Readable too: a rewritten archive is hashed again from the file.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)?;
        // Until the file is closed: a daemon starting meanwhile on another home that shares
        // this folder must not sweep it as stale. Best effort, as that sweep's check is.
        let _ = flock(&file, FlockOperation::NonBlockingLockExclusive);
        let id = file.metadata().ok().map(|m| (m.dev(), m.ino()));
        Ok(Self {
            partial,
            target: target.to_owned(),
            file: BufWriter::with_capacity(FILE_BUFFER, SyncedFile::new(file)),
            id,
            armed: true,
        })
    }

    fn write_error(&self, source: io::Error) -> PublishError {
        PublishError::Io {
            path: self.partial.clone(),
            source,
        }
    }
}

impl Write for PartialFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl PendingArchive for PartialFile {
    fn location(&self) -> PathBuf {
        self.partial.clone()
    }

    fn file_id(&self) -> Option<(u64, u64)> {
        self.id
    }

    fn written_file(&mut self) -> Option<io::Result<&File>> {
        Some(self.file.flush().map(|()| self.file.get_ref().get_ref()))
    }

    fn publish(mut self: Box<Self>, written: u64) -> Result<PathBuf, PublishError> {
        self.file.flush().map_err(|e| self.write_error(e))?;
        let synced = self.file.get_mut().sync_all();
        synced.map_err(|e| self.write_error(e))?;
        let file = self.file.get_ref().get_ref();
        // The original backup script's validation, on what reached the disk: the archive is
        // there, not empty, and as long as what was hashed.
        let on_disk = file.metadata().map_err(|e| self.write_error(e))?.len();
        let reason = if on_disk == 0 {
            Some("Archive size is 0".to_owned())
        } else if on_disk != written {
            Some(format!("{on_disk} bytes on disk, {written} written"))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(PublishError::Incomplete {
                path: self.partial.clone(),
                reason,
            });
        }
        match rename_noreplace(&self.partial, &self.target) {
            Ok(()) => self.armed = false,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(PublishError::Exists(self.target.clone()));
            }
            Err(source) => {
                return Err(PublishError::Io {
                    path: self.target.clone(),
                    source,
                });
            }
        }
        if let Some(dir) = self.target.parent() {
            sync_dir(dir).map_err(|source| PublishError::Io {
                path: dir.to_owned(),
                source,
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::{ArchiveInfo, group_by_name, list};
    use crate::store::test_support::{dir_names, fake_manifest, stamp};
    use proto::Codec;

    fn touch(dir: &Path, name: &str, bytes: &[u8]) {
        fs::write(dir.join(name), bytes).unwrap();
    }

    fn file_names(archives: &[ArchiveInfo]) -> Vec<&str> {
        archives.iter().map(|a| a.file_name.as_str()).collect()
    }

    #[test]
    fn a_fifo_or_a_link_in_a_manifest_s_place_is_refused_without_waiting() {
        use rustix::fs::{CWD, FileType, mknodat};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let fifo = |name: &str| {
            mknodat(
                CWD,
                d.join(name),
                FileType::Fifo,
                Mode::RUSR | Mode::WUSR,
                0,
            )
            .unwrap();
        };
        touch(d, "piped_20250101_000000.tar", b"x");
        fifo("piped_20250101_000000.json");
        fifo("fifo_20250101_000000.tar");
        // A manifest that matches, linked in from elsewhere: not one this folder holds.
        let linked = b"y";
        touch(d, "linked_20250101_000000.tar", linked);
        let manifest = fake_manifest("linked", "20250101_000000", linked);
        touch(d, "elsewhere", &manifest.to_json().unwrap());
        std::os::unix::fs::symlink("elsewhere", d.join("linked_20250101_000000.json")).unwrap();

        let folder = LocalFolder::new(d);
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let listed = list(&folder).unwrap();
            let manifests: Vec<_> = listed.iter().map(|a| a.manifest.is_some()).collect();
            let errors = [
                folder.get("piped_20250101_000000.json").unwrap_err(),
                folder.open("fifo_20250101_000000.tar").err().unwrap(),
                folder.get("linked_20250101_000000.json").unwrap_err(),
            ];
            let _ = done.send((manifests, errors.map(|e| e.to_string())));
        });
        let (manifests, errors) = result
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("reading a FIFO waited for a writer");
        assert_eq!(manifests, [false, false], "neither manifest was read");
        assert!(errors[0].ends_with("piped_20250101_000000.json is not a regular file"));
        assert!(errors[1].ends_with("fifo_20250101_000000.tar is not a regular file"));
        assert!(errors[2].ends_with("linked_20250101_000000.json is a symbolic link"));
    }

    #[test]
    fn a_manifest_larger_than_any_real_one_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let name = "big_20250101_000000.json";
        let file = File::create(dir.path().join(name)).unwrap();
        // Sparse: the size, without the disk space.
        file.set_len(MANIFEST_SIZE_LIMIT + 1).unwrap();
        let err = LocalFolder::new(dir.path()).get(name).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("larger than any manifest"),
            "{err}"
        );
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

        let list = list(&LocalFolder::new(d)).unwrap();
        assert_eq!(
            file_names(&list),
            [
                "plain_20241231_235959.tar",
                "photos_20250101_000000.tar.zst",
                "my_docs_20250102_030405.tar.gz"
            ]
        );
        let docs = &list[2];
        assert_eq!(docs.name, "my_docs");
        assert_eq!(docs.path, d.join("my_docs_20250102_030405.tar.gz"));
        assert_eq!(docs.timestamp, stamp("20250102_030405"));
        assert_eq!(docs.compression, Codec::Gzip);
        assert_eq!(docs.size_bytes, 5);
        assert_eq!(docs.manifest_name, "my_docs_20250102_030405.json");
        assert_eq!(docs.manifest, None, "'{{}}' is not a valid manifest");
        assert_eq!(list[1].compression, Codec::Zstd);
        assert_eq!(list[0].compression, Codec::None);
    }

    #[test]
    fn manifest_created_is_the_fallback_for_impossible_dates() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(d, "x_20261399_000000.tar.gz", b"x");
        let manifest = fake_manifest("x", "20260101_120000", b"x");
        touch(d, "x_20261399_000000.json", &manifest.to_json().unwrap());
        let list = list(&LocalFolder::new(d)).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].timestamp, stamp("20260101_120000"));
        assert_eq!(list[0].manifest.as_ref(), Some(&manifest));
    }

    #[test]
    fn a_missing_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = list(&LocalFolder::new(dir.path().join("nope"))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn groups_are_by_name_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(d, "a_20250101_000000.tar.gz", b"");
        touch(d, "a_20250103_000000.tar.gz", b"");
        touch(d, "a_b_20250102_000000.tar.gz", b"");
        touch(d, "a_20250102_000000.tar.zst", b"");
        let groups = group_by_name(&list(&LocalFolder::new(d)).unwrap());
        assert_eq!(groups.keys().collect::<Vec<_>>(), ["a", "a_b"]);
        assert_eq!(
            file_names(&groups["a"]),
            [
                "a_20250103_000000.tar.gz",
                "a_20250102_000000.tar.zst",
                "a_20250101_000000.tar.gz"
            ]
        );
    }

    #[test]
    fn an_unpublished_archive_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let folder = LocalFolder::new(dir.path());
        let mut pending = folder.begin("a.tar").unwrap();
        pending.write_all(b"x").unwrap();
        assert!(pending.location().ends_with("a.tar.partial"));
        assert!(folder.begin("a.tar").is_err(), "one writer per name");
        drop(pending);
        assert!(dir_names(dir.path()).is_empty());
    }

    #[test]
    fn publish_validates_renames_and_never_clobbers() {
        let dir = tempfile::tempdir().unwrap();
        let folder = LocalFolder::new(dir.path());
        let mut pending = folder.begin("a.tar").unwrap();
        pending.write_all(b"new").unwrap();
        assert_eq!(pending.publish(3).unwrap(), dir.path().join("a.tar"));
        assert_eq!(dir_names(dir.path()), ["a.tar"]);

        let mut pending = folder.begin("a.tar").unwrap();
        pending.write_all(b"newer").unwrap();
        assert!(matches!(pending.publish(5), Err(PublishError::Exists(_))));
        assert_eq!(fs::read(dir.path().join("a.tar")).unwrap(), b"new");

        let pending = folder.begin("b.tar").unwrap();
        let empty = pending.publish(0).unwrap_err();
        assert!(empty.to_string().contains("Archive size is 0"), "{empty}");
        let mut pending = folder.begin("b.tar").unwrap();
        pending.write_all(b"123456789").unwrap();
        let short = pending.publish(10).unwrap_err();
        assert!(
            short.to_string().contains("9 bytes on disk, 10 written"),
            "{short}"
        );
        assert_eq!(dir_names(dir.path()), ["a.tar"], "partials are removed");
    }

    #[test]
    fn files_of_another_user_are_not_listed_read_as_manifests_or_swept() {
        if !rustix::process::geteuid().is_root() {
            println!("skipped: needs root to give files to nobody");
            return;
        }
        const NOBODY: u32 = 65534;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ours = b"real";
        touch(d, "docs_20250101_000000.tar", ours);
        // Planted by another user where the folder lets them (sticky, as /tmp): a newer
        // "archive", and a manifest for ours, which has lost its own.
        let planted = |name: &str, bytes: &[u8]| {
            touch(d, name, bytes);
            std::os::unix::fs::chown(d.join(name), Some(NOBODY), Some(NOBODY)).unwrap();
        };
        planted("docs_20250102_000000.tar", b"fake");
        let manifest = fake_manifest("docs", "20250101_000000", ours);
        planted("docs_20250101_000000.json", &manifest.to_json().unwrap());

        planted("someone_20250101_000000.tar.partial", b"theirs");
        let folder = LocalFolder::new(d);
        assert_eq!(
            folder.remove_stale_partials().unwrap(),
            Vec::<PathBuf>::new()
        );
        let names: Vec<_> = folder
            .files()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["docs_20250101_000000.tar"]);
        let listed = list(&folder).unwrap();
        assert_eq!(file_names(&listed), ["docs_20250101_000000.tar"]);
        assert!(
            listed[0].manifest.is_none(),
            "a stranger's manifest is not ours"
        );
    }

    #[test]
    fn a_partial_still_being_written_is_not_swept() {
        let dir = tempfile::tempdir().unwrap();
        let folder = LocalFolder::new(dir.path());
        let mut writing = folder.begin("docs_20250101_000000.tar").unwrap();
        writing.write_all(b"data").unwrap();
        touch(dir.path(), "old_20250101_000000.tar.partial", b"x");
        // As a second daemon sharing the folder would at its start.
        let removed = folder.remove_stale_partials().unwrap();
        assert_eq!(
            removed,
            [dir.path().join("old_20250101_000000.tar.partial")]
        );
        writing.publish(4).unwrap();
        assert_eq!(dir_names(dir.path()), ["docs_20250101_000000.tar"]);
    }

    #[test]
    fn only_a_manifest_of_ours_without_any_archive_of_its_stem_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let manifest = |name: &str, stamp: &str| {
            let json = fake_manifest(name, stamp, b"x").to_json().unwrap();
            touch(d, &format!("{name}_{stamp}.json"), &json);
        };
        // Cut between the archive and its manifest.
        manifest("cut", "20250101_000000");
        manifest("my_cut", "20250102_000000");
        // Archives of the stem, under any codec or sealed: the manifest stays.
        for (name, archive) in [
            ("kept", "kept_20250101_000000.tar.gz"),
            ("unpacked", "unpacked_20250101_000000.tar"),
            ("sealed", "sealed_20250101_000000.tar.zst.age"),
        ] {
            manifest(name, "20250101_000000");
            touch(d, archive, b"x");
        }
        manifest("linked", "20250101_000000");
        std::os::unix::fs::symlink("elsewhere", d.join("linked_20250101_000000.tar")).unwrap();
        // Not ours: a user's JSON named like a manifest, names outside the grammar, a link.
        touch(d, "notes_20250101_000000.json", b"{\"notes\": true}");
        touch(
            d,
            "settings.json",
            &fake_manifest("s", "20250101_000000", b"x")
                .to_json()
                .unwrap(),
        );
        std::os::unix::fs::symlink(
            "cut_20250101_000000.json",
            d.join("link_20250101_000000.json"),
        )
        .unwrap();
        fs::create_dir(d.join("dir_20250101_000000.json")).unwrap();

        let removed = LocalFolder::new(d).remove_stale_manifests().unwrap();
        assert_eq!(
            removed,
            [
                d.join("cut_20250101_000000.json"),
                d.join("my_cut_20250102_000000.json")
            ]
        );
        assert_eq!(
            dir_names(d),
            [
                "dir_20250101_000000.json",
                "kept_20250101_000000.json",
                "kept_20250101_000000.tar.gz",
                "link_20250101_000000.json",
                "linked_20250101_000000.json",
                "linked_20250101_000000.tar",
                "notes_20250101_000000.json",
                "sealed_20250101_000000.json",
                "sealed_20250101_000000.tar.zst.age",
                "settings.json",
                "unpacked_20250101_000000.json",
                "unpacked_20250101_000000.tar",
            ]
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
            touch(dir.path(), name, b"x");
        }
        fs::create_dir(dir.path().join("d_20250101_000000.tar.partial")).unwrap();
        let removed = LocalFolder::new(dir.path())
            .remove_stale_partials()
            .unwrap();
        assert_eq!(
            removed,
            vec![
                dir.path().join("a_20250101_000000.tar.gz.partial"),
                dir.path().join("my_job_20250101_000000.tar.partial")
            ]
        );
        assert_eq!(
            dir_names(dir.path()),
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
