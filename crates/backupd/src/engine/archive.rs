//! Walks the source folder and appends each entry to a tar stream.
//!
//! Depth-first in sorted name order (so the same tree gives the same archive), with an
//! explicit stack instead of recursion so deep trees cannot overflow the thread's stack.
//! Every entry is reached through its parent's directory handle (`openat`, `statat` without
//! following links), never by a full path: depth has no `PATH_MAX` limit, and a folder
//! swapped for a symlink during the walk is never followed. At most [`OPEN_DIRS_LIMIT`]
//! handles stay open; deeper folders close their shallowest ancestors and re-open them
//! through the chain (checking each is still the same folder) on the way back up.
//! Symlinks are stored, never followed; a file with several links is stored once and then
//! as hard-link entries; FIFOs and devices are stored as headers (as GNU tar does), sockets
//! skipped. Trouble with one entry is a warning, never the end of the backup: only write
//! errors and cancellation stop the walk.
//!
//! The walk holds each folder's own name, never its full path (one shared buffer holds the
//! current one), and the first paths of files with several links as nodes of a
//! [`PathTree`], so its memory grows with the depth, not its square. An entry whose name in
//! the archive would be longer than [`MAX_LONG_NAME`], which every reader refuses, is left
//! out with a warning, and a folder with everything below it.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use tar::{Builder, EntryType, Header};

use super::error::EngineError;
use super::exclude::ExcludeSet;
use super::progress::{Meter, MeteredReader, is_cancellation};
use super::sized_reader::{SizeChange, SizedReader};
use super::sparse::{self, DataReader, Holes};
use crate::format::xattrs::{self, XattrReader};
use crate::format::{TAR_BLOCK, WriteFrom, tar_padding};
use crate::path_tree::{NodeId, PathTree};
use crate::store::MAX_LONG_NAME;

/// Directory handles a walk keeps open at most, far below the usual limit of 1024 fds.
pub(crate) const OPEN_DIRS_LIMIT: usize = 128;

/// Paths up to this long are shown whole in warnings; longer ones (only a tree deeper than
/// `PATH_MAX` has them) by their two ends, so many warnings deep down stay small.
const SHOWN_WHOLE: usize = 4096;
/// Bytes kept of each end of a path shortened for a warning.
const SHOWN_END: usize = 1024;

/// The most warnings a backup lists (in its manifest, its answer and the log); past them it
/// says how many more there were. A tree of a million unreadable files must not make a
/// manifest too large to be read back, nor hold them all in memory.
pub(crate) const MOST_WARNINGS: usize = 10_000;

/// Counts and warnings of one walk.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes_in: u64,
    pub warnings: Vec<String>,
    /// Warnings past [`MOST_WARNINGS`], counted only.
    unlisted: u64,
    /// Entries left out (or whose content is incomplete) for a reason other than vanishing
    /// or being a socket: the run completed with warnings.
    pub skipped: u64,
}

impl Stats {
    fn note(&mut self, warning: String) {
        if self.warnings.len() < MOST_WARNINGS {
            self.warnings.push(warning);
        } else {
            self.unlisted += 1;
        }
    }

    /// The walk is over: the warnings not listed are said in one more.
    fn finished(mut self) -> Self {
        if self.unlisted > 0 {
            let more = format!("and {} more warnings, not listed", self.unlisted);
            self.warnings.push(more);
        }
        self
    }
}

/// Identity of a file on disk.
pub(crate) type FileId = (u64, u64);

/// A folder the walk must never archive, because the backup writes into it.
#[derive(Debug, Clone)]
pub(crate) struct Protected {
    pub id: FileId,
    pub path: PathBuf,
}

pub(crate) struct TreeWriter<'w, 'a, W: WriteFrom> {
    builder: &'w mut Builder<W>,
    excludes: &'w ExcludeSet,
    meter: &'w mut Meter<'a>,
    /// The archive being written, for error messages and so it never archives itself.
    archive: &'w Path,
    archive_id: Option<FileId>,
    /// Destination folders left out when they lie inside the source.
    protected: Vec<Protected>,
    /// First archived path of each multiply-linked file, below the top-level name, with the
    /// version of the file archived there.
    links: HashMap<FileId, (NodeId, Version)>,
    /// Those paths: only the folders holding such a file are added, so a tree without
    /// links costs nothing, and one deep in links costs its names, not its paths.
    link_paths: PathTree,
    xattrs: XattrReader,
    holes: Holes,
    stats: Stats,
}

