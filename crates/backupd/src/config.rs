//! The daemon's optional configuration file, `<home>/backupd.toml` (or `--config PATH`):
//! daemon-wide settings and the job defaults that runs and schedules fall back on.
//! Precedence: command-line flag > environment > this file > built-in default. Anything
//! unknown or invalid stops the daemon at start, naming the file, the line and the reason.
//!
//! ```toml
//! max_jobs = 2
//! catch_up_grace = "12h"
//! log_level = "info"
//! log_format = "text"        # or "json"
//! log_max_bytes = 10485760   # rotate past this size; 0: never
//! log_keep = 5               # rotated files kept
//! runs_kept = 10             # outcomes each schedule keeps (its last run and earlier ones)
//! socket_group = "backup"    # members may use the socket too (mode 0660, this group)
//! idle_timeout = "60s"       # a connection that sends nothing is closed after this
//! line_timeout = "5s"        # a request line, once begun, must end within this
//! max_connections_per_uid = 64
//! sparse_files = true        # files with holes stored sparse; false: holes read as zeros
//!
//! [defaults]            # what a run or schedule uses where it sets nothing
//! destination = "/srv/backups"
//! compression = "zstd"
//! level = 3
//! exclude = ["*.tmp"]
//! verify_after = true
//! retention = { days = 14, min_keep = 3 }
//!
//! [remote.offsite]      # an S3 remote jobs name with --offsite offsite (see `remote`)
//! bucket = "my-backups"
//! encrypt_to = ["age1…"]             # age public keys; archives become .tar.gz.age
//! encrypt_to_file = "/etc/backupd/recipients.txt"   # or a recipients file, read at each run
//! ```

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::TimeDelta;
use proto::JobOptions;
use proto::job::StrictFields;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::engine::ExcludeSet;
use crate::log::{LogFormat, Rotation};
use crate::notifications::JobNotifications;
use crate::notifications::email::{EmailError, EmailSettings};

/// File name of the configuration inside the home.
pub const CONFIG_FILE: &str = "backupd.toml";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("can't read config file {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    #[error("config file {path}, line {line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The settings a configuration file gives, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    pub max_jobs: Option<u16>,
    pub catch_up_grace: Option<TimeDelta>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    /// `Some(0)`: never rotate.
    pub log_max_bytes: Option<u64>,
    pub log_keep: Option<usize>,
    pub runs_kept: Option<usize>,
    /// The group whose members may use the socket (name or number, resolved at start).
    pub socket_group: Option<String>,
    /// The line of `socket_group`, for the error of a group that cannot be resolved.
    pub socket_group_line: Option<usize>,
    pub idle_timeout: Option<std::time::Duration>,
    pub line_timeout: Option<std::time::Duration>,
    pub max_connections_per_uid: Option<usize>,
    /// `Some(false)`: a file's holes are read and stored as zeros, no GNU sparse entries.
    pub sparse_files: Option<bool>,
    /// What jobs fall back on.
    pub defaults: JobOptions,
    /// The `[remote.NAME]` tables: S3 remotes for offsite copies.
    pub remotes: std::collections::BTreeMap<String, crate::remote::RemoteConfig>,
    /// How to send email about jobs (`[email]`).
    pub email: Option<EmailSettings>,
    /// The keys the file sets (`max_jobs`, `defaults.level`, `remote.offsite`), sorted.
    pub keys: Vec<String>,
}

/// The longest configuration file read; a real one is a few KiB.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The most rotated log files kept.
const MAX_LOG_KEEP: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    max_jobs: Option<Spanned<u16>>,
    catch_up_grace: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    log_format: Option<LogFormat>,
    log_max_bytes: Option<u64>,
    log_keep: Option<Spanned<usize>>,
    runs_kept: Option<Spanned<usize>>,
    socket_group: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    line_timeout: Option<Spanned<String>>,
    max_connections_per_uid: Option<Spanned<usize>>,
    sparse_files: Option<bool>,
    defaults: Option<Spanned<Defaults>>,
    remote: Option<std::collections::BTreeMap<String, Spanned<crate::remote::table::RemoteTable>>>,
    email: Option<Spanned<EmailSettings>>,
}

