//! Safe restore: an archive whose bytes match its manifest is extracted into a folder, and
//! no entry may write outside it, even while someone else changes the folder meanwhile.
//!
//! Every entry's path is checked (absolute, `..`) and then written relative to directory
//! handles opened without following symlinks ([`super::beneath`]): a folder swapped for a
//! symlink during the restore makes that entry refused, never a write elsewhere. Existing
//! entries are never replaced unless asked (`overwrite`), and then only by renaming a new
//! file over them in the same folder handle (the temporary names an interrupted restore left
//! are swept by the next one writing in that folder: [`super::restore_temp`]). A restore that
//! fails midway removes what it created and says what it could not remove; that includes an
//! archive found damaged after its last entry, since it is read to its end as verify reads it
//! ([`super::tar_end`]). One that succeeds returns only once what it wrote is on disk: one
//! `syncfs` at the end, after those made every so often on the way ([`super::early_sync`]).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, Stat};
use tar::EntryType;

use super::beneath::{self, Attributes, Blocked};
use super::checksum::{Integrity, check_integrity};
use super::early_sync::EarlySync;
use super::error::StoreError;
use super::restore_target::{self, MadeFolder};
use super::restore_temp::{self, Sweeper};
use super::tar_end::read_past_entries;
use super::until_stopped::{self, NEVER, Stopping, UntilStopped};
use super::verify::{is_encrypted, open_tar_stream, read_manifest};
use crate::destination::Destination;
use crate::format::naming::manifest_name_for;
use crate::format::xattrs::{self, Xattr};
use crate::format::{CountingReader, Identities, Manifest, ReadAhead};
use crate::path_tree::{NodeId, PathTree};

/// What a restore wrote and what it refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Regular files, including hard links.
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Content bytes of the regular files.
    pub bytes: u64,
    /// `<entry path>: <reason>` for the first [`REFUSED_LISTED`] entries not restored for
    /// safety (each part cut at [`REFUSED_TEXT_MAX`] bytes): a hostile archive may hold
    /// millions, with names of up to a MiB.
    pub refused: Vec<String>,
    /// Refused entries after those in `refused`, counted only.
    pub refused_not_listed: u64,
    /// Existing entries replaced (only with `overwrite`).
    pub replaced: u64,
    /// Temporary names an interrupted restore left in the folders written into, removed
    /// ([`super::restore_temp`]).
    pub swept: u64,
}

/// What to restore and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// If not empty, only entries under these subpaths, given relative to the backed-up
    /// folder (`docs`) or including its top-level name (`tree/docs`).
    pub paths: Vec<String>,
    /// Replace existing files, symlinks and hard links of the same name (never a folder).
    pub overwrite: bool,
    /// Leave writing to disk to the kernel, as `tar -x` does (no sync): a power loss soon
    /// after may leave files empty, and with `overwrite`, neither the old content nor the new.
    pub no_sync: bool,
}

/// How many conflicting entries a refusal names.
const CONFLICTS_SHOWN: usize = 5;

/// How many refused entries a report names; the rest are counted.
const REFUSED_LISTED: usize = 100;
/// The longest entry path (and reason) a refusal shows, in bytes: the longest path Linux
/// takes (`PATH_MAX`).
const REFUSED_TEXT_MAX: usize = 4096;

/// Restores `archive` into `to`, which is created if it does not exist. An existing `to`
/// may hold other things; unless `options.overwrite`, an entry whose name is taken fails the
/// restore before anything is written.
///
/// A subpath matching nothing fails before anything is written.
pub fn restore(
    destination: &dyn Destination,
    file: &str,
    to: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport, StoreError> {
    restore_with(destination, file, to, options, None, NEVER)
}

/// [`restore`], decrypting an encrypted archive with `identities`. age authenticates each
/// 64 KiB chunk as it is read, so a tampered or truncated archive fails midway: what was
/// written is then removed as for any failed restore. Entries that `overwrite` would replace
/// cannot be put back, so with it the whole archive is authenticated before anything is
/// written.
///
/// Once `stopping` says so (the daemon is stopping), the restore ends at its next entry or
/// its next read of a file's data, undoes what it wrote as a failed restore does, and fails
/// with [`StoreError::Stopped`].
pub fn restore_with(
    destination: &dyn Destination,
    file: &str,
    to: &Path,
    options: &RestoreOptions,
    identities: Option<&Identities>,
    stopping: Stopping<'_>,
) -> Result<RestoreReport, StoreError> {
    let archive = Archive {
        destination,
        file,
        path: destination.path_of(file),
        identities,
        stopping,
    };
    let manifest = checked_manifest(&archive)?;
    if is_encrypted(file, Some(&manifest)) {
        let unreadable = |source| StoreError::Decrypt {
            path: archive.path.clone(),
            source,
        };
        let stream =
            open_tar_stream(destination, file, Some(&manifest), identities).map_err(unreadable)?;
        if options.overwrite {
            let mut stream = UntilStopped::new(stream, stopping);
            let read = io::copy(&mut stream, &mut io::sink());
            archive.unless_stopped()?;
            read.map_err(unreadable)?;
        }
    }
    let existing = restore_target::open_existing(to)?;
    let mut filters = Filters::new(&options.paths);
    let check_conflicts = match &existing {
        Some(_) if options.overwrite => None,
        Some(root) => (!restore_target::is_empty(root, to)?).then_some(root),
        None => None,
    };
    let mut stand_ins = HashMap::new();
    let mut paths = PathTree::new();
    if !filters.is_empty() || check_conflicts.is_some() {
        let mut scan = scan(&archive, &manifest, &filters, check_conflicts, &mut paths)?;
        if let Some(path) = filters.unmatched(&scan.matched).into_iter().next() {
            return Err(StoreError::PathNotInArchive {
                archive: archive.path,
                path,
            });
        }
        if filters.settle(&scan.matched) && check_conflicts.is_some() {
            // The conflicts were those of entries no longer selected too.
            scan = self::scan(&archive, &manifest, &filters, check_conflicts, &mut paths)?;
        }
        if !scan.conflicts.is_empty() {
            return Err(StoreError::WouldOverwrite {
                path: to.to_owned(),
                total: scan.conflicts_total,
                entries: scan.conflicts,
            });
        }
        if !filters.is_empty() {
            stand_ins = scan.stand_ins(&filters, &paths);
        }
    }
    let (root, made) = match existing {
        Some(root) => (root, Vec::new()),
        None => restore_target::create(to)?,
    };
    // Best effort: without a handle of its own, the final sync does it all.
    let early_sync = (!options.no_sync)
        .then(|| rustix::io::dup(&root).ok().map(EarlySync::start))
        .flatten();
    Extractor {
        archive: &archive,
        target: to,
        root,
        made_target: made,
        filters: &filters,
        paths,
        stand_ins,
        stood_in: HashMap::new(),
        overwrite: options.overwrite,
        sync: !options.no_sync,
        owners: rustix::process::geteuid().is_root(),
        report: RestoreReport::default(),
        cache: None,
        created_dirs: HashMap::new(),
        written: HashSet::new(),
        above: HashMap::new(),
        journal: Vec::new(),
        folders: Vec::new(),
        kept_folders: HashMap::new(),
        replaced: FirstFew::default(),
        file_systems: HashMap::new(),
        sweeper: Sweeper::new(),
        swept: HashSet::new(),
        early_sync,
        copy_buffer: Vec::new(),
    }
    .run(&manifest)
}

/// The archive being restored: where it is read from, and its path for messages.
struct Archive<'a> {
    destination: &'a dyn Destination,
    file: &'a str,
    path: PathBuf,
    identities: Option<&'a Identities>,
    /// Whether the daemon is stopping, which ends the restore.
    stopping: Stopping<'a>,
}

impl Archive<'_> {
    /// The failure of a restore that `stopping` ended, `cleanup` saying what became of what
    /// it wrote.
    fn stopped(&self, cleanup: String) -> StoreError {
        StoreError::Stopped {
            archive: self.path.clone(),
            cleanup,
        }
    }

    /// Fails once `stopping` says so, before the restore has written anything.
    fn unless_stopped(&self) -> Result<(), StoreError> {
        if (self.stopping)() {
            return Err(self.stopped("nothing was written".to_owned()));
        }
        Ok(())
    }

    /// The tar stream, decoded on a thread of its own while the entries are written, and
    /// counted where the tar reader takes it, to find the end-of-archive marker.
    fn tar_stream(&self, manifest: &Manifest) -> io::Result<tar::Archive<TarStream>> {
        let stream = open_tar_stream(self.destination, self.file, Some(manifest), self.identities)?;
        let stream: Box<dyn Read + Send> = match ReadAhead::start(stream) {
            Ok(ahead) => Box::new(ahead),
            Err(stream) => Box::new(stream),
        };
        Ok(tar::Archive::new(CountingReader::new(stream)))
    }
}

/// Bytes a file's data is read and written in: a 16th of the `write` calls of `io::copy`'s
/// 8 KiB, and still within the core's cache between the read and the write.
const COPY_BUFFER: usize = 128 << 10;

/// Copies `data` to the end into `file` through `buffer` (made [`COPY_BUFFER`] long).
fn copy_through(
    data: &mut impl Read,
    file: &mut fs::File,
    buffer: &mut Vec<u8>,
) -> io::Result<u64> {
    use std::io::Write;
    buffer.resize(COPY_BUFFER, 0);
    let mut copied = 0;
    loop {
        let n = match data.read(buffer) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        file.write_all(&buffer[..n])?;
        copied += n as u64;
    }
}

/// Copies a GNU sparse entry's `size` bytes, its holes (read as zeros) left as holes.
fn copy_keeping_holes(data: &mut impl Read, file: &mut fs::File, size: u64) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    // Sized first: a size the file system cannot hold (a tiny archive may claim a PiB) fails
    // now, not after reading as many zeros.
    if i64::try_from(size).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("the entry claims {size} bytes, more than any file can hold"),
        ));
    }
    file.set_len(size)?;
    let mut block = vec![0; 64 << 10];
    let mut copied = 0;
    loop {
        let n = match data.read(&mut block) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if is_zeros(&block[..n]) {
            file.seek(SeekFrom::Current(n as i64))?;
        } else {
            file.write_all(&block[..n])?;
        }
        copied += n as u64;
    }
    file.set_len(copied)?;
    Ok(copied)
}

/// Whether `bytes` are all zeros: a page at a time against a page of zeros (`memcmp`, as
/// fast in a debug build), where a byte at a time read a hole's zeros at a tenth of the speed.
fn is_zeros(bytes: &[u8]) -> bool {
    const PAGE: usize = 4096;
    static ZEROS: [u8; PAGE] = [0; PAGE];
    bytes.chunks(PAGE).all(|page| page == &ZEROS[..page.len()])
}

/// `text`, or its first [`REFUSED_TEXT_MAX`] bytes and how long it was.
fn cut(text: &str) -> std::borrow::Cow<'_, str> {
    proto::one_line::cut(text, REFUSED_TEXT_MAX)
}

/// Why an entry that is a sparse file in the pax form (`GNU.sparse.*` records: what bsdtar
/// and `tar --sparse --format=pax` write) is not restored. The tar reader takes it for a plain
/// file under a made-up name (`GNUSparseFile.0/NAME`) holding the map and the data regions:
/// written so, the file would be wrong under a wrong name.
const PAX_SPARSE: &str = "a sparse file in the pax format (GNU.sparse records, as bsdtar \
                          writes them), which backupd cannot restore: extract it with tar or bsdtar";

/// Whether the entry's pax header describes a sparse file.
fn is_pax_sparse<R: Read>(entry: &mut tar::Entry<'_, R>) -> bool {
    let Ok(Some(extensions)) = entry.pax_extensions() else {
        return false;
    };
    extensions
        .flatten()
        .any(|extension| extension.key_bytes().starts_with(b"GNU.sparse."))
}

/// Whether entries of `kind` hold a file's data (a hard link may point at them).
fn is_file_data(kind: EntryType) -> bool {
    matches!(
        kind,
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse
    )
}

/// The longest file name Linux file systems hold, in bytes.
const NAME_MAX: usize = 255;
const NAME_TOO_LONG: &str =
    "a name in its path is longer than 255 bytes, more than a file system holds";

/// An entry's modification time in seconds since 1970. The tar reader gives it unsigned: a
/// time before 1970, which GNU tar stores in base-256, comes as its two's complement.
pub(super) fn entry_mtime(header: &tar::Header) -> i64 {
    i64::from_ne_bytes(header.mtime().unwrap_or(0).to_ne_bytes())
}

/// What a restore's tar reader reads: the decoded stream, counted.
type TarStream = CountingReader<Box<dyn Read + Send>>;

/// The manifest, once the archive's bytes are known to match it.
fn checked_manifest(archive: &Archive<'_>) -> Result<Manifest, StoreError> {
    let manifest = read_manifest(
        archive.destination,
        archive.file,
        &manifest_name_for(archive.file),
    )?;
    let unreadable = |source| StoreError::ReadArchive {
        path: archive.path.clone(),
        source,
    };
    let bytes = archive.destination.open(archive.file).map_err(unreadable)?;
    let bytes = UntilStopped::new(bytes, archive.stopping);
    let checked = check_integrity(bytes, &manifest);
    archive.unless_stopped()?;
    match checked.map_err(unreadable)? {
        Integrity::Matches => Ok(manifest),
        differs => Err(StoreError::ChecksumMismatch {
            path: archive.path.clone(),
            reason: differs.describe(&manifest).unwrap_or_default(),
        }),
    }
}

/// What a first pass over the archive found.
#[derive(Debug, Default)]
struct Scan {
    /// Which meanings of each subpath filter named entries.
    matched: Vec<Matched>,
    /// The first few entries whose name is taken in the target, and how many in all.
    conflicts: Vec<String>,
    conflicts_total: usize,
    /// Every hard link: its path, and that of the entry holding its data.
    links: Vec<(NodeId, NodeId)>,
}

impl Scan {
    /// For each file a `paths` selection leaves out that a selected hard link needs, the
    /// first such link: the file's data is restored under that link's name instead.
    fn stand_ins(&self, filters: &Filters, paths: &PathTree) -> HashMap<NodeId, NodeId> {
        let mut stand_ins = HashMap::new();
        for (link, target) in &self.links {
            if filters.select(&paths.parts(*link)).is_some()
                && filters.select(&paths.parts(*target)).is_none()
            {
                stand_ins.entry(*target).or_insert(*link);
            }
        }
        stand_ins
    }
}

