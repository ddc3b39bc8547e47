//! Requests: one JSON object per line, `{"id": <optional, echoed>, "cmd": "<name>", …args}`.

use crate::error::ErrorCode;
use crate::job::{JobOptions, Retention, StrictFields};
use crate::passphrase::Passphrase;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A command and its arguments; the variant name is the `cmd` on the wire. Commands without
/// arguments are empty struct variants so that unknown fields are rejected for them too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Daemon and protocol versions.
    Hello {},
    /// Add a schedule: a one-shot spec, or a recurring one.
    Create(CreateArgs),
    /// The schedules, in index order.
    List {},
    /// Remove a schedule, by `index` (from 0) or by `name`.
    Delete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Shut the daemon down gracefully.
    Stop {},
    /// The archive files in the home's `backups/` (or `destination`); with `long`, grouped
    /// with their details.
    Backups {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        long: bool,
        /// Absolute path of another folder to list.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        destination: Option<String>,
        /// List this offsite remote (a `[remote.NAME]` or `s3://BUCKET/PREFIX`) instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote: Option<String>,
    },
    /// Apply a retention policy to a destination now.
    Prune(PruneArgs),
    /// Check archives against their manifests and read them to the end.
    Verify(VerifyArgs),
    /// Extract an archive into an empty directory.
    Restore(RestoreArgs),
    /// Back up sources now.
    Run(RunArgs),
    /// The daemon at a glance: versions, uptime, paths, running jobs, schedules, free space.
    Status {},
    /// The running jobs.
    Jobs {},
    /// Cancel one running job by its id (`job`; `id` is the request's own), or every running
    /// job of a backup or schedule `name`.
    Cancel {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Follow the daemon's events until the client closes the connection.
    Watch {},
    /// Change what a running daemon logs: `error`, `warn`, `info`, `debug`, `trace`, or
    /// `target=level,…` (as `--log-level`).
    LogLevel { level: String },
    /// The entries of an archive (or of one path in it), read from its tar stream.
    Ls(LsArgs),
    /// Upload to an offsite remote every local archive (and its manifest) it lacks.
    Sync(SyncArgs),
}

/// Arguments of `create`: either `spec` (the schedule manager's `/abs/path;HH:MM;name`, run
/// once), or `name`, `sources` and one of `daily` / `cron` with optional job options; either
/// with `replace`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreateArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// `HH:MM`, every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<String>,
    /// A cron expression: 5 fields, or 6 with seconds first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A schedule of that name is replaced by this one (its definition: sources, timing,
    /// options), keeping its id, creation time and runs; without it, such a name is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
    #[serde(flatten)]
    pub job: JobOptions,
    #[serde(flatten)]
    pub strict: StrictFields,
}

impl CreateArgs {
    /// The one-shot form.
    pub fn spec(spec: impl Into<String>) -> Self {
        Self {
            spec: Some(spec.into()),
            ..Self::default()
        }
    }
}

/// Arguments of `run`: what to back up, where, and how; or `schedule`, the name of a stored
/// schedule to run now with its own settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunArgs {
    /// Absolute paths of the source directories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Run this stored schedule instead of `sources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Name of the archives (default: each source folder's name); only with one source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub job: JobOptions,
    /// Encrypt to this passphrase (age's scrypt recipient) instead of keys: typed at the
    /// client's terminal for this one run, never stored, never part of a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<Passphrase>,
    /// Report what would be written, and write nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Send event lines (progress) before the response.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub events: bool,
    #[serde(flatten)]
    pub strict: StrictFields,
}

impl Command {
    /// Every `cmd` the daemon knows, to tell an unknown command from bad arguments.
    pub const NAMES: &'static [&'static str] = &[
        "hello",
        "create",
        "list",
        "delete",
        "stop",
        "backups",
        "run",
        "prune",
        "verify",
        "restore",
        "status",
        "jobs",
        "cancel",
        "watch",
        "log_level",
        "ls",
        "sync",
    ];
}

/// Arguments of `prune`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneArgs {
    /// Only this backup name (default: every name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Absolute path of the folder to prune (default: `<home>/backups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Prune this offsite remote instead of a folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// Arguments of `verify`: one `archive` (absolute path, or a file name in the folder), every
/// archive of `name`, or `all`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// Absolute path of the folder (default: `<home>/backups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Absolute path of an age identity file the daemon reads to decrypt encrypted archives
    /// (the key itself never travels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Verify the copies on this offsite remote instead (`archive` is then a file name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// A passphrase typed at the client's terminal, for archives encrypted with one; used
    /// for this request only, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<Passphrase>,
}

