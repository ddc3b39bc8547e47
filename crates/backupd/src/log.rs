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

/// Installs the global subscriber. `level` is `--log-level`, else `RUST_LOG`, else `info`.
pub fn init(logs_dir: &Path, level: Option<&str>) -> Result<(), LogInitError> {
    let directive = level
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "info".to_owned());
    let filter: Targets = directive
        .parse()
        .map_err(|_| LogInitError::Level(directive.clone()))?;
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
