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
    List {
        /// Also each schedule's recent runs, newest first, with the error of a failed one.
        #[arg(long)]
        long: bool,
    },
    /// Delete the schedule at INDEX (as `list` shows it, from 0), or the one named NAME.
    Delete {
        /// Position of the schedule, from 0, as `list` shows it.
        #[arg(
            value_name = "INDEX",
            required_unless_present = "name",
            conflicts_with = "name"
        )]
        index: Option<usize>,
        /// Name of the schedule.
        #[arg(long)]
        name: Option<String>,
    },
    /// Start the daemon in the background.
    Start,
    /// Stop the daemon gracefully.
    Stop,
    /// Show the daemon's state: version, uptime, home, socket, running jobs with progress,
    /// the next run, each schedule's last outcome and the free space at each destination.
    Status,
    /// List the archive files in the backups directory.
    Backups {
        /// Group by backup name, newest first, with size, compression, files and last verify.
        #[arg(long)]
        long: bool,
        /// List this folder instead of the default one ([defaults] destination of
        /// backupd.toml, else <home>/backups).
        #[arg(long, value_name = "DIR", conflicts_with = "remote")]
        destination: Option<PathBuf>,
        /// List the copies on this offsite remote ([remote.NAME] or s3://BUCKET/PREFIX);
        /// --long also shows incomplete ones (no manifest).
        #[arg(long, value_name = "NAME")]
        remote: Option<String>,
    },
    /// Delete old archives by the retention policy now (defaults: $RETENTION_DAYS or 7,
    /// $MIN_BACKUPS_TO_KEEP or 3).
    Prune(PruneCli),
    /// Check archives against their manifests and read them to the end.
    Verify(VerifyCli),
    /// Extract an archive (or --path parts of it) into a directory; existing files are kept
    /// unless --overwrite.
    Restore(RestoreCli),
    /// Back up sources now. Defaults come from the environment and from ./.env
    /// (BACKUP_SOURCES, BACKUP_DESTINATION); flags override them. Ctrl-C cancels the run.
    Run(RunCli),
    /// Print a completion script for bash, zsh or fish.
    ///
    /// Needs no daemon. For example: `backupctl completions bash >
    /// ~/.local/share/bash-completion/completions/backupctl`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: ShellCli,
    },
    /// Print the manual page backupctl.1, or write every page into a folder.
    ///
    /// With --out DIR: backupctl.1 and one page per subcommand (backupctl-run.1, ...). Needs
    /// no daemon.
    Man {
        /// Folder to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// List the running jobs with their progress.
    Jobs,
    /// Cancel a running job by its id (as `jobs` shows it), or every running job of a backup
    /// or schedule name. The job's partial file is removed.
    Cancel {
        /// Id of the job, as `jobs` shows it.
        #[arg(
            value_name = "JOB",
            required_unless_present = "name",
            conflicts_with = "name"
        )]
        job: Option<u64>,
        /// Every running job of this backup or schedule name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Follow the daemon's events (jobs, progress, rotations, verifications, schedule
    /// changes) until interrupted; --json prints each event line as it comes.
    Watch,
    /// Change what the running daemon logs: error, warn, info, debug, trace, or
    /// target=level,... (until it restarts).
    LogLevel {
        /// A level (error, warn, info, debug, trace), or target=level,... directives such
        /// as backupd=debug.
        #[arg(value_name = "LEVEL")]
        level: String,
    },
    /// List an archive's contents: type, mode, size, modification time and path of each
    /// entry, or of PATH and what is under it (relative to the source folder).
    Ls {
        /// The archive: a path, or a file name in the backups directory.
        #[arg(value_name = "ARCHIVE")]
        archive: String,
        /// List only this entry and what is under it, relative to the source folder.
        #[arg(value_name = "PATH")]
        path: Option<String>,
        /// Decrypt an encrypted archive with this age identity file (yours, mode 0600),
        /// which the daemon reads.
        #[arg(long, value_name = "FILE", conflicts_with = "passphrase")]
        identity: Option<PathBuf>,
        /// Decrypt an archive encrypted to a passphrase, typed at the terminal.
        #[arg(long)]
        passphrase: bool,
    },
    /// Make an age identity (a secret key) for --encrypt-to and --identity, as age-keygen
    /// does. Needs no daemon.
    ///
    /// With --out FILE: writes it there (mode 0600, never over an existing file; missing
    /// folders are made with mode 0700) and prints only the public key, which makes a
    /// recipients file. Without: prints the identity, and the public key on stderr.
    Keygen {
        /// File to write the identity to.
        #[arg(long, short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Upload to an offsite remote every local archive (and its manifest) that it lacks.
    Sync(SyncCli),
}

