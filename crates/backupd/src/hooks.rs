//! Runs a job's hooks (`before`, `after`, `on_failure`, `finally`): each an argv without a
//! shell, in a process group of its own, with the job's facts in `BACKUPD_*` variables, its
//! output line by line in the daemon's log under the job's tag, and a timeout after which the
//! whole group is killed. When the daemon stops, a running hook gets SIGTERM and a short grace
//! before SIGKILL, so shutdown never waits on a hook that hangs; one that starts once the stop
//! has begun (a cancelled job's `on_failure` and `finally`) gets a short time to run first.

use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Which hook, as the log and errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Before,
    After,
    OnFailure,
    Finally,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Before => "before",
            HookKind::After => "after",
            HookKind::OnFailure => "on-failure",
            HookKind::Finally => "finally",
        }
    }
}

/// Why a hook failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook could not start ({program}): {reason}")]
    Spawn {
        kind: &'static str,
        program: String,
        reason: String,
    },
    #[error("{kind} hook failed: {status}")]
    Failed { kind: &'static str, status: String },
    #[error("{kind} hook timed out after {secs} s and was killed")]
    TimedOut { kind: &'static str, secs: u64 },
    #[error("{kind} hook killed: {why}")]
    Stopped {
        kind: &'static str,
        why: &'static str,
    },
}

/// How long a hook may finish after SIGTERM when the daemon stops.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long a hook that starts once the stop has begun runs (its timeout, if shorter) before
/// it is stopped as a running one is: a job the stop cancelled still gets its `on_failure` and
/// `finally` (`systemctl start app` after `before = systemctl stop app`).
const LATE_HOOK_TIME: Duration = Duration::from_secs(5);

/// The longest a job's hooks hold a stop up: a `before` hook stopped, then two hooks started
/// late. Shutdown waits longer than this for jobs to end.
pub const LONGEST_AT_STOP: Duration = Duration::from_secs(
    STOP_GRACE.as_secs() + 2 * (LATE_HOOK_TIME.as_secs() + STOP_GRACE.as_secs()),
);

/// One hook to run.
#[derive(Debug)]
pub struct Hook<'a> {
    pub kind: HookKind,
    pub argv: &'a [String],
    pub env: Vec<(&'static str, String)>,
    pub timeout: Duration,
    /// The job's `[name #id]`, before each logged line.
    pub tag: &'a str,
}

impl Hook<'_> {
    /// Runs the hook to its end (or its kill); `Ok` only on exit status 0. Nothing to run is
    /// success. The daemon stopping stops it, and so does cancelling `job`, if given.
    pub async fn run(
        self,
        shutdown: &CancellationToken,
        job: Option<&CancellationToken>,
    ) -> Result<(), HookError> {
        let kind = self.kind.as_str();
        let Some((program, args)) = self.argv.split_first() else {
            return Ok(());
        };
        tracing::info!("{} Running {kind} hook: {}", self.tag, self.argv.join(" "));
        let mut command = Command::new(program);
        crate::child_env::prepare(command.as_std_mut());
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, env_value(v))))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The same wherever the daemon was started (a service's is `/`).
            .current_dir("/")
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let error = HookError::Spawn {
                    kind,
                    program: program.clone(),
                    reason: e.to_string(),
                };
                // A timetabled run has no client to read why.
                tracing::error!("{} {error}", self.tag);
                return Err(error);
            }
        };
        let group = child.id().and_then(|id| Pid::from_raw(id.cast_signed()));
        let out = child.stdout.take().map(|o| log_lines(o, self.tag, kind));
        let err = child.stderr.take().map(|e| log_lines(e, self.tag, kind));

        let job_cancelled = async {
            match job {
                Some(job) => job.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let started_late = shutdown.is_cancelled();
        let stopping = async {
            if started_late {
                tokio::time::sleep(LATE_HOOK_TIME).await;
            } else {
                shutdown.cancelled().await;
            }
        };
        // A job's cancellation is a child of the shutdown: a stop sets both, and is named.
        let ended = tokio::select! {
            biased;
            status = child.wait() => Ended::Exited(status),
            () = tokio::time::sleep(self.timeout) => Ended::TimedOut,
            () = stopping => Ended::Stopping("backupd is stopping"),
            () = job_cancelled => Ended::Stopping(if shutdown.is_cancelled() {
                "backupd is stopping"
            } else {
                "its job was cancelled"
            }),
        };
        let result = match ended {
            Ended::Exited(Ok(status)) if status.success() => Ok(()),
            Ended::Exited(Ok(status)) => Err(HookError::Failed {
                kind,
                status: status.to_string(),
            }),
            Ended::Exited(Err(e)) => Err(HookError::Failed {
                kind,
                status: e.to_string(),
            }),
            // The whole group goes, what the hook left running included.
            Ended::TimedOut => {
                signal_group(group, Signal::KILL);
                let _ = child.wait().await;
                Err(HookError::TimedOut {
                    kind,
                    secs: self.timeout.as_secs(),
                })
            }
            Ended::Stopping(why) => {
                signal_group(group, Signal::TERM);
                if tokio::time::timeout(STOP_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    signal_group(group, Signal::KILL);
                    let _ = child.wait().await;
                }
                signal_group(group, Signal::KILL);
                Err(HookError::Stopped { kind, why })
            }
        };
        // A hook that ended by itself may have started something meant to outlive it (`nohup
        // app &` in an `after` hook restarting a service), as from a shell: it stays. What
        // still holds the hook's output may hold it for good: the pipe is let go.
        for mut reader in out.into_iter().chain(err) {
            if tokio::time::timeout(Duration::from_secs(1), &mut reader)
                .await
                .is_err()
            {
                reader.abort();
            }
        }
        match &result {
            Ok(()) => tracing::info!("{} {kind} hook done", self.tag),
            Err(e) => tracing::error!("{} {e}", self.tag),
        }
        result
    }
}

