//! Destinations: where backup sets live. A destination holds archives with their manifests
//! and can list them, read one, publish a new one atomically and delete one; the engine writes
//! through it, rotation and verify work on it. A local folder ([`LocalFolder`]) is the first
//! kind; a prefix of an S3 bucket ([`S3Prefix`]) the second, behind the same trait.
//!
//! Synchronous: callers run it on blocking threads, as they do the engine and the store.

mod background_sync;
mod local;
mod s3;

pub use local::LocalFolder;
pub use s3::S3Prefix;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use chrono::NaiveDateTime;
use proto::Codec;

use crate::format::naming::{manifest_name_for, parse_archive_name};
use crate::format::{Manifest, TIMESTAMP_FORMAT};

/// The most a manifest is read into memory. Real ones are a few KiB, plus a line per warning;
/// anything larger was not written by backupd and is refused rather than read.
pub const MANIFEST_SIZE_LIMIT: u64 = 64 << 20;

fn manifest_too_large(file: &str, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{file} is {size} bytes, larger than any manifest (at most {MANIFEST_SIZE_LIMIT})"),
    )
}

/// A place that holds backup sets. Files are named by the [`crate::format::naming`] grammar;
/// the destination only stores them.
pub trait Destination: fmt::Debug + Send + Sync {
    /// Where the destination is, as reports and logs show it.
    fn location(&self) -> PathBuf;

    /// Where a file of this destination is, as reports and logs show it.
    fn path_of(&self, file: &str) -> PathBuf;

    /// The files directly in the destination, with their sizes; only regular files.
    fn files(&self) -> io::Result<Vec<(String, u64)>>;

    /// [`Destination::files`], with each file's identity where the listing itself tells it
    /// (a bucket's does), so that listing archives costs no request per archive.
    fn listing(&self) -> io::Result<Vec<Listed>> {
        let files = self.files()?.into_iter();
        Ok(files
            .map(|(file, size)| Listed {
                file,
                size,
                identity: None,
            })
            .collect())
    }

    /// Whether any of `files` exists (or is being written) as one of ours: a file another user
    /// planted in a shared folder is not (see [`Destination::holder`]).
    fn any_exists(&self, files: &[String]) -> io::Result<bool>;

    /// Who holds the first of `files` that exists: ours wins over a stranger's.
    fn holder(&self, files: &[String]) -> io::Result<Option<Holder>> {
        Ok(self.any_exists(files)?.then_some(Holder::Ours))
    }

    /// Renames a published archive to a name nothing holds, never replacing a file;
    /// `Unsupported` where the destination cannot.
    fn rename_new(&self, _from: &str, _to: &str) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Streams one file's bytes.
    fn open(&self, file: &str) -> io::Result<Box<dyn Read + Send>>;

    /// Reads one small file (a manifest) whole; larger than [`MANIFEST_SIZE_LIMIT`] is an error.
    fn get(&self, file: &str) -> io::Result<Vec<u8>>;

    /// Reads each of `files` as [`Destination::get`] does, in order; a remote reads several at
    /// once, as a round trip each would make listing a thousand archives take minutes.
    fn get_each(&self, files: &[String]) -> Vec<io::Result<Vec<u8>>> {
        files.iter().map(|file| self.get(file)).collect()
    }

    /// Writes one small file (a manifest) atomically; `AlreadyExists` if it is there.
    fn put_new(&self, file: &str, bytes: &[u8]) -> io::Result<()>;

    /// Starts a new archive; it exists under its name only once [`PendingArchive::publish`]ed.
    fn begin(&self, archive: &str) -> io::Result<Box<dyn PendingArchive>>;

    /// Removes one file; a file already gone is not an error.
    fn remove(&self, file: &str) -> io::Result<()>;

    /// What the file stored under `file` is now, beyond its name.
    fn identity(&self, file: &str) -> io::Result<FileIdentity>;

    /// Removes `file` only if it is still the file `expected` identifies, checked on an opened
    /// handle just before the removal: a name freed and reused meanwhile holds another file,
    /// which stays.
    fn remove_if_same(&self, file: &str, expected: &FileIdentity) -> io::Result<Removal>;

