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
    /// Offsite uploads (and catch-up listings, remote rotations) that failed: the run
    /// completed with offsite failure.
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
    /// When a run of it last succeeded, kept when that run is no longer among the runs kept
    /// (absent in files of older daemons, and until the first success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    /// The timetabled run going on, if any (absent in files of older daemons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_run: Option<StartedRun>,
}

/// A schedule as the daemon reads it from its file. `Schedule`'s own `Deserialize` ignores
/// keys it does not know, as a client reading `list` answers must (they carry keys of their
/// own beside the schedule's); the file, edited by hand at times, must not: a misspelled
/// `retension` would be dropped at the next save and the schedule run with the defaults.
/// So a key no field takes, or one that does not belong to the schedule's kind, is an error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "strict::Schedule")]
pub struct StrictSchedule(pub Schedule);

/// A timing key missing from a stored schedule, or one its kind does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingKeyError {
    #[error("missing field `{key}` (kind `{kind}` needs it)")]
    Missing {
        kind: &'static str,
        key: &'static str,
    },
    #[error("unknown field `{key}` for kind `{kind}`")]
    Foreign {
        kind: &'static str,
        key: &'static str,
    },
}

/// The stored form with the timing's keys as fields of their own: serde cannot deny unknown
/// keys across a flattened enum (it reads the keys without taking them), nor across a
/// flattened struct that itself flattens.
mod strict {
    use super::{RunRecord, StartedRun, Timestamp, Timing, TimingKeyError};
    use crate::job::{JobOptions, StrictFields};
    use crate::schedule_spec::TimeOfDay;
    use serde::Deserialize;

