//! The accept loop and the connections: each connection carries any number of request lines,
//! answered in order; connections are served concurrently up to a limit; shutdown stops
//! accepting, lets requests in progress finish, and waits (bounded) for the connections.

use crate::admission::{Admission, Limits, Slot, Ticket};
use crate::events::EVENT_BUFFER;
use crate::handlers;
use crate::line_reader::{Budget, LineReader, ReadError, Timeouts};
use crate::peer::Access;
use crate::state::Daemon;
use proto::{Command, ErrorCode, Frame, Request, Response};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for open connections to finish their current request (a run's,
/// cancelled: its hooks included).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const _: () = assert!(SHUTDOWN_GRACE.as_secs() > crate::hooks::LONGEST_AT_STOP.as_secs());

/// How long a connection in a reserved slot has to send its one request.
const RESERVED_TIMEOUT: Duration = Duration::from_secs(2);

/// How the daemon treats connections: who may connect, how many, and how long they may take.
#[derive(Debug, Clone)]
pub struct Settings {
    pub access: Access,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Bytes of unfinished request lines all connections together may hold.
    pub budget_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            access: Access::own_user(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            budget_bytes: Budget::DEFAULT_BYTES,
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
struct Edge {
    access: Access,
    timeouts: Timeouts,
    budget: Budget,
    write_timeout: Duration,
}

/// Serves until `daemon.shutdown` is cancelled, then drains the connections.
pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>, settings: Settings) {
    let connections = TaskTracker::new();
    let admission = Admission::new(settings.limits);
    let edge = Arc::new(Edge {
        access: settings.access,
        timeouts: settings.timeouts,
        budget: Budget::new(settings.budget_bytes),
        write_timeout: WRITE_TIMEOUT,
    });
    let mut refusals = RefusalLog::default();
    loop {
        // Always accept: a full daemon answers at once rather than leaving clients in the
        // kernel's backlog.
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = daemon.shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::error!("can't accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(cred) = stream.peer_cred() else {
            tracing::debug!("dropped a connection whose peer is unknown");
            continue;
        };
        let peer = Peer {
            uid: cred.uid(),
            pid: cred.pid().and_then(|pid| u32::try_from(pid).ok()),
        };
        match admission.admit(peer.uid, edge.access.is_privileged(peer.uid)) {
            Ok(ticket) => {
                let daemon = Arc::clone(&daemon);
                let edge = Arc::clone(&edge);
                connections.spawn(async move {
                    serve_connection(stream, &daemon, &edge, ticket, peer).await;
                });
            }
            Err(full) => {
                refusals.note(&full);
                turn_away(&stream, &full);
            }
        }
    }
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connection(s) still open after {SHUTDOWN_GRACE:?}; closing them",
            connections.len()
        );
    }
}

/// The connecting process, as the kernel saw it at connect time (SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: u32,
    pid: Option<u32>,
}