/// One folder on the walk's stack.
struct Level {
    /// `None` while closed to bound open handles; re-opened from the parent when needed.
    fd: Option<OwnedFd>,
    /// Name in the parent (empty for the root).
    name: OsString,
    id: FileId,
    /// Length of its path relative to the source root: a prefix of the walk's `rel_buf`.
    rel_len: usize,
    /// Its path in `TreeWriter::link_paths`, once a file with several links in or below it
    /// was archived (a `Cell`: set while the walk's handles are borrowed).
    link_path: Cell<Option<NodeId>>,
    /// Children still to visit, reversed so that popping yields sorted order.
    pending: Vec<OsString>,
}

/// Why an entry could not be archived.
enum Trouble {
    /// It disappeared: a normal event on a live file system, not a reason to warn the user.
    Vanished,
    /// Anything else: the run completes with warnings.
    Skipped(String),
}

/// Where an entry is on disk, for messages: the path is only built for one.
#[derive(Clone, Copy)]
struct Place<'p> {
    root: &'p Path,
    /// Relative to `root`; empty for the root itself.
    rel: &'p [u8],
}

impl Place<'_> {
    fn shown(self) -> String {
        let full = if self.rel.is_empty() {
            self.root.to_owned()
        } else {
            self.root.join(OsStr::from_bytes(self.rel))
        };
        shorten(&full.to_string_lossy())
    }
}

/// `path` whole if short, else its first and last bytes around how many were left out.
fn shorten(path: &str) -> String {
    if path.len() <= SHOWN_WHOLE {
        return path.to_owned();
    }
    let mut head = SHOWN_END;
    while !path.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = path.len() - SHOWN_END;
    while !path.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{}…[{} bytes]…{}",
        &path[..head],
        tail - head,
        &path[tail..]
    )
}

/// Whether a GNU long name (or link) of `name_len` bytes is one every reader accepts: the
/// tar writer adds a terminating NUL.
fn fits_long_name(name_len: usize) -> bool {
    u64::try_from(name_len).is_ok_and(|len| len < MAX_LONG_NAME)
}

impl Trouble {
    fn from_errno(e: Errno, what: &str) -> Self {
        if e == Errno::NOENT {
            Trouble::Vanished
        } else {
            Trouble::Skipped(format!("{what} ({}), skipped", io::Error::from(e)))
        }
    }
}

impl<'w, 'a, W: WriteFrom> TreeWriter<'w, 'a, W> {
    pub(crate) fn new(
        builder: &'w mut Builder<W>,
        excludes: &'w ExcludeSet,
        meter: &'w mut Meter<'a>,
        archive: &'w Path,
        archive_id: Option<FileId>,
    ) -> Self {
        TreeWriter {
            builder,
            excludes,
            meter,
            archive,
            archive_id,
            protected: Vec::new(),
            links: HashMap::new(),
            link_paths: PathTree::new(),
            xattrs: XattrReader::default(),
            holes: Holes::default(),
            stats: Stats::default(),
        }
    }

    /// Whether files with holes are stored as GNU sparse entries.
    pub(crate) fn holes(mut self, holes: Holes) -> Self {
        self.holes = holes;
        self
    }

    /// Folders never archived (the destination, the daemon's `backups/`), by identity.
    pub(crate) fn protect(mut self, protected: Vec<Protected>) -> Self {
        self.protected = protected;
        self
    }

    /// Archives `root` and everything below it under the top-level folder `top`.
    pub(crate) fn write_tree(mut self, root: &Path, top: &OsStr) -> Result<Stats, EngineError> {
        let unreadable = |source: io::Error| EngineError::SourceUnreadable {
            path: root.to_owned(),
            source,
        };
        // The source itself is the user's choice: a symlink to it is followed, once.
        let root_fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| unreadable(e.into()))?;
        let meta = rustix::fs::fstat(&root_fd).map_err(|e| unreadable(e.into()))?;
        let children = read_sorted(root_fd.as_fd()).map_err(|e| unreadable(e.into()))?;
        let top = Path::new(top);
        let place = Place { root, rel: &[] };
        self.append_xattrs(root_fd.as_fd(), place)?;
        self.append_dir(top, &meta)?;
        let mut levels = vec![Level {
            fd: Some(root_fd),
            name: OsString::new(),
            id: file_id(&meta),
            rel_len: 0,
            link_path: Cell::new(Some(PathTree::ROOT)),
            pending: children,
        }];
        let mut announced = HashSet::new();
        // The current entry's path relative to `root`; each level's is a prefix of it.
        let mut rel_buf: Vec<u8> = Vec::new();

