//! `backupctl run`: sends the run, shows progress on a terminal while the daemon works, and
//! hands back the answer with its report. Ctrl-C cancels the run's jobs (on a second
//! connection) and still waits for the report, which then says they were cancelled; a second
//! Ctrl-C leaves at once. With `--detach` it prints the run's job ids and returns while the
//! daemon goes on: a run never depends on its client staying.

use crate::client::{self, Answer};
use crate::failure::Failure;
use crate::render;
use proto::event::JobRef;
use proto::request::RunArgs;
use proto::{Command, ErrorCode, Event, Incoming, Request};
use signal_hook::consts::SIGINT;
use signal_hook::iterator::Signals;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Sends the run and waits for its report, drawing progress when stdout is a terminal (unless
/// `json` asks for the answer line alone); `None` when detached (the job ids are printed).
pub fn run(
    socket: &Path,
    mut args: RunArgs,
    detach: bool,
    json: bool,
) -> Result<Option<Answer>, Failure> {
    // Always: the first event names the run's jobs, which Ctrl-C cancels and --detach prints.
    args.events = true;
    let request = Request::new(Command::Run(args));
    let mut connection = client::Connection::open(socket).map_err(|e| crate::reach_failure(&e))?;
    if detach {
        return detached(&mut connection, &request, json);
    }
    let interrupts = Interrupts::install(socket)?;
    let interactive = std::io::stdout().is_terminal() && !json;
    let mut stdout = std::io::stdout();
    let mut drawn = false;
    let mut view = render::ProgressView::default();
    let answer = connection
        .request_with_events(&request, |line| {
            if let Event::RunStarted { jobs } = &line.event {
                interrupts.jobs_known(jobs.iter().map(|j| j.job).collect());
            }
            if !interactive {
                return;
            }
            if let Some(text) = view.line(&line.event, std::time::Instant::now()) {
                let _ = write!(stdout, "\r\x1b[2K{text}");
                let _ = stdout.flush();
                drawn = true;
            }
        })
        .map_err(|e| Failure::Local(e.to_string()))?;
    if drawn {
        let _ = write!(stdout, "\r\x1b[2K");
    }
    interrupts.close();
    Ok(Some(answer))
}

/// Waits for the run's jobs to be named, prints them and leaves; an answer that comes first
/// (a dry run, a run refused before it started) is handed back as usual.
fn detached(
    connection: &mut client::Connection,
    request: &Request,
    json: bool,
) -> Result<Option<Answer>, Failure> {
    let broken = |e: client::ClientError| Failure::Local(e.to_string());
    connection.send(request).map_err(broken)?;
    loop {
        match connection.next_line().map_err(broken)? {
            (Incoming::Event(line), raw) => {
                if let Event::RunStarted { jobs } = &line.event {
                    let lines = if json {
                        vec![raw]
                    } else {
                        jobs.iter().map(started_line).collect()
                    };
                    crate::write_stdout(lines)?;
                    return Ok(None);
                }
            }
            (Incoming::Response(response), line) => return Ok(Some(Answer { response, line })),
        }
    }
}

/// Escaped: the name and the source are the client's, but may hold a newline.
fn started_line(job: &JobRef) -> String {
    let line = format!("Started job {}: {} ({})", job.job, job.name, job.source);
    proto::escape_controls(&line).into_owned()
}

/// Ctrl-C during a run: a thread waits for SIGINT and cancels the run's jobs once they are
/// known (the run's first event names them).
struct Interrupts {
    state: Arc<Mutex<CancelState>>,
    socket: PathBuf,
    handle: signal_hook::iterator::Handle,
}

#[derive(Debug, Default)]
struct CancelState {
    jobs: Option<Vec<u64>>,
    requested: bool,
    sent: bool,
}

impl CancelState {
    /// The jobs to cancel now, once: asked for, known, and not yet sent.
    fn take(&mut self) -> Option<Vec<u64>> {
        if self.requested && !self.sent {
            let jobs = self.jobs.clone()?;
            self.sent = true;
            return Some(jobs);
        }
        None
    }
}

impl Interrupts {
    fn install(socket: &Path) -> Result<Self, Failure> {
        let mut signals = Signals::new([SIGINT])
            .map_err(|e| Failure::Local(format!("can't handle Ctrl-C: {e}")))?;
        let handle = signals.handle();
        let state = Arc::new(Mutex::new(CancelState::default()));
        let thread_state = Arc::clone(&state);
        let thread_socket = socket.to_path_buf();
        std::thread::spawn(move || {
            for (count, _) in signals.forever().enumerate() {
                if count > 0 {
                    eprintln!("Interrupted again: leaving; the cancellation goes on in backupd");
                    std::process::exit(130);
                }
                eprintln!("Cancelling the run… (Ctrl-C again to leave without waiting)");
                let jobs = {
                    let mut state = thread_state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.requested = true;
                    state.take()
                };
                if let Some(jobs) = jobs {
                    cancel(&thread_socket, &jobs);
                }
            }
        });
        Ok(Self {
            state,
            socket: socket.to_path_buf(),
            handle,
        })
    }

    /// The run's jobs are known; cancels them at once if Ctrl-C came first.
    fn jobs_known(&self, jobs: Vec<u64>) {
        let pending = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.jobs = Some(jobs);
            state.take()
        };
        if let Some(jobs) = pending {
            cancel(&self.socket, &jobs);
        }
    }

    fn close(self) {
        self.handle.close();
    }
}

/// Cancels each job on a connection of its own; a job that ended meanwhile is not an error.
fn cancel(socket: &Path, jobs: &[u64]) {
    for &job in jobs {
        let request = Request::new(Command::Cancel {
            job: Some(job),
            name: None,
        });
        match client::call(socket, &request).map(|a| a.response.into_result()) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.code == ErrorCode::JobNotFound => {}
            Ok(Err(e)) => eprintln!(
                "can't cancel job {job}: {}",
                proto::escape_controls(&e.message)
            ),
            Err(e) => eprintln!(
                "can't cancel job {job}: {}",
                proto::escape_controls(&e.to_string())
            ),
        }
    }
}