/// Logs turned-away connections without letting a flood of them flood the log.
#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    unlogged: u64,
}

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, full: &crate::admission::Full) {
        let due = self.last.is_none_or(|last| last.elapsed() >= Self::EVERY);
        if due {
            let more = match self.unlogged {
                0 => String::new(),
                n => format!(" ({n} more turned away since the last report)"),
            };
            tracing::warn!("turned a connection away: {full}{more}");
            self.last = Some(std::time::Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
    }
}

/// Tells a connection there is no room for it, without waiting: the line fits in an empty
/// socket buffer, and a client that cannot take it gets nothing.
fn turn_away(stream: &UnixStream, full: &crate::admission::Full) {
    let answer = Response::failure(
        None,
        ErrorCode::TooManyConnections,
        format!("{full}; try again later"),
    );
    let _ = stream.try_write(answer.to_line().as_bytes());
    // Closing with unread input would reset the connection, and the client would lose the
    // answer: take what it has sent already (a request is usually there), within a bound.
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Answers the connection's requests in order until the client closes, stays silent too long,
/// leaves a line unfinished too long, a write fails or times out, or shutdown. A connection in
/// a reserved slot answers one short request only.
async fn serve_connection(
    stream: UnixStream,
    daemon: &Daemon,
    edge: &Edge,
    ticket: Ticket,
    peer: Peer,
) {
    let refused = edge
        .access
        .check(peer.uid, peer.pid, Path::new("/proc"))
        .err();
    let (read, write) = stream.into_split();
    let mut write = LineWriter {
        write,
        timeout: edge.write_timeout,
    };
    let mut lines = LineReader::new(read, edge.budget.clone());
    if let Some(refusal) = refused {
        refuse(lines, &mut write, daemon, refusal).await;
        return;
    }
    let reserved = ticket.slot() == Slot::Reserved;
    let timeouts = if reserved {
        Timeouts {
            idle: RESERVED_TIMEOUT,
            line: RESERVED_TIMEOUT,
        }
    } else {
        edge.timeouts
    };
    loop {
        let frame = tokio::select! {
            frame = lines.next(timeouts) => frame,
            () = daemon.shutdown.cancelled() => break,
        };
        let response = match frame {
            Ok(None) => break,
            Err(ReadError::Io(e)) => {
                tracing::debug!("connection read failed: {e}");
                break;
            }
            Err(idle @ ReadError::Idle(_)) => {
                tracing::debug!("closing a quiet connection: {idle}");
                break;
            }
            Err(slow @ ReadError::LineTimeout(_)) => {
                let message = format!("{slow}; closing the connection");
                tracing::error!("bad request: {message}");
                let answer = Response::failure(None, ErrorCode::RequestTimeout, message);
                let _ = write.send(&answer.to_line()).await;
                break;
            }
            Ok(Some(Frame::TooLong)) => {
                let message = format!(
                    "request line longer than {} bytes; the rest of it is skipped",
                    proto::MAX_LINE_BYTES
                );
                tracing::error!("bad request: {message}");
                Response::failure(None, ErrorCode::RequestTooLarge, message).to_line()
            }
            Ok(Some(Frame::Line(line))) if reserved && !fits_a_reserved_slot(&line) => {
                Response::failure(
                    Request::parse(&line).ok().and_then(|r| r.id),
                    ErrorCode::TooManyConnections,
                    "the daemon is at its connection limit; only hello, status, jobs, list, \
                     cancel, log_level and stop are served until connections end",
                )
                .to_line()
            }
            Ok(Some(Frame::Line(line))) => {
                match answer_with_events(daemon, &line, &mut write, peer.uid).await {
                    Some(response) => response,
                    None => break,
                }
            }
        };
        // A script that reads the log after a command finds the command's lines there.
        crate::log::flushed().await;
        if let Err(e) = write.send(&response).await {
            tracing::debug!("client went away before its answer: {e}");
            break;
        }
        if reserved {
            break;
        }
    }
    drop(ticket);
}

/// Requests that end at once and never stream: what a reserved slot is for. Anything that
/// does not parse is answered with its own error as usual.
fn fits_a_reserved_slot(line: &[u8]) -> bool {
    match Request::parse(line) {
        Ok(request) => matches!(
            request.command,
            Command::Hello {}
                | Command::Status {}
                | Command::Jobs {}
                | Command::List {}
                | Command::Cancel { .. }
                | Command::LogLevel { .. }
                | Command::Stop {}
        ),
        Err(_) => true,
    }
}

/// Runs the request's handler while writing the event lines it sends. If the client goes
/// away, or stops reading for the write timeout, the connection stops taking events (a
/// `watch` ends there) but any other handler runs to the end (a backup is not abandoned, and
/// a stalled client does not hold a job slot); `None` says the answer has nobody to go to.
async fn answer_with_events(
    daemon: &Daemon,
    line: &[u8],
    write: &mut LineWriter,
    peer_uid: u32,
) -> Option<String> {
    let (events, pending) = mpsc::channel(EVENT_BUFFER);
    let requester = crate::key_files::Requester { uid: peer_uid };
    let handler = handlers::handle_line(daemon, line, events, requester);
    tokio::pin!(handler);
    // `None` once the client is gone: senders then fail at once instead of waiting for room.
    let mut pending = Some(pending);
    let mut hangup_check = tokio::time::interval(HANGUP_CHECK);
    hangup_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let response = loop {
        tokio::select! {
            response = &mut handler => break response,
            Some(event) = next_event(&mut pending) => {
                if write.send(&event).await.is_err() {
                    pending = None;
                }
            }
            // A quiet watch writes nothing that could fail: look for the hang-up itself.
            _ = hangup_check.tick(), if pending.is_some() => {
                if write.peer_hung_up() {
                    pending = None;
                }
            }
        }
    };
    // Events queued just before the handler returned still precede the response.
    if let Some(queued) = &mut pending {
        while let Ok(event) = queued.try_recv() {
            if write.send(&event).await.is_err() {
                pending = None;
                break;
            }
        }
    }
    pending.is_some().then_some(response)
}

/// The next event line to write; never resolves once the client is gone.
async fn next_event(pending: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match pending {
        Some(pending) => pending.recv().await,
        None => std::future::pending().await,
    }
}

/// How often a long request looks whether its client has closed the connection.
const HANGUP_CHECK: Duration = Duration::from_secs(1);

/// How long one line, an event or an answer, may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The sending half of a connection. Every line is written within a timeout, so that a client
/// that stops reading never holds its connection task (nor its connection slot).
struct LineWriter {
    write: OwnedWriteHalf,
    timeout: Duration,
}

impl LineWriter {
    /// Whether the client has closed the connection (not merely its sending half, as
    /// `socat` does at the end of its input): the socket reports a hang-up.
    fn peer_hung_up(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let stream: &UnixStream = self.write.as_ref();
        let mut fds = [PollFd::new(stream, PollFlags::empty())];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&now)).is_ok_and(|ready| {
            ready > 0 && fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR)
        })
    }

    /// Writes one whole line; an error if the client is gone or did not take it in time.
    async fn send(&mut self, line: &str) -> std::io::Result<()> {
        tokio::time::timeout(self.timeout, self.write.write_all(line.as_bytes()))
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client read nothing for {:?}", self.timeout),
                ))
            })
    }
}

