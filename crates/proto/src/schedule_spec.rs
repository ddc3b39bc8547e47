//! The schedule manager's one-shot grammar, `path;HH:MM;name`, and the rules for backup names and times of
//! day that the client and the daemon must both apply.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Longest backup name accepted; it becomes part of a file name.
pub const MAX_NAME_LEN: usize = 64;

/// Why a schedule spec, name or time was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The spec does not follow `path;HH:MM;name`.
    #[error("malformed schedule: {0}")]
    Malformed(String),
    /// The spec is well formed but its path is relative, which only the client can resolve.
    #[error("malformed schedule: {0}: the path must be absolute")]
    RelativePath(String),
    /// A backup name outside `[A-Za-z0-9._-]{1,64}` or starting with `.`.
    #[error(
        "invalid backup name {0:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -, not starting with '.'"
    )]
    InvalidName(String),
    /// A time of day that is not `HH:MM` within 00:00–23:59.
    #[error("invalid time {0:?}: expected HH:MM between 00:00 and 23:59")]
    InvalidTime(String),
}

/// A wall-clock time of day with minute precision, written `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    hour: u8,
    minute: u8,
}

impl TimeOfDay {
    /// A time of day, or `None` outside 00:00–23:59.
    pub fn new(hour: u8, minute: u8) -> Option<Self> {
        (hour < 24 && minute < 60).then_some(Self { hour, minute })
    }

    pub fn hour(self) -> u8 {
        self.hour
    }

    pub fn minute(self) -> u8 {
        self.minute
    }
}

impl FromStr for TimeOfDay {
    type Err = SpecError;

    /// Strictly `HH:MM`: two digits, a colon, two digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || SpecError::InvalidTime(s.to_owned());
        let bytes = s.as_bytes();
        if bytes.len() != 5 || bytes[2] != b':' {
            return Err(invalid());
        }
        let two_digits = |pair: &[u8]| -> Option<u8> {
            match pair {
                [a @ b'0'..=b'9', b @ b'0'..=b'9'] => Some((a - b'0') * 10 + (b - b'0')),
                _ => None,
            }
        };
        let hour = two_digits(&bytes[0..2]).ok_or_else(invalid)?;
        let minute = two_digits(&bytes[3..5]).ok_or_else(invalid)?;
        Self::new(hour, minute).ok_or_else(invalid)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a backup name: 1–64 characters of `[A-Za-z0-9._-]`, not starting with `.`, so that it
/// is always a plain file name (no `/`, never `.` or `..`).
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.chars().all(allowed);
    if ok {
        Ok(())
    } else {
        Err(SpecError::InvalidName(name.to_owned()))
    }
}

/// A parsed one-shot schedule: back up `path` once at the next `time`, as `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub path: String,
    pub time: TimeOfDay,
    pub name: String,
}

impl ScheduleSpec {
    /// Parses `path;HH:MM;name`. The path may itself contain `;` (the other two fields cannot),
    /// so the spec is split from the right. Any violation is [`SpecError::Malformed`] carrying
    /// the input as typed, which is the schedule manager's message.
    pub fn parse(input: &str) -> Result<Self, SpecError> {
        let malformed = || SpecError::Malformed(input.to_owned());
        let mut fields = input.rsplitn(3, ';');
        let (Some(name), Some(time), Some(path)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed());
        };
        if path.is_empty() || path.contains('\0') {
            return Err(malformed());
        }
        let time: TimeOfDay = time.parse().map_err(|_| malformed())?;
        validate_name(name).map_err(|_| malformed())?;
        Ok(Self {
            path: path.to_owned(),
            time,
            name: name.to_owned(),
        })
    }

    /// Parses a spec whose path must already be absolute, as the daemon requires: it has no
    /// working directory of the user's to resolve a relative one against.
    pub fn parse_absolute(input: &str) -> Result<Self, SpecError> {
        let spec = Self::parse(input)?;
        if spec.path.starts_with('/') {
            Ok(spec)
        } else {
            Err(SpecError::RelativePath(input.to_owned()))
        }
    }
}

