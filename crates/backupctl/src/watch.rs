//! `backupctl watch`: follows the daemon's event stream, one line per event (the raw JSON
//! line with `--json`), until interrupted or the daemon stops.

use crate::client::{self, ClientError};
use crate::failure::Failure;
use crate::render;
use proto::{Command, Incoming, Request};
use std::path::Path;

pub fn watch(socket: &Path, json: bool) -> Result<(), Failure> {
    let mut connection = client::Connection::open(socket).map_err(|e| crate::reach_failure(&e))?;
    let broken = |e: ClientError| Failure::Local(e.to_string());
    connection
        .send(&Request::new(Command::Watch {}))
        .map_err(broken)?;
    loop {
        let (incoming, raw) = connection.next_line().map_err(broken)?;
        match incoming {
            Incoming::Event(line) => {
                let text = if json {
                    Some(raw)
                } else {
                    render::event(&line.event, &chrono::Local::now())
                };
                if let Some(text) = text
                    && !print(&text)?
                {
                    return Ok(()); // the reader is gone (`backupctl watch | head`)
                }
            }
            Incoming::Response(response) => {
                if json {
                    print(&raw)?;
                } else if response.ok {
                    print("backupd is stopping")?;
                }
                return response.into_result().map(drop).map_err(Failure::Refused);
            }
        }
    }
}

/// Prints one line at once; `false` once stdout's reader has gone away.
fn print(line: &str) -> Result<bool, Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::Local(format!("can't write the output: {e}"))),
    }
}