/// Arguments of `restore`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreArgs {
    /// Absolute path, or a file name in `<home>/backups`.
    pub archive: String,
    /// Absolute path of a directory (created if missing).
    pub to: String,
    /// Restore only these subpaths (relative to the source folder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Replace existing files of the same name; without it, any would fail the restore.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overwrite: bool,
    /// Answer without waiting for what was written to reach the disk, as `tar -x` does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_sync: bool,
    /// Absolute path of an age identity file the daemon reads to decrypt an encrypted
    /// archive (the key itself never travels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// A passphrase typed at the client's terminal, for archives encrypted with one; used
    /// for this request only, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<Passphrase>,
    /// Restore from this offsite remote (`archive` is then a file name), streaming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// Arguments of `sync`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncArgs {
    /// The remote: a `[remote.NAME]` of `backupd.toml`, or `s3://BUCKET/PREFIX`.
    pub remote: String,
    /// Only archives of this backup name (default: every name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Absolute path of the local folder (default: `<home>/backups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

/// Arguments of `ls`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LsArgs {
    /// Absolute path, or a file name in `<home>/backups`.
    pub archive: String,
    /// Only this entry and what is under it, relative to the source folder or including
    /// its top-level name (as `restore`'s `paths`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Absolute path of an age identity file the daemon reads to decrypt an encrypted
    /// archive (the key itself never travels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// A passphrase typed at the client's terminal, for archives encrypted with one; used
    /// for this request only, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<Passphrase>,
}

/// The largest `id`, as JSON. Every event line of a `watch` or a run repeats it, so a
/// larger one would multiply what the daemon queues for a slow reader.
pub const MAX_ID_BYTES: usize = 1024;

/// Why `id` cannot be echoed as sent, if it cannot.
fn id_problem(id: &Value) -> Option<String> {
    let size = id.to_string().len();
    if size > MAX_ID_BYTES {
        return Some(format!(
            "\"id\" is {size} bytes of JSON; at most {MAX_ID_BYTES}"
        ));
    }
    // Read as a float, it would come back changed (`1.0`, `1.8446744073709552e19`).
    if let Value::Number(n) = id
        && !(n.is_i64() || n.is_u64())
    {
        return Some(format!(
            "\"id\" {n} is not an integer a response can echo exactly; use a string or a 64-bit integer"
        ));
    }
    None
}

/// A request: an optional `id` the response echoes, and the command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    #[serde(flatten)]
    pub command: Command,
}

/// A request line that could not be turned into a [`Request`]; carries the `id` when one was
/// readable so that the error response can still echo it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub id: Option<Value>,
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    fn new(id: Option<Value>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
        }
    }
}

impl Request {
    pub fn new(command: Command) -> Self {
        Self { id: None, command }
    }

    /// Parses one request line (without its newline), naming precisely what is wrong: invalid
    /// UTF-8, invalid JSON, not an object, no `cmd`, an unknown `cmd`, or bad arguments.
    pub fn parse(line: &[u8]) -> Result<Self, RequestError> {
        let text = std::str::from_utf8(line).map_err(|e| {
            RequestError::new(
                None,
                ErrorCode::InvalidUtf8,
                format!("request is not valid UTF-8: {e}"),
            )
        })?;
        let value: Value = serde_json::from_str(text).map_err(|e| {
            RequestError::new(
                None,
                ErrorCode::InvalidJson,
                format!("request is not valid JSON: {e}"),
            )
        })?;
        let Value::Object(mut object) = value else {
            return Err(RequestError::new(
                None,
                ErrorCode::InvalidRequest,
                "request must be a JSON object like {\"cmd\":\"list\"}",
            ));
        };
        let id = object.remove("id").filter(|id| !id.is_null());
        let id_problem = id.as_ref().and_then(id_problem);
        if let Some(key) = crate::unique_keys::first_duplicate_key(text) {
            // Of two ids, which was meant is unknown; any other duplicate leaves a good id clear.
            let id = id.filter(|_| key != "id" && id_problem.is_none());
            return Err(RequestError::new(
                id,
                ErrorCode::InvalidRequest,
                format!("duplicate key {key:?} in the request; each key may appear once"),
            ));
        }
        if let Some(problem) = id_problem {
            return Err(RequestError::new(None, ErrorCode::InvalidRequest, problem));
        }
        let command = Self::parse_command(object).map_err(|(code, message)| RequestError {
            id: id.clone(),
            code,
            message,
        })?;
        Ok(Self { id, command })
    }