        while let Some(level) = levels.last_mut() {
            let Some(name) = level.pending.pop() else {
                levels.pop();
                continue;
            };
            self.meter.check_cancel()?;
            rel_buf.truncate(level.rel_len);
            if !rel_buf.is_empty() {
                rel_buf.push(b'/');
            }
            rel_buf.extend_from_slice(name.as_bytes());
            let place = Place {
                root,
                rel: &rel_buf,
            };
            if let Err((index, reason)) = reopen(&mut levels) {
                // That folder and everything still to visit below it are left out.
                let gone = Place {
                    root,
                    rel: &rel_buf[..levels[index].rel_len],
                };
                levels.truncate(index);
                self.skip(gone, &reason);
                continue;
            }
            let dir = levels
                .last()
                .and_then(|l| l.fd.as_ref())
                .expect("reopen leaves the current folder open")
                .as_fd();
            let meta = match rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(m) => m,
                Err(e) => {
                    self.trouble(place, Trouble::from_errno(e, "unreadable"));
                    continue;
                }
            };
            let kind = FileType::from_raw_mode(meta.st_mode);
            let rel = Path::new(OsStr::from_bytes(&rel_buf));
            if self
                .excludes
                .is_excluded(&rel.to_string_lossy(), kind == FileType::Directory)
            {
                continue;
            }
            let entry = top.join(rel);
            // A folder's name gets a trailing slash.
            let entry_len = entry.as_os_str().len() + usize::from(kind == FileType::Directory);
            if !fits_long_name(entry_len) {
                let reason = format!(
                    "its name in the archive would be {entry_len} bytes, more than the \
                     {MAX_LONG_NAME} a reader accepts, skipped{}",
                    if kind == FileType::Directory {
                        " with everything in it"
                    } else {
                        ""
                    }
                );
                self.skip(place, &reason);
                continue;
            }
            match kind {
                FileType::Directory => {
                    let id = file_id(&meta);
                    if let Some(dest) = self.protected.iter().find(|p| p.id == id) {
                        if announced.insert(id) {
                            let note = format!(
                                "excluding destination {} inside source {}",
                                dest.path.display(),
                                root.display()
                            );
                            self.stats.note(note);
                        }
                        continue;
                    }
                    let opened = open_dir(dir, &name, id);
                    if let Ok((fd, _)) = &opened {
                        self.append_xattrs(fd.as_fd(), place)?;
                    }
                    self.append_dir(&entry, &meta)?;
                    match opened {
                        Ok((fd, children)) => {
                            levels.push(Level {
                                fd: Some(fd),
                                name,
                                id,
                                rel_len: rel_buf.len(),
                                link_path: Cell::new(None),
                                pending: children,
                            });
                            close_shallowest(&mut levels, OPEN_DIRS_LIMIT);
                        }
                        Err(trouble) => self.trouble(place, trouble),
                    }
                }
                FileType::Symlink => self.append_symlink(dir, &name, place, &entry, &meta)?,
                FileType::RegularFile => {
                    if self.archive_id == Some(file_id(&meta)) {
                        continue;
                    }
                    self.append_file(dir, &name, place, &entry, &levels, top)?;
                }
                FileType::Fifo => self.append_special(&entry, &meta, EntryType::Fifo)?,
                FileType::CharacterDevice => self.append_special(&entry, &meta, EntryType::Char)?,
                FileType::BlockDevice => self.append_special(&entry, &meta, EntryType::Block)?,
                _ => {
                    // As GNU tar does: a socket is made anew by the program that listens on
                    // it, and holds nothing to lose, so it is not a skip that warns the run.
                    self.warn(place, "skipped: socket");
                }
            }
            self.meter.tick();
        }
        Ok(self.stats.finished())
    }

    fn warn(&mut self, place: Place<'_>, reason: &str) {
        self.stats.note(format!("{}: {reason}", place.shown()));
    }

    /// A warning that makes the run complete with warnings.
    fn skip(&mut self, place: Place<'_>, reason: &str) {
        self.warn(place, reason);
        self.stats.skipped += 1;
    }

    fn trouble(&mut self, place: Place<'_>, trouble: Trouble) {
        match trouble {
            Trouble::Vanished => self.warn(place, "vanished during the backup"),
            Trouble::Skipped(reason) => self.skip(place, &reason),
        }
    }

    fn write_error(&self, e: io::Error) -> EngineError {
        if is_cancellation(&e) {
            EngineError::Cancelled
        } else {
            EngineError::Write {
                path: self.archive.to_owned(),
                source: e,
            }
        }
    }

    /// Appends the extended attributes of `fd`'s file, if it has any, as a pax header: the
    /// next entry appended is theirs.
    fn append_xattrs(&mut self, fd: BorrowedFd<'_>, place: Place<'_>) -> Result<(), EngineError> {
        let xattrs = match self.xattrs.read(fd) {
            Ok(xattrs) if xattrs.is_empty() => return Ok(()),
            Ok(xattrs) => xattrs,
            Err(e) => {
                self.warn(place, &format!("extended attributes not stored ({e})"));
                return Ok(());
            }
        };
        let records = xattrs::pax_records(&xattrs);
        let records = records
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_slice()));
        self.builder
            .append_pax_extensions(records)
            .map_err(|e| self.write_error(e))
    }

    fn append_dir(&mut self, name: &Path, meta: &Stat) -> Result<(), EngineError> {
        let mut header = header_for(meta, EntryType::Directory, 0);
        // A trailing slash, as GNU tar writes directory names.
        let mut name = name.as_os_str().to_owned();
        name.push("/");
        self.builder
            .append_data(&mut header, &name, io::empty())
            .map_err(|e| self.write_error(e))?;
        self.stats.dirs += 1;
        self.meter.progress.dirs += 1;
        Ok(())
    }

    /// A FIFO or device node: a header only (type, mode, owner, device numbers), as GNU tar
    /// stores them.
    fn append_special(
        &mut self,
        entry: &Path,
        meta: &Stat,
        kind: EntryType,
    ) -> Result<(), EngineError> {
        let mut header = header_for(meta, kind, 0);
        if kind != EntryType::Fifo {
            let rdev = meta.st_rdev;
            header
                .set_device_major(rustix::fs::major(rdev))
                .and_then(|()| header.set_device_minor(rustix::fs::minor(rdev)))
                .map_err(|e| self.write_error(e))?;
        }
        self.builder
            .append_data(&mut header, entry, io::empty())
            .map_err(|e| self.write_error(e))?;
        self.stats.files += 1;
        self.meter.progress.files += 1;
        Ok(())
    }

    fn append_symlink(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        place: Place<'_>,
        entry: &Path,
        meta: &Stat,
    ) -> Result<(), EngineError> {
        let target = match rustix::fs::readlinkat(dir, name, Vec::new()) {
            Ok(t) => PathBuf::from(OsString::from_vec(t.into_bytes())),
            Err(e) => {
                self.trouble(place, Trouble::from_errno(e, "cannot read symlink"));
                return Ok(());
            }
        };
        // Linux keeps targets far shorter; checked so the writer never outruns its readers.
        let target_len = target.as_os_str().len();
        if !fits_long_name(target_len) {
            let reason = format!(
                "its target is {target_len} bytes, more than the {MAX_LONG_NAME} a reader \
                 accepts, skipped"
            );
            self.skip(place, &reason);
            return Ok(());
        }
        let mut header = header_for(meta, EntryType::Symlink, 0);
        let bytes = target.as_os_str().as_bytes();
        let appended = if bytes.len() <= LINK_NAME_FIELD {
            // Byte for byte: `append_link` rebuilds a short target from its parts (`file/.`
            // becomes `file`, `a//b` `a/b`), which may resolve to something else.
            header
                .set_link_name_literal(bytes)
                .and_then(|()| self.builder.append_data(&mut header, entry, io::empty()))
        } else {
            // Longer targets go whole into a GNU long-link entry.
            self.builder.append_link(&mut header, entry, &target)
        };
        appended.map_err(|e| self.write_error(e))?;
        self.stats.symlinks += 1;
        self.meter.progress.files += 1;
        Ok(())
    }

    /// Archives the regular file `name` in `dir` (the innermost of `levels`) as `entry`, or
    /// as a link to its first path (below `top`) if it has several links and was archived.
    fn append_file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        place: Place<'_>,
        entry: &Path,
        levels: &[Level],
        top: &Path,
    ) -> Result<(), EngineError> {
        // Opened without following links and without blocking, then checked with fstat,
        // so a file swapped for a symlink or FIFO since the stat is never read through.
        let (file, meta) = match open_regular(dir, name) {
            Ok(Some(pair)) => pair,
            Ok(None) | Err(Errno::LOOP) => {
                self.skip(place, "changed type while being read, skipped");
                return Ok(());
            }
            Err(e) => {
                self.trouble(place, Trouble::from_errno(e, "unreadable"));
                return Ok(());
            }
        };
        let id = file_id(&meta);
        if meta.st_nlink > 1
            && let Some((first, version)) = self.links.get(&id)
            // Else a file made since took the number of one deleted: it is not that file.
            && *version == Version::of(&meta)
        {
            let first = top.join(self.link_paths.path(*first));
            let mut header = header_for(&meta, EntryType::Link, 0);
            self.builder
                .append_link(&mut header, entry, &first)
                .map_err(|e| self.write_error(e))?;
            self.stats.files += 1;
            self.stats.hardlinks += 1;
            self.meter.progress.files += 1;
            return Ok(());
        }

        self.append_xattrs(file.as_fd(), place)?;
        let size = u64::try_from(meta.st_size).unwrap_or(0);
        let mut header = header_for(&meta, EntryType::Regular, size);
        let regions = match self.holes {
            Holes::Kept => sparse::data_regions(&file, &meta),
            Holes::ReadAsZeros => None,
        };
        let (stored, extensions, data) = match regions {
            Some(regions) => {
                let (stored, extensions) = sparse::make_sparse(&mut header, &regions, size);
                (
                    stored,
                    extensions,
                    DataReader::regions(&file, regions, size),
                )
            }
            None => (size, Vec::new(), DataReader::whole(&file)),
        };
        let mut sized = SizedReader::new(data, stored);
        let result = append_header(self.builder, &mut header, entry).and_then(|()| {
            let writer = self.builder.get_mut();
            writer.write_all(&extensions)?;
            append_data(
                writer,
                &mut MeteredReader::new(&mut sized, &mut *self.meter),
                stored,
            )
        });
        result.map_err(|e| self.write_error(e))?;
        self.stats.bytes_in += sized.bytes_from_source();
        #[cfg(test)]
        AFTER_READ.with_borrow_mut(|hook| hook.as_mut().map(|hook| hook(entry)));
        let read = Version::of(&meta);
        let after = rustix::fs::fstat(&file).map_or(read, |meta| Version::of(&meta));
        // Where the file ended, for a file with holes more than the bytes read.
        let end = sized.get_ref().position();
        match sized.finish() {
            Some(SizeChange::Shrank { .. }) => {
                self.warn(place, &SizeChange::Shrank { read: end }.to_string());
            }
            // Part of the content could not be read: zeros stand in for it.
            Some(change @ SizeChange::Failed { .. }) => self.skip(place, &change.to_string()),
            Some(change) => self.warn(place, &change.to_string()),
            // Written to in place as it was read: what is stored may be part old, part new.
            None if after != read => self.warn(place, SizeChange::REWRITTEN),
            None => {}
        }
        self.stats.files += 1;
        self.meter.progress.files += 1;
        if meta.st_nlink > 1 {
            let folder = link_path_of(&mut self.link_paths, levels);
            let first = self.link_paths.add_child(folder, name);
            // A later link is this file only if nothing changed since it was first read.
            self.links.insert(id, (first, read));
        }
        Ok(())
    }
}

