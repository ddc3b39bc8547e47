//! How a backup job writes its archives: one [`JobOptions`] type that `create`, `run` and the
//! schedule file all carry, so a new option is one field here, one flag in the client and the
//! code that uses it.
//!
//! On the wire the options sit flat beside a command's own fields (`"compression": "zstd",
//! "level": 19`), as they always have; [`StrictFields`] keeps those objects strict about
//! unknown keys even though serde cannot deny them across a flatten.

use serde::de::{self, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// A compression codec, as jobs and manifests name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    #[default]
    #[serde(alias = "gz")]
    Gzip,
    #[serde(alias = "zst")]
    Zstd,
    None,
}

impl Codec {
    pub const ALL: [Codec; 3] = [Codec::Gzip, Codec::Zstd, Codec::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::None => "none",
        }
    }

    /// The level used when a job names none; `None` for a codec without levels.
    pub fn default_level(self) -> Option<i32> {
        match self {
            Codec::Gzip => Some(6),
            Codec::Zstd => Some(3),
            Codec::None => None,
        }
    }

    /// The levels a codec takes, inclusive.
    pub fn level_range(self) -> Option<(i32, i32)> {
        match self {
            Codec::Gzip => Some((0, 9)),
            Codec::Zstd => Some((1, 22)),
            Codec::None => None,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level outside what the codec takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {codec} level {level}: must be between {min} and {max}")]
pub struct LevelError {
    pub codec: Codec,
    pub level: i32,
    pub min: i32,
    pub max: i32,
}

/// Codec and level of a job, checked when it is made: a `Compression` always works.
/// The level a job asked for is kept as asked (unset stays unset), so that a stored schedule
/// reads back exactly as it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Compression {
    codec: Codec,
    level: Option<i32>,
}

impl Compression {
    /// `level` is ignored for a codec without levels (`none`), as `tar` would.
    pub fn new(codec: Codec, level: Option<i32>) -> Result<Self, LevelError> {
        let level = match (codec.level_range(), level) {
            (None, _) => None,
            (Some((min, max)), Some(level)) if !(min..=max).contains(&level) => {
                return Err(LevelError {
                    codec,
                    level,
                    min,
                    max,
                });
            }
            (Some(_), level) => level,
        };
        Ok(Self { codec, level })
    }

    /// The codec at its default level.
    pub fn of(codec: Codec) -> Self {
        Self { codec, level: None }
    }

    pub fn codec(self) -> Codec {
        self.codec
    }

    /// The level the archive is written at: the one asked for, else the codec's default.
    pub fn level(self) -> Option<i32> {
        self.level.or(self.codec.default_level())
    }

    /// The level as asked for, if any.
    pub fn requested_level(self) -> Option<i32> {
        self.level
    }
}

/// A retention policy; unset fields take the defaults (the original backup script's 7 days
/// and 3 archives). Kept: archives younger than `days`, the newest `min_keep`, and those the
/// `keep_*` rules keep (the newest of each of the last N days, ISO weeks, months); the rest
/// is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
// Read from an object only: see `object_only!`.
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_keep: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
}

impl Retention {
    /// These rules, with `defaults`' where they set none: a job that adds one rule keeps the
    /// configured others.
    pub fn or(self, defaults: Retention) -> Retention {
        Retention {
            days: self.days.or(defaults.days),
            min_keep: self.min_keep.or(defaults.min_keep),
            keep_last: self.keep_last.or(defaults.keep_last),
            keep_daily: self.keep_daily.or(defaults.keep_daily),
            keep_weekly: self.keep_weekly.or(defaults.keep_weekly),
            keep_monthly: self.keep_monthly.or(defaults.keep_monthly),
        }
    }

    /// `own`, with `defaults`' rules where it sets none.
    pub fn merged(own: Option<Retention>, defaults: Option<Retention>) -> Option<Retention> {
        match (own, defaults) {
            (Some(own), Some(defaults)) => Some(own.or(defaults)),
            (own, defaults) => own.or(defaults),
        }
    }
}

