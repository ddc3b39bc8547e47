//! `backupctl run`: builds the request from flags, environment and `.env`, shows progress on
//! a terminal while the daemon works, then prints the report.

use crate::cli::RunCli;
use crate::client::{self, Answer};
use crate::failure::Failure;
use crate::render;
use crate::settings::{self, Settings};
use proto::request::RunArgs;
use proto::response::RunReport;
use proto::{Command, Request};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Turns the command line and the settings into the daemon's `run` arguments.
pub fn request_args(cli: &RunCli, settings: &Settings, cwd: &Path) -> Result<RunArgs, Failure> {
    if let (Some(name), true) = (&cli.name, cli.sources.is_empty()) {
        if cli.job.destination.is_some()
            || cli.job.compression.is_some()
            || cli.job.level.is_some()
            || !cli.job.exclude.is_empty()
        {
            return Err(Failure::Usage(
                "a stored schedule runs with its own settings; pass --sources for an ad-hoc run"
                    .to_owned(),
            ));
        }
        return Ok(RunArgs {
            schedule: Some(name.clone()),
            dry_run: cli.dry_run,
            ..RunArgs::default()
        });
    }
    let sources = if cli.sources.is_empty() {
        settings.sources(cwd)
    } else {
        cli.sources.iter().map(|s| cwd.join(s)).collect()
    };
    if sources.is_empty() {
        return Err(Failure::Usage(format!(
            "Missing required environment variables: {}",
            settings::SOURCES
        )));
    }
    let destination = cli
        .job
        .destination
        .clone()
        .or_else(|| settings.get(settings::DESTINATION).map(PathBuf::from))
        .map(|d| path_text(&cwd.join(d)))
        .transpose()?;
    Ok(RunArgs {
        sources: sources
            .iter()
            .map(|s| path_text(s))
            .collect::<Result<_, _>>()?,
        schedule: None,
        name: cli.name.clone(),
        destination,
        compression: cli.job.compression.map(|c| c.as_str().to_owned()),
        level: cli.job.level,
        exclude: cli.job.exclude.clone(),
        dry_run: cli.dry_run,
        events: false,
    })
}

/// Sends the run and waits for its report, drawing progress when stdout is a terminal.
pub fn run(socket: &Path, mut args: RunArgs) -> Result<Answer, Failure> {
    let interactive = std::io::stdout().is_terminal();
    args.events = interactive;
    let mut connection = client::Connection::open(socket).map_err(|e| crate::reach_failure(&e))?;
    let mut stdout = std::io::stdout();
    let mut drawn = false;
    let answer = connection
        .request_with_events(&Request::new(Command::Run(args)), |line| {
            if let Some(text) = render::progress(&line.event) {
                let _ = write!(stdout, "\r\x1b[2K{text}");
                let _ = stdout.flush();
                drawn = true;
            }
        })
        .map_err(|e| Failure::Local(e.to_string()))?;
    if drawn {
        let _ = write!(stdout, "\r\x1b[2K");
    }
    Ok(answer)
}

/// The report in a run's answer, present both on success and when some sources failed.
pub fn report(answer: &Answer) -> Option<RunReport> {
    answer
        .response
        .data
        .clone()
        .and_then(|data| serde_json::from_value(data).ok())
}

/// A path as the daemon takes it: absolute, and UTF-8 to travel in JSON.
pub fn path_text(path: &Path) -> Result<String, Failure> {
    let absolute = std::path::absolute(path)
        .map_err(|e| Failure::Usage(format!("can't resolve {}: {e}", path.display())))?;
    absolute
        .into_os_string()
        .into_string()
        .map_err(|p| Failure::Usage(format!("path {} is not valid UTF-8", p.display())))
}
