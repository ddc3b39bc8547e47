//! Turns the command line, the environment and `.env` into the daemon's requests: paths made
//! absolute against the working directory, the original backup script's variables applied
//! where flags are absent.

use crate::cli::{
    CliCommand, CreateCli, JobCli, PruneCli, RestoreCli, RetentionCli, RunCli, SyncCli, VerifyCli,
};
use crate::failure::Failure;
use crate::settings::{self, Settings};
use proto::request::{CreateArgs, PruneArgs, RestoreArgs, RunArgs, SyncArgs, VerifyArgs};
use proto::{Command, Compression, JobOptions, Passphrase, Retention, ScheduleSpec};
use std::path::{Path, PathBuf};

/// Where the client stands: its settings, and the working directory that relative paths are
/// taken from. Each is read only when a request needs it.
#[derive(Debug)]
pub struct Context {
    pub settings: Settings,
}

impl Context {
    pub fn here() -> Self {
        Self {
            settings: Settings::here(),
        }
    }

    /// A path as the daemon takes it: absolute, and UTF-8 to travel in JSON.
    fn absolute(&self, path: &Path) -> Result<String, Failure> {
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| {
                    Failure::Usage(format!(
                        "can't read the working directory to resolve {}: {e}",
                        path.display()
                    ))
                })?
                .join(path)
        };
        let absolute = std::path::absolute(joined)
            .map_err(|e| Failure::Usage(format!("can't resolve {}: {e}", path.display())))?;
        absolute
            .into_os_string()
            .into_string()
            .map_err(|p| Failure::Usage(format!("path {} is not valid UTF-8", p.display())))
    }
}

/// The request for a command that is one request (all but `start`, `stop`, `completions` and
/// `man`, which main handles itself).
pub fn build(command: &CliCommand, ctx: &Context) -> Result<Command, Failure> {
    Ok(match command {
        CliCommand::Create(create) => Command::Create(create_args(create, ctx)?),
        CliCommand::List { .. } => Command::List {},
        CliCommand::Delete { index, name } => Command::Delete {
            index: *index,
            name: name.clone(),
        },
        CliCommand::Start
        | CliCommand::Stop
        | CliCommand::Completions { .. }
        | CliCommand::Man { .. }
        | CliCommand::Keygen { .. } => Command::Hello {},
        CliCommand::Backups {
            long,
            destination,
            remote,
        } => Command::Backups {
            long: *long,
            destination: destination
                .as_deref()
                .map(|d| ctx.absolute(d))
                .transpose()?,
            remote: remote.clone(),
        },
        CliCommand::Run(run) => Command::Run(run_args(run, ctx)?),
        CliCommand::Prune(prune) => Command::Prune(prune_args(prune, ctx)?),
        CliCommand::Verify(verify) => Command::Verify(verify_args(verify, ctx)?),
        CliCommand::Restore(restore) => Command::Restore(restore_args(restore, ctx)?),
        CliCommand::Sync(sync) => Command::Sync(sync_args(sync, ctx)?),
        CliCommand::Status => Command::Status {},
        CliCommand::Jobs => Command::Jobs {},
        CliCommand::Cancel { job, name } => Command::Cancel {
            job: *job,
            name: name.clone(),
        },
        CliCommand::Watch => Command::Watch {},
        CliCommand::LogLevel { level } => Command::LogLevel {
            level: level.clone(),
        },
        CliCommand::Ls {
            archive,
            path,
            identity,
            passphrase,
        } => Command::Ls(proto::request::LsArgs {
            archive: archive_arg(archive, ctx)?,
            path: path.clone(),
            identity: identity.as_deref().map(|i| ctx.absolute(i)).transpose()?,
            passphrase: typed_passphrase(*passphrase, false)?,
        }),
    })
}