    fn parse_command(object: Map<String, Value>) -> Result<Command, (ErrorCode, String)> {
        let name = match object.get("cmd") {
            None => {
                return Err((
                    ErrorCode::MissingCommand,
                    "request has no \"cmd\"".to_owned(),
                ));
            }
            Some(Value::String(name)) => name.clone(),
            Some(other) => {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("\"cmd\" must be a string, not {other}"),
                ));
            }
        };
        if !Command::NAMES.contains(&name.as_str()) {
            return Err((
                ErrorCode::UnknownCommand,
                format!(
                    "unknown command {name:?}; known commands: {}",
                    Command::NAMES.join(", ")
                ),
            ));
        }
        serde_json::from_value(Value::Object(object)).map_err(|e| {
            (
                ErrorCode::InvalidArguments,
                format!("invalid arguments for {name:?}: {e}"),
            )
        })
    }

    /// The request as one line of JSON, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a request always serializes");
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Request, RequestError> {
        Request::parse(text.as_bytes())
    }

    #[test]
    fn parses_commands_and_echoes_ids() {
        let request = parse(r#"{"id":7,"cmd":"create","spec":"/a;01:02;n"}"#).unwrap();
        assert_eq!(request.id, Some(json!(7)));
        assert_eq!(
            request.command,
            Command::Create(CreateArgs::spec("/a;01:02;n"))
        );
        assert_eq!(
            parse(r#"{"cmd":"list"}"#).unwrap().command,
            Command::List {}
        );
        assert_eq!(
            parse(r#"{"cmd":"delete","index":3,"id":"x"}"#)
                .unwrap()
                .command,
            Command::Delete {
                index: Some(3),
                name: None
            }
        );
    }

    #[test]
    fn every_command_round_trips_and_is_named() {
        let commands = [
            Command::Hello {},
            Command::Create(CreateArgs::spec("s")),
            Command::Create(CreateArgs {
                name: Some("n".into()),
                sources: vec!["/a".into()],
                cron: Some("0 2 * * *".into()),
                ..CreateArgs::default()
            }),
            Command::Create(CreateArgs {
                replace: true,
                ..CreateArgs::spec("s")
            }),
            Command::List {},
            Command::Delete {
                index: Some(1),
                name: None,
            },
            Command::Stop {},
            Command::Backups {
                long: true,
                destination: Some("/srv/b".into()),
                remote: None,
            },
            Command::Prune(PruneArgs {
                retention: Some(Retention {
                    days: Some(7),
                    ..Retention::default()
                }),
                ..PruneArgs::default()
            }),
            Command::Verify(VerifyArgs {
                all: true,
                ..VerifyArgs::default()
            }),
            Command::Restore(RestoreArgs {
                archive: "a.tar.gz".into(),
                to: "/r".into(),
                paths: vec!["docs".into()],
                overwrite: true,
                no_sync: true,
                identity: None,
                remote: Some("off".into()),
                passphrase: Some(Passphrase::new("p")),
            }),
            Command::Run(RunArgs {
                sources: vec!["/a".into()],
                job: JobOptions {
                    compression: Some(crate::job::Compression::of(crate::job::Codec::Zstd)),
                    ..JobOptions::default()
                },
                dry_run: true,
                ..RunArgs::default()
            }),
            Command::Status {},
            Command::Jobs {},
            Command::Cancel {
                job: Some(3),
                name: None,
            },
            Command::Watch {},
            Command::LogLevel {
                level: "debug".into(),
            },
            Command::Ls(LsArgs {
                archive: "a.tar.gz".into(),
                path: Some("docs".into()),
                identity: Some("/k.txt".into()),
                passphrase: None,
            }),
            Command::Sync(SyncArgs {
                remote: "s3://bkt/p".into(),
                name: Some("docs".into()),
                destination: None,
            }),
        ];
        assert_eq!(commands.len(), Command::NAMES.len() + 2);
        for command in commands {
            let line = Request::new(command.clone()).to_line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            let parsed = parse(line.trim_end()).unwrap();
            assert_eq!(parsed.command, command);
            let value: Value = serde_json::from_str(&line).unwrap();
            let name = value["cmd"].as_str().unwrap();
            assert!(Command::NAMES.contains(&name), "{name}");
        }
    }

    #[test]
    fn create_replace_is_read_when_given_and_left_out_when_false() {
        let with = parse(r#"{"cmd":"create","spec":"/a;01:02;n","replace":true}"#).unwrap();
        let Command::Create(args) = with.command else {
            panic!("a create");
        };
        assert!(args.replace);
        // Older clients send no `replace`: a plain create, as before.
        let Command::Create(args) = parse(r#"{"cmd":"create","spec":"/a;01:02;n"}"#)
            .unwrap()
            .command
        else {
            panic!("a create");
        };
        assert!(!args.replace);
        let line = Request::new(Command::Create(args)).to_line();
        assert!(!line.contains("replace"), "{line}");
        let code = |text: &str| parse(text).unwrap_err().code;
        assert_eq!(
            code(r#"{"cmd":"create","spec":"/a;01:02;n","replace":"yes"}"#),
            ErrorCode::InvalidArguments
        );
    }

    #[test]
    fn each_kind_of_bad_request_has_its_own_code() {
        let code = |text: &[u8]| Request::parse(text).unwrap_err().code;
        assert_eq!(code(b"\xff\xfe{}"), ErrorCode::InvalidUtf8);
        assert_eq!(code(b"{\"cmd\":"), ErrorCode::InvalidJson);
        assert_eq!(code(b""), ErrorCode::InvalidJson);
        assert_eq!(code(b"[1,2]"), ErrorCode::InvalidRequest);
        assert_eq!(code(b"{\"cmd\":5}"), ErrorCode::InvalidRequest);
        assert_eq!(
            code(b"{\"cmd\":\"hello\",\"cmd\":\"stop\"}"),
            ErrorCode::InvalidRequest
        );
        assert_eq!(code(b"{\"id\":1}"), ErrorCode::MissingCommand);
        assert_eq!(code(b"{\"cmd\":\"explode\"}"), ErrorCode::UnknownCommand);
        assert_eq!(
            code(b"{\"cmd\":\"delete\",\"index\":\"3\"}"),
            ErrorCode::InvalidArguments
        );
        assert_eq!(
            code(b"{\"cmd\":\"delete\",\"index\":-1}"),
            ErrorCode::InvalidArguments
        );
        assert_eq!(
            code(b"{\"cmd\":\"list\",\"bogus\":1}"),
            ErrorCode::InvalidArguments
        );
        assert_eq!(
            code(b"{\"cmd\":\"run\",\"sources\":[\"/a\"],\"levl\":1}"),
            ErrorCode::InvalidArguments
        );
    }

    #[test]
    fn a_duplicate_key_is_refused_by_name_at_any_depth() {
        let err = parse(r#"{"cmd":"hello","cmd":"stop"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(
            err.message.contains("duplicate key \"cmd\""),
            "{}",
            err.message
        );
        let err = parse(r#"{"cmd":"prune","retention":{"days":1,"days":9}}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(err.message.contains("\"days\""), "{}", err.message);
        // The answer still carries an id that is not itself in doubt.
        let err = parse(r#"{"id":5,"cmd":"hello","cmd":"stop"}"#).unwrap_err();
        assert_eq!(err.id, Some(json!(5)));
        let err = parse(r#"{"id":5,"cmd":"hello","id":6}"#).unwrap_err();
        assert_eq!((err.code, err.id), (ErrorCode::InvalidRequest, None));
    }

    #[test]
    fn an_id_over_the_limit_is_refused_and_not_echoed() {
        let at_limit = format!(
            r#"{{"id":"{}","cmd":"hello"}}"#,
            "i".repeat(MAX_ID_BYTES - 2)
        );
        assert!(parse(&at_limit).is_ok());
        let over = format!(
            r#"{{"id":"{}","cmd":"hello"}}"#,
            "i".repeat(MAX_ID_BYTES - 1)
        );
        let err = parse(&over).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert_eq!(err.id, None);
        assert!(err.message.contains("at most 1024"), "{}", err.message);
    }

    #[test]
    fn a_number_id_must_be_an_integer_echoed_exactly() {
        assert_eq!(
            parse(r#"{"id":-7,"cmd":"hello"}"#).unwrap().id,
            Some(json!(-7))
        );
        let max = parse(r#"{"id":18446744073709551615,"cmd":"hello"}"#).unwrap();
        assert_eq!(max.id, Some(json!(u64::MAX)));
        for id in ["18446744073709551616", "1.5", "1.0", "-0", "1e3"] {
            let err = parse(&format!(r#"{{"id":{id},"cmd":"hello"}}"#)).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{id}");
            assert!(
                err.message.contains("use a string"),
                "{id}: {}",
                err.message
            );
        }
    }

    #[test]
    fn errors_after_the_object_is_read_still_carry_the_id() {
        let err = parse(r#"{"id":"abc","cmd":"nope"}"#).unwrap_err();
        assert_eq!(err.id, Some(json!("abc")));
        assert!(err.message.contains("nope"));
    }
}