/// How long a refused client has to send its request line before it is answered anyway.
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers a refused client with `permission_denied`, then closes. Its request line is read
/// first: closing while the client is still writing would fail its write (EPIPE) before it
/// could read why it was refused.
async fn refuse(
    mut lines: LineReader<OwnedReadHalf>,
    write: &mut LineWriter,
    daemon: &Daemon,
    refusal: String,
) {
    tracing::error!("{refusal}");
    let patience = Timeouts {
        idle: REFUSAL_READ_TIMEOUT,
        line: REFUSAL_READ_TIMEOUT,
    };
    let first = tokio::select! {
        first = lines.next(patience) => first.ok().flatten(),
        () = daemon.shutdown.cancelled() => None,
    };
    let id = match first {
        // Only the id is taken from the request; nothing in it is acted on.
        Some(Frame::Line(line)) => match Request::parse(&line) {
            Ok(request) => request.id,
            Err(err) => err.id,
        },
        _ => None,
    };
    let answer = Response::failure(id, ErrorCode::PermissionDenied, refusal);
    crate::log::flushed().await;
    let _ = write.send(&answer.to_line()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one end of a socket pair as the daemon would serve a connection of its own user.
    async fn serve_pair_end(stream: UnixStream, daemon: &Daemon, write_timeout: Duration) {
        let edge = Edge {
            access: Access::own_user(),
            timeouts: Timeouts::default(),
            budget: Budget::default(),
            write_timeout,
        };
        let ticket = Admission::new(Limits::default())
            .admit(0, true)
            .expect("an empty daemon has room");
        let peer = Peer {
            uid: edge.access.own_uid,
            pid: None,
        };
        serve_connection(stream, daemon, &edge, ticket, peer).await;
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_does_not_hold_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::in_test_home(dir.path());
        let (client, server) = UnixStream::pair().unwrap();
        // The answer names the schedule not found, so it is larger than the socket buffers:
        // its write can only end by the timeout, since the client never reads.
        let name = "x".repeat(proto::MAX_LINE_BYTES - 100);
        let request = format!("{{\"cmd\":\"delete\",\"name\":\"{name}\"}}\n");
        let (_unread, mut client_write) = client.into_split();
        let send = async { client_write.write_all(request.as_bytes()).await.unwrap() };
        let connection = tokio::time::timeout(
            Duration::from_secs(60),
            serve_pair_end(server, &daemon, Duration::from_millis(50)),
        );
        let (served, ()) = tokio::join!(connection, send);
        assert!(
            served.is_ok(),
            "the connection waited for the client to read"
        );
    }

    #[tokio::test]
    async fn a_quiet_watch_ends_when_its_client_closes_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::in_test_home(dir.path());
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"{\"cmd\":\"watch\"}\n").await.unwrap();
        // No event ever comes: only the hang-up can end the watch.
        drop(client);
        let connection = tokio::time::timeout(
            Duration::from_secs(60),
            serve_pair_end(server, &daemon, WRITE_TIMEOUT),
        )
        .await;
        assert!(connection.is_ok(), "the watch outlived its client");
    }
}
