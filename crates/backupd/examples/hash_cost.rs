//! What the archive's SHA-256 costs a `--compression none` backup, for `bench/run.sh`. Writes a
//! tar of DIR into OUT_DIR through the daemon's own write path for an uncompressed archive —
//! one thread walks, reads and writes through the `tar` crate into a `LocalFolder`'s partial
//! file (synced in the background as it grows), which is then published (fsync, rename, folder fsync) — either
//! through the daemon's `HashingWriter` (1 MiB writes, SHA-256 on its own thread) or through a
//! plain buffer of the same size. Prints the seconds it took.
//!
//! Usage: `hash_cost hashed|plain DIR OUT_DIR`

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use backupd::destination::{Destination, LocalFolder};
use backupd::engine::HashingWriter;

/// What `HashingWriter` gathers before each write to the file.
const GATHERED: usize = 1 << 20;
const ARCHIVE: &str = "hash-cost_20260101_000000.tar";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, dir, out] = args.as_slice() else {
        bail!("usage: hash_cost hashed|plain DIR OUT_DIR");
    };
    let dir = Path::new(dir);
    let started = Instant::now();
    let pending = LocalFolder::new(out)
        .begin(ARCHIVE)
        .with_context(|| format!("can't create {ARCHIVE} in {out}"))?;
    let (pending, written) = match mode.as_str() {
        "hashed" => {
            let (pending, sha256, written) = tar_of(dir, HashingWriter::new(pending))?.finish()?;
            eprintln!("sha256 {sha256}");
            (pending, written)
        }
        "plain" => {
            let mut writer = tar_of(
                dir,
                Counted::new(BufWriter::with_capacity(GATHERED, pending)),
            )?;
            writer.flush()?;
            let written = writer.written;
            (
                writer.inner.into_inner().map_err(|e| e.into_error())?,
                written,
            )
        }
        other => bail!("unknown mode {other:?}: hashed or plain"),
    };
    let archive = pending.publish(written)?;
    eprintln!("{written} bytes in {}", archive.display());
    println!("{:.3}", started.elapsed().as_secs_f64());
    Ok(())
}

fn tar_of<W: Write>(dir: &Path, writer: W) -> anyhow::Result<W> {
    let mut builder = tar::Builder::new(writer);
    builder
        .append_dir_all("corpus", dir)
        .with_context(|| format!("can't archive {}", dir.display()))?;
    Ok(builder.into_inner()?)
}

/// Counts what passes, as `HashingWriter` does, for `publish` to check.
struct Counted<W> {
    inner: W,
    written: u64,
}

impl<W> Counted<W> {
    fn new(inner: W) -> Self {
        Self { inner, written: 0 }
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
