//! One handler per request, each in its own file; this module routes a parsed [`Command`] to
//! its handler and turns the outcome into a [`Response`]. Every failure is logged here, once.

mod backups;
mod create;
mod delete;
mod hello;
mod list;
mod run;
mod stop;

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
        Command::Backups {} => to_data(backups::handle(daemon).await),
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

fn to_data<T: Serialize>(result: HandlerResult<T>) -> HandlerResult<Value> {
    result.and_then(|data| {
        serde_json::to_value(data)
            .map_err(|e| HandlerError::new(ErrorCode::Internal, format!("can't encode reply: {e}")))
    })
}