/// `value` as an environment variable can hold it: a NUL (a dump's stderr in an error)
/// would make the hook fail to start, and so would a value past the kernel's 128 KiB.
fn env_value(value: &str) -> String {
    const MOST: usize = 64 << 10;
    let mut value = value.replace('\0', "\\0");
    if value.len() > MOST {
        let mut end = MOST;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        value.push_str(" [cut]");
    }
    value
}

enum Ended {
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    Stopping(&'static str),
}

/// Signals the hook's process group; one already gone is fine.
fn signal_group(group: Option<Pid>, signal: Signal) {
    if let Some(group) = group {
        let _ = kill_process_group(group, signal);
    }
}

/// The most of one line of a hook's output that is logged; the rest of a longer line is left
/// out, and the line says so.
const MAX_LINE: usize = 4096;

/// Logs each line of a hook's output under the job's tag, to the end of the output: bytes that
/// are not UTF-8 are logged as U+FFFD and a line is cut at [`MAX_LINE`], so that neither stops
/// the reading (the hook would die of SIGPIPE) nor fills the daemon's memory.
fn log_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    tag: &str,
    kind: &'static str,
) -> tokio::task::JoinHandle<()> {
    let tag = tag.to_owned();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        let mut cut = false;
        let log = |line: &[u8], cut: bool| {
            let text = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
            if cut {
                tracing::info!("{tag} {kind} hook: {text} [line cut at {MAX_LINE} bytes]");
            } else {
                tracing::info!("{tag} {kind} hook: {text}");
            }
        };
        while let Ok(buffer) = reader.fill_buf().await {
            if buffer.is_empty() {
                if !line.is_empty() {
                    log(&line, cut);
                }
                break;
            }
            let end = buffer.iter().position(|&b| b == b'\n');
            let part = &buffer[..end.unwrap_or(buffer.len())];
            let room = MAX_LINE.saturating_sub(line.len());
            line.extend_from_slice(&part[..part.len().min(room)]);
            cut |= part.len() > room;
            let used = end.map_or(buffer.len(), |end| end + 1);
            reader.consume(used);
            if end.is_some() {
                log(&line, cut);
                line.clear();
                cut = false;
            }
        }
    })
}

/// The hooks of a run's jobs, with their timeout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobHooks {
    pub hooks: proto::job::Hooks,
    pub timeout: Duration,
}

