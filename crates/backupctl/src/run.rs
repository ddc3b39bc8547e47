//! `backupctl run`: sends the run, shows progress on a terminal while the daemon works, and
//! hands back the answer with its report.

use crate::client::{self, Answer};
use crate::failure::Failure;
use crate::render;
use proto::request::RunArgs;
use proto::{Command, Request};
use std::io::{IsTerminal, Write};
use std::path::Path;

/// Sends the run and waits for its report, drawing progress when stdout is a terminal, unless
/// `json` asks for the answer line alone.
pub fn run(socket: &Path, mut args: RunArgs, json: bool) -> Result<Answer, Failure> {
    let interactive = std::io::stdout().is_terminal() && !json;
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
