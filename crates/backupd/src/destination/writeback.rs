//! Early writeback: the kernel starts writing an archive to disk while it is still being
//! compressed, instead of all at once in the `fsync` before it is published.
//!
//! Every [`STEP`] bytes, the range just written is handed to `posix_fadvise(DONTNEED)`, which
//! on Linux starts asynchronous writeback of its dirty pages (and drops none of them: they are
//! still dirty). The disk then works beside the compressor, and the final `fsync` finds little
//! left: durability costs the time the disk needs, not that time added to the compression.

use std::fs::File;
use std::io::{self, Write};
use std::num::NonZeroU64;

use rustix::fs::{Advice, fadvise};

/// Bytes between two writeback kicks: large enough that the calls cost nothing, small enough
/// that the disk starts early.
pub const STEP: u64 = 8 << 20;

/// A file whose written bytes are sent on to the disk every [`STEP`] bytes.
#[derive(Debug)]
pub struct EarlyWriteback {
    file: File,
    written: u64,
    kicked: u64,
}

impl EarlyWriteback {
    pub fn new(file: File) -> Self {
        EarlyWriteback {
            file,
            written: 0,
            kicked: 0,
        }
    }

    pub fn get_ref(&self) -> &File {
        &self.file
    }

    fn kick(&mut self) {
        if let Some(len) = NonZeroU64::new(self.written - self.kicked) {
            // Advice only: a kernel that ignores it leaves the work to the final fsync.
            let _ = fadvise(&self.file, self.kicked, Some(len), Advice::DontNeed);
            self.kicked = self.written;
        }
    }
}

impl Write for EarlyWriteback {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.kicked >= STEP {
            self.kick();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_byte_arrives_in_order_across_kicks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut out = EarlyWriteback::new(File::create(&path).unwrap());
        let chunk: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let mut expected = Vec::new();
        while expected.len() < 3 * STEP as usize {
            out.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        assert!(out.kicked >= 2 * STEP, "kicked only {} bytes", out.kicked);
        drop(out);
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert!(back == expected);
    }
}