/// Reads the archive's entry names: which filters match nothing and, with `root`, which
/// selected entries would land on a name already taken (a folder on a folder is fine). The
/// paths of hard links and their files are added to `paths`.
fn scan(
    archive: &Archive<'_>,
    manifest: &Manifest,
    filters: &Filters,
    root: Option<&OwnedFd>,
    paths: &mut PathTree,
) -> Result<Scan, StoreError> {
    let stream_error = |source| StoreError::Extract {
        archive: archive.path.clone(),
        entry: "<archive stream>".to_owned(),
        source,
        cleanup: "nothing was written".to_owned(),
    };
    let mut found = Scan {
        matched: vec![Matched::default(); filters.len()],
        ..Scan::default()
    };
    let mut tar = archive.tar_stream(manifest).map_err(stream_error)?;
    for entry in tar.entries().map_err(stream_error)? {
        archive.unless_stopped()?;
        let entry = entry.map_err(stream_error)?;
        if is_global_header(&entry) {
            continue;
        }
        let path = entry.path().map_err(stream_error)?;
        let Ok(parts) = safe_components(&path) else {
            continue;
        };
        for (i, matched) in found.matched.iter_mut().enumerate() {
            let now = filters.matches(i, &parts);
            matched.below_top |= now.below_top;
            matched.root_only |= now.root_only;
        }
        // Only a `paths` selection can leave a link's file out.
        if !filters.is_empty()
            && entry.header().entry_type() == EntryType::Link
            && let Ok(Some(target)) = entry.link_name()
            && let Ok(target) = safe_components(&target)
        {
            found.links.push((paths.add(&parts), paths.add(&target)));
        }
        if filters.select(&parts).is_none() {
            continue;
        }
        let (Some(root), Some((name, parents))) = (root, parts.split_last()) else {
            continue;
        };
        let Ok(parent) = beneath::walk(root, parents, None) else {
            // Missing parents are made fresh; a blocked one is refused when extracting.
            continue;
        };
        let taken = match beneath::stat_of(&parent, name).map_err(stream_error)? {
            None => false,
            Some(stat) => {
                entry.header().entry_type() != EntryType::Directory
                    || beneath::kind_of(&stat) != FileType::Directory
            }
        };
        if taken {
            found.conflicts_total += 1;
            if found.conflicts.len() < CONFLICTS_SHOWN {
                found.conflicts.push(beneath::shown(&parts));
            }
        }
    }
    // Read to its end as verify reads it ([`super::tar_end`]), so a damaged end is refused
    // before anything is written.
    read_past_entries(tar)
        .map_err(io::Error::from)
        .map_err(stream_error)?;
    Ok(found)
}

/// A pax global header (`git archive` writes one, holding the commit): defaults for the
/// entries after it, not an entry. GNU tar and Python's `tarfile` take it the same way.
pub(super) fn is_global_header<R: io::Read>(entry: &tar::Entry<'_, R>) -> bool {
    entry.header().entry_type() == EntryType::XGlobalHeader
}

/// The relative, `..`-free components of an archive path, or why it is refused. An empty
/// result is the archive root itself (`./`).
pub(super) fn safe_components(path: &Path) -> Result<Vec<&OsStr>, &'static str> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            // No file name can hold one: the system call would fail, not refuse the entry.
            Component::Normal(part) if part.as_bytes().contains(&0) => {
                return Err("name contains a NUL byte");
            }
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(parts)
}

/// The `--path` subpaths a restore or a listing selects. Each is relative to the backed-up
/// folder (below the archive's top-level entry), or starts with the folder's name (from the
/// archive's root). Where both name entries (`--path docs` in a backup of `docs/` that holds
/// a `docs/` of its own), the relative meaning is the one: the other can be said relatively
/// too, and [`Filters::settle`] fixes each subpath's meaning once the entries are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Filters {
    paths: Vec<Filter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    /// As given, for messages.
    given: String,
    parts: Vec<String>,
    /// `None` until settled: either meaning, the relative one first.
    anchor: Option<Anchor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    /// Relative to the backed-up folder.
    BelowTop,
    /// Starting with the backed-up folder's name.
    Root,
}

/// Which meanings of one subpath named entries of an archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Matched {
    pub(super) below_top: bool,
    /// From the root, entries the relative meaning did not name.
    pub(super) root_only: bool,
}

