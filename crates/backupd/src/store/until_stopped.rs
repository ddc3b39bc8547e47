//! Reads that end once the daemon stops: a restore or verify of many GiB (or of the hole of
//! a sparse file, which the stream does not even hold) would otherwise outlast the stop's
//! grace and be cut off with no answer.

use std::io::{self, Read};

/// Whether the daemon is stopping. Never for a caller that cannot be stopped.
pub type Stopping<'s> = &'s (dyn Fn() -> bool + Sync);

/// Whether the daemon is stopping, for a caller that cannot be stopped.
pub const NEVER: Stopping<'static> = &|| false;

/// A reader that fails once `stopping` says so.
pub struct UntilStopped<'s, R> {
    inner: R,
    stopping: Stopping<'s>,
}

impl<'s, R> UntilStopped<'s, R> {
    pub fn new(inner: R, stopping: Stopping<'s>) -> Self {
        UntilStopped { inner, stopping }
    }
}

/// Fails once `stopping` says so, as an [`UntilStopped`] read then does.
pub fn check(stopping: Stopping<'_>) -> io::Result<()> {
    if stopping() {
        return Err(io::Error::other("backupd is stopping"));
    }
    Ok(())
}

impl<R: Read> Read for UntilStopped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        check(self.stopping)?;
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn reads_fail_once_stopping() {
        let stop = AtomicBool::new(false);
        let stopping = || stop.load(Ordering::Relaxed);
        let mut reader = UntilStopped::new(&b"abcdef"[..], &stopping);
        let mut buf = [0; 3];
        assert_eq!(reader.read(&mut buf).unwrap(), 3);
        stop.store(true, Ordering::Relaxed);
        let err = reader.read(&mut buf).unwrap_err();
        assert_eq!(err.to_string(), "backupd is stopping");
    }
}
