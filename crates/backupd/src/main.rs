//! `backupd`: runs in the foreground until `backupctl stop`, SIGTERM or SIGINT.

use anyhow::Context;
use backupd::config::{Config, ConfigError};
use backupd::fsutil::TempNames;
use backupd::home::{Home, HomeError, HomeLock};
use backupd::schedules::ScheduleStore;
use backupd::socket::{self, ListenerSource, Previous};
use backupd::state::Daemon;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};

/// The backupd daemon: schedules, writes, rotates and verifies backups.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Home directory (default: $BACKUPD_HOME, else $XDG_STATE_HOME/backupd, else
    /// ~/.local/state/backupd).
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Socket path (default: $BACKUPD_SOCKET, else <home>/backupd.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Log verbosity: error, warn, info, debug, trace, or target=level,… (default: $RUST_LOG,
    /// else the config file's log_level, else info).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Backups written at once, across requests and schedules (default: the config file's
    /// max_jobs, else the number of cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    max_jobs: Option<u16>,
    /// How old a missed run may be and still be caught up at start: 90s, 30m, 24h, 2d
    /// (default: the config file's catch_up_grace, else 24h).
    #[arg(long, value_name = "DURATION", value_parser = parse_grace)]
    catch_up_grace: Option<chrono::TimeDelta>,
    /// Group whose members may use the socket as well (mode 0660, owned by the group)
    /// (default: $BACKUPD_SOCKET_GROUP, else the config file's socket_group, else none).
    #[arg(long, value_name = "GROUP", env = "BACKUPD_SOCKET_GROUP")]
    socket_group: Option<String>,
    /// Configuration file (default: <home>/backupd.toml, if it exists).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Check the configuration file, say what it sets, and exit.
    #[arg(long)]
    check_config: bool,
    /// Start a new session, detached from the terminal (used by `backupctl start`).
    #[arg(long, hide = true)]
    detach: bool,
    /// Print the manual page backupd.1 and exit (for install scripts and packagers; backupctl
    /// cannot render it without depending on this crate).
    #[arg(long, hide = true)]
    print_man: bool,
}

/// How far back a missed run is still caught up at start, unless configured.
const DEFAULT_CATCH_UP_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// How long shutdown waits for cancelled scheduled runs to remove their partial files and run
/// their jobs' last hooks.
const JOBS_GRACE: std::time::Duration = std::time::Duration::from_secs(30);
const _: () = assert!(JOBS_GRACE.as_secs() > backupd::hooks::LONGEST_AT_STOP.as_secs());

fn parse_grace(text: &str) -> Result<chrono::TimeDelta, String> {
    backupd::timing::parse_duration(text)
}

fn main() -> ExitCode {
    backupd::allocator::fix_mmap_threshold();
    let args = Args::parse();
    if args.print_man {
        return print_man();
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = describe(&err);
            if backupd::log::is_active() {
                // To the log file and, through the log's stderr copy, to whoever started us.
                tracing::error!("{message}");
            } else {
                eprintln!("backupd: {message}");
            }
            exit_code(&err)
        }
    }
}

/// Another backupd holds the home or answers on the socket: exit 3, so that `backupctl`,
/// which may have started us at the same moment as another client started that one, can
/// tell it from a daemon that cannot start.
const EXIT_ALREADY_RUNNING: u8 = 3;

fn exit_code(err: &anyhow::Error) -> ExitCode {
    let home_locked = matches!(
        err.downcast_ref::<HomeError>(),
        Some(HomeError::Locked { .. })
    );
    let socket_taken = matches!(
        err.downcast_ref::<socket::BindError>(),
        Some(socket::BindError::AlreadyRunning(_))
    );
    if home_locked || socket_taken {
        ExitCode::from(EXIT_ALREADY_RUNNING)
    } else {
        ExitCode::FAILURE
    }
}