impl JobHooks {
    fn hook<'a>(
        &'a self,
        kind: HookKind,
        argv: &'a [String],
        tag: &'a str,
        env: Vec<(&'static str, String)>,
    ) -> Hook<'a> {
        Hook {
            kind,
            argv,
            env,
            timeout: self.timeout,
            tag,
        }
    }

    /// The `before` hook, given the job's name and planned archive; its failure fails the job,
    /// and cancelling the job kills it.
    pub async fn before(
        &self,
        tag: &str,
        env: Vec<(&'static str, String)>,
        shutdown: &CancellationToken,
        job: &CancellationToken,
    ) -> Result<(), HookError> {
        self.hook(HookKind::Before, &self.hooks.before, tag, env)
            .run(shutdown, Some(job))
            .await
    }

    /// `after` (the job succeeded) or `on_failure`, then `finally`. Their failures are logged;
    /// the job's outcome stands.
    pub async fn after_job(
        &self,
        outcome: &crate::outcome::JobOutcome,
        tag: &str,
        shutdown: &CancellationToken,
    ) {
        let (kind, argv) = if outcome.status.is_ok() {
            (HookKind::After, &self.hooks.after)
        } else {
            (HookKind::OnFailure, &self.hooks.on_failure)
        };
        let _ = self
            .hook(kind, argv, tag, outcome.env())
            .run(shutdown, None)
            .await;
        let _ = self
            .hook(HookKind::Finally, &self.hooks.finally, tag, outcome.env())
            .run(shutdown, None)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    async fn run(
        words: &[&str],
        timeout: Duration,
        shutdown: &CancellationToken,
    ) -> Result<(), HookError> {
        let argv = argv(words);
        Hook {
            kind: HookKind::Before,
            argv: &argv,
            env: vec![("BACKUPD_NAME", "docs".into())],
            timeout,
            tag: "[docs #1]",
        }
        .run(shutdown, None)
        .await
    }

    #[tokio::test]
    async fn exit_status_decides_and_env_is_passed() {
        let token = CancellationToken::new();
        let long = Duration::from_secs(30);
        assert_eq!(
            run(&["sh", "-c", "test \"$BACKUPD_NAME\" = docs"], long, &token).await,
            Ok(())
        );
        let failed = run(&["sh", "-c", "exit 3"], long, &token)
            .await
            .unwrap_err();
        assert!(failed.to_string().contains("exit status: 3"), "{failed}");
        let missing = run(&["/nonexistent/hook"], long, &token).await.unwrap_err();
        assert!(matches!(missing, HookError::Spawn { .. }));
    }

    #[tokio::test]
    async fn a_hanging_hook_is_killed_with_its_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let token = CancellationToken::new();
        let started = Instant::now();
        let err = run(&["sh", "-c", &script], Duration::from_millis(500), &token)
            .await
            .unwrap_err();
        assert!(matches!(err, HookError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background sleep was in the hook's group: it is gone too (a zombie at most).
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |stat| stat.contains(") Z "))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone(), "the hook's background process still runs");
    }

    #[tokio::test]
    async fn shutdown_stops_a_running_hook() {
        let token = CancellationToken::new();
        let stopper = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stopper.cancel();
        });
        let started = Instant::now();
        let err = run(&["sleep", "300"], Duration::from_secs(600), &token)
            .await
            .unwrap_err();
        assert!(matches!(err, HookError::Stopped { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    /// A `finally` hook started once the stop has begun, as a cancelled job's is.
    async fn finally_after_the_stop_began(words: &[&str]) -> Result<(), HookError> {
        let stopped = CancellationToken::new();
        stopped.cancel();
        let argv = argv(words);
        Hook {
            kind: HookKind::Finally,
            argv: &argv,
            env: Vec::new(),
            timeout: Duration::from_secs(600),
            tag: "[docs #1]",
        }
        .run(&stopped, None)
        .await
    }

    #[tokio::test]
    async fn a_hook_that_starts_once_the_stop_has_begun_runs_to_its_end() {
        // A second, against a kill at once: the stop's SIGTERM came as the hook started.
        assert_eq!(finally_after_the_stop_began(&["sleep", "1"]).await, Ok(()));
    }

    #[tokio::test]
    async fn a_hook_that_starts_once_the_stop_has_begun_is_stopped_after_its_time() {
        let started = Instant::now();
        let err = finally_after_the_stop_began(&["sleep", "300"])
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "finally hook killed: backupd is stopping");
        assert!(started.elapsed() < LONGEST_AT_STOP * 2);
    }

    #[tokio::test]
    async fn cancelling_its_job_stops_a_running_hook_and_says_so() {
        let shutdown = CancellationToken::new();
        let job = shutdown.child_token();
        let canceller = job.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            canceller.cancel();
        });
        let argv = argv(&["sleep", "300"]);
        let hook = Hook {
            kind: HookKind::Before,
            argv: &argv,
            env: Vec::new(),
            timeout: Duration::from_secs(600),
            tag: "[docs #1]",
        };
        let started = Instant::now();
        let err = hook.run(&shutdown, Some(&job)).await.unwrap_err();
        assert_eq!(err.to_string(), "before hook killed: its job was cancelled");
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(!shutdown.is_cancelled());
    }
}