/// When a job's notifications go out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// After every run.
    Always,
    /// Only when the job did not back up its source (failed or cancelled).
    #[default]
    Failure,
}

/// How a job's archives are written; unset fields take the daemon's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "wire::JobOptions", into = "wire::JobOptions")]
pub struct JobOptions {
    /// Absolute path of the destination folder (default: `<home>/backups`).
    pub destination: Option<String>,
    /// Default: gzip at level 6.
    pub compression: Option<Compression>,
    /// Glob patterns of entries to leave out.
    pub exclude: Vec<String>,
    /// Which older archives of the same name to delete after a run; unset: 7 days, keep 3.
    pub retention: Option<Retention>,
    /// Verify each archive right after writing it.
    pub verify_after: bool,
    /// Offsite copies: remote names (`[remote.NAME]` of the daemon's config) or
    /// `s3://BUCKET/PREFIX`, each getting the archive and its manifest after the local write.
    pub offsite: Vec<String>,
    /// Write straight to the (single) offsite remote, with no local copy.
    pub offsite_only: bool,
    /// age X25519 public keys (`age1…`) to encrypt archives to; public keys only.
    pub encrypt_to: Vec<String>,
    /// Absolute path of a recipients file (as `age -R` reads it), read by the daemon at plan
    /// time.
    pub encrypt_to_file: Option<String>,
    /// Where to tell how the job ended: `http(s)://` webhooks (a JSON POST), `hc+http(s)://`
    /// healthchecks.io checks, `ntfy+http(s)://` ntfy topics.
    pub notify: Vec<String>,
    /// When notifications go out; unset: on failure.
    pub notify_on: Option<NotifyOn>,
    /// Also send the outcome by email, as the daemon's `[email]` settings say.
    pub notify_email: bool,
    /// Commands whose standard output is archived as a file of their own (database dumps).
    pub source_commands: Vec<CommandSource>,
    /// Commands run around each job.
    pub hooks: Hooks,
    /// Seconds a hook may run before it is killed with its process group; unset: 600.
    pub hook_timeout: Option<u64>,
    /// The retention policy of the remote copies after an upload; unset: `retention`.
    pub offsite_retention: Option<Retention>,
}

/// A command source: `command` (an argv, run without a shell) writes the file `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Read from an object only: see `object_only!`.
#[serde(remote = "Self", deny_unknown_fields)]
pub struct CommandSource {
    /// The file's name in the archive: one path component, by the backup name rule.
    pub name: String,
    pub command: Vec<String>,
}

/// The hooks of a job, each an argv run without a shell; empty: none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
// Read from an object only: see `object_only!`.
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Hooks {
    /// Before anything is written; its failure fails the job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<String>,
    /// After a job that succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// After a job that failed (or was cancelled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<String>,
    /// After every job, last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<String>,
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        *self == Hooks::default()
    }

    /// Each hook this set leaves empty taken from `defaults`.
    pub fn or(self, defaults: &Hooks) -> Hooks {
        let pick = |own: Vec<String>, default: &Vec<String>| {
            if own.is_empty() { default.clone() } else { own }
        };
        Hooks {
            before: pick(self.before, &defaults.before),
            after: pick(self.after, &defaults.after),
            on_failure: pick(self.on_failure, &defaults.on_failure),
            finally: pick(self.finally, &defaults.finally),
        }
    }
}

/// Hook timeout when neither the job nor the configuration sets one: 10 minutes.
pub const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 600;

/// Why a hook timeout of 0 is refused, after the name of the flag or key that set it.
pub const ZERO_HOOK_TIMEOUT: &str =
    "must be at least 1 second: with 0 every hook is killed as it starts";

impl JobOptions {
    /// The compression to write with.
    pub fn compression(&self) -> Compression {
        self.compression.unwrap_or_default()
    }

