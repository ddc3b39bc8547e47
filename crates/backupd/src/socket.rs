//! Claims the daemon's Unix socket: refuses if a live daemon answers there, removes the file of
//! a dead one, and binds a new socket that only its owner may use (mode 0600; 0660 with a
//! `socket_group`, whose members the peer check admits too). Or takes the
//! listening socket a service manager passed (socket activation, `LISTEN_FDS`). A [`Listener`]
//! remembers whether backupd made the socket file, since only then is it backupd's to remove.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
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
    /// Wraps a listening socket that backupd did not create, once it is known to be a Unix
    /// stream socket that listens.
    pub fn inherited(socket: UnixListener) -> Result<Self, InheritError> {
        check_listening_unix_stream(&socket)?;
        socket.set_nonblocking(true).map_err(InheritError::Io)?;
        Ok(Self {
            socket,
            source: ListenerSource::Inherited,
        })
    }
}

/// A socket-activation environment backupd cannot serve from.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    #[error("invalid {name}={value:?} from the service manager")]
    BadVariable { name: &'static str, value: String },
    #[error("the service manager passed {0} sockets; backupd listens on exactly one")]
    TooMany(u32),
    #[error("the socket passed by the service manager is not a Unix stream socket: {0}")]
    NotUnixStream(String),
    #[error(
        "the socket passed by the service manager does not listen (a connection, as with \
         Accept=yes?); backupd needs a listening socket (Accept=no)"
    )]
    NotListening,
    #[error("can't use the socket passed by the service manager: {0}")]
    Io(io::Error),
}

/// What the socket-activation variables (sd_listen_fds(3)) ask of the process `own_pid`.
#[derive(Debug, PartialEq, Eq)]
enum Activation {
    /// Not started by a socket unit (or the sockets were meant for another process, which is
    /// how systemd's own `sd_listen_fds` reads a `LISTEN_PID` that is not ours): bind.
    None,
    /// One listening socket at fd 3 (`SD_LISTEN_FDS_START`) is ours.
    One,
}

fn activation(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    own_pid: u32,
) -> Result<Activation, InheritError> {
    let (Some(pid), Some(fds)) = (listen_pid, listen_fds) else {
        return Ok(Activation::None);
    };
    let parse = |name, value: &str| {
        value.parse::<u32>().map_err(|_| InheritError::BadVariable {
            name,
            value: value.to_owned(),
        })
    };
    if parse("LISTEN_PID", pid)? != own_pid {
        return Ok(Activation::None);
    }
    match parse("LISTEN_FDS", fds)? {
        0 => Ok(Activation::None),
        1 => Ok(Activation::One),
        n => Err(InheritError::TooMany(n)),
    }
}

/// The listening socket passed by a service manager, if this process was socket-activated.
///
/// Call it before any other thread starts: `listenfd` clears `LISTEN_PID` and `LISTEN_FDS`
/// from the environment (so that no child of ours reads them), which is only sound while the
/// process is single-threaded. `LISTEN_FDNAMES` stays, since removing it ourselves would need
/// `unsafe`; without the other two it names nothing, and backupd starts no child processes.
pub fn take_inherited() -> Result<Option<Listener>, InheritError> {
    let var = |name| std::env::var(name).ok();
    let wanted = activation(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        std::process::id(),
    )?;
    if wanted == Activation::None {
        return Ok(None);
    }
    // listenfd checks that fd 3 is a Unix stream socket and makes it close-on-exec.
    let socket = listenfd::ListenFd::from_env()
        .take_unix_listener(0)
        .map_err(|e| InheritError::NotUnixStream(e.to_string()))?
        .ok_or_else(|| InheritError::NotUnixStream("no socket at fd 3".to_owned()))?;
    Listener::inherited(socket).map(Some)
}

/// A socket backupd can serve from: a Unix stream socket in the listening state.
fn check_listening_unix_stream(socket: &impl AsFd) -> Result<(), InheritError> {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let not_stream = |what: &str| InheritError::NotUnixStream(what.to_owned());
    let domain = sockopt::socket_domain(socket).map_err(|e| {
        if e == rustix::io::Errno::NOTSOCK {
            not_stream("not a socket")
        } else {
            InheritError::Io(e.into())
        }
    })?;
    if domain != AddressFamily::UNIX {
        return Err(not_stream("not a Unix socket"));
    }
    let kind = sockopt::socket_type(socket).map_err(|e| InheritError::Io(e.into()))?;
    if kind != SocketType::STREAM {
        return Err(not_stream("not a stream socket"));
    }
    if !sockopt::socket_acceptconn(socket).map_err(|e| InheritError::Io(e.into()))? {
        return Err(InheritError::NotListening);
    }
    Ok(())
}

/// Binds the socket at `path` after making sure no other daemon owns it.
pub fn claim(path: &Path) -> Result<Listener, BindError> {
    claim_for(path, None)
}