    /// Makes earlier removals durable; best effort.
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    /// Before a rotation deletes an archive, marks `manifest` as going with it, so that
    /// whoever finishes a rotation cut between the two (a folder's start, a bucket's next
    /// rotation) removes that very file and no other; whether it did. Unmarked (nothing of
    /// ours there, or a destination that cannot mark), a cut leaves the manifest.
    fn mark_condemned(&self, _manifest: &str) -> io::Result<bool> {
        Ok(false)
    }

    /// Once a rotation is done with a manifest it marked, removed or kept: the mark goes.
    fn unmark_condemned(&self, _manifest: &str) -> io::Result<()> {
        Ok(())
    }

    /// Whether an archive here is whole without its manifest: a local one is, being published
    /// only once written; a remote copy is not, its manifest being the upload's last step.
    fn whole_without_manifest(&self) -> bool {
        true
    }

    /// Whether someone else holds what is stored here (a storage provider), who then gets an
    /// encrypted archive's manifest only as [`Manifest::as_a_provider_reads_it`].
    fn held_by_a_provider(&self) -> bool {
        false
    }

    /// Before a rotation of `name`: finishes its rotations cut short between an archive and
    /// its manifest, where no start-up does (a bucket). Best effort, logged; callers hold the
    /// name's rotation lock.
    fn finish_cut_rotations_of(&self, _name: &str) {}
}

/// What finishing the rotations cut short in a destination removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinishedRotations {
    /// Manifests a rotation had condemned, their archive deleted.
    pub manifests: Vec<PathBuf>,
    /// Every mark, whatever became of its manifest.
    pub marks: Vec<PathBuf>,
}

impl FinishedRotations {
    /// Says in the log what was removed, the same for a folder and a bucket.
    pub fn log(&self) {
        for path in &self.manifests {
            tracing::info!(
                "Removed stale manifest {}: a rotation cut short had deleted its archive",
                path.display()
            );
        }
        for path in &self.marks {
            tracing::info!(
                "Removed the mark of a rotation cut short {}",
                path.display()
            );
        }
    }
}

/// Whose file holds a name in a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A backup of ours, or one being written.
    Ours,
    /// A file of a user we do not trust, in a folder others may write (sticky, as `/tmp`): not a
    /// backup, but the name is not free either.
    Stranger { file: String, uid: u32 },
}

/// An archive being written. Dropped without [`publish`](Self::publish), it leaves nothing
/// under its final name.
pub trait PendingArchive: Write + Send + fmt::Debug {
    /// Where the bytes go while it is written.
    fn location(&self) -> PathBuf;

    /// Device and inode of a local file being written, so a walk of a source that holds the
    /// destination can leave the archive out.
    fn file_id(&self) -> Option<(u64, u64)>;

    /// The file being written, with every byte written so far in it, for going back over it:
    /// a command source's tar header is rewritten once its size is known, and the archive
    /// then hashed again. `None` where written bytes are gone (an upload).
    fn written_file(&mut self) -> Option<io::Result<&File>> {
        None
    }

    /// Makes the bytes durable, checks that all `written` bytes arrived, then publishes the
    /// archive under its final name without replacing anything. Returns its location.
    fn publish(self: Box<Self>, written: u64) -> Result<PathBuf, PublishError>;
}

/// Why an archive could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Another run published an archive of that name first.
    #[error("{0} already exists")]
    Exists(PathBuf),
    /// What reached the storage is not what was written.
    #[error("{path} failed validation: {reason}")]
    Incomplete { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A file as a destination's listing gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub file: String,
    pub size: u64,
    /// Its identity, if the listing tells it.
    pub identity: Option<FileIdentity>,
}

/// What a stored file is, beyond its name: device and inode, size and modification time in
/// nanoseconds. A file written under a freed name differs in at least one of them even when
/// the file system hands out the old inode again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

