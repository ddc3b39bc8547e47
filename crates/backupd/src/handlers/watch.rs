//! `watch`: streams the daemon's events (jobs started, progress, finished, failed or
//! cancelled, rotations, verifications, schedule changes) as event lines until the client
//! closes the connection; only shutdown ends it with an answer. A watcher that reads too
//! slowly misses events and is told how many (`lagged`); nothing else waits for it.

use crate::events::EventSink;
use crate::state::Daemon;
use proto::Event;
use proto::response::{WatchEnd, WatchEndReason};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

pub async fn handle(daemon: &Daemon, sink: &EventSink) -> WatchEnd {
    forward(daemon, daemon.subscribe(), sink).await
}

/// Forwards `events` to the client until it goes away or the daemon stops.
async fn forward(
    daemon: &Daemon,
    mut events: broadcast::Receiver<Event>,
    sink: &EventSink,
) -> WatchEnd {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::WATCH_BUFFER;
    use proto::{EventLine, Incoming};
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_told_what_it_missed_and_stalls_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::in_test_home(dir.path());
        let events = daemon.subscribe();
        // Publishing never waits, however far behind the watcher is.
        let published = WATCH_BUFFER as u64 + 10;
        for missed in 0..published {
            daemon.publish(Event::Lagged { missed });
        }
        let (lines, mut written) = mpsc::channel(4);
        let sink = EventSink::new(Some(serde_json::json!("w")), lines);
        let watch = forward(&daemon, events, &sink);
        let read = async {
            let first = written.recv().await.unwrap();
            let Ok(Incoming::Event(EventLine { id, event })) = Incoming::parse(first.trim_end())
            else {
                panic!("not an event: {first}");
            };
            assert_eq!(id, Some(serde_json::json!("w")));
            assert_eq!(event, Event::Lagged { missed: 10 });
            daemon.shutdown.cancel();
        };
        let (end, ()) = tokio::join!(watch, read);
        assert_eq!(end.reason, WatchEndReason::Stopping);
    }
}
