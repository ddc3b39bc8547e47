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
    /// Add a schedule: a one-shot "path;HH:MM;name" (a relative path is taken from here), or
    /// a recurring one: --source DIR... --name NAME (--daily HH:MM | --cron "EXPR").
    Create(CreateCli),
    /// Show the schedules with their index.
    List,
    /// Delete the schedule at INDEX (as `list` shows it, from 0), or the one named NAME.
    Delete {
        #[arg(
            value_name = "INDEX",
            required_unless_present = "name",
            conflicts_with = "name"
        )]
        index: Option<usize>,
        #[arg(long)]
        name: Option<String>,
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

#[derive(Debug, clap::Args)]
pub struct CreateCli {
    /// The seed's one-shot schedule "path;HH:MM;name".
    #[arg(value_name = "SPEC", required_unless_present = "name", conflicts_with_all = ["name", "sources", "daily", "cron"])]
    pub spec: Option<String>,
    /// Name of a recurring schedule (and of its archives).
    #[arg(long, requires = "sources")]
    pub name: Option<String>,
    /// Source directories of a recurring schedule.
    #[arg(long = "source", num_args = 1.., value_name = "DIR", requires = "name")]
    pub sources: Vec<PathBuf>,
    /// Run every day at HH:MM (local time).
    #[arg(long, value_name = "HH:MM", conflicts_with = "cron", required_unless_present_any = ["spec", "cron"])]
    pub daily: Option<String>,
    /// Run on a cron expression: 5 fields ("0 2 * * *"), or 6 with seconds first.
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    #[command(flatten)]
    pub job: JobCli,
}

/// How archives are written; shared by `create` and `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct JobCli {
    /// Destination folder (default: <home>/backups).
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
    /// Without --sources: run the stored schedule NAME now. With --sources: the archive
    /// name (default: the source folder's name), for one source only.
    #[arg(long)]
    pub name: Option<String>,
    /// Destination: $BACKUP_DESTINATION is used when --destination is not given.
    #[command(flatten)]
    pub job: JobCli,
    /// Show what would be created; write and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}