/// As [`claim`]; with `group`, the socket file belongs to that gid and its members may
/// connect (mode 0660). Mode and group are set between bind and listen, so no connection can
/// arrive while the file is still open to anyone else.
pub fn claim_for(path: &Path, group: Option<u32>) -> Result<Listener, BindError> {
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
    let listener = bind_and_listen(path, group).map_err(|e| match e.kind() {
        // Another daemon bound it between our probe and our bind.
        io::ErrorKind::AddrInUse => BindError::AlreadyRunning(path.to_path_buf()),
        _ => io_err(e),
    })?;
    listener.set_nonblocking(true).map_err(io_err)?;
    Ok(Listener {
        socket: listener,
        source: ListenerSource::Bound {
            path: path.to_path_buf(),
            previous,
        },
    })
}

/// Pending connections the kernel holds while the accept loop catches up.
const BACKLOG: i32 = 128;

/// A listening socket at `path`, mode 0600, or 0660 and owned by `group`.
fn bind_and_listen(path: &Path, group: Option<u32>) -> io::Result<UnixListener> {
    use rustix::fs::{Gid, Mode, chmod, chown};
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&socket, &SocketAddrUnix::new(path)?)?;
    let prepared = (|| {
        chmod(path, Mode::from_raw_mode(0o600))?;
        if let Some(gid) = group {
            chown(path, None, Some(Gid::from_raw(gid)))?;
            chmod(path, Mode::from_raw_mode(0o660))?;
        }
        rustix::net::listen(&socket, BACKLOG)
    })();
    if let Err(e) = prepared {
        // Ours, and never listened on: leave no file behind.
        let _ = std::fs::remove_file(path);
        return Err(e.into());
    }
    Ok(UnixListener::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
    fn an_inherited_socket_must_be_a_listening_unix_stream_socket() {
        use std::os::fd::OwnedFd;
        let dir = tempfile::tempdir().unwrap();
        // std turns any owned fd into a UnixListener; only the check stands between a wrong
        // socket from the service manager and an accept loop that fails forever.
        let as_listener = |fd: OwnedFd| UnixListener::from(fd);

        let (connected, _peer) = UnixStream::pair().unwrap();
        let err = Listener::inherited(as_listener(connected.into())).unwrap_err();
        assert!(matches!(err, InheritError::NotListening), "{err}");
        assert!(err.to_string().contains("Accept=no"), "{err}");

        let bound = rustix::net::socket(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            None,
        )
        .unwrap();
        let address = rustix::net::SocketAddrUnix::new(dir.path().join("bound.sock")).unwrap();
        rustix::net::bind(&bound, &address).unwrap();
        let err = Listener::inherited(as_listener(bound)).unwrap_err();
        assert!(matches!(err, InheritError::NotListening), "{err}");

        let datagram = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let err = Listener::inherited(as_listener(datagram.into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the socket passed by the service manager is not a Unix stream socket: not a \
             stream socket"
        );

        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = Listener::inherited(as_listener(tcp.into())).unwrap_err();
        assert!(err.to_string().ends_with("not a Unix socket"), "{err}");

        let file = std::fs::File::create(dir.path().join("plain")).unwrap();
        let err = Listener::inherited(as_listener(file.into())).unwrap_err();
        assert!(err.to_string().ends_with("not a socket"), "{err}");

        let listening = UnixListener::bind(dir.path().join("listening.sock")).unwrap();
        assert!(Listener::inherited(listening).is_ok());
    }

    #[test]
    fn the_activation_variables_are_read_as_sd_listen_fds_does() {
        assert_eq!(activation(None, None, 7).unwrap(), Activation::None);
        assert_eq!(activation(None, Some("1"), 7).unwrap(), Activation::None);
        assert_eq!(
            activation(Some("7"), Some("1"), 7).unwrap(),
            Activation::One
        );
        // Meant for another process (we inherited them from a parent that was activated).
        assert_eq!(
            activation(Some("8"), Some("1"), 7).unwrap(),
            Activation::None
        );
        assert_eq!(
            activation(Some("7"), Some("0"), 7).unwrap(),
            Activation::None
        );
        assert!(matches!(
            activation(Some("7"), Some("2"), 7),
            Err(InheritError::TooMany(2))
        ));
        let err = activation(Some("seven"), Some("1"), 7).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid LISTEN_PID=\"seven\" from the service manager"
        );
        assert!(matches!(
            activation(Some("7"), Some("x"), 7),
            Err(InheritError::BadVariable {
                name: "LISTEN_FDS",
                ..
            })
        ));
    }

    #[test]
    fn a_socket_group_gets_the_file_and_read_write_access() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sock");
        // A group the process has, so that chown works without privileges.
        let gid = rustix::process::getegid().as_raw();
        let listener = claim_for(&path, Some(gid)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), gid);
        assert!(UnixStream::connect(&path).is_ok());
        drop(listener);
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