#[derive(Debug, Deserialize)]
struct Defaults {
    #[serde(flatten)]
    job: JobOptions,
    #[serde(flatten)]
    _strict: StrictFields,
}

impl Config {
    /// Reads `explicit` (which must exist), else `<home>/backupd.toml` if there is one.
    pub fn load(explicit: Option<&Path>, home: &Path) -> Result<Self, ConfigError> {
        let (path, required) = match explicit {
            Some(path) => (path.to_owned(), true),
            None => (home.join(CONFIG_FILE), false),
        };
        // It may name hooks, which the daemon runs as its user: root, often.
        match crate::fsutil::read_trusted(&path, crate::fsutil::Links::Follow, MAX_CONFIG_BYTES) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(cause) => Err(ConfigError::Read { path, cause }),
        }
    }

    /// Parses and checks a configuration's text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let invalid = |span: Option<Range<usize>>, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: span.map_or(1, |span| line_of(text, span.start)),
            reason,
        };
        let file: File = toml::from_str(text).map_err(|e| {
            let span = e
                .span()
                .map(|span| defaults_key_at_fault(text, &span, e.message()).unwrap_or(span));
            // The parser's message may not name the key; the line does.
            let at = span
                .clone()
                .and_then(|span| text.lines().nth(line_of(text, span.start) - 1))
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map_or_else(String::new, |line| format!(" (in `{line}`)"));
            invalid(span, format!("{}{at}", e.message()))
        })?;
        let mut config = Config {
            path: Some(path.to_owned()),
            keys: keys_set(text),
            log_format: file.log_format,
            log_max_bytes: file.log_max_bytes,
            sparse_files: file.sparse_files,
            ..Config::default()
        };
        if let Some(keep) = file.log_keep {
            // Rotation renames every kept file in turn: a huge count would never end.
            if *keep.get_ref() > MAX_LOG_KEEP {
                return Err(invalid(
                    Some(keep.span()),
                    format!("log_keep must be at most {MAX_LOG_KEEP}"),
                ));
            }
            config.log_keep = Some(keep.into_inner());
        }
        if let Some(max_jobs) = file.max_jobs {
            if *max_jobs.get_ref() == 0 {
                return Err(invalid(
                    Some(max_jobs.span()),
                    "max_jobs must be at least 1".into(),
                ));
            }
            config.max_jobs = Some(max_jobs.into_inner());
        }
        if let Some(runs) = file.runs_kept {
            if *runs.get_ref() == 0 {
                return Err(invalid(
                    Some(runs.span()),
                    "runs_kept must be at least 1".into(),
                ));
            }
            config.runs_kept = Some(runs.into_inner());
        }
        if let Some(group) = file.socket_group {
            if group.get_ref().is_empty() {
                return Err(invalid(
                    Some(group.span()),
                    "socket_group must name a group".into(),
                ));
            }
            config.socket_group_line = Some(line_of(text, group.span().start));
            config.socket_group = Some(group.into_inner());
        }
        for (key, value, slot) in [
            ("idle_timeout", file.idle_timeout, &mut config.idle_timeout),
            ("line_timeout", file.line_timeout, &mut config.line_timeout),
        ] {
            if let Some(value) = value {
                let parsed = crate::timing::parse_duration(value.get_ref())
                    .ok()
                    .and_then(|d| d.to_std().ok())
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        invalid(
                            Some(value.span()),
                            format!(
                                "{key}: invalid duration {:?}: use a number above 0 with s, m, \
                                 h or d (e.g. 5s)",
                                value.get_ref()
                            ),
                        )
                    })?;
                *slot = Some(parsed);
            }
        }
        if let Some(cap) = file.max_connections_per_uid {
            if *cap.get_ref() == 0 {
                return Err(invalid(
                    Some(cap.span()),
                    "max_connections_per_uid must be at least 1".into(),
                ));
            }
            config.max_connections_per_uid = Some(cap.into_inner());
        }
        if let Some(grace) = file.catch_up_grace {
            let parsed = crate::timing::parse_duration(grace.get_ref()).map_err(|reason| {
                invalid(Some(grace.span()), format!("catch_up_grace: {reason}"))
            })?;
            config.catch_up_grace = Some(parsed);
        }
        if let Some(level) = file.log_level {
            crate::log::check_level(level.get_ref())
                .map_err(|e| invalid(Some(level.span()), e.to_string()))?;
            config.log_level = Some(level.into_inner());
        }
        if let Some(defaults) = file.defaults {
            let table = defaults.span();
            let at = |key: &str| Some(key_span(text, "defaults", key).unwrap_or(table.clone()));
            let job = defaults.into_inner().job;
            if let Some(destination) = &job.destination
                && !destination.starts_with('/')
            {
                return Err(invalid(
                    at("destination"),
                    format!("defaults.destination must be an absolute path: {destination}"),
                ));
            }
            ExcludeSet::new(&job.exclude)
                .map_err(|e| invalid(at("exclude"), format!("defaults.exclude: {e}")))?;
            crate::format::Recipients::parse(job.encrypt_to.iter().map(String::as_str))
                .map_err(|e| invalid(at("encrypt_to"), format!("defaults.encrypt_to: {e}")))?;
            JobNotifications::from_options(&job)
                .map_err(|e| invalid(at("notify"), format!("defaults.notify: {e}")))?;
            if job.hook_timeout == Some(0) {
                return Err(invalid(
                    at("hook_timeout"),
                    format!("defaults.hook_timeout {}", proto::job::ZERO_HOOK_TIMEOUT),
                ));
            }
            if let Some(file) = &job.encrypt_to_file
                && !file.starts_with('/')
            {
                return Err(invalid(
                    at("encrypt_to_file"),
                    format!("defaults.encrypt_to_file must be an absolute path: {file}"),
                ));
            }
            config.defaults = job;
        }
        if let Some(remotes) = file.remote {
            config.remotes = crate::remote::table::read(remotes)
                .map_err(|(span, reason)| invalid(Some(span), reason))?;
        }
        if let Some(email) = file.email {
            let span = email.span();
            let email = email.into_inner();
            email.check().map_err(|e| {
                let at = match e {
                    EmailError::CleartextLogin { .. } => key_span(text, "email", "tls"),
                    _ => None,
                };
                invalid(Some(at.unwrap_or(span)), e.to_string())
            })?;
            config.email = Some(email);
        }
        Ok(config)
    }
}

