//! Filesystem operations beneath a directory handle, never following a symlink.
//!
//! A restore target may be writable by someone else, who can swap a folder for a symlink at
//! any moment. So nothing here takes a path from `/`: every call is relative to an open
//! directory (`openat`, `mkdirat`, `symlinkat`, `linkat`, `renameat`), each component is
//! opened on its own with `O_NOFOLLOW | O_DIRECTORY`, and attributes are set on open handles
//! (`fchmod`, `fchown`, `futimens`) or with `AT_SYMLINK_NOFOLLOW`. A swapped folder makes
//! a lookup fail; it can never redirect a write outside the handle's tree.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid};
use rustix::io::Errno;

/// Why a folder on the way to an entry cannot be used.
#[derive(Debug)]
pub enum Blocked {
    /// A component is a symlink or something other than a folder: why, in words naming its
    /// path relative to the handle.
    NotAFolder(String),
    /// A component does not exist (only when not creating).
    Missing(String),
    Io(io::Error),
}

impl From<io::Error> for Blocked {
    fn from(error: io::Error) -> Self {
        Blocked::Io(error)
    }
}

impl From<rustix::io::Errno> for Blocked {
    fn from(error: rustix::io::Errno) -> Self {
        Blocked::Io(error.into())
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the folder `name` in `dir` without following a symlink.
pub fn open_dir(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?)
}

/// `stat` of `name` in `dir`, about the name itself (a symlink is not followed); `None` if
/// it does not exist.
pub fn stat_of(dir: impl AsFd, name: &OsStr) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn kind_of(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

/// Told of each folder [`walk`] makes: its components and its `stat`.
pub type OnCreated<'a> = &'a mut dyn FnMut(&[&OsStr], &Stat);

/// Walks `parts` from `root`, one component at a time, opening each with `O_NOFOLLOW`.
/// With `created` given, a missing folder is made (mode 0700 until its own entry, if any,
/// says otherwise) and its components are passed to `created`; without, it is
/// [`Blocked::Missing`].
pub fn walk(
    root: &OwnedFd,
    parts: &[&OsStr],
    mut created: Option<OnCreated<'_>>,
) -> Result<OwnedFd, Blocked> {
    let mut current = rustix::io::dup(root)?;
    for (depth, part) in parts.iter().enumerate() {
        let shown = || shown(&parts[..=depth]);
        let next = match open_dir(&current, part) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(created) = created.as_deref_mut() else {
                    return Err(Blocked::Missing(shown()));
                };
                match rustix::fs::mkdirat(&current, *part, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {
                        let fd = open_dir(&current, part)
                            .map_err(|e| blocked(&current, part, e, shown()))?;
                        created(&parts[..=depth], &rustix::fs::fstat(&fd)?);
                        fd
                    }
                    // Made meanwhile by someone else: use it if it is a real folder.
                    Err(rustix::io::Errno::EXIST) => {
                        open_dir(&current, part).map_err(|e| blocked(&current, part, e, shown()))?
                    }
                    Err(e) => return Err(Blocked::Io(e.into())),
                }
            }
            Err(e) => return Err(blocked(&current, part, e, shown())),
        };
        current = next;
    }
    Ok(current)
}

/// A failed `open_dir` in words: a symlink or a non-folder blocks the way, anything else is
/// an error. `ENOTDIR` or `ELOOP` say the name was no folder when it was opened, whatever it
/// is by the time it is looked at again: a folder swapped for a symlink and back blocks the
/// way as the symlink did.
fn blocked(dir: &OwnedFd, name: &OsStr, error: io::Error, shown: String) -> Blocked {
    let was_not_a_folder = [Errno::NOTDIR, Errno::LOOP]
        .iter()
        .any(|errno| error.raw_os_error() == Some(errno.raw_os_error()));
    match stat_of(dir, name) {
        Ok(Some(stat)) if kind_of(&stat) == FileType::Symlink => {
            Blocked::NotAFolder(format!("{shown} is a symlink"))
        }
        Ok(Some(stat)) if kind_of(&stat) != FileType::Directory => {
            Blocked::NotAFolder(format!("{shown} is not a folder"))
        }
        _ if was_not_a_folder => Blocked::NotAFolder(format!(
            "{shown} was not a folder when opened (changed meanwhile)"
        )),
        Ok(None) => Blocked::Missing(shown),
        _ => Blocked::Io(error),
    }
}