    #[derive(Debug, Clone, Copy, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Once,
        Daily,
        Cron,
    }

    impl Kind {
        fn as_str(self) -> &'static str {
            match self {
                Kind::Once => "once",
                Kind::Daily => "daily",
                Kind::Cron => "cron",
            }
        }
    }

    #[derive(Debug, Deserialize)]
    pub struct Schedule {
        id: u64,
        name: String,
        sources: Vec<String>,
        kind: Kind,
        #[serde(default)]
        time: Option<TimeOfDay>,
        #[serde(default)]
        due: Option<Timestamp>,
        #[serde(default)]
        cron: Option<String>,
        #[serde(flatten)]
        options: JobOptions,
        created: Timestamp,
        #[serde(default)]
        last_due: Option<Timestamp>,
        #[serde(default)]
        last_run: Option<RunRecord>,
        #[serde(default)]
        earlier_runs: Vec<RunRecord>,
        #[serde(default)]
        last_success: Option<Timestamp>,
        #[serde(default)]
        started_run: Option<StartedRun>,
        #[serde(flatten)]
        _strict: StrictFields,
    }

    fn need<T>(
        kind: &'static str,
        key: &'static str,
        value: Option<T>,
    ) -> Result<T, TimingKeyError> {
        value.ok_or(TimingKeyError::Missing { kind, key })
    }

    fn refuse(kind: &'static str, key: &'static str, present: bool) -> Result<(), TimingKeyError> {
        if present {
            Err(TimingKeyError::Foreign { kind, key })
        } else {
            Ok(())
        }
    }

    impl TryFrom<Schedule> for super::StrictSchedule {
        type Error = TimingKeyError;

        fn try_from(stored: Schedule) -> Result<Self, TimingKeyError> {
            let kind = stored.kind.as_str();
            let timing = match stored.kind {
                Kind::Once => {
                    refuse(kind, "cron", stored.cron.is_some())?;
                    Timing::Once {
                        time: need(kind, "time", stored.time)?,
                        due: need(kind, "due", stored.due)?,
                    }
                }
                Kind::Daily => {
                    refuse(kind, "due", stored.due.is_some())?;
                    refuse(kind, "cron", stored.cron.is_some())?;
                    Timing::Daily {
                        time: need(kind, "time", stored.time)?,
                    }
                }
                Kind::Cron => {
                    refuse(kind, "time", stored.time.is_some())?;
                    refuse(kind, "due", stored.due.is_some())?;
                    Timing::Cron {
                        cron: need(kind, "cron", stored.cron)?,
                    }
                }
            };
            // Every field named: a new one must be read here too.
            Ok(Self(super::Schedule {
                id: stored.id,
                name: stored.name,
                sources: stored.sources,
                timing,
                options: stored.options,
                created: stored.created,
                last_due: stored.last_due,
                last_run: stored.last_run,
                earlier_runs: stored.earlier_runs,
                last_success: stored.last_success,
                started_run: stored.started_run,
            }))
        }
    }
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
            last_success: None,
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

    fn record(ok: bool) -> RunRecord {
        RunRecord {
            started: at("2026-11-25T02:00:00+01:00"),
            finished: at("2026-11-25T02:01:00+01:00"),
            ok,
            archives: vec!["docs-20261125-020000.tar.zst".into()],
            error: (!ok).then(|| "disk full".into()),
            skipped: 2,
            offsite_failed: 1,
            size_bytes: 4096,
        }
    }

    /// Every field set, so every key the daemon writes is in the stored form.
    fn full(timing: Timing) -> Schedule {
        Schedule {
            last_due: Some(at("2026-11-25T02:00:00+01:00")),
            last_run: Some(record(true)),
            earlier_runs: vec![record(false)],
            last_success: None,
            started_run: Some(StartedRun {
                due: at("2026-11-26T02:00:00+01:00"),
                at: at("2026-11-26T02:00:01+01:00"),
                previous_due: Some(at("2026-11-25T02:00:00+01:00")),
            }),
            options: serde_json::from_value(json!({
                "destination": "/srv/b", "compression": "zstd", "level": 19,
                "exclude": ["*.tmp"], "retention": {"days": 30, "min_keep": 2},
                "verify_after": true, "offsite": ["far"], "encrypt_to": ["age1x"],
                "notify": ["https://example.com/hook"], "notify_on": "always",
                "notify_email": true,
                "source_commands": [{"name": "db.sql", "command": ["pg_dump"]}],
                "hooks": {"before": ["true"]}, "hook_timeout": 60,
                "offsite_retention": {"keep_last": 5}
            }))
            .unwrap(),
            ..schedule(timing)
        }
    }

    fn strict(value: serde_json::Value) -> Result<Schedule, String> {
        serde_json::from_value::<StrictSchedule>(value)
            .map(|strict| strict.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_strict_form_reads_back_everything_the_daemon_writes() {
        let timings = [
            Timing::Once {
                time: "16:07".parse().unwrap(),
                due: at("2026-11-24T16:07:00+01:00"),
            },
            Timing::Daily {
                time: "02:00".parse().unwrap(),
            },
            Timing::Cron {
                cron: "0 3 * * 1".into(),
            },
        ];
        for timing in timings {
            for written in [full(timing.clone()), schedule(timing.clone())] {
                let value = serde_json::to_value(&written).unwrap();
                assert_eq!(strict(value.clone()), Ok(written), "{value}");
            }
        }
    }

    #[test]
    fn the_strict_form_refuses_keys_it_does_not_know() {
        let mut value = serde_json::to_value(full(Timing::Daily {
            time: "02:00".parse().unwrap(),
        }))
        .unwrap();
        value["retension"] = json!({"days": 30});
        let err = strict(value.clone()).unwrap_err();
        assert!(err.contains("unknown field `retension`"), "{err}");
        // The lenient form, for `list` answers, still reads it.
        assert!(serde_json::from_value::<Schedule>(value).is_ok());
    }

    #[test]
    fn the_strict_form_refuses_timing_keys_of_another_kind() {
        let base = json!({"id": 1, "name": "n", "sources": ["/a"],
            "created": "2026-11-24T16:00:00+01:00"});
        let with = |extra: serde_json::Value| {
            let mut value = base.clone();
            value
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            strict(value)
        };
        let due = "2026-11-24T16:07:00+01:00";
        assert_eq!(
            with(json!({"kind": "daily", "time": "02:00", "cron": "0 3 * * *"})).unwrap_err(),
            "unknown field `cron` for kind `daily`"
        );
        assert_eq!(
            with(json!({"kind": "daily", "time": "02:00", "due": due})).unwrap_err(),
            "unknown field `due` for kind `daily`"
        );
        assert_eq!(
            with(json!({"kind": "cron", "cron": "0 3 * * *", "time": "02:00"})).unwrap_err(),
            "unknown field `time` for kind `cron`"
        );
        assert_eq!(
            with(json!({"kind": "once", "time": "02:00"})).unwrap_err(),
            "missing field `due` (kind `once` needs it)"
        );
        assert!(
            with(json!({"kind": "weekly", "time": "02:00"}))
                .unwrap_err()
                .contains("unknown variant `weekly`")
        );
        assert!(with(json!({"kind": "once", "time": "02:00", "due": due})).is_ok());
    }
}
