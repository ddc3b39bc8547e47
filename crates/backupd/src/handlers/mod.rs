//! One handler per request, each in its own file; this module routes a parsed [`Command`] to
//! its handler and turns the outcome into a [`Response`] line. Every failure is logged here, once.

mod backups;
mod cancel;
mod create;
mod delete;
mod hello;
mod jobs;
mod list;
mod log_level;
mod ls;
mod prune;
mod remote;
mod restore;
mod run;
mod status;
mod stop;
mod sync;
mod verify;
mod watch;

use crate::destination::LocalFolder;
use crate::events::EventSink;
use crate::format::{Identities, Passphrase};
use crate::key_files::{self, Requester};
use crate::schedules::ScheduleFileError;
use crate::state::Daemon;
use crate::store::StoreError;
use proto::{Command, ErrorCode, Reply, Request, Response};
use std::io;
use std::path::Path;
use tokio::sync::mpsc;

/// A request that failed: the code and the sentence the client shows, and, for a partial
/// failure (some sources of a run, some archives of a verify), the full report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub code: ErrorCode,
    pub message: String,
    pub data: Option<Box<Reply>>,
    /// The handler logged each failure as it happened; the router logs nothing more.
    logged: bool,
}

impl HandlerError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
            logged: false,
        }
    }

    /// A failure that still reports, whose parts were logged as they failed.
    pub fn partial(code: ErrorCode, message: impl Into<String>, data: Reply) -> Self {
        Self {
            data: Some(Box::new(data)),
            logged: true,
            ..Self::new(code, message)
        }
    }
}

impl From<crate::plan::PlanError> for HandlerError {
    fn from(err: crate::plan::PlanError) -> Self {
        let code = match err {
            crate::plan::PlanError::Invalid(_) => ErrorCode::InvalidArguments,
            crate::plan::PlanError::DestinationNotWritable { .. } => {
                ErrorCode::DestinationNotWritable
            }
            crate::plan::PlanError::NameInUse(_) => ErrorCode::NameInUse,
        };
        Self::new(code, err.to_string())
    }
}

impl From<crate::rotation_locks::RepairUnfinished> for HandlerError {
    fn from(err: crate::rotation_locks::RepairUnfinished) -> Self {
        let code = match err.why {
            crate::rotation_locks::Unfinished::Stopped => ErrorCode::ShuttingDown,
            crate::rotation_locks::Unfinished::Failed => ErrorCode::Internal,
        };
        Self::new(code, err.to_string())
    }
}

impl From<ScheduleFileError> for HandlerError {
    fn from(err: ScheduleFileError) -> Self {
        Self::new(ErrorCode::Io, err.to_string())
    }
}

/// The one mapping of store failures to wire codes.
impl From<StoreError> for HandlerError {
    fn from(err: StoreError) -> Self {
        let code = match &err {
            StoreError::ReadDir { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorCode::BackupsDirMissing
            }
            StoreError::ReadArchive { .. } => ErrorCode::ArchiveNotFound,
            StoreError::ManifestMissing { .. }
            | StoreError::ManifestOfSibling { .. }
            | StoreError::ManifestInvalid { .. }
            | StoreError::ChecksumMismatch { .. }
            | StoreError::Decrypt { .. } => ErrorCode::ArchiveInvalid,
            StoreError::WouldOverwrite { .. } => ErrorCode::TargetNotEmpty,
            StoreError::Stopped { .. } => ErrorCode::ShuttingDown,
            StoreError::PathNotInArchive { .. }
            | StoreError::TargetNotDirectory { .. }
            | StoreError::TargetIsSymlink { .. }
            | StoreError::TargetUntrustedLink { .. } => ErrorCode::InvalidArguments,
            StoreError::ReadDir { .. } | StoreError::Target { .. } | StoreError::Extract { .. } => {
                ErrorCode::Io
            }
        };
        Self::new(code, err.to_string())
    }
}

type HandlerResult<T> = Result<T, HandlerError>;

/// Bytes of a refusal's message the log keeps. Messages quote what the client sent (a 1 MiB
/// schedule spec, a command name): logged whole, a few hundred requests rotated the whole
/// history out of the log. The client's answer has it all.
const LOGGED_MESSAGE_MAX: usize = 1024;

fn logged(message: &str) -> std::borrow::Cow<'_, str> {
    proto::one_line::cut(message, LOGGED_MESSAGE_MAX)
}