fn run_args(cli: &RunCli, ctx: &Context) -> Result<RunArgs, Failure> {
    if let (Some(name), true) = (&cli.name, cli.sources.is_empty()) {
        if cli.passphrase {
            return Err(Failure::Usage(
                "a stored schedule never encrypts to a passphrase; give it --encrypt-to keys"
                    .to_owned(),
            ));
        }
        if job_options(&cli.job, ctx, None)? != JobOptions::default() {
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
        ctx.settings.sources().map_err(Failure::Usage)?
    } else {
        cli.sources.clone()
    };
    if sources.is_empty() {
        return Err(Failure::Usage(format!(
            "Missing required environment variables: {}",
            settings::SOURCES
        )));
    }
    Ok(RunArgs {
        sources: sources
            .iter()
            .map(|s| ctx.absolute(s))
            .collect::<Result<_, _>>()?,
        name: cli.name.clone(),
        job: job_options(&cli.job, ctx, Some(&ctx.settings))?,
        dry_run: cli.dry_run,
        passphrase: typed_passphrase(cli.passphrase, true)?,
        ..RunArgs::default()
    })
}

/// The passphrase typed at the terminal when the flag asks for one.
fn typed_passphrase(wanted: bool, confirm: bool) -> Result<Option<Passphrase>, Failure> {
    wanted.then(|| crate::passphrase::ask(confirm)).transpose()
}

/// The job options the flags give; with `settings` (a run, not a stored schedule), the
/// environment's destination and retention where flags are absent.
fn job_options(
    job: &JobCli,
    ctx: &Context,
    settings: Option<&Settings>,
) -> Result<JobOptions, Failure> {
    // `--destination s3://…` writes to that remote only: no local folder to make absolute.
    let remote_destination = job
        .destination
        .as_ref()
        .and_then(|d| d.to_str())
        .filter(|d| d.starts_with("s3://"))
        .map(str::to_owned);
    let destination = match (&job.destination, settings) {
        _ if remote_destination.is_some() => None,
        (Some(local), _) => Some(local.clone()),
        (None, Some(settings)) => setting(settings, settings::DESTINATION)?.map(PathBuf::from),
        (None, None) => None,
    };
    let compression = match (job.compression, job.level) {
        (None, None) => None,
        (codec, level) => Some(
            Compression::new(codec.map_or_else(Default::default, Into::into), level)
                .map_err(|e| Failure::Invalid(e.to_string()))?,
        ),
    };
    Ok(JobOptions {
        destination: destination.map(|d| ctx.absolute(&d)).transpose()?,
        compression,
        exclude: job.exclude.clone(),
        retention: retention(&job.retention, settings)?,
        verify_after: job.verify_after,
        offsite: remote_destination
            .iter()
            .chain(&job.offsite)
            .cloned()
            .collect(),
        offsite_only: job.offsite_only || remote_destination.is_some(),
        encrypt_to: recipients(&job.encrypt_to)?,
        encrypt_to_file: job
            .encrypt_to_file
            .as_deref()
            .map(|f| ctx.absolute(f))
            .transpose()?,
        notify: job.notify.clone(),
        notify_on: job.notify_on.map(Into::into),
        notify_email: job.email,
        source_commands: job
            .source_command
            .iter()
            .map(String::as_str)
            .map(command_source)
            .collect::<Result<_, _>>()?,
        hooks: proto::job::Hooks {
            before: hook("--before", job.before.as_deref())?,
            after: hook("--after", job.after.as_deref())?,
            on_failure: hook("--on-failure", job.on_failure.as_deref())?,
            finally: hook("--finally", job.finally.as_deref())?,
        },
        hook_timeout: job.hook_timeout,
        offsite_retention: (job.offsite_keep_days.is_some() || job.offsite_keep_min.is_some())
            .then(|| Retention {
                days: job.offsite_keep_days,
                min_keep: job.offsite_keep_min,
                ..Retention::default()
            }),
    })
}

/// `NAME=COMMAND` → a command source; COMMAND split into words.
fn command_source(spec: &str) -> Result<proto::job::CommandSource, Failure> {
    let (name, command) = spec.split_once('=').ok_or_else(|| {
        Failure::Invalid(format!(
            "--source-command {spec:?}: expected NAME=COMMAND, e.g. db.sql='pg_dump app'"
        ))
    })?;
    let command = crate::words::split(command)
        .map_err(|e| Failure::Invalid(format!("--source-command {name}: {e}")))?;
    Ok(proto::job::CommandSource {
        name: name.to_owned(),
        command,
    })
}

/// A hook's command line split into words; none when the flag is absent.
fn hook(flag: &str, line: Option<&str>) -> Result<Vec<String>, Failure> {
    line.map_or(Ok(Vec::new()), |line| {
        crate::words::split(line).map_err(|e| Failure::Invalid(format!("{flag}: {e}")))
    })
}

/// `--encrypt-to` keys, checked here so that a typo (or a secret key pasted by mistake,
/// which is never echoed) fails before anything is sent.
fn recipients(keys: &[String]) -> Result<Vec<String>, Failure> {
    keys.iter()
        .map(|key| {
            let key = key.trim();
            if key.starts_with("AGE-SECRET-KEY-") {
                return Err(Failure::Invalid(
                    "--encrypt-to takes a public key (age1…), not a secret key".to_owned(),
                ));
            }
            key.parse::<age::x25519::Recipient>()
                .map(|_| key.to_owned())
                .map_err(|_| {
                    Failure::Invalid(format!("not an age X25519 recipient (age1…): {key:?}"))
                })
        })
        .collect()
}

fn create_args(create: &CreateCli, ctx: &Context) -> Result<CreateArgs, Failure> {
    if let Some(spec) = &create.spec {
        return Ok(CreateArgs {
            replace: create.replace,
            ..CreateArgs::spec(absolutize_spec(spec, ctx)?)
        });
    }
    Ok(CreateArgs {
        name: create.name.clone(),
        sources: create
            .sources
            .iter()
            .map(|s| ctx.absolute(s))
            .collect::<Result<_, _>>()?,
        daily: create.daily.clone(),
        cron: create.cron.clone(),
        replace: create.replace,
        // A schedule keeps what its flags say; the daemon's defaults fill the rest at run time.
        job: job_options(&create.job, ctx, None)?,
        ..CreateArgs::default()
    })
}

/// Makes the spec's path absolute against the working directory: the daemon has no idea where
/// the user stands. A malformed spec goes to the daemon as typed, which rejects and logs it.
fn absolutize_spec(text: &str, ctx: &Context) -> Result<String, Failure> {
    let Ok(mut spec) = ScheduleSpec::parse(text) else {
        return Ok(text.to_owned());
    };
    spec.path = ctx.absolute(Path::new(&spec.path))?;
    Ok(spec.to_string())
}

fn prune_args(cli: &PruneCli, ctx: &Context) -> Result<PruneArgs, Failure> {
    let destination = match &cli.destination {
        Some(destination) => Some(destination.clone()),
        None => setting(&ctx.settings, settings::DESTINATION)?.map(PathBuf::from),
    };
    Ok(PruneArgs {
        name: cli.name.clone(),
        destination: destination.map(|d| ctx.absolute(&d)).transpose()?,
        retention: retention(&cli.retention, Some(&ctx.settings))?,
        dry_run: cli.dry_run,
        remote: cli.remote.clone(),
    })
}

fn verify_args(cli: &VerifyCli, ctx: &Context) -> Result<VerifyArgs, Failure> {
    Ok(VerifyArgs {
        archive: match &cli.remote {
            // A file name on the remote, sent as given.
            Some(_) => cli.archive.clone(),
            None => cli
                .archive
                .as_deref()
                .map(|a| archive_arg(a, ctx))
                .transpose()?,
        },
        name: cli.name.clone(),
        all: cli.all,
        destination: cli
            .destination
            .as_deref()
            .map(|d| ctx.absolute(d))
            .transpose()?,
        identity: cli
            .identity
            .as_deref()
            .map(|i| ctx.absolute(i))
            .transpose()?,
        remote: cli.remote.clone(),
        passphrase: typed_passphrase(cli.passphrase, false)?,
    })
}

fn restore_args(cli: &RestoreCli, ctx: &Context) -> Result<RestoreArgs, Failure> {
    Ok(RestoreArgs {
        archive: match &cli.remote {
            Some(_) => cli.archive.clone(),
            None => archive_arg(&cli.archive, ctx)?,
        },
        to: ctx.absolute(&cli.to)?,
        paths: cli.paths.clone(),
        overwrite: cli.overwrite,
        no_sync: cli.no_sync,
        identity: cli
            .identity
            .as_deref()
            .map(|i| ctx.absolute(i))
            .transpose()?,
        passphrase: typed_passphrase(cli.passphrase, false)?,
        remote: cli.remote.clone(),
    })
}

fn sync_args(cli: &SyncCli, ctx: &Context) -> Result<SyncArgs, Failure> {
    Ok(SyncArgs {
        remote: cli.remote.clone(),
        name: cli.name.clone(),
        destination: cli
            .destination
            .as_deref()
            .map(|d| ctx.absolute(d))
            .transpose()?,
    })
}

/// An archive argument: a path that exists here is sent absolute; a bare file name that does
/// not is sent as is, for the daemon to find in its backups directory.
fn archive_arg(text: &str, ctx: &Context) -> Result<String, Failure> {
    if text.contains('/') || Path::new(text).exists() {
        ctx.absolute(Path::new(text))
    } else {
        Ok(text.to_owned())
    }
}

/// The retention flags, with `RETENTION_DAYS` and `MIN_BACKUPS_TO_KEEP` from `settings` where
/// flags are absent; `None` when nothing is set, leaving the daemon's defaults.
fn retention(
    cli: &RetentionCli,
    settings: Option<&Settings>,
) -> Result<Option<Retention>, Failure> {
    let from_settings = |key| {
        settings
            .map(|s| s.number(key))
            .transpose()
            .map(Option::flatten)
            .map_err(Failure::Usage)
    };
    let retention = Retention {
        days: cli
            .retention_days
            .map_or_else(|| from_settings(settings::RETENTION_DAYS), |d| Ok(Some(d)))?,
        min_keep: cli.min_keep.map_or_else(
            || from_settings(settings::MIN_BACKUPS_TO_KEEP),
            |m| Ok(Some(m)),
        )?,
        keep_last: cli.keep_last,
        keep_daily: cli.keep_daily,
        keep_weekly: cli.keep_weekly,
        keep_monthly: cli.keep_monthly,
    };
    Ok((retention != Retention::default()).then_some(retention))
}

/// A variable of the environment or `.env`, reading `.env` if this is the first one asked for.
fn setting(settings: &Settings, key: &str) -> Result<Option<String>, Failure> {
    settings.get(key).map_err(Failure::Usage)
}