/// Appends the entry `header` with its `size` bytes of `data` read into the writer's own
/// buffer ([`WriteFrom`]), not through `tar`'s 8 KiB copy.
pub fn append_body<W: WriteFrom>(
    builder: &mut Builder<W>,
    header: &mut Header,
    entry: &Path,
    data: &mut dyn Read,
    size: u64,
) -> io::Result<()> {
    append_header(builder, header, entry)?;
    append_data(builder.get_mut(), data, size)
}

/// Appends the header of `entry` (and a long name's extra entry), none of its data.
fn append_header<W: WriteFrom>(
    builder: &mut Builder<W>,
    header: &mut Header,
    entry: &Path,
) -> io::Result<()> {
    // `tar` writes the header and, from no data, nothing.
    builder.append_data(header, entry, io::empty())
}

/// Appends an entry's `size` bytes of `data`, and its padding to a whole block.
fn append_data<W: WriteFrom>(writer: &mut W, data: &mut dyn Read, size: u64) -> io::Result<()> {
    let written = writer.write_from(data, size)?;
    if written != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{written} bytes of data for a header of {size}"),
        ));
    }
    let zeros = [0; TAR_BLOCK];
    // Below a block: the cast cannot truncate.
    writer.write_all(&zeros[..tar_padding(size) as usize])
}

