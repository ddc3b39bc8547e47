//! `backupctl`: a thin client of `backupd`. Each subcommand is one JSON-line request over the
//! daemon's socket; the answer is printed as text, or raw with `--json`.
//! Exit codes: 0 success, 1 the request failed, 2 bad usage, 3 the daemon is not reachable,
//! 4 a run completed with warnings (entries skipped).

mod cli;
mod client;
mod client_log;
mod failure;
mod keygen;
mod passphrase;
mod render;
mod requests;
mod run;
mod settings;
mod shell;
mod start;
mod watch;
mod words;

use crate::cli::{Cli, CliCommand};
use crate::client::{Answer, ClientError};
use crate::failure::Failure;
use crate::requests::Context;
use clap::Parser;
use proto::response::StopInfo;
use proto::{Command, Reply, Request};
use std::io::Write;
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
                client_log::log_error(
                    home.as_deref(),
                    &format!("bad usage: {}", usage_error_text(&err)),
                );
            }
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    let env = proto::paths::Env::from_process();
    // Absolute, so that the daemon `start` launches finds the same home from `/`.
    let home = proto::paths::resolve_home(cli.home.as_deref(), &env)
        .map(|home| std::path::absolute(&home).unwrap_or(home));
    // Completions and man pages work without a home, such as in a package build.
    let outcome = keygen::run_local(&cli)
        .or_else(|| shell::run_local(&cli))
        .unwrap_or_else(|| {
            home.as_ref()
                .map_err(|e| Failure::Usage(e.to_string()))
                .and_then(|home| {
                    let socket = proto::paths::resolve_socket(cli.socket.as_deref(), &env, home)
                        .map_err(|e| Failure::Usage(e.to_string()))?;
                    run(&cli, home, &socket)
                })
        });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // A closed stderr must not turn a failure into a panic.
            let label = if failure.is_warning() {
                "Warning"
            } else {
                "Error"
            };
            // The daemon's message may quote an archive's entry or a folder's file name.
            let message = proto::escape_controls(failure.message());
            let _ = writeln!(std::io::stderr(), "{label}: {message}");
            // Exit 1 comes with one answer line, also for what the daemon never answered.
            if let Some(line) = failure.json_line().filter(|_| cli.json) {
                let _ = write_out(line.as_bytes());
            }
            if failure.is_client_side() {
                client_log::log_error(home.ok().as_deref(), failure.message());
            }
            failure.exit_code()
        }
    }
}

fn run(cli: &Cli, home: &Path, socket: &Path) -> Result<(), Failure> {
    match &cli.command {
        CliCommand::Start => {
            let answer = start::start(home, socket, log_level)?;
            return print(cli, &answer, |_| Ok(vec!["backupd started".to_owned()]));
        }
        CliCommand::Stop => return stop(cli, socket),
        _ => {}
    }
    let command = requests::build(&cli.command, &Context::here())?;
    let answer = match &command {
        Command::Run(args) => {
            let detach = matches!(&cli.command, CliCommand::Run(run) if run.detach);
            match run::run(socket, args.clone(), detach, cli.json)? {
                Some(answer) => answer,
                None => return Ok(()),
            }
        }
        Command::Watch {} => return watch::watch(socket, cli.json),
        // The schedule manager's workflow adds and lists schedules before the service runs:
        // the daemon, which owns the schedule file and the archives, is started for them.
        command @ (Command::Create(_)
        | Command::Delete { .. }
        | Command::List {}
        | Command::Backups { .. }) => match call(socket, command) {
            Err(ClientError::Unreachable { .. }) => {
                start_for(command, home, socket)?;
                call(socket, command).map_err(|e| reach_failure(&e))?
            }
            answered => answered.map_err(|e| reach_failure(&e))?,
        },
        command => call(socket, command).map_err(|e| reach_failure(&e))?,
    };
    let long = matches!(cli.command, CliCommand::List { long: true });
    let mut not_listed = None;
    print(cli, &answer, |data| {
        let reply = Reply::decode(&command, data)
            .map_err(|e| format!("unexpected answer from backupd: {e}"))?;
        if let Reply::Listing(listing) = &reply {
            not_listed = render::not_listed(listing);
        }
        Ok(render::reply(reply, socket, long))
    })?;
    // After the lines, on stderr: stdout stays the listing itself. `--json` has the count.
    if let Some(warning) = not_listed {
        let _ = writeln!(std::io::stderr(), "Warning: {warning}");
    }
    completed_with_warnings(&command, &answer)
}

