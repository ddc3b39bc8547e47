//! Logging: every event becomes one line `[dd/mm/yyyy hh:mm] <message>` (the seed's format, local
//! time), errors prefixed `Error: ` and warnings `Warning: `, written to `<home>/logs/backupd.log`
//! and to stderr.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// File name of the daemon's log inside `<home>/logs`.
pub const LOG_FILE: &str = "backupd.log";

/// Formats events as the seed's log lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeedFormat;

impl<S, N> FormatEvent<S, N> for SeedFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = chrono::Local::now().format(proto::LOG_TIME_FORMAT);
        write!(writer, "[{now}] ")?;
        match *event.metadata().level() {
            Level::ERROR => writer.write_str("Error: ")?,
            Level::WARN => writer.write_str("Warning: ")?,
            _ => {}
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    #[error("invalid log level {0:?}: use error, warn, info, debug or trace (or target=level,…)")]
    Level(String),
    #[error("can't open log file {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
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

/// Installs the global subscriber. `level` is `--log-level`, else `RUST_LOG`, else `info`.
pub fn init(logs_dir: &Path, level: Option<&str>) -> Result<(), LogInitError> {
    let directive = level
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "info".to_owned());
    let filter = parse_filter(&directive)?;
    let path = logs_dir.join(LOG_FILE);
    // O_APPEND and one write per event keep lines whole even with several writers.
    let file: Arc<File> = Arc::new(
        OpenOptions::new()
            .mode(0o600)
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| LogInitError::Open {
                path: path.display().to_string(),
                source,
            })?,
    );
    let to_file = tracing_subscriber::fmt::layer()
        .event_format(SeedFormat)
        .with_ansi(false)
        .with_writer(file)
        .with_filter(filter.clone());
    // Detached by `backupctl start`, stderr may be a closed pipe: losing those copies is fine.
    let to_stderr = tracing_subscriber::fmt::layer()
        .event_format(SeedFormat)
        .with_ansi(false)
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(to_file)
        .with(to_stderr)
        .init();
    Ok(())
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
