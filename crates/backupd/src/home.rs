//! The daemon's home directory and the fixed places inside it, and the trust the daemon needs
//! in them: a home (or its `backups/`, `logs/`) that another user can write lets that user
//! plant links the daemon, often root, would write through. So the home must belong to the
//! daemon's user and be writable by no one else, its folders must be real folders, and one
//! daemon at a time holds `<home>/lock`.

use proto::paths::{BACKUPS_DIR, LOGS_DIR};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, Stat};
use rustix::io::Errno;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// File name of the schedule file inside the home.
pub const SCHEDULES_FILE: &str = "schedules.json";

/// File name of the lock a daemon holds on its home for its whole life.
pub const LOCK_FILE: &str = "lock";

/// Paths of everything the daemon owns.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

/// Why the daemon will not use its home.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("can't create {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("can't open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "{} is a symbolic link; backupd's folders must be real folders: remove the link \
         (backupd creates the folder)", path.display()
    )]
    Symlink { path: PathBuf },
    #[error("{} is not a folder", path.display())]
    NotAFolder { path: PathBuf },
    #[error(
        "{} belongs to uid {owner}, not to backupd's uid {uid}: that user could plant links \
         backupd would write through; run `chown -R {uid} {}` or use a home of your own \
         (--home DIR)", path.display(), path.display()
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "{} is writable by its group or by others (mode {mode:04o}): they could plant links \
         backupd would write through; run `chmod go-w {}`", path.display(), path.display()
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error(
        "{}, a folder on the way to the home, {why}: its owner or others could swap the home \
         for a folder of theirs; use a home whose parent folders belong to root or to you \
         (--home DIR)", path.display()
    )]
    UnsafeParent { path: PathBuf, why: String },
    #[error(
        "socket_group: the group's members could not reach the socket {}: it is inside {} \
         (mode {mode:04o}), which that group may not enter; put the socket in a folder they can \
         enter with --socket PATH (or BACKUPD_SOCKET), such as /run/backupd/backupd.sock, \
         or use a socket unit (see \"Running as a service\")",
        socket.display(), folder.display()
    )]
    SocketShut {
        socket: PathBuf,
        folder: PathBuf,
        mode: u32,
    },
    #[error("another backupd holds {} (pid {pid})", path.display())]
    Locked { path: PathBuf, pid: String },
    #[error("can't lock {}: {source}", path.display())]
    Lock { path: PathBuf, source: io::Error },
}

/// A folder on the way to the socket lets neither the `socket_group` nor others in: the group's
/// members may not reach the socket (see [`Home::socket_maybe_shut`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "socket_group: the group's members may not reach the socket {}: {}, on the way to it \
     (mode {mode:04o}, group {folder_gid}), lets neither that group nor others in; unless an \
     ACL lets them in, open it to the group (chgrp and chmod g+x) or put the socket in a folder \
     they can enter with --socket PATH",
    socket.display(), folder.display()
)]
pub struct SocketMaybeShut {
    pub socket: PathBuf,
    pub folder: PathBuf,
    pub mode: u32,
    pub folder_gid: u32,
}

/// Whether members of group `gid` may enter a folder: by its others' search bit, or its
/// group's when the folder is that group's (its ACL, if any, is not read).
fn lets_group_in(folder: &rustix::fs::Stat, gid: u32) -> bool {
    let mode = folder.st_mode & 0o7777;
    mode & 0o001 != 0 || (folder.st_gid == gid && mode & 0o010 != 0)
}

/// The exclusive lock on `<home>/lock`: released when dropped (or when the process ends).
#[derive(Debug)]
pub struct HomeLock {
    _file: File,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn schedules_file(&self) -> PathBuf {
        self.root.join(SCHEDULES_FILE)
    }

    pub fn backups_dir(&self) -> PathBuf {
        self.root.join(BACKUPS_DIR)
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join(LOGS_DIR)
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// Creates the home and its folders where missing. New folders are private (0700): the
    /// archives hold copies of the user's data.
    pub fn create_dirs(&self) -> io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for dir in [self.root.clone(), self.backups_dir(), self.logs_dir()] {
            builder.create(&dir).map_err(|e| {
                io::Error::new(e.kind(), format!("can't create {}: {e}", dir.display()))
            })?;
        }
        Ok(())
    }