/// What [`Destination::remove_if_same`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// Nothing was there any more.
    Gone,
    /// Another file holds the name now; it was left alone.
    Replaced,
    /// An S3 object lock keeps it (until then; `None`: a legal hold, with no end). A delete
    /// would only hide it behind a delete marker, so it stays. A local folder never says this.
    Locked {
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
}

/// One archive found in a destination.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveInfo {
    /// Where it is ([`Destination::path_of`] its file name).
    pub path: PathBuf,
    pub file_name: String,
    /// The backup name (the file-name prefix).
    pub name: String,
    /// When the backup was made: from the file name, or the manifest's `created` when the
    /// name's timestamp is not a real date.
    pub timestamp: NaiveDateTime,
    /// From the extension.
    pub compression: Codec,
    pub size_bytes: u64,
    pub manifest_name: String,
    /// `None` when the manifest is missing or unreadable, or was written for another archive
    /// of the same stem ([`Manifest::written_for_sibling_of`]). Without its `warnings` and
    /// `commands`, which no listing reads.
    pub manifest: Option<Manifest>,
    /// Its manifest is there but could not be read or taken for backupd's (an archive storage
    /// class a lifecycle rule moved it to, a request that failed, another program's file):
    /// the backup is complete, as its manifest is written last, but what it records is unknown.
    pub manifest_unread: bool,
    /// The file as it was when listed; `None` if it could not be read. Rotation removes an
    /// archive only while it is still this file.
    pub identity: Option<FileIdentity>,
}

/// The archives directly in `destination`, oldest first, ties by path. Only files named by the
/// archive grammar are listed; anything else (partials, manifests, strangers) is invisible, so
/// rotation can never touch it.
pub fn list(destination: &dyn Destination) -> io::Result<Vec<ArchiveInfo>> {
    list_named(destination, None)
}

/// [`list`], of the archives of `name` only (all with `None`): only their manifests are read,
/// a request each on a remote.
pub fn list_named(
    destination: &dyn Destination,
    name: Option<&str>,
) -> io::Result<Vec<ArchiveInfo>> {
    let mut files = destination.listing()?;
    // In name order, whatever the folder's: the same files list the same way everywhere.
    files.sort_by(|a, b| a.file.cmp(&b.file));
    // A manifest is read only if the destination lists it as one of its files.
    let listed: std::collections::HashSet<&str> = files.iter().map(|f| f.file.as_str()).collect();
    let found: Vec<_> = files
        .iter()
        .filter_map(|listed| Some((listed, parse_archive_name(&listed.file)?)))
        .filter(|(_, parsed)| name.is_none_or(|name| parsed.name == name))
        .map(|(listed, parsed)| (listed, parsed, manifest_name_for(&listed.file)))
        .collect();
    let sizes: HashMap<&str, u64> = files.iter().map(|f| (f.file.as_str(), f.size)).collect();
    let manifest_names: Vec<String> = found
        .iter()
        .filter(|(_, _, manifest_name)| listed.contains(manifest_name.as_str()))
        .map(|(_, _, manifest_name)| manifest_name.clone())
        .collect();
    // Read a few at a time, each kept without what no listing needs: manifests put there by
    // someone else, each as large as a manifest may be, must not all be in memory at once.
    let mut manifests: HashMap<String, Manifest> = HashMap::new();
    let mut unread = std::collections::HashSet::new();
    let size_of = |name: &str| sizes.get(name).copied().unwrap_or(0);
    for batch in batches(&manifest_names, size_of) {
        for (name, bytes) in batch.iter().zip(destination.get_each(batch)) {
            if let Some(manifest) = bytes.ok().and_then(|bytes| listed_manifest(&bytes)) {
                manifests.insert(name.clone(), manifest);
            } else {
                unread.insert(name.clone());
            }
        }
    }
    let mut archives = Vec::new();
    for (listed, parsed, manifest_name) in found {
        let file_name = &listed.file;
        // Taken by the archive it was written for only, whichever of the stem's files
        // (`X.tar` beside `X.tar.gz` after `gunzip -k`) is listed first.
        let manifest = match manifests.get(&manifest_name) {
            Some(manifest) if manifest.written_for_sibling_of(file_name).is_none() => {
                manifests.remove(&manifest_name)
            }
            _ => None,
        };
        let timestamp = NaiveDateTime::parse_from_str(&parsed.stamp, TIMESTAMP_FORMAT)
            .ok()
            .or_else(|| {
                let created = &manifest.as_ref()?.created;
                NaiveDateTime::parse_from_str(created, TIMESTAMP_FORMAT).ok()
            });
        // Without any date it cannot be aged, so rotation must not see it.
        let Some(timestamp) = timestamp else {
            continue;
        };
        let identity = match &listed.identity {
            Some(identity) => Some(*identity),
            None => destination.identity(file_name).ok(),
        };
        archives.push(ArchiveInfo {
            identity,
            path: destination.path_of(file_name),
            file_name: file_name.clone(),
            name: parsed.name,
            timestamp,
            compression: parsed.codec,
            size_bytes: listed.size,
            manifest_unread: unread.contains(&manifest_name),
            manifest_name,
            manifest,
        });
    }
    archives.sort_by(|a, b| (a.timestamp, &a.path).cmp(&(b.timestamp, &b.path)));
    Ok(archives)
}

