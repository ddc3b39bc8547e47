//! `stop`: begins a graceful shutdown; the reply goes out before the daemon closes.

use crate::state::Daemon;
use proto::Reply;
use proto::response::StopInfo;

/// Tells the client which process to wait for, and whether the socket file goes with it (an
/// inherited socket stays with the service manager, so its file never disappears).
pub fn handle(daemon: &Daemon) -> Reply {
    tracing::debug!("stop requested by a client");
    daemon.shutdown.cancel();
    Reply::Stopping(StopInfo {
        pid: std::process::id(),
        removes_socket: daemon.removes_socket,
    })
}