    /// These options, with `defaults` (the daemon's configuration) where they set nothing.
    pub fn or(self, defaults: &JobOptions) -> JobOptions {
        // Destructured, so that a new option must say how it takes a default.
        let JobOptions {
            destination,
            compression,
            exclude,
            retention,
            verify_after,
            offsite,
            offsite_only,
            encrypt_to,
            encrypt_to_file,
            notify,
            notify_on,
            notify_email,
            source_commands,
            hooks,
            hook_timeout,
            offsite_retention,
        } = self;
        // Recipients are one setting: a job naming any replaces the defaults' whole set.
        let (encrypt_to, encrypt_to_file) = if encrypt_to.is_empty() && encrypt_to_file.is_none() {
            (
                defaults.encrypt_to.clone(),
                defaults.encrypt_to_file.clone(),
            )
        } else {
            (encrypt_to, encrypt_to_file)
        };
        JobOptions {
            destination: destination.or_else(|| defaults.destination.clone()),
            compression: compression.or(defaults.compression),
            exclude: if exclude.is_empty() {
                defaults.exclude.clone()
            } else {
                exclude
            },
            retention: Retention::merged(retention, defaults.retention),
            verify_after: verify_after || defaults.verify_after,
            offsite: if offsite.is_empty() {
                defaults.offsite.clone()
            } else {
                offsite
            },
            offsite_only: offsite_only || defaults.offsite_only,
            encrypt_to,
            encrypt_to_file,
            notify: if notify.is_empty() {
                defaults.notify.clone()
            } else {
                notify
            },
            notify_on: notify_on.or(defaults.notify_on),
            notify_email: notify_email || defaults.notify_email,
            source_commands: if source_commands.is_empty() {
                defaults.source_commands.clone()
            } else {
                source_commands
            },
            hooks: hooks.or(&defaults.hooks),
            hook_timeout: hook_timeout.or(defaults.hook_timeout),
            offsite_retention: Retention::merged(offsite_retention, defaults.offsite_retention),
        }
    }

    /// How long each hook may run.
    pub fn hook_timeout_secs(&self) -> u64 {
        self.hook_timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT_SECS)
    }
}

/// The flat form of [`JobOptions`], where codec and level are two keys. Both conversions name
/// every field, so the compiler points here when an option is added.
mod wire {
    use super::{Codec, CommandSource, Compression, Hooks, LevelError, NotifyOn, Retention};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    pub struct JobOptions {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        destination: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compression: Option<Codec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<i32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retention: Option<Retention>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        verify_after: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        offsite: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        offsite_only: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        encrypt_to: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encrypt_to_file: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        notify: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notify_on: Option<NotifyOn>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        notify_email: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        source_commands: Vec<CommandSource>,
        #[serde(default, skip_serializing_if = "Hooks::is_empty")]
        hooks: Hooks,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook_timeout: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offsite_retention: Option<Retention>,
    }

    impl TryFrom<JobOptions> for super::JobOptions {
        type Error = LevelError;

        fn try_from(wire: JobOptions) -> Result<Self, LevelError> {
            // A level alone is a gzip level, gzip being the default codec.
            let compression = match (wire.compression, wire.level) {
                (None, None) => None,
                (codec, level) => Some(Compression::new(codec.unwrap_or_default(), level)?),
            };
            Ok(Self {
                destination: wire.destination,
                compression,
                exclude: wire.exclude,
                retention: wire.retention,
                verify_after: wire.verify_after,
                offsite: wire.offsite,
                offsite_only: wire.offsite_only,
                encrypt_to: wire.encrypt_to,
                encrypt_to_file: wire.encrypt_to_file,
                notify: wire.notify,
                notify_on: wire.notify_on,
                notify_email: wire.notify_email,
                source_commands: wire.source_commands,
                hooks: wire.hooks,
                hook_timeout: wire.hook_timeout,
                offsite_retention: wire.offsite_retention,
            })
        }
    }

