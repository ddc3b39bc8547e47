//! Event lines: while a long request runs (`run` with `"events": true`), the daemon sends
//! `{"id": …, "event": "<kind>", …}` lines on the same connection before the final response.
//! A client tells them apart from the response by the `event` key (a response has `ok`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One event line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    /// The `id` of the request the event belongs to.
    #[serde(default)]
    pub id: Option<Value>,
    #[serde(flatten)]
    pub event: Event,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A source's backup began, into `archive`.
    SourceStarted { source: String, archive: String },
    /// Work done so far on a source; sent at most every 100 ms per source, and dropped rather
    /// than slow the backup down when the client reads slowly.
    Progress {
        source: String,
        files: u64,
        bytes_in: u64,
        bytes_out: u64,
    },
    /// A source's backup ended; `error` is set when it failed.
    SourceFinished {
        source: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl EventLine {
    /// The event as one line of JSON, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("an event always serializes");
        line.push('\n');
        line
    }
}

/// A line from the daemon: an event, or the final response.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Event(EventLine),
    Response(crate::Response),
}

impl Incoming {
    /// Reads one line from the daemon.
    pub fn parse(line: &str) -> serde_json::Result<Self> {
        let value: Value = serde_json::from_str(line)?;
        if value.get("event").is_some() {
            serde_json::from_value(value).map(Self::Event)
        } else {
            serde_json::from_value(value).map(Self::Response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_have_the_documented_shape_and_are_told_apart_from_responses() {
        let line = EventLine {
            id: Some(json!(1)),
            event: Event::Progress {
                source: "/s".into(),
                files: 2,
                bytes_in: 3,
                bytes_out: 4,
            },
        };
        assert_eq!(
            serde_json::to_value(&line).unwrap(),
            json!({"id": 1, "event": "progress", "source": "/s", "files": 2, "bytes_in": 3, "bytes_out": 4})
        );
        assert_eq!(
            Incoming::parse(line.to_line().trim_end()).unwrap(),
            Incoming::Event(line)
        );
        assert!(matches!(
            Incoming::parse(r#"{"id":null,"ok":true,"data":null}"#).unwrap(),
            Incoming::Response(_)
        ));
    }
}
