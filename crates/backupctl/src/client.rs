//! A connection to the daemon: send a request line, read the response line.

use proto::{EventLine, Incoming, Request, Response};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the socket: the daemon is not running (or elsewhere).
    #[error("can't reach backupd at {}: {source}", socket.display())]
    Unreachable { socket: PathBuf, source: io::Error },
    /// The socket (or a folder on the way, `shut`) is there but this user may not open it: a
    /// daemon may well be running, for other users.
    #[error(
        "may not use backupd's socket {}: {source}; {}, or use a daemon of your own with \
         --home or --socket",
        socket.display(),
        forbidden_advice(shut.as_deref())
    )]
    Forbidden {
        socket: PathBuf,
        source: io::Error,
        shut: Option<PathBuf>,
    },
    /// The daemon answered, then the exchange broke.
    #[error("lost the connection to backupd: {0}")]
    Broken(io::Error),
    #[error("backupd closed the connection without answering")]
    NoAnswer,
    /// Connected, but no answer came in time: a stopped (SIGSTOP) or hung daemon.
    #[error(
        "backupd at {} did not answer within {}s: is it stopped or hung? (give it longer with \
         BACKUPCTL_ANSWER_TIMEOUT=SECONDS)",
        socket.display(),
        waited.as_secs()
    )]
    Silent { socket: PathBuf, waited: Duration },
    #[error("BACKUPCTL_ANSWER_TIMEOUT must be a whole number of seconds above 0, not {0:?}")]
    BadAnswerTimeout(String),
    #[error("backupd sent an unreadable answer ({error}): {line}")]
    BadAnswer {
        line: String,
        error: serde_json::Error,
    },
}

/// What a user turned away at the socket can ask for: the way in, or the group.
fn forbidden_advice(shut: Option<&Path>) -> String {
    match shut {
        // Membership of the group would not help: the folder keeps everyone out.
        Some(folder) => format!(
            "this user may not enter {}, on the way to it: ask the daemon's administrator to \
             open it to the socket_group",
            folder.display()
        ),
        None => "this user is not allowed to connect to it: ask the daemon's administrator to \
                 add you to its socket_group"
            .to_owned(),
    }
}

/// The first folder on the way to `socket` this user may not pass through, if any.
fn first_shut_folder(socket: &Path) -> Option<PathBuf> {
    let mut folders: Vec<&Path> = socket.ancestors().skip(1).collect();
    folders.reverse();
    folders
        .into_iter()
        .filter(|folder| !folder.as_os_str().is_empty())
        .find(|folder| rustix::fs::access(*folder, rustix::fs::Access::EXEC_OK).is_err())
        .map(Path::to_path_buf)
}

/// A response and the exact line it came in, for `--json`.
#[derive(Debug)]
pub struct Answer {
    pub response: Response,
    pub line: String,
}

#[derive(Debug)]
pub struct Connection {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket: PathBuf,
    /// How long to wait for each line, if not for ever.
    patience: Option<Duration>,
}

impl Connection {
    pub fn open(socket: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| {
            let socket = socket.to_path_buf();
            if source.kind() == io::ErrorKind::PermissionDenied {
                let shut = first_shut_folder(&socket);
                ClientError::Forbidden {
                    socket,
                    source,
                    shut,
                }
            } else {
                ClientError::Unreachable { socket, source }
            }
        })?;
        let writer = stream.try_clone().map_err(ClientError::Broken)?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
            socket: socket.to_path_buf(),
            patience: None,
        })
    }

    /// Waits at most `patience` for each line from now on.
    pub fn with_patience(self, patience: Duration) -> Result<Self, ClientError> {
        (self.reader.get_ref())
            .set_read_timeout(Some(patience))
            .map_err(ClientError::Broken)?;
        Ok(Self {
            patience: Some(patience),
            ..self
        })
    }

    /// Sends one request and waits for its response.
    pub fn request(&mut self, request: &Request) -> Result<Answer, ClientError> {
        self.request_with_events(request, |_| {})
    }

    /// Sends one request, hands each event line to `on_event`, and returns the response.
    pub fn request_with_events(
        &mut self,
        request: &Request,
        mut on_event: impl FnMut(EventLine),
    ) -> Result<Answer, ClientError> {
        if let Err(failed) = self.send(request) {
            // A daemon that turned the connection away may have said why before closing.
            return match self.next_line() {
                Ok((Incoming::Response(response), line)) => Ok(Answer { response, line }),
                _ => Err(failed),
            };
        }
        loop {
            match self.next_line()? {
                (Incoming::Event(event), _) => on_event(event),
                (Incoming::Response(response), line) => return Ok(Answer { response, line }),
            }
        }
    }

    /// Sends one request line; read what comes back with [`Self::next_line`].
    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        self.writer
            .write_all(request.to_line().as_bytes())
            .map_err(ClientError::Broken)
    }

    /// The next line from the daemon, read and as it came.
    pub fn next_line(&mut self) -> Result<(Incoming, String), ClientError> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Silent {
                    socket: self.socket.clone(),
                    waited: self.patience.unwrap_or_default(),
                },
                _ => ClientError::Broken(e),
            })?;
        if read == 0 {
            return Err(ClientError::NoAnswer);
        }
        let line = line.trim_end().to_owned();
        match Incoming::parse(&line) {
            Ok(incoming) => Ok((incoming, line)),
            Err(error) => Err(ClientError::BadAnswer { line, error }),
        }
    }

    /// Waits until the daemon closes this connection (it does so as it shuts down).
    pub fn wait_closed(&mut self) -> io::Result<()> {
        let mut sink = Vec::new();
        io::copy(&mut self.reader, &mut sink).map(drop)
    }
}

/// One request on a fresh connection.
pub fn call(socket: &Path, request: &Request) -> Result<Answer, ClientError> {
    Connection::open(socket)?.request(request)
}

/// How long to wait for the answer to a request the daemon answers at once (`status`,
/// `list`, …): `BACKUPCTL_ANSWER_TIMEOUT` seconds, else (unset or empty) a minute. A value
/// that is not a number of seconds is an error, not a minute: `abc` or `-1` was a typo.
pub fn answer_patience() -> Result<Duration, ClientError> {
    let text = std::env::var_os("BACKUPCTL_ANSWER_TIMEOUT").unwrap_or_default();
    let text = text.to_string_lossy();
    if text.trim().is_empty() {
        return Ok(Duration::from_secs(60));
    }
    match text.trim().parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(ClientError::BadAnswerTimeout(text.into_owned())),
    }
}

/// [`call`] for a request answered at once: a daemon that does not answer within
/// [`answer_patience`] is taken for gone.
pub fn call_answered_at_once(socket: &Path, request: &Request) -> Result<Answer, ClientError> {
    Connection::open(socket)?
        .with_patience(answer_patience()?)?
        .request(request)
}
