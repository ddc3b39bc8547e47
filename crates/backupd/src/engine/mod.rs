//! The archive engine: one synchronous backup of one source folder.
//!
//! walk ([`archive`]) → tar → compress ([`compress`]) → hash and count
//! ([`hashing_writer`]) → 1 MiB buffer → `<archive>.partial`, then sync, publish under the
//! final name without clobbering ([`atomic`]) and write the JSON [`manifest`] beside it.
//! Memory stays bounded whatever the source size. It knows nothing of tokio, sockets or
//! the protocol: the daemon runs [`run_backup`] on a blocking thread.

mod archive;
mod atomic;
mod compress;
mod error;
mod exclude;
mod hashing_writer;
mod manifest;
pub mod naming;
mod progress;
mod sized_reader;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod validation_tests {
    use super::*;

    #[test]
    fn an_empty_or_short_archive_fails_validation() {
        let path = Path::new("/b/x.tar.gz.partial");
        assert!(validate_size(path, 10, 10).is_ok());
        let empty = validate_size(path, 0, 0).unwrap_err();
        assert!(empty.to_string().contains("Archive size is 0"), "{empty}");
        let short = validate_size(path, 9, 10).unwrap_err();
        assert!(
            short.to_string().contains("9 bytes on disk, 10 written"),
            "{short}"
        );
    }
}

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufWriter};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use chrono::NaiveDateTime;

pub use atomic::{remove_stale_partials, sync_dir, write_atomically};
pub use compress::{Compression, Encoder};
pub use error::EngineError;
pub use exclude::ExcludeSet;
pub use hashing_writer::HashingWriter;
pub use manifest::{FORMAT_VERSION, Manifest, human_size};
pub use progress::Progress;

use archive::TreeWriter;
use atomic::PartialFile;
use progress::Meter;

/// Size of the buffer in front of the archive file: few, large writes.
const FILE_BUFFER: usize = 1 << 20;

/// The format of the timestamp in archive and manifest names.
pub const TIMESTAMP_FORMAT: &str = "%Y%m%d_%H%M%S";

/// Everything one backup needs to know.
#[derive(Debug, Clone)]
pub struct BackupJob {
    pub source: PathBuf,
    /// Prefix of the file names; must be a plain file name.
    pub name: String,
    pub destination: PathBuf,
    pub compression: Compression,
    pub excludes: ExcludeSet,
    /// Local time of the run; it names the files.
    pub timestamp: NaiveDateTime,
}

impl BackupJob {
    /// The files this job would create (a dry run): nothing is touched on disk.
    pub fn planned_names(&self) -> Result<ArchiveNames, EngineError> {
        validate_name(&self.name)?;
        Ok(archive_names(
            &self.destination,
            &self.name,
            self.compression,
            self.timestamp,
        ))
    }
}

/// Where a backup's files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveNames {
    /// `<destination>/<name>_<YYYYMMDD_HHMMSS>.tar.gz` (or `.tar.zst`, `.tar`)
    pub archive: PathBuf,
    /// `<destination>/<name>_<YYYYMMDD_HHMMSS>.json`
    pub manifest: PathBuf,
    /// `YYYYMMDD_HHMMSS`
    pub created: String,
}

impl ArchiveNames {
    /// Whether any backup of this name and second exists or is being written, whatever its
    /// compression: they would share the manifest name.
    pub fn is_taken(&self) -> bool {
        let stem = self.manifest.with_extension("");
        let mut candidates = vec![self.manifest.clone()];
        for compression in [
            Compression::None,
            Compression::Gzip {
                level: Compression::GZIP_DEFAULT,
            },
            Compression::Zstd {
                level: Compression::ZSTD_DEFAULT,
            },
        ] {
            let archive = PathBuf::from(format!("{}{}", stem.display(), compression.extension()));
            candidates.push(atomic::partial_path(&archive));
            candidates.push(archive);
        }
        candidates
            .iter()
            .any(|path| fs::symlink_metadata(path).is_ok())
    }
}

/// The first timestamp from `timestamp` on (stepping by a second) whose file names are all
/// free, so that two runs within one second never collide.
pub fn free_timestamp(
    destination: &Path,
    name: &str,
    compression: Compression,
    timestamp: NaiveDateTime,
) -> NaiveDateTime {
    let mut candidate = timestamp;
    // Bounded: a destination cannot hold a backup for every second of an hour.
    for _ in 0..3600 {
        if !archive_names(destination, name, compression, candidate).is_taken() {
            break;
        }
        candidate += chrono::TimeDelta::seconds(1);
    }
    candidate
}

/// Computes the archive and manifest paths without touching the disk.
pub fn archive_names(
    destination: &Path,
    name: &str,
    compression: Compression,
    timestamp: NaiveDateTime,
) -> ArchiveNames {
    let created = timestamp.format(TIMESTAMP_FORMAT).to_string();
    let stem = format!("{name}_{created}");
    ArchiveNames {
        archive: destination.join(format!("{stem}{}", compression.extension())),
        manifest: destination.join(format!("{stem}.json")),
        created,
    }
}

/// The result of a successful backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub archive: PathBuf,
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
}

