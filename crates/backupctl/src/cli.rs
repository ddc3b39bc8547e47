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
    /// Back up sources now. Defaults come from the environment and from ./.env
    /// (BACKUP_SOURCES, BACKUP_DESTINATION); flags override them.
    Run(RunCli),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressionCli {
    Gzip,
    Zstd,
    None,
}

impl CompressionCli {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::None => "none",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RunCli {
    /// Source directories (default: $BACKUP_SOURCES, comma-separated).
    #[arg(long, num_args = 1.., value_name = "DIR")]
    pub sources: Vec<PathBuf>,
    /// Archive name (default: the source folder's name); with one source only.
    #[arg(long)]
    pub name: Option<String>,
    /// Destination folder (default: $BACKUP_DESTINATION, else <home>/backups).
    #[arg(long, value_name = "DIR")]
    pub destination: Option<PathBuf>,
    /// Compression (default: gzip).
    #[arg(long, value_enum)]
    pub compression: Option<CompressionCli>,
    /// Compression level: gzip 0-9 (default 6), zstd 1-22 (default 3).
    #[arg(long, allow_negative_numbers = true)]
    pub level: Option<i32>,
    /// Leave out entries matching a glob (`*.tmp`, `node_modules/`, `sub/*.log`); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Show what would be created; write and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}
