//! When schedules are due, as pure functions of an injected `now`: the next occurrence of a
//! daily or cron timing, and what the scheduler should do with a schedule at a given instant.
//! Daily and cron timings both follow `croner`, whose DST rules are documented: a time in a
//! spring-forward gap runs right after the gap; a fixed time repeated in a fall-back hour runs
//! once, at the first, and an interval (`*/20`) runs in both passes. croner searches in
//! `EarliestFirst` of the caller's zone, which puts right what chrono's `Local` says there.
//! A daily time away from any clock change is computed directly, which is all croner would do
//! there, at a fraction of the cost (10,000 daily schedules are looked at on every change).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{
    DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta,
    TimeZone, Timelike,
};
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds};
use proto::schedule::{Schedule, Timing};
use proto::schedule_spec::TimeOfDay;

/// Parses a cron expression: 5 fields, or 6 with seconds first.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    // croner also takes a 7th (year) field; the README promises 5 or 6, and says so when wrong.
    let fields = expression.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "expected 5 fields (minute hour day month weekday), or 6 with seconds first; found {fields}"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expression)
        .map_err(|e| e.to_string())
}

/// The next time `cron` fires after `now`; an error for an expression no date matches (31
/// February), which would otherwise be accepted and never run. croner searches every year up
/// to 5000, so a leap day (`0 0 29 2 *`) is found even across a century's skipped leap year.
pub fn next_fire<Tz: TimeZone>(cron: &Cron, now: &DateTime<Tz>) -> Result<DateTime<Tz>, String> {
    search(now, |now| cron.find_next_occurrence(now, false))
        .map_err(|_| "it never fires: no date matches it (such as 30 or 31 February)".to_owned())
}

/// `Tz` with a local time the clock shows twice (a fall-back) told as chrono documents: its
/// instants earliest first, and only those the clock really shows. chrono 0.4's `Local` gives
/// them latest first (chronotope/chrono#1625), and the time the clock goes back from (03:00 in
/// Berlin) as shown twice; croner trusts the order, so fixed times ran at the second pass and
/// the search back found the first pass when the second was due (a punctual run "missed").
#[derive(Debug, Clone, Copy)]
struct EarliestFirst<Tz>(Tz);

impl<Tz: TimeZone> TimeZone for EarliestFirst<Tz> {
    type Offset = Tz::Offset;

