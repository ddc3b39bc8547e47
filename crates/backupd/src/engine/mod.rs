//! The archive engine: one synchronous backup of one source folder.
//!
//! walk ([`archive`]) → tar → compress ([`crate::format::codec`]) → encrypt when the job has
//! recipients ([`crate::format::encryption`]) → hash and count
//! ([`hashing_writer`]) → a [`PendingArchive`] of the job's destination, then publish it under
//! its final name without clobbering and write the JSON manifest beside it. Memory stays
//! bounded whatever the source size. It knows nothing of tokio, sockets or the protocol: the
//! daemon runs [`run_backup`] on a blocking thread.

mod archive;
mod command_source;
mod error;
mod exclude;
mod hashing_writer;
mod progress;
mod sized_reader;
mod sparse;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use chrono::{FixedOffset, NaiveDateTime};
use proto::Compression;
use proto::schedule_spec::validate_name;
use proto::size::human_size;

pub use error::EngineError;
pub use exclude::ExcludeSet;
pub use progress::Progress;
pub use sparse::Holes;

use crate::destination::{Destination, Holder, PendingArchive, PublishError};
use crate::format::{
    ArchiveNames, Encoder, Encryption, FORMAT_VERSION, Manifest, Recipients, Sealer,
};
pub use archive::append_body;
use archive::{Protected, TreeWriter};
use command_source::Route;
pub use hashing_writer::HashingWriter;
use progress::Meter;

/// Everything one backup needs to know.
#[derive(Debug, Clone)]
pub struct BackupJob {
    pub source: PathBuf,
    /// Prefix of the file names; a valid backup name.
    pub name: String,
    pub destination: Arc<dyn Destination>,
    pub compression: Compression,
    pub excludes: ExcludeSet,
    /// Local time of the run; it names the files.
    pub timestamp: NaiveDateTime,
    /// The UTC offset of that local time, which the manifest records.
    pub utc_offset: FixedOffset,
    /// Folders never archived when they lie inside the source (the daemon's `backups/`);
    /// the job's destination is always one of them.
    pub never_archive: Vec<PathBuf>,
    /// Encrypt to these age public keys (`None`: not encrypted).
    pub recipients: Option<Recipients>,
    /// Commands whose output is archived as files beside the folder.
    pub commands: Vec<proto::job::CommandSource>,
    /// Whether files with holes are stored as GNU sparse entries.
    pub holes: Holes,
    /// Its name was taken from its folder's (a one-off run given no name): it may write only
    /// where the name's archives are that folder's (see [`crate::name_owner`]).
    pub name_from_folder: bool,
}

impl BackupJob {
    /// The files this job writes.
    pub fn names(&self) -> ArchiveNames {
        ArchiveNames::new(&self.name, self.compression.codec(), self.timestamp)
            .encrypted(self.recipients.is_some())
    }

    /// Who holds a name of this backup and second: one of ours exists or is being written, or
    /// another user's file is in the way.
    fn holder(&self) -> io::Result<Option<Holder>> {
        self.destination.holder(&self.names().claimed())
    }

    /// Moves the timestamp past the newest backup of this name in the destination, then to
    /// the first second from it on whose file names are all free, so that two runs within one
    /// second never collide and the newest backup always has the latest name: retention
    /// orders backups by the time in their names, and a run that took a second its rotation
    /// had just freed would have been the first to go.
    pub fn claim_free_names(&mut self) -> ArchiveNames {
        // By file name alone: reading every manifest would cost a read per archive.
        let newest = self.destination.files().ok().and_then(|files| {
            (files.iter())
                .filter_map(|(file, _)| crate::format::naming::parse_archive_name(file))
                .filter(|parsed| parsed.name == self.name)
                .filter_map(|parsed| {
                    NaiveDateTime::parse_from_str(&parsed.stamp, crate::format::TIMESTAMP_FORMAT)
                        .ok()
                })
                .max()
        });
        if let Some(newest) = newest.filter(|newest| *newest >= self.timestamp) {
            let after = newest + chrono::TimeDelta::seconds(1);
            if after - self.timestamp > NAMED_AHEAD_AT_MOST {
                tracing::warn!(
                    "Naming the backup of {} {}: a backup of it in {} is dated {} (was the \
                     clock set back?)",
                    self.name,
                    after.format(crate::format::TIMESTAMP_FORMAT),
                    self.destination.location().display(),
                    newest.format(crate::format::TIMESTAMP_FORMAT)
                );
            }
            self.timestamp = after;
        }
        // Bounded: a destination cannot hold a backup for every second of an hour.
        let mut stranger_seconds = 0;
        let mut first_stranger = None;
        for _ in 0..3600 {
            match self.holder().unwrap_or(None) {
                None => break,
                Some(Holder::Ours) => {}
                // Past a minute of them the name is left held: `run_backup` refuses it, naming
                // the file, rather than date the backup further from its run.
                Some(Holder::Stranger { .. }) if stranger_seconds == STRANGER_SECONDS => break,
                Some(Holder::Stranger { file, uid }) => {
                    stranger_seconds += 1;
                    first_stranger.get_or_insert((file, uid));
                }
            }
            self.timestamp += chrono::TimeDelta::seconds(1);
        }
        if let Some((file, uid)) = first_stranger {
            tracing::warn!(
                "Naming the backup of {} {}: {} and other files of another user (uid {uid}) \
                 held {stranger_seconds} s of its names",
                self.name,
                self.timestamp.format(crate::format::TIMESTAMP_FORMAT),
                self.destination.path_of(&file).display()
            );
        }
        self.names()
    }
}

