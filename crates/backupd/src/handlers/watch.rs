//! `watch`: streams the daemon's events (jobs started, progress, finished, failed or
//! cancelled, rotations, verifications, schedule changes) as event lines until the client
//! closes the connection; only shutdown ends it with an answer. A watcher that reads too
//! slowly misses events and is told how many (`lagged`); nothing else waits for it.

use crate::events::EventSink;
use crate::state::Daemon;
use proto::Event;
use proto::response::{WatchEnd, WatchEndReason};
use tokio::sync::broadcast::error::RecvError;

pub async fn handle(daemon: &Daemon, sink: &EventSink) -> WatchEnd {
    let mut events = daemon.subscribe();
    let stopping = WatchEnd {
        reason: WatchEndReason::Stopping,
    };
    loop {
        let event = tokio::select! {
            received = events.recv() => match received {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => Event::Lagged { missed },
                Err(RecvError::Closed) => return stopping,
            },
            // The client went away: nobody reads the answer either.
            () = sink.closed() => return stopping,
            () = daemon.shutdown.cancelled() => return stopping,
        };
        let delivered = tokio::select! {
            delivered = sink.deliver(event) => delivered,
            () = daemon.shutdown.cancelled() => return stopping,
        };
        if !delivered {
            return stopping;
        }
    }
}
