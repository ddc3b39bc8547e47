//! A restore's target folder, reached from `/` one component at a time. The daemon often runs
//! as root and the client names the target, but a folder on the way may be another user's:
//! whoever owns `/home/alice/restored` can swap it for a symlink to `/etc` between any two
//! looks at the path, and a path opened whole would follow it. So each component is opened
//! on its own with `O_NOFOLLOW`; a symlink on the way is followed only when root or the
//! daemon's user owns it (as the system's own are: `/var/run` → `/run`), and the target itself
//! must not be one. Folders made for a missing target are kept as their parent's handle and
//! their identity, so that a failed restore removes those very folders and nothing a swap put
//! under their names.

use super::beneath;
use super::error::StoreError;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed on the way, and tries at making one folder that keeps vanishing, at
/// most: the kernel's own limit for links (`ELOOP`).
const MOST_DETOURS: usize = 40;

/// A folder made for a missing target: removed by [`MadeFolder::remove`] only while it is
/// still that folder.
#[derive(Debug)]
pub struct MadeFolder {
    parent: OwnedFd,
    name: OsString,
    identity: (u64, u64),
    /// Its path, for messages.
    pub shown: PathBuf,
}

impl MadeFolder {
    /// Removes the folder if it is still the one made and empty.
    pub fn remove(&self) -> io::Result<()> {
        match beneath::stat_of(&self.parent, &self.name)? {
            None => Ok(()),
            Some(stat) if (stat.st_dev, stat.st_ino) == self.identity => Ok(rustix::fs::unlinkat(
                &self.parent,
                &self.name,
                AtFlags::REMOVEDIR,
            )?),
            Some(_) => Err(io::Error::other("replaced by something else")),
        }
    }
}

/// The target folder opened, if it exists.
pub fn open_existing(to: &Path) -> Result<Option<OwnedFd>, StoreError> {
    Ok(walk(to, false)?.map(|(root, _)| root))
}

/// The target opened, made first if missing (with its missing parents), and the folders made,
/// deepest first.
pub fn create(to: &Path) -> Result<(OwnedFd, Vec<MadeFolder>), StoreError> {
    walk(to, true)?.ok_or_else(|| StoreError::Target {
        path: to.to_owned(),
        source: io::ErrorKind::NotFound.into(),
    })
}