/// How far ahead of the clock runs of one name faster than one a second may name their
/// archives (a second each). A new archive named further ahead follows one dated in the
/// future: the clock was set back, and its name says nothing of the time.
pub const NAMED_AHEAD_AT_MOST: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// How many seconds of names other users' files may push a backup past: a backup dated further
/// from its run would mislead retention and restores.
const STRANGER_SECONDS: usize = 60;

/// How often a finished archive moves to new names when its manifest's name was taken while it
/// was written.
const MANIFEST_NAME_ATTEMPTS: usize = 5;

/// The error for a name `holder` holds.
fn held_error(destination: &dyn Destination, file: &str, holder: Holder) -> EngineError {
    match holder {
        Holder::Ours => EngineError::ArchiveExists {
            path: destination.path_of(file),
        },
        Holder::Stranger { file, uid } => EngineError::NameHeld {
            path: destination.path_of(&file),
            uid,
        },
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
/// the final names and the partial archive is removed. If a name is taken before the archive
/// is written (two runs in the same second) the run fails with [`EngineError::ArchiveExists`],
/// or [`EngineError::NameHeld`] for another user's file, rather than overwrite anything. A
/// manifest name taken while the archive was written moves the archive to the next free names.
pub fn run_backup(
    job: &BackupJob,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<BackupOutcome, EngineError> {
    let started = Instant::now();
    validate_name(&job.name).map_err(|e| EngineError::InvalidName(e.to_string()))?;
    let (source, protected) = check_job_source(job)?;
    let top = top_level_name(&source, &job.name);
    let destination = &job.destination;
    let names = job.names();
    let destination_error = |source| EngineError::Destination {
        path: destination.location(),
        source,
    };
    if let Some(holder) = job.holder().map_err(destination_error)? {
        return Err(held_error(destination.as_ref(), &names.archive, holder));
    }

    // A partial of this name means a run started in the same second is writing it: the
    // name is taken, and the runner tries the next second.
    let pending = destination
        .begin(&names.archive)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => EngineError::ArchiveExists {
                path: destination.path_of(&names.archive),
            },
            _ => destination_error(source),
        })?;
    let location = pending.location();
    let write_error = |source| EngineError::Write {
        path: location.clone(),
        source,
    };
    let archive_id = pending.file_id();
    let hashing = HashingWriter::new(pending);
    let mut meter = Meter::new(progress, cancel, hashing.counter());
    let sealer = Sealer::new(job.recipients.as_ref(), hashing).map_err(write_error)?;
    let encoder = Encoder::new(job.compression, sealer).map_err(|e| write_error(e.into()))?;
    let mut builder = tar::Builder::new(encoder);
    // The dumps first: a failing one ends the backup before the walk.
    let mut commands = Vec::with_capacity(job.commands.len());
    let spill_dir = destination.location();
    let route = if job.commands.is_empty() {
        Route::Spill(&spill_dir)
    } else {
        command_source::route_for(builder.get_mut(), job.compression.codec(), &spill_dir)
    };
    for command in &job.commands {
        commands.push(command_source::append_command(
            &mut builder,
            command,
            &source,
            route,
            &mut meter,
            cancel,
        )?);
    }
    let mut stats = TreeWriter::new(
        &mut builder,
        &job.excludes,
        &mut meter,
        &location,
        archive_id,
    )
    .protect(protected)
    .holes(job.holes)
    .write_tree(&source, &top)?;
    meter.check_cancel()?;
    stats.files += commands.len() as u64;
    stats.bytes_in += commands.iter().map(|c| c.bytes).sum::<u64>();

    let encoder = builder.into_inner().map_err(write_error)?;
    let sealer = encoder.finish().map_err(write_error)?;
    let (mut pending, digest, size_bytes) = sealer
        .finish()
        .and_then(HashingWriter::finish)
        .map_err(write_error)?;
    let checksum = match digest {
        Some(digest) => digest,
        // A streamed dump's header was rewritten in place: the digest is the file's.
        None => rehash(pending.as_mut()).map_err(write_error)?,
    };
    let mut archive = publish(pending, size_bytes)?;

    let mut manifest = Manifest {
        format_version: FORMAT_VERSION,
        backupd_version: env!("CARGO_PKG_VERSION").to_owned(),
        name: job.name.clone(),
        backup_file: archive.clone(),
        source,
        created: names.created.clone(),
        utc_offset: Some(job.utc_offset.to_string()),
        compression: job.compression.codec(),
        level: job.compression.level(),
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
        skipped: stats.skipped,
        encryption: job.recipients.as_ref().map(|_| Encryption::Age),
        recipients: job
            .recipients
            .as_ref()
            .map(Recipients::public_keys)
            .unwrap_or_default(),
        passphrase: job
            .recipients
            .as_ref()
            .is_some_and(Recipients::is_passphrase),
        commands,
    };
    let mut names = names;
    let mut renamed = job.clone();
    let mut attempts = 1;
    let manifest_path = loop {
        let manifest_path = destination.path_of(&names.manifest);
        let Err(source) = put_manifest(destination.as_ref(), &names.manifest, &manifest) else {
            break manifest_path;
        };
        // Taken while the archive was written (another user's file, a run of another
        // compression): the archive is whole, so it moves to the next free names.
        if source.kind() == io::ErrorKind::AlreadyExists && attempts < MANIFEST_NAME_ATTEMPTS {
            attempts += 1;
            renamed.timestamp += chrono::TimeDelta::seconds(1);
            let next = renamed.claim_free_names();
            if destination
                .rename_new(&names.archive, &next.archive)
                .is_ok()
            {
                tracing::warn!(
                    "{} was taken while {} was written; the archive is now {}",
                    manifest_path.display(),
                    destination.path_of(&names.archive).display(),
                    destination.path_of(&next.archive).display()
                );
                archive = destination.path_of(&next.archive);
                manifest.backup_file = archive.clone();
                manifest.created = next.created.clone();
                names = next;
                continue;
            }
        }
        // An archive without its manifest cannot be verified: take it back.
        let _ = destination.remove(&names.archive);
        if source.kind() == io::ErrorKind::AlreadyExists {
            let holder = destination.holder(std::slice::from_ref(&names.manifest));
            return Err(held_error(
                destination.as_ref(),
                &names.manifest,
                holder.ok().flatten().unwrap_or(Holder::Ours),
            ));
        }
        return Err(EngineError::Manifest {
            path: manifest_path,
            source,
        });
    };
    meter.report();
    Ok(BackupOutcome {
        archive,
        manifest_path,
        manifest,
    })
}

/// Writes `manifest` as `file`, as the destination's readers may see it.
fn put_manifest(destination: &dyn Destination, file: &str, manifest: &Manifest) -> io::Result<()> {
    let stored = if destination.held_by_a_provider() {
        manifest.as_a_provider_reads_it().to_json()
    } else {
        manifest.to_json()
    };
    destination.put_new(file, &stored.map_err(io::Error::from)?)
}

/// The SHA-256 of the file written so far, read back from its start.
fn rehash(pending: &mut dyn PendingArchive) -> io::Result<String> {
    let file = pending
        .written_file()
        .ok_or_else(|| io::Error::other("the archive can't be read back"))??;
    let (checksum, _) = crate::store::sha256_of(PositionalReader { file, at: 0 })?;
    Ok(checksum)
}

/// Reads a file from `at` on without moving the descriptor's offset, which the writer uses.
struct PositionalReader<'f> {
    file: &'f std::fs::File,
    at: u64,
}

