//! Key files a client names and the daemon reads for it: age recipients files (public keys,
//! at plan time) and identity files (secret keys, for `verify`/`restore`).
//!
//! The daemon may run as root, so a named path is hostile: it is opened without following
//! any symlink on the way (`RESOLVE_NO_SYMLINKS`), must be a regular file owned by the
//! requesting uid, the daemon's own uid or root; an identity file must not be readable by
//! group or others, a recipients file not writable by them. Errors name the path and never
//! quote the contents.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, FileType, Mode, OFlags, ResolveFlags};

use crate::format::{Identities, KeyError, Recipients};

/// The largest key file read: many recipients, far below anything that hurts.
const MAX_KEY_FILE: u64 = 1 << 20;

/// Why a key file was not used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{what} must be an absolute path: {path}")]
    NotAbsolute { what: &'static str, path: String },
    #[error("can't open {what} {path}: {source}")]
    Open {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {path} is not a regular file")]
    NotRegular { what: &'static str, path: PathBuf },
    #[error("{what} {path} is owned by uid {owner}: it must be yours or root's")]
    Owner {
        what: &'static str,
        path: PathBuf,
        owner: u32,
    },
    #[error("identity file {path} is readable by group or others (mode {mode:04o}): chmod 600 it")]
    Exposed { path: PathBuf, mode: u32 },
    #[error(
        "recipients file {path} may be written by group or others (mode {mode:04o}), who could put their own key in it: chmod go-w it"
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error("{what} {path} is larger than 1 MiB")]
    TooLarge { what: &'static str, path: PathBuf },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Who asked: the uids whose files are trusted for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester {
    /// The peer's uid (SO_PEERCRED), or the daemon's own for a scheduled run.
    pub uid: u32,
}

impl Requester {
    /// A run the daemon starts itself (a schedule).
    pub fn daemon() -> Self {
        Self {
            uid: rustix::process::geteuid().as_raw(),
        }
    }

    fn trusts(self, owner: u32) -> bool {
        owner == 0 || owner == self.uid || owner == rustix::process::geteuid().as_raw()
    }
}

/// The age identities of the file at `path` (absolute), checked as above.
pub fn read_identities(path: &str, requester: Requester) -> Result<Identities, KeyFileError> {
    let (path, text) = read_checked(path, "identity file", requester, true)?;
    Ok(Identities::parse(&text, &path.display().to_string())?)
}

/// The keys of the recipients file at `path` (absolute), checked as above (public keys: group
/// and others may read it).
pub fn read_recipients(path: &str, requester: Requester) -> Result<Vec<String>, KeyFileError> {
    let (path, text) = read_checked(path, "recipients file", requester, false)?;
    let keys = Recipients::lines_of_file(&text, &path.display().to_string())?;
    Ok(keys)
}

fn read_checked(
    path: &str,
    what: &'static str,
    requester: Requester,
    private: bool,
) -> Result<(PathBuf, String), KeyFileError> {
    if !path.starts_with('/') {
        return Err(KeyFileError::NotAbsolute {
            what,
            path: path.to_owned(),
        });
    }
    let path = Path::new(path).to_owned();
    let open_error = |source: io::Error| KeyFileError::Open {
        what,
        path: path.clone(),
        source,
    };
    // NONBLOCK: a FIFO planted under the name must not hang the daemon before the type check.
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = rustix::fs::openat2(
        CWD,
        &path,
        flags,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| open_error(e.into()))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| open_error(e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(KeyFileError::NotRegular { what, path });
    }
    if !requester.trusts(stat.st_uid) {
        return Err(KeyFileError::Owner {
            what,
            path,
            owner: stat.st_uid,
        });
    }
    let mode = stat.st_mode & 0o7777;
    if private && mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed { path, mode });
    }
    // Whoever may write a recipients file decides who can read every later backup.
    if mode & 0o022 != 0 {
        return Err(KeyFileError::Writable { path, mode });
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(open_error)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge { what, path });
    }
    Ok((path, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn me() -> Requester {
        Requester::daemon()
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn identity_files_must_be_private_regular_and_not_links() {
        let dir = tempfile::tempdir().unwrap();
        let key = age::x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        let text = format!("# created\n{}\n", key.to_string().expose_secret());
        let path = dir.path().join("key.txt");
        write(&path, &text, 0o600);
        let path_text = path.display().to_string();
        assert!(read_identities(&path_text, me()).is_ok());

        write(&path, &text, 0o640);
        let err = read_identities(&path_text, me()).unwrap_err();
        assert!(
            err.to_string().contains("readable by group or others"),
            "{err}"
        );
        assert!(!err.to_string().contains("AGE-SECRET-KEY"));

        write(&path, &text, 0o600);
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(
            read_identities(&link.display().to_string(), me()),
            Err(KeyFileError::Open { .. })
        ));
        let linked_dir = dir.path().join("linked");
        std::os::unix::fs::symlink(dir.path(), &linked_dir).unwrap();
        let through = linked_dir.join("key.txt").display().to_string();
        assert!(matches!(
            read_identities(&through, me()),
            Err(KeyFileError::Open { .. })
        ));
        assert!(matches!(
            read_identities(&dir.path().display().to_string(), me()),
            Err(KeyFileError::NotRegular { .. })
        ));
        assert!(matches!(
            read_identities("key.txt", me()),
            Err(KeyFileError::NotAbsolute { .. })
        ));
    }

    #[test]
    fn a_recipients_file_others_may_write_is_refused() {
        // Another user wrote their own key into it, and the next backups were theirs to read.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recipients.txt");
        let key = age::x25519::Identity::generate().to_public().to_string();
        let path_text = path.display().to_string();
        write(&path, &format!("{key}\n"), 0o644);
        assert_eq!(
            read_recipients(&path_text, me()).unwrap(),
            std::slice::from_ref(&key)
        );
        for mode in [0o666, 0o664, 0o646] {
            write(&path, &format!("{key}\n"), mode);
            let err = read_recipients(&path_text, me()).unwrap_err();
            assert!(
                err.to_string()
                    .contains("may be written by group or others"),
                "{mode:o}: {err}"
            );
        }
    }

    #[test]
    fn a_file_of_another_uid_is_refused() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to give a file to another uid");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recipients.txt");
        let key = age::x25519::Identity::generate().to_public().to_string();
        write(&path, &format!("{key}\n"), 0o644);
        let path_text = path.display().to_string();
        assert_eq!(
            read_recipients(&path_text, Requester { uid: 4242 }).unwrap(),
            [key]
        );
        std::os::unix::fs::chown(&path, Some(4243), None).unwrap();
        let err = read_recipients(&path_text, Requester { uid: 4242 }).unwrap_err();
        assert!(
            matches!(err, KeyFileError::Owner { owner: 4243, .. }),
            "{err}"
        );
    }
}