#[derive(Debug, clap::Args)]
#[command(
    override_usage = "backupctl create \"PATH;HH:MM;NAME\"\n       \
        backupctl create --name NAME --source DIR... (--daily HH:MM | --cron EXPR) [OPTIONS]",
    group = clap::ArgGroup::new("timing").args(["daily", "cron"])
)]
pub struct CreateCli {
    /// The schedule manager's one-shot schedule "path;HH:MM;name".
    #[arg(value_name = "SPEC", required_unless_present = "name", conflicts_with_all = ["name", "sources", "daily", "cron"])]
    pub spec: Option<String>,
    /// Name of a recurring schedule (and of its archives).
    #[arg(long, requires_all = ["sources", "timing"])]
    pub name: Option<String>,
    /// Source directories of a recurring schedule.
    #[arg(long = "source", num_args = 1.., value_name = "DIR", requires = "name")]
    pub sources: Vec<PathBuf>,
    /// Run every day at HH:MM (local time).
    #[arg(long, value_name = "HH:MM", requires = "name")]
    pub daily: Option<String>,
    /// Run on a cron expression: 5 fields ("0 2 * * *"), or 6 with seconds first.
    #[arg(long, value_name = "EXPR", requires = "name")]
    pub cron: Option<String>,
    /// If a schedule of that name exists, replace its sources, timing and options by these,
    /// keeping its id, its runs and its place in the list (a run going on finishes as it
    /// began); else create it. Without it, an existing name is refused.
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub job: JobCli,
}

/// How archives are written; shared by `create` and `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct JobCli {
    /// Destination folder (default: [defaults] destination of backupd.toml, else
    /// <home>/backups).
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
    /// Verify each archive right after writing it.
    #[arg(long)]
    pub verify_after: bool,
    #[command(flatten)]
    pub retention: RetentionCli,
    /// Also copy each archive and its manifest to an S3 remote: a `[remote.NAME]` of the
    /// daemon's backupd.toml, or s3://BUCKET/PREFIX; repeatable.
    #[arg(long, value_name = "NAME|s3://BUCKET/PREFIX")]
    pub offsite: Vec<String>,
    /// Write straight to the one --offsite remote, with no local copy (also: --destination s3://…).
    #[arg(long)]
    pub offsite_only: bool,
    /// Encrypt archives with age to this public key (age1…); repeatable. Archives are then
    /// named .tar.gz.age (.tar.zst.age, .tar.age).
    #[arg(long, value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// Encrypt to the public keys of this recipients file (one age1… per line, # comments),
    /// read by the daemon when the job runs.
    #[arg(long, value_name = "FILE")]
    pub encrypt_to_file: Option<PathBuf>,
    /// Tell URL how the job ended: http(s)://… gets a JSON POST, hc+http(s)://… is a
    /// healthchecks.io check, ntfy+http(s)://… an ntfy topic; repeatable.
    #[arg(long, value_name = "URL")]
    pub notify: Vec<String>,
    /// When --notify URLs and --email hear of a job (default: failure); healthchecks are
    /// pinged after every run.
    #[arg(long, value_enum, value_name = "WHEN")]
    pub notify_on: Option<NotifyOnCli>,
    /// Also email the outcome, as the daemon's [email] settings in backupd.toml say.
    #[arg(long)]
    pub email: bool,
    /// Archive COMMAND's standard output as the file NAME (a database dump); COMMAND is split
    /// into words like a shell would, without running one; repeatable.
    #[arg(long, value_name = "NAME=COMMAND")]
    pub source_command: Vec<String>,
    /// Run CMD before the job; if it fails, nothing is written and the job fails.
    #[arg(long, value_name = "CMD")]
    pub before: Option<String>,
    /// Run CMD after a job that published its archive (also with warnings or an offsite
    /// failure: the archive is there).
    #[arg(long, value_name = "CMD")]
    pub after: Option<String>,
    /// Run CMD after a job that failed or was cancelled.
    #[arg(long, value_name = "CMD")]
    pub on_failure: Option<String>,
    /// Run CMD after every job, last.
    #[arg(long, value_name = "CMD")]
    pub finally: Option<String>,
    /// Seconds (at least 1) a hook may run before it is killed (default: the daemon's, else
    /// 600).
    #[arg(long, value_name = "SECS", value_parser = hook_timeout)]
    pub hook_timeout: Option<u64>,
    /// After an upload, remote copies older than N days are deleted (default: the job's
    /// retention).
    #[arg(long, value_name = "N")]
    pub offsite_keep_days: Option<u32>,
    /// Never fewer than M remote copies of a name remain (default: the job's retention).
    #[arg(long, value_name = "M")]
    pub offsite_keep_min: Option<u32>,
}

/// Which older archives of a name to delete after a run, or on `prune`. Kept: archives younger
/// than --retention-days, the newest --min-keep, and the newest of each of the last N days,
/// weeks or months (--keep-daily/--keep-weekly/--keep-monthly) and the --keep-last newest.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RetentionCli {
    /// Archives older than N days are deleted (default: $RETENTION_DAYS, else 7).
    #[arg(long, value_name = "N")]
    pub retention_days: Option<u32>,
    /// Never fewer than M archives of a name remain (default: $MIN_BACKUPS_TO_KEEP, else 3).
    #[arg(long, value_name = "M")]
    pub min_keep: Option<u32>,
    /// Keep the N newest archives.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest archive of each of the last N days that have archives.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest archive of each of the last N weeks that have archives.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest archive of each of the last N months that have archives.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
}