/// Writes `backupd.1` to stdout. A reader that has gone away read all it wanted.
fn print_man() -> ExitCode {
    use clap::CommandFactory;
    use std::io::Write;
    let mut page = Vec::new();
    let written = clap_mangen::Man::new(Args::command())
        .render(&mut page)
        .and_then(|()| {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&page).and_then(|()| stdout.flush())
        });
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("backupd: can't print the manual page: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// The error and its causes on one line, each cause once: most of our errors already name
/// their cause in their own message.
fn describe(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain().map(ToString::to_string) {
        if !message.contains(&cause) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&cause);
        }
    }
    message
}

/// The daemon's life, one step per function.
fn run(args: Args) -> anyhow::Result<()> {
    if args.detach {
        rustix::process::setsid().context("can't start a new session")?;
    }
    // First, while no other thread exists: taking the socket clears variables from the
    // environment (see `socket::take_inherited`).
    let inherited = socket::take_inherited()?;
    let (home, socket_path) = resolve_paths(&args)?;
    // Before reading anything from the home, even its configuration file.
    home.check_trust()?;
    let config = Config::load(args.config.as_deref(), home.root())?;
    if let Some(name) = config
        .email
        .as_ref()
        .and_then(|e| e.password_env.as_deref())
    {
        backupd::child_env::withhold(name);
    }
    // Reads the SMTP password now: a daemon that could not send its emails does not start.
    let mailer = config
        .email
        .as_ref()
        .map(backupd::notifications::email::Mailer::new)
        .transpose()?;
    // Resolving the group and checking its way to the socket belong to the check too: a
    // config that passes it starts.
    let settings = server_settings(&args, &config)?;
    let mut socket_warning = None;
    if let (None, Some(group)) = (&inherited, &settings.access.group) {
        home.check_socket_reachable(&socket_path, group.gid)?;
        socket_warning = home.socket_maybe_shut(&socket_path, group.gid);
    }
    if args.check_config {
        if let Some(warning) = &socket_warning {
            eprintln!("warning: {warning}");
        }
        return check_config(&config);
    }
    if args.detach {
        // A daemon must not keep the directory it was started from busy.
        std::env::set_current_dir("/").context("can't change to /")?;
    }
    // Held to the end of run: dropping it writes out the log lines still queued.
    let log = backupd::log::LogOptions {
        level: log_level(&args, &config),
        format: config.log_format.unwrap_or_default(),
        rotation: config.log_rotation(),
    };
    let (lock, _log) = set_up_home(&home, &log, &socket_path, inherited.is_some())?;
    if let Some(warning) = socket_warning {
        tracing::warn!("{warning}");
    }
    let group = settings.access.group.map(|group| group.gid);
    let socket::Listener { socket, source } = claim_listener(&socket_path, inherited, group)?;
    // What `status` shows: the file bound, or the inherited socket's own address.
    let socket_shown = match &source {
        ListenerSource::Bound { path, .. } => Some(path.clone()),
        ListenerSource::Inherited => socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf)),
    };
    let schedules = load_schedules(&home, &source)?.keep_runs(
        config
            .runs_kept
            .unwrap_or(backupd::schedules::DEFAULT_RUNS_KEPT),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("backupd")
        .build()
        .context("can't start the async runtime")?;
    let outcome = runtime.block_on(async {
        let listener = tokio::net::UnixListener::from_std(socket)
            .context("can't register the socket with the runtime")?;
        let daemon = open_daemon(
            home,
            schedules,
            &source,
            socket_shown,
            &args,
            config,
            mailer,
        )
        .await;
        serve(listener, daemon, settings).await
    });
    shut_down(runtime, &source, lock, outcome)
}

/// `--check-config`: a valid file says so (and what it sets); an invalid one failed to load.
fn check_config(config: &Config) -> anyhow::Result<()> {
    match &config.path {
        Some(path) if config.keys.is_empty() => {
            println!("config file {} is valid; it sets nothing", path.display());
        }
        Some(path) => println!(
            "config file {} is valid; it sets {}",
            path.display(),
            config.keys.join(", ")
        ),
        None => println!("no config file: built-in defaults"),
    }
    Ok(())
}

/// `--log-level`, else `RUST_LOG`, else the config file's; `None` leaves the built-in `info`.
fn log_level(args: &Args, config: &Config) -> Option<String> {
    args.log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
        .or_else(|| config.log_level.clone())
}

