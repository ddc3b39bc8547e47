//! The accept loop and the connections: each connection carries any number of request lines,
//! answered in order; connections are served concurrently up to a limit; shutdown stops
//! accepting, lets requests in progress finish, and waits (bounded) for the connections.

use crate::events::EVENT_BUFFER;
use crate::handlers;
use crate::state::Daemon;
use futures_util::StreamExt;
use proto::{ErrorCode, Frame, LineCodec, Request, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::FramedRead;
use tokio_util::task::TaskTracker;

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 512;
/// How long shutdown waits for open connections to finish their current request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves until `daemon.shutdown` is cancelled, then drains the connections.
pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>) {
    let connections = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = daemon.shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = daemon.shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let daemon = Arc::clone(&daemon);
                connections.spawn(async move {
                    serve_connection(stream, &daemon, WRITE_TIMEOUT).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::error!("can't accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
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

/// Answers the connection's requests in order until the client closes, a write fails or
/// times out after `write_timeout`, or shutdown.
async fn serve_connection(stream: UnixStream, daemon: &Daemon, write_timeout: Duration) {
    let refused = check_peer(&stream).err();
    let (read, write) = stream.into_split();
    let mut write = LineWriter {
        write,
        timeout: write_timeout,
    };
    if let Some(refusal) = refused {
        refuse(read, &mut write, daemon, refusal).await;
        return;
    }
    let mut frames = FramedRead::new(read, LineCodec::new());
    loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            () = daemon.shutdown.cancelled() => break,
        };
        let response = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!("connection read failed: {e}");
                break;
            }
            Some(Ok(Frame::TooLong)) => {
                let message = format!(
                    "request line longer than {} bytes; the rest of it is skipped",
                    proto::MAX_LINE_BYTES
                );
                tracing::error!("bad request: {message}");
                Response::failure(None, ErrorCode::RequestTooLarge, message)
            }
            Some(Ok(Frame::Line(line))) => {
                match answer_with_events(daemon, &line, &mut write).await {
                    Some(response) => response,
                    None => break,
                }
            }
        };
        // A script that reads the log after a command finds the command's lines there.
        crate::log::flushed().await;
        if let Err(e) = write.send(&response.to_line()).await {
            tracing::debug!("client went away before its answer: {e}");
            break;
        }
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
) -> Option<Response> {
    let (events, pending) = mpsc::channel(EVENT_BUFFER);
    let handler = handlers::handle_line(daemon, line, events);
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
async fn refuse(read: OwnedReadHalf, write: &mut LineWriter, daemon: &Daemon, refusal: String) {
    tracing::error!("{refusal}");
    let mut frames = FramedRead::new(read, LineCodec::new());
    let first = tokio::select! {
        first = tokio::time::timeout(REFUSAL_READ_TIMEOUT, frames.next()) => first.ok().flatten(),
        () = daemon.shutdown.cancelled() => None,
    };
    let id = match first {
        // Only the id is taken from the request; nothing in it is acted on.
        Some(Ok(Frame::Line(line))) => match Request::parse(&line) {
            Ok(request) => request.id,
            Err(err) => err.id,
        },
        _ => None,
    };
    let answer = Response::failure(id, ErrorCode::PermissionDenied, refusal);
    crate::log::flushed().await;
    let _ = write.send(&answer.to_line()).await;
}

/// Only the daemon's own user (or root) may talk to it, whatever the socket's mode.
fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let own = rustix::process::geteuid().as_raw();
    let peer = stream
        .peer_cred()
        .map_err(|e| format!("can't identify the connecting process: {e}"))?
        .uid();
    if peer == own || peer == 0 {
        Ok(())
    } else {
        Err(format!(
            "refused connection from uid {peer}: backupd runs as uid {own}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_that_stops_reading_does_not_hold_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::in_test_home(dir.path());
        let (client, server) = UnixStream::pair().unwrap();
        // The answer echoes the id, so it is larger than the socket buffers: its write can only
        // end by the timeout, since the client never reads.
        let id = "x".repeat(proto::MAX_LINE_BYTES - 100);
        let request = format!("{{\"id\":\"{id}\",\"cmd\":\"hello\"}}\n");
        let (_unread, mut client_write) = client.into_split();
        let send = async { client_write.write_all(request.as_bytes()).await.unwrap() };
        let connection = tokio::time::timeout(
            Duration::from_secs(60),
            serve_connection(server, &daemon, Duration::from_millis(50)),
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
            serve_connection(server, &daemon, WRITE_TIMEOUT),
        )
        .await;
        assert!(connection.is_ok(), "the watch outlived its client");
    }
}
