//! `log_level`: changes what a running daemon logs, to the file and to stderr, until the next
//! change or restart (where `--log-level`, `RUST_LOG` or the config file decide again).

use super::{HandlerError, HandlerResult};
use crate::log;
use proto::ErrorCode;
use proto::response::LogLevelSet;

pub fn handle(level: &str) -> HandlerResult<LogLevelSet> {
    log::set_level(level).map_err(|e| {
        let code = match e {
            log::LogInitError::Level(_) => ErrorCode::InvalidArguments,
            _ => ErrorCode::Internal,
        };
        HandlerError::new(code, e.to_string())
    })?;
    tracing::info!("Log level set to {level}");
    Ok(LogLevelSet {
        level: level.to_owned(),
    })
}
