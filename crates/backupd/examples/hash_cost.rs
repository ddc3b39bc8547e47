//! What the archive's SHA-256 costs a `--compression none` backup, for `bench/run.sh`. Writes a
//! tar of DIR into OUT_DIR through the daemon's own write path for an uncompressed archive —
//! one thread walks, reads each file straight into the `HashingWriter`'s buffer as the daemon
//! does (`append_body`) and writes through the `tar` crate into a `LocalFolder`'s partial
//! file (synced in the background as it grows), which is then published (fsync, rename, folder
//! fsync) — through the daemon's `HashingWriter` (1 MiB writes), with SHA-256 on its own thread
//! or counting only (as for an archive hashed from its file). Prints the seconds it took.
//!
//! Usage: `hash_cost hashed|plain DIR OUT_DIR`

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use backupd::destination::{Destination, LocalFolder};
use backupd::engine::{HashingWriter, append_body};
use backupd::format::WriteFrom;

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
    let mut writer = HashingWriter::new(pending);
    match mode.as_str() {
        "hashed" => {}
        "plain" => writer.count_only(),
        other => bail!("unknown mode {other:?}: hashed or plain"),
    }
    let (pending, sha256, written) = tar_of(dir, writer)?.finish()?;
    if let Some(sha256) = sha256 {
        eprintln!("sha256 {sha256}");
    }
    let archive = pending.publish(written)?;
    eprintln!("{written} bytes in {}", archive.display());
    println!("{:.3}", started.elapsed().as_secs_f64());
    Ok(())
}

fn tar_of<W: WriteFrom>(dir: &Path, writer: W) -> anyhow::Result<W> {
    let mut builder = tar::Builder::new(writer);
    append_tree(&mut builder, dir, Path::new("corpus"))
        .with_context(|| format!("can't archive {}", dir.display()))?;
    Ok(builder.into_inner()?)
}

/// Folders and regular files below `dir` in sorted order, each file's bytes read the way the
/// daemon reads them ([`append_body`]).
fn append_tree<W: WriteFrom>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_metadata(&std::fs::metadata(dir)?);
    builder.append_data(&mut header, name, std::io::empty())?;
    let mut children: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    children.sort_by_key(|child| child.file_name());
    for child in children {
        let (path, entry) = (child.path(), name.join(child.file_name()));
        let meta = child.metadata()?;
        if meta.is_dir() {
            append_tree(builder, &path, &entry)?;
        } else if meta.is_file() {
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&meta);
            let mut file = File::open(&path)?;
            append_body(builder, &mut header, &entry, &mut file, meta.len())?;
        }
    }
    Ok(())
}
