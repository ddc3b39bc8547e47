//! A passphrase typed at the terminal, with echo off. Never read from a pipe, a flag or the
//! environment: it is typed by a person, so it lands in no shell history, process list,
//! script or schedule, and a job that nobody watches cannot need one.

use crate::failure::Failure;
use proto::Passphrase;
use rustix::termios::{self, LocalModes, OptionalActions};
use std::io::{BufRead, Stdin, Write};

/// Asks for a passphrase on stdin, which must be a terminal; with `confirm` (to encrypt),
/// twice, and the two must match.
pub fn ask(confirm: bool) -> Result<Passphrase, Failure> {
    let stdin = std::io::stdin();
    if !termios::isatty(&stdin) {
        return Err(Failure::Usage(
            "--passphrase is typed at a terminal, and stdin is not one; scripts and schedules \
             encrypt to keys (--encrypt-to, --identity)"
                .to_owned(),
        ));
    }
    let first = read_hidden(&stdin, "Enter passphrase: ")?;
    if first.is_empty() {
        return Err(Failure::Usage("the passphrase is empty".to_owned()));
    }
    if confirm && read_hidden(&stdin, "Confirm passphrase: ")? != first {
        return Err(Failure::Usage("the passphrases do not match".to_owned()));
    }
    Ok(Passphrase::new(first))
}

/// One line from the terminal with echo off; the terminal's settings are put back however
/// the read ends.
fn read_hidden(stdin: &Stdin, prompt: &str) -> Result<String, Failure> {
    let failed = |e: std::io::Error| Failure::Local(format!("can't read the passphrase: {e}"));
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{prompt}");
    let _ = stderr.flush();
    let saved = termios::tcgetattr(stdin).map_err(|e| failed(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    termios::tcsetattr(stdin, OptionalActions::Now, &quiet).map_err(|e| failed(e.into()))?;
    let restore = Restore { stdin, saved };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    drop(restore);
    let _ = writeln!(stderr);
    if read.map_err(failed)? == 0 {
        return Err(Failure::Usage("no passphrase given".to_owned()));
    }
    let typed = line.strip_suffix('\n').unwrap_or(&line);
    Ok(typed.strip_suffix('\r').unwrap_or(typed).to_owned())
}

/// Puts the terminal's settings back when dropped.
struct Restore<'a> {
    stdin: &'a Stdin,
    saved: termios::Termios,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.stdin, OptionalActions::Now, &self.saved);
    }
}
