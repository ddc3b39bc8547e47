//! Background sync: an archive reaches stable storage while it is still being written, instead
//! of all at once in the `fsync` before it is published.
//!
//! Every [`STEP`] bytes, a thread of the archive's own calls `fdatasync` on it; the writer
//! never waits for it. An archive smaller than [`STEP`] starts no thread. Syncs do not queue
//! up: one asked for while another runs happens once that one ends, and covers everything
//! written by then. The disk, its volatile cache included, then works beside the compressor,
//! and the final `fsync` finds little left.
//! Handing the pages to the kernel's writeback alone (`posix_fadvise`) is not enough: the
//! disk's cache flush still waits for the end, and on a virtual disk that flush is most of
//! the cost (bench/README, "Background sync").

use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// Bytes between two background syncs: large enough that a slow disk is not asked to flush
/// its cache many times a second, small enough that the end finds little left.
pub const STEP: u64 = 8 << 20;

/// A file being written whose data is synced in the background every [`STEP`] bytes.
#[derive(Debug)]
pub struct SyncedFile {
    file: File,
    written: u64,
    /// `written` when the last sync was asked for.
    requested_at: u64,
    background: Background,
}

#[derive(Debug)]
enum Background {
    /// Started with the first sync asked for.
    NotYet,
    Running(Syncer),
    /// No thread could be started, or it has been closed: the final sync does the work.
    Off,
}

#[derive(Debug)]
struct Syncer {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    requested: bool,
    closed: bool,
    /// Syncs completed, for the tests to see the thread at work.
    completed: u64,
    /// Kept, not retried: the kernel reports a failed writeback to one `fsync` only, so this
    /// may be the only report of it the archive gets.
    failed: Option<io::Error>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics with the lock held; if it did, the state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SyncedFile {
    pub fn new(file: File) -> Self {
        SyncedFile {
            file,
            written: 0,
            requested_at: 0,
            background: Background::NotYet,
        }
    }

    pub fn get_ref(&self) -> &File {
        &self.file
    }

    /// Syncs the file and its metadata, and waits for the background syncs to end: `Ok`
    /// means every byte written is on stable storage.
    pub fn sync_all(&mut self) -> io::Result<()> {
        let syncer = match std::mem::replace(&mut self.background, Background::Off) {
            Background::Running(syncer) => Some(syncer),
            Background::NotYet | Background::Off => None,
        };
        if let Some(syncer) = &syncer {
            syncer.close();
        }
        // Beside the background sync still running, not after it: the last bytes go to the
        // disk while it waits for the disk's cache flush.
        let synced = self.file.sync_all();
        if let Some(syncer) = syncer {
            syncer.join()?;
        }
        synced
    }

    /// Fails once a background sync has failed; asks for the next one every [`STEP`] bytes.
    fn check_and_request(&mut self) -> io::Result<()> {
        let due = self.written - self.requested_at >= STEP;
        if due && matches!(self.background, Background::NotYet) {
            self.background = match self.file.try_clone().ok().and_then(Syncer::start) {
                Some(syncer) => Background::Running(syncer),
                None => Background::Off,
            };
        }
        let Background::Running(syncer) = &self.background else {
            return Ok(());
        };
        let mut state = syncer.shared.lock();
        if let Some(e) = &state.failed {
            return Err(reported(e));
        }
        if due {
            self.requested_at = self.written;
            state.requested = true;
            syncer.shared.wake.notify_one();
        }
        Ok(())
    }
}

impl Write for SyncedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Before writing, so that a failed sync stops the archive before more of it.
        self.check_and_request()?;
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for SyncedFile {
    fn drop(&mut self) {
        // Not joined: an abandoned archive need not wait for its last sync.
        if let Background::Running(syncer) = &self.background {
            syncer.close();
        }
    }
}

impl Syncer {
    fn start(file: File) -> Option<Syncer> {
        let shared = Arc::new(Shared::default());
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("archive-sync".to_owned())
            .spawn(move || sync_when_asked(&file, &for_thread))
            .ok()?;
        Some(Syncer { shared, thread })
    }

    /// Ends the thread once the sync it is running, if any, has ended.
    fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }

    /// Waits for the thread to end, and returns its failure if a sync failed.
    fn join(self) -> io::Result<()> {
        if self.thread.join().is_err() {
            return Err(io::Error::other("the archive's sync thread panicked"));
        }
        match &self.shared.lock().failed {
            Some(e) => Err(reported(e)),
            None => Ok(()),
        }
    }
}

fn sync_when_asked(file: &File, shared: &Shared) {
    let mut state = shared.lock();
    loop {
        while !state.requested && !state.closed {
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            return;
        }
        state.requested = false;
        drop(state);
        let synced = file.sync_data();
        state = shared.lock();
        match synced {
            Ok(()) => state.completed += 1,
            Err(e) => {
                state.failed = Some(e);
                return;
            }
        }
    }
}

/// The kept failure, for one more caller (`io::Error` is not `Clone`).
fn reported(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("syncing to disk: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::{Duration, Instant};

    /// Generous: a sync of a few MiB on a loaded CI machine.
    const PATIENCE: Duration = Duration::from_secs(30);

    fn shared_of(file: &SyncedFile) -> Arc<Shared> {
        match &file.background {
            Background::Running(syncer) => Arc::clone(&syncer.shared),
            other => panic!("no sync thread running: {other:?}"),
        }
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_file_smaller_than_a_step_starts_no_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut out = SyncedFile::new(File::create(&path).unwrap());
        out.write_all(&vec![3; STEP as usize]).unwrap();
        out.flush().unwrap();
        assert!(matches!(out.background, Background::NotYet), "{out:?}");
        out.sync_all().unwrap();
        drop(out);
        assert_eq!(std::fs::read(&path).unwrap(), vec![3; STEP as usize]);
    }

    #[test]
    fn every_byte_arrives_in_order_and_is_synced_on_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut out = SyncedFile::new(File::create(&path).unwrap());
        let chunk: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let mut expected = Vec::new();
        while expected.len() < 3 * STEP as usize {
            out.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        let shared = shared_of(&out);
        wait_until("a background sync completed", || {
            shared.lock().completed > 0
        });
        out.sync_all().unwrap();
        assert_eq!(Arc::strong_count(&shared), 1, "sync_all joins the thread");
        drop(out);
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert!(back == expected);
    }

    /// A file whose background sync has failed, and the thread draining it: a pipe, which
    /// cannot be synced (`EINVAL`), a real failure of `fdatasync`.
    fn a_pipe_whose_sync_failed() -> (SyncedFile, std::thread::JoinHandle<u64>) {
        let (mut reader, writer) = io::pipe().unwrap();
        let drain = std::thread::spawn(move || io::copy(&mut reader, &mut io::sink()).unwrap());
        let mut out = SyncedFile::new(File::from(std::os::fd::OwnedFd::from(writer)));
        out.write_all(&vec![7; STEP as usize]).unwrap();
        out.write_all(&[7]).unwrap();
        let shared = shared_of(&out);
        wait_until("the background sync failed", || {
            shared.lock().failed.is_some()
        });
        (out, drain)
    }

    #[test]
    fn a_failed_background_sync_fails_the_final_sync() {
        let (mut out, drain) = a_pipe_whose_sync_failed();
        // The kernel would report a failed writeback to one fsync only: the background one.
        // The final sync must not pass for a success.
        let err = out.sync_all().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("syncing to disk"), "{err}");
        drop(out);
        drain.join().unwrap();
    }

    #[test]
    fn a_failed_background_sync_stops_the_writing() {
        let (mut out, drain) = a_pipe_whose_sync_failed();
        let err = out.write_all(&[7]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        drop(out);
        drain.join().unwrap();
    }

    #[test]
    fn dropped_unsynced_its_thread_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = SyncedFile::new(File::create(dir.path().join("out")).unwrap());
        out.write_all(&vec![1; STEP as usize]).unwrap();
        out.write_all(&[1]).unwrap();
        let shared = shared_of(&out);
        drop(out);
        wait_until("the thread let go of its state", || {
            Arc::strong_count(&shared) == 1
        });
        assert!(shared.lock().failed.is_none());
    }
}