    impl From<super::JobOptions> for JobOptions {
        fn from(options: super::JobOptions) -> Self {
            // Destructured, so that a new option that is not carried here does not compile.
            let super::JobOptions {
                destination,
                compression,
                exclude,
                retention,
                verify_after,
                offsite,
                offsite_only,
                encrypt_to,
                encrypt_to_file,
                notify,
                notify_on,
                notify_email,
                source_commands,
                hooks,
                hook_timeout,
                offsite_retention,
            } = options;
            Self {
                destination,
                compression: compression.map(Compression::codec),
                level: compression.and_then(Compression::requested_level),
                exclude,
                retention,
                verify_after,
                offsite,
                offsite_only,
                encrypt_to,
                encrypt_to_file,
                notify,
                notify_on,
                notify_email,
                source_commands,
                hooks,
                hook_timeout,
                offsite_retention,
            }
        }
    }
}

/// Gives a struct whose derived (de)serializers are its own functions (`remote = "Self"`) the
/// `Deserialize` that reads it from an object (a map) only, and the derived `Serialize`. The
/// derived reader alone also takes an array, its fields by position: `"retention": [0, 0]`
/// was read as `days` 0 and `min_keep` 0, a policy that deletes everything.
macro_rules! object_only {
    ($($name:ident),+) => {$(
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let object = serde_json::Map::deserialize(deserializer)?;
                $name::deserialize(serde_json::Value::Object(object)).map_err(de::Error::custom)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $name::serialize(self, serializer)
            }
        }
    )+};
}

object_only!(Retention, CommandSource, Hooks);

/// The last field of an object whose other fields include a flattened one: it takes whatever
/// key no field took and refuses it, so a typo like `levl` is an error rather than ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StrictFields;

impl<'de> Deserialize<'de> for StrictFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rest = BTreeMap::<String, IgnoredAny>::deserialize(deserializer)?;
        match rest.keys().next() {
            None => Ok(StrictFields),
            Some(key) => Err(de::Error::custom(format_args!("unknown field `{key}`"))),
        }
    }
}

