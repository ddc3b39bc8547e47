//! Event lines: while a long request runs (`run` with `"events": true`, or `watch`), the
//! daemon sends `{"id": …, "event": "<kind>", …}` lines on the same connection before the
//! final response. A client tells them apart from the response by the `event` key (a
//! response has `ok`).

use crate::response::VerifyStatus;
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
    /// A source's backup began, into `archive`. `expected_bytes` is what the previous backup
    /// of the same name read, for a client to estimate how far along this one is.
    SourceStarted {
        source: String,
        archive: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_bytes: Option<u64>,
    },
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
    /// The jobs of a real run, sent first, before any of them waits for a job slot: what
    /// `cancel` takes, and all a detached client waits for.
    RunStarted { jobs: Vec<JobRef> },
    /// `watch`: a job exists (it may still wait for a job slot).
    JobStarted {
        job: u64,
        name: String,
        /// The schedule it runs for, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schedule: Option<String>,
        source: String,
    },
    /// `watch`: work done so far by a job; at most every 100 ms per job.
    JobProgress {
        job: u64,
        name: String,
        files: u64,
        bytes_in: u64,
        bytes_out: u64,
    },
    /// `watch`: a job wrote its archive (and ran its steps after the write).
    JobFinished {
        job: u64,
        name: String,
        source: String,
        archive: String,
        size_bytes: u64,
    },
    /// `watch`: a job failed.
    JobFailed {
        job: u64,
        name: String,
        source: String,
        error: String,
    },
    /// `watch`: a job was cancelled (by `cancel`, or because the daemon stops); its partial
    /// file is gone.
    JobCancelled {
        job: u64,
        name: String,
        source: String,
        error: String,
    },
    /// `watch`: rotation (after a run, or `prune`) deleted older archives.
    Rotated {
        destination: String,
        deleted: Vec<String>,
    },
    /// `watch` and a run's events: one offsite upload of a job ended (copied, already there, or
    /// failed after its retries).
    Uploaded {
        job: u64,
        name: String,
        upload: crate::response::OffsiteUpload,
    },
    /// `watch`: an archive was verified (after a run, or `verify`).
    Verified {
        archive: String,
        status: VerifyStatus,
    },
    /// `watch`: a schedule was added, replaced or removed.
    ScheduleChanged {
        name: String,
        change: ScheduleChange,
    },
    /// `watch`: the client read too slowly and `missed` events were dropped for it.
    Lagged { missed: u64 },
    /// A kind this client does not know (from a newer daemon); skipped.
    #[serde(other)]
    Unknown,
}

/// A job as a run's `run_started` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub job: u64,
    pub name: String,
    pub source: String,
}

/// What happened to a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleChange {
    Created,
    /// By `create` with `replace`: a new definition, the same schedule (id, runs).
    Replaced,
    /// By `delete`, or a one-shot that ran or was missed.
    Deleted,
    /// A change this client does not know (from a newer daemon).
    #[serde(other)]
    Unknown,
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

    #[test]
    fn new_kinds_are_snake_case_and_unknown_kinds_are_skipped_not_refused() {
        let line = EventLine {
            id: None,
            event: Event::ScheduleChanged {
                name: "n".into(),
                change: ScheduleChange::Created,
            },
        };
        assert_eq!(
            serde_json::to_value(&line).unwrap(),
            json!({"id": null, "event": "schedule_changed", "name": "n", "change": "created"})
        );
        let lagged = serde_json::to_value(Event::Lagged { missed: 3 }).unwrap();
        assert_eq!(lagged, json!({"event": "lagged", "missed": 3}));
        assert_eq!(
            Incoming::parse(r#"{"id":1,"event":"from_the_future","x":1}"#).unwrap(),
            Incoming::Event(EventLine {
                id: Some(json!(1)),
                event: Event::Unknown
            })
        );
    }

    #[test]
    fn a_replaced_schedule_has_its_own_change_and_unknown_changes_are_read() {
        let replaced = Event::ScheduleChanged {
            name: "n".into(),
            change: ScheduleChange::Replaced,
        };
        assert_eq!(
            serde_json::to_value(&replaced).unwrap(),
            json!({"event": "schedule_changed", "name": "n", "change": "replaced"})
        );
        let future = r#"{"event":"schedule_changed","name":"n","change":"renamed"}"#;
        assert_eq!(
            Incoming::parse(future).unwrap(),
            Incoming::Event(EventLine {
                id: None,
                event: Event::ScheduleChanged {
                    name: "n".into(),
                    change: ScheduleChange::Unknown,
                },
            })
        );
    }
}