/// The innermost of `levels` as a path of `paths`, adding the folders not yet in it.
fn link_path_of(paths: &mut PathTree, levels: &[Level]) -> NodeId {
    let known = levels.iter().rposition(|l| l.link_path.get().is_some());
    let (mut path, below) = match known {
        Some(i) => (levels[i].link_path.get().unwrap_or(PathTree::ROOT), i + 1),
        None => (PathTree::ROOT, 1),
    };
    for level in levels.iter().skip(below) {
        path = paths.add_child(path, &level.name);
        level.link_path.set(Some(path));
    }
    path
}

fn file_id(meta: &Stat) -> FileId {
    (meta.st_dev, meta.st_ino)
}

/// Bytes of a tar header's link name field.
const LINK_NAME_FIELD: usize = 100;

/// What a test runs once each regular file's data is read, given its path in the archive.
#[cfg(test)]
pub(crate) type AfterRead = Option<Box<dyn FnMut(&Path)>>;

#[cfg(test)]
thread_local! {
    /// A test's way to change the tree mid-walk.
    pub(crate) static AFTER_READ: std::cell::RefCell<AfterRead> =
        const { std::cell::RefCell::new(None) };
}

/// What changes when a file is written to, or when a new file takes the inode number of a
/// deleted one: its change time (with its modification time and size, should two fall in
/// one clock tick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    changed: (i64, u64),
    modified: (i64, u64),
    size: i64,
}