/// Who may connect and how connections are bounded: `--socket-group` (or its variable), else
/// the config file's keys, else the defaults.
fn server_settings(args: &Args, config: &Config) -> anyhow::Result<backupd::server::Settings> {
    let mut settings = backupd::server::Settings::default();
    if let Some(name) = args.socket_group.as_ref().or(config.socket_group.as_ref()) {
        let etc_group =
            std::fs::read_to_string("/etc/group").context("socket_group: can't read /etc/group")?;
        let group = backupd::peer::resolve_group(name, &etc_group).map_err(|reason| {
            // A name from the config file is pointed at there, as its other errors are.
            match (&args.socket_group, &config.path, config.socket_group_line) {
                (None, Some(path), Some(line)) => anyhow::Error::new(ConfigError::Invalid {
                    path: path.clone(),
                    line,
                    reason,
                }),
                _ => anyhow::Error::msg(reason),
            }
        })?;
        settings.access.group = Some(group);
    }
    if let Some(idle) = config.idle_timeout {
        settings.timeouts.idle = idle;
    }
    if let Some(line) = config.line_timeout {
        settings.timeouts.line = line;
    }
    if let Some(cap) = config.max_connections_per_uid {
        settings.limits.per_uid = cap;
    }
    Ok(settings)
}

/// The home and the socket, absolute: a detached daemon leaves the working directory.
fn resolve_paths(args: &Args) -> anyhow::Result<(Home, PathBuf)> {
    let env = proto::paths::Env::from_process();
    let absolute = |path: PathBuf| {
        std::path::absolute(&path).with_context(|| format!("can't resolve {}", path.display()))
    };
    let home = Home::new(absolute(proto::paths::resolve_home(
        args.home.as_deref(),
        &env,
    )?)?);
    let socket_path = absolute(proto::paths::resolve_socket(
        args.socket.as_deref(),
        &env,
        home.root(),
    )?)?;
    Ok((home, socket_path))
}

/// Creates the home's folders and checks they are ours alone, takes the home's lock, then
/// starts logging into its `logs` folder (so a refused daemon never touches the log).
fn set_up_home(
    home: &Home,
    log: &backupd::log::LogOptions,
    socket_path: &Path,
    inherited: bool,
) -> anyhow::Result<(HomeLock, backupd::log::LogGuard)> {
    home.prepare()?;
    let lock = match home.lock() {
        // The same socket too: say so as before, that is what the user tried.
        Err(HomeError::Locked { .. })
            if !inherited && std::os::unix::net::UnixStream::connect(socket_path).is_ok() =>
        {
            return Err(socket::BindError::AlreadyRunning(socket_path.to_path_buf()).into());
        }
        other => other?,
    };
    Ok((lock, backupd::log::init(&home.logs_dir(), log)?))
}

/// The socket a service manager passed, else the socket bound at `socket_path` unless a live
/// daemon owns it.
fn claim_listener(
    socket_path: &Path,
    inherited: Option<socket::Listener>,
    group: Option<u32>,
) -> anyhow::Result<socket::Listener> {
    if let Some(listener) = inherited {
        let address = listener.socket.local_addr().ok();
        let path = address.as_ref().and_then(|a| a.as_pathname());
        tracing::debug!(
            "listening on {} (passed by the service manager)",
            path.map_or_else(
                || "an unnamed socket".to_owned(),
                |p| p.display().to_string()
            )
        );
        return Ok(listener);
    }
    let listener = socket::claim_for(socket_path, group)?;
    if let ListenerSource::Bound {
        path,
        previous: Previous::RemovedStale,
    } = &listener.source
    {
        tracing::info!("Removed stale socket {}", path.display());
    }
    tracing::debug!("listening on {}", socket_path.display());
    Ok(listener)
}

/// Reads the schedule file; if it can't, the socket just bound goes again.
fn load_schedules(home: &Home, source: &ListenerSource) -> anyhow::Result<ScheduleStore> {
    let schedules = ScheduleStore::load(home.schedules_file()).inspect_err(|_| {
        // We will not serve: leave nothing of ours behind.
        let _ = source.remove_own_file();
    })?;
    Ok(schedules)
}

