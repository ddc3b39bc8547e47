//! A writer that hashes and counts the archive bytes on their way to the file.
//!
//! Sitting between the compressor and the file, it yields the SHA-256 and size of exactly
//! the bytes stored, in the same pass, so the archive is never read back to be hashed.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    // Shared so progress reports can read it while the tar builder owns this writer.
    written: Arc<AtomicU64>,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A live view of the number of bytes written so far.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.written)
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Returns the inner writer, the lower-case hex SHA-256 and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        let hex = crate::format::hex(&self.hasher.finalize());
        (self.inner, hex, self.written.load(Ordering::Relaxed))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Only what the inner writer accepted: a short write is retried by the caller.
        self.hasher.update(&buf[..n]);
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts at most 3 bytes per call, to exercise short writes.
    struct Trickle(Vec<u8>);
    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hashes_and_counts_exactly_what_was_written() {
        let mut w = HashingWriter::new(Trickle(Vec::new()));
        let counter = w.counter();
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 11);
        let (inner, hex, n) = w.finish();
        assert_eq!(inner.0, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(
            hex,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    #[test]
    fn empty_input_has_the_empty_digest() {
        let (_, hex, n) = HashingWriter::new(Vec::new()).finish();
        assert_eq!(n, 0);
        assert_eq!(
            hex,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