    /// Creates what is missing, then checks that the home, `backups/` and `logs/` can be
    /// trusted (see [`Self::check_trust`]). The folders are created relative to the home's
    /// handle, without following links.
    pub fn prepare(&self) -> Result<(), HomeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|source| HomeError::Create {
                path: self.root.clone(),
                source,
            })?;
        let root = self.open_root()?;
        for name in [BACKUPS_DIR, LOGS_DIR] {
            match rustix::fs::mkdirat(&root, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => {
                    return Err(HomeError::Create {
                        path: self.root.join(name),
                        source: e.into(),
                    });
                }
            }
        }
        self.check_trust()
    }

    /// Checks what exists of the home: the home itself (a link to it is fine: the user chose
    /// that path) and `backups/`, `logs/` (which must not be links) belong to the daemon's
    /// user and are not writable by group or others. Once the home is trusted, no one else can
    /// change its entries, so checking them by name is enough.
    pub fn check_trust(&self) -> Result<(), HomeError> {
        let root = match self.open_root() {
            Err(HomeError::Open { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(());
            }
            other => other?,
        };
        let stat = rustix::fs::fstat(&root).map_err(|e| self.open_error(&self.root, e))?;
        check_owner_and_mode(&self.root, &stat)?;
        // The way there, as written and as resolved: a link on it is a parent's entry too.
        check_parents(&self.root)?;
        let resolved = std::fs::canonicalize(&self.root).map_err(|source| HomeError::Open {
            path: self.root.clone(),
            source,
        })?;
        check_parents(&resolved)?;
        for name in [BACKUPS_DIR, LOGS_DIR] {
            let path = self.root.join(name);
            let stat = match rustix::fs::statat(&root, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(self.open_error(&path, e)),
            };
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => check_owner_and_mode(&path, &stat)?,
                FileType::Symlink => return Err(HomeError::Symlink { path }),
                _ => return Err(HomeError::NotAFolder { path }),
            }
        }
        Ok(())
    }

    /// With `socket_group`, a socket inside the home must be reachable by that group
    /// (`gid`): the folders from the home down to the socket must let the group in. backupd
    /// does not open them itself: the home holds `backupd.toml`, the schedules and the
    /// verification state under the user's umask, which its 0700 keeps private, and the
    /// folders above it are not backupd's to change. A folder not created yet will be 0700.
    pub fn check_socket_reachable(&self, socket: &Path, gid: u32) -> Result<(), HomeError> {
        let Some(parent) = socket.parent().filter(|p| p.starts_with(&self.root)) else {
            return Ok(());
        };
        let mut folders: Vec<&Path> = parent
            .ancestors()
            .take_while(|folder| folder.starts_with(&self.root))
            .collect();
        folders.reverse();
        for folder in folders {
            let mode = match rustix::fs::stat(folder) {
                Ok(stat) if lets_group_in(&stat, gid) => continue,
                Ok(stat) => stat.st_mode & 0o7777,
                Err(Errno::NOENT) => 0o700,
                Err(e) => return Err(self.open_error(folder, e)),
            };
            return Err(HomeError::SocketShut {
                socket: socket.to_path_buf(),
                folder: folder.to_path_buf(),
                mode,
            });
        }
        Ok(())
    }

    /// With `socket_group`, the first folder outside the home on the way to the socket that
    /// lets neither that group (`gid`) nor others in, if any. Only a warning: an ACL, which
    /// backupd does not read, may let the group in, and these folders are the administrator's.
    /// Folders that do not exist yet are skipped.
    pub fn socket_maybe_shut(&self, socket: &Path, gid: u32) -> Option<SocketMaybeShut> {
        let parent = socket.parent()?;
        let mut folders: Vec<&Path> = parent
            .ancestors()
            .filter(|folder| !folder.starts_with(&self.root))
            .collect();
        folders.reverse();
        folders.into_iter().find_map(|folder| {
            let stat = rustix::fs::stat(folder).ok()?;
            (!lets_group_in(&stat, gid)).then(|| SocketMaybeShut {
                socket: socket.to_path_buf(),
                folder: folder.to_path_buf(),
                mode: stat.st_mode & 0o7777,
                folder_gid: stat.st_gid,
            })
        })
    }

    /// Takes the exclusive lock on `<home>/lock` (created 0600, never through a link) and
    /// writes our pid in it; fails at once, naming the holder's pid, if another daemon has it.
    pub fn lock(&self) -> Result<HomeLock, HomeError> {
        let path = self.lock_file();
        let lock_error = |source: io::Error| HomeError::Lock {
            path: path.clone(),
            source,
        };
        let root = self.open_root()?;
        let fd = rustix::fs::openat(
            &root,
            LOCK_FILE,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| lock_error(e.into()))?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = File::from(fd).read_to_string(&mut text);
                let pid = text.trim();
                return Err(HomeError::Locked {
                    path,
                    pid: if pid.is_empty() { "unknown" } else { pid }.to_owned(),
                });
            }
            Err(e) => return Err(lock_error(e.into())),
        }
        let mut file = File::from(fd);
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(lock_error)?;
        Ok(HomeLock { _file: file })
    }

    fn open_root(&self) -> Result<OwnedFd, HomeError> {
        rustix::fs::open(
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.open_error(&self.root, e))
    }

    fn open_error(&self, path: &Path, e: Errno) -> HomeError {
        HomeError::Open {
            path: path.to_path_buf(),
            source: e.into(),
        }
    }
}