/// Whether the opened target holds nothing.
pub fn is_empty(root: &OwnedFd, to: &Path) -> Result<bool, StoreError> {
    let target_error = |source: io::Error| StoreError::Target {
        path: to.to_owned(),
        source,
    };
    // A description of its own: reading the handle's would move its offset.
    let entries = rustix::fs::Dir::read_from(root).map_err(|e| target_error(e.into()))?;
    for entry in entries {
        let entry = entry.map_err(|e| target_error(e.into()))?;
        if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Walks `to` from `/`; `None` when a component is missing and `create` is not asked.
fn walk(to: &Path, create: bool) -> Result<Option<(OwnedFd, Vec<MadeFolder>)>, StoreError> {
    let target_error = |source: io::Error| StoreError::Target {
        path: to.to_owned(),
        source,
    };
    let mut made = Vec::new();
    let walked = walk_making(to, create, &mut made).map_err(|e| match e {
        Walk::Store(e) => e,
        Walk::Io(e) => target_error(e),
    });
    if walked.is_err() {
        // Deepest first: a half-made target goes as a failed restore's would.
        for folder in made.iter().rev() {
            let _ = folder.remove();
        }
    }
    made.reverse();
    Ok(walked?.map(|root| (root, made)))
}

enum Walk {
    Store(StoreError),
    Io(io::Error),
}

impl From<io::Error> for Walk {
    fn from(e: io::Error) -> Self {
        Walk::Io(e)
    }
}

impl From<Errno> for Walk {
    fn from(e: Errno) -> Self {
        Walk::Io(e.into())
    }
}

fn walk_making(
    to: &Path,
    create: bool,
    made: &mut Vec<MadeFolder>,
) -> Result<Option<OwnedFd>, Walk> {
    let trusted = [0, rustix::process::geteuid().as_raw()];
    let mut pending = components(to);
    let root = Held::root(&trusted)?;
    // The folders walked into: `..` goes back to the one before, as the path is written, not
    // to wherever a folder walked through has since been moved.
    let mut held: Vec<Held> = Vec::new();
    let (mut links, mut tries) = (0, 0);
    while let Some(name) = pending.pop_front() {
        let last = pending.is_empty();
        if name == ".." {
            held.pop();
            continue;
        }
        let current = held.last().unwrap_or(&root);
        let here = current.path.join(&name);
        let error = match rustix::fs::openat(&current.fd, &name, PATH_FLAGS, Mode::empty()) {
            Ok(fd) => {
                held.push(current.child(fd, &name, &trusted)?);
                tries = 0;
                continue;
            }
            Err(e) => io::Error::from(e),
        };
        // The name itself, held: what is checked below is what is followed.
        let itself = match rustix::fs::openat(&current.fd, &name, LINK_FLAGS, Mode::empty()) {
            Ok(fd) => Some(fd),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(itself) = itself else {
            // `missing/..` is where the path was: nothing to make, nothing missing.
            if let Some(back) = returns_above(&pending) {
                pending.drain(..back);
                continue;
            }
            if !create {
                return Ok(None);
            }
            // Made, then opened as found: what is there by then may be a swap. A name that
            // keeps vanishing as it is made is given up on.
            tries += 1;
            if tries > MOST_DETOURS {
                return Err(Errno::LOOP.into());
            }
            match rustix::fs::mkdirat(&current.fd, &name, Mode::from_raw_mode(0o777)) {
                Ok(()) => {
                    if let Some(stat) = beneath::stat_of(&current.fd, &name)? {
                        made.push(MadeFolder {
                            parent: rustix::io::dup(&current.fd)?,
                            name: name.clone(),
                            identity: (stat.st_dev, stat.st_ino),
                            shown: here,
                        });
                    }
                }
                // Made meanwhile: used as any folder found on the way.
                Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            pending.push_front(name);
            continue;
        };
        let stat = rustix::fs::fstat(&itself)?;
        match beneath::kind_of(&stat) {
            FileType::Symlink if last => {
                return Err(Walk::Store(StoreError::TargetIsSymlink {
                    path: to.to_owned(),
                }));
            }
            FileType::Symlink => {
                let folder = rustix::fs::fstat(&current.fd)?;
                let distrusted = if !trusted.contains(&stat.st_uid) {
                    Some(format!("owned by uid {}", stat.st_uid))
                } else if current.changeable.is_none() && others_may_add_to(&folder) {
                    Some(format!(
                        "in {}, where other users may move it in (mode {:o})",
                        current.path.display(),
                        folder.st_mode & 0o7777
                    ))
                } else {
                    current.changeable.clone()
                };
                if let Some(why) = distrusted {
                    return Err(Walk::Store(StoreError::TargetUntrustedLink {
                        path: to.to_owned(),
                        link: here,
                        why,
                    }));
                }
                links += 1;
                if links > MOST_DETOURS {
                    return Err(Errno::LOOP.into());
                }
                let target = rustix::fs::readlinkat(&itself, "", Vec::new())?;
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    held.clear();
                }
                for part in components(target).into_iter().rev() {
                    pending.push_front(part);
                }
            }
            FileType::Directory => {
                // A folder now that was none at the open: swapped meanwhile.
                return Err(error.into());
            }
            _ if last => {
                return Err(Walk::Store(StoreError::TargetNotDirectory {
                    path: to.to_owned(),
                }));
            }
            _ => return Err(Errno::NOTDIR.into()),
        }
    }
    // Held to be read and written in: `.` of a folder held is that folder.
    let current = held.last().unwrap_or(&root);
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(Some(rustix::fs::openat(
        &current.fd,
        ".",
        flags,
        Mode::empty(),
    )?))
}

/// A folder on the way, held.
struct Held {
    fd: OwnedFd,
    /// Its path as walked, for messages.
    path: PathBuf,
    /// Why a symlink in it may not be followed: the first folder from `/` down to it whose
    /// entries another user may rename or replace. Another user could then move a folder
    /// holding a link of root's, or the link itself, onto the path.
    changeable: Option<String>,
}

impl Held {
    fn root(trusted: &[u32]) -> io::Result<Self> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open("/", flags, Mode::empty())?;
        let path = PathBuf::from("/");
        let changeable = changeable(&fd, &path, trusted)?;
        Ok(Held {
            fd,
            path,
            changeable,
        })
    }

    fn child(&self, fd: OwnedFd, name: &OsStr, trusted: &[u32]) -> io::Result<Self> {
        let path = self.path.join(name);
        let changeable = match &self.changeable {
            Some(above) => Some(above.clone()),
            None => changeable(&fd, &path, trusted)?,
        };
        Ok(Held {
            fd,
            path,
            changeable,
        })
    }
}

/// Why other users may change the entries of the folder held as `fd`, if they may.
fn changeable(fd: &OwnedFd, path: &Path, trusted: &[u32]) -> io::Result<Option<String>> {
    let folder = rustix::fs::fstat(fd)?;
    Ok(others_may_rename_in(&folder, trusted).then(|| {
        format!(
            "below {}, which other users may change (mode {:o}, owner uid {})",
            path.display(),
            folder.st_mode & 0o7777,
            folder.st_uid
        )
    }))
}

/// Whether users other than `trusted` may rename or replace the entries of `folder` that are
/// not theirs: it is another's, or writable by its group or others without the sticky bit
/// (which keeps them from renaming entries not theirs, as in `/tmp`).
fn others_may_rename_in(folder: &rustix::fs::Stat, trusted: &[u32]) -> bool {
    let sticky = folder.st_mode & 0o1000 != 0;
    !trusted.contains(&folder.st_uid) || (others_may_add_to(folder) && !sticky)
}

/// Whether users other than its owner may add entries to `folder`, sticky or not: there they
/// may move in root's symlink from a folder of theirs, under the name a restore walks
/// through (a folder of root's they cannot move: that takes writing in it).
fn others_may_add_to(folder: &rustix::fs::Stat) -> bool {
    folder.st_mode & 0o022 != 0
}

/// A name opened as itself, a symlink included, to be looked at and read through one handle.
const LINK_FLAGS: OFlags = OFlags::PATH.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Folders on the way are held without being read (a folder one may only pass through is
/// passed through as the kernel passes it).
const PATH_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// How many of `pending`, the names after a folder, it takes to come back above that folder
/// (`sub/../..` takes 3), if they do.
fn returns_above(pending: &VecDeque<OsString>) -> Option<usize> {
    let mut depth = 1usize;
    for (i, name) in pending.iter().enumerate() {
        if name == ".." {
            depth -= 1;
            if depth == 0 {
                return Some(i + 1);
            }
        } else {
            depth += 1;
        }
    }
    None
}

/// The names to walk: `.` dropped, `..` kept, the root left out.
fn components(path: &Path) -> VecDeque<OsString> {
    (path.components())
        .filter_map(|part| match part {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn same(fd: &OwnedFd, path: &Path) -> bool {
        let stat = rustix::fs::fstat(fd).unwrap();
        let meta = fs::metadata(path).unwrap();
        (stat.st_dev, stat.st_ino) == (meta.dev(), meta.ino())
    }

    #[test]
    fn the_target_is_found_through_trusted_links_and_dots() {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real/target");
        fs::create_dir_all(&real).unwrap();
        symlink(base.path().join("real"), base.path().join("abs")).unwrap();
        symlink("real", base.path().join("rel")).unwrap();
        fs::create_dir(real.join("sub")).unwrap();
        for spelling in [
            "abs/target",
            "rel/target",
            "rel/../real/./target",
            "real/target/",
            "real/target/sub/..",
        ] {
            let fd = open_existing(&base.path().join(spelling)).unwrap().unwrap();
            assert!(same(&fd, &real), "{spelling}");
            assert!(!is_empty(&fd, &real).unwrap(), "sub is there");
            // A handle to read and write in, not one that only passes through.
            let flags = rustix::fs::fcntl_getfl(&fd).unwrap();
            assert!(!flags.contains(OFlags::PATH), "{spelling}");
        }
        fs::remove_dir(real.join("sub")).unwrap();
        let fd = open_existing(&real).unwrap().unwrap();
        assert!(is_empty(&fd, &real).unwrap());
        assert!(
            open_existing(&base.path().join("rel/missing"))
                .unwrap()
                .is_none()
        );
        fs::write(real.join("f"), b"x").unwrap();
        let fd = open_existing(&real).unwrap().unwrap();
        assert!(!is_empty(&fd, &real).unwrap());
    }

    #[test]
    fn the_target_itself_may_not_be_a_link_nor_a_file() {
        let base = tempfile::tempdir().unwrap();
        fs::create_dir(base.path().join("real")).unwrap();
        fs::write(base.path().join("file"), b"x").unwrap();
        symlink(base.path().join("real"), base.path().join("link")).unwrap();
        let link = open_existing(&base.path().join("link"));
        assert!(
            matches!(link, Err(StoreError::TargetIsSymlink { .. })),
            "{link:?}"
        );
        let file = open_existing(&base.path().join("file"));
        assert!(
            matches!(file, Err(StoreError::TargetNotDirectory { .. })),
            "{file:?}"
        );
        let under_file = open_existing(&base.path().join("file/x"));
        assert!(
            matches!(under_file, Err(StoreError::Target { .. })),
            "{under_file:?}"
        );
    }

    #[test]
    fn a_link_another_user_owns_is_never_followed() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let link = base.path().join("theirs");
        symlink(&outside, &link).unwrap();
        let uid = rustix::process::geteuid().as_raw() + 4242;
        rustix::fs::chownat(
            rustix::fs::CWD,
            &link,
            Some(rustix::fs::Uid::from_raw(uid)),
            None,
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap_or_else(|e| panic!("this test needs root to give a link away: {e}"));
        let target = link.join("docs");
        let owned_by = format!("owned by uid {uid}");
        for made in [open_existing(&target).map(drop), create(&target).map(drop)] {
            assert!(
                matches!(&made, Err(StoreError::TargetUntrustedLink { why, .. }) if *why == owned_by),
                "{made:?}"
            );
        }
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
    }

    #[test]
    fn a_trusted_link_is_not_followed_where_others_may_rename_it() {
        // Root's link in a user's folder: the user may move it onto the target's path, or
        // move a folder of root's holding root's link there.
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let open = base.path().join("open");
        fs::create_dir(&open).unwrap();
        symlink(&outside, open.join("link")).unwrap();
        let srv = open.join("srv");
        fs::create_dir(&srv).unwrap();
        symlink(&outside, srv.join("www")).unwrap();
        let (link, through_srv) = (open.join("link/docs"), srv.join("www/docs"));
        let uid = rustix::process::geteuid().as_raw();
        let below = |mode: u32| {
            let open = open.display();
            Some(format!(
                "below {open}, which other users may change (mode {mode:o}, owner uid {uid})"
            ))
        };
        let moved_in = Some(format!(
            "in {}, where other users may move it in (mode 1777)",
            open.display()
        ));
        // Sticky, root's folder cannot be moved in (that takes writing in it), its link can.
        let cases = [
            (0o777, &link, below(0o777)),
            (0o777, &through_srv, below(0o777)),
            (0o775, &link, below(0o775)),
            (0o775, &through_srv, below(0o775)),
            (0o1777, &link, moved_in),
            (0o1777, &through_srv, None),
            (0o755, &link, None),
            (0o755, &through_srv, None),
        ];
        for (mode, target, refused) in cases {
            fs::set_permissions(&open, fs::Permissions::from_mode(mode)).unwrap();
            let found = open_existing(target);
            match refused {
                None => assert!(matches!(found, Ok(None)), "{mode:o}: {found:?}"),
                Some(why) => assert!(
                    matches!(&found, Err(StoreError::TargetUntrustedLink { why: w, .. }) if *w == why),
                    "{mode:o}: {found:?}"
                ),
            }
        }
    }

    #[test]
    fn dot_dot_goes_back_the_way_the_path_came() {
        // After a link, as the kernel takes it: to the parent of where the link led.
        let base = tempfile::tempdir().unwrap();
        let deep = base.path().join("real/deep");
        fs::create_dir_all(&deep).unwrap();
        symlink(&deep, base.path().join("link")).unwrap();
        let fd = open_existing(&base.path().join("link/.."))
            .unwrap()
            .unwrap();
        assert!(same(&fd, &base.path().join("real")));
        let fd = open_existing(&base.path().join("real/deep/../.."))
            .unwrap()
            .unwrap();
        assert!(same(&fd, base.path()));
        let fd = open_existing(Path::new("/../..")).unwrap().unwrap();
        assert!(same(&fd, Path::new("/")));
    }

    #[test]
    fn a_missing_folder_the_path_comes_back_from_is_neither_made_nor_missing() {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::write(real.join("f"), b"x").unwrap();
        for spelling in [
            "real/missing/..",
            "real/missing/sub/../..",
            "missing/../real",
        ] {
            let fd = open_existing(&base.path().join(spelling)).unwrap().unwrap();
            assert!(same(&fd, &real), "{spelling}");
            assert!(!is_empty(&fd, &real).unwrap(), "{spelling}");
            let (fd, made) = create(&base.path().join(spelling)).unwrap();
            assert!(same(&fd, &real) && made.is_empty(), "{spelling}");
        }
        assert!(!real.join("missing").exists() && !base.path().join("missing").exists());
        assert!(
            open_existing(&base.path().join("real/missing/../x"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_deep_new_target_is_made_whole() {
        let base = tempfile::tempdir().unwrap();
        let mut deep = base.path().to_path_buf();
        for i in 0..(MOST_DETOURS + 20) {
            deep.push(format!("d{i}"));
        }
        let (fd, made) = create(&deep).unwrap();
        assert!(same(&fd, &deep));
        assert_eq!(made.len(), MOST_DETOURS + 20);
    }

    #[test]
    fn made_folders_are_removed_only_while_they_are_the_ones_made() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("a/b/c");
        let (fd, made) = create(&target).unwrap();
        assert!(same(&fd, &target));
        let shown: Vec<_> = made.iter().map(|m| m.shown.clone()).collect();
        let expected = ["a/b/c", "a/b", "a"].map(|p| base.path().join(p));
        assert_eq!(shown, expected);
        // `a/b` swapped for another folder: it stays, and so does what is in it.
        fs::remove_dir(&target).unwrap();
        fs::rename(base.path().join("a/b"), base.path().join("elsewhere")).unwrap();
        fs::create_dir_all(base.path().join("a/b/kept")).unwrap();
        let results: Vec<_> = made.iter().map(MadeFolder::remove).collect();
        assert!(results[0].is_ok(), "c is gone already: {results:?}");
        assert!(results[1].is_err(), "{results:?}");
        assert!(base.path().join("a/b/kept").is_dir());
        assert!(base.path().join("elsewhere").is_dir());
    }
}