/// The state every request shares, after cleaning what a killed daemon left behind.
async fn open_daemon(
    home: Home,
    schedules: ScheduleStore,
    source: &ListenerSource,
    socket: Option<PathBuf>,
    args: &Args,
    config: Config,
    mailer: Option<backupd::notifications::email::Mailer>,
) -> Arc<Daemon> {
    let max_jobs = args.max_jobs.or(config.max_jobs).map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let catch_up_grace = args
        .catch_up_grace
        .or(config.catch_up_grace)
        .unwrap_or(DEFAULT_CATCH_UP_GRACE);
    let mut destinations = vec![home.backups_dir()];
    destinations.extend(config.defaults.destination.iter().map(PathBuf::from));
    for schedule in schedules.snapshot().await.schedules {
        // An `s3://…` destination is a remote: nothing local to clean.
        let local = schedule
            .options
            .destination
            .as_ref()
            .filter(|d| d.starts_with('/'));
        destinations.extend(local.map(PathBuf::from));
    }
    // Listings only, bounded by the folders' sizes: done before serving, so that nothing sees
    // a partial, a temporary file or a manifest a rotation cut short condemned with its archive.
    let mut repairs = Vec::new();
    for dir in &distinct_folders(destinations) {
        remove_stale_partials(dir);
        sweep_temp_files(dir, temp_names_in(&home, dir));
        finish_cut_rotations(dir);
        repairs.extend(backupd::startup_repair::plan(dir));
    }
    sweep_temp_files(home.root(), TempNames::OursAndLegacy);
    let metrics = home.root().join(backupd::metrics::METRICS_DIR);
    sweep_temp_files(&metrics, TempNames::OursAndLegacy);
    if let Some(path) = &config.path {
        tracing::debug!("configuration from {}", path.display());
    }
    let mut daemon = Daemon::new(home, schedules, max_jobs, catch_up_grace);
    daemon.job_defaults = config.defaults;
    if config.sparse_files == Some(false) {
        daemon.holes = backupd::engine::Holes::ReadAsZeros;
    }
    daemon.remotes = std::sync::Arc::new(config.remotes);
    daemon.removes_socket = matches!(source, ListenerSource::Bound { .. });
    daemon.socket = socket;
    daemon.notify = backupd::notify::Notifier::from_env();
    daemon.notifications = backupd::notifications::Notifications::new(mailer);
    // A missing manifest is rebuilt from its archive, which may take hours: beside serving.
    // Its names' rotation locks are taken here, before any run or rotation can start.
    backupd::startup_repair::start(&daemon, repairs).await;
    Arc::new(daemon)
}

/// Serves requests and runs schedules until shutdown, then gives scheduled runs
/// [`JOBS_GRACE`] to clean up. A service manager hears of each step.
async fn serve(
    listener: tokio::net::UnixListener,
    daemon: Arc<Daemon>,
    settings: backupd::server::Settings,
) -> anyhow::Result<()> {
    spawn_signal_handlers(&daemon)?;
    tracing::info!("backupd started");
    backupd::remote::stale_uploads::spawn(&daemon);
    let scheduler = tokio::spawn(backupd::scheduler::run(Arc::clone(&daemon)));
    // Ends with the runtime: pings go on while shutdown drains, which may take a while.
    tokio::spawn({
        let daemon = Arc::clone(&daemon);
        async move { daemon.notify.watchdog().await }
    });
    tokio::spawn({
        let daemon = Arc::clone(&daemon);
        async move {
            daemon.shutdown.cancelled().await;
            daemon.notify.stopping();
        }
    });
    // The metrics file says the daemon is up; written beside serving, never before it.
    let metrics_at_start = tokio::spawn({
        let daemon = Arc::clone(&daemon);
        async move { backupd::metrics::refresh(&daemon).await }
    });
    // The listener is registered and the accept loop starts next: requests are served.
    daemon.notify.ready();
    backupd::server::serve(listener, Arc::clone(&daemon), settings).await;
    let _ = scheduler.await;
    // Scheduled runs were told to stop with the shutdown signal; let them clean up.
    daemon.jobs.close();
    if tokio::time::timeout(JOBS_GRACE, daemon.jobs.wait())
        .await
        .is_err()
    {
        tracing::warn!("scheduled runs still going after {JOBS_GRACE:?}; stopping anyway");
    }
    // Last, so that no earlier write says "up" after it.
    let _ = metrics_at_start.await;
    backupd::metrics::write_down(&daemon).await;
    Ok(())
}

