//! A connection to the daemon: send a request line, read the response line.

use proto::{EventLine, Incoming, Request, Response};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Why talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the socket: the daemon is not running (or elsewhere).
    #[error("can't reach backupd at {}: {source}", socket.display())]
    Unreachable { socket: PathBuf, source: io::Error },
    /// The daemon answered, then the exchange broke.
    #[error("lost the connection to backupd: {0}")]
    Broken(io::Error),
    #[error("backupd closed the connection without answering")]
    NoAnswer,
    #[error("backupd sent an unreadable answer ({error}): {line}")]
    BadAnswer {
        line: String,
        error: serde_json::Error,
    },
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
}

impl Connection {
    pub fn open(socket: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::Unreachable {
            socket: socket.to_path_buf(),
            source,
        })?;
        let writer = stream.try_clone().map_err(ClientError::Broken)?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
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
            .map_err(ClientError::Broken)?;
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
