//! Claims the daemon's Unix socket: refuses if a live daemon answers there, removes the file of
//! a dead one, and binds a new socket that only its owner may use (mode 0600). A [`Listener`]
//! remembers whether backupd made the socket file, since only then is it backupd's to remove.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("backupd already running (socket {})", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("can't listen on {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// What [`claim`] found and did at the socket path before binding.
#[derive(Debug, PartialEq, Eq)]
pub enum Previous {
    Nothing,
    /// A socket file nobody answered on; it was removed.
    RemovedStale,
}

/// Where the listening socket came from, which decides who removes its file.
#[derive(Debug, PartialEq, Eq)]
pub enum ListenerSource {
    /// backupd bound the socket file at `path`, so it removes it at shutdown.
    Bound { path: PathBuf, previous: Previous },
    /// A listening socket handed over by a service manager (socket activation). Its file
    /// belongs to the manager, which keeps listening on it while backupd is down.
    Inherited,
}

/// A socket file backupd created that it could not remove.
#[derive(Debug, thiserror::Error)]
#[error("can't remove socket {}: {source}", path.display())]
pub struct RemoveError {
    pub path: PathBuf,
    pub source: io::Error,
}

impl ListenerSource {
    /// Removes the socket file if backupd bound it; an inherited socket's file is left alone.
    pub fn remove_own_file(&self) -> Result<(), RemoveError> {
        match self {
            Self::Bound { path, .. } => std::fs::remove_file(path).map_err(|source| RemoveError {
                path: path.clone(),
                source,
            }),
            Self::Inherited => Ok(()),
        }
    }
}

/// The daemon's listening socket (non-blocking, ready for the runtime) and where it came from.
#[derive(Debug)]
pub struct Listener {
    pub socket: UnixListener,
    pub source: ListenerSource,
}

impl Listener {
    /// Wraps a listening socket that backupd did not create.
    pub fn inherited(socket: UnixListener) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            source: ListenerSource::Inherited,
        })
    }
}

/// Binds the socket at `path` after making sure no other daemon owns it.
pub fn claim(path: &Path) -> Result<Listener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    let previous = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Previous::Nothing,
        Err(e) => return Err(io_err(e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket(path.to_path_buf()));
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(BindError::AlreadyRunning(path.to_path_buf())),
            Err(_) => {
                std::fs::remove_file(path).map_err(io_err)?;
                Previous::RemovedStale
            }
        },
    };
    let listener = match UnixListener::bind(path) {
        Ok(listener) => listener,
        // Another daemon bound it between our probe and our bind.
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            return Err(BindError::AlreadyRunning(path.to_path_buf()));
        }
        Err(e) => return Err(io_err(e)),
    };
    // Connections are also checked by peer uid, which covers the instant before this chmod.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    listener.set_nonblocking(true).map_err(io_err)?;
    Ok(Listener {
        socket: listener,
        source: ListenerSource::Bound {
            path: path.to_path_buf(),
            previous,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_socket_is_refused_and_a_dead_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let live = claim(&path).unwrap();
        assert_eq!(
            live.source,
            ListenerSource::Bound {
                path: path.clone(),
                previous: Previous::Nothing
            }
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(claim(&path), Err(BindError::AlreadyRunning(_))));
        drop(live); // the file stays, nobody answers
        assert!(path.exists());
        let again = claim(&path).unwrap();
        assert!(matches!(
            again.source,
            ListenerSource::Bound {
                previous: Previous::RemovedStale,
                ..
            }
        ));
    }

    #[test]
    fn only_a_socket_backupd_bound_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.sock");
        let bound = claim(&ours).unwrap();
        bound.source.remove_own_file().unwrap();
        assert!(!ours.exists());

        let theirs = dir.path().join("theirs.sock");
        let inherited = Listener::inherited(UnixListener::bind(&theirs).unwrap()).unwrap();
        inherited.source.remove_own_file().unwrap();
        assert!(theirs.exists(), "the service manager's socket file stays");
    }

    #[test]
    fn a_regular_file_in_the_way_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(claim(&path), Err(BindError::NotASocket(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
