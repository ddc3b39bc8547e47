//! Where a request handler sends event lines for its client; the connection writes them out
//! before the final response.

use proto::{Event, EventLine};
use serde_json::Value;
use tokio::sync::mpsc;

/// Event lines queued per connection before the writer catches up.
pub const EVENT_BUFFER: usize = 256;

/// A handle to send events for one request; a disabled sink drops them.
#[derive(Debug, Clone)]
pub struct EventSink {
    id: Option<Value>,
    lines: Option<mpsc::Sender<String>>,
}

impl EventSink {
    /// Events of the request with `id`, written to `lines`.
    pub fn new(id: Option<Value>, lines: mpsc::Sender<String>) -> Self {
        Self {
            id,
            lines: Some(lines),
        }
    }

    /// A sink for a request that asked for no events (or a job without a client).
    pub fn disabled() -> Self {
        Self {
            id: None,
            lines: None,
        }
    }

    /// Sends an event that must arrive (start and end of a source), waiting for room.
    pub async fn send(&self, event: Event) {
        if let Some(lines) = &self.lines {
            let _ = lines.send(self.line(event)).await;
        }
    }

    /// Sends an event that may be dropped (progress); never blocks, so it is safe to call
    /// from the blocking thread that writes an archive.
    pub fn try_send(&self, event: Event) {
        if let Some(lines) = &self.lines {
            let _ = lines.try_send(self.line(event));
        }
    }

    /// Sends an event that must arrive, waiting for room; `false` once the connection no
    /// longer takes events (its client went away).
    pub async fn deliver(&self, event: Event) -> bool {
        match &self.lines {
            Some(lines) => lines.send(self.line(event)).await.is_ok(),
            None => false,
        }
    }

    /// Resolves once the connection no longer takes events (never for a disabled sink).
    pub async fn closed(&self) {
        match &self.lines {
            Some(lines) => lines.closed().await,
            None => std::future::pending().await,
        }
    }

    fn line(&self, event: Event) -> String {
        EventLine {
            id: self.id.clone(),
            event,
        }
        .to_line()
    }
}
