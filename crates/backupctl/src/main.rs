//! `backupctl`: a thin client of `backupd`. Each subcommand is one JSON-line request over the
//! daemon's socket; the answer is printed as text, or raw with `--json`.
//! Exit codes: 0 success, 1 the request failed, 2 bad usage, 3 the daemon is not reachable.

mod cli;
mod client;
mod client_log;
mod failure;
mod render;
mod run;
mod settings;
mod start;

use crate::cli::{Cli, CliCommand};
use crate::client::{Answer, ClientError};
use crate::failure::Failure;
use clap::Parser;
use proto::request::CreateArgs;
use proto::{Command, Request, ScheduleSpec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long `stop` waits for the daemon to finish shutting down.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            if err.use_stderr() {
                let home = home_from_raw_args();
                let rendered = err.render().to_string();
                let first = rendered.lines().next().unwrap_or_default();
                let message = first.strip_prefix("error: ").unwrap_or(first);
                client_log::log_error(home.as_deref(), &format!("bad usage: {message}"));
            }
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    let env = proto::paths::Env::from_process();
    let home = proto::paths::resolve_home(cli.home.as_deref(), &env);
    let outcome = home
        .as_ref()
        .map_err(|e| Failure::Usage(e.to_string()))
        .and_then(|home| {
            let socket = proto::paths::resolve_socket(cli.socket.as_deref(), &env, home)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            run(&cli, home, &socket)
        });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("Error: {}", failure.message());
            if failure.is_client_side() {
                client_log::log_error(home.ok().as_deref(), failure.message());
            }
            failure.exit_code()
        }
    }
}

fn run(cli: &Cli, home: &Path, socket: &Path) -> Result<(), Failure> {
    let command = match &cli.command {
        CliCommand::Run(run_cli) => return run_now(cli, run_cli, socket),
        CliCommand::Start => {
            let log_level = load_settings()?.get(settings::LOG_LEVEL);
            let answer = start::start(home, socket, log_level.as_deref())?;
            return print(cli, &answer, |_| Ok(vec!["backupd started".to_owned()]));
        }
        CliCommand::Stop => return stop(cli, socket),
        CliCommand::Create(create) => Command::Create(create_args(create)?),
        CliCommand::List => Command::List {},
        CliCommand::Delete { index, name } => Command::Delete {
            index: *index,
            name: name.clone(),
        },
        CliCommand::Status => Command::Hello {},
        CliCommand::Backups => Command::Backups {},
    };
    let answer = client::call(socket, &Request::new(command)).map_err(|e| reach_failure(&e))?;
    print(cli, &answer, |data| match &cli.command {
        CliCommand::List => render::schedules(data),
        CliCommand::Backups => render::backups(data),
        CliCommand::Status => render::status(data, socket),
        _ => Ok(Vec::new()),
    })
}

fn load_settings() -> Result<settings::Settings, Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::Usage(format!("can't read the working directory: {e}")))?;
    settings::Settings::load(&cwd).map_err(Failure::Usage)
}

fn run_now(cli: &Cli, run_cli: &cli::RunCli, socket: &Path) -> Result<(), Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::Usage(format!("can't read the working directory: {e}")))?;
    let settings = settings::Settings::load(&cwd).map_err(Failure::Usage)?;
    let args = run::request_args(run_cli, &settings, &cwd)?;
    let answer = run::run(socket, args)?;
    if cli.json {
        println!("{}", answer.line);
    } else if let Some(report) = run::report(&answer) {
        for line in render::run_report(&report) {
            println!("{line}");
        }
    }
    answer
        .response
        .into_result()
        .map(drop)
        .map_err(Failure::Refused)
}

/// Prints an answer: the raw line with `--json`, else the rendered text; an error answer
/// becomes a [`Failure::Refused`] either way.
fn print(
    cli: &Cli,
    answer: &Answer,
    render: impl FnOnce(serde_json::Value) -> Result<Vec<String>, String>,
) -> Result<(), Failure> {
    if cli.json {
        println!("{}", answer.line);
    }
    let data = answer
        .response
        .clone()
        .into_result()
        .map_err(Failure::Refused)?;
    if !cli.json {
        for line in render(data).map_err(Failure::Local)? {
            println!("{line}");
        }
    }
    Ok(())
}

/// Sends `stop`, then waits until the daemon has closed and removed its socket, so that a
/// `start` right after it works.
fn stop(cli: &Cli, socket: &Path) -> Result<(), Failure> {
    let not_running = |e: &ClientError| match e {
        ClientError::Unreachable { socket, .. } => Failure::Unreachable(format!(
            "can't stop backupd: not running (nothing answers at {})",
            socket.display()
        )),
        other => reach_failure(other),
    };
    let mut connection = client::Connection::open(socket).map_err(|e| not_running(&e))?;
    let answer = connection
        .request(&Request::new(Command::Stop {}))
        .map_err(|e| not_running(&e))?;
    print(cli, &answer, |_| Ok(Vec::new()))?;
    let _ = connection.wait_closed();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while socket.exists() {
        if Instant::now() >= deadline {
            return Err(Failure::Local(format!(
                "backupd did not finish stopping within {}s",
                STOP_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

pub(crate) fn reach_failure(err: &ClientError) -> Failure {
    match err {
        ClientError::Unreachable { .. } => Failure::Unreachable(format!(
            "{err}; is it running? Start it with `backupctl start`"
        )),
        other => Failure::Local(other.to_string()),
    }
}

fn create_args(create: &cli::CreateCli) -> Result<CreateArgs, Failure> {
    if let Some(spec) = &create.spec {
        return Ok(CreateArgs::spec(absolutize_spec(spec)?));
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::Usage(format!("can't read the working directory: {e}")))?;
    let absolute = |path: &Path| run::path_text(&cwd.join(path));
    Ok(CreateArgs {
        spec: None,
        name: create.name.clone(),
        sources: create
            .sources
            .iter()
            .map(|s| absolute(s))
            .collect::<Result<_, _>>()?,
        daily: create.daily.clone(),
        cron: create.cron.clone(),
        destination: create
            .job
            .destination
            .as_deref()
            .map(absolute)
            .transpose()?,
        compression: create.job.compression.map(|c| c.as_str().to_owned()),
        level: create.job.level,
        exclude: create.job.exclude.clone(),
    })
}

/// Makes the spec's path absolute against this directory: the daemon has no idea where the
/// user stands. A malformed spec goes to the daemon as typed, which rejects and logs it.
fn absolutize_spec(text: &str) -> Result<String, Failure> {
    let Ok(mut spec) = ScheduleSpec::parse(text) else {
        return Ok(text.to_owned());
    };
    let absolute = std::path::absolute(&spec.path)
        .map_err(|e| Failure::Usage(format!("can't resolve path {}: {e}", spec.path)))?;
    spec.path = absolute
        .into_os_string()
        .into_string()
        .map_err(|p| Failure::Usage(format!("path {} is not valid UTF-8", p.display())))?;
    Ok(spec.to_string())
}

/// The home for logging a usage error, which clap rejected before `--home` could be read.
fn home_from_raw_args() -> Option<PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    let from_flag = args.iter().enumerate().find_map(|(i, arg)| {
        arg.strip_prefix("--home=").map(str::to_owned).or_else(|| {
            (arg == "--home")
                .then(|| args.get(i + 1).cloned())
                .flatten()
        })
    });
    let env = proto::paths::Env::from_process();
    proto::paths::resolve_home(from_flag.as_deref().map(Path::new), &env).ok()
}