/// Every folder above `home` (and any link on the way, `home` included) must belong to root or
/// to the daemon's user, and a folder others may write must be sticky (as `/tmp` is): there
/// they cannot rename or remove what is ours.
fn check_parents(home: &Path) -> Result<(), HomeError> {
    let uid = rustix::process::geteuid().as_raw();
    let trusted_owner = |owner: u32| owner == 0 || owner == uid;
    for path in home.ancestors() {
        let unsafe_parent = |why: String| HomeError::UnsafeParent {
            path: path.to_path_buf(),
            why,
        };
        let stat = match rustix::fs::lstat(path) {
            Ok(stat) => stat,
            Err(e) => {
                return Err(HomeError::Open {
                    path: path.to_path_buf(),
                    source: e.into(),
                });
            }
        };
        if !trusted_owner(stat.st_uid) {
            return Err(unsafe_parent(format!("belongs to uid {}", stat.st_uid)));
        }
        let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
        let mode = stat.st_mode & 0o7777;
        if path != home && is_dir && mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(unsafe_parent(format!(
                "is writable by its group or by others without the sticky bit (mode {mode:04o})"
            )));
        }
    }
    Ok(())
}

/// The folder must belong to the daemon's user and be writable by no one else.
fn check_owner_and_mode(path: &Path, stat: &Stat) -> Result<(), HomeError> {
    let uid = rustix::process::geteuid().as_raw();
    if stat.st_uid != uid {
        return Err(HomeError::NotOwned {
            path: path.to_path_buf(),
            owner: stat.st_uid,
            uid,
        });
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(HomeError::Writable {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        // Private whatever the umask: a home under a folder others can write is refused.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let home = Home::new(dir.path().join("home"));
        (dir, home)
    }

    #[test]
    fn prepare_creates_private_folders() {
        let (_dir, home) = home();
        home.prepare().unwrap();
        for dir in [
            home.root().to_path_buf(),
            home.backups_dir(),
            home.logs_dir(),
        ] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
        }
    }

    #[test]
    fn a_group_writable_folder_is_refused_with_the_fix() {
        let (_dir, home) = home();
        home.prepare().unwrap();
        std::fs::set_permissions(home.logs_dir(), std::fs::Permissions::from_mode(0o770)).unwrap();
        let err = home.prepare().unwrap_err();
        assert!(matches!(err, HomeError::Writable { .. }), "{err}");
        assert!(err.to_string().contains("chmod go-w"), "{err}");
    }

    #[test]
    fn a_linked_backups_folder_is_refused() {
        let (dir, home) = home();
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(home.root())
            .unwrap();
        std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), home.backups_dir()).unwrap();
        let err = home.prepare().unwrap_err();
        assert!(matches!(err, HomeError::Symlink { .. }), "{err}");
    }

    #[test]
    fn a_home_under_a_folder_others_can_write_is_refused_unless_it_is_sticky() {
        let (dir, home) = home();
        home.prepare().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = home.check_trust().unwrap_err();
        assert!(matches!(err, HomeError::UnsafeParent { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&dir.path().display().to_string()),
            "{err}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        home.check_trust().unwrap();
    }

    #[test]
    fn a_missing_home_has_nothing_to_distrust() {
        let (_dir, home) = home();
        home.check_trust().unwrap();
        assert!(!home.root().exists(), "checking creates nothing");
    }

    #[test]
    fn a_socket_group_must_be_let_into_the_home_holding_the_socket() {
        use std::os::unix::fs::MetadataExt;
        let (dir, home) = home();
        let socket = home.root().join("backupd.sock");
        let err = home.check_socket_reachable(&socket, 4242).unwrap_err();
        assert!(
            matches!(err, HomeError::SocketShut { mode: 0o700, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--socket PATH"), "{err}");
        home.prepare().unwrap();
        assert!(home.check_socket_reachable(&socket, 4242).is_err());
        let own_gid = std::fs::metadata(home.root()).unwrap().gid();
        std::fs::set_permissions(home.root(), std::fs::Permissions::from_mode(0o710)).unwrap();
        home.check_socket_reachable(&socket, own_gid).unwrap();
        assert!(home.check_socket_reachable(&socket, own_gid + 1).is_err());
        std::fs::set_permissions(home.root(), std::fs::Permissions::from_mode(0o711)).unwrap();
        home.check_socket_reachable(&socket, own_gid + 1).unwrap();
        // Outside the home, the socket's folder is the admin's to open.
        std::fs::set_permissions(home.root(), std::fs::Permissions::from_mode(0o700)).unwrap();
        home.check_socket_reachable(&dir.path().join("backupd.sock"), 4242)
            .unwrap();
    }

    #[test]
    fn the_lock_is_exclusive_and_names_its_holder() {
        let (_dir, home) = home();
        home.prepare().unwrap();
        let held = home.lock().unwrap();
        let err = home.lock().unwrap_err();
        let expected = format!(
            "another backupd holds {} (pid {})",
            home.lock_file().display(),
            std::process::id()
        );
        assert_eq!(err.to_string(), expected);
        drop(held);
        home.lock().unwrap();
    }
}