impl Filters {
    pub(super) fn new(paths: &[String]) -> Self {
        let paths = paths
            .iter()
            .map(|p| Filter {
                given: p.clone(),
                parts: Path::new(p)
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                        // `..` can never match an entry (those are refused anyway).
                        Component::ParentDir => Some("..".to_owned()),
                        _ => None,
                    })
                    .collect(),
                anchor: None,
            })
            .collect();
        Filters { paths }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Whether `parts` is a folder strictly above what a filter selects.
    pub(super) fn is_above(&self, parts: &[&OsStr]) -> bool {
        let above = |parts: &[&OsStr], prefix: &[String]| {
            parts.len() < prefix.len() && parts.iter().zip(prefix).all(|(a, b)| *a == OsStr::new(b))
        };
        self.paths.iter().any(|filter| {
            let below_top = !parts.is_empty() && above(&parts[1..], &filter.parts);
            match filter.anchor {
                Some(Anchor::BelowTop) => below_top,
                Some(Anchor::Root) => above(parts, &filter.parts),
                None => below_top || above(parts, &filter.parts),
            }
        })
    }

    /// The index of the first filter selecting `parts`, or `None`. With no filters every
    /// entry is selected (`Some(usize::MAX)`).
    pub(super) fn select(&self, parts: &[&OsStr]) -> Option<usize> {
        if self.is_empty() {
            return Some(usize::MAX);
        }
        (0..self.paths.len()).find(|i| {
            let matched = self.matches(*i, parts);
            matched.below_top || matched.root_only
        })
    }

    /// Whether the folders an unsafe `path` names before its first `..` are selected
    /// (`top/sub/../../x` or `/top/x` by `top`).
    fn select_leading(&self, path: &Path) -> bool {
        use std::path::Component;
        let leading: Vec<&OsStr> = (path.components())
            .take_while(|part| *part != Component::ParentDir)
            .filter_map(|part| match part {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .collect();
        !leading.is_empty() && self.select(&leading).is_some()
    }

    /// Which meanings of filter `i` select `parts`, as far as it is settled.
    pub(super) fn matches(&self, i: usize, parts: &[&OsStr]) -> Matched {
        let under = |prefix: &[String], parts: &[&OsStr]| {
            !prefix.is_empty()
                && parts.len() >= prefix.len()
                && prefix.iter().zip(parts).all(|(a, b)| OsStr::new(a) == *b)
        };
        let Some(filter) = self.paths.get(i) else {
            return Matched::default();
        };
        let below_top = filter.anchor != Some(Anchor::Root)
            && !parts.is_empty()
            && under(&filter.parts, &parts[1..]);
        let root = filter.anchor != Some(Anchor::BelowTop) && under(&filter.parts, parts);
        Matched {
            below_top,
            root_only: root && !below_top,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.paths.len()
    }

    /// Gives each filter the meaning that named entries (`matched`, from a pass over them
    /// all): the relative one if it did. True if that leaves out entries the unsettled
    /// filters selected.
    pub(super) fn settle(&mut self, matched: &[Matched]) -> bool {
        let mut narrowed = false;
        for (filter, matched) in self.paths.iter_mut().zip(matched) {
            filter.anchor = if matched.below_top {
                narrowed |= matched.root_only;
                Some(Anchor::BelowTop)
            } else {
                Some(Anchor::Root)
            };
        }
        narrowed
    }

    /// The filters, as given, that `matched` says named nothing.
    pub(super) fn unmatched(&self, matched: &[Matched]) -> Vec<String> {
        self.paths
            .iter()
            .zip(matched)
            .filter(|(_, m)| !m.below_top && !m.root_only)
            .map(|(filter, _)| filter.given.clone())
            .collect()
    }
}

/// A failure that ends the restore: the entry it happened on, and why.
struct Fatal {
    entry: String,
    source: io::Error,
}

fn fatal(entry: &str) -> impl FnOnce(io::Error) -> Fatal + '_ {
    move |source| Fatal {
        entry: entry.to_owned(),
        source,
    }
}

/// Something this restore created, to remove if it fails. Folders it made are private
/// (0700) until the end, so what is in them is its own: they are removed whole, and files in
/// them are not journalled (memory grows with folders, not files).
struct Made {
    path: NodeId,
    folder: bool,
    identity: (u64, u64),
}

/// A folder whose own entry was restored: its attributes are set at the end, on the same
/// folder (checked by device and inode).
struct Folder {
    path: NodeId,
    attributes: Attributes,
    /// Set after the attributes (and after its entries: a default ACL is not inherited by
    /// files that had none of their own).
    xattrs: Vec<Xattr>,
    identity: (u64, u64),
    /// From the archive; else made on the way to an entry, for want of one of its own.
    archived: bool,
}

/// A folder that was there before the restore, and the times it had.
struct KeptFolder {
    identity: (u64, u64),
    times: rustix::fs::Timestamps,
}

impl KeptFolder {
    fn of(stat: &Stat) -> Self {
        let at = |tv_sec, tv_nsec: u64| rustix::fs::Timespec {
            tv_sec,
            tv_nsec: tv_nsec.try_into().unwrap_or(0),
        };
        KeptFolder {
            identity: identity(stat),
            times: rustix::fs::Timestamps {
                last_access: at(stat.st_atime, stat.st_atime_nsec),
                last_modification: at(stat.st_mtime, stat.st_mtime_nsec),
            },
        }
    }
}

/// What a folder the archive has no entry for gets, as GNU tar gives it (0777 less the
/// usual umask 022): not the 0700 it is made with.
fn unarchived_folder() -> Attributes {
    Attributes {
        mode: 0o755,
        mtime: chrono::Utc::now().timestamp(),
        owner: None,
    }
}

fn identity(stat: &Stat) -> (u64, u64) {
    #[allow(clippy::unnecessary_cast)] // `st_dev` and `st_ino` differ in width by target
    (stat.st_dev as u64, stat.st_ino as u64)
}

fn owned(parts: &[&OsStr]) -> Vec<OsString> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

fn borrowed(parts: &[OsString]) -> Vec<&OsStr> {
    parts.iter().map(OsString::as_os_str).collect()
}

/// How many temporary names in a row an entry tries before its restore fails: each taken
/// one is another restore's, or a file someone put under the next name.
const TEMP_NAME_TRIES: u32 = 100;

/// The name a non-folder entry is made under: its own, or a temporary one to rename over
/// the existing entry. A temporary name found taken (`EEXIST`) is never made over: the next
/// one is tried.
struct Slot {
    name: OsString,
    temporary: bool,
    /// Whether [`Slot::create`] made something under `name`: a temporary name is this
    /// restore's only then.
    created: bool,
}

impl Slot {
    fn own(name: &OsStr) -> Self {
        Slot {
            name: name.to_owned(),
            temporary: false,
            created: false,
        }
    }

    fn temporary() -> Self {
        Slot {
            name: restore_temp::next_temp_name(),
            temporary: true,
            created: false,
        }
    }

    /// Makes something under the slot's name with `create`, which must fail with `EEXIST`,
    /// having made nothing, when the name is taken.
    fn create<T>(&mut self, mut create: impl FnMut(&OsStr) -> io::Result<T>) -> io::Result<T> {
        let mut tries = 1;
        loop {
            match create(&self.name) {
                Ok(made) => {
                    self.created = true;
                    return Ok(made);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.temporary => {
                    if tries == TEMP_NAME_TRIES {
                        return Err(io::Error::new(
                            e.kind(),
                            format!(
                                "no free temporary name in its folder: the {tries} tried, up to \
                                 {}, were all taken",
                                self.name.to_string_lossy()
                            ),
                        ));
                    }
                    tries += 1;
                    self.name = restore_temp::next_temp_name();
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The first few of a list for a message ([`CONFLICTS_SHOWN`]), and how long it is: a
/// restore may replace millions of entries, with paths as long as a deep tree's.
#[derive(Default)]
struct FirstFew {
    shown: Vec<String>,
    total: usize,
}

impl FirstFew {
    /// Counts one more; `text` is made only if it is shown.
    fn add(&mut self, text: impl FnOnce() -> String) {
        if self.shown.len() < CONFLICTS_SHOWN {
            self.shown.push(text());
        }
        self.total += 1;
    }

    /// All of `other` after these.
    fn extend(&mut self, other: FirstFew) {
        let more = other.total - other.shown.len();
        for text in other.shown {
            self.add(|| text);
        }
        self.total += more;
    }
}

/// One pass over the archive, writing beneath `root`.
struct Extractor<'a> {
    archive: &'a Archive<'a>,
    /// As the client gave it, for messages.
    target: &'a Path,
    root: OwnedFd,
    /// The target folder and its parents, if this restore made them (deepest first).
    made_target: Vec<MadeFolder>,
    filters: &'a Filters,
    /// The paths the bookkeeping below names, as a tree: memory linear in their names, where
    /// a full path each would grow with the square of a deep tree's depth.
    paths: PathTree,
    /// Files left out by `filters` whose data a selected hard link needs, with where to put
    /// it: under the first such link's name ([`Scan::stand_ins`]).
    stand_ins: HashMap<NodeId, NodeId>,
    /// Such files once written, with the link name they were written under.
    stood_in: HashMap<NodeId, NodeId>,
    overwrite: bool,
    /// Whether to sync what is written before answering (see [`RestoreOptions::no_sync`]).
    sync: bool,
    /// Whether to give entries their archived owners (only root may).
    owners: bool,
    report: RestoreReport,
    /// The last parent folder used, as most entries share their predecessor's.
    cache: Option<(NodeId, OwnedFd)>,
    /// Folders this restore made, so a folder entry after its contents still gets its mode,
    /// with their device and inode: what is in them is this restore's own.
    created_dirs: HashMap<NodeId, (u64, u64)>,
    /// Device and inode of the regular files this restore wrote in folders it did not make:
    /// with those in folders it made, the only files a hard link may point at (memory grows
    /// with them as the journal does).
    written: HashSet<(u64, u64)>,
    /// Attributes of the folders above a `paths` selection, for when they are made.
    above: HashMap<NodeId, Attributes>,
    journal: Vec<Made>,
    folders: Vec<Folder>,
    /// Folders of the archive that were there before, with their own times to put back once
    /// the entries written in them have moved those.
    kept_folders: HashMap<NodeId, KeptFolder>,
    /// Entries that replaced an existing one (cannot be undone), for a failure's message.
    replaced: FirstFew,
    /// A folder written in on each file system (by device), to sync them all at the end:
    /// the target may hold another file system's mount point.
    file_systems: HashMap<u64, OwnedFd>,
    sweeper: Sweeper,
    /// Device and inode of the folders that were there before and have been swept of
    /// temporary names an interrupted restore left (once each).
    swept: HashSet<(u64, u64)>,
    /// Syncs the target's file system as the restore goes on, when it syncs at all.
    early_sync: Option<EarlySync>,
    /// What a file's data is copied through, reused from file to file.
    copy_buffer: Vec<u8>,
}

impl Extractor<'_> {
    fn run(mut self, manifest: &Manifest) -> Result<RestoreReport, StoreError> {
        match self.extract_all(manifest) {
            Ok(()) => {
                self.cache = None;
                // Ends its last sync: the final one below is the one that answers.
                self.early_sync = None;
                self.finish_folders();
                self.report.replaced = self.replaced.total as u64;
                // Only now is the answer "restored" true across a power loss. Undoing would
                // not make anything safer: what is written stays.
                self.sync_to_disk().map_err(|e| StoreError::Extract {
                    archive: self.archive.path.clone(),
                    entry: self.target.display().to_string(),
                    source: io::Error::new(e.kind(), format!("syncing it to disk failed: {e}")),
                    cleanup: "everything was written and is left in place, but a power loss \
                              may still lose some of it"
                        .to_owned(),
                })?;
                Ok(self.report)
            }
            Err(Fatal { entry, source }) => {
                let stopped = (self.archive.stopping)();
                self.cache = None;
                let cleanup = self.undo();
                // So that a power loss does not bring back what was removed (best effort: the
                // answer is an error anyway).
                let _ = self.sync_to_disk();
                if stopped {
                    return Err(self.archive.stopped(cleanup));
                }
                Err(StoreError::Extract {
                    archive: self.archive.path.clone(),
                    entry,
                    source,
                    cleanup,
                })
            }
        }
    }

    fn extract_all(&mut self, manifest: &Manifest) -> Result<(), Fatal> {
        let stream = "<archive stream>";
        let mut tar = self.archive.tar_stream(manifest).map_err(fatal(stream))?;
        for entry in tar.entries().map_err(fatal(stream))? {
            let mut entry = entry.map_err(fatal(stream))?;
            if is_global_header(&entry) {
                continue;
            }
            let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            until_stopped::check(self.archive.stopping).map_err(fatal(&shown))?;
            let path = entry.path().map_err(fatal(&shown))?.into_owned();
            let parts = match safe_components(&path) {
                Ok(parts) if parts.is_empty() => continue,
                Ok(parts) => parts,
                // A restore of a part says nothing of the rest: an unsafe name is said only
                // when the folders it names before its first `..` are selected.
                Err(_) if !self.filters.is_empty() && !self.filters.select_leading(&path) => {
                    continue;
                }
                Err(reason) => {
                    self.refuse(&shown, reason);
                    continue;
                }
            };
            let kind = entry.header().entry_type();
            let stand_in = match self.take_stand_in(&parts) {
                Some((file, link)) if is_file_data(kind) => {
                    self.stood_in.insert(file, link);
                    Some(owned(&self.paths.parts(link)))
                }
                _ => None,
            };
            let (parts, shown) = match &stand_in {
                Some(link) => (borrowed(link), beneath::shown(&borrowed(link))),
                None => (parts, shown),
            };
            if stand_in.is_none() && self.filters.select(&parts).is_none() {
                // A folder above the selection keeps its archived attributes if this
                // restore makes it on the way.
                if entry.header().entry_type() == EntryType::Directory
                    && self.filters.is_above(&parts)
                    && let Ok(attributes) = self.attributes_of(entry.header())
                {
                    self.above.insert(self.paths.add(&parts), attributes);
                }
                continue;
            }
            if kind == EntryType::Link
                && !self.stood_in.is_empty()
                && let Ok(Some(target)) = entry.link_name()
                && let Ok(target) = safe_components(&target)
                && let Some(target) = self.paths.find(&target)
                && let Some(stood_in) = self.stood_in.get(&target)
                && Some(*stood_in) == self.paths.find(&parts)
            {
                // Its data is already here, restored under its name (and counted).
                continue;
            }
            if matches!(kind, EntryType::Char | EntryType::Block) {
                // A device node from an archive would open that device to whoever its mode
                // allows; `mknod` it by hand where it is wanted.
                self.refuse(&shown, "device nodes are not restored");
                continue;
            }
            if parts.iter().any(|part| part.len() > NAME_MAX) {
                self.refuse(&shown, NAME_TOO_LONG);
                continue;
            }
            if !matches!(
                kind,
                EntryType::Regular
                    | EntryType::Continuous
                    | EntryType::GNUSparse
                    | EntryType::Directory
                    | EntryType::Symlink
                    | EntryType::Link
                    | EntryType::Fifo
            ) {
                // By its type flag, as the header has it: the reader's names for the types it
                // does not know are its own.
                let flag = kind.as_byte();
                let type_flag = format!("unsupported entry type {:?} ({flag:#04x})", flag as char);
                self.refuse(&shown, &type_flag);
                continue;
            }
            if matches!(kind, EntryType::Regular | EntryType::Continuous)
                && is_pax_sparse(&mut entry)
            {
                self.refuse(&shown, PAX_SPARSE);
                continue;
            }
            let attributes = self.attributes_of(entry.header()).map_err(fatal(&shown))?;
            let xattrs = match kind {
                EntryType::Directory
                | EntryType::Regular
                | EntryType::Continuous
                | EntryType::GNUSparse => self.xattrs_of(&mut entry, &shown),
                _ => Vec::new(),
            };
            let parents = &parts[..parts.len() - 1];
            let (parent_path, parent) = match self.parent(parents) {
                Ok(found) => found,
                Err(Blocked::NotAFolder(reason) | Blocked::Missing(reason)) => {
                    self.refuse(&shown, &reason);
                    continue;
                }
                Err(Blocked::Io(e)) => return Err(fatal(&shown)(e)),
            };
            match kind {
                EntryType::Directory => {
                    self.folder(&parent, parent_path, &parts, attributes, xattrs, &shown)?
                }
                EntryType::Symlink => {
                    let Some(link) = entry.link_name_bytes() else {
                        self.refuse(&shown, "symlink without a target");
                        continue;
                    };
                    if link.contains(&0) {
                        self.refuse(&shown, "symlink target contains a NUL byte");
                        continue;
                    }
                    let link = OsStr::from_bytes(&link);
                    let placed =
                        self.place(&parent, parent_path, &parts, &shown, |dir, slot, _| {
                            slot.create(|name| Ok(rustix::fs::symlinkat(link, dir, name)?))?;
                            beneath::apply_to_symlink(dir, &slot.name, &attributes)
                        })?;
                    self.report.symlinks += u64::from(placed);
                }
                EntryType::Link => {
                    let link = entry.link_name().map_err(fatal(&shown))?;
                    let source = match self.link_source(link.as_deref()) {
                        Ok(source) => source,
                        Err(reason) => {
                            self.refuse(&shown, &reason);
                            continue;
                        }
                    };
                    let (source_dir, source_name) = source;
                    let placed = self.place(
                        &parent,
                        parent_path,
                        &parts,
                        &shown,
                        |dir, slot, replacing| {
                            if replacing {
                                beneath::sync_data_of(&source_dir, &source_name)?;
                            }
                            slot.create(|name| {
                                Ok(rustix::fs::linkat(
                                    &source_dir,
                                    &source_name,
                                    dir,
                                    name,
                                    AtFlags::empty(),
                                )?)
                            })
                        },
                    )?;
                    self.report.files += u64::from(placed);
                }
                EntryType::Fifo => {
                    let placed =
                        self.place(&parent, parent_path, &parts, &shown, |dir, slot, _| {
                            let mode = Mode::from_raw_mode(0o600);
                            slot.create(|name| {
                                Ok(rustix::fs::mknodat(dir, name, FileType::Fifo, mode, 0)?)
                            })?;
                            beneath::apply(beneath::open_fifo(dir, &slot.name)?, &attributes)
                        })?;
                    self.report.files += u64::from(placed);
                }
                _ => {
                    let size = entry.size();
                    let stopping = self.archive.stopping;
                    let mut buffer = std::mem::take(&mut self.copy_buffer);
                    let mut xattrs_not_set = Vec::new();
                    let placed = self.place(
                        &parent,
                        parent_path,
                        &parts,
                        &shown,
                        |dir, slot, replacing| {
                            let mut fill = |file: &mut fs::File| {
                                let data =
                                    &mut UntilStopped::new((&mut entry).take(size), stopping);
                                let copied = if kind == EntryType::GNUSparse {
                                    copy_keeping_holes(data, file, size)?
                                } else {
                                    copy_through(data, file, &mut buffer)?
                                };
                                if copied != size {
                                    return Err(io::Error::new(
                                        io::ErrorKind::UnexpectedEof,
                                        format!(
                                            "the archive ends after {copied} of its {size} bytes"
                                        ),
                                    ));
                                }
                                beneath::apply(&*file, &attributes)?;
                                xattrs_not_set = xattrs::set_all(&*file, &xattrs);
                                if replacing {
                                    file.sync_data()?;
                                }
                                Ok(())
                            };
                            if !slot.temporary {
                                return beneath::write_file(dir, &slot.name, fill);
                            }
                            // Named at once, so that a taken name is skipped before anything
                            // is read; the rename names it for good once it is whole.
                            let mut file = slot.create(|name| beneath::create_file(dir, name))?;
                            fill(&mut file)
                        },
                    )?;
                    self.copy_buffer = buffer;
                    self.xattrs_not_set(&shown, &xattrs_not_set);
                    if placed {
                        self.report.files += 1;
                        self.report.bytes += size;
                        if let Some(early) = &mut self.early_sync {
                            early.written(size);
                        }
                    }
                }
            }
        }
        // Read to its end as verify reads it ([`super::tar_end`]): a damaged end undoes what
        // was written, as any failure midway does.
        read_past_entries(tar)
            .map_err(io::Error::from)
            .map_err(fatal(stream))
    }

    /// The extended attributes to give the entry: when not restoring as root, only those its
    /// owner may set (as with owners). One the archive holds in a form not read is refused.
    fn xattrs_of<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, shown: &str) -> Vec<Xattr> {
        match xattrs::of_entry(entry) {
            Ok(mut all) => {
                if !self.owners {
                    all.retain(|xattr| xattrs::settable_by_owner(&xattr.name));
                }
                all
            }
            Err(e) => {
                self.refuse(shown, &format!("extended attributes not read: {e}"));
                Vec::new()
            }
        }
    }

    /// Reports the attributes that could not be set on an entry restored otherwise whole.
    fn xattrs_not_set(&mut self, shown: &str, not_set: &[String]) {
        if !not_set.is_empty() {
            self.refuse(
                shown,
                &format!("extended attributes not set: {}", not_set.join(", ")),
            );
        }
    }

    /// What a header says to give the entry (owners only when restoring as root).
    fn attributes_of(&self, header: &tar::Header) -> io::Result<Attributes> {
        Ok(Attributes {
            mode: header.mode()?,
            mtime: entry_mtime(header),
            owner: match (self.owners, header.uid(), header.gid()) {
                (true, Ok(uid), Ok(gid)) => Some((
                    u32::try_from(uid).unwrap_or(u32::MAX),
                    u32::try_from(gid).unwrap_or(u32::MAX),
                )),
                _ => None,
            },
        })
    }

    /// A file a selected hard link stands in for, with that link, if `parts` is one.
    fn take_stand_in(&mut self, parts: &[&OsStr]) -> Option<(NodeId, NodeId)> {
        if self.stand_ins.is_empty() {
            return None;
        }
        let file = self.paths.find(parts)?;
        Some((file, self.stand_ins.remove(&file)?))
    }

    /// The parent folder of an entry (its path and a handle), made if missing; from the
    /// cache when it is the last one used.
    fn parent(&mut self, parents: &[&OsStr]) -> Result<(NodeId, OwnedFd), Blocked> {
        let chain = self.paths.add_chain(parents);
        let path = chain.last().copied().unwrap_or(PathTree::ROOT);
        if let Some((cached, fd)) = &self.cache
            && *cached == path
        {
            return Ok((path, rustix::io::dup(fd)?));
        }
        let (journal, created_dirs) = (&mut self.journal, &mut self.created_dirs);
        let (above, folders) = (&self.above, &mut self.folders);
        // Counted as restored as a folder entry is: the restore made it.
        let dirs = &mut self.report.dirs;
        let mut record = |parts: &[&OsStr], stat: &Stat| {
            *dirs += 1;
            // `parts` is a prefix of `parents`, so never empty.
            let made = chain[parts.len() - 1];
            journal.push(Made {
                path: made,
                folder: true,
                identity: identity(stat),
            });
            created_dirs.insert(made, identity(stat));
            let archived = above.get(&made);
            folders.push(Folder {
                path: made,
                attributes: archived.copied().unwrap_or_else(unarchived_folder),
                xattrs: Vec::new(),
                identity: identity(stat),
                archived: archived.is_some(),
            });
        };
        let fd = beneath::walk(&self.root, parents, Some(&mut record))?;
        let stat = rustix::fs::fstat(&fd)?;
        // A folder this restore made holds only its own entries; one that was there may hold
        // what an interrupted restore left.
        let made = self.created_dirs.get(&path) == Some(&identity(&stat));
        if !made && self.swept.insert(identity(&stat)) {
            self.report.swept += self.sweeper.sweep(&fd);
        }
        #[allow(clippy::unnecessary_cast)] // `st_dev`'s width differs by target
        let device = stat.st_dev as u64;
        if let Entry::Vacant(new) = self.file_systems.entry(device) {
            new.insert(rustix::io::dup(&fd)?);
        }
        self.cache = Some((path, rustix::io::dup(&fd)?));
        Ok((path, fd))
    }

    /// Syncs every file system written to (`syncfs`): the files' data, their names, the
    /// folders and their
    /// attributes. One sync of the file system, not one per file: as fast as `tar -x`
    /// followed by `sync`.
    fn sync_to_disk(&self) -> io::Result<()> {
        if !self.sync {
            return Ok(());
        }
        for folder in self.file_systems.values() {
            rustix::fs::syncfs(folder)?;
        }
        Ok(())
    }

    /// A folder entry: made (or found, if this restore made it or it was there); its
    /// attributes wait for the end, so that its contents can still be written.
    fn folder(
        &mut self,
        parent: &OwnedFd,
        parent_path: NodeId,
        parts: &[&OsStr],
        attributes: Attributes,
        xattrs: Vec<Xattr>,
        shown: &str,
    ) -> Result<(), Fatal> {
        let name = parts[parts.len() - 1];
        let path = self.paths.add_child(parent_path, name);
        let fresh = match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => false,
            Err(e) => return Err(fatal(shown)(e.into())),
        };
        let fd = match beneath::open_dir(parent, name) {
            Ok(fd) => fd,
            Err(_) => {
                self.refuse(shown, "already exists and is not a folder");
                return Ok(());
            }
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| fatal(shown)(e.into()))?;
        // One made earlier in this restore is its own only while it is that very folder: one
        // swapped in under its name keeps its own owner and mode.
        let mine = fresh || self.created_dirs.get(&path) == Some(&identity(&stat));
        if mine && let Entry::Vacant(made) = self.created_dirs.entry(path) {
            made.insert(identity(&stat));
            self.journal.push(Made {
                path,
                folder: true,
                identity: identity(&stat),
            });
            self.report.dirs += 1;
        }
        // A folder that was there before keeps its own owner, mode and times: it is not one
        // this restore restored.
        if !mine {
            self.kept_folders
                .entry(path)
                .or_insert_with(|| KeptFolder::of(&stat));
        }
        if mine {
            self.folders.push(Folder {
                path,
                attributes,
                xattrs,
                identity: identity(&stat),
                archived: true,
            });
        }
        Ok(())
    }

    /// Makes a non-folder entry with `make(dir, slot, replacing)`: under its own name when
    /// free, else (with `overwrite`) under a temporary name renamed over the existing entry,
    /// once `make` has synced its data (`replacing`): the rename must not reach the disk
    /// before the data it names. A name taken without `overwrite`, or by a folder, refuses
    /// the entry (`false`).
    fn place(
        &mut self,
        parent: &OwnedFd,
        parent_path: NodeId,
        parts: &[&OsStr],
        shown: &str,
        make: impl FnOnce(&OwnedFd, &mut Slot, bool) -> io::Result<()>,
    ) -> Result<bool, Fatal> {
        let name = parts.last().expect("not empty");
        let mut slot = match beneath::stat_of(parent, name).map_err(fatal(shown))? {
            None => Slot::own(name),
            Some(stat) if beneath::kind_of(&stat) == FileType::Directory => {
                self.refuse(shown, "a folder of that name exists");
                return Ok(false);
            }
            Some(_) if !self.overwrite => {
                self.refuse(shown, "already exists (not overwritten)");
                return Ok(false);
            }
            Some(_) => Slot::temporary(),
        };
        let in_made_folder = self.created_dirs.contains_key(&parent_path);
        let replacing = slot.temporary && self.sync;
        let made = make(parent, &mut slot, replacing);
        // Whatever `make` left under its own name is this restore's, even on failure; in a
        // folder this restore made, removing the folder removes it, so there it is looked at
        // only under a temporary name, to tell whether the rename moved it. A temporary name
        // is this restore's only once it made it: one found taken is someone else's.
        let left = if (in_made_folder && !slot.temporary) || (slot.temporary && !slot.created) {
            None
        } else {
            beneath::stat_of(parent, &slot.name).ok().flatten()
        };
        let mut journalled = false;
        if !in_made_folder && let Some(stat) = &left {
            self.journal.push(Made {
                path: self.paths.add_child(parent_path, &slot.name),
                folder: false,
                identity: identity(stat),
            });
            journalled = true;
        }
        match made {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !slot.temporary => {
                if journalled {
                    self.journal.pop();
                }
                self.refuse(shown, "already exists (not overwritten)");
                return Ok(false);
            }
            // A symlink's target longer than any path: that entry alone cannot be made.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NAMETOOLONG.raw_os_error()) => {
                if journalled {
                    self.journal.pop();
                }
                self.refuse(shown, "a name in it is longer than a file system holds");
                return Ok(false);
            }
            Err(e) => return Err(fatal(shown)(e)),
        }
        if !in_made_folder
            && let Some(stat) = &left
            && beneath::kind_of(stat) == FileType::RegularFile
        {
            self.written.insert(identity(stat));
        }
        if slot.temporary {
            rustix::fs::renameat(parent, &slot.name, parent, *name)
                .map_err(|e| fatal(shown)(e.into()))?;
            // Onto another link to the same file rename(2) does nothing: the name already
            // holds the entry, and the temporary name must go.
            let unmoved = match (&left, beneath::stat_of(parent, &slot.name)) {
                (Some(made), Ok(Some(still))) => identity(made) == identity(&still),
                _ => false,
            };
            if unmoved {
                beneath::remove_file(parent, &slot.name).map_err(fatal(shown))?;
            } else {
                self.replaced
                    .add(|| format!("{shown} (replaced an existing entry)"));
            }
            // Replaced (undoing it could not bring the old entry back), or nothing to undo.
            if journalled {
                self.journal.pop();
            }
        }
        Ok(true)
    }

    /// The folder and name a hard link points at, if it is a regular file this restore
    /// wrote: a link to any other file in the target would show it in the archive's folders,
    /// with their modes (a private folder's file made readable to all).
    fn link_source(&self, link: Option<&Path>) -> Result<(OwnedFd, OsString), String> {
        let link = link.ok_or("hard link without a target")?;
        let target = safe_components(link).map_err(|r| format!("hard link target: {r}"))?;
        let stand_in = (self.paths.find(&target)).and_then(|file| self.stood_in.get(&file));
        let target = match stand_in {
            Some(stand_in) => self.paths.parts(*stand_in),
            None => target,
        };
        let Some((name, parents)) = target.split_last() else {
            return Err("hard link to the archive root".to_owned());
        };
        let not_restored = || format!("hard link target {} was not restored", link.display());
        let dir = match beneath::walk(&self.root, parents, None) {
            Ok(dir) => dir,
            Err(Blocked::Missing(_)) => return Err(not_restored()),
            Err(Blocked::NotAFolder(reason)) => return Err(format!("hard link target: {reason}")),
            Err(Blocked::Io(e)) => return Err(format!("hard link target: {e}")),
        };
        match beneath::stat_of(&dir, name) {
            Ok(Some(stat)) if beneath::kind_of(&stat) != FileType::RegularFile => {
                Err("hard link target is not a regular file".to_owned())
            }
            Ok(Some(stat)) if self.wrote(&dir, parents, &stat) => Ok((dir, (*name).to_owned())),
            _ => Err(not_restored()),
        }
    }

    /// Whether `file`, found in `dir` (at `parents`), is one this restore wrote: remembered
    /// as such, or in a folder it made (private until the end, so holding only its files).
    fn wrote(&self, dir: &OwnedFd, parents: &[&OsStr], file: &Stat) -> bool {
        self.written.contains(&identity(file))
            || (self.paths.find(parents))
                .and_then(|path| self.created_dirs.get(&path))
                .is_some_and(|made| {
                    rustix::fs::fstat(dir).is_ok_and(|found| identity(&found) == *made)
                })
    }

    /// Sets the folders' attributes, deepest last-seen first, on each folder re-opened
    /// without following symlinks; a folder moved or replaced meanwhile is reported.
    fn finish_folders(&mut self) {
        let folders = std::mem::take(&mut self.folders);
        // A folder made on the way whose entry came later has the entry's attributes.
        let archived: HashSet<NodeId> = (folders.iter())
            .filter(|folder| folder.archived)
            .map(|folder| folder.path)
            .collect();
        let to_finish: Vec<&Folder> = (folders.iter())
            .filter(|folder| folder.archived || !archived.contains(&folder.path))
            .collect();
        for folder in to_finish.into_iter().rev() {
            let shown = beneath::shown(&self.paths.parts(folder.path));
            let applied = self.reopen_folder(folder.path).and_then(|(fd, stat)| {
                if identity(&stat) != folder.identity {
                    return Err("replaced during the restore".to_owned());
                }
                beneath::apply(&fd, &folder.attributes).map_err(|e| e.to_string())?;
                Ok(xattrs::set_all(&fd, &folder.xattrs))
            });
            match applied {
                Ok(not_set) => self.xattrs_not_set(&shown, &not_set),
                Err(reason) => self.refuse(&shown, &format!("mode and times not set: {reason}")),
            }
        }
        for (path, kept) in std::mem::take(&mut self.kept_folders) {
            let put_back = self.reopen_folder(path).and_then(|(fd, stat)| {
                // Not that folder any more: not ours to touch.
                if identity(&stat) == kept.identity {
                    rustix::fs::futimens(&fd, &kept.times).map_err(|e| e.to_string())?;
                }
                Ok(())
            });
            // Logged, not refused: the entries in it are restored, only its times moved.
            if let Err(reason) = put_back {
                let shown = beneath::shown(&self.paths.parts(path));
                tracing::warn!("Restore: the times of {shown} not put back: {reason}");
            }
        }
    }

    /// Opens the folder at `path` again, one level at a time from the target, with its stat.
    fn reopen_folder(&self, path: NodeId) -> Result<(OwnedFd, Stat), String> {
        let parts = self.paths.parts(path);
        let (name, parents) = parts.split_last().expect("not empty");
        let fd = match beneath::walk(&self.root, parents, None) {
            Ok(dir) => beneath::open_dir(&dir, name).map_err(|e| e.to_string())?,
            Err(Blocked::NotAFolder(reason) | Blocked::Missing(reason)) => return Err(reason),
            Err(Blocked::Io(e)) => return Err(e.to_string()),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
        Ok((fd, stat))
    }

    /// Removes, newest first, everything this restore created, and says what is left.
    fn undo(&mut self) -> String {
        let mut left = FirstFew::default();
        for made in std::mem::take(&mut self.journal).into_iter().rev() {
            let parts = self.paths.parts(made.path);
            let (name, parents) = parts.split_last().expect("not empty");
            let removed = match beneath::walk(&self.root, parents, None) {
                Ok(dir) => match beneath::stat_of(&dir, name) {
                    Ok(None) => Ok(()),
                    Ok(Some(stat)) if identity(&stat) == made.identity => if made.folder {
                        beneath::remove_tree(&dir, name)
                    } else {
                        beneath::remove_file(&dir, name)
                    }
                    .map_err(|e| e.to_string()),
                    Ok(Some(_)) => Err("replaced by something else".to_owned()),
                    Err(e) => Err(e.to_string()),
                },
                Err(Blocked::Missing(_)) => Ok(()),
                Err(Blocked::NotAFolder(reason)) => Err(reason),
                Err(Blocked::Io(e)) => Err(e.to_string()),
            };
            if let Err(reason) = removed {
                left.add(|| format!("{} ({reason})", beneath::shown(&parts)));
            }
        }
        for folder in std::mem::take(&mut self.made_target) {
            if let Err(e) = folder.remove() {
                left.add(|| format!("{} ({e})", folder.shown.display()));
            }
        }
        left.extend(std::mem::take(&mut self.replaced));
        if left.total == 0 {
            return "everything this restore created was removed".to_owned();
        }
        let more = left.total - left.shown.len();
        let mut words = format!("left behind: {}", left.shown.join(", "));
        if more > 0 {
            words.push_str(&format!(" and {more} more"));
        }
        words
    }

    fn refuse(&mut self, entry: &str, reason: &str) {
        if self.report.refused.len() < REFUSED_LISTED {
            let (entry, reason) = (cut(entry), cut(reason));
            self.report.refused.push(format!("{entry}: {reason}"));
        } else {
            self.report.refused_not_listed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write as _;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::destination::LocalFolder;
    use crate::store::VerifyFinding;
    use crate::store::test_support::{
        OpenHooked, backup, build_tree, dir_names, manifest_of, verify_path,
        write_matching_manifest,
    };
    use proto::{Codec, Compression};

    /// Gives out its bytes in reads as large as asked, once interrupted; records the largest.
    struct Recorded<'d> {
        data: &'d [u8],
        interrupted: bool,
        largest: usize,
    }
    impl Read for Recorded<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if !self.interrupted {
                self.interrupted = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.largest = self.largest.max(buf.len());
            let n = buf.len().min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn file_data_is_copied_whole_in_large_pieces_through_one_reused_buffer() {
        let data: Vec<u8> = (0..300_001u32).map(|i| (i % 241) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = Vec::new();
        for round in 0..2 {
            let path = dir.path().join(format!("f{round}"));
            let mut file = fs::File::create(&path).unwrap();
            let mut source = Recorded {
                data: &data,
                interrupted: false,
                largest: 0,
            };
            let copied = copy_through(&mut source, &mut file, &mut buffer).unwrap();
            assert_eq!(copied, data.len() as u64);
            assert!(fs::read(&path).unwrap() == data, "the copy differs");
            // A 16th of io::copy's 8 KiB writes.
            assert_eq!(source.largest, COPY_BUFFER);
            assert_eq!(buffer.len(), COPY_BUFFER);
        }
    }

    /// Restores an archive given by path.
    fn restore(archive: &Path, to: &Path, paths: &[String]) -> Result<RestoreReport, StoreError> {
        let options = RestoreOptions {
            paths: paths.to_vec(),
            overwrite: false,
            ..RestoreOptions::default()
        };
        restore_with(archive, to, &options)
    }

    fn restore_with(
        archive: &Path,
        to: &Path,
        options: &RestoreOptions,
    ) -> Result<RestoreReport, StoreError> {
        let (folder, file) = LocalFolder::containing(archive).unwrap();
        super::restore(&folder, &file, to, options)
    }

    /// Kind, mode, mtime and content (or link target) of everything under `root`.
    fn snapshot(root: &Path) -> BTreeMap<String, (char, u32, i64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let mode = meta.mode() & 0o7777;
                let value = if meta.file_type().is_symlink() {
                    let target = fs::read_link(&path).unwrap();
                    (
                        'l',
                        0,
                        meta.mtime(),
                        target.into_os_string().into_encoded_bytes(),
                    )
                } else if meta.is_dir() {
                    stack.push(path.clone());
                    ('d', mode, meta.mtime(), Vec::new())
                } else {
                    ('f', mode, meta.mtime(), fs::read(&path).unwrap())
                };
                out.insert(rel, value);
            }
        }
        out
    }

    fn made(compression: Compression) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let src = build_tree(dir.path());
        let dest = dir.path().join("backups");
        fs::create_dir(&dest).unwrap();
        let outcome = backup(&src, &dest, "tree", compression, "20250102_030405");
        (dir, src, outcome.archive)
    }

    #[test]
    fn round_trips_an_engine_archive() {
        for compression in [
            Compression::default(),
            Compression::of(Codec::Zstd),
            Compression::of(Codec::None),
        ] {
            let (dir, src, archive) = made(compression);
            let out = dir.path().join("out/nested");
            let report = restore(&archive, &out, &[]).unwrap();
            assert_eq!(report.refused, Vec::<String>::new());
            assert_eq!(
                snapshot(&out.join("tree")),
                snapshot(&src),
                "{compression:?}"
            );
            assert_eq!(report.symlinks, 2);
            assert_eq!(report.dirs, 4, "tree, docs, docs/deep, empty");
            assert_eq!(report.files, 7, "6 files + 1 hard link");
            let hard1 = fs::metadata(out.join("tree/docs/hard1")).unwrap();
            let hard2 = fs::metadata(out.join("tree/docs/deep/hard2")).unwrap();
            assert_eq!(hard1.ino(), hard2.ino(), "hard link restored as a link");
        }
    }

    #[test]
    fn a_stop_ends_the_restore_at_the_next_entry_and_undoes_it() {
        let (dir, _, archive) = made(Compression::default());
        let (folder, file) = LocalFolder::containing(&archive).unwrap();
        let out = dir.path().join("out/nested");
        // The daemon stops once the first file is restored.
        let first = out.join("tree/docs/a.txt");
        let stopping = || first.exists();
        let options = RestoreOptions::default();
        let err = super::restore_with(&folder, &file, &out, &options, None, &stopping).unwrap_err();
        assert!(matches!(err, StoreError::Stopped { .. }), "{err}");
        assert!(
            err.to_string()
                .ends_with("stopped; everything this restore created was removed"),
            "{err}"
        );
        assert!(!dir.path().join("out").exists());

        // Stopping from the start: the archive's check ends, nothing is made.
        let err = super::restore_with(&folder, &file, &out, &options, None, &|| true).unwrap_err();
        assert!(
            err.to_string().ends_with("stopped; nothing was written"),
            "{err}"
        );
        assert!(!dir.path().join("out").exists());
    }

    #[test]
    fn an_archive_replaced_after_it_was_checked_is_not_restored() {
        let (dir, _src, archive) = made(Compression::default());
        // Another archive of the same name, of another tree.
        let other = tempfile::tempdir().unwrap();
        fs::write(build_tree(other.path()).join("planted"), b"not checked").unwrap();
        let other_dest = other.path().join("backups");
        fs::create_dir(&other_dest).unwrap();
        let planted = backup(
            &other.path().join("tree"),
            &other_dest,
            "tree",
            Compression::default(),
            "20250102_030405",
        );
        let (folder, file) = LocalFolder::containing(&archive).unwrap();
        let swap_in = archive.with_file_name("swap-in");
        fs::copy(&planted.archive, &swap_in).unwrap();
        let first = std::sync::atomic::AtomicBool::new(true);
        let swapped = OpenHooked {
            folder: folder.clone(),
            // Right after the first open: once the first pass checked it against its manifest.
            hook: |name: &str, opened| {
                if name == file && first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    fs::rename(&swap_in, folder.path_of(name))?;
                }
                Ok(opened)
            },
        };
        let out = dir.path().join("out");
        let err = super::restore(&swapped, &file, &out, &RestoreOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("was replaced or changed since it was first read"),
            "{err}"
        );
        assert!(!out.exists(), "nothing restored");
    }

    #[test]
    fn folders_that_were_there_are_not_counted_as_restored() {
        let (dir, _src, archive) = made(Compression::default());
        let out = dir.path().join("out");
        let first = restore(&archive, &out, &[]).unwrap();
        assert_eq!((first.files, first.dirs), (7, 4));
        // Again, replacing every file: each is restored anew, no folder is.
        let overwrite = RestoreOptions {
            paths: Vec::new(),
            overwrite: true,
            ..RestoreOptions::default()
        };
        let again = restore_with(&archive, &out, &overwrite).unwrap();
        assert_eq!(again.refused, Vec::<String>::new());
        assert_eq!((again.files, again.symlinks, again.dirs), (7, 2, 0));
        assert_eq!(again.replaced, 9, "its files and symlinks");
        // Only the folder that went missing is restored.
        fs::remove_dir(out.join("tree/empty")).unwrap();
        let again = restore_with(&archive, &out, &overwrite).unwrap();
        assert_eq!(again.dirs, 1);
        assert!(out.join("tree/empty").is_dir());
    }

    #[test]
    fn a_non_folder_or_symlink_target_is_refused() {
        let (dir, _src, archive) = made(Compression::default());
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        let err = restore(&archive, &file, &[]).unwrap_err();
        assert!(
            matches!(err, StoreError::TargetNotDirectory { .. }),
            "{err}"
        );
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = restore(&archive, &link, &[]).unwrap_err();
        assert!(matches!(err, StoreError::TargetIsSymlink { .. }), "{err}");
        assert_eq!(dir_names(&real), Vec::<String>::new());
    }

    #[test]
    fn a_non_empty_target_keeps_its_files_and_a_taken_name_fails_before_writing() {
        let (dir, src, archive) = made(Compression::default());
        let busy = dir.path().join("busy");
        fs::create_dir(&busy).unwrap();
        fs::write(busy.join("keep.txt"), "mine").unwrap();
        let report = restore(&archive, &busy, &[]).unwrap();
        assert_eq!(report.refused, Vec::<String>::new());
        assert_eq!(fs::read_to_string(busy.join("keep.txt")).unwrap(), "mine");
        assert_eq!(snapshot(&busy.join("tree")), snapshot(&src));

        // Again: every file's name is taken now, and nothing changes.
        fs::write(busy.join("tree/top.txt"), "changed").unwrap();
        fs::remove_file(busy.join("tree/docs/a.txt")).unwrap();
        let err = restore(&archive, &busy, &[]).unwrap_err();
        let StoreError::WouldOverwrite { entries, total, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(entries.len(), CONFLICTS_SHOWN, "{err}");
        assert!(*total > CONFLICTS_SHOWN, "{err}");
        assert!(err.to_string().contains("--overwrite"), "{err}");
        assert_eq!(
            fs::read_to_string(busy.join("tree/top.txt")).unwrap(),
            "changed"
        );
        assert!(!busy.join("tree/docs/a.txt").exists(), "nothing written");

        // One file, into a folder that has it: refused; with overwrite, replaced.
        let one = || vec!["top.txt".to_owned()];
        let err = restore(&archive, &busy, &one()).unwrap_err();
        assert!(
            matches!(err, StoreError::WouldOverwrite { total: 1, .. }),
            "{err}"
        );
        let options = RestoreOptions {
            paths: one(),
            overwrite: true,
            ..RestoreOptions::default()
        };
        let report = restore_with(&archive, &busy, &options).unwrap();
        assert_eq!((report.files, report.replaced), (1, 1), "{report:?}");
        assert_eq!(
            fs::read(busy.join("tree/top.txt")).unwrap(),
            fs::read(src.join("top.txt")).unwrap()
        );
        assert_eq!(fs::read_to_string(busy.join("keep.txt")).unwrap(), "mine");
        let leftovers: Vec<String> = dir_names(&busy.join("tree"))
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect();
        assert_eq!(leftovers, Vec::<String>::new(), "no temporary file left");
    }

    #[test]
    fn overwrite_replaces_a_symlink_itself_never_what_it_points_to() {
        let (dir, src, archive) = made(Compression::default());
        let outside = dir.path().join("outside.txt");
        fs::write(&outside, "untouched").unwrap();
        let target = dir.path().join("t");
        fs::create_dir_all(target.join("tree")).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("tree/top.txt")).unwrap();
        let options = RestoreOptions {
            paths: vec!["top.txt".to_owned()],
            overwrite: true,
            ..RestoreOptions::default()
        };
        restore_with(&archive, &target, &options).unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "untouched");
        let meta = fs::symlink_metadata(target.join("tree/top.txt")).unwrap();
        assert!(meta.is_file());
        assert_eq!(
            fs::read(target.join("tree/top.txt")).unwrap(),
            fs::read(src.join("top.txt")).unwrap()
        );
    }

    /// A POSIX ACL as the kernel takes it: version 2, then (tag, permissions, id) entries.
    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut bytes = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            bytes.extend_from_slice(&tag.to_le_bytes());
            bytes.extend_from_slice(&perm.to_le_bytes());
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        bytes
    }

    fn set_xattr(path: &Path, name: &str, value: &[u8]) {
        let flags = rustix::fs::XattrFlags::empty();
        rustix::fs::setxattr(path, name, value, flags)
            .unwrap_or_else(|e| panic!("{name} on {}: {e}", path.display()));
    }

    fn xattrs_at(path: &Path) -> Vec<Xattr> {
        let file = fs::File::open(path).unwrap();
        let mut all = xattrs::XattrReader::default().read(&file).unwrap();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    #[test]
    fn acls_and_extended_attributes_come_back() {
        const ANY: u32 = u32::MAX;
        let base = tempfile::tempdir().unwrap();
        let src = base.path().join("tree");
        fs::create_dir_all(src.join("shared")).unwrap();
        // 0640 with user 1034 (0x40a: a newline byte in the value) allowed to write: the
        // group bits show the mask, rw, where the owning group may only read.
        let with_acl = src.join("report.txt");
        fs::write(&with_acl, "figures").unwrap();
        fs::set_permissions(&with_acl, fs::Permissions::from_mode(0o640)).unwrap();
        let access = acl(&[
            (0x01, 6, ANY),
            (0x02, 6, 1034),
            (0x04, 4, ANY),
            (0x10, 6, ANY),
            (0x20, 0, ANY),
        ]);
        set_xattr(&with_acl, "system.posix_acl_access", &access);
        set_xattr(&with_acl, "user.note", b"two\nlines");
        set_xattr(&with_acl, "user.plain", b"kept");
        let default = acl(&[(0x01, 7, ANY), (0x04, 5, ANY), (0x20, 0, ANY)]);
        set_xattr(&src.join("shared"), "system.posix_acl_default", &default);
        fs::write(src.join("shared/plain.txt"), "no acl").unwrap();
        let dest = base.path().join("backups");
        fs::create_dir(&dest).unwrap();
        let outcome = backup(
            &src,
            &dest,
            "tree",
            Compression::default(),
            "20250102_030405",
        );
        assert_eq!(outcome.manifest.warnings, Vec::<String>::new());

        let out = base.path().join("out");
        let report = restore(&outcome.archive, &out, &[]).unwrap();
        assert_eq!(report.refused, Vec::<String>::new());
        for path in ["report.txt", "shared", "shared/plain.txt"] {
            assert_eq!(
                xattrs_at(&out.join("tree").join(path)),
                xattrs_at(&src.join(path)),
                "{path}"
            );
        }
        let mode = fs::metadata(out.join("tree/report.txt")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o660, "the mask, as the source shows it");
        // Made before its folder's default ACL was set: it has no ACL of its own.
        assert!(xattrs_at(&out.join("tree/shared/plain.txt")).is_empty());
        // GNU tar reads the archive, the attributes' headers included.
        let listed = std::process::Command::new("tar")
            .arg("-tzf")
            .arg(&outcome.archive)
            .output()
            .unwrap();
        assert!(listed.status.success(), "{listed:?}");
        assert!(String::from_utf8_lossy(&listed.stdout).contains("tree/report.txt"));
    }

    #[test]
    fn folders_that_were_there_keep_their_own_times() {
        let (dir, _src, archive) = made(Compression::default());
        let target = dir.path().join("t");
        restore(&archive, &target, &[]).unwrap();
        let tree = target.join("tree");
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_533_686_400);
        let set_long_ago = |path: &Path| {
            let times = fs::FileTimes::new()
                .set_accessed(long_ago)
                .set_modified(long_ago);
            fs::File::open(path).unwrap().set_times(times).unwrap();
        };
        // A file to write again, so the restore writes into the folder that is there.
        fs::remove_file(tree.join("top.txt")).unwrap();
        set_long_ago(&tree);
        let options = RestoreOptions {
            overwrite: true,
            ..RestoreOptions::default()
        };
        let report = restore_with(&archive, &target, &options).unwrap();
        assert_eq!(report.refused, Vec::<String>::new());
        assert!(tree.join("top.txt").is_file(), "written into the folder");
        let meta = fs::metadata(&tree).unwrap();
        assert_eq!(
            meta.modified().unwrap(),
            long_ago,
            "its own time, as README says"
        );
        assert_eq!(meta.accessed().unwrap(), long_ago);
    }

    #[test]
    fn overwrite_works_for_a_name_of_the_longest_length() {
        let base = tempfile::tempdir().unwrap();
        let name = "n".repeat(255);
        let archive = base.path().join("long_20250102_030405.tar");
        let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(3);
        builder
            .append_data(&mut header, format!("top/{name}"), &b"new"[..])
            .unwrap();
        builder.into_inner().unwrap();
        write_matching_manifest(&archive);
        let target = base.path().join("t");
        fs::create_dir_all(target.join("top")).unwrap();
        fs::write(target.join("top").join(&name), "old").unwrap();
        let options = RestoreOptions {
            paths: Vec::new(),
            overwrite: true,
            ..RestoreOptions::default()
        };
        let report = restore_with(&archive, &target, &options).unwrap();
        assert_eq!(report.replaced, 1);
        assert_eq!(
            fs::read_to_string(target.join("top").join(&name)).unwrap(),
            "new"
        );
    }

    #[test]
    fn a_truncated_entry_fails_the_restore_and_removes_everything_it_created() {
        let base = tempfile::tempdir().unwrap();
        let archive = cut_archive(base.path(), "cut", "top/sub/");

        let fresh = base.path().join("fresh/target");
        let err = restore(&archive, &fresh, &[]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Extract { .. }), "{text}");
        assert!(text.contains("top/sub/huge.bin"), "{text}");
        assert!(text.contains("1024 of its 53687091200 bytes"), "{text}");
        assert!(
            text.contains("everything this restore created was removed"),
            "{text}"
        );
        assert!(
            !base.path().join("fresh").exists(),
            "the made target is removed too"
        );

        // Into an existing folder: the first pass (looking for taken names) finds the cut.
        let existing = base.path().join("existing");
        fs::create_dir(&existing).unwrap();
        fs::write(existing.join("mine"), "mine").unwrap();
        let err = restore(&archive, &existing, &[]).unwrap_err();
        assert!(err.to_string().contains("nothing was written"), "{err}");
        assert_eq!(dir_names(&existing), ["mine"]);
        // With overwrite there is no first pass: its own files stay, the restore's go.
        let options = RestoreOptions {
            paths: Vec::new(),
            overwrite: true,
            ..RestoreOptions::default()
        };
        let err = restore_with(&archive, &existing, &options).unwrap_err();
        assert!(err.to_string().contains("was removed"), "{err}");
        assert_eq!(dir_names(&existing), ["mine"]);

        // Files straight in the existing folder (not in one the restore made) go too.
        let flat = cut_archive(base.path(), "flat", "");
        let err = restore_with(&flat, &existing, &options).unwrap_err();
        assert!(err.to_string().contains("was removed"), "{err}");
        assert_eq!(dir_names(&existing), ["mine"]);
    }

    #[test]
    fn garbage_after_the_compressed_stream_fails_the_restore_as_verify_fails() {
        for compression in [Compression::default(), Compression::of(Codec::Zstd)] {
            let (dir, _src, archive) = made(compression);
            let mut bytes = fs::read(&archive).unwrap();
            bytes.extend_from_slice(b"no gzip member, no zstd frame");
            fs::write(&archive, &bytes).unwrap();
            write_matching_manifest(&archive);
            let verified = verify_path(&archive).unwrap();
            assert!(
                matches!(verified.finding, VerifyFinding::Unreadable(_)),
                "{verified:?}"
            );

            let fresh = dir.path().join("fresh/target");
            let err = restore(&archive, &fresh, &[]).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, StoreError::Extract { .. }), "{text}");
            assert!(text.contains(archive.to_str().unwrap()), "{text}");
            assert!(text.contains("does not decode to its end"), "{text}");
            assert!(
                text.contains("everything this restore created was removed"),
                "{text}"
            );
            assert!(!dir.path().join("fresh").exists(), "{compression:?}");

            // Into an existing folder the first pass reads to the end too.
            let existing = dir.path().join("existing");
            fs::create_dir(&existing).unwrap();
            fs::write(existing.join("mine"), "mine").unwrap();
            let err = restore(&archive, &existing, &[]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("does not decode to its end"), "{text}");
            assert!(text.contains("nothing was written"), "{text}");
            assert_eq!(dir_names(&existing), ["mine"]);
            // With overwrite there is no first pass: the extraction's end undoes it.
            let options = RestoreOptions {
                paths: Vec::new(),
                overwrite: true,
                ..RestoreOptions::default()
            };
            let err = restore_with(&archive, &existing, &options).unwrap_err();
            assert!(err.to_string().contains("was removed"), "{err}");
            assert_eq!(dir_names(&existing), ["mine"]);
        }
    }

    #[test]
    fn a_plain_tar_without_its_end_marker_is_not_restored() {
        let (dir, _src, archive) = made(Compression::of(Codec::None));
        let bytes = fs::read(&archive).unwrap();
        let data_end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
        fs::write(&archive, &bytes[..data_end.next_multiple_of(512)]).unwrap();
        write_matching_manifest(&archive);
        let out = dir.path().join("out");
        let err = restore(&archive, &out, &[]).unwrap_err();
        assert!(err.to_string().contains("end-of-archive marker"), "{err}");
        assert!(!out.exists());
    }

    /// A tar whose last entry (`<prefix>huge.bin`) claims 50 GB but has 1 KiB of data, after
    /// a folder `top/` and `<prefix>ok.txt`; the manifest matches these bytes, as a damaged
    /// set's could.
    fn cut_archive(dir: &Path, name: &str, prefix: &str) -> PathBuf {
        let archive = dir.join(format!("{name}_20250102_030405.tar"));
        let mut builder = tar::Builder::new(Vec::new());
        let mut folder = tar::Header::new_gnu();
        folder.set_entry_type(EntryType::Directory);
        folder.set_mode(0o555);
        folder.set_size(0);
        folder.set_cksum();
        builder
            .append_data(&mut folder, "top/", io::empty())
            .unwrap();
        let mut ok = tar::Header::new_gnu();
        ok.set_mode(0o644);
        ok.set_size(4);
        ok.set_cksum();
        builder
            .append_data(&mut ok, format!("{prefix}ok.txt"), &b"fine"[..])
            .unwrap();
        let mut bytes = builder.into_inner().unwrap();
        bytes.truncate(bytes.len() - 1024); // the end-of-archive marker
        let mut huge = tar::Header::new_gnu();
        huge.set_path(format!("{prefix}huge.bin")).unwrap();
        huge.set_mode(0o644);
        huge.set_size(50 << 30);
        huge.set_cksum();
        bytes.extend_from_slice(huge.as_bytes());
        bytes.extend_from_slice(&[7u8; 1024]);
        fs::write(&archive, &bytes).unwrap();
        write_matching_manifest(&archive);
        archive
    }

    /// As root (CI), the adversary's symlinks are not stopped by permissions, so only the
    /// handle-based extraction keeps writes inside the target.
    #[test]
    fn swapping_folders_for_symlinks_during_a_restore_writes_nothing_outside() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        const FOLDERS: usize = 8;
        const FILES: usize = 300;
        let base = tempfile::tempdir().unwrap();
        let src = base.path().join("big");
        for d in 0..FOLDERS {
            let folder = src.join(format!("d{d}"));
            fs::create_dir_all(&folder).unwrap();
            for f in 0..FILES {
                fs::write(folder.join(format!("f{f:04}")), b"x").unwrap();
            }
        }
        let dest = base.path().join("b");
        fs::create_dir(&dest).unwrap();
        let archive = backup(
            &src,
            &dest,
            "big",
            Compression::of(Codec::None),
            "20250102_030405",
        )
        .archive;
        let outside = base.path().join("outside");
        fs::create_dir(&outside).unwrap();

        // Rounds until a time budget is spent: a racing restore may stop early.
        let started = std::time::Instant::now();
        let mut round = 0;
        while round < 1 || (started.elapsed().as_secs() < 12 && round < 40) {
            round += 1;
            let target = base.path().join(format!("target{round}"));
            fs::create_dir(&target).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let adversary = {
                let (stop, big, outside) = (Arc::clone(&stop), target.join("big"), outside.clone());
                std::thread::spawn(move || {
                    // Once the restore made `big`, each folder gets a twin symlink to the
                    // outside, to be exchanged with it.
                    while !big.exists() && !stop.load(Ordering::Relaxed) {
                        std::thread::yield_now();
                    }
                    let Ok(dir) = fs::File::open(&big) else {
                        return;
                    };
                    for d in 0..FOLDERS {
                        let _ = std::os::unix::fs::symlink(&outside, big.join(format!("l{d}")));
                    }
                    let exchange = rustix::fs::RenameFlags::EXCHANGE;
                    while !stop.load(Ordering::Relaxed) {
                        // Atomically swap `dN` with its symlink twin and back: `dN` is
                        // mostly a folder (so checks pass), briefly a symlink.
                        for d in 0..FOLDERS {
                            let (real, link) = (format!("d{d}"), format!("l{d}"));
                            let _ = rustix::fs::renameat_with(&dir, &real, &dir, &link, exchange);
                            let _ = rustix::fs::renameat_with(&dir, &real, &dir, &link, exchange);
                            std::thread::yield_now();
                        }
                    }
                })
            };
            let result = restore(&archive, &target, &[]);
            stop.store(true, Ordering::Relaxed);
            adversary.join().unwrap();
            assert_eq!(
                dir_names(&outside),
                Vec::<String>::new(),
                "round {round}: {result:?}"
            );
        }
    }

    #[test]
    fn a_damaged_or_unvouched_archive_is_not_restored() {
        let (dir, _src, archive) = made(Compression::default());
        let mut bytes = fs::read(&archive).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(&archive, &bytes).unwrap();
        let out = dir.path().join("out");
        let err = restore(&archive, &out, &[]).unwrap_err();
        assert!(matches!(err, StoreError::ChecksumMismatch { .. }), "{err}");
        assert!(!out.exists(), "nothing created");

        fs::remove_file(manifest_of(&archive)).unwrap();
        let err = restore(&archive, &out, &[]).unwrap_err();
        assert!(matches!(err, StoreError::ManifestMissing { .. }), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn subpaths_select_entries_with_or_without_the_top_folder() {
        let (dir, src, archive) = made(Compression::default());
        for filter in ["docs", "tree/docs", "docs/"] {
            let out = dir.path().join(format!("out_{}", filter.replace('/', "_")));
            let report = restore(&archive, &out, &[filter.to_owned()]).unwrap();
            let got = snapshot(&out);
            // The folder above the selection, made on the way, has the archived attributes.
            let (kind, mode, mtime, _) = &got["tree"];
            let src_meta = fs::metadata(&src).unwrap();
            assert_eq!(
                (*kind, *mode, *mtime),
                ('d', src_meta.mode() & 0o7777, src_meta.mtime())
            );
            assert!(got.contains_key("tree/docs/a.txt"), "{filter}");
            assert!(got.contains_key("tree/docs/deep/data.bin"));
            assert!(got.contains_key("tree/docs/deep/hard2"));
            assert!(!got.contains_key("tree/top.txt"));
            assert!(!got.contains_key("tree/empty"));
            assert_eq!(report.refused, Vec::<String>::new());
        }
        let out = dir.path().join("out_two");
        restore(&archive, &out, &["top.txt".into(), "docs/deep".into()]).unwrap();
        let got = snapshot(&out);
        assert!(got.contains_key("tree/top.txt"));
        assert!(got.contains_key("tree/docs/deep/data.bin"));
        assert!(!got.contains_key("tree/docs/a.txt"));
        assert!(got.contains_key("tree/docs/deep/hard2"));

        // The engine walks in name order, so `docs/deep/hard2` holds the data and
        // `docs/hard1` is a link to it: selected alone, it gets that data.
        let out = dir.path().join("out_link");
        let report = restore(&archive, &out, &["docs/hard1".into()]).unwrap();
        assert_eq!(report.refused, Vec::<String>::new());
        assert_eq!(report.files, 1);
        assert_eq!(
            fs::read(out.join("tree/docs/hard1")).unwrap(),
            fs::read(src.join("docs/hard1")).unwrap()
        );
        assert!(!out.join("tree/docs/deep").exists());
    }

    #[test]
    fn hard_links_selected_without_the_file_holding_their_data_share_it() {
        let base = tempfile::tempdir().unwrap();
        let archive = hostile_archive(
            base.path(),
            &[
                Hostile::File(b"top/a/x", b"data"),
                Hostile::HardLink(b"top/b/r1", b"top/a/x"),
                Hostile::HardLink(b"top/b/r2", b"top/a/x"),
                Hostile::HardLink(b"top/c/r3", b"top/a/x"),
            ],
        );
        let target = base.path().join("target");
        let report = restore(&archive, &target, &["b".into()]).unwrap();
        assert_eq!(report.refused, Vec::<String>::new());
        assert_eq!(report.files, 2);
        let r1 = fs::metadata(target.join("top/b/r1")).unwrap();
        let r2 = fs::metadata(target.join("top/b/r2")).unwrap();
        assert_eq!((r1.ino(), r1.nlink()), (r2.ino(), 2), "one file, two names");
        assert_eq!(fs::read(target.join("top/b/r2")).unwrap(), b"data");
        assert!(!target.join("top/a").exists());
        assert!(!target.join("top/c").exists());
    }

    #[test]
    fn an_unknown_subpath_fails_before_writing() {
        let (dir, _src, archive) = made(Compression::default());
        let out = dir.path().join("out");
        let err = restore(&archive, &out, &["docs".into(), "nope/x".into()]).unwrap_err();
        match &err {
            StoreError::PathNotInArchive { path, .. } => assert_eq!(path, "nope/x"),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("nope/x"));
        assert!(!out.exists());
    }

    // --- hostile archives -------------------------------------------------------------

    enum Hostile<'a> {
        File(&'a [u8], &'a [u8]),
        Dir(&'a [u8]),
        Symlink(&'a [u8], &'a [u8]),
        HardLink(&'a [u8], &'a [u8]),
        Fifo(&'a [u8]),
        /// A character device: /dev/null's numbers (1, 3).
        Device(&'a [u8]),
    }

    /// Writes a plain tar with raw (unchecked) names, plus a manifest that matches it.
    fn hostile_archive(dir: &Path, entries: &[Hostile]) -> PathBuf {
        let archive = dir.join("evil_20250102_030405.tar");
        let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(1_700_000_000);
            let (name, kind, data, link): (&[u8], _, &[u8], &[u8]) = match entry {
                Hostile::File(name, data) => (name, EntryType::Regular, data, b""),
                Hostile::Dir(name) => (name, EntryType::Directory, b"", b""),
                Hostile::Symlink(name, to) => (name, EntryType::Symlink, b"", to),
                Hostile::HardLink(name, to) => (name, EntryType::Link, b"", to),
                Hostile::Fifo(name) => (name, EntryType::Fifo, b"", b""),
                Hostile::Device(name) => {
                    header.set_device_major(1).unwrap();
                    header.set_device_minor(3).unwrap();
                    (name, EntryType::Char, b"", b"")
                }
            };
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            let old = header.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.into_inner().unwrap();
        write_matching_manifest(&archive);
        archive
    }

    #[test]
    fn a_sparse_file_in_the_pax_format_is_refused_not_written_under_its_made_up_name() {
        // As `tar --sparse --format=pax` and bsdtar write a 10 MiB file holding 5 bytes: a
        // pax header naming it, then the map (1 region) and the region's data.
        let base = tempfile::tempdir().unwrap();
        let archive = base.path().join("sp_20250102_030405.tar");
        let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
        let records: [(&str, &[u8]); 4] = [
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"sp/disk.img"),
            ("GNU.sparse.realsize", b"10485760"),
        ];
        builder.append_pax_extensions(records).unwrap();
        let mut data = b"1\n5242880\n5\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"hello");
        let mut header = tar::Header::new_ustar();
        header.set_path("sp/GNUSparseFile.0/disk.img").unwrap();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data.as_slice()).unwrap();
        let mut plain = tar::Header::new_ustar();
        plain.set_path("sp/plain.txt").unwrap();
        plain.set_mode(0o644);
        plain.set_size(2);
        plain.set_cksum();
        builder.append(&plain, &b"ok"[..]).unwrap();
        builder.into_inner().unwrap();
        write_matching_manifest(&archive);

        let out = base.path().join("out");
        let report = restore(&archive, &out, &[]).unwrap();
        assert_eq!(
            report.refused,
            [format!("sp/GNUSparseFile.0/disk.img: {PAX_SPARSE}")]
        );
        assert_eq!(report.files, 1);
        assert_eq!(fs::read(out.join("sp/plain.txt")).unwrap(), b"ok");
        assert!(!out.join("sp/GNUSparseFile.0").exists());
    }

    #[test]
    fn a_restore_of_a_part_says_nothing_of_unsafe_entries_it_did_not_select() {
        let base = tempfile::tempdir().unwrap();
        let archive = hostile_archive(
            base.path(),
            &[
                Hostile::Dir(b"top/"),
                Hostile::File(b"top/good", b"fine"),
                Hostile::File(b"../evil", b"x"),
                Hostile::File(b"top/../../evil2", b"x"),
                Hostile::File(b"/top/abs", b"x"),
            ],
        );
        let out = base.path().join("out");
        let report = restore(&archive, &out, &["good".into()]).unwrap();
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        assert_eq!(fs::read(out.join("top/good")).unwrap(), b"fine");
        // Named under the selection, it is said.
        let under = restore(&archive, &base.path().join("under"), &["top".into()]).unwrap();
        assert_eq!(under.refused.len(), 2, "{:?}", under.refused);
        assert_eq!(under.refused[0], "top/../../evil2: path contains '..'");
        assert!(
            under.refused[1].starts_with("/top/abs: "),
            "{:?}",
            under.refused
        );
        // Restored whole, they are refused and said.
        let all = restore(&archive, &base.path().join("all"), &[]).unwrap();
        assert_eq!(all.refused.len(), 3, "{:?}", all.refused);
    }

    #[test]
    fn folders_made_for_want_of_an_entry_count_once_as_made() {
        let base = tempfile::tempdir().unwrap();
        let archive = hostile_archive(
            base.path(),
            &[
                Hostile::File(b"top/sub/f", b"x"),
                // Its entry after its file, as appending tools write it.
                Hostile::Dir(b"top/sub/"),
                Hostile::Dir(b"top/other/"),
            ],
        );
        let report = restore(&archive, &base.path().join("out"), &[]).unwrap();
        assert_eq!(
            (report.files, report.dirs),
            (1, 3),
            "top, top/sub, top/other"
        );
    }

    #[test]
    fn an_unknown_entry_type_is_refused_by_its_type_flag() {
        let base = tempfile::tempdir().unwrap();
        let archive = base.path().join("odd_20250102_030405.tar");
        let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
        for (name, flag) in [("odd/z", b'Z'), ("odd/volume", b'V')] {
            let mut header = tar::Header::new_gnu();
            header.set_path(name).unwrap();
            header.set_entry_type(EntryType::new(flag));
            header.set_mode(0o644);
            header.set_size(0);
            header.set_cksum();
            builder.append(&header, io::empty()).unwrap();
        }
        builder.into_inner().unwrap();
        write_matching_manifest(&archive);
        let report = restore(&archive, &base.path().join("out"), &[]).unwrap();
        assert_eq!(
            report.refused,
            [
                "odd/z: unsupported entry type 'Z' (0x5a)",
                "odd/volume: unsupported entry type 'V' (0x56)"
            ]
        );
    }

    #[test]
    fn a_subpath_that_names_a_folder_both_ways_means_the_relative_one() {
        let base = tempfile::tempdir().unwrap();
        // A backup of `docs/` that holds a `docs/` of its own.
        let archive = hostile_archive(
            base.path(),
            &[
                Hostile::Dir(b"docs/"),
                Hostile::Dir(b"docs/docs/"),
                Hostile::File(b"docs/docs/inner.txt", b"inner"),
                Hostile::Dir(b"docs/private/"),
                Hostile::File(b"docs/private/p.txt", b"private"),
            ],
        );
        let names = |dir: &Path| snapshot(dir).into_keys().collect::<Vec<_>>();
        let target = base.path().join("fresh");
        restore(&archive, &target, &["docs".into()]).unwrap();
        assert_eq!(names(&target), ["docs", "docs/docs", "docs/docs/inner.txt"]);

        // Into a folder already holding what only the other meaning would restore: no
        // conflict, as that is not restored.
        let target = base.path().join("taken");
        fs::create_dir_all(target.join("docs/private")).unwrap();
        fs::write(target.join("docs/private/p.txt"), b"mine").unwrap();
        restore(&archive, &target, &["docs".into()]).unwrap();
        assert_eq!(
            fs::read(target.join("docs/private/p.txt")).unwrap(),
            b"mine"
        );
        assert_eq!(
            fs::read(target.join("docs/docs/inner.txt")).unwrap(),
            b"inner"
        );

        // Where only the meaning from the root names anything, it is the one.
        let target = base.path().join("from_root");
        restore(&archive, &target, &["docs/private".into()]).unwrap();
        assert_eq!(
            names(&target),
            ["docs", "docs/private", "docs/private/p.txt"]
        );
    }

    #[test]
    fn a_name_no_file_system_holds_is_refused_alone() {
        let base = tempfile::tempdir().unwrap();
        let archive = base.path().join("long_20250102_030405.tar");
        let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
        let header = |kind: EntryType, size: u64| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(size);
            header.set_mode(0o644);
            header
        };
        let long_name = format!("top/{}", "n".repeat(300));
        let long_target = "t/".repeat(2500);
        builder
            .append_data(&mut header(EntryType::Regular, 2), "top/ok.txt", &b"ok"[..])
            .unwrap();
        builder
            .append_data(&mut header(EntryType::Regular, 4), &long_name, &b"long"[..])
            .unwrap();
        builder
            .append_link(&mut header(EntryType::Symlink, 0), "top/far", &long_target)
            .unwrap();
        builder.into_inner().unwrap();
        write_matching_manifest(&archive);

        let target = base.path().join("target");
        let report = restore(&archive, &target, &[]).unwrap();
        assert_eq!(fs::read(target.join("top/ok.txt")).unwrap(), b"ok");
        assert_eq!(
            report.refused,
            [
                format!("{long_name}: {NAME_TOO_LONG}"),
                "top/far: a name in it is longer than a file system holds".to_owned()
            ]
        );
    }

    #[test]
    fn folders_the_archive_has_no_entry_for_are_not_left_private() {
        let base = tempfile::tempdir().unwrap();
        let archive = hostile_archive(
            base.path(),
            &[
                Hostile::File(b"top/sub/file.txt", b"data"),
                Hostile::File(b"top/later/file.txt", b"data"),
                Hostile::Dir(b"top/later/"),
            ],
        );
        let target = base.path().join("target");
        restore(&archive, &target, &[]).unwrap();
        let mode = |path: &str| fs::metadata(target.join(path)).unwrap().mode() & 0o7777;
        assert_eq!(mode("top"), 0o755, "as GNU tar makes it");
        assert_eq!(mode("top/sub"), 0o755);
        // Its entry came after its file: the archived mode (0644 from the test archive).
        assert_eq!(mode("top/later"), 0o644);
    }

    #[test]
    fn a_fifo_comes_back_and_a_device_node_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let archive = hostile_archive(
            base.path(),
            &[
                Hostile::Dir(b"top/"),
                Hostile::Fifo(b"top/pipe"),
                Hostile::Device(b"top/null"),
            ],
        );
        let target = base.path().join("target");
        let report = restore(&archive, &target, &[]).unwrap();
        assert_eq!(report.refused, ["top/null: device nodes are not restored"]);
        let pipe = fs::symlink_metadata(target.join("top/pipe")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&pipe.file_type()));
        assert_eq!(pipe.mode() & 0o7777, 0o644);
        assert_eq!(pipe.mtime(), 1_700_000_000);
        assert!(fs::symlink_metadata(target.join("top/null")).is_err());
    }

    #[test]
    fn hostile_paths_are_refused_and_nothing_escapes() {
        let base = tempfile::tempdir().unwrap();
        // A sandbox whose parent we can inspect; `/abs` is harmless to try, but check it.
        let work = base.path().join("work");
        fs::create_dir(&work).unwrap();
        let outside = base.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let outside_link = outside.to_str().unwrap().as_bytes().to_vec();
        let outside_file = format!("{}/victim", outside.display()).into_bytes();
        fs::write(outside.join("victim"), "untouched").unwrap();

        let archive = hostile_archive(
            &work,
            &[
                Hostile::Dir(b"top/"),
                Hostile::File(b"top/ok.txt", b"fine"),
                Hostile::File(b"/abs_store_test/file", b"abs"),
                Hostile::File(b"../escape", b"dotdot"),
                Hostile::File(b"top/a/../../../escape2", b"dotdot"),
                Hostile::Symlink(b"top/evil", &outside_link),
                Hostile::File(b"top/evil/file", b"through the link"),
                Hostile::Dir(b"top/evil/sub/"),
                Hostile::HardLink(b"top/hl_abs", &outside_file),
                Hostile::HardLink(b"top/hl_up", b"../outside/victim"),
                Hostile::HardLink(b"top/hl_through", b"top/evil/victim"),
                Hostile::HardLink(b"top/hl_ok", b"top/ok.txt"),
                Hostile::Symlink(b"top/evil2", &outside_file),
                Hostile::File(b"top/evil2", b"overwrite via duplicate"),
            ],
        );
        let target = work.join("target");
        let report = restore(&archive, &target, &[]).unwrap();

        let refused: Vec<&str> = report
            .refused
            .iter()
            .map(|r| r.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            refused,
            [
                "/abs_store_test/file",
                "../escape",
                "top/a/../../../escape2",
                "top/evil/file",
                "top/evil/sub/",
                "top/hl_abs",
                "top/hl_up",
                "top/hl_through",
                "top/evil2",
            ],
            "{:#?}",
            report.refused
        );
        assert!(
            report.refused[3].contains("symlink"),
            "{}",
            report.refused[3]
        );
        // The harmless entries are restored, symlinks included (making a link is safe).
        assert_eq!(
            fs::read_to_string(target.join("top/ok.txt")).unwrap(),
            "fine"
        );
        assert_eq!(
            fs::metadata(target.join("top/hl_ok")).unwrap().ino(),
            fs::metadata(target.join("top/ok.txt")).unwrap().ino()
        );
        assert!(
            fs::symlink_metadata(target.join("top/evil"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!((report.files, report.symlinks, report.dirs), (2, 2, 1));

        // Nothing written outside the target.
        assert_eq!(dir_names(&outside), ["victim"]);
        assert_eq!(
            fs::read_to_string(outside.join("victim")).unwrap(),
            "untouched"
        );
        assert_eq!(
            dir_names(&work),
            [
                "evil_20250102_030405.json",
                "evil_20250102_030405.tar",
                "target"
            ]
        );
        assert_eq!(dir_names(base.path()), ["outside", "work"]);
        assert!(!Path::new("/abs_store_test").exists());
        assert_eq!(dir_names(&target), ["top"]);
    }

    /// The audit's case: through a link in a folder the archive makes, a file in a private
    /// folder of the target would be readable to anyone.
    #[test]
    fn a_hard_link_may_point_only_at_a_file_this_restore_wrote() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("target");
        fs::create_dir_all(target.join("victim")).unwrap();
        fs::set_permissions(target.join("victim"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(target.join("victim/notes"), "private").unwrap();
        fs::create_dir(target.join("shared")).unwrap();
        fs::write(target.join("shared/old"), "there before").unwrap();
        let archive = hostile_archive(
            base.path(),
            &[
                Hostile::Dir(b"pub/"),
                Hostile::HardLink(b"pub/notes", b"victim/notes"),
                Hostile::HardLink(b"shared/to_old", b"shared/old"),
                // Written by this restore, in a folder it did not make: a fine target.
                Hostile::File(b"shared/new", b"new"),
                Hostile::HardLink(b"shared/to_new", b"shared/new"),
            ],
        );
        let nlink = |path: &str| fs::symlink_metadata(target.join(path)).unwrap().nlink();
        let ino = |path: &str| fs::symlink_metadata(target.join(path)).unwrap().ino();
        for overwrite in [false, true] {
            let options = RestoreOptions {
                paths: Vec::new(),
                overwrite,
                ..RestoreOptions::default()
            };
            let report = restore_with(&archive, &target, &options).unwrap();
            assert_eq!(
                report.refused,
                [
                    "pub/notes: hard link target victim/notes was not restored",
                    "shared/to_old: hard link target shared/old was not restored",
                ],
                "overwrite {overwrite}"
            );
            assert_eq!(dir_names(&target.join("pub")), Vec::<String>::new());
            assert_eq!((nlink("victim/notes"), nlink("shared/old")), (1, 1));
            assert_eq!(ino("shared/to_new"), ino("shared/new"), "{overwrite}");
            assert_eq!(nlink("shared/new"), 2, "{overwrite}");
        }

        // A `--path` selection without the link's target: the link gets the target's data
        // from the archive, never a link to a file of that name in the target (it may differ
        // from the archive's).
        let src = base.path().join("src1");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("a.txt"), "a").unwrap();
        fs::hard_link(src.join("a.txt"), src.join("hard")).unwrap();
        let dest = base.path().join("b");
        fs::create_dir(&dest).unwrap();
        let archive = backup(
            &src,
            &dest,
            "src1",
            Compression::of(Codec::None),
            "20250102_030405",
        )
        .archive;
        let out = base.path().join("r1");
        restore(&archive, &out, &[]).unwrap();
        let options = RestoreOptions {
            paths: vec!["hard".to_owned()],
            overwrite: true,
            ..RestoreOptions::default()
        };
        fs::write(out.join("src1/a.txt"), "changed since").unwrap();
        let report = restore_with(&archive, &out, &options).unwrap();
        assert_eq!(report.refused, Vec::<String>::new());
        assert_eq!(dir_names(&out.join("src1")), ["a.txt", "hard"]);
        assert_eq!(fs::read(out.join("src1/hard")).unwrap(), b"a");
        assert_eq!(fs::read(out.join("src1/a.txt")).unwrap(), b"changed since");
        assert_eq!(fs::metadata(out.join("src1/a.txt")).unwrap().nlink(), 1);
    }

    /// rename(2) between two links to one file does nothing and succeeds.
    #[test]
    fn overwriting_a_hard_link_with_the_same_link_leaves_no_temporary_file() {
        let base = tempfile::tempdir().unwrap();
        let archive = hostile_archive(
            base.path(),
            &[
                Hostile::Dir(b"top/"),
                Hostile::File(b"top/a", b"data"),
                Hostile::HardLink(b"top/h", b"top/a"),
                Hostile::HardLink(b"top/h", b"top/a"),
            ],
        );
        let target = base.path().join("target");
        let options = RestoreOptions {
            paths: Vec::new(),
            overwrite: true,
            ..RestoreOptions::default()
        };
        // Into a folder the restore makes, then into the same folder, now there before.
        for round in 1..=2 {
            let report = restore_with(&archive, &target, &options).unwrap();
            assert_eq!(report.refused, Vec::<String>::new(), "round {round}");
            assert_eq!(report.files, 3, "round {round}");
            assert_eq!(dir_names(&target.join("top")), ["a", "h"], "round {round}");
            let a = fs::metadata(target.join("top/a")).unwrap();
            assert_eq!(a.nlink(), 2, "round {round}");
            assert_eq!(a.ino(), fs::metadata(target.join("top/h")).unwrap().ino());
        }
    }

    #[test]
    fn a_file_where_a_folder_should_be_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let archive = hostile_archive(
            base.path(),
            &[
                Hostile::File(b"top", b"a file"),
                Hostile::File(b"top/inner", b"under a file"),
            ],
        );
        let target = base.path().join("target");
        let report = restore(&archive, &target, &[]).unwrap();
        assert_eq!(report.refused.len(), 1, "{:?}", report.refused);
        assert!(report.refused[0].starts_with("top/inner: "));
        assert_eq!(fs::read_to_string(target.join("top")).unwrap(), "a file");
    }

    #[test]
    fn modes_are_restored_even_for_read_only_folders() {
        let base = tempfile::tempdir().unwrap();
        let src = base.path().join("ro");
        fs::create_dir_all(src.join("locked")).unwrap();
        fs::write(src.join("locked/f"), "x").unwrap();
        fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o555)).unwrap();
        let dest = base.path().join("b");
        fs::create_dir(&dest).unwrap();
        let archive = backup(
            &src,
            &dest,
            "ro",
            Compression::of(Codec::None),
            "20250102_030405",
        )
        .archive;
        let out = base.path().join("out");
        restore(&archive, &out, &[]).unwrap();
        let mode = fs::metadata(out.join("ro/locked")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o555);
        assert_eq!(fs::read_to_string(out.join("ro/locked/f")).unwrap(), "x");
    }

    #[test]
    fn ownership_is_restored_only_as_root() {
        let base = tempfile::tempdir().unwrap();
        let src = base.path().join("owned");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), "x").unwrap();
        let root = rustix::process::geteuid().is_root();
        if root {
            std::os::unix::fs::chown(src.join("f"), Some(4321), Some(4322)).unwrap();
        }
        let dest = base.path().join("b");
        fs::create_dir(&dest).unwrap();
        let archive = backup(
            &src,
            &dest,
            "owned",
            Compression::of(Codec::None),
            "20250102_030405",
        )
        .archive;
        let out = base.path().join("out");
        restore(&archive, &out, &[]).unwrap();
        let meta = fs::metadata(out.join("owned/f")).unwrap();
        if root {
            assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
        } else {
            // Not root: whatever the archive says, the restorer owns the files.
            assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
        }
    }

    #[test]
    fn a_refusal_cuts_a_long_name_at_a_character_s_boundary() {
        assert_eq!(cut("short"), "short");
        let exact = "x".repeat(REFUSED_TEXT_MAX);
        assert_eq!(cut(&exact), exact);
        // A two-byte character across the limit is left out whole.
        let long = format!("{}é{}", "x".repeat(REFUSED_TEXT_MAX - 1), "y".repeat(10));
        let shown = cut(&long);
        assert_eq!(
            shown,
            format!(
                "{}… ({} bytes)",
                "x".repeat(REFUSED_TEXT_MAX - 1),
                long.len()
            )
        );
    }

    /// An extractor writing into `target` (an existing folder), whose steps a test calls
    /// one by one.
    fn stepwise<'a>(
        archive: &'a Archive<'a>,
        filters: &'a Filters,
        target: &'a Path,
        overwrite: bool,
    ) -> Extractor<'a> {
        Extractor {
            archive,
            target,
            root: beneath::open_dir(rustix::fs::CWD, target.as_os_str()).unwrap(),
            made_target: Vec::new(),
            filters,
            paths: PathTree::new(),
            stand_ins: HashMap::new(),
            stood_in: HashMap::new(),
            overwrite,
            sync: true,
            owners: false,
            report: RestoreReport::default(),
            cache: None,
            created_dirs: HashMap::new(),
            written: HashSet::new(),
            above: HashMap::new(),
            journal: Vec::new(),
            folders: Vec::new(),
            kept_folders: HashMap::new(),
            replaced: FirstFew::default(),
            file_systems: HashMap::new(),
            sweeper: Sweeper::new(),
            swept: HashSet::new(),
            early_sync: None,
            copy_buffer: Vec::new(),
        }
    }

    #[test]
    fn a_folder_swapped_in_under_the_name_of_one_it_made_is_not_taken_for_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        let folder = LocalFolder::new(dir.path());
        let filters = Filters::new(&[]);
        let archive = Archive {
            destination: &folder,
            file: "unused.tar",
            path: dir.path().join("unused.tar"),
            identities: None,
            stopping: NEVER,
        };
        let mut extractor = stepwise(&archive, &filters, &target, false);
        let attributes = Attributes {
            mode: 0o755,
            mtime: 0,
            owner: None,
        };
        let parent = beneath::open_dir(rustix::fs::CWD, target.as_os_str()).unwrap();
        let parts = [OsStr::new("d")];
        assert!(
            extractor
                .folder(&parent, PathTree::ROOT, &parts, attributes, Vec::new(), "d")
                .is_ok()
        );
        assert_eq!(extractor.folders.len(), 1, "made by this restore");
        // Replaced by someone else's folder between two entries naming it (made while the
        // first exists, so that it cannot get its inode).
        fs::create_dir(target.join("theirs")).unwrap();
        fs::remove_dir(target.join("d")).unwrap();
        fs::rename(target.join("theirs"), target.join("d")).unwrap();
        assert!(
            extractor
                .folder(&parent, PathTree::ROOT, &parts, attributes, Vec::new(), "d")
                .is_ok()
        );
        assert_eq!(
            extractor.folders.len(),
            1,
            "the stranger keeps its own mode"
        );
        assert_eq!(extractor.report.dirs, 1, "nor is it counted as restored");
    }

    /// `target` with a file `f` holding `old`, and an extractor that overwrites in it.
    fn overwriting_into(dir: &Path) -> (PathBuf, OwnedFd) {
        let target = dir.join("target");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("f"), "old").unwrap();
        let parent = beneath::open_dir(rustix::fs::CWD, target.as_os_str()).unwrap();
        (target, parent)
    }

    #[test]
    fn a_temporary_name_taken_as_it_is_made_is_skipped_and_never_undone_as_ours() {
        let dir = tempfile::tempdir().unwrap();
        let (target, parent) = overwriting_into(dir.path());
        let folder = LocalFolder::new(dir.path());
        let filters = Filters::new(&[]);
        let archive = Archive {
            destination: &folder,
            file: "unused.tar",
            path: dir.path().join("unused.tar"),
            identities: None,
            stopping: NEVER,
        };
        let mut extractor = stepwise(&archive, &filters, &target, true);
        let parts = [OsStr::new("f")];
        // Another restore, or a user, makes each of the first two names tried just before
        // this restore does.
        let mut theirs = Vec::new();
        let placed = extractor.place(&parent, PathTree::ROOT, &parts, "f", |dir, slot, _| {
            let mut file = slot.create(|name| {
                if theirs.len() < 2 {
                    fs::write(target.join(name), "theirs").unwrap();
                    theirs.push(name.to_owned());
                }
                beneath::create_file(dir, name)
            })?;
            file.write_all(b"new")
        });
        assert!(matches!(placed, Ok(true)));
        assert_eq!(fs::read_to_string(target.join("f")).unwrap(), "new");
        assert_eq!(extractor.replaced.total, 1);

        // A name taken, then a failure making the next, which someone makes just after:
        // neither is this restore's, and its undo leaves them.
        fs::write(target.join("g"), "old").unwrap();
        let parts = [OsStr::new("g")];
        let mut taken = false;
        let placed = extractor.place(&parent, PathTree::ROOT, &parts, "g", |dir, slot, _| {
            slot.create(|name| {
                fs::write(target.join(name), "theirs").unwrap();
                theirs.push(name.to_owned());
                if taken {
                    return Err(io::Error::other("no space left"));
                }
                taken = true;
                beneath::create_file(dir, name)
            })?;
            Ok(())
        });
        assert!(matches!(placed, Err(Fatal { .. })));
        let left = extractor.undo();
        assert_eq!(left, "left behind: f (replaced an existing entry)");
        assert_eq!(theirs.len(), 4);
        for name in &theirs {
            assert_eq!(
                fs::read_to_string(target.join(name)).unwrap(),
                "theirs",
                "{name:?}"
            );
        }
        assert_eq!(fs::read_to_string(target.join("g")).unwrap(), "old");
        assert_eq!(dir_names(&target).len(), 2 + theirs.len(), "nothing else");
    }

    #[test]
    fn an_overwriting_restore_skips_temporary_names_already_taken() {
        use restore_temp::test_names::name;
        let (dir, src, archive) = made(Compression::default());
        let out = dir.path().join("out");
        restore(&archive, &out, &[]).unwrap();
        let tree = out.join("tree");
        fs::write(tree.join("top.txt"), "changed").unwrap();
        // The next names this thread's restore would try, taken by someone else.
        let first = 1 << 40;
        let planted: Vec<PathBuf> = (first..first + 3)
            .flat_map(|n| [tree.clone(), tree.join("docs")].map(|dir| dir.join(name(n))))
            .collect();
        for file in &planted {
            fs::write(file, "theirs").unwrap();
        }
        let overwrite = RestoreOptions {
            paths: vec!["top.txt".to_owned(), "docs/link_rel".to_owned()],
            overwrite: true,
            ..RestoreOptions::default()
        };
        restore_temp::test_names::start_at(first);
        let report = restore_with(&archive, &out, &overwrite).unwrap();
        assert_eq!(report.replaced, 2);
        assert_eq!(
            fs::read_link(tree.join("docs/link_rel")).unwrap(),
            fs::read_link(src.join("docs/link_rel")).unwrap()
        );
        assert_eq!(fs::read(tree.join("top.txt")).unwrap(), b"top\n");
        for file in &planted {
            assert_eq!(fs::read_to_string(file).unwrap(), "theirs");
        }

        // As many taken in a row as a restore tries: it fails, saying so, and leaves them.
        fs::write(tree.join("top.txt"), "changed").unwrap();
        let next = first + 3;
        let planted: Vec<PathBuf> = (next..next + u64::from(TEMP_NAME_TRIES))
            .map(|n| tree.join(name(n)))
            .collect();
        for file in &planted {
            fs::write(file, "theirs").unwrap();
        }
        let top = RestoreOptions {
            paths: vec!["top.txt".to_owned()],
            ..overwrite
        };
        restore_temp::test_names::start_at(next);
        let err = restore_with(&archive, &out, &top).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("no free temporary name in its folder: the 100 tried"),
            "{text}"
        );
        assert!(text.contains("tree/top.txt"), "{text}");
        assert_eq!(fs::read_to_string(tree.join("top.txt")).unwrap(), "changed");
        for file in &planted {
            assert_eq!(fs::read_to_string(file).unwrap(), "theirs");
        }
    }

    #[test]
    fn a_list_for_a_message_keeps_the_first_few_and_counts_the_rest() {
        let mut few = FirstFew::default();
        let mut made = 0;
        for i in 0..1000 {
            few.add(|| {
                made += 1;
                format!("e{i}")
            });
        }
        assert_eq!(few.total, 1000);
        assert_eq!(few.shown, ["e0", "e1", "e2", "e3", "e4"]);
        assert_eq!(made, CONFLICTS_SHOWN, "the rest are never formatted");
        let mut two = FirstFew::default();
        two.add(|| "a".to_owned());
        two.add(|| "b".to_owned());
        two.extend(few);
        assert_eq!(two.total, 1002);
        assert_eq!(two.shown, ["a", "b", "e0", "e1", "e2"]);
    }

    #[test]
    fn a_failed_overwrite_names_the_first_entries_it_replaced_and_counts_the_rest() {
        let base = tempfile::tempdir().unwrap();
        let archive = base.path().join("many_20250102_030405.tar");
        let mut builder = tar::Builder::new(Vec::new());
        for i in 0..12 {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(3);
            builder
                .append_data(&mut header, format!("f{i:02}"), &b"new"[..])
                .unwrap();
        }
        let mut bytes = builder.into_inner().unwrap();
        bytes.truncate(bytes.len() - 1024); // the end-of-archive marker
        // A last entry cut short: the restore fails after replacing the twelve.
        let mut huge = tar::Header::new_gnu();
        huge.set_path("huge.bin").unwrap();
        huge.set_mode(0o644);
        huge.set_size(1 << 20);
        huge.set_cksum();
        bytes.extend_from_slice(huge.as_bytes());
        bytes.extend_from_slice(&[7u8; 1024]);
        fs::write(&archive, &bytes).unwrap();
        write_matching_manifest(&archive);
        let target = base.path().join("target");
        fs::create_dir(&target).unwrap();
        for i in 0..12 {
            fs::write(target.join(format!("f{i:02}")), "old").unwrap();
        }
        let overwrite = RestoreOptions {
            overwrite: true,
            ..RestoreOptions::default()
        };
        let err = restore_with(&archive, &target, &overwrite).unwrap_err();
        let text = err.to_string();
        let listed: Vec<String> = (0..5)
            .map(|i| format!("f{i:02} (replaced an existing entry)"))
            .collect();
        let expected = format!("left behind: {} and 7 more", listed.join(", "));
        assert!(text.ends_with(&expected), "{text}");
        assert!(!target.join("huge.bin").exists());
        assert_eq!(fs::read_to_string(target.join("f11")).unwrap(), "new");
    }
}
