//! `stop`: begins a graceful shutdown; the reply goes out before the daemon closes.

use crate::state::Daemon;
use proto::Reply;

pub fn handle(daemon: &Daemon) -> Reply {
    tracing::debug!("stop requested by a client");
    daemon.shutdown.cancel();
    Reply::Stopping
}
