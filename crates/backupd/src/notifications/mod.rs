//! Telling people how a job ended: webhooks, healthchecks.io pings, ntfy messages and email.
//! `plan` reads a job's options into [`JobNotifications`]; the runner calls
//! [`Notifications::job_started`] when the job begins writing and
//! [`Notifications::job_finished`] with its [`JobOutcome`] (`crate::outcome`). A notification
//! that cannot be delivered is logged and never changes the job's outcome. Each has a bound
//! (an HTTP request's timeout and attempts, an email's deadline), and one still going a few
//! seconds after its job is cancelled, or the daemon begins to stop, is given up.

pub mod email;
pub mod http;
pub mod job_log;
pub mod target;

pub use crate::outcome::JobOutcome;
use email::Mailer;
use proto::JobOptions;
use proto::job::NotifyOn;
use std::sync::Arc;
use std::time::Duration;
use target::Kind;
pub use target::{Target, TargetError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long notifications may go on once their job is cancelled or the daemon stops: enough
/// for a receiver that answers (a cancelled job's own notification is sent then), not for one
/// that hangs.
const GRACE_AFTER_CANCEL: Duration = Duration::from_secs(5);

/// Who hears of a job, and when: its options, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobNotifications {
    pub targets: Vec<Target>,
    pub on: NotifyOn,
    pub email: bool,
}

impl JobNotifications {
    pub fn from_options(options: &JobOptions) -> Result<Self, TargetError> {
        Ok(Self {
            targets: options
                .notify
                .iter()
                .map(|url| Target::parse(url))
                .collect::<Result<_, _>>()?,
            on: options.notify_on.unwrap_or_default(),
            email: options.notify_email,
        })
    }

    /// Those of `options` that can be sent, leaving out a URL that does not parse: a run that
    /// failed before its jobs started (on that URL, maybe) still tells the others.
    pub fn sendable_of(options: &JobOptions) -> Self {
        Self {
            targets: options
                .notify
                .iter()
                .filter_map(|url| Target::parse(url).ok())
                .collect(),
            on: options.notify_on.unwrap_or_default(),
            email: options.notify_email,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty() && !self.email
    }
}

/// The daemon's notifications: one HTTP client for every request, the mailer if `[email]` is
/// configured, and the host name messages give.
#[derive(Debug)]
pub struct Notifications {
    client: Result<reqwest::Client, String>,
    mailer: Option<Arc<Mailer>>,
    host: String,
}

/// What a job's start set going: its healthchecks `/start` pings.
#[derive(Debug, Default)]
pub struct Started {
    pings: Option<JoinHandle<()>>,
}

impl Notifications {
    pub fn new(mailer: Option<Mailer>) -> Self {
        Self {
            client: http::client(),
            mailer: mailer.map(Arc::new),
            host: crate::outcome::host_name(),
        }
    }

    /// The machine's name, as outcomes give it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The job (logged as `tag`) begins: healthchecks hear `/start` (in the background, so
    /// that a slow server does not hold the backup).
    pub fn job_started(&self, plan: &JobNotifications, tag: &str) -> Started {
        let checks: Vec<Target> = plan
            .targets
            .iter()
            .filter(|t| t.kind == Kind::Healthchecks)
            .cloned()
            .collect();
        let pings = match (&self.client, checks.is_empty()) {
            (Ok(client), false) => {
                let client = client.clone();
                let tag = tag.to_owned();
                Some(tokio::spawn(async move {
                    for check in &checks {
                        if let Err(e) = http::send_start(&client, check).await {
                            tracing::warn!("{tag} Notification failed: {e}");
                        }
                    }
                }))
            }
            _ => None,
        };
        Started { pings }
    }

    /// The job ended as `outcome` says: sends what is due and logs what could not be sent.
    /// Healthchecks are pinged after every run (a missing success ping is how they notice);
    /// the others only on failure unless the job says `always`. What is still being sent
    /// [`GRACE_AFTER_CANCEL`] after `cancel` (the job's cancellation, a child of `shutdown`) is
    /// given up and logged.
    pub async fn job_finished(
        &self,
        plan: &JobNotifications,
        started: Started,
        tag: &str,
        outcome: &JobOutcome,
        cancel: &CancellationToken,
        shutdown: &CancellationToken,
    ) {
        if plan.is_empty() {
            return;
        }
        let due = !outcome.succeeded() || plan.on == NotifyOn::Always;
        let given_up = |what: &str| {
            let why = if shutdown.is_cancelled() {
                "backupd began to stop"
            } else {
                "its job was cancelled"
            };
            tracing::warn!(
                "{tag} Notification failed: {what}: given up {GRACE_AFTER_CANCEL:?} after {why}"
            );
        };
        // The start ping goes first, or healthchecks would see the run start after its end.
        if let Some(pings) = started.pings {
            let abort = pings.abort_handle();
            if unless_cancelled(pings, cancel).await.is_none() {
                abort.abort();
            }
        }
        let web = plan
            .targets
            .iter()
            .filter(|t| due || t.kind == Kind::Healthchecks)
            .map(|target| async {
                let client = match &self.client {
                    Ok(client) => client,
                    Err(e) => {
                        let e = http::SendError::Client(e.clone());
                        tracing::warn!("{tag} Notification failed: {e}");
                        return;
                    }
                };
                match unless_cancelled(http::send_outcome(client, target, outcome), cancel).await {
                    Some(Ok(())) => tracing::info!("{tag} Notified {}", target.shown()),
                    Some(Err(e)) => tracing::warn!("{tag} Notification failed: {e}"),
                    None => given_up(&target.shown()),
                }
            });
        let mail = async {
            if !(plan.email && due) {
                return;
            }
            let Some(mailer) = &self.mailer else {
                tracing::warn!(
                    "{tag} Notification failed: email asked for, but backupd.toml has no \
                     [email] section"
                );
                return;
            };
            match unless_cancelled(mailer.send(outcome), cancel).await {
                Some(Ok(())) => tracing::info!("{tag} Notified by email"),
                Some(Err(e)) => tracing::warn!("{tag} Notification failed: {e}"),
                None => given_up("email"),
            }
        };
        futures_util::future::join(futures_util::future::join_all(web), mail).await;
    }
}

/// `sending`'s result, or `None` once [`GRACE_AFTER_CANCEL`] has passed since `cancel`.
async fn unless_cancelled<T>(
    sending: impl Future<Output = T>,
    cancel: &CancellationToken,
) -> Option<T> {
    let grace_over = async {
        cancel.cancelled().await;
        tokio::time::sleep(GRACE_AFTER_CANCEL).await;
    };
    tokio::select! {
        biased;
        done = sending => Some(done),
        () = grace_over => None,
    }
}
