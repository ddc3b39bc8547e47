//! Claims the daemon's Unix socket: refuses if a live daemon answers there, removes the file of
//! a dead one, and binds a new socket that only its owner may use (mode 0600).

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

/// Binds the socket at `path` after making sure no other daemon owns it.
pub fn claim(path: &Path) -> Result<(UnixListener, Previous), BindError> {
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
    Ok((listener, previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_socket_is_refused_and_a_dead_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let (live, previous) = claim(&path).unwrap();
        assert_eq!(previous, Previous::Nothing);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(claim(&path), Err(BindError::AlreadyRunning(_))));
        drop(live); // the file stays, nobody answers
        assert!(path.exists());
        let (_again, previous) = claim(&path).unwrap();
        assert_eq!(previous, Previous::RemovedStale);
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
