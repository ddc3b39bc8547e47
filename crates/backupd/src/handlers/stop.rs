//! `stop`: begins a graceful shutdown; the reply goes out before the daemon closes.

use super::HandlerResult;
use crate::state::Daemon;

pub fn handle(daemon: &Daemon) -> HandlerResult<()> {
    tracing::debug!("stop requested by a client");
    daemon.shutdown.cancel();
    Ok(())
}