impl fmt::Display for ScheduleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};{};{}", self.path, self.time, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_schedule_managers_example() {
        let spec = ScheduleSpec::parse("test2;16:07;office_docs").unwrap();
        assert_eq!(spec.path, "test2");
        assert_eq!(spec.time, TimeOfDay::new(16, 7).unwrap());
        assert_eq!(spec.name, "office_docs");
        assert_eq!(spec.to_string(), "test2;16:07;office_docs");
    }

    #[test]
    fn path_may_contain_semicolons() {
        let spec = ScheduleSpec::parse("/data/a;b;00:00;n").unwrap();
        assert_eq!(spec.path, "/data/a;b");
        assert_eq!(spec.time.to_string(), "00:00");
    }

    #[test]
    fn accepts_the_edges_of_the_day_and_of_names() {
        assert!(ScheduleSpec::parse("p;00:00;a").is_ok());
        assert!(ScheduleSpec::parse("p;23:59;a").is_ok());
        let longest = "x".repeat(MAX_NAME_LEN);
        assert!(ScheduleSpec::parse(&format!("p;12:00;{longest}")).is_ok());
        assert!(ScheduleSpec::parse("p;12:00;A-z_0.9").is_ok());
    }

    #[test]
    fn rejects_every_malformed_case_with_the_schedule_managers_message() {
        let too_long = format!("p;12:00;{}", "x".repeat(MAX_NAME_LEN + 1));
        let cases = [
            "",
            "test;",
            "test",
            ";16:07;name",
            "test;16:07;",
            "test;16:07",
            "test;24:00;name",
            "test;23:60;name",
            "test;1:07;name",
            "test;16:7;name",
            "test;16-07;name",
            "test;16:07 ;name",
            "test; 16:07;name",
            "test;+1:07;name",
            "test;١٦:07;name",
            "test;16:07;.hidden",
            "test;16:07;..",
            "test;16:07;a/b",
            "test;16:07;a b",
            "test;16:07;naïve",
            "te\0st;16:07;name",
            too_long.as_str(),
        ];
        for input in cases {
            let err = ScheduleSpec::parse(input).unwrap_err();
            assert_eq!(
                err,
                SpecError::Malformed(input.to_owned()),
                "input {input:?}"
            );
            assert_eq!(err.to_string(), format!("malformed schedule: {input}"));
        }
    }

    #[test]
    fn the_daemon_requires_an_absolute_path() {
        assert!(ScheduleSpec::parse_absolute("/srv/data;01:00;srv").is_ok());
        let err = ScheduleSpec::parse_absolute("data;01:00;srv").unwrap_err();
        assert_eq!(err, SpecError::RelativePath("data;01:00;srv".to_owned()));
        // A malformed spec is reported as malformed, not as relative.
        assert!(matches!(
            ScheduleSpec::parse_absolute("data;"),
            Err(SpecError::Malformed(_))
        ));
    }

    #[test]
    fn time_of_day_round_trips_through_json() {
        let time: TimeOfDay = serde_json::from_str("\"07:05\"").unwrap();
        assert_eq!(serde_json::to_string(&time).unwrap(), "\"07:05\"");
        assert!(serde_json::from_str::<TimeOfDay>("\"7:05\"").is_err());
    }

    #[test]
    fn names_are_plain_file_names() {
        for good in ["a", "backup_test", "x.y-z", "A1"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", ".x", "a/b", "a\\b", "a b", "a\n"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}

/// Property tests of the grammar: no input makes it panic, and every valid spec reads back as
/// written. A fixed seed (unless `PROPTEST_RNG_SEED` is set) keeps CI deterministic.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    fn config() -> ProptestConfig {
        let default = ProptestConfig::default();
        ProptestConfig {
            cases: 512,
            failure_persistence: None,
            rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
                default.rng_seed
            } else {
                RngSeed::Fixed(0x0062_6163_6b75_7064)
            },
            ..default
        }
    }

    /// Names by the rule: 1–64 of `[A-Za-z0-9._-]`, not starting with `.`.
    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}"
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_input_is_parsed_or_refused_without_panicking(input in any::<String>()) {
            match ScheduleSpec::parse(&input) {
                Ok(spec) => prop_assert_eq!(spec.to_string(), input.clone()),
                Err(err) => prop_assert_eq!(err, SpecError::Malformed(input.clone())),
            }
            let _ = ScheduleSpec::parse_absolute(&input);
            let _ = input.parse::<TimeOfDay>();
            let _ = validate_name(&input);
        }

        #[test]
        fn near_misses_are_parsed_or_refused_without_panicking(
            input in "[/a;:0-9.\\- \u{0}é]{0,24}"
        ) {
            if let Ok(spec) = ScheduleSpec::parse(&input) {
                prop_assert_eq!(spec.to_string(), input);
            }
        }

        #[test]
        fn valid_specs_round_trip(
            path in "[^\u{0}]{1,40}",
            hour in 0u8..24,
            minute in 0u8..60,
            name in name(),
        ) {
            let text = format!("{path};{hour:02}:{minute:02};{name}");
            let spec = ScheduleSpec::parse(&text).unwrap();
            prop_assert_eq!(&spec.path, &path);
            prop_assert_eq!(spec.time, TimeOfDay::new(hour, minute).unwrap());
            prop_assert_eq!(&spec.name, &name);
            prop_assert_eq!(spec.to_string(), text.clone());
            prop_assert_eq!(ScheduleSpec::parse_absolute(&text).is_ok(), path.starts_with('/'));
        }

        #[test]
        fn times_outside_the_day_are_refused(hour in 0u8..100, minute in 0u8..100) {
            let text = format!("{hour:02}:{minute:02}");
            prop_assert_eq!(text.parse::<TimeOfDay>().is_ok(), hour < 24 && minute < 60);
        }
    }
}
