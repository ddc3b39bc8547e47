//! Writes a restore's files to disk while it goes on: a thread of its own syncs the target's
//! file system (`syncfs`) each time another [`EVERY`] bytes were written, so that the disk
//! works while the next entries are decoded and the final sync finds little left. Only the
//! final sync's answer counts: these are best effort, their errors left for it to report.

use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

/// Bytes written between two early syncs.
pub const EVERY: u64 = 32 << 20;

/// The syncing thread, fed by [`EarlySync::written`]; dropping it waits for the thread.
#[derive(Debug)]
pub struct EarlySync {
    tick: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    unsynced: u64,
}

impl EarlySync {
    /// Starts syncing the file system of `folder` (a handle of its own).
    pub fn start(folder: OwnedFd) -> Self {
        Self::start_with(move || {
            let _ = rustix::fs::syncfs(&folder);
        })
    }

    /// Starts a thread that calls `sync` once per tick, ticks that came meanwhile included.
    /// Without a thread (none could be made), it does nothing: the final sync still comes.
    fn start_with(mut sync: impl FnMut() + Send + 'static) -> Self {
        let (tick, ticks) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("restore-sync".into())
            .spawn(move || {
                while ticks.recv().is_ok() {
                    while ticks.try_recv().is_ok() {}
                    sync();
                }
            })
            .ok();
        Self {
            tick: thread.as_ref().map(|_| tick),
            thread,
            unsynced: 0,
        }
    }

    /// Counts `bytes` more written; asks for a sync each time [`EVERY`] more are.
    pub fn written(&mut self, bytes: u64) {
        self.unsynced += bytes;
        if self.unsynced >= EVERY {
            self.unsynced = 0;
            if let Some(tick) = &self.tick {
                let _ = tick.send(());
            }
        }
    }
}

impl Drop for EarlySync {
    fn drop(&mut self) {
        self.tick = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// How many syncs `writes` asked for, once the thread is done.
    fn syncs_after(writes: &[u64]) -> usize {
        let count = Arc::new(AtomicUsize::new(0));
        let mut early = EarlySync::start_with({
            let count = Arc::clone(&count);
            move || {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        for &bytes in writes {
            early.written(bytes);
        }
        drop(early);
        count.load(Ordering::SeqCst)
    }

    #[test]
    fn a_sync_comes_once_every_so_many_bytes_are_written() {
        assert_eq!(syncs_after(&[EVERY - 1]), 0);
        assert_eq!(syncs_after(&[EVERY - 1, 1]), 1);
        assert_eq!(syncs_after(&[EVERY / 2, EVERY / 2, EVERY - 1]), 1);
        // Ticks that come while a sync runs are covered by the next one.
        let syncs = syncs_after(&[EVERY, EVERY, EVERY]);
        assert!((1..=3).contains(&syncs), "{syncs}");
    }
}
