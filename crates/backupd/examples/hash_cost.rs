//! What the archive's SHA-256 costs a `--compression none` backup, for `bench/run.sh`: writes
//! a tar of DIR into a file as the daemon writes an uncompressed archive — one thread walks,
//! reads and writes through the `tar` crate — either through the daemon's `HashingWriter`
//! (1 MiB writes to the file, SHA-256 on its own thread) or through a plain buffer of the same
//! size, and prints the seconds it took. No fsync: what is measured is the hashing, not the
//! disk.
//!
//! Usage: `hash_cost hashed|plain DIR OUT`

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use backupd::engine::HashingWriter;

/// What `HashingWriter` gathers before each write to the file.
const GATHERED: usize = 1 << 20;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, dir, out] = args.as_slice() else {
        bail!("usage: hash_cost hashed|plain DIR OUT");
    };
    let file = File::create(out).with_context(|| format!("can't create {out}"))?;
    let started = Instant::now();
    match mode.as_str() {
        "hashed" => {
            let writer = tar_of(Path::new(dir), HashingWriter::new(file))?;
            let (_, sha256, bytes) = writer.finish()?;
            eprintln!("{bytes} bytes, sha256 {sha256}");
        }
        "plain" => {
            let mut writer = tar_of(Path::new(dir), BufWriter::with_capacity(GATHERED, file))?;
            writer.flush()?;
        }
        other => bail!("unknown mode {other:?}: hashed or plain"),
    }
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