impl Config {
    /// The log file's rotation: the configured size and count, else the defaults.
    pub fn log_rotation(&self) -> Rotation {
        let default = Rotation::default();
        Rotation {
            max_bytes: match self.log_max_bytes {
                Some(0) => None,
                Some(max) => Some(max),
                None => default.max_bytes,
            },
            keep: self.log_keep.unwrap_or(default.keep),
        }
    }
}

/// The keys a valid file sets: those of `[defaults]` and `[email]` one by one, a remote by
/// its name.
fn keys_set(text: &str) -> Vec<String> {
    let Ok(document) = DeTable::parse(text) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (key, value) in document.get_ref() {
        let key = key.get_ref();
        match value.get_ref() {
            DeValue::Table(remotes) if key == "remote" => {
                keys.extend(
                    remotes
                        .keys()
                        .map(|name| format!("remote.{}", name.get_ref())),
                );
            }
            DeValue::Table(table) => {
                keys.extend(table.keys().map(|sub| format!("{key}.{}", sub.get_ref())));
            }
            _ => keys.push(key.to_string()),
        }
    }
    keys.sort();
    keys
}

/// The keys of the table `[name]`, each with the span of its name.
fn table_of<'a>(text: &'a str, name: &str) -> Option<(Range<usize>, DeTable<'a>)> {
    let document = DeTable::parse(text).ok()?.into_inner();
    let (_, found) = document
        .into_iter()
        .find(|(key, _)| key.get_ref() == name)?;
    let span = found.span();
    match found.into_inner() {
        DeValue::Table(table) => Some((span, table)),
        _ => None,
    }
}