/// The most manifest bytes a listing reads at once (a single larger manifest is read alone).
const LISTING_READ_BYTES: u64 = 16 << 20;
/// The most a manifest held by a listing may take, without its warnings and dump commands;
/// backupd's own take a few KiB.
const LISTED_MANIFEST_BYTES: usize = 1 << 20;

/// `names` in order, cut into runs whose sizes (by `size_of`) add up to at most
/// [`LISTING_READ_BYTES`], each at least one name long.
fn batches(names: &[String], size_of: impl Fn(&str) -> u64) -> Vec<&[String]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, name) in names.iter().enumerate() {
        let size = size_of(name);
        if i > start && bytes + size > LISTING_READ_BYTES {
            batches.push(&names[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < names.len() {
        batches.push(&names[start..]);
    }
    batches
}

/// A manifest as a listing keeps it: without its warnings and dump commands, which no
/// listing reads; `None` if it is not JSON of a manifest, or holds more than one of backupd's
/// would (it was not written by backupd).
fn listed_manifest(bytes: &[u8]) -> Option<Manifest> {
    let mut manifest = Manifest::from_json(bytes).ok()?;
    manifest.warnings = Vec::new();
    manifest.commands = Vec::new();
    let too_large = bytes.len() > LISTED_MANIFEST_BYTES
        && manifest
            .to_json()
            .map_or(true, |kept| kept.len() > LISTED_MANIFEST_BYTES);
    (!too_large).then_some(manifest)
}

/// How many archive files of each backup name `destination` holds, by file name alone: no
/// manifest is read, so counting costs one listing however many archives there are.
pub fn archive_counts(destination: &dyn Destination) -> io::Result<HashMap<String, usize>> {
    let mut counts = HashMap::new();
    for (file, _) in destination.files()? {
        if let Some(parsed) = parse_archive_name(&file) {
            *counts.entry(parsed.name).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// Groups archives by backup name (names in order), each group newest first.
pub fn group_by_name(archives: &[ArchiveInfo]) -> BTreeMap<String, Vec<ArchiveInfo>> {
    let mut groups: BTreeMap<String, Vec<ArchiveInfo>> = BTreeMap::new();
    for archive in archives {
        groups
            .entry(archive.name.clone())
            .or_default()
            .push(archive.clone());
    }
    for group in groups.values_mut() {
        // Newest first; equal timestamps by path, descending, so the order is total.
        group.sort_by(|a, b| (b.timestamp, &b.path).cmp(&(a.timestamp, &a.path)));
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_read_in_batches_of_bounded_bytes_each_at_least_one() {
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let mib = |name: &str| match name {
            "b" => 40 << 20,
            _ => 6 << 20,
        };
        let batches = batches(&names, mib);
        let cut: Vec<Vec<&str>> = (batches.iter())
            .map(|batch| batch.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(cut, [vec!["a"], vec!["b"], vec!["c", "d"], vec!["e"]]);
        assert!(super::batches(&[], mib).is_empty());
    }
}