    fn from_offset(offset: &Tz::Offset) -> Self {
        Self(Tz::from_offset(offset))
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> LocalResult<Tz::Offset> {
        self.0.offset_from_local_date(local)
    }

    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> LocalResult<Tz::Offset> {
        let (one, other) = match self.0.offset_from_local_datetime(local) {
            LocalResult::Ambiguous(one, other) => (one, other),
            single_or_none => return single_or_none,
        };
        let shown = |offset: &Tz::Offset| {
            local
                .checked_sub_offset(offset.fix())
                .is_some_and(|utc| self.0.offset_from_utc_datetime(&utc).fix() == offset.fix())
        };
        match (shown(&one), shown(&other)) {
            (true, false) => LocalResult::Single(one),
            (false, true) => LocalResult::Single(other),
            // The offset further east is the earlier instant.
            _ if one.fix().local_minus_utc() < other.fix().local_minus_utc() => {
                LocalResult::Ambiguous(other, one)
            }
            _ => LocalResult::Ambiguous(one, other),
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> Tz::Offset {
        self.0.offset_from_utc_date(utc)
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> Tz::Offset {
        self.0.offset_from_utc_datetime(utc)
    }
}

/// A croner search from `from`, made in [`EarliestFirst`] of its zone.
fn search<Tz: TimeZone>(
    from: &DateTime<Tz>,
    find: impl FnOnce(&DateTime<EarliestFirst<Tz>>) -> Result<DateTime<EarliestFirst<Tz>>, CronError>,
) -> Result<DateTime<Tz>, CronError> {
    let zone = from.timezone();
    find(&from.with_timezone(&EarliestFirst(zone.clone()))).map(|found| found.with_timezone(&zone))
}

fn daily_cron(time: TimeOfDay) -> Cron {
    parsed_cron(&format!("{} {} * * *", time.minute(), time.hour()))
        .expect("a valid time of day is a valid cron expression")
}

/// The cron expression a recurring timing follows; `None` for a one-shot.
fn cron_of(timing: &Timing) -> Option<Cron> {
    match timing {
        Timing::Once { .. } => None,
        Timing::Daily { time } => Some(daily_cron(*time)),
        // Validated at creation and when the file is loaded.
        Timing::Cron { cron } => parsed_cron(cron),
    }
}

/// Expressions kept parsed at most; past it the memo starts afresh.
const PARSED_KEPT: usize = 16_384;

/// [`parse_cron`] remembered: every look at every schedule needs its expression, and parsing
/// costs far more than the search (with 10,000 schedules, most of a `list` and of each of
/// the scheduler's looks). `None` for an invalid expression.
fn parsed_cron(expression: &str) -> Option<Cron> {
    static PARSED: Mutex<Option<HashMap<String, Option<Cron>>>> = Mutex::new(None);
    let mut parsed = PARSED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let parsed = parsed.get_or_insert_with(HashMap::new);
    if let Some(cron) = parsed.get(expression) {
        return cron.clone();
    }
    if parsed.len() >= PARSED_KEPT {
        parsed.clear();
    }
    let cron = parse_cron(expression).ok();
    parsed.insert(expression.to_owned(), cron.clone());
    cron
}

/// The schedule manager's one-shot: the next `time`, today if that minute has not passed yet (the
/// current minute counts, as in the schedule manager's service), else tomorrow.
pub fn first_once_due<Tz: TimeZone>(time: TimeOfDay, now: &DateTime<Tz>) -> DateTime<Tz> {
    let minute_start = now.clone()
        - TimeDelta::seconds(i64::from(now.second()))
        - TimeDelta::nanoseconds(i64::from(now.nanosecond()));
    let daily = daily_cron(time);
    search(&minute_start, |start| {
        daily.find_next_occurrence(start, true)
    })
    .expect("a daily time always occurs again")
}

/// Whether `schedule` is a one-shot whose one occurrence has been dealt with.
fn is_dealt_with_once(schedule: &Schedule) -> bool {
    match &schedule.timing {
        Timing::Once { due, .. } => schedule.last_due.is_some_and(|last| last >= *due),
        Timing::Daily { .. } | Timing::Cron { .. } => false,
    }
}

/// The occurrence a schedule waits for: its `due` for a one-shot; for a recurring one, the
/// first occurrence after the last one dealt with (or after its creation).
pub fn pending_due<Tz: TimeZone>(schedule: &Schedule, tz: &Tz) -> Option<DateTime<Tz>> {
    match &schedule.timing {
        // Once dealt with, a one-shot waits for nothing more (it is removed after its run).
        Timing::Once { .. } if is_dealt_with_once(schedule) => None,
        Timing::Once { due, .. } => Some(due.with_timezone(tz)),
        timing => {
            let after = schedule
                .last_due
                .unwrap_or(schedule.created)
                .with_timezone(tz);
            if let Timing::Daily { time } = timing
                && let Some(next) = next_daily_off_clock_changes(*time, &after)
            {
                return Some(next);
            }
            let cron = cron_of(timing)?;
            search(&after, |after| cron.find_next_occurrence(after, false)).ok()
        }
    }
}

/// The first `time` of day strictly after `after` — that day's or the next day's — if the
/// clock keeps the offset it had at `after` until then; `None` around a clock change, where
/// croner's DST rules decide.
fn next_daily_off_clock_changes<Tz: TimeZone>(
    time: TimeOfDay,
    after: &DateTime<Tz>,
) -> Option<DateTime<Tz>> {
    let time_of_day = NaiveTime::from_hms_opt(time.hour().into(), time.minute().into(), 0)?;
    let offset = after.offset().fix();
    let on = |date: chrono::NaiveDate| match after
        .timezone()
        .from_local_datetime(&date.and_time(time_of_day))
    {
        LocalResult::Single(at) if at.offset().fix() == offset => Some(at),
        _ => None,
    };
    let today = on(after.date_naive())?;
    if today > *after {
        return Some(today);
    }
    on(after.date_naive().succ_opt()?)
}

/// The newest occurrence at or before `now` (for a one-shot, its `due`).
fn latest_due<Tz: TimeZone>(schedule: &Schedule, now: &DateTime<Tz>) -> Option<DateTime<Tz>> {
    match &schedule.timing {
        Timing::Once { due, .. } => Some(due.with_timezone(&now.timezone())),
        timing => {
            let cron = cron_of(timing)?;
            search(now, |now| cron.find_previous_occurrence(now, true)).ok()
        }
    }
}

/// How late a run may start and still count as on time rather than as catching up.
pub const ON_TIME: TimeDelta = TimeDelta::seconds(60);

/// How far ahead of the clock a recurring schedule's last occurrence dealt with may be before
/// the clock counts as set back since. Less is the clock's small corrections, and counting
/// from now would run the occurrence just dealt with again.
pub const SET_BACK_BY_MORE_THAN: TimeDelta = TimeDelta::minutes(10);

/// What to do with a schedule now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<Tz: TimeZone> {
    /// Nothing will ever be due (a cron expression with no future occurrence).
    Idle,
    /// Nothing due before `until`.
    Wait { until: DateTime<Tz> },
    /// Run now, once, for every occurrence up to `latest`. `catch_up` when it is more than
    /// [`ON_TIME`] late: the daemon was down, or the machine asleep.
    Run {
        latest: DateTime<Tz>,
        catch_up: bool,
    },
    /// The newest missed occurrence is older than the grace period (and more than
    /// [`ON_TIME`] late, so that a tiny grace never skips a punctual run): skip up to `latest`.
    Missed { latest: DateTime<Tz> },
    /// Due while its previous run still goes on: skip up to `latest` rather than run twice.
    /// For a one-shot, that run stands in for its only one.
    Overlap { latest: DateTime<Tz> },
    /// A one-shot dealt with, and not by a timetabled run still going: nothing of it is left
    /// to run, so it goes. Left in the schedule file by older versions, which kept a one-shot
    /// after skipping it as an overlap.
    Spent,
    /// A recurring schedule's last occurrence dealt with, `last`, is more than
    /// [`SET_BACK_BY_MORE_THAN`] ahead of the clock: it ran while the clock was ahead, since
    /// set back. Counted from it, nothing would run until the clock passed it again: count
    /// from now instead.
    SetBack { last: DateTime<FixedOffset> },
}

pub fn decide<Tz: TimeZone>(
    schedule: &Schedule,
    now: &DateTime<Tz>,
    grace: TimeDelta,
    running: bool,
) -> Decision<Tz> {
    // Its timetabled run holds `started_run` until it ends and removes it; a one-shot dealt
    // with in any other way has nothing left to run.
    if is_dealt_with_once(schedule) && schedule.started_run.is_none() {
        return Decision::Spent;
    }
    if !schedule.is_once()
        && let Some(last) = schedule.last_due
        && last > now.clone() + SET_BACK_BY_MORE_THAN
    {
        return Decision::SetBack { last };
    }
    let Some(due) = pending_due(schedule, &now.timezone()) else {
        return Decision::Idle;
    };
    if due > *now {
        return Decision::Wait { until: due };
    }
    // Late from the newest occurrence, never from one before the occurrence waited for.
    let latest =
        latest_due(schedule, now).map_or_else(|| due.clone(), |latest| latest.max(due.clone()));
    let late_by = now.clone() - latest.clone();
    if running {
        Decision::Overlap { latest }
    } else if late_by > grace.max(ON_TIME) {
        Decision::Missed { latest }
    } else {
        Decision::Run {
            latest,
            catch_up: now.clone() - due > ON_TIME,
        }
    }
}

/// A duration as [`parse_duration`] reads it, in the largest of hours, minutes and seconds
/// that keeps it exact: `24h`, `90m`, `30s`.
pub fn format_duration(duration: TimeDelta) -> String {
    let seconds = duration.num_seconds();
    match seconds {
        s if s != 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s != 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses `90s`, `30m`, `24h` or `2d`.
pub fn parse_duration(text: &str) -> Result<TimeDelta, String> {
    let invalid =
        || format!("invalid duration {text:?}: use a number with s, m, h or d (e.g. 24h)");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(seconds)
        .and_then(TimeDelta::try_seconds)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;
    use proto::JobOptions;

    #[test]
    fn durations_are_written_exactly_and_read_back() {
        for (text, written) in [
            ("30s", "30s"),
            ("90m", "90m"),
            ("24h", "24h"),
            ("2d", "48h"),
        ] {
            let duration = parse_duration(text).unwrap();
            assert_eq!(format_duration(duration), written);
            assert_eq!(parse_duration(written).unwrap(), duration);
        }
        assert_eq!(format_duration(TimeDelta::seconds(3601)), "3601s");
    }

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    fn schedule(timing: Timing, created: &str, last_due: Option<&str>) -> Schedule {
        Schedule {
            id: 1,
            name: "n".into(),
            sources: vec!["/s".into()],
            timing,
            options: JobOptions::default(),
            created: at(created),
            last_due: last_due.map(at),
            last_run: None,
            earlier_runs: Vec::new(),
            last_success: None,
            started_run: None,
        }
    }

    fn daily(time: &str) -> Timing {
        Timing::Daily {
            time: time.parse().unwrap(),
        }
    }

    const DAY: TimeDelta = TimeDelta::hours(24);

    #[test]
    fn a_last_run_dated_well_ahead_of_the_clock_says_the_clock_was_set_back() {
        let grace = TimeDelta::hours(1);
        let every_minute = Timing::Cron {
            cron: "* * * * *".into(),
        };
        // It ran while the clock was two days ahead; since set back.
        let ahead = schedule(
            every_minute.clone(),
            "2026-11-01T00:00:00+01:00",
            Some("2026-11-26T12:00:00+01:00"),
        );
        let now = at("2026-11-24T12:00:30+01:00");
        assert_eq!(
            decide(&ahead, &now, grace, false),
            Decision::SetBack {
                last: at("2026-11-26T12:00:00+01:00")
            }
        );
        // Counted from now, as the scheduler then records, the next minute is due.
        let mut counted_from_now = ahead.clone();
        counted_from_now.last_due = Some(now);
        assert_eq!(
            decide(&counted_from_now, &now, grace, false),
            Decision::Wait {
                until: at("2026-11-24T12:01:00+01:00")
            }
        );
        // A small correction of the clock just after a run waits for the next occurrence
        // rather than run the one just dealt with again.
        let just_ran = schedule(
            daily("12:00"),
            "2026-11-01T00:00:00+01:00",
            Some("2026-11-24T12:00:00+01:00"),
        );
        let slightly_back = at("2026-11-24T11:59:00+01:00");
        assert_eq!(
            decide(&just_ran, &slightly_back, grace, false),
            Decision::Wait {
                until: at("2026-11-25T12:00:00+01:00")
            }
        );
    }

    #[test]
    fn a_one_shot_is_due_today_if_its_minute_has_not_passed_else_tomorrow() {
        let now = at("2026-11-24T16:07:45+01:00");
        let time = |t: &str| t.parse().unwrap();
        assert_eq!(
            first_once_due(time("16:07"), &now),
            at("2026-11-24T16:07:00+01:00")
        );
        assert_eq!(
            first_once_due(time("16:08"), &now),
            at("2026-11-24T16:08:00+01:00")
        );
        assert_eq!(
            first_once_due(time("16:06"), &now),
            at("2026-11-25T16:06:00+01:00")
        );
        assert_eq!(
            first_once_due(time("00:00"), &now),
            at("2026-11-25T00:00:00+01:00")
        );
    }

    #[test]
    fn a_recurring_schedule_waits_for_its_next_occurrence() {
        let s = schedule(daily("02:00"), "2026-11-24T16:00:00+01:00", None);
        let now = at("2026-11-24T16:00:01+01:00");
        assert_eq!(
            decide(&s, &now, DAY, false),
            Decision::Wait {
                until: at("2026-11-25T02:00:00+01:00")
            }
        );
        let cron = schedule(
            Timing::Cron {
                cron: "30 3 * * 1".into(), // Mondays 03:30; 2026-11-24 is a Tuesday
            },
            "2026-11-24T16:00:00+01:00",
            None,
        );
        assert_eq!(
            decide(&cron, &now, DAY, false),
            Decision::Wait {
                until: at("2026-11-30T03:30:00+01:00")
            }
        );
    }

    #[test]
    fn a_due_schedule_runs_on_time_within_the_minute() {
        let s = schedule(daily("02:00"), "2026-11-24T16:00:00+01:00", None);
        let now = at("2026-11-25T02:00:00.400+01:00");
        assert_eq!(
            decide(&s, &now, DAY, false),
            Decision::Run {
                latest: at("2026-11-25T02:00:00+01:00"),
                catch_up: false
            }
        );
    }

    #[test]
    fn many_missed_occurrences_run_once_and_old_misses_are_skipped() {
        // Down for three days: one catch-up run covering all of them.
        let s = schedule(
            daily("02:00"),
            "2026-11-01T00:00:00+01:00",
            Some("2026-11-21T02:00:00+01:00"),
        );
        let now = at("2026-11-24T09:00:00+01:00");
        assert_eq!(
            decide(&s, &now, DAY, false),
            Decision::Run {
                latest: at("2026-11-24T02:00:00+01:00"),
                catch_up: true
            }
        );
        // The newest miss is 7 h old: with a 6 h grace it is skipped.
        assert_eq!(
            decide(&s, &now, TimeDelta::hours(6), false),
            Decision::Missed {
                latest: at("2026-11-24T02:00:00+01:00")
            }
        );
        // Once dealt with, it waits for tomorrow.
        let done = schedule(
            daily("02:00"),
            "2026-11-01T00:00:00+01:00",
            Some("2026-11-24T02:00:00+01:00"),
        );
        assert_eq!(
            decide(&done, &now, DAY, false),
            Decision::Wait {
                until: at("2026-11-25T02:00:00+01:00")
            }
        );
    }

    #[test]
    fn a_missed_one_shot_follows_the_same_grace_rule() {
        let once = schedule(
            Timing::Once {
                time: "16:07".parse().unwrap(),
                due: at("2026-11-24T16:07:00+01:00"),
            },
            "2026-11-24T16:00:00+01:00",
            None,
        );
        assert_eq!(
            decide(&once, &at("2026-11-24T20:00:00+01:00"), DAY, false),
            Decision::Run {
                latest: at("2026-11-24T16:07:00+01:00"),
                catch_up: true
            }
        );
        assert_eq!(
            decide(&once, &at("2026-11-26T20:00:00+01:00"), DAY, false),
            Decision::Missed {
                latest: at("2026-11-24T16:07:00+01:00")
            }
        );
        assert_eq!(
            decide(&once, &at("2026-11-24T16:06:59+01:00"), DAY, false),
            Decision::Wait {
                until: at("2026-11-24T16:07:00+01:00")
            }
        );
    }

    #[test]
    fn a_one_shot_that_was_dealt_with_waits_for_nothing() {
        let mut once = schedule(
            Timing::Once {
                time: "16:07".parse().unwrap(),
                due: at("2026-11-24T16:07:00+01:00"),
            },
            "2026-11-24T16:00:00+01:00",
            Some("2026-11-24T16:07:00+01:00"),
        );
        once.started_run = Some(proto::schedule::StartedRun {
            due: at("2026-11-24T16:07:00+01:00"),
            at: at("2026-11-24T16:07:00.2+01:00"),
            previous_due: None,
        });
        // While its run goes on, it is neither due again nor overlapping itself.
        let during = at("2026-11-24T16:07:30+01:00");
        assert_eq!(decide(&once, &during, DAY, true), Decision::Idle);
        assert_eq!(decide(&once, &during, DAY, false), Decision::Idle);
        // Dealt with but not by a run of its timetable (an older version skipped it while a
        // run of it went on): nothing of it is left.
        once.started_run = None;
        assert_eq!(decide(&once, &during, DAY, false), Decision::Spent);
        once.last_due = None;
        assert!(matches!(
            decide(&once, &during, DAY, false),
            Decision::Run { .. }
        ));
    }

    #[test]
    fn a_one_shot_due_while_a_run_of_it_goes_on_overlaps_it() {
        let once = schedule(
            Timing::Once {
                time: "16:07".parse().unwrap(),
                due: at("2026-11-24T16:07:00+01:00"),
            },
            "2026-11-24T16:00:00+01:00",
            None,
        );
        assert_eq!(
            decide(&once, &at("2026-11-24T16:07:00.3+01:00"), DAY, true),
            Decision::Overlap {
                latest: at("2026-11-24T16:07:00+01:00")
            }
        );
    }

    #[test]
    fn a_tiny_grace_never_skips_a_punctual_run() {
        let s = schedule(daily("02:00"), "2026-11-24T16:00:00+01:00", None);
        let now = at("2026-11-25T02:00:00.900+01:00");
        assert!(matches!(
            decide(&s, &now, TimeDelta::zero(), false),
            Decision::Run {
                catch_up: false,
                ..
            }
        ));
        let late = at("2026-11-25T02:05:00+01:00");
        assert!(matches!(
            decide(&s, &late, TimeDelta::zero(), false),
            Decision::Missed { .. }
        ));
    }

    #[test]
    fn an_occurrence_during_a_running_job_is_skipped() {
        let s = schedule(
            Timing::Cron {
                cron: "*/5 * * * *".into(),
            },
            "2026-11-24T16:00:00+01:00",
            Some("2026-11-24T16:00:00+01:00"),
        );
        let now = at("2026-11-24T16:05:00.2+01:00");
        assert_eq!(
            decide(&s, &now, DAY, true),
            Decision::Overlap {
                latest: at("2026-11-24T16:05:00+01:00")
            }
        );
    }

    #[test]
    fn a_clock_jump_is_seen_at_the_next_check() {
        // Planned at 16:00 for 02:00; the wall clock then jumps (NTP step, resume from
        // suspend) to 03:10: the next check finds the occurrence due and catches up.
        let s = schedule(daily("02:00"), "2026-11-24T16:00:00+01:00", None);
        let before = at("2026-11-24T16:00:00+01:00");
        assert!(matches!(
            decide(&s, &before, DAY, false),
            Decision::Wait { .. }
        ));
        let after_jump = at("2026-11-25T03:10:00+01:00");
        assert_eq!(
            decide(&s, &after_jump, DAY, false),
            Decision::Run {
                latest: at("2026-11-25T02:00:00+01:00"),
                catch_up: true
            }
        );
        // A jump backwards leaves it waiting for the same occurrence.
        let back = at("2026-11-24T12:00:00+01:00");
        assert_eq!(
            decide(&s, &back, DAY, false),
            Decision::Wait {
                until: at("2026-11-25T02:00:00+01:00")
            }
        );
    }

    /// Central European time in 2026, DST rules included: +01:00, and +02:00 from 29 March
    /// 01:00 UTC (02:00 local jumps to 03:00) to 25 October 01:00 UTC (03:00 falls back to
    /// 02:00). Enough of a time zone to test DST without a time zone database.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Cet2026;

    impl Cet2026 {
        fn summer_start() -> chrono::NaiveDateTime {
            chrono::NaiveDate::from_ymd_opt(2026, 3, 29)
                .unwrap()
                .and_hms_opt(1, 0, 0)
                .unwrap()
        }

        fn summer_end() -> chrono::NaiveDateTime {
            chrono::NaiveDate::from_ymd_opt(2026, 10, 25)
                .unwrap()
                .and_hms_opt(1, 0, 0)
                .unwrap()
        }

        fn offset(hours: i32) -> FixedOffset {
            FixedOffset::east_opt(hours * 3600).unwrap()
        }
    }

    impl TimeZone for Cet2026 {
        type Offset = FixedOffset;

        fn from_offset(_: &FixedOffset) -> Self {
            Cet2026
        }

        fn offset_from_local_date(
            &self,
            local: &chrono::NaiveDate,
        ) -> chrono::LocalResult<FixedOffset> {
            self.offset_from_local_datetime(&local.and_hms_opt(12, 0, 0).unwrap())
        }

        fn offset_from_local_datetime(
            &self,
            local: &chrono::NaiveDateTime,
        ) -> chrono::LocalResult<FixedOffset> {
            let fits = |hours: i32| {
                let utc = *local - TimeDelta::hours(i64::from(hours));
                self.offset_from_utc_datetime(&utc) == Self::offset(hours)
            };
            match (fits(2), fits(1)) {
                (true, true) => chrono::LocalResult::Ambiguous(Self::offset(2), Self::offset(1)),
                (true, false) => chrono::LocalResult::Single(Self::offset(2)),
                (false, true) => chrono::LocalResult::Single(Self::offset(1)),
                (false, false) => chrono::LocalResult::None,
            }
        }

        fn offset_from_utc_date(&self, utc: &chrono::NaiveDate) -> FixedOffset {
            self.offset_from_utc_datetime(&utc.and_hms_opt(12, 0, 0).unwrap())
        }

        fn offset_from_utc_datetime(&self, utc: &chrono::NaiveDateTime) -> FixedOffset {
            if (Self::summer_start()..Self::summer_end()).contains(utc) {
                Self::offset(2)
            } else {
                Self::offset(1)
            }
        }
    }

    /// [`Cet2026`] as chrono 0.4's `Local` tells it (chronotope/chrono#1625): a repeated local
    /// time's two instants latest first, and 03:00 on 25 October, when the clock goes back, as
    /// repeated too.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Cet2026AsLocal;

    impl TimeZone for Cet2026AsLocal {
        type Offset = FixedOffset;

        fn from_offset(_: &FixedOffset) -> Self {
            Cet2026AsLocal
        }

        fn offset_from_local_date(
            &self,
            local: &chrono::NaiveDate,
        ) -> chrono::LocalResult<FixedOffset> {
            Cet2026.offset_from_local_date(local)
        }

        fn offset_from_local_datetime(
            &self,
            local: &chrono::NaiveDateTime,
        ) -> chrono::LocalResult<FixedOffset> {
            let goes_back_from = chrono::NaiveDate::from_ymd_opt(2026, 10, 25)
                .unwrap()
                .and_hms_opt(3, 0, 0)
                .unwrap();
            match Cet2026.offset_from_local_datetime(local) {
                LocalResult::Ambiguous(earlier, later) => LocalResult::Ambiguous(later, earlier),
                LocalResult::Single(_) if *local == goes_back_from => {
                    LocalResult::Ambiguous(Cet2026::offset(1), Cet2026::offset(2))
                }
                single_or_none => single_or_none,
            }
        }

        fn offset_from_utc_date(&self, utc: &chrono::NaiveDate) -> FixedOffset {
            Cet2026.offset_from_utc_date(utc)
        }

        fn offset_from_utc_datetime(&self, utc: &chrono::NaiveDateTime) -> FixedOffset {
            Cet2026.offset_from_utc_datetime(utc)
        }
    }

    #[test]
    fn the_test_zone_answers_as_chronos_local() {
        let local = |h, m| {
            chrono::NaiveDate::from_ymd_opt(2026, 10, 25)
                .unwrap()
                .and_hms_opt(h, m, 0)
                .unwrap()
        };
        let (plus_1, plus_2) = (Cet2026::offset(1), Cet2026::offset(2));
        for (h, m) in [(2, 30), (3, 0)] {
            assert_eq!(
                Cet2026AsLocal.offset_from_local_datetime(&local(h, m)),
                LocalResult::Ambiguous(plus_1, plus_2)
            );
        }
        assert_eq!(
            EarliestFirst(Cet2026AsLocal).offset_from_local_datetime(&local(2, 30)),
            LocalResult::Ambiguous(plus_2, plus_1)
        );
        assert_eq!(
            EarliestFirst(Cet2026AsLocal).offset_from_local_datetime(&local(3, 0)),
            LocalResult::Single(plus_1)
        );
    }

    fn daily_times_follow_local_time_across_dst_in<Tz: TimeZone>(zone: Tz) {
        let next = |time: &str, after: &str| {
            let s = schedule(daily(time), "2026-01-01T00:00:00+01:00", Some(after));
            pending_due(&s, &zone).unwrap().fixed_offset()
        };
        // Spring forward: 02:30 does not exist on 29 March; it runs right after the gap,
        // then at 02:30 local (now +02:00) again, not an hour off.
        assert_eq!(
            next("02:30", "2026-03-28T02:30:00+01:00"),
            at("2026-03-29T03:00:00+02:00")
        );
        assert_eq!(
            next("02:30", "2026-03-29T03:00:00+02:00"),
            at("2026-03-30T02:30:00+02:00")
        );
        // A 04:00 job is simply at 04:00 local on both sides of the change.
        assert_eq!(
            next("04:00", "2026-03-28T04:00:00+01:00"),
            at("2026-03-29T04:00:00+02:00")
        );
        // Fall back: 02:30 happens twice on 25 October; the job runs once, at the first.
        assert_eq!(
            next("02:30", "2026-10-24T02:30:00+02:00"),
            at("2026-10-25T02:30:00+02:00")
        );
        assert_eq!(
            next("02:30", "2026-10-25T02:30:00+02:00"),
            at("2026-10-26T02:30:00+01:00")
        );
        // 03:00 comes once, an hour after the clock went back.
        assert_eq!(
            next("03:00", "2026-10-24T03:00:00+02:00"),
            at("2026-10-25T03:00:00+01:00")
        );
        // A one-shot for 02:30 made before the change is due at the first 02:30 too.
        let made = at("2026-10-25T01:50:00+02:00").with_timezone(&zone);
        assert_eq!(
            first_once_due("02:30".parse().unwrap(), &made).fixed_offset(),
            at("2026-10-25T02:30:00+02:00")
        );
    }

    #[test]
    fn daily_times_follow_local_time_across_dst() {
        daily_times_follow_local_time_across_dst_in(Cet2026);
        daily_times_follow_local_time_across_dst_in(Cet2026AsLocal);
    }

    fn an_interval_cron_runs_in_both_passes_of_a_fall_back_in<Tz: TimeZone>(zone: Tz) {
        let mut last_due = "2026-10-25T01:40:00+02:00".to_owned();
        let mut runs = Vec::new();
        for _ in 0..8 {
            let every_20_minutes = Timing::Cron {
                cron: "*/20 * * * *".into(),
            };
            let s = schedule(
                every_20_minutes,
                "2026-01-01T00:00:00+01:00",
                Some(&last_due),
            );
            last_due = pending_due(&s, &zone).unwrap().to_rfc3339();
            runs.push(last_due.clone());
        }
        assert_eq!(
            runs,
            [
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:20:00+02:00",
                "2026-10-25T02:40:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T02:20:00+01:00",
                "2026-10-25T02:40:00+01:00",
                "2026-10-25T03:00:00+01:00",
                "2026-10-25T03:20:00+01:00",
            ]
        );
    }

    #[test]
    fn an_interval_cron_runs_in_both_passes_of_a_fall_back() {
        an_interval_cron_runs_in_both_passes_of_a_fall_back_in(Cet2026);
        an_interval_cron_runs_in_both_passes_of_a_fall_back_in(Cet2026AsLocal);
    }

    #[test]
    fn a_punctual_run_in_the_repeated_hour_is_not_missed_with_a_short_grace() {
        let zone = Cet2026AsLocal;
        let in_zone = |text: &str| at(text).with_timezone(&zone);
        let hourly = |last_due: &str| {
            let timing = Timing::Cron {
                cron: "30 * * * *".into(),
            };
            schedule(timing, "2026-01-01T00:00:00+01:00", Some(last_due))
        };
        let grace = TimeDelta::minutes(10);
        let second_pass = in_zone("2026-10-25T02:30:00.500+01:00");
        // The first 02:30 was missed an hour ago, but the second is due now: it runs, once.
        assert_eq!(
            decide(
                &hourly("2026-10-25T01:30:00+02:00"),
                &second_pass,
                grace,
                false
            ),
            Decision::Run {
                latest: in_zone("2026-10-25T02:30:00+01:00"),
                catch_up: true
            }
        );
        // The first 02:30 was run: the second is due, on time.
        assert_eq!(
            decide(
                &hourly("2026-10-25T02:30:00+02:00"),
                &second_pass,
                grace,
                false
            ),
            Decision::Run {
                latest: in_zone("2026-10-25T02:30:00+01:00"),
                catch_up: false
            }
        );
        // At the first pass, the first 02:30 is due.
        assert_eq!(
            decide(
                &hourly("2026-10-25T01:30:00+02:00"),
                &in_zone("2026-10-25T02:30:00.500+02:00"),
                grace,
                false
            ),
            Decision::Run {
                latest: in_zone("2026-10-25T02:30:00+02:00"),
                catch_up: false
            }
        );
    }

    #[test]
    fn grace_durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(TimeDelta::seconds(90)));
        assert_eq!(parse_duration("30m"), Ok(TimeDelta::minutes(30)));
        assert_eq!(parse_duration("24h"), Ok(TimeDelta::hours(24)));
        assert_eq!(parse_duration("2d"), Ok(TimeDelta::days(2)));
        for bad in ["", "h", "24", "1w", "-1h", "1.5h", "99999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_accepts_five_fields_or_six_with_seconds_and_explains_errors() {
        assert!(parse_cron("0 2 * * *").is_ok());
        assert!(parse_cron("30 0 2 * * *").is_ok());
        assert!(parse_cron("*/15 * * * MON-FRI").is_ok());
        let err = parse_cron("61 * * * *").unwrap_err();
        assert!(!err.is_empty());
        assert!(parse_cron("not cron").is_err());
        for wrong in ["* * *", "0 0 2 * * * 2030"] {
            let err = parse_cron(wrong).unwrap_err();
            assert!(err.starts_with("expected 5 fields"), "{err}");
        }
    }

    #[test]
    fn a_cron_expression_no_date_matches_never_fires() {
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 11, 24, 12, 0, 0)
            .unwrap();
        for never in [
            "0 0 31 2 *",
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
            "0 0 0 31 2 *",
        ] {
            let cron = parse_cron(never).unwrap();
            let err = next_fire(&cron, &now).unwrap_err();
            assert!(err.contains("never fires"), "{never}: {err}");
        }
        let leap_day = parse_cron("0 0 29 2 *").unwrap();
        assert_eq!(
            next_fire(&leap_day, &now).unwrap(),
            chrono::Utc.with_ymd_and_hms(2028, 2, 29, 0, 0, 0).unwrap()
        );
        // 2100 is not a leap year: from 2097 on, the next 29 February is in 2104.
        let before_2100 = chrono::Utc.with_ymd_and_hms(2097, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            next_fire(&leap_day, &before_2100).unwrap(),
            chrono::Utc.with_ymd_and_hms(2104, 2, 29, 0, 0, 0).unwrap()
        );
    }
}

/// Property tests of the cron parser: no input makes it panic, and an accepted expression
/// fires next exactly when some date matches its day and month fields. A fixed seed (unless
/// `PROPTEST_RNG_SEED` is set) keeps CI deterministic.
#[cfg(test)]
mod properties {
    use super::*;
    use chrono::{Datelike, Utc};
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    fn config() -> ProptestConfig {
        let default = ProptestConfig::default();
        ProptestConfig {
            cases: 256,
            failure_persistence: None,
            rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
                default.rng_seed
            } else {
                RngSeed::Fixed(0x0063_726f_6e00)
            },
            ..default
        }
    }

    /// One field within `lo..=hi`: `*`, a step, a value, a range or a list.
    fn field(lo: u32, hi: u32) -> BoxedStrategy<String> {
        prop_oneof![
            Just("*".to_owned()),
            (1..=hi).prop_map(|step| format!("*/{step}")),
            (lo..=hi).prop_map(|v| v.to_string()),
            (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            prop::collection::vec(lo..=hi, 1..4).prop_map(|values| values
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")),
        ]
        .boxed()
    }

    /// The days a day or month field names, read the simple way.
    fn members(field: &str, lo: u32, hi: u32) -> Vec<u32> {
        if field == "*" {
            return (lo..=hi).collect();
        }
        if let Some(step) = field.strip_prefix("*/") {
            let step: usize = step.parse().unwrap();
            return (lo..=hi).step_by(step).collect();
        }
        if let Some((a, b)) = field.split_once('-') {
            return (a.parse().unwrap()..=b.parse().unwrap()).collect();
        }
        field.split(',').map(|v| v.parse().unwrap()).collect()
    }

    /// Longest month `month` ever has (a leap February).
    fn longest(month: u32) -> u32 {
        match month {
            2 => 29,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// An instant of 2026, to the second, plus a few milliseconds now and then.
    fn instant_of_2026() -> impl Strategy<Value = DateTime<Utc>> {
        let start = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .unwrap()
            .timestamp();
        (0..365 * 86_400_i64, prop_oneof![Just(0_u32), 0..1000_u32])
            .prop_map(move |(s, ms)| DateTime::from_timestamp(start + s, ms * 1_000_000).unwrap())
    }

    /// An instant within two days of one of the 2026 CET clock changes, where croner's rules
    /// matter.
    fn instant_near_a_clock_change() -> impl Strategy<Value = DateTime<Utc>> {
        let changes = [
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 10, 25, 1, 0, 0).unwrap(),
        ];
        (0..2_usize, -2 * 86_400..2 * 86_400_i64)
            .prop_map(move |(which, s)| changes[which] + TimeDelta::seconds(s))
    }

    fn next_daily_by_croner<Tz: TimeZone>(time: TimeOfDay, after: &DateTime<Tz>) -> DateTime<Tz> {
        daily_cron(time).find_next_occurrence(after, false).unwrap()
    }

    /// The next run of a daily schedule last due at `after`, and of one last due at exactly
    /// that next run (as it is once the run is recorded), are croner's.
    fn agrees_with_croner<Tz: TimeZone>(
        time: TimeOfDay,
        after: &DateTime<Tz>,
    ) -> Result<(), TestCaseError> {
        let mut last_due = after.clone();
        for _ in 0..2 {
            let schedule = Schedule {
                id: 1,
                name: "n".into(),
                sources: vec!["/s".into()],
                timing: Timing::Daily { time },
                options: proto::JobOptions::default(),
                created: DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").unwrap(),
                last_due: Some(last_due.fixed_offset()),
                last_run: None,
                earlier_runs: Vec::new(),
                last_success: None,
                started_run: None,
            };
            let expected = next_daily_by_croner(time, &last_due);
            prop_assert_eq!(
                pending_due(&schedule, &after.timezone()),
                Some(expected.clone()),
                "daily {} after {:?}",
                time,
                last_due
            );
            last_due = expected;
        }
        Ok(())
    }

    fn any_time_of_day() -> impl Strategy<Value = TimeOfDay> {
        (0..24_u8, 0..60_u8).prop_map(|(h, m)| TimeOfDay::new(h, m).unwrap())
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn a_daily_time_comes_next_where_croner_says(
            time in any_time_of_day(),
            after in prop_oneof![instant_of_2026(), instant_near_a_clock_change()],
            east_minutes in -12 * 60..14 * 60_i32,
        ) {
            let fixed = chrono::FixedOffset::east_opt(east_minutes * 60).unwrap();
            agrees_with_croner(time, &after)?;
            agrees_with_croner(time, &after.with_timezone(&tests::Cet2026))?;
            agrees_with_croner(time, &after.with_timezone(&fixed))?;
            agrees_with_croner(time, &after.with_timezone(&chrono::Local))?;
        }

        #[test]
        fn any_text_is_parsed_or_refused_without_panicking(text in any::<String>()) {
            let _ = parse_cron(&text);
        }

        #[test]
        fn cron_like_text_is_parsed_or_refused_without_panicking(
            text in "([0-9*/,\\-LW#?]{1,4} ){4,7}[0-9A-Za-z*/,\\-]{1,4}"
        ) {
            if let Ok(cron) = parse_cron(&text) {
                let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
                let _ = next_fire(&cron, &now);
            }
        }

        #[test]
        fn an_expression_fires_next_exactly_when_a_date_matches_it(
            minute in field(0, 59),
            hour in field(0, 23),
            day in field(1, 31),
            month in field(1, 12),
            seconds in prop::option::of(field(0, 59)),
        ) {
            let expression = match &seconds {
                Some(second) => format!("{second} {minute} {hour} {day} {month} *"),
                None => format!("{minute} {hour} {day} {month} *"),
            };
            let cron = parse_cron(&expression).unwrap();
            let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
            let days = members(&day, 1, 31);
            let some_date_matches = members(&month, 1, 12)
                .iter()
                .any(|&m| days.iter().any(|&d| d <= longest(m)));
            match next_fire(&cron, &now) {
                Ok(next) => {
                    prop_assert!(some_date_matches, "{expression} fires at {next}");
                    prop_assert!(next > now);
                    prop_assert!(days.contains(&next.day()), "{expression}: {next}");
                    prop_assert!(cron.is_time_matching(&next).unwrap(), "{expression}: {next}");
                }
                Err(_) => prop_assert!(!some_date_matches, "{expression} never fires"),
            }
        }
    }
}
