//! How one event becomes one line: the original backup script's `[dd/mm/yyyy hh:mm] <message>`
//! (errors prefixed `Error: `, warnings `Warning: `), or one JSON object for log collectors.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The shape of the log file's lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `[dd/mm/yyyy hh:mm] Error: …`, as the original backup script writes.
    #[default]
    Text,
    /// `{"time": "<RFC 3339>", "level": "error", "message": "…"}`
    Json,
}

/// Formats events as the original backup script's log lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptLineFormat;

impl<S, N> FormatEvent<S, N> for ScriptLineFormat
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
        // One event, one line: a client's text (a path, a bad argument) may hold a newline.
        let mut message = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut message), event)?;
        writeln!(writer, "{}", proto::escape_controls(&message))
    }
}

/// Formats events as one JSON object per line.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLineFormat;

impl<S, N> FormatEvent<S, N> for JsonLineFormat
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
        let mut message = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut message), event)?;
        let line = serde_json::json!({
            "time": chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            "level": event.metadata().level().as_str().to_ascii_lowercase(),
            "message": message,
        });
        writeln!(writer, "{line}")
    }
}