/// Components joined with `/`, for messages.
pub fn shown(parts: &[&OsStr]) -> String {
    let mut out = OsString::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push("/");
        }
        out.push(part);
    }
    out.to_string_lossy().into_owned()
}

/// Creates the regular file `name` in `dir`, failing if anything (a symlink included)
/// is there.
pub fn create_file(dir: impl AsFd, name: &OsStr) -> io::Result<std::fs::File> {
    let flags = OFlags::WRONLY
        .union(OFlags::CREATE)
        .union(OFlags::EXCL)
        .union(OFlags::NOFOLLOW)
        .union(OFlags::CLOEXEC);
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))?;
    Ok(std::fs::File::from(fd))
}

/// Makes the regular file `name` in `dir` with what `fill` writes, and gives it the name only
/// once `fill` is done: the file is made unnamed (`O_TMPFILE`) and linked in, so a restore
/// killed while writing it leaves nothing under any name.
/// Where the file system has no unnamed files it is made under its name at once. Fails if
/// anything (a symlink included) has the name.
pub fn write_file(
    dir: impl AsFd,
    name: &OsStr,
    fill: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = dir.as_fd();
    let flags = OFlags::WRONLY.union(OFlags::TMPFILE).union(OFlags::CLOEXEC);
    let unnamed = match rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => std::fs::File::from(fd),
        // No unnamed files here (EISDIR: a kernel that predates them).
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {
            let mut file = create_file(dir, name)?;
            fill(&mut file)?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let mut file = unnamed;
    fill(&mut file)?;
    // By the handle itself where allowed (root), else by its /proc name; both refuse to
    // replace what has the name.
    match rustix::fs::linkat(&file, "", dir, name, AtFlags::EMPTY_PATH) {
        Err(Errno::NOENT) => {}
        linked => return Ok(linked?),
    }
    let by_proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    Ok(rustix::fs::linkat(
        rustix::fs::CWD,
        by_proc.as_str(),
        dir,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )?)
}

/// Syncs the data of the regular file `name` in `dir`, written but maybe not yet on disk:
/// before a hard link to it replaces an existing file by a rename, so a power loss cannot
/// leave the name with neither the old content nor the new. A file its mode keeps us from
/// opening (not root) is synced with the whole file system instead.
pub fn sync_data_of(dir: impl AsFd, name: &OsStr) -> io::Result<()> {
    // Without waiting, should a FIFO have been swapped in.
    let flags = OFlags::RDONLY
        .union(OFlags::NONBLOCK)
        .union(OFlags::NOFOLLOW)
        .union(OFlags::CLOEXEC);
    match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
        Ok(fd) => Ok(rustix::fs::fdatasync(&fd)?),
        Err(Errno::ACCESS) => Ok(rustix::fs::syncfs(&dir)?),
        Err(e) => Err(e.into()),
    }
}

/// Opens the FIFO `name` in `dir` to set its attributes: without following a symlink and
/// without waiting for a writer; anything but a FIFO there is an error.
pub fn open_fifo(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY
        .union(OFlags::NONBLOCK)
        .union(OFlags::NOFOLLOW)
        .union(OFlags::CLOEXEC);
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    if kind_of(&rustix::fs::fstat(&fd)?) != FileType::Fifo {
        return Err(io::Error::other(format!(
            "{} is no longer a FIFO",
            Path::new(name).display()
        )));
    }
    Ok(fd)
}

/// What an entry's header says about its owner, mode and modification time.
#[derive(Debug, Clone, Copy)]
pub struct Attributes {
    pub mode: u32,
    /// Seconds since 1970; before it, negative.
    pub mtime: i64,
    /// Only applied when restoring as root.
    pub owner: Option<(u32, u32)>,
}

