//! Tells a service manager how the daemon is doing, over the datagram socket that
//! `NOTIFY_SOCKET` names (sd_notify(3)): `READY=1` once requests are served, a one-line
//! `STATUS=` (backups running, the next scheduled run), `STOPPING=1` when shutdown begins, and
//! `WATCHDOG=1` pings when `WATCHDOG_USEC` asks for them. Started by hand or by
//! `backupctl start` there is no `NOTIFY_SOCKET`, and every call returns at once.

use chrono::{DateTime, Local};
use sd_notify::NotifyState;
use std::sync::{Mutex, PoisonError};

/// The next scheduled run, as the status line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRun {
    pub name: String,
    pub at: DateTime<Local>,
}

/// The daemon's side of the notify protocol; one per daemon.
#[derive(Debug)]
pub struct Notifier {
    /// `None` without a service manager: nothing is counted, formatted or sent.
    board: Option<Mutex<Board>>,
}

/// What the status line says.
#[derive(Debug, Default)]
struct Board {
    running: usize,
    next: Option<NextRun>,
    stopping: bool,
    /// The line last sent, so that an unchanged state sends nothing.
    sent: String,
}

impl Notifier {
    /// Enabled if a service manager gave us a `NOTIFY_SOCKET`.
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        Self {
            board: enabled.then(Mutex::default),
        }
    }

    pub fn disabled() -> Self {
        Self { board: None }
    }

    /// `READY=1`: the daemon accepts requests.
    pub fn ready(&self) {
        self.update(|_| {}, Some(NotifyState::Ready));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.update(|board| board.stopping = true, Some(NotifyState::Stopping));
    }

    /// Counts a backup as running until the guard is dropped.
    pub fn backup_started(&self) -> RunningBackup<'_> {
        self.update(|board| board.running += 1, None);
        RunningBackup(self)
    }

    /// The scheduler's next run changed (or is still the same: then nothing is sent).
    pub fn next_run(&self, next: Option<NextRun>) {
        self.update(|board| board.next = next, None);
    }

    /// Sends `WATCHDOG=1` every half of `WATCHDOG_USEC`, as systemd asks, until the task is
    /// dropped with the runtime; returns at once if no watchdog is set (or `WATCHDOG_PID` names
    /// another process).
    pub async fn watchdog(&self) {
        if self.board.is_none() {
            return;
        }
        let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) else {
            return;
        };
        let mut ticks = tokio::time::interval(timeout / 2);
        // After a stall, one ping now is what the manager needs, not a burst of late ones.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
                tracing::debug!("can't ping the service manager's watchdog: {e}");
            }
        }
    }

    /// Applies a change and sends the status line if it changed, after `state` if any.
    fn update(&self, change: impl FnOnce(&mut Board), state: Option<NotifyState<'_>>) {
        let Some(board) = &self.board else {
            return;
        };
        // Sent under the lock, so that two updates never reach the manager out of order.
        let mut board = board.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut board);
        let line = board.line(&Local::now());
        if state.is_none() && line == board.sent {
            return;
        }
        let announces = state.is_some();
        let states: Vec<NotifyState<'_>> = state
            .into_iter()
            .chain([NotifyState::Status(&line)])
            .collect();
        match sd_notify::notify(&states) {
            Ok(()) => {}
            Err(e) if announces => tracing::warn!("can't notify the service manager: {e}"),
            Err(e) => tracing::debug!("can't send the service manager a status: {e}"),
        }
        board.sent = line;
    }
}

/// A backup counted in the status line while it is alive.
#[derive(Debug)]
pub struct RunningBackup<'a>(&'a Notifier);

impl Drop for RunningBackup<'_> {
    fn drop(&mut self) {
        self.0.update(
            |board| board.running = board.running.saturating_sub(1),
            None,
        );
    }
}

impl Board {
    /// A short line for `systemctl status`: "idle; next run docs at 02:00",
    /// "2 backups running; next run docs tomorrow at 02:00", "stopping; 1 backup running".
    fn line(&self, now: &DateTime<Local>) -> String {
        let running = match self.running {
            0 => None,
            1 => Some("1 backup running".to_owned()),
            n => Some(format!("{n} backups running")),
        };
        if self.stopping {
            return running.map_or_else(|| "stopping".to_owned(), |r| format!("stopping; {r}"));
        }
        let next = match &self.next {
            None => "nothing scheduled".to_owned(),
            Some(next) => {
                let days = (next.at.date_naive() - now.date_naive()).num_days();
                let when = match days {
                    ..=0 => next.at.format("at %H:%M").to_string(),
                    1 => next.at.format("tomorrow at %H:%M").to_string(),
                    _ => next.at.format("on %d/%m/%Y at %H:%M").to_string(),
                };
                format!("next run {} {when}", next.name)
            }
        };
        format!("{}; {next}", running.as_deref().unwrap_or("idle"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32, minute: u32) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(2026, 11, day, hour, minute, 0)
            .single()
            .unwrap()
    }

    #[test]
    fn the_status_line_says_what_runs_and_what_comes_next() {
        let now = at(24, 16, 7);
        let next = |day, hour| {
            Some(NextRun {
                name: "docs".to_owned(),
                at: at(day, hour, 0),
            })
        };
        let line = |running, next, stopping| {
            Board {
                running,
                next,
                stopping,
                sent: String::new(),
            }
            .line(&now)
        };
        assert_eq!(line(0, None, false), "idle; nothing scheduled");
        assert_eq!(line(0, next(24, 22), false), "idle; next run docs at 22:00");
        assert_eq!(
            line(1, next(25, 2), false),
            "1 backup running; next run docs tomorrow at 02:00"
        );
        assert_eq!(
            line(2, next(30, 2), false),
            "2 backups running; next run docs on 30/11/2026 at 02:00"
        );
        assert_eq!(line(0, next(25, 2), true), "stopping");
        assert_eq!(line(3, None, true), "stopping; 3 backups running");
    }
}
