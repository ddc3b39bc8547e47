//! Progress reports and cancellation, checked between files and between chunks.
//!
//! [`Meter`] throttles the caller's callback to one call per [`Meter::INTERVAL`] so a tree
//! of tiny files costs one clock read per file, and [`MeteredReader`] lets a huge file be
//! reported on and cancelled part-way.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::EngineError;

/// A snapshot of a running backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Entries stored that are not directories (files, symlinks, hard links).
    pub files: u64,
    pub dirs: u64,
    /// File content bytes archived so far.
    pub bytes_in: u64,
    /// Compressed bytes written to the archive so far.
    pub bytes_out: u64,
}

pub(crate) struct Meter<'a> {
    callback: &'a mut dyn FnMut(&Progress),
    cancel: &'a AtomicBool,
    bytes_out: Arc<AtomicU64>,
    last: Instant,
    pub(crate) progress: Progress,
}

impl std::fmt::Debug for Meter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("progress", &self.progress)
            .finish()
    }
}

impl<'a> Meter<'a> {
    pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

    pub(crate) fn new(
        callback: &'a mut dyn FnMut(&Progress),
        cancel: &'a AtomicBool,
        bytes_out: Arc<AtomicU64>,
    ) -> Self {
        Meter {
            callback,
            cancel,
            bytes_out,
            last: Instant::now(),
            progress: Progress::default(),
        }
    }

    /// Bytes stored so far: where the next byte of the archive goes.
    pub(crate) fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    pub(crate) fn check_cancel(&self) -> Result<(), EngineError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(EngineError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Reports if the interval has passed since the last report.
    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last) >= Self::INTERVAL {
            self.last = now;
            self.report();
        }
    }

    /// Reports unconditionally (used once at the end).
    pub(crate) fn report(&mut self) {
        self.progress.bytes_out = self.bytes_out.load(Ordering::Relaxed);
        (self.callback)(&self.progress);
    }
}

/// The error payload a [`MeteredReader`] returns when the backup is cancelled mid-file;
/// recognised by [`is_cancellation`] on the way out of the tar builder.
#[derive(Debug, thiserror::Error)]
#[error("backup cancelled")]
struct CancelledRead;

/// The error a reader returns when the backup is cancelled mid-file.
pub(crate) fn cancelled_read() -> io::Error {
    io::Error::other(CancelledRead)
}

pub(crate) fn is_cancellation(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<CancelledRead>())
}

pub(crate) struct MeteredReader<'m, 'a, R> {
    pub(crate) inner: R,
    meter: &'m mut Meter<'a>,
}

impl<'m, 'a, R> MeteredReader<'m, 'a, R> {
    pub(crate) fn new(inner: R, meter: &'m mut Meter<'a>) -> Self {
        MeteredReader { inner, meter }
    }
}

impl<R: Read> Read for MeteredReader<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.meter.check_cancel().is_err() {
            return Err(cancelled_read());
        }
        let n = self.inner.read(buf)?;
        self.meter.progress.bytes_in += n as u64;
        self.meter.tick();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_counts_bytes_and_stops_when_cancelled() {
        let cancel = AtomicBool::new(false);
        let mut calls = 0;
        let mut cb = |_: &Progress| calls += 1;
        let mut meter = Meter::new(&mut cb, &cancel, Arc::new(AtomicU64::new(7)));
        let mut r = MeteredReader::new(&b"0123456789"[..], &mut meter);
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf).unwrap(), 4);
        cancel.store(true, Ordering::Relaxed);
        let err = r.read(&mut buf).unwrap_err();
        assert!(is_cancellation(&err));
        assert!(!is_cancellation(&io::Error::other("other")));
        assert_eq!(meter.progress.bytes_in, 4);
        meter.report();
        assert_eq!(meter.progress.bytes_out, 7);
        drop(meter);
        assert_eq!(calls, 1);
    }
}