/// Sets owner (first: `chown` clears set-id bits), mode and times on an open file or folder.
pub fn apply(fd: impl AsFd, attributes: &Attributes) -> io::Result<()> {
    if let Some((uid, gid)) = attributes.owner {
        rustix::fs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(attributes.mode & 0o7777))?;
    rustix::fs::futimens(&fd, &times(attributes.mtime))?;
    Ok(())
}

/// Sets owner and times of the symlink `name` in `dir` itself (a symlink has no mode).
pub fn apply_to_symlink(dir: impl AsFd, name: &OsStr, attributes: &Attributes) -> io::Result<()> {
    if let Some((uid, gid)) = attributes.owner {
        rustix::fs::chownat(
            &dir,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    rustix::fs::utimensat(
        &dir,
        name,
        &times(attributes.mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn times(mtime: i64) -> Timestamps {
    let at = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}

/// Removes the non-folder `name` from `dir` (a symlink itself, not what it points to).
pub fn remove_file(dir: impl AsFd, name: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Removes the folder `name` in `dir` and everything in it, depth first, without following
/// symlinks (a symlink inside is removed, never entered). Iterative: one open folder per
/// level, whatever the depth.
pub fn remove_tree(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    // Each level: the folder's name in the level below (or in `dir`) and the folder itself.
    let mut levels: Vec<(OsString, OwnedFd)> = vec![(name.to_owned(), open_dir(dir, name)?)];
    while let Some((_, current)) = levels.last() {
        let mut removed = 0usize;
        let mut subfolder = None;
        for entry in rustix::fs::Dir::read_from(current)? {
            let entry = entry?;
            let child = OsStr::from_bytes(entry.file_name().to_bytes());
            if child == "." || child == ".." {
                continue;
            }
            match rustix::fs::unlinkat(current, child, AtFlags::empty()) {
                Ok(()) => removed += 1,
                Err(rustix::io::Errno::ISDIR) => {
                    subfolder = Some(child.to_owned());
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(child) = subfolder {
            let opened = open_dir(current, &child)?;
            levels.push((child, opened));
        } else if removed == 0 {
            // Empty (a pass that removed something reads the folder again).
            let (child, _) = levels.pop().expect("not empty");
            let parent = levels.last().map_or(dir, |(_, fd)| fd);
            rustix::fs::unlinkat(parent, &child, AtFlags::REMOVEDIR)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_name_that_was_no_folder_when_opened_blocks_the_way_though_it_is_one_again() {
        // A folder swapped for a symlink and back between the open and the look after it.
        let base = tempfile::tempdir().unwrap();
        fs::create_dir(base.path().join("a")).unwrap();
        let dir: OwnedFd = fs::File::open(base.path()).unwrap().into();
        for errno in [Errno::NOTDIR, Errno::LOOP] {
            let blocked = blocked(&dir, OsStr::new("a"), errno.into(), "a".into());
            assert!(
                matches!(&blocked, Blocked::NotAFolder(reason) if reason.contains("changed meanwhile")),
                "{blocked:?}"
            );
        }
        let other = blocked(&dir, OsStr::new("a"), Errno::ACCESS.into(), "a".into());
        assert!(matches!(other, Blocked::Io(_)), "{other:?}");
    }

    #[test]
    fn remove_tree_removes_a_deep_tree_and_never_follows_a_symlink() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        let mut deep = base.path().join("tree");
        for i in 0..50 {
            deep.push(format!("d{i}"));
            fs::create_dir_all(&deep).unwrap();
            fs::write(deep.join("f"), "x").unwrap();
        }
        std::os::unix::fs::symlink(&outside, base.path().join("tree/d0/link")).unwrap();
        let root = open_dir(
            rustix::fs::open(
                base.path(),
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .unwrap(),
            OsStr::new("."),
        )
        .unwrap();
        remove_tree(&root, OsStr::new("tree")).unwrap();
        assert!(!base.path().join("tree").exists());
        assert_eq!(fs::read_to_string(outside.join("keep")).unwrap(), "x");
    }
}