#[derive(Debug, clap::Args)]
pub struct PruneCli {
    /// Only archives of this backup name.
    #[arg(long)]
    pub name: Option<String>,
    /// The folder to prune (default: $BACKUP_DESTINATION, else [defaults] destination of
    /// backupd.toml, else <home>/backups).
    #[arg(long, value_name = "DIR")]
    pub destination: Option<PathBuf>,
    #[command(flatten)]
    pub retention: RetentionCli,
    /// Show what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune the copies on this offsite remote ([remote.NAME] or s3://BUCKET/PREFIX).
    #[arg(long, value_name = "NAME", conflicts_with = "destination")]
    pub remote: Option<String>,
}

#[derive(Debug, clap::Args)]
// One of the three, so that a usage error names all three.
#[command(group = clap::ArgGroup::new("which").required(true).args(["archive", "name", "all"]))]
pub struct VerifyCli {
    /// An archive: a path, or a file name in the backups directory.
    #[arg(value_name = "ARCHIVE")]
    pub archive: Option<String>,
    /// Every archive of this backup name.
    #[arg(long)]
    pub name: Option<String>,
    /// Every archive.
    #[arg(long)]
    pub all: bool,
    /// The folder holding the archives (default: [defaults] destination of backupd.toml,
    /// else <home>/backups).
    #[arg(long, value_name = "DIR", conflicts_with = "remote")]
    pub destination: Option<PathBuf>,
    /// Decrypt encrypted archives with this age identity file (yours, mode 0600), which the
    /// daemon reads; without it only their checksum is checked.
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase")]
    pub identity: Option<PathBuf>,
    /// Verify the copies on this offsite remote, streamed back (ARCHIVE is a file name).
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// Decrypt archives encrypted to a passphrase, typed at the terminal.
    #[arg(long)]
    pub passphrase: bool,
}

#[derive(Debug, clap::Args)]
pub struct RestoreCli {
    /// The archive: a path, or a file name in the backups directory.
    #[arg(value_name = "ARCHIVE")]
    pub archive: String,
    /// Where to extract: a directory (created if missing). If an entry's name is taken
    /// there, nothing is written unless --overwrite.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Restore only this subpath of the source folder (repeatable), e.g. `docs/report.txt`.
    #[arg(long = "path", value_name = "SUBPATH")]
    pub paths: Vec<String>,
    /// Replace existing files, symlinks and hard links of the same name (never a folder).
    #[arg(long)]
    pub overwrite: bool,
    /// Answer without waiting for the restored files to reach the disk, as `tar -x` does
    /// (faster; a power loss soon after may leave files empty).
    #[arg(long)]
    pub no_sync: bool,
    /// Decrypt an encrypted archive with this age identity file (yours, mode 0600), which
    /// the daemon reads.
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase")]
    pub identity: Option<PathBuf>,
    /// Restore from this offsite remote, streamed (ARCHIVE is a file name there).
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// Decrypt an archive encrypted to a passphrase, typed at the terminal.
    #[arg(long)]
    pub passphrase: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressionCli {
    Gzip,
    Zstd,
    None,
}

impl From<CompressionCli> for proto::Codec {
    fn from(codec: CompressionCli) -> Self {
        match codec {
            CompressionCli::Gzip => Self::Gzip,
            CompressionCli::Zstd => Self::Zstd,
            CompressionCli::None => Self::None,
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
    /// Print the ids of the run's jobs and return at once; the run goes on in the daemon.
    #[arg(long)]
    pub detach: bool,
    /// Encrypt to a passphrase typed at the terminal (twice) instead of to keys; for this
    /// run only: a schedule never keeps one. `age -d` opens the archives.
    #[arg(long, conflicts_with_all = ["encrypt_to", "encrypt_to_file"])]
    pub passphrase: bool,
}

/// The shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShellCli {
    Bash,
    Zsh,
    Fish,
}

/// `--hook-timeout`: whole seconds, at least 1.
fn hook_timeout(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err(proto::job::ZERO_HOOK_TIMEOUT.to_owned()),
        Ok(secs) => Ok(secs),
        Err(e) => Err(e.to_string()),
    }
}

/// When notifications go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NotifyOnCli {
    Always,
    Failure,
}

impl From<NotifyOnCli> for proto::NotifyOn {
    fn from(when: NotifyOnCli) -> Self {
        match when {
            NotifyOnCli::Always => Self::Always,
            NotifyOnCli::Failure => Self::Failure,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SyncCli {
    /// The offsite remote: [remote.NAME] of backupd.toml, or s3://BUCKET/PREFIX.
    #[arg(long, value_name = "NAME")]
    pub remote: String,
    /// Only archives of this backup name.
    #[arg(long)]
    pub name: Option<String>,
    /// The local folder (default: [defaults] destination of backupd.toml, else
    /// <home>/backups).
    #[arg(long, value_name = "DIR")]
    pub destination: Option<PathBuf>,
}