/// Runs one backup.
///
/// `progress` is called at most every 100 ms and once at the end; `cancel` is checked
/// between entries and between chunks of large files. On any error nothing is left under
/// the final names and the `.partial` file is removed. If the archive name already exists
/// (two runs in the same second) the run fails with [`EngineError::ArchiveExists`] rather
/// than overwrite or invent a new name the manifest reader would not expect.
pub fn run_backup(
    job: &BackupJob,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<BackupOutcome, EngineError> {
    let started = Instant::now();
    let compression = job.compression.validate()?;
    validate_name(&job.name)?;
    let source = check_source(&job.source)?;
    let top = top_level_name(&source, &job.name);
    let destination =
        std::path::absolute(&job.destination).map_err(|source| EngineError::Destination {
            path: job.destination.clone(),
            source,
        })?;
    let names = archive_names(&destination, &job.name, compression, job.timestamp);
    if names.is_taken() {
        return Err(EngineError::ArchiveExists {
            path: names.archive,
        });
    }

    let (partial, file) =
        PartialFile::create(&names.archive).map_err(|source| EngineError::Destination {
            path: destination.clone(),
            source,
        })?;
    let write_error = |source| EngineError::Write {
        path: partial.path().to_owned(),
        source,
    };
    let archive_id = file.metadata().ok().map(|m| (m.dev(), m.ino()));
    let hashing = HashingWriter::new(BufWriter::with_capacity(FILE_BUFFER, file));
    let mut meter = Meter::new(progress, cancel, hashing.counter());
    let mut builder = tar::Builder::new(compression.encoder(hashing).map_err(write_error)?);
    let stats = TreeWriter::new(
        &mut builder,
        &job.excludes,
        &mut meter,
        partial.path(),
        archive_id,
    )
    .write_tree(&source, &top)?;
    meter.check_cancel()?;

    let encoder = builder.into_inner().map_err(write_error)?;
    let (buffered, checksum, size_bytes) = encoder.finish().map_err(write_error)?.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| write_error(e.into_error()))?;
    file.sync_all().map_err(write_error)?;
    // The seed's validation, on what reached the disk: the archive is there, not empty, and
    // as long as what was hashed. The checksum itself was taken from the bytes written.
    let on_disk = file.metadata().map_err(write_error)?.len();
    drop(file);
    validate_size(partial.path(), on_disk, size_bytes)?;
    let archive = partial.publish().map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            EngineError::ArchiveExists {
                path: names.archive.clone(),
            }
        } else {
            EngineError::Write {
                path: names.archive.clone(),
                source,
            }
        }
    })?;

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        backupd_version: env!("CARGO_PKG_VERSION").to_owned(),
        name: job.name.clone(),
        backup_file: archive.clone(),
        source,
        created: names.created,
        compression: compression.name().to_owned(),
        level: compression.level(),
        size_bytes,
        size_human: human_size(size_bytes),
        checksum_sha256: checksum,
        files: stats.files,
        dirs: stats.dirs,
        symlinks: stats.symlinks,
        hardlinks: stats.hardlinks,
        bytes_in: stats.bytes_in,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        warnings: stats.warnings,
    };
    let written = manifest
        .to_json()
        .map_err(io::Error::from)
        .and_then(|json| atomic::write_new_atomically(&names.manifest, &json));
    if let Err(source) = written {
        // An archive without its manifest cannot be verified: take it back.
        let _ = fs::remove_file(&archive);
        if source.kind() == io::ErrorKind::AlreadyExists {
            // A run of another compression, in the same second, got there first.
            return Err(EngineError::ArchiveExists {
                path: names.manifest,
            });
        }
        return Err(EngineError::Manifest {
            path: names.manifest,
            source,
        });
    }
    meter.report();
    Ok(BackupOutcome {
        archive,
        manifest_path: names.manifest,
        manifest,
    })
}

fn validate_size(path: &Path, on_disk: u64, streamed: u64) -> Result<(), EngineError> {
    let reason = if on_disk == 0 {
        "Archive size is 0".to_owned()
    } else if on_disk != streamed {
        format!("{on_disk} bytes on disk, {streamed} written")
    } else {
        return Ok(());
    };
    Err(EngineError::Invalid {
        path: path.to_owned(),
        reason,
    })
}

fn validate_name(name: &str) -> Result<(), EngineError> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name.contains('/') || name.contains('\0') {
        "contains '/' or NUL"
    } else if name == "." || name == ".." {
        "is '.' or '..'"
    } else {
        return Ok(());
    };
    Err(EngineError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Returns the source as an absolute path once it is known to be a readable folder.
/// Checks that a source is a readable directory and returns its absolute path; a dry run
/// uses it to report what a real run would refuse.
pub fn check_source(source: &Path) -> Result<PathBuf, EngineError> {
    let unreadable = |e| EngineError::SourceUnreadable {
        path: source.to_owned(),
        source: e,
    };
    let absolute = std::path::absolute(source).map_err(unreadable)?;
    match fs::metadata(&absolute) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(EngineError::SourceNotFound { path: absolute })
        }
        Err(e) => Err(unreadable(e)),
        Ok(m) if !m.is_dir() => Err(EngineError::SourceNotDirectory { path: absolute }),
        Ok(_) => {
            fs::read_dir(&absolute).map_err(unreadable)?;
            Ok(absolute)
        }
    }
}

/// The folder name entries sit under, as `tar -C <parent> <name>` would store them;
/// `..`-ended paths are resolved, and `/` falls back to the job name.
fn top_level_name(source: &Path, job_name: &str) -> OsString {
    source
        .file_name()
        .map(OsString::from)
        .or_else(|| {
            fs::canonicalize(source)
                .ok()
                .and_then(|p| p.file_name().map(OsString::from))
        })
        .unwrap_or_else(|| OsString::from(job_name))
}