/// Parses and answers one request line with the response line; event lines, if the request
/// asks for them, go to `events`.
/// `requester` is the peer, whose key files (`--identity`, `--encrypt-to-file`) may be read.
pub async fn handle_line(
    daemon: &Daemon,
    line: &[u8],
    events: mpsc::Sender<String>,
    requester: Requester,
) -> String {
    match Request::parse(line) {
        Ok(request) => handle(daemon, request, events, requester).await,
        Err(err) => {
            tracing::error!("bad request: {}", logged(&err.message));
            Response::failure(err.id, err.code, err.message).to_line()
        }
    }
}

/// Answers one parsed request with the response line.
pub async fn handle(
    daemon: &Daemon,
    request: Request,
    events: mpsc::Sender<String>,
    requester: Requester,
) -> String {
    // Held until the answer's line is made: most of its memory is that line.
    let _turn = match &request.command {
        Command::Backups { long: true, .. } | Command::Ls(_) => {
            daemon.listings.acquire().await.ok()
        }
        _ => None,
    };
    let outcome = match request.command {
        Command::Hello {} => Ok(Reply::Hello(hello::handle())),
        Command::Create(args) => create::handle(daemon, args)
            .await
            .map(|changed| Reply::ScheduleChanged(Box::new(changed))),
        Command::List {} => Ok(Reply::Schedules(list::handle(daemon).await)),
        Command::Delete { index, name } => delete::handle(daemon, index, name)
            .await
            .map(|changed| Reply::ScheduleChanged(Box::new(changed))),
        Command::Stop {} => Ok(stop::handle(daemon)),
        Command::Backups {
            long,
            destination,
            remote,
        } => backups::handle(daemon, long, destination, remote)
            .await
            .map(Reply::Backups),
        Command::Prune(args) => prune::handle(daemon, args).await.map(Reply::Prune),
        Command::Verify(args) => verify::handle(daemon, args, requester)
            .await
            .map(Reply::Verify),
        Command::Restore(args) => restore::handle(daemon, args, requester)
            .await
            .map(Reply::Restore),
        Command::Run(args) => {
            let sink = if args.events {
                EventSink::new(request.id.clone(), events)
            } else {
                EventSink::disabled()
            };
            run::handle(daemon, args, &sink, requester)
                .await
                .map(Reply::Run)
        }
        Command::Status {} => status::handle(daemon)
            .await
            .map(|info| Reply::Status(Box::new(info))),
        Command::Jobs {} => Ok(Reply::Jobs(jobs::handle(daemon))),
        Command::Cancel { job, name } => cancel::handle(daemon, job, name).map(Reply::Cancelled),
        Command::Watch {} => {
            let sink = EventSink::new(request.id.clone(), events);
            Ok(Reply::WatchEnded(watch::handle(daemon, &sink).await))
        }
        Command::LogLevel { level } => log_level::handle(&level).map(Reply::LogLevel),
        Command::Ls(args) => ls::handle(daemon, args, requester)
            .await
            .map(Reply::Listing),
        Command::Sync(args) => sync::handle(daemon, args).await.map(Reply::Synced),
    };
    match outcome {
        // Typed all the way to the line: a list of 10,000 schedules builds no `Value` tree.
        Ok(data) => Response::success_line(request.id, &data),
        Err(err) => {
            if !err.logged {
                tracing::error!("{}", logged(&err.message));
            }
            match err.data {
                Some(data) => Response::failure_with_data(request.id, err.code, err.message, *data),
                None => Response::failure(request.id, err.code, err.message),
            }
            .to_line()
        }
    }
}

/// Runs filesystem work on a blocking thread; a panic there becomes an `internal` error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> HandlerResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| HandlerError::new(ErrorCode::Internal, format!("internal error: {e}")))
}

/// The keys a request gives to open encrypted archives: the identities of the file it names,
/// read on a blocking thread by the rules of [`key_files`], or its passphrase; `None` when it
/// gives neither.
async fn identities_of(
    path: Option<String>,
    passphrase: Option<proto::Passphrase>,
    requester: Requester,
) -> HandlerResult<Option<std::sync::Arc<Identities>>> {
    let invalid = |message: String| HandlerError::new(ErrorCode::InvalidArguments, message);
    let identities = match (path, passphrase) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(invalid("give --identity or --passphrase, not both".into()));
        }
        (Some(path), None) => blocking(move || key_files::read_identities(&path, requester))
            .await?
            .map_err(|e| invalid(e.to_string()))?,
        (None, Some(passphrase)) => {
            let passphrase =
                Passphrase::new(passphrase.into_string()).map_err(|e| invalid(e.to_string()))?;
            // The age crate times a small key derivation here.
            blocking(move || Identities::passphrase(&passphrase)).await?
        }
    };
    Ok(Some(std::sync::Arc::new(identities)))
}