/// A run that succeeded but left entries out ends with its own exit code, so that a script
/// notices what the report's warnings say.
fn completed_with_warnings(command: &Command, answer: &Answer) -> Result<(), Failure> {
    let Command::Run(_) = command else {
        return Ok(());
    };
    let report = answer
        .response
        .data
        .clone()
        .and_then(|data| serde_json::from_value::<proto::response::RunReport>(data).ok());
    // An offsite failure outweighs skipped entries: a copy is missing.
    if let Some(line) = report
        .as_ref()
        .and_then(proto::response::RunReport::offsite_summary)
    {
        return Err(Failure::OffsiteFailed(line));
    }
    match report
        .as_ref()
        .and_then(proto::response::RunReport::warnings_summary)
    {
        Some(line) => Err(Failure::Warnings(line)),
        None => Ok(()),
    }
}

/// Prints an answer: the raw line with `--json`, else its data rendered as text (a failure
/// may carry data too, such as the report of a partly failed run). An error answer becomes a
/// [`Failure::Refused`] either way.
fn print(
    cli: &Cli,
    answer: &Answer,
    render: impl FnOnce(serde_json::Value) -> Result<Vec<String>, String>,
) -> Result<(), Failure> {
    let written = if cli.json {
        write_stdout([&answer.line])
    } else if let Some(data) = answer.response.data.clone() {
        write_stdout(render(data).map_err(Failure::Local)?)
    } else {
        Ok(())
    };
    answer
        .response
        .clone()
        .into_result()
        .map_err(Failure::Refused)?;
    written
}

/// Writes lines to stdout. A reader that has gone away (`backupctl list | head -1`) ends the
/// output quietly: it read all it wanted, and the request itself went through.
pub(crate) fn write_stdout(
    lines: impl IntoIterator<Item = impl AsRef<str>>,
) -> Result<(), Failure> {
    let text: String = lines
        .into_iter()
        .map(|line| format!("{}\n", line.as_ref()))
        .collect();
    write_out(text.as_bytes())
}

/// Writes bytes to stdout, with [`write_stdout`]'s handling of a reader that has gone away.
pub(crate) fn write_out(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_all(bytes).and_then(|()| stdout.flush());
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::Local(format!("can't write the output: {e}")))
        }
        _ => Ok(()),
    }
}

/// Starts the daemon for a schedule command that found none, and says so on stderr (stdout
/// stays the command's own) and in `backupctl.log`. One another client started meanwhile
/// serves as well.
fn start_for(command: &Command, home: &Path, socket: &Path) -> Result<(), Failure> {
    match start::start(home, socket, log_level) {
        Ok(_) => {}
        Err(Failure::AlreadyRunning(_)) => return Ok(()),
        Err(other) => return Err(other),
    }
    let name = match command {
        Command::Create(_) => "create",
        Command::Delete { .. } => "delete",
        Command::List {} => "list",
        _ => "backups",
    };
    let note = format!("backupd was not running; started it for {name}");
    let _ = writeln!(std::io::stderr(), "{note}");
    client_log::log_info(Some(home), &note);
    Ok(())
}

/// The original backup script's `LOG_LEVEL` for a daemon being started: from the environment
/// or `.env`, which only a start reads (as root it may refuse it).
fn log_level() -> Result<Option<String>, Failure> {
    settings::Settings::here()
        .get(settings::LOG_LEVEL)
        .map_err(Failure::Usage)
}

/// Sends `stop`, then waits until the daemon is gone: its process has ended and, if it
/// removes its socket file, the file is gone too, so that a `start` right after it works. A
/// socket passed by a service manager stays, so only the process is waited for then.
fn stop(cli: &Cli, socket: &Path) -> Result<(), Failure> {
    let not_running = |e: &ClientError| match e {
        ClientError::Unreachable { socket, .. } => Failure::Unreachable(format!(
            "can't stop backupd: not running (nothing answers at {})",
            socket.display()
        )),
        other => reach_failure(other),
    };
    // The daemon answers `stop` at once (then shuts down): a stopped or hung one is not
    // waited for without end.
    let mut connection = client::Connection::open(socket)
        .and_then(|connection| connection.with_patience(client::answer_patience()?))
        .map_err(|e| not_running(&e))?;
    let answer = connection
        .request(&Request::new(Command::Stop {}))
        .map_err(|e| not_running(&e))?;
    let unexpected = |e: serde_json::Error| format!("unexpected answer from backupd: {e}");
    if let Some(data) = answer.response.data.clone().filter(|_| answer.response.ok) {
        let info: StopInfo =
            serde_json::from_value(data).map_err(|e| Failure::Local(unexpected(e)))?;
        let _ = connection.wait_closed();
        wait_until_gone(&info, socket, Instant::now() + STOP_TIMEOUT)?;
    }
    print(cli, &answer, |data| {
        let reply = Reply::decode(&Command::Stop {}, data).map_err(unexpected)?;
        Ok(render::reply(reply, socket, false))
    })
}