/// Stops the runtime, then removes the socket if it is ours, then releases the home.
fn shut_down(
    runtime: tokio::runtime::Runtime,
    source: &ListenerSource,
    lock: HomeLock,
    outcome: anyhow::Result<()>,
) -> anyhow::Result<()> {
    // Let blocking work (a restore, a verify) end before the socket goes: once it is gone, a
    // new daemon may start on this home.
    runtime.shutdown_timeout(JOBS_GRACE);
    // Remove the socket before saying we stopped, so that a client waiting for the stop can
    // start a new daemon at once.
    if let Err(e) = source.remove_own_file() {
        tracing::warn!("{e}");
    }
    // Right after the socket: whoever saw it go may start a new daemon on this home.
    drop(lock);
    outcome?;
    tracing::info!("backupd stopped");
    Ok(())
}

/// `dirs` without the later spellings of a folder already there (a symlink to it, in another
/// schedule or `[defaults]`): one folder is swept once, and its repair planned once, for two
/// repairs of one folder would each wait for the other's rotation locks, before serving.
fn distinct_folders(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    dirs.into_iter()
        .filter(|dir| seen.insert(backupd::rotation_locks::FolderKey::of(dir)))
        .collect()
}

/// A daemon killed while writing leaves `<archive>.partial`; it is never a valid archive.
/// Cleaned in the home's backups folder and in every schedule's destination.
fn remove_stale_partials(dir: &Path) {
    match backupd::destination::LocalFolder::new(dir).remove_stale_partials() {
        Ok(removed) => {
            for path in removed {
                tracing::info!("Removed stale partial archive {}", path.display());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("can't clean partial archives in {}: {e}", dir.display()),
    }
}

/// A daemon killed while rotating, between an archive and its manifest, leaves the manifest
/// of an archive that is gone, and the mark the rotation condemned it by: nothing else would
/// ever delete it. A manifest without a mark is a user's to keep.
fn finish_cut_rotations(dir: &Path) {
    match backupd::destination::LocalFolder::new(dir).finish_cut_rotations() {
        Ok(finished) => finished.log(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("can't finish cut rotations in {}: {e}", dir.display()),
    }
}

/// In the home's own backups folder, the temporary names of earlier versions are ours too; in
/// a destination a user chose, only the names nobody else uses.
fn temp_names_in(home: &Home, dir: &Path) -> TempNames {
    if dir == home.backups_dir() {
        TempNames::OursAndLegacy
    } else {
        TempNames::Ours
    }
}

/// A daemon killed while replacing a file (the schedules, the verify ledger, a manifest)
/// leaves the temporary file it was writing; nothing else writes yet, so it is an orphan.
fn sweep_temp_files(dir: &Path, names: TempNames) {
    match backupd::fsutil::sweep_temp_files(dir, names) {
        Ok(removed) => {
            for path in removed {
                tracing::info!("Removed stale temporary file {}", path.display());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("can't clean temporary files in {}: {e}", dir.display()),
    }
}

/// SIGTERM and SIGINT shut down exactly as `stop` does; SIGHUP reopens the log file.
fn spawn_signal_handlers(daemon: &Arc<Daemon>) -> anyhow::Result<()> {
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
    ] {
        let mut stream = signal(kind).with_context(|| format!("can't handle {name}"))?;
        let shutdown = daemon.shutdown.clone();
        tokio::spawn(async move {
            if stream.recv().await.is_some() {
                tracing::debug!("{name} received; shutting down");
                shutdown.cancel();
            }
        });
    }
    // SIGHUP reopens the log file, for an external logrotate that moved it away.
    let mut hangups = signal(SignalKind::hangup()).context("can't handle SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            backupd::log::reopen();
            tracing::info!("Reopened the log file (SIGHUP)");
        }
    });
    Ok(())
}