/// An archive named by a client, as the folder holding it and its file name: an absolute
/// path, or a file name inside `folder`.
async fn resolve_archive(folder: &Path, text: &str) -> HandlerResult<(LocalFolder, String)> {
    let named = if text.starts_with('/') {
        LocalFolder::containing(Path::new(text))
    } else if !text.is_empty() && !text.contains('/') {
        Some((LocalFolder::new(folder), text.to_owned()))
    } else {
        None
    };
    let (folder, file) = named.ok_or_else(|| {
        HandlerError::new(
            ErrorCode::InvalidArguments,
            format!("name an archive by absolute path or by file name: {text}"),
        )
    })?;
    let path = folder.dir().join(&file);
    let is_file = tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file());
    if is_file {
        Ok((folder, file))
    } else {
        Err(HandlerError::new(
            ErrorCode::ArchiveNotFound,
            format!("can't find archive: {}", path.display()),
        ))
    }
}

/// A backup name a request selects archives by: one no backup can have is refused, rather
/// than selecting nothing.
fn backup_name(name: Option<&str>) -> HandlerResult<()> {
    match name.map(proto::schedule_spec::validate_name) {
        Some(Err(e)) => Err(HandlerError::new(
            ErrorCode::InvalidArguments,
            e.to_string(),
        )),
        _ => Ok(()),
    }
}

/// A destination folder named by a client, or the default one.
fn destination_or_default(
    daemon: &Daemon,
    destination: Option<&str>,
) -> HandlerResult<LocalFolder> {
    Ok(LocalFolder::new(match destination {
        Some(path) => crate::plan::absolute(path, "destination")?,
        None => daemon.default_destination(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    #[tokio::test]
    async fn listings_built_whole_in_memory_take_turns_and_others_do_not_wait() {
        let home = tempfile::tempdir().unwrap();
        let daemon = Daemon::in_test_home(home.path());
        // Waiting for a turn held here cannot end, whatever the load: a second shows it.
        let answer = |line: &'static str, within: u64| {
            let daemon = &daemon;
            async move {
                let (events, _) = mpsc::channel(1);
                let line = handle_line(daemon, line.as_bytes(), events, Requester::daemon());
                tokio::time::timeout(Duration::from_secs(within), line).await
            }
        };
        let held = daemon
            .listings
            .acquire_many(crate::state::LISTINGS_AT_ONCE as u32)
            .await
            .unwrap();
        let long = r#"{"cmd":"backups","long":true}"#;
        let ls = r#"{"cmd":"ls","archive":"x_20250101_000000.tar.gz"}"#;
        for waiting in [long, ls] {
            assert!(
                answer(waiting, 1).await.is_err(),
                "{waiting} waits its turn"
            );
        }
        let short = (answer(r#"{"cmd":"backups"}"#, 30).await).expect("answered without a turn");
        assert!(short.contains(r#""ok":true"#), "{short}");
        drop(held);
        let long = answer(long, 30).await.expect("its turn came");
        assert!(long.contains(r#""ok":true"#), "{long}");
    }

    #[test]
    fn store_errors_map_to_one_code_each() {
        let path = PathBuf::from("/b/x.tar.gz");
        let code = |err: StoreError| HandlerError::from(err).code;
        let missing = io::Error::from(io::ErrorKind::NotFound);
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            code(StoreError::ReadDir {
                path: path.clone(),
                source: missing
            }),
            ErrorCode::BackupsDirMissing
        );
        assert_eq!(
            code(StoreError::ReadDir {
                path: path.clone(),
                source: denied
            }),
            ErrorCode::Io
        );
        assert_eq!(
            code(StoreError::ReadArchive {
                path: path.clone(),
                source: io::Error::from(io::ErrorKind::NotFound)
            }),
            ErrorCode::ArchiveNotFound
        );
        assert_eq!(
            code(StoreError::ChecksumMismatch {
                path: path.clone(),
                reason: String::new()
            }),
            ErrorCode::ArchiveInvalid
        );
        assert_eq!(
            code(StoreError::WouldOverwrite {
                path,
                entries: vec!["tree/a".into()],
                total: 1
            }),
            ErrorCode::TargetNotEmpty
        );
    }

    #[test]
    fn partial_failures_carry_their_report_and_are_not_logged_twice() {
        let report = Reply::Verify(proto::response::VerifyList {
            archives: Vec::new(),
            ok: 1,
            failed: 1,
        });
        let partial = HandlerError::partial(ErrorCode::VerifyFailed, "1 of 2", report.clone());
        assert!(partial.logged);
        assert_eq!(partial.data.as_deref(), Some(&report));
        assert!(!HandlerError::new(ErrorCode::Io, "x").logged);
    }
}
