//! Logging: every event becomes one line — the original backup script's `[dd/mm/yyyy hh:mm]
//! <message>` (local time; errors prefixed `Error: `, warnings `Warning: `), or JSON — written
//! to `<home>/logs/backupd.log` (by a thread of its own, rotated by size) and to stderr.

mod format;
mod writer;

pub use format::{JsonLineFormat, LogFormat, ScriptLineFormat};
pub use writer::{LogGuard, Rotation, flushed, is_active, reopen};

use std::path::Path;
use std::sync::OnceLock;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use writer::{QUEUE, QUEUE_LINES, spawn_writer};

/// File name of the daemon's log inside `<home>/logs`.
pub const LOG_FILE: &str = "backupd.log";

/// How the daemon logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// `--log-level`, `RUST_LOG` or the config's; `None`: `info`.
    pub level: Option<String>,
    /// The log file's lines; stderr always gets the text form.
    pub format: LogFormat,
    pub rotation: Rotation,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    #[error("invalid log level {0:?}: use error, warn, info, debug or trace (or target=level,…)")]
    Level(String),
    #[error("logging is not set up")]
    NotSetUp,
    #[error("can't open log file {path}: {cause}")]
    Open { path: String, cause: std::io::Error },
}

/// Parses `info` or `target=level,…`. Stricter than `Targets`, which would read a misspelt
/// level as a target name and silently log nothing.
fn parse_filter(directive: &str) -> Result<Targets, LogInitError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |word: &str| LEVELS.contains(&word.to_ascii_lowercase().as_str());
    let valid = directive.split(',').all(|part| match part.split_once('=') {
        Some((target, level)) => !target.is_empty() && is_level(level),
        None => is_level(part),
    });
    let invalid = || LogInitError::Level(directive.to_owned());
    if !valid {
        return Err(invalid());
    }
    directive.parse().map_err(|_| invalid())
}

/// Checks a `--log-level` directive without installing anything.
pub fn check_level(directive: &str) -> Result<(), LogInitError> {
    parse_filter(directive).map(drop)
}

/// Swaps the filter of the installed subscriber.
type FilterHandle = reload::Handle<Targets, tracing_subscriber::Registry>;

/// The handle of the installed subscriber's filter, for [`set_level`].
static FILTER: OnceLock<FilterHandle> = OnceLock::new();

/// Changes what is logged from now on, as `--log-level` would have.
pub fn set_level(directive: &str) -> Result<(), LogInitError> {
    let filter = parse_filter(directive)?;
    let handle = FILTER.get().ok_or(LogInitError::NotSetUp)?;
    handle.reload(filter).map_err(|_| LogInitError::NotSetUp)
}

/// Installs the global subscriber. The returned guard writes out the log file when dropped.
pub fn init(logs_dir: &Path, options: &LogOptions) -> Result<LogGuard, LogInitError> {
    let directive = options.level.as_deref().unwrap_or("info");
    let (filter, handle) = reload::Layer::new(parse_filter(directive)?);
    let path = logs_dir.join(LOG_FILE);
    let (queue, guard) =
        spawn_writer(&path, options.rotation, QUEUE_LINES).map_err(|cause| LogInitError::Open {
            path: path.display().to_string(),
            cause,
        })?;
    // `init` runs once per process: installing the subscriber below would panic otherwise.
    let _ = QUEUE.set(queue.clone());
    let to_file = match options.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .event_format(ScriptLineFormat)
            .with_ansi(false)
            .with_writer(queue)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(JsonLineFormat)
            .with_ansi(false)
            .with_writer(queue)
            .boxed(),
    };
    // Detached by `backupctl start`, stderr may be a closed pipe: losing those copies is fine.
    let to_stderr = tracing_subscriber::fmt::layer()
        .event_format(ScriptLineFormat)
        .with_ansi(false)
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    // One filter in front of both outputs, which `set_level` can swap while the daemon runs.
    tracing_subscriber::registry()
        .with(filter)
        .with(to_file)
        .with(to_stderr)
        .with(crate::notifications::job_log::layer())
        .init();
    let _ = FILTER.set(handle);
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_target_directives_parse_and_typos_do_not() {
        for good in [
            "info",
            "ERROR",
            "backupd=debug",
            "warn,backupd=trace",
            "off",
        ] {
            assert!(parse_filter(good).is_ok(), "{good}");
        }
        for bad in ["loud", "", "info,", "=info", "backupd=loud", "backupd"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
