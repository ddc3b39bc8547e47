//! The command line: every subcommand but `start` is one request to the daemon.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Control the backupd daemon.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    /// Home directory of the daemon (default: $BACKUPD_HOME, else $XDG_STATE_HOME/backupd,
    /// else ~/.local/state/backupd).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Socket path (default: $BACKUPD_SOCKET, else <home>/backupd.sock).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the daemon's raw JSON response line instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Add a one-shot schedule: "path;HH:MM;name" (a relative path is taken from here).
    Create {
        #[arg(value_name = "SPEC")]
        spec: String,
    },
    /// Show the schedules with their index.
    List,
    /// Delete the schedule at INDEX (as `list` shows it, from 0).
    Delete {
        #[arg(value_name = "INDEX")]
        index: usize,
    },
    /// Start the daemon in the background.
    Start,
    /// Stop the daemon gracefully.
    Stop,
    /// Show whether the daemon runs, and its version.
    Status,
    /// List the archive files in the backups directory.
    Backups,
}
