//! A pseudo-terminal for commands that read what a person types (`--passphrase`): the
//! child's stdin is the terminal, and the test types lines into it. Lines typed before the
//! child reads wait in the terminal's line discipline, one line per read, as typed ahead.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::{Command, Output, Stdio};

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

pub struct Terminal {
    /// The side the person types into; kept open until the child is done, since closing it
    /// hangs the terminal up.
    typing_side: File,
    /// The side the child reads: its stdin.
    child_side: File,
}

impl Terminal {
    pub fn open() -> Self {
        let master: OwnedFd =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
                .expect("open a pseudo-terminal");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let child_side = File::options()
            .read(true)
            .write(true)
            .open(name.to_str().expect("a UTF-8 pty name"))
            .expect("open the pty's terminal side");
        Self {
            typing_side: File::from(master),
            child_side,
        }
    }

    /// Runs `command` with the terminal as its stdin, typing `lines` (each ended by Enter),
    /// and returns its output (stdout and stderr captured).
    pub fn run(mut self, command: &mut Command, lines: &[&str]) -> Output {
        for line in lines {
            self.typing_side
                .write_all(format!("{line}\n").as_bytes())
                .expect("type into the terminal");
        }
        let stdin = Stdio::from(self.child_side.try_clone().expect("dup the terminal"));
        let output = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run the command");
        drop(self);
        output
    }
}