/// Where the table `[table]` sets `key`.
fn key_span(text: &str, table: &str, key: &str) -> Option<Range<usize>> {
    let (_, table) = table_of(text, table)?;
    table
        .keys()
        .find(|name| name.get_ref() == key)
        .map(Spanned::span)
}

/// The `[defaults]` key a parse error at `error_span` is about. Its fields are flattened into
/// `JobOptions`, which leaves the parser only the table's header to report. The key at fault is
/// the one whose removal lets the table parse (of several, the one the `message` names);
/// failing that, the first that fails on its own.
fn defaults_key_at_fault(
    text: &str,
    error_span: &Range<usize>,
    message: &str,
) -> Option<Range<usize>> {
    let (span, table) = table_of(text, "defaults")?;
    if *error_span != span {
        return None;
    }
    let parses = |keep: &dyn Fn(&str) -> bool| {
        let mut part = DeTable::new();
        for (key, value) in table.iter().filter(|(key, _)| keep(key.get_ref())) {
            part.insert(key.clone(), value.clone());
        }
        let part = Spanned::new(span.clone(), part);
        Defaults::deserialize(toml::de::Deserializer::from(part)).is_ok()
    };
    let names = || table.keys().map(|key| (key.get_ref().as_ref(), key.span()));
    let culprits: Vec<(&str, Range<usize>)> = names()
        .filter(|(name, _)| parses(&|other| other != *name))
        .collect();
    let named = culprits.iter().find(|(name, _)| message.contains(name));
    if let Some((_, span)) = named.or(culprits.first()) {
        return Some(span.clone());
    }
    names()
        .find(|(name, _)| !parses(&|other| other == *name))
        .map(|(_, span)| span)
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Codec, Compression};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/backupd.toml"), text)
    }

    #[test]
    fn a_full_file_reads() {
        let config = parse(
            "max_jobs = 2\ncatch_up_grace = \"12h\"\nlog_level = \"debug\"\n\n[defaults]\n\
             destination = \"/srv/b\"\ncompression = \"zstd\"\nlevel = 5\nexclude = [\"*.tmp\"]\n\
             verify_after = true\nretention = { days = 14 }\n",
        )
        .unwrap();
        assert_eq!(config.max_jobs, Some(2));
        assert_eq!(config.catch_up_grace, Some(TimeDelta::hours(12)));
        assert_eq!(config.log_level.as_deref(), Some("debug"));
        assert_eq!(config.defaults.destination.as_deref(), Some("/srv/b"));
        assert_eq!(
            config.defaults.compression,
            Some(Compression::new(Codec::Zstd, Some(5)).unwrap())
        );
        assert_eq!(config.defaults.retention.unwrap().days, Some(14));
        assert!(config.defaults.verify_after);
        assert_eq!(
            config.keys,
            [
                "catch_up_grace",
                "defaults.compression",
                "defaults.destination",
                "defaults.exclude",
                "defaults.level",
                "defaults.retention",
                "defaults.verify_after",
                "log_level",
                "max_jobs",
            ]
        );
        assert_eq!(parse("").unwrap().defaults, JobOptions::default());
        let edge = parse(
            "socket_group = \"backup\"\nidle_timeout = \"2m\"\nline_timeout = \"3s\"\n\
             max_connections_per_uid = 8\n",
        )
        .unwrap();
        assert_eq!(edge.socket_group.as_deref(), Some("backup"));
        assert_eq!(edge.idle_timeout, Some(std::time::Duration::from_secs(120)));
        assert_eq!(edge.line_timeout, Some(std::time::Duration::from_secs(3)));
        assert_eq!(edge.max_connections_per_uid, Some(8));
        let remote = parse(
            "[remote.minio]\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\n\
             bucket = \"bkt\"\nprefix = \"/host/\"\npart_size = \"8MiB\"\n\
             upload_concurrency = 2\nrequest_timeout = \"30s\"\nretries = 3\n\
             credentials_file = \"/etc/creds\"\nprofile = \"b\"\nobject_lock_days = 7\n\
             object_lock_mode = \"compliance\"\n",
        )
        .unwrap();
        let minio = &remote.remotes["minio"];
        assert_eq!(remote.keys, ["remote.minio"]);
        assert_eq!(minio.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(minio.url(), "s3://bkt/host");
        assert_eq!(minio.part_size, 8 << 20);
        assert_eq!(minio.upload_concurrency, 2);
        assert_eq!(minio.request_timeout, std::time::Duration::from_secs(30));
        assert_eq!(minio.retries, 3);
        assert_eq!(minio.profile.as_deref(), Some("b"));
        assert_eq!(minio.object_lock_days, Some(7));
        assert_eq!(
            minio.object_lock_mode,
            crate::remote::object_lock::LockMode::Compliance
        );
        assert!(minio.allow_http && !minio.virtual_hosted);
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_reason() {
        let cases = [
            ("max_jobs = 2\nmax_job = 3\n", 2, "max_job"),
            ("max_jobs = 0\n", 1, "at least 1"),
            ("\nruns_kept = 0\n", 2, "runs_kept"),
            ("\ncatch_up_grace = \"soon\"\n", 2, "catch_up_grace"),
            ("log_level = \"loud\"\n", 1, "loud"),
            ("\nlog_format = \"xml\"\n", 2, "xml"),
            ("log_keep = -1\n", 1, "log_keep"),
            ("\nlog_keep = 1001\n", 2, "log_keep must be at most 1000"),
            ("[defaults]\nlevel = 99\n", 2, "level 99"),
            ("[defaults]\ncompresion = \"zstd\"\n", 2, "compresion"),
            ("\n\n[defaults]\ndestination = \"rel\"\n", 4, "absolute"),
            ("[defaults]\nexclude = [\"[x\"]\n", 2, "[x"),
            ("[defaults]\nencrypt_to = [\"age1nope\"]\n", 2, "encrypt_to"),
            (
                "[defaults]\nhook_timeout = 0\n",
                2,
                "defaults.hook_timeout must be at least 1 second",
            ),
            (
                "[defaults]\nencrypt_to_file = \"keys.txt\"\n",
                2,
                "absolute",
            ),
            ("max_jobs = \"two\"\n", 1, "max_jobs"),
            ("\nline_timeout = \"0s\"\n", 2, "line_timeout"),
            ("idle_timeout = \"soon\"\n", 1, "idle_timeout"),
            (
                "max_connections_per_uid = 0\n",
                1,
                "max_connections_per_uid",
            ),
            ("socket_group = \"\"\n", 1, "socket_group"),
            ("[remote.x]\nbucket = \"B\"\n", 2, "remote.x.bucket"),
            (
                "[remote.x]\nbucket = \"bkt\"\npart_size = \"1MiB\"\n",
                3,
                "part_size",
            ),
            (
                "[remote.x]\nbucket = \"bkt\"\nendpoint = \"http://h\"\n",
                3,
                "allow_http",
            ),
            ("[remote.x]\nbucket = \"bkt\"\nbukket = 1\n", 3, "bukket"),
            ("\n[remote.x]\nprefix = \"p\"\n", 2, "bucket"),
            (
                "[remote.x]\nbucket = \"bkt\"\n\nupload_concurrency = 0\n",
                4,
                "upload_concurrency",
            ),
            (
                "[remote.x]\nbucket = \"bkt\"\nprofile = \"p\"\n",
                3,
                "credentials_file",
            ),
            (
                "[remote.x]\nbucket = \"bkt\"\nobject_lock_mode = \"compliance\"\n",
                3,
                "needs object_lock_days",
            ),
            (
                "[remote.x]\nbucket = \"bkt\"\nobject_lock_days = 1\nobject_lock_mode = \"x\"\n",
                4,
                "object_lock_mode",
            ),
            // The key at fault among others, in a flattened table whose error has no line.
            (
                "[defaults]\ncompression = \"zstd\"\nlevel = 19\nverify_after = 3\n",
                4,
                "in `verify_after = 3`",
            ),
            (
                "[defaults]\ndestination = \"/b\"\n\nlevel = 99\n",
                4,
                "invalid gzip level 99",
            ),
            (
                "[defaults]\ndestination = \"/b\"\nretention = { days = -1 }\n",
                3,
                "-1",
            ),
            ("not toml", 1, ""),
        ];
        for (text, line, needle) in cases {
            let err = parse(text).unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("config file /etc/backupd.toml, line {line}: ")),
                "{text:?}: {message}"
            );
            assert!(message.contains(needle), "{text:?}: {message}");
        }
    }

    #[test]
    fn a_missing_default_file_is_no_config_but_a_named_one_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Config::load(None, dir.path()).unwrap(), Config::default());
        let missing = dir.path().join("nope.toml");
        assert!(matches!(
            Config::load(Some(&missing), dir.path()),
            Err(ConfigError::Read { .. })
        ));
        std::fs::write(dir.path().join(CONFIG_FILE), "max_jobs = 3\n").unwrap();
        assert_eq!(Config::load(None, dir.path()).unwrap().max_jobs, Some(3));
    }

    #[test]
    fn a_file_others_could_have_written_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, "max_jobs = 3\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let err = Config::load(None, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("is writable by group or others (mode 664)"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // A link is followed (configuration management links files into place): what counts
        // is the file it names.
        let link = dir.path().join("linked.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert_eq!(
            Config::load(Some(&link), dir.path()).unwrap().max_jobs,
            Some(3)
        );
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let err = Config::load(None, dir.path()).unwrap_err().to_string();
            assert!(err.contains("owned by uid 65534"), "{err}");
        }
    }

    #[test]
    fn the_email_section_is_checked_and_holds_no_password() {
        use crate::notifications::email::TlsMode;
        let config = parse(
            "[email]\nserver = \"smtp.example.org\"\nfrom = \"b@example.org\"\n\
             to = [\"a@example.org\"]\nusername = \"u\"\npassword_env = \"P\"\n",
        )
        .unwrap();
        let email = config.email.unwrap();
        assert_eq!(email.tls, TlsMode::Starttls);
        assert_eq!(email.password_env.as_deref(), Some("P"));
        let cases = [
            (
                "[email]\nserver = \"h\"\nfrom = \"b@example.org\"\nto = [\"a@example.org\"]\n\
                 password = \"x\"\n",
                5,
                "password",
            ),
            (
                "\n[email]\nserver = \"h\"\nfrom = \"b@example.org\"\nto = []\n",
                2,
                "to must list",
            ),
            (
                "[email]\nserver = \"h\"\nfrom = \"b@example.org\"\nto = [\"a\"]\ntls = \"ssl\"\n",
                5,
                "ssl",
            ),
            ("[defaults]\nnotify = [\"ftp://x\"]\n", 2, "defaults.notify"),
            (
                "[email]\nserver = \"192.0.2.2\"\nfrom = \"b@example.org\"\n\
                 to = [\"a@example.org\"]\ntls = \"none\"\nusername = \"u\"\npassword_env = \"P\"\n",
                5,
                "tls = \"none\" would send the password in clear text to 192.0.2.2",
            ),
        ];
        for (text, line, needle) in cases {
            let message = parse(text).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("config file /etc/backupd.toml, line {line}: ")),
                "{text:?}: {message}"
            );
            assert!(message.contains(needle), "{text:?}: {message}");
        }
    }
}
