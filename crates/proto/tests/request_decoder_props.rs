//! Property tests of the request decoder: whatever bytes arrive, `Request::parse` returns a
//! command or a typed error and never panics; every valid command survives encode → decode.
//! The random seed and the count (256 cases a property) are fixed, so CI runs the same cases every
//! time.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use proto::Passphrase;
use proto::request::{CreateArgs, LsArgs, PruneArgs, RestoreArgs, RunArgs, SyncArgs, VerifyArgs};
use proto::{Codec, Command, Compression, ErrorCode, JobOptions, NotifyOn, Request, Retention};
use serde_json::{Map, Value};

fn config() -> Config {
    Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x0bac_0bd5),
        failure_persistence: None,
        ..Config::default()
    }
}

/// The codes a request line alone can earn, before any handler runs.
const DECODER_CODES: &[ErrorCode] = &[
    ErrorCode::InvalidUtf8,
    ErrorCode::InvalidJson,
    ErrorCode::InvalidRequest,
    ErrorCode::MissingCommand,
    ErrorCode::UnknownCommand,
    ErrorCode::InvalidArguments,
];

/// Keys that reach the decoder's interesting branches, and some that do not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("cmd".to_owned()),
        Just("id".to_owned()),
        Just("index".to_owned()),
        Just("name".to_owned()),
        Just("sources".to_owned()),
        Just("retention".to_owned()),
        Just("days".to_owned()),
        Just("level".to_owned()),
        Just("compression".to_owned()),
        "[a-z_]{1,8}",
        any::<String>(),
    ]
}

/// Strings that are sometimes a command's name.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(Command::NAMES).prop_map(str::to_owned),
        Just("../../etc/passwd".to_owned()),
        any::<String>(),
    ]
}

/// Any JSON value, nested a few levels, with keys the decoder looks at.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A request object: `cmd` most often a real command, then arbitrary arguments.
fn request_object() -> impl Strategy<Value = Value> {
    (
        word(),
        prop::collection::vec((key(), json()), 0..5),
        proptest::option::of(json()),
    )
        .prop_map(|(cmd, args, id)| {
            let mut object: Map<String, Value> = args.into_iter().collect();
            object.insert("cmd".to_owned(), Value::String(cmd));
            if let Some(id) = id {
                object.insert("id".to_owned(), id);
            }
            Value::Object(object)
        })
}

fn retention() -> impl Strategy<Value = Option<Retention>> {
    proptest::option::of(
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(days, keep_last)| Retention {
                days,
                keep_last,
                ..Retention::default()
            }),
    )
}

fn job_options() -> impl Strategy<Value = JobOptions> {
    let notify_on =
        proptest::option::of(prop_oneof![Just(NotifyOn::Always), Just(NotifyOn::Failure)]);
    (
        (
            proptest::option::of(any::<String>()),
            proptest::option::of(prop_oneof![
                Just(Compression::of(Codec::Gzip)),
                Just(Compression::of(Codec::Zstd)),
                (1..=19i32).prop_map(|level| Compression::new(Codec::Zstd, Some(level)).unwrap()),
            ]),
            prop::collection::vec(any::<String>(), 0..3),
            retention(),
            any::<bool>(),
        ),
        (
            prop::collection::vec(any::<String>(), 0..2),
            any::<bool>(),
            retention(),
        ),
        (
            prop::collection::vec(any::<String>(), 0..2),
            proptest::option::of(any::<String>()),
        ),
        (
            prop::collection::vec(any::<String>(), 0..2),
            notify_on,
            any::<bool>(),
        ),
        (
            prop::collection::vec(
                (
                    any::<String>(),
                    prop::collection::vec(any::<String>(), 0..3),
                )
                    .prop_map(|(name, command)| proto::job::CommandSource { name, command }),
                0..2,
            ),
            prop::collection::vec(prop::collection::vec(any::<String>(), 0..2), 4..=4),
            proptest::option::of(any::<u64>()),
        ),
    )
        .prop_map(
            |(
                (destination, compression, exclude, retention, verify_after),
                (offsite, offsite_only, offsite_retention),
                (encrypt_to, encrypt_to_file),
                (notify, notify_on, notify_email),
                (source_commands, mut hooks, hook_timeout),
            )| JobOptions {
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
                hooks: proto::job::Hooks {
                    finally: hooks.pop().unwrap_or_default(),
                    on_failure: hooks.pop().unwrap_or_default(),
                    after: hooks.pop().unwrap_or_default(),
                    before: hooks.pop().unwrap_or_default(),
                },
                hook_timeout,
                offsite_retention,
            },
        )
}

