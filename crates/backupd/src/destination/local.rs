//! A destination that is a local folder.
//!
//! An archive is written as `<final>.partial` and only renamed to its final name once
//! complete and synced, so a final name always means a whole archive; a crash leaves at
//! most a `.partial`, which [`LocalFolder::remove_stale_partials`] sweeps at daemon start. A
//! rotation marks the manifest it condemns before deleting its archive, so that one killed
//! between the two leaves a mark, by which [`LocalFolder::finish_cut_rotations`] removes that
//! manifest then, and no other.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, flock, linkat, openat, statat, unlinkat};

use super::background_sync::SyncedFile;
use super::{
    Destination, FileIdentity, FinishedRotations, Holder, MANIFEST_SIZE_LIMIT, PendingArchive,
    PublishError, Removal, manifest_too_large,
};
use crate::format::naming::{
    archives_sharing, condemned_mark, is_partial_archive, manifest_condemned_by, partial_name,
};
use crate::fsutil::{rename_noreplace, sync_dir, trusted_owners, write_new_atomically};

/// Size of the buffer in front of an archive file: few, large writes.
const FILE_BUFFER: usize = 1 << 20;
/// Size of the buffer behind an archive being read.
const READ_BUFFER: usize = 256 * 1024;

/// A folder holding archives and manifests side by side.
#[derive(Debug, Clone)]
pub struct LocalFolder {
    dir: PathBuf,
    /// Each file as [`Destination::open`] first found it (shared by clones): a later `open`
    /// must find the very same file, so that a restore extracts, and a verify reads, the bytes
    /// its first pass checked against the manifest, not a file renamed over it since.
    first_opened: Arc<Mutex<HashMap<String, Opened>>>,
}

/// Two folders are one whatever they opened.
impl PartialEq for LocalFolder {
    fn eq(&self, other: &Self) -> bool {
        self.dir == other.dir
    }
}

impl Eq for LocalFolder {}

/// A file as opened: which file, and its size and times. The change time moves on any write,
/// even one that puts the modification time back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Opened {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Opened {
    fn of(meta: &fs::Metadata) -> Self {
        Opened {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl LocalFolder {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            first_opened: Arc::default(),
        }
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

    /// Finishes what rotations killed midway had decided, from their marks directly in the
    /// folder ([`condemned_mark`]: regular files of [`Self::trusted_owners`], no link
    /// followed). A mark whose manifest still holds the same file while no archive of ours of
    /// its stem is left goes with that manifest: the rotation had deleted the archive and
    /// condemned exactly that file. Any other mark goes alone: the archive is still there
    /// (the rotation had not deleted it), or the name holds another file, or nothing. A
    /// manifest without a mark is never touched: nothing tells one a cut rotation left from
    /// one a user kept on purpose (beside archives moved to tape, say).
    ///
    /// A daemon sharing the folder mid-rotation loses nothing by it: its manifest goes only
    /// once its archive has, as it would itself remove it next; a mark taken before that
    /// only leaves its cut unfinished.
    pub fn finish_cut_rotations(&self) -> io::Result<FinishedRotations> {
        let trusted = self.trusted_owners()?;
        let dir = self.open_dir()?;
        let mut finished = FinishedRotations::default();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(mark) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some(manifest) = manifest_condemned_by(&mark) else {
                continue;
            };
            let Some(marked) = regular_file_of(&dir, &mark, &trusted)? else {
                continue;
            };
            // By the rule the rotation itself keeps a manifest by (another user's file keeps
            // nothing).
            let archive_left = self.any_exists(&archives_sharing(manifest))?;
            let condemned =
                !archive_left && regular_file_of(&dir, manifest, &trusted)? == Some(marked);
            // The manifest first: should its removal fail, the mark stays for the next start.
            if condemned && remove_at(&dir, manifest)? {
                finished.manifests.push(self.dir.join(manifest));
            }
            if remove_at(&dir, &mark)? {
                finished.marks.push(self.dir.join(&mark));
            }
        }
        finished.manifests.sort();
        finished.marks.sort();
        Ok(finished)
    }
}