/// Waits, until `deadline`, for the daemon's process to end and, if it said so, for its socket
/// file to go.
fn wait_until_gone(info: &StopInfo, socket: &Path, deadline: Instant) -> Result<(), Failure> {
    let too_slow = || {
        Failure::Local(format!(
            "backupd did not finish stopping within {}s",
            STOP_TIMEOUT.as_secs()
        ))
    };
    let pid = i32::try_from(info.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| Failure::Local(format!("backupd answered stop with pid {}", info.pid)))?;
    if !wait_for_exit(pid, deadline)
        .map_err(|e| Failure::Local(format!("can't wait for backupd to end: {e}")))?
    {
        return Err(too_slow());
    }
    // The daemon removes its file before it exits; this only guards against a daemon that
    // ended without doing so.
    while info.removes_socket && socket.exists() {
        if Instant::now() >= deadline {
            return Err(too_slow());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// Waits until process `pid` has ended, or `deadline`; `false` if it is still there. A pidfd
/// reports the end even while the process is a zombie its parent has not reaped yet (a daemon
/// started by a shell or a test), which `kill(pid, 0)` still finds; without pidfds (an old
/// kernel, a sandbox) that check is the fallback.
fn wait_for_exit(pid: rustix::process::Pid, deadline: Instant) -> std::io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::io::Errno;
    let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(pidfd) => pidfd,
        Err(Errno::SRCH) => return Ok(true),
        Err(_) => {
            while rustix::process::test_kill_process(pid) != Err(Errno::SRCH) {
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            return Ok(true);
        }
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec::try_from(left).map_err(std::io::Error::other)?;
        match poll(&mut [PollFd::new(&pidfd, PollFlags::IN)], Some(&timeout)) {
            Ok(ready) => return Ok(ready > 0),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `command` on a fresh connection; one the daemon answers at once waits a bounded time.
fn call(socket: &Path, command: &Command) -> Result<Answer, ClientError> {
    let request = Request::new(command.clone());
    match command {
        Command::Hello {}
        | Command::Status {}
        | Command::Jobs {}
        | Command::Cancel { .. }
        | Command::LogLevel { .. }
        | Command::List {}
        | Command::Create(_)
        | Command::Delete { .. } => client::call_answered_at_once(socket, &request),
        // Those read archives, or a remote: as long as that takes.
        _ => client::call(socket, &request),
    }
}

pub(crate) fn reach_failure(err: &ClientError) -> Failure {
    match err {
        // `start` would refuse to replace it: advising it would lead nowhere.
        ClientError::Unreachable { socket, .. } if is_not_a_socket(socket) => {
            Failure::Unreachable(format!(
                "{err}; {} is not a socket, so no daemon listens there: give --socket the \
                 daemon's socket",
                socket.display()
            ))
        }
        ClientError::Unreachable { .. } => Failure::Unreachable(format!(
            "{err}; is it running? Start it with `backupctl start`"
        )),
        ClientError::Silent { .. } => Failure::Unreachable(err.to_string()),
        ClientError::Forbidden { .. } => Failure::Denied(err.to_string()),
        other => Failure::Local(other.to_string()),
    }
}

/// Whether something other than a socket (a regular file, a folder) is at `path`.
fn is_not_a_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|meta| !meta.file_type().is_socket())
}

/// clap's error without its usage and help lines, on one line: what is wrong, and what is
/// missing when it lists the missing arguments on lines of their own.
fn usage_error_text(err: &clap::Error) -> String {
    // clap shows the whole help then, which says nothing of what is wrong.
    if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "no command given".to_owned();
    }
    err.render()
        .to_string()
        .lines()
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The home for logging a usage error, which clap rejected before `--home` could be read.
/// None when `--home` has no value (empty, missing, or the next option), which is the error
/// clap reports: the user named a home, but no folder to log in.
fn home_from_raw_args() -> Option<PathBuf> {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut from_flag = None;
    for (i, arg) in args.iter().enumerate() {
        let arg = arg.as_bytes();
        if arg == b"--" {
            break;
        }
        if let Some(value) = arg.strip_prefix(b"--home=") {
            from_flag = Some(OsStr::from_bytes(value).to_owned());
            break;
        }
        if arg == b"--home" {
            let value = args.get(i + 1).filter(|v| !v.as_bytes().starts_with(b"-"));
            from_flag = Some(value.cloned().unwrap_or_default());
            break;
        }
    }
    if from_flag.as_ref().is_some_and(|home| home.is_empty()) {
        return None;
    }
    let env = proto::paths::Env::from_process();
    proto::paths::resolve_home(from_flag.as_deref().map(Path::new), &env).ok()
}