/// Valid commands of every kind, with arbitrary strings and numbers in them.
fn command() -> impl Strategy<Value = Command> {
    let text = || any::<String>();
    let maybe_text = || proptest::option::of(any::<String>());
    prop_oneof![
        Just(Command::Hello {}),
        Just(Command::List {}),
        Just(Command::Stop {}),
        Just(Command::Status {}),
        Just(Command::Jobs {}),
        Just(Command::Watch {}),
        text().prop_map(|level| Command::LogLevel { level }),
        text().prop_map(|spec| Command::Create(CreateArgs::spec(spec))),
        (
            maybe_text(),
            prop::collection::vec(text(), 0..3),
            maybe_text(),
            job_options()
        )
            .prop_map(|(name, sources, cron, job)| Command::Create(CreateArgs {
                name,
                sources,
                cron,
                job,
                ..CreateArgs::default()
            })),
        (proptest::option::of(any::<usize>()), maybe_text())
            .prop_map(|(index, name)| Command::Delete { index, name }),
        (any::<bool>(), maybe_text(), maybe_text()).prop_map(|(long, destination, remote)| {
            Command::Backups {
                long,
                destination,
                remote,
            }
        }),
        (
            maybe_text(),
            maybe_text(),
            retention(),
            any::<bool>(),
            maybe_text()
        )
            .prop_map(
                |(name, destination, retention, dry_run, remote)| Command::Prune(PruneArgs {
                    name,
                    destination,
                    retention,
                    dry_run,
                    remote,
                })
            ),
        (
            maybe_text(),
            maybe_text(),
            any::<bool>(),
            maybe_text(),
            maybe_text(),
            maybe_text(),
            maybe_text()
        )
            .prop_map(
                |(archive, name, all, destination, identity, remote, passphrase)| {
                    Command::Verify(VerifyArgs {
                        archive,
                        name,
                        all,
                        destination,
                        identity,
                        passphrase: passphrase.map(Passphrase::new),
                        remote,
                    })
                }
            ),
        (
            text(),
            text(),
            prop::collection::vec(text(), 0..3),
            (any::<bool>(), any::<bool>()),
            maybe_text(),
            maybe_text(),
            maybe_text()
        )
            .prop_map(
                |(archive, to, paths, (overwrite, no_sync), identity, remote, passphrase)| {
                    Command::Restore(RestoreArgs {
                        archive,
                        to,
                        paths,
                        overwrite,
                        no_sync,
                        identity,
                        passphrase: passphrase.map(Passphrase::new),
                        remote,
                    })
                }
            ),
        (text(), maybe_text(), maybe_text(), maybe_text()).prop_map(
            |(archive, path, identity, passphrase)| Command::Ls(LsArgs {
                archive,
                path,
                identity,
                passphrase: passphrase.map(Passphrase::new),
            })
        ),
        (
            prop::collection::vec(text(), 0..3),
            maybe_text(),
            job_options(),
            any::<bool>(),
            any::<bool>(),
            maybe_text()
        )
            .prop_map(
                |(sources, name, job, dry_run, events, passphrase)| Command::Run(RunArgs {
                    sources,
                    name,
                    job,
                    dry_run,
                    events,
                    passphrase: passphrase.map(Passphrase::new),
                    ..RunArgs::default()
                })
            ),
        (proptest::option::of(any::<u64>()), maybe_text())
            .prop_map(|(job, name)| Command::Cancel { job, name }),
        (text(), maybe_text(), maybe_text()).prop_map(|(remote, name, destination)| {
            Command::Sync(SyncArgs {
                remote,
                name,
                destination,
            })
        }),
    ]
}

/// The decoder's contract for one line: a command, or an error whose code it may give.
fn check_line(line: &[u8]) {
    match Request::parse(line) {
        Ok(request) => {
            // What was understood can be said again and means the same.
            let again = Request::parse(request.to_line().trim_end().as_bytes()).unwrap();
            assert_eq!(again.command, request.command);
        }
        Err(err) => {
            assert!(DECODER_CODES.contains(&err.code), "{:?}: {err}", err.code);
            assert!(!err.message.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_give_a_command_or_a_typed_error(line in prop::collection::vec(any::<u8>(), 0..256)) {
        check_line(&line);
    }

    #[test]
    fn any_json_object_gives_a_command_or_a_typed_error(object in request_object()) {
        check_line(serde_json::to_string(&object).unwrap().as_bytes());
    }

    #[test]
    fn a_damaged_request_gives_a_command_or_a_typed_error(
        object in request_object(),
        cut in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut line = serde_json::to_vec(&object).unwrap();
        let at = cut.index(line.len());
        line[at] = byte;
        check_line(&line);
        line.truncate(at);
        check_line(&line);
    }

    #[test]
    fn every_valid_command_round_trips(command in command(), id in proptest::option::of(any::<i64>())) {
        let request = Request { id: id.map(Value::from), command };
        let line = request.to_line();
        prop_assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let parsed = Request::parse(line.trim_end().as_bytes()).unwrap();
        prop_assert_eq!(parsed, request);
    }

    #[test]
    fn a_key_given_twice_is_refused(object in request_object(), key in key(), value in json()) {
        let text = serde_json::to_string(&object).unwrap();
        // Inject the key twice at the top level, whatever the object already holds.
        let pair = format!("{}:{}", serde_json::to_string(&key).unwrap(), value);
        let doubled = format!("{{{pair},{pair},{}", &text[1..]);
        let err = Request::parse(doubled.as_bytes()).unwrap_err();
        prop_assert_eq!(err.code, ErrorCode::InvalidRequest);
        prop_assert!(err.message.contains("duplicate key"), "{}", err.message);
    }
}