/// Device and inode of `file` in `dir` if it is a regular file of `trusted`, no link
/// followed; `None` for anything else, and for nothing there.
fn regular_file_of(
    dir: &std::os::fd::OwnedFd,
    file: &str,
    trusted: &[u32],
) -> io::Result<Option<(u64, u64)>> {
    let stat = match statat(dir, file, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let regular =
        rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile;
    Ok((regular && trusted.contains(&stat.st_uid)).then_some((stat.st_dev, stat.st_ino)))
}

/// Unlinks `file` in `dir`; `false` if it was gone already.
fn remove_at(dir: &std::os::fd::OwnedFd, file: &str) -> io::Result<bool> {
    match unlinkat(dir, file, AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
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
        let opened = self.open_regular(file)?;
        let found = Opened::of(&opened.metadata()?);
        let mut first_opened = (self.first_opened.lock()).unwrap_or_else(PoisonError::into_inner);
        let first = *first_opened.entry(file.to_owned()).or_insert(found);
        drop(first_opened);
        if first != found {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} was replaced or changed since it was first read",
                    self.dir.join(file).display()
                ),
            ));
        }
        Ok(Box::new(BufReader::with_capacity(READ_BUFFER, opened)))
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

    /// Links `manifest`, if a regular file of ours, to [`condemned_mark`]. No fsync: a killed
    /// daemon's calls all stand, in order; after a power cut, any subset of the rotation's
    /// changes to the folder leaves at worst the manifest (its mark lost, as before marks
    /// existed) or a mark beside its archive, which goes alone. The start removes a manifest
    /// only under a mark of the same file with no archive left: the rotation's own decision.
    fn mark_condemned(&self, manifest: &str) -> io::Result<bool> {
        let trusted = self.trusted_owners()?;
        let dir = self.open_dir()?;
        let Some(condemned) = regular_file_of(&dir, manifest, &trusted)? else {
            return Ok(false);
        };
        let mark = condemned_mark(manifest);
        // Twice at most: the name may hold a leftover mark of ours, removed first.
        for _ in 0..2 {
            match linkat(&dir, manifest, &dir, &mark, AtFlags::empty()) {
                Ok(()) => return Ok(true),
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            match regular_file_of(&dir, &mark, &trusted)? {
                // Another rotation of the same archive (a daemon sharing the folder) marked it.
                Some(marked) if marked == condemned => return Ok(true),
                // A mark for an earlier file under the name, which the start would remove too.
                Some(_) => {
                    remove_at(&dir, &mark)?;
                }
                // Gone meanwhile, or not ours: tried again, then left.
                None => {}
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} holds a file that is not ours",
                self.dir.join(&mark).display()
            ),
        ))
    }

    fn unmark_condemned(&self, manifest: &str) -> io::Result<()> {
        let mark = condemned_mark(manifest);
        let dir = self.open_dir()?;
        // Only ever our own link: in a folder others may write, another user's file may hold
        // the name whenever marking failed.
        if regular_file_of(&dir, &mark, &self.trusted_owners()?)?.is_some() {
            remove_at(&dir, &mark)?;
        }
        Ok(())
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
    use crate::format::Manifest;
    use crate::store::test_support::{
        NOBODY, can_give_files_away, dir_names, fake_manifest, stamp,
    };
    use proto::Codec;

    fn touch(dir: &Path, name: &str, bytes: &[u8]) {
        fs::write(dir.join(name), bytes).unwrap();
    }

    fn file_names(archives: &[ArchiveInfo]) -> Vec<&str> {
        archives.iter().map(|a| a.file_name.as_str()).collect()
    }

    #[test]
    fn a_listing_keeps_manifests_small_and_skips_one_too_large_to_be_backupd_s() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut manifest = fake_manifest("many", "20260101_120000", b"x");
        manifest.warnings = vec!["x".repeat(1000); 2000];
        touch(d, "many_20260101_120000.tar", b"x");
        touch(d, "many_20260101_120000.json", &manifest.to_json().unwrap());
        // Someone else's, its source alone 2 MiB long.
        let mut planted = fake_manifest("huge", "20260101_120000", b"x");
        planted.source = PathBuf::from("/".repeat(2 << 20));
        touch(d, "huge_20260101_120000.tar", b"x");
        touch(d, "huge_20260101_120000.json", &planted.to_json().unwrap());
        let listed = list(&LocalFolder::new(d)).unwrap();
        assert_eq!(
            file_names(&listed),
            ["huge_20260101_120000.tar", "many_20260101_120000.tar"]
        );
        assert_eq!(listed[0].manifest, None);
        let kept = listed[1].manifest.as_ref().unwrap();
        assert!(kept.warnings.is_empty());
        assert_eq!(kept.checksum_sha256, manifest.checksum_sha256);
    }

    #[test]
    fn archives_are_counted_by_name_from_the_file_names_alone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for file in [
            "docs_20250101_000000.tar.gz",
            "docs_20250102_000000.tar.zst.age",
            "docs_20250102_000000.json",
            "my_docs_20250101_000000.tar",
            "docs_20250103_000000.tar.gz.partial",
            "notes.txt",
        ] {
            touch(d, file, b"x");
        }
        // A manifest nobody could read is never opened.
        touch(d, "docs_20250101_000000.json", b"{not json");
        let counts = crate::destination::archive_counts(&LocalFolder::new(d)).unwrap();
        let expected = [("docs".to_owned(), 2), ("my_docs".to_owned(), 1)];
        assert_eq!(counts, expected.into_iter().collect());
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
    fn a_manifest_goes_to_the_archive_it_was_written_for_not_a_sibling_listed_first() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let archive = "x_20260101_120000.tar.gz";
        touch(d, archive, b"gz");
        // Decompressed beside it (`gunzip -k`), and sorting before it.
        touch(d, "x_20260101_120000.tar", b"tar");
        let manifest = Manifest {
            backup_file: d.join(archive),
            ..fake_manifest("x", "20260101_120000", b"gz")
        };
        touch(d, "x_20260101_120000.json", &manifest.to_json().unwrap());
        let list = list(&LocalFolder::new(d)).unwrap();
        assert_eq!(file_names(&list), ["x_20260101_120000.tar", archive]);
        assert_eq!(list[0].manifest, None, "not the decompressed copy's");
        assert_eq!(list[1].manifest.as_ref(), Some(&manifest));
    }

    /// Returns once a file written now gets a change time after `file`'s: file times come from
    /// a clock that moves a few milliseconds at a time.
    fn past_change_time_of(file: &Path) {
        let then = fs::metadata(file).unwrap();
        let probe = file.with_extension("probe");
        loop {
            fs::write(&probe, b"").unwrap();
            let now = fs::metadata(&probe).unwrap();
            if (now.ctime(), now.ctime_nsec()) > (then.ctime(), then.ctime_nsec()) {
                fs::remove_file(&probe).unwrap();
                return;
            }
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_file_opened_again_must_be_the_file_first_opened() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let archive = "docs_20250101_000000.tar";
        touch(d, archive, b"checked bytes");
        let folder = LocalFolder::new(d);
        let mut first = String::new();
        folder
            .open(archive)
            .unwrap()
            .read_to_string(&mut first)
            .unwrap();
        assert_eq!(first, "checked bytes");
        // The same file again, by this folder or a clone of it.
        folder.clone().open(archive).unwrap();
        let replaced = |folder: &LocalFolder, file: &str| {
            let Err(err) = folder.open(file) else {
                panic!("a changed file was opened")
            };
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(
                err.to_string().ends_with(&format!(
                    "{file} was replaced or changed since it was first read"
                )),
                "{err}"
            );
        };
        // Another file renamed over it, of the same size.
        touch(d, "swap", b"planted bytes");
        fs::rename(d.join("swap"), d.join(archive)).unwrap();
        replaced(&folder, archive);

        // Rewritten in place, same size, its modification time put back.
        let other = "docs_20250102_000000.tar";
        touch(d, other, b"checked bytes");
        let folder = LocalFolder::new(d);
        folder.open(other).unwrap();
        let mtime = fs::metadata(d.join(other)).unwrap().modified().unwrap();
        past_change_time_of(&d.join(other));
        let file = OpenOptions::new().write(true).open(d.join(other)).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"planted", 0).unwrap();
        file.set_modified(mtime).unwrap();
        assert_eq!(
            fs::metadata(d.join(other)).unwrap().modified().unwrap(),
            mtime
        );
        replaced(&folder, other);
        // A new folder value starts afresh.
        LocalFolder::new(d).open(other).unwrap();
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
        if !can_give_files_away() {
            return;
        }
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

    const CUT: &str = "docs_20250101_000000";

    /// `<CUT>.json`, a manifest as a run writes it.
    fn manifest_in(d: &Path) -> PathBuf {
        let json = fake_manifest("docs", "20250101_000000", b"x")
            .to_json()
            .unwrap();
        touch(d, &format!("{CUT}.json"), &json);
        d.join(format!("{CUT}.json"))
    }

    /// The mark a rotation condemns `<CUT>.json` by: a second link to it.
    fn mark_in(d: &Path) -> PathBuf {
        let mark = d.join(format!(".backupd-deleting-{CUT}.json"));
        fs::hard_link(d.join(format!("{CUT}.json")), &mark).unwrap();
        mark
    }

    #[test]
    fn a_marked_manifest_without_its_archive_goes_with_its_mark_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let manifest = manifest_in(d);
        let mark = mark_in(d);
        // Cut after the archive's unlink: what the rotation had condemned goes.
        let finished = LocalFolder::new(d).finish_cut_rotations().unwrap();
        assert_eq!(finished.manifests, [manifest]);
        assert_eq!(finished.marks, [mark]);
        assert_eq!(dir_names(d), Vec::<String>::new());
    }

    #[test]
    fn a_mark_beside_an_archive_of_its_stem_goes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for archive in [".tar.gz", ".tar.zst.age"] {
            manifest_in(d);
            let mark = mark_in(d);
            // Cut before the archive's unlink: the rotation had not happened.
            touch(d, &format!("{CUT}{archive}"), b"x");
            let finished = LocalFolder::new(d).finish_cut_rotations().unwrap();
            assert_eq!(finished.manifests, Vec::<PathBuf>::new());
            assert_eq!(finished.marks, [mark]);
            assert_eq!(
                dir_names(d),
                [format!("{CUT}.json"), format!("{CUT}{archive}")]
            );
            fs::remove_file(d.join(format!("{CUT}{archive}"))).unwrap();
        }
    }

    #[test]
    fn a_mark_goes_alone_when_another_file_holds_the_manifest_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        manifest_in(d);
        let mark = mark_in(d);
        // The condemned manifest gone, another one under its name (the same bytes even).
        fs::remove_file(d.join(format!("{CUT}.json"))).unwrap();
        fs::copy(&mark, d.join(format!("{CUT}.json"))).unwrap();
        let finished = LocalFolder::new(d).finish_cut_rotations().unwrap();
        assert_eq!(finished.manifests, Vec::<PathBuf>::new());
        assert_eq!(finished.marks, [mark]);
        assert_eq!(dir_names(d), [format!("{CUT}.json")]);
    }

    #[test]
    fn a_mark_alone_goes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        manifest_in(d);
        let mark = mark_in(d);
        // Cut after the manifest's unlink.
        fs::remove_file(d.join(format!("{CUT}.json"))).unwrap();
        let finished = LocalFolder::new(d).finish_cut_rotations().unwrap();
        assert_eq!(finished.manifests, Vec::<PathBuf>::new());
        assert_eq!(finished.marks, [mark]);
        assert_eq!(dir_names(d), Vec::<String>::new());
    }

    #[test]
    fn a_manifest_without_a_mark_stays_whatever_archive_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A user moved the archive to tape and kept its manifest to check the tape by.
        manifest_in(d);
        // Names like a mark's that are not one: no manifest name after the prefix.
        let json = fs::read(d.join(format!("{CUT}.json"))).unwrap();
        touch(d, ".backupd-deleting-notes.json", &json);
        touch(d, ".backupd-deleting-", &json);
        let finished = LocalFolder::new(d).finish_cut_rotations().unwrap();
        assert_eq!(finished, FinishedRotations::default());
        assert_eq!(
            dir_names(d),
            [
                ".backupd-deleting-",
                ".backupd-deleting-notes.json",
                &format!("{CUT}.json")
            ]
        );
    }

    #[test]
    fn a_mark_that_is_a_link_is_not_followed_nor_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let manifest = manifest_in(d);
        let mark = d.join(format!(".backupd-deleting-{CUT}.json"));
        std::os::unix::fs::symlink(&manifest, &mark).unwrap();
        let finished = LocalFolder::new(d).finish_cut_rotations().unwrap();
        assert_eq!(finished, FinishedRotations::default());
        assert!(manifest.exists());
        assert!(fs::symlink_metadata(&mark).unwrap().is_symlink());
    }

    #[test]
    fn another_user_s_mark_is_not_ours_to_act_on() {
        use std::os::unix::fs::PermissionsExt;
        if !can_give_files_away() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::set_permissions(d, fs::Permissions::from_mode(0o1777)).unwrap();
        let manifest = manifest_in(d);
        let mark = mark_in(d);
        // Both names one file of nobody's: neither the mark nor the manifest is ours.
        std::os::unix::fs::chown(&mark, Some(NOBODY), Some(NOBODY)).unwrap();
        let finished = LocalFolder::new(d).finish_cut_rotations().unwrap();
        assert_eq!(finished, FinishedRotations::default());
        assert!(manifest.exists() && mark.exists());
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