impl Serialize for StrictFields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(std::iter::empty::<((), ())>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_rule_given_keeps_the_default_others() {
        let defaults = Retention {
            days: Some(30),
            min_keep: Some(1),
            keep_last: Some(5),
            ..Retention::default()
        };
        let own = Retention {
            keep_last: Some(1),
            keep_monthly: Some(12),
            ..Retention::default()
        };
        let merged = Retention {
            days: Some(30),
            min_keep: Some(1),
            keep_last: Some(1),
            keep_monthly: Some(12),
            ..Retention::default()
        };
        assert_eq!(Retention::merged(Some(own), Some(defaults)), Some(merged));
        assert_eq!(Retention::merged(None, Some(defaults)), Some(defaults));
        assert_eq!(Retention::merged(Some(own), None), Some(own));
        let options = JobOptions {
            retention: Some(own),
            ..JobOptions::default()
        };
        let configured = JobOptions {
            retention: Some(defaults),
            offsite_retention: Some(defaults),
            ..JobOptions::default()
        };
        let filled = options.or(&configured);
        assert_eq!(filled.retention, Some(merged));
        assert_eq!(filled.offsite_retention, Some(defaults));
    }
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Args {
        #[serde(default)]
        name: Option<String>,
        #[serde(flatten)]
        job: JobOptions,
        #[serde(flatten)]
        strict: StrictFields,
    }

    #[test]
    fn retention_hooks_and_command_sources_are_objects_never_arrays() {
        // Each read positionally from an array before: a retention of days 0, min_keep 0.
        for (field, array) in [
            ("retention", json!([0, 0])),
            ("offsite_retention", json!([0, 0])),
            ("hooks", json!([["/bin/touch", "/tmp/x"]])),
            ("source_commands", json!([["dump", ["/bin/echo"]]])),
        ] {
            let err = serde_json::from_value::<Args>(json!({ field: array })).unwrap_err();
            assert!(err.to_string().contains("expected a map"), "{field}: {err}");
        }
        let value = json!({
            "name": "n",
            "retention": {"days": 0, "min_keep": 1},
            "hooks": {"before": ["/bin/true"]},
            "source_commands": [{"name": "db.sql", "command": ["/bin/echo"]}]
        });
        let args: Args = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(args.job.retention.unwrap().min_keep, Some(1));
        assert_eq!(args.job.hooks.before, ["/bin/true"]);
        assert_eq!(args.job.source_commands[0].name, "db.sql");
        assert_eq!(serde_json::to_value(&args).unwrap(), value);
        // Unknown keys are still refused.
        let err = serde_json::from_value::<Args>(json!({"retention": {"dayz": 1}})).unwrap_err();
        assert!(err.to_string().contains("unknown field `dayz`"), "{err}");
    }

    #[test]
    fn options_sit_flat_and_round_trip() {
        let value = json!({
            "name": "n", "compression": "zstd", "level": 19, "exclude": ["*.tmp"],
            "retention": {"days": 3}, "verify_after": true,
            "offsite": ["offsite", "s3://bkt/p"], "offsite_only": true
        });
        let args: Args = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(
            args.job.compression(),
            Compression::new(Codec::Zstd, Some(19)).unwrap()
        );
        assert_eq!(args.job.retention.unwrap().days, Some(3));
        assert_eq!(serde_json::to_value(&args).unwrap(), value);
    }

    #[test]
    fn unset_options_stay_unset() {
        let args: Args = serde_json::from_value(json!({"compression": "zst"})).unwrap();
        assert_eq!(args.job.compression(), Compression::of(Codec::Zstd));
        assert_eq!(args.job.compression().level(), Some(3));
        assert_eq!(
            serde_json::to_value(&args).unwrap(),
            json!({"name": null, "compression": "zstd"})
        );
        let none: Args = serde_json::from_value(json!({})).unwrap();
        assert_eq!(none.job, JobOptions::default());
        assert_eq!(none.job.compression(), Compression::of(Codec::Gzip));
    }

    #[test]
    fn unknown_keys_and_bad_levels_are_refused() {
        let err = |value| {
            serde_json::from_value::<Args>(value)
                .unwrap_err()
                .to_string()
        };
        assert!(err(json!({"levl": 1})).contains("unknown field `levl`"));
        assert!(err(json!({"compression": "lz4"})).contains("lz4"));
        assert!(err(json!({"level": 10})).contains("invalid gzip level 10"));
        assert!(err(json!({"compression": "zstd", "level": 0})).contains("between 1 and 22"));
        assert!(err(json!({"retention": {"dayz": 1}})).contains("dayz"));
    }

    #[test]
    fn defaults_fill_only_what_a_job_leaves_unset() {
        let defaults = JobOptions {
            destination: Some("/srv/b".into()),
            compression: Some(Compression::of(Codec::Zstd)),
            exclude: vec!["*.tmp".into()],
            retention: Some(Retention {
                days: Some(30),
                ..Retention::default()
            }),
            verify_after: true,
            offsite: vec!["offsite".into()],
            offsite_only: false,
            encrypt_to: vec!["age1default".into()],
            encrypt_to_file: None,
            offsite_retention: Some(Retention {
                days: Some(90),
                ..Retention::default()
            }),
            ..JobOptions::default()
        };
        assert_eq!(JobOptions::default().or(&defaults), defaults);
        let own = JobOptions {
            destination: Some("/mine".into()),
            compression: Some(Compression::of(Codec::None)),
            exclude: vec!["cache/".into()],
            retention: Some(Retention::default()),
            verify_after: false,
            offsite: vec!["s3://bkt/p".into()],
            offsite_only: true,
            encrypt_to: Vec::new(),
            encrypt_to_file: Some("/mine/recipients.txt".into()),
            offsite_retention: None,
            ..JobOptions::default()
        };
        let merged = own.clone().or(&defaults);
        assert_eq!(
            merged,
            JobOptions {
                verify_after: true,
                // Rule by rule: a retention that sets none keeps the configured ones.
                retention: defaults.retention,
                offsite_retention: defaults.offsite_retention,
                ..own
            }
        );
    }

    #[test]
    fn levels_follow_the_codec() {
        assert_eq!(
            Compression::new(Codec::None, Some(99)).unwrap().level(),
            None
        );
        for (codec, good, bad) in [
            (Codec::Gzip, [0, 9], [-1, 10]),
            (Codec::Zstd, [1, 22], [0, 23]),
        ] {
            for level in good {
                assert_eq!(
                    Compression::new(codec, Some(level)).unwrap().level(),
                    Some(level)
                );
            }
            for level in bad {
                assert!(Compression::new(codec, Some(level)).is_err());
            }
        }
    }

    #[test]
    fn notifications_take_the_defaults_where_a_job_sets_none() {
        let defaults = JobOptions {
            notify: vec!["https://example.org/hook".into()],
            notify_on: Some(NotifyOn::Always),
            notify_email: true,
            ..JobOptions::default()
        };
        assert_eq!(JobOptions::default().or(&defaults), defaults);
        let own = JobOptions {
            notify: vec!["ntfy+https://ntfy.sh/mine".into()],
            notify_on: Some(NotifyOn::Failure),
            ..JobOptions::default()
        };
        let merged = own.clone().or(&defaults);
        assert_eq!(merged.notify, own.notify);
        assert_eq!(merged.notify_on, Some(NotifyOn::Failure));
        assert!(merged.notify_email);
        let value = json!({"notify": ["hc+https://hc-ping.com/x"], "notify_on": "always",
            "notify_email": true});
        let args: Args = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(args.job.notify_on, Some(NotifyOn::Always));
        let mut back = serde_json::to_value(&args).unwrap();
        back.as_object_mut().unwrap().remove("name");
        assert_eq!(back, value);
        let err = serde_json::from_value::<Args>(json!({"notify_on": "sometimes"})).unwrap_err();
        assert!(err.to_string().contains("sometimes"), "{err}");
    }

    #[test]
    fn hooks_and_command_sources_ride_on_the_wire_and_take_defaults() {
        let value = json!({
            "source_commands": [{"name": "db.sql", "command": ["sqlite3", "/d.db", ".dump"]}],
            "hooks": {"before": ["true"], "finally": ["sh", "-c", "echo $BACKUPD_STATUS"]},
            "hook_timeout": 5
        });
        let args: Args = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(args.job.source_commands[0].command[2], ".dump");
        assert_eq!(args.job.hooks.before, ["true"]);
        assert_eq!(args.job.hook_timeout_secs(), 5);
        let mut expected = value;
        expected["name"] = serde_json::Value::Null;
        assert_eq!(serde_json::to_value(&args).unwrap(), expected);
        let bad = serde_json::from_value::<Args>(json!({"hooks": {"befor": ["x"]}}));
        assert!(bad.unwrap_err().to_string().contains("befor"));

        let defaults = JobOptions {
            hooks: Hooks {
                before: vec!["d-before".into()],
                after: vec!["d-after".into()],
                ..Hooks::default()
            },
            hook_timeout: Some(60),
            ..JobOptions::default()
        };
        let own = JobOptions {
            hooks: Hooks {
                after: vec!["mine".into()],
                ..Hooks::default()
            },
            ..JobOptions::default()
        };
        let merged = own.or(&defaults);
        assert_eq!(merged.hooks.before, ["d-before"]);
        assert_eq!(merged.hooks.after, ["mine"]);
        assert_eq!(merged.hook_timeout_secs(), 60);
        assert_eq!(JobOptions::default().hook_timeout_secs(), 600);
    }
}
