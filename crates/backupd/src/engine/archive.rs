//! Walks the source folder and appends each entry to a tar stream.
//!
//! Depth-first in sorted name order (so the same tree gives the same archive), with an
//! explicit stack instead of recursion so deep trees cannot overflow the thread's stack.
//! Symlinks are stored, never followed; a file with several links is stored once and then
//! as hard-link entries; sockets, FIFOs and devices are skipped. Trouble with one entry is a
//! warning, never the end of the backup: only write errors and cancellation stop the walk.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use super::error::EngineError;
use super::exclude::ExcludeSet;
use super::progress::{Meter, MeteredReader, is_cancellation};
use super::sized_reader::SizedReader;

/// Counts and warnings of one walk.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes_in: u64,
    pub warnings: Vec<String>,
}

/// Identity of a file on disk.
type FileId = (u64, u64);

pub(crate) struct TreeWriter<'w, 'a, W: Write> {
    builder: &'w mut Builder<W>,
    excludes: &'w ExcludeSet,
    meter: &'w mut Meter<'a>,
    /// The archive being written, for error messages and so it never archives itself.
    archive: &'w Path,
    archive_id: Option<FileId>,
    /// First archived path of each multiply-linked file.
    links: HashMap<FileId, PathBuf>,
    stats: Stats,
}

/// One entry waiting to be archived.
struct Pending {
    path: PathBuf,
    /// Relative to the source root; what exclude patterns see.
    rel: PathBuf,
}

impl<'w, 'a, W: Write> TreeWriter<'w, 'a, W> {
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
            links: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// Archives `root` and everything below it under the top-level folder `top`.
    pub(crate) fn write_tree(mut self, root: &Path, top: &OsStr) -> Result<Stats, EngineError> {
        let unreadable = |source| EngineError::SourceUnreadable {
            path: root.to_owned(),
            source,
        };
        let meta = fs::metadata(root).map_err(unreadable)?;
        let children = read_sorted(root).map_err(unreadable)?;
        let top = Path::new(top);
        self.append_dir(top, &meta)?;
        let mut stack = Vec::new();
        push_children(&mut stack, root, Path::new(""), children);

        while let Some(Pending { path, rel }) = stack.pop() {
            self.meter.check_cancel()?;
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(&path, &format!("vanished or unreadable ({e})"));
                    continue;
                }
            };
            let kind = meta.file_type();
            if self
                .excludes
                .is_excluded(&rel.to_string_lossy(), kind.is_dir())
            {
                continue;
            }
            let name = top.join(&rel);
            if kind.is_dir() {
                self.append_dir(&name, &meta)?;
                match read_sorted(&path) {
                    Ok(children) => push_children(&mut stack, &path, &rel, children),
                    Err(e) => self.warn(&path, &format!("cannot list directory ({e})")),
                }
            } else if kind.is_symlink() {
                self.append_symlink(&path, &name, &meta)?;
            } else if kind.is_file() {
                if self.archive_id == Some((meta.dev(), meta.ino())) {
                    continue;
                }
                self.append_file(&path, &name)?;
            } else {
                let what = if kind.is_fifo() {
                    "named pipe (FIFO)"
                } else if kind.is_socket() {
                    "socket"
                } else if kind.is_block_device() || kind.is_char_device() {
                    "device"
                } else {
                    "special file"
                };
                self.warn(&path, &format!("skipped: {what}"));
            }
            self.meter.tick();
        }
        Ok(self.stats)
    }

    fn warn(&mut self, path: &Path, reason: &str) {
        self.stats
            .warnings
            .push(format!("{}: {reason}", path.display()));
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

    fn append_dir(&mut self, name: &Path, meta: &Metadata) -> Result<(), EngineError> {
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

    fn append_symlink(
        &mut self,
        path: &Path,
        name: &Path,
        meta: &Metadata,
    ) -> Result<(), EngineError> {
        let target = match fs::read_link(path) {
            Ok(t) => t,
            Err(e) => {
                self.warn(path, &format!("cannot read symlink ({e})"));
                return Ok(());
            }
        };
        let mut header = header_for(meta, EntryType::Symlink, 0);
        self.builder
            .append_link(&mut header, name, &target)
            .map_err(|e| self.write_error(e))?;
        self.stats.symlinks += 1;
        self.meter.progress.files += 1;
        Ok(())
    }

    fn append_file(&mut self, path: &Path, name: &Path) -> Result<(), EngineError> {
        // Opened without following links and without blocking, then checked with fstat,
        // so a file swapped for a symlink or FIFO since the lstat is never read through.
        let (file, meta) = match open_regular(path) {
            Ok(Some(pair)) => pair,
            Ok(None) => {
                self.warn(path, "changed type while being read, skipped");
                return Ok(());
            }
            Err(e) => {
                self.warn(path, &format!("vanished or unreadable ({e})"));
                return Ok(());
            }
        };
        let id = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some(first) = self.links.get(&id)
        {
            let first = first.clone();
            let mut header = header_for(&meta, EntryType::Link, 0);
            self.builder
                .append_link(&mut header, name, &first)
                .map_err(|e| self.write_error(e))?;
            self.stats.files += 1;
            self.stats.hardlinks += 1;
            self.meter.progress.files += 1;
            return Ok(());
        }

        let size = meta.len();
        let mut header = header_for(&meta, EntryType::Regular, size);
        let mut sized = SizedReader::new(file, size);
        let result = self.builder.append_data(
            &mut header,
            name,
            MeteredReader::new(&mut sized, &mut *self.meter),
        );
        result.map_err(|e| self.write_error(e))?;
        self.stats.bytes_in += sized.bytes_from_source();
        if let Some(change) = sized.finish() {
            self.warn(path, &change.to_string());
        }
        self.stats.files += 1;
        self.meter.progress.files += 1;
        if meta.nlink() > 1 {
            self.links.insert(id, name.to_owned());
        }
        Ok(())
    }
}

fn header_for(meta: &Metadata, kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(meta.mode() & 0o7777);
    // Times before 1970 cannot be stored in a tar header; clamp rather than fail.
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header.set_uid(meta.uid().into());
    header.set_gid(meta.gid().into());
    header
}

/// Opens `path` as a regular file, or `Ok(None)` if it is no longer one.
fn open_regular(path: &Path) -> io::Result<Option<(File, Metadata)>> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    Ok(meta.is_file().then_some((file, meta)))
}

/// Names in `dir`, sorted bytewise for a deterministic archive.
fn read_sorted(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    Ok(names)
}

/// Pushes in reverse so that popping yields sorted order.
fn push_children(stack: &mut Vec<Pending>, dir: &Path, rel: &Path, names: Vec<OsString>) {
    stack.extend(names.into_iter().rev().map(|name| Pending {
        path: dir.join(&name),
        rel: rel.join(&name),
    }));
}