impl io::Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

fn publish(pending: Box<dyn PendingArchive>, written: u64) -> Result<PathBuf, EngineError> {
    pending.publish(written).map_err(|e| match e {
        PublishError::Exists(path) => EngineError::ArchiveExists { path },
        PublishError::Incomplete { path, reason } => EngineError::Invalid { path, reason },
        PublishError::Io { path, source } => EngineError::Write { path, source },
    })
}

/// The folders the walk leaves out, by identity: a destination inside the source would
/// otherwise make each archive hold all the earlier ones. One that does not exist (yet)
/// cannot be inside the source.
fn protected_dirs(job: &BackupJob) -> Vec<Protected> {
    let destination = job.destination.location();
    std::iter::once(&destination)
        .chain(&job.never_archive)
        .filter_map(|path| {
            let meta = fs::metadata(path).ok()?;
            meta.is_dir().then(|| Protected {
                id: (meta.dev(), meta.ino()),
                path: path.clone(),
            })
        })
        .collect()
}

/// Checks a job's source as [`check_source`] does, and that it is not itself a folder
/// archives are written to (the walk leaves those out only below the source); returns its
/// absolute path and the folders the walk leaves out.
pub(crate) fn check_job_source(job: &BackupJob) -> Result<(PathBuf, Vec<Protected>), EngineError> {
    let source = check_source(&job.source)?;
    let protected = protected_dirs(job);
    let meta = fs::metadata(&source).map_err(|e| EngineError::SourceUnreadable {
        path: source.clone(),
        source: e,
    })?;
    if let Some(destination) = protected.iter().find(|p| p.id == (meta.dev(), meta.ino())) {
        return Err(EngineError::SourceIsDestination {
            path: source,
            destination: destination.path.clone(),
        });
    }
    Ok((source, protected))
}

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