impl Version {
    fn of(meta: &Stat) -> Self {
        Version {
            changed: (meta.st_ctime, meta.st_ctime_nsec),
            modified: (meta.st_mtime, meta.st_mtime_nsec),
            size: meta.st_size,
        }
    }
}

/// Opens the folder `name` in `parent` without following a symlink, checks it is still the
/// folder that was stat'ed as `id`, and lists it.
fn open_dir(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    id: FileId,
) -> Result<(OwnedFd, Vec<OsString>), Trouble> {
    let fd = open_dir_handle(parent, name).map_err(|e| match e {
        Errno::NOENT => Trouble::Vanished,
        Errno::LOOP | Errno::NOTDIR => {
            Trouble::Skipped("changed type while being read, skipped".into())
        }
        e => Trouble::from_errno(e, "cannot list directory"),
    })?;
    let same = rustix::fs::fstat(&fd).is_ok_and(|m| file_id(&m) == id);
    if !same {
        return Err(Trouble::Skipped(
            "replaced while being read, skipped".into(),
        ));
    }
    let children =
        read_sorted(fd.as_fd()).map_err(|e| Trouble::from_errno(e, "cannot list directory"))?;
    Ok((fd, children))
}

fn open_dir_handle(parent: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Makes sure the innermost folder's handle is open, re-opening closed ancestors from the
/// nearest open one; `Err` if one of them is no longer the folder it was.
fn reopen(levels: &mut [Level]) -> Result<(), (usize, String)> {
    // The root is never closed.
    let open = levels.iter().rposition(|l| l.fd.is_some()).unwrap_or(0);
    for i in open + 1..levels.len() {
        let (parents, rest) = levels.split_at_mut(i);
        let parent = parents[i - 1].fd.as_ref().expect("opened in order").as_fd();
        let level = &mut rest[0];
        let fd = open_dir_handle(parent, &level.name).map_err(|e| {
            let reason = format!(
                "cannot re-open directory ({}), rest of it skipped",
                io::Error::from(e)
            );
            (i, reason)
        })?;
        if !rustix::fs::fstat(&fd).is_ok_and(|m| file_id(&m) == level.id) {
            return Err((i, "replaced during the backup, rest of it skipped".into()));
        }
        level.fd = Some(fd);
    }
    Ok(())
}

/// Closes the handles of the shallowest folders (never the root or the innermost) until at
/// most `limit` are open.
fn close_shallowest(levels: &mut [Level], limit: usize) {
    let mut open = levels.iter().filter(|l| l.fd.is_some()).count();
    let innermost = levels.len().saturating_sub(1);
    for level in levels.iter_mut().take(innermost).skip(1) {
        if open <= limit {
            break;
        }
        if level.fd.take().is_some() {
            open -= 1;
        }
    }
}

fn header_for(meta: &Stat, kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(meta.st_mode & 0o7777);
    match u64::try_from(meta.st_mtime) {
        Ok(mtime) => header.set_mtime(mtime),
        // Before 1970: GNU tar's base-256, the time's two's complement over the whole field
        // (which restore reads back).
        Err(_) => {
            if let Some(gnu) = header.as_gnu_mut() {
                let mut field = [0xff; 12];
                field[4..].copy_from_slice(&meta.st_mtime.to_be_bytes());
                gnu.mtime = field;
            }
        }
    }
    header.set_uid(meta.st_uid.into());
    header.set_gid(meta.st_gid.into());
    header
}

/// Opens `name` in `dir` as a regular file, or `Ok(None)` if it is no longer one.
fn open_regular(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<(File, Stat)>, Errno> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let meta = rustix::fs::fstat(&fd)?;
    let is_file = FileType::from_raw_mode(meta.st_mode) == FileType::RegularFile;
    Ok(is_file.then(|| (File::from(fd), meta)))
}

/// Names in the folder `dir`, sorted bytewise for a deterministic archive and reversed so
/// that popping yields them in order.
fn read_sorted(dir: BorrowedFd<'_>) -> Result<Vec<OsString>, Errno> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    names.sort_by(|a, b| b.as_encoded_bytes().cmp(a.as_encoded_bytes()));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the size of each read of `inner`.
    struct ReadSizes<R> {
        inner: R,
        largest: usize,
    }
    impl<R: Read> Read for ReadSizes<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.largest = self.largest.max(buf.len());
            self.inner.read(buf)
        }
    }

    /// An archive of one entry appended by [`append_body`] through the daemon's writers,
    /// decoded again; and the largest read of its data.
    fn through_the_writers(codec: proto::Codec, name: &str, data: &[u8]) -> (Vec<u8>, usize) {
        use crate::engine::HashingWriter;
        use crate::format::{Encoder, Sealer};
        let sealer = Sealer::new(None, HashingWriter::new(Vec::new())).unwrap();
        let encoder = Encoder::new(proto::Compression::of(codec), sealer).unwrap();
        let mut builder = Builder::new(encoder);
        let mut header = Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        let mut source = ReadSizes {
            inner: data,
            largest: 0,
        };
        let size = data.len() as u64;
        append_body(
            &mut builder,
            &mut header,
            Path::new(name),
            &mut source,
            size,
        )
        .unwrap();
        let sealer = builder.into_inner().unwrap().finish().unwrap();
        let (stored, _, _) = sealer.finish().unwrap().finish().unwrap();
        let mut tar = Vec::new();
        crate::format::decoder(Some(codec), &stored[..])
            .unwrap()
            .read_to_end(&mut tar)
            .unwrap();
        (tar, source.largest)
    }

    #[test]
    fn a_file_is_appended_whole_with_its_long_name_and_padding_by_every_codec() {
        let data: Vec<u8> = (0..3_000_001u32).map(|i| (i % 253) as u8).collect();
        let name = format!("top/{}/file.bin", "long".repeat(40));
        for codec in [proto::Codec::None, proto::Codec::Gzip, proto::Codec::Zstd] {
            let (tar, largest) = through_the_writers(codec, &name, &data);
            // A whole number of blocks: the data's padding is there.
            assert_eq!(tar.len() % 512, 0, "{codec}");
            let mut archive = tar::Archive::new(&tar[..]);
            let mut entries = archive.entries().unwrap();
            let mut entry = entries.next().unwrap().unwrap();
            assert_eq!(
                entry.path().unwrap().to_str(),
                Some(name.as_str()),
                "{codec}"
            );
            let mut read = Vec::new();
            entry.read_to_end(&mut read).unwrap();
            assert!(read == data, "{codec}: the data came back changed");
            drop(entry);
            assert!(entries.next().is_none(), "{codec}");
            if codec == proto::Codec::None {
                // Read into the hashing writer's chunks, not through an 8 KiB buffer.
                assert!(largest > 64 * 1024, "reads of at most {largest} bytes");
            }
        }
    }

    /// `depth` nested folders `0/1/2/…` under `top`, each as a walk level with its handle.
    fn chain(top: &Path, depth: usize) -> Vec<Level> {
        let open = |path: &Path| {
            rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
        };
        let level = |path: &Path, name: &str| {
            let fd = open(path);
            let id = file_id(&rustix::fs::fstat(&fd).unwrap());
            Level {
                fd: Some(fd),
                name: name.into(),
                id,
                rel_len: 0,
                link_path: Cell::new(None),
                pending: Vec::new(),
            }
        };
        let mut levels = vec![level(top, "")];
        let mut path = top.to_owned();
        for i in 0..depth {
            path.push(i.to_string());
            std::fs::create_dir(&path).unwrap();
            levels.push(level(&path, &i.to_string()));
        }
        levels
    }

    fn open_count(levels: &[Level]) -> usize {
        levels.iter().filter(|l| l.fd.is_some()).count()
    }

    /// Walk levels named `names` below the root, without handles.
    fn named_levels(names: &[&str]) -> Vec<Level> {
        let level = |name: &str| Level {
            fd: None,
            name: name.into(),
            id: (0, 0),
            rel_len: 0,
            link_path: Cell::new(None),
            pending: Vec::new(),
        };
        std::iter::once("")
            .chain(names.iter().copied())
            .map(level)
            .collect()
    }

    #[test]
    fn a_linked_files_folder_is_added_to_the_link_paths_once() {
        let levels = named_levels(&["0", "1", "2"]);
        let mut paths = PathTree::new();
        let folder = link_path_of(&mut paths, &levels);
        assert_eq!(paths.path(folder), PathBuf::from("0/1/2"));
        assert_eq!(link_path_of(&mut paths, &levels), folder);
        assert_eq!(paths.len(), 4, "the root and the three folders");
        // The walk moves on to a sibling of the innermost folder: only its name is added.
        let sibling = named_levels(&["0", "1", "other"]);
        for (level, known) in sibling.iter().zip(&levels).take(3) {
            level.link_path.set(known.link_path.get());
        }
        let other = link_path_of(&mut paths, &sibling);
        assert_eq!(paths.path(other), PathBuf::from("0/1/other"));
        assert_eq!(paths.parent(other), paths.parent(folder));
        assert_eq!(paths.len(), 5);
    }

    #[test]
    fn paths_longer_than_path_max_are_shown_by_their_two_ends() {
        assert_eq!(shorten("/src/a/b"), "/src/a/b");
        let long = format!("/src/{}/end", "é".repeat(3000));
        let shown = shorten(&long);
        assert!(
            shown.starts_with("/src/é") && shown.ends_with("é/end"),
            "{shown}"
        );
        assert!(shown.contains(" bytes]…") && shown.len() < 2 * SHOWN_END + 32);
    }

    #[test]
    fn the_longest_name_written_is_the_longest_every_reader_accepts() {
        let bound = usize::try_from(MAX_LONG_NAME).unwrap();
        assert!(fits_long_name(bound - 1));
        assert!(!fits_long_name(bound));
    }

    #[test]
    fn handles_stay_bounded_and_reopen_through_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let mut levels = chain(dir.path(), 10);
        close_shallowest(&mut levels, 3);
        assert_eq!(open_count(&levels), 3);
        // The root and the innermost folder stay open.
        assert!(levels[0].fd.is_some() && levels[10].fd.is_some());

        // Back up at level 5, whose handle was closed: it and its ancestors re-open.
        let mut up = levels.drain(..6).collect::<Vec<_>>();
        assert!(up[5].fd.is_none());
        reopen(&mut up).unwrap();
        for level in &up {
            let fd = level.fd.as_ref().unwrap();
            assert_eq!(file_id(&rustix::fs::fstat(fd).unwrap()), level.id);
        }
    }

    #[test]
    fn a_folder_replaced_while_its_handle_was_closed_is_not_entered() {
        let dir = tempfile::tempdir().unwrap();
        let mut levels = chain(dir.path(), 4);
        close_shallowest(&mut levels, 2);
        // Back up at `0/1/2`, whose handle and its parents' were closed.
        levels.truncate(4);
        // Folder `0/1` is swapped for another one of the same name, then for a symlink.
        let one = dir.path().join("0/1");
        std::fs::rename(&one, dir.path().join("moved")).unwrap();
        std::fs::create_dir(&one).unwrap();
        let (index, reason) = reopen(&mut levels).unwrap_err();
        assert_eq!(index, 2);
        assert!(reason.contains("replaced"), "{reason}");

        std::fs::remove_dir(&one).unwrap();
        std::os::unix::fs::symlink(dir.path().join("moved"), &one).unwrap();
        let (index, reason) = reopen(&mut levels).unwrap_err();
        assert_eq!(index, 2);
        assert!(reason.contains("cannot re-open"), "{reason}");
    }
}
