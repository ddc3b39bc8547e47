//! Schedules as the daemon stores them and `list` shows them: what to back up, when, how, and
//! how the last run went. One type for the file and the wire, so `list --json` carries the
//! whole schedule.

use crate::job::JobOptions;
use crate::schedule_spec::TimeOfDay;
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

/// A wall-clock instant with the UTC offset it was observed in.
pub type Timestamp = DateTime<FixedOffset>;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timing {
    /// The schedule manager's one-shot: runs once at `due` (the first `time` from its creation on), then
    /// is removed.
    Once { time: TimeOfDay, due: Timestamp },
    /// Every day at `time`, local time.
    Daily { time: TimeOfDay },
    /// A cron expression (5 fields, or 6 with seconds first), local time.
    Cron { cron: String },
}

/// The outcome of a schedule's most recent run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub started: Timestamp,
    pub finished: Timestamp,
    pub ok: bool,
    /// Archives written by the run.
    #[serde(default)]
    pub archives: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Entries the run left out for a reason other than vanishing: it completed with
    /// warnings.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// Offsite uploads that failed: the run completed with offsite failure.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offsite_failed: u64,
    /// Bytes of the archives written, wherever they went (a remote, for offsite-only runs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size_bytes: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A timetabled run that started and has not finished: the daemon saves it before the run
/// begins and clears it with the run's outcome, so that a run cut short by a crash or a stop
/// is found at the next start and caught up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedRun {
    /// The newest occurrence the run serves.
    pub due: Timestamp,
    /// When the run started.
    pub at: Timestamp,
    /// `last_due` before the run: what it goes back to when the run was interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_due: Option<Timestamp>,
}

/// One stored schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Stable identifier, never reused; unlike the index it survives deletions of others.
    pub id: u64,
    /// Unique among schedules; names the archives.
    pub name: String,
    /// Absolute paths of the source directories.
    pub sources: Vec<String>,
    #[serde(flatten)]
    pub timing: Timing,
    #[serde(flatten)]
    pub options: JobOptions,
    pub created: Timestamp,
    /// The last occurrence dealt with (run, skipped or missed); the next is due after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_due: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
    /// The runs before `last_run`, newest first; the daemon keeps a bounded number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_runs: Vec<RunRecord>,
    /// The timetabled run going on, if any (absent in files of older daemons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_run: Option<StartedRun>,
}

impl Schedule {
    /// One line: the schedule manager's `path;HH:MM;name` for a one-shot, else
    /// `name: daily HH:MM /src,…` or `name: cron "expr" /src,…`; control characters in the
    /// sources escaped.
    pub fn display(&self) -> String {
        let sources = crate::escape_controls(&self.sources.join(",")).into_owned();
        match &self.timing {
            Timing::Once { time, .. } => format!("{sources};{time};{}", self.name),
            Timing::Daily { time } => format!("{}: daily {time} {sources}", self.name),
            Timing::Cron { cron } => format!("{}: cron \"{cron}\" {sources}", self.name),
        }
    }

    pub fn is_once(&self) -> bool {
        matches!(self.timing, Timing::Once { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> Timestamp {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    fn schedule(timing: Timing) -> Schedule {
        Schedule {
            id: 4,
            name: "docs".into(),
            sources: vec!["/home/me/docs".into(), "/srv".into()],
            timing,
            options: JobOptions {
                compression: Some(crate::job::Compression::of(crate::job::Codec::Zstd)),
                ..JobOptions::default()
            },
            created: at("2026-11-24T16:00:00+01:00"),
            last_due: None,
            last_run: None,
            earlier_runs: Vec::new(),
            started_run: None,
        }
    }

    #[test]
    fn schedules_print_on_one_line() {
        let once = Schedule {
            sources: vec!["/t".into()],
            ..schedule(Timing::Once {
                time: "16:07".parse().unwrap(),
                due: at("2026-11-24T16:07:00+01:00"),
            })
        };
        assert_eq!(once.display(), "/t;16:07;docs");
        let forged = Schedule {
            sources: vec!["/tmp/evil\n3: /etc".into()],
            ..once
        };
        assert_eq!(forged.display(), "/tmp/evil\\n3: /etc;16:07;docs");
        let daily = schedule(Timing::Daily {
            time: "02:00".parse().unwrap(),
        });
        assert_eq!(daily.display(), "docs: daily 02:00 /home/me/docs,/srv");
        let cron = schedule(Timing::Cron {
            cron: "0 3 * * 1".into(),
        });
        assert_eq!(
            cron.display(),
            "docs: cron \"0 3 * * 1\" /home/me/docs,/srv"
        );
    }

    #[test]
    fn the_stored_form_is_flat_and_round_trips() {
        let daily = schedule(Timing::Daily {
            time: "02:00".parse().unwrap(),
        });
        let value = serde_json::to_value(&daily).unwrap();
        assert_eq!(
            value,
            json!({
                "id": 4, "name": "docs", "sources": ["/home/me/docs", "/srv"],
                "kind": "daily", "time": "02:00", "compression": "zstd",
                "created": "2026-11-24T16:00:00+01:00"
            })
        );
        let back: Schedule = serde_json::from_value(value).unwrap();
        assert_eq!(back, daily);
    }
}
