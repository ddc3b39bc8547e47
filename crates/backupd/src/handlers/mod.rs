//! One handler per request, each in its own file; this module routes a parsed [`Command`] to
//! its handler and turns the outcome into a [`Response`]. Every failure is logged here, once.

mod backups;
mod create;
mod delete;
mod hello;
mod list;
mod prune;
mod restore;
mod run;
mod stop;
mod verify;

use crate::events::EventSink;
use crate::schedules::StoreError;
use crate::state::Daemon;
use proto::{Command, ErrorCode, Request, Response};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

/// A request that failed: the code and the sentence the client shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub code: ErrorCode,
    pub message: String,
}

impl HandlerError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
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
        };
        Self::new(code, err.to_string())
    }
}

impl From<StoreError> for HandlerError {
    fn from(err: StoreError) -> Self {
        Self::new(ErrorCode::Io, err.to_string())
    }
}

type HandlerResult<T> = Result<T, HandlerError>;

/// Parses and answers one request line; event lines, if the request asks for them, go to
/// `events`.
pub async fn handle_line(daemon: &Daemon, line: &[u8], events: mpsc::Sender<String>) -> Response {
    match Request::parse(line) {
        Ok(request) => handle(daemon, request, events).await,
        Err(err) => {
            tracing::error!("bad request: {}", err.message);
            Response::failure(err.id, err.code, err.message)
        }
    }
}

/// Answers one parsed request.
pub async fn handle(daemon: &Daemon, request: Request, events: mpsc::Sender<String>) -> Response {
    let outcome = match request.command {
        Command::Hello {} => to_data(hello::handle()),
        Command::Create(args) => to_data(create::handle(daemon, args).await),
        Command::List {} => to_data(list::handle(daemon).await),
        Command::Delete { index, name } => to_data(delete::handle(daemon, index, name).await),
        Command::Stop {} => to_data(stop::handle(daemon)),
        Command::Backups { long } => to_data(backups::handle(daemon, long).await),
        Command::Prune(args) => to_data(prune::handle(daemon, args).await),
        Command::Verify(args) => match verify::handle(daemon, args).await {
            // Each failed archive was logged as it failed.
            Ok(list) if list.failed > 0 => {
                let message = format!(
                    "{} of {} archives failed verification",
                    list.failed,
                    list.failed + list.ok
                );
                return Response::failure_with_data(
                    request.id,
                    ErrorCode::VerifyFailed,
                    message,
                    list,
                );
            }
            other => to_data(other),
        },
        Command::Restore(args) => match restore::handle(daemon, args).await {
            Ok(summary) if !summary.refused.is_empty() => {
                let message = format!("{} entries refused", summary.refused.len());
                return Response::failure_with_data(
                    request.id,
                    ErrorCode::RestoreRefused,
                    message,
                    summary,
                );
            }
            other => to_data(other),
        },
        Command::Run(args) => {
            let sink = if args.events {
                EventSink::new(request.id.clone(), events)
            } else {
                EventSink::disabled()
            };
            match run::handle(daemon, args, &sink).await {
                // Each failed source was logged as it failed.
                Ok(report) if report.failed > 0 => {
                    let message = format!("{} of {} sources failed", report.failed, report.total);
                    return Response::failure_with_data(
                        request.id,
                        ErrorCode::BackupFailed,
                        message,
                        report,
                    );
                }
                other => to_data(other),
            }
        }
    };
    match outcome {
        Ok(data) => Response::success(request.id, data),
        Err(err) => {
            tracing::error!("{}", err.message);
            Response::failure(request.id, err.code, err.message)
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

/// An archive named by a client: an absolute path, or a file name inside `folder`.
fn resolve_archive(folder: &std::path::Path, text: &str) -> HandlerResult<std::path::PathBuf> {
    let path = if text.starts_with('/') {
        std::path::PathBuf::from(text)
    } else if !text.is_empty() && !text.contains('/') {
        folder.join(text)
    } else {
        return Err(HandlerError::new(
            ErrorCode::InvalidArguments,
            format!("name an archive by absolute path or by file name: {text}"),
        ));
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(HandlerError::new(
            ErrorCode::ArchiveNotFound,
            format!("can't find archive: {}", path.display()),
        ))
    }
}

fn to_data<T: Serialize>(result: HandlerResult<T>) -> HandlerResult<Value> {
    result.and_then(|data| {
        serde_json::to_value(data)
            .map_err(|e| HandlerError::new(ErrorCode::Internal, format!("can't encode reply: {e}")))
    })
}
