//! Start-up repair of archives published without their manifest.
//!
//! The engine publishes an archive, then writes its manifest; a daemon killed between the two
//! leaves a whole, synced archive with no manifest, which verify cannot vouch for. At start
//! the manifest is rebuilt from the archive itself: its bytes hashed, its entries read to the
//! end and counted. An archive that does not decode is left where it is and reported, never
//! deleted.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proto::size::human_size;

use super::checksum::sha256_of;
use super::tar_end::read_past_entries;
use super::verify::open_tar_stream;
use crate::destination::{Destination, FileIdentity, Holder, PendingArchive, Removal};
use crate::format::naming::{manifest_name_for, parse_archive_name};
use crate::format::{Encryption, FORMAT_VERSION, Manifest, sealed_with_passphrase};

/// The warning a rebuilt manifest carries: what it cannot know.
pub const REBUILT_WARNING: &str =
    "manifest rebuilt from the archive at daemon start; source folder and duration unknown";

/// What [`rebuild_missing_manifests`] did for one archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRepair {
    Rebuilt {
        archive: PathBuf,
        manifest: PathBuf,
    },
    /// Another user's file holds the manifest's name (in a folder others may write); the
    /// archive was left as it is, unread.
    NameHeld {
        archive: PathBuf,
        manifest: PathBuf,
        uid: u32,
    },
    /// The archive does not read as a whole tar stream; it was left alone.
    Undecodable {
        archive: PathBuf,
        reason: String,
    },
    /// Asked to stop while reading this archive: nothing was written, and this archive and
    /// those after it are left for the next start.
    Stopped {
        archive: PathBuf,
    },
}

/// What start-up finds to repair in one destination, without reading any archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairPlan {
    /// File names of the archives whose manifest is missing, to rebuild.
    pub rebuild: Vec<String>,
    /// Archives whose manifest name another user's file holds ([`ManifestRepair::NameHeld`]).
    pub held: Vec<ManifestRepair>,
}

impl RepairPlan {
    /// The backup names of the archives to rebuild.
    pub fn names(&self) -> BTreeSet<String> {
        self.rebuild
            .iter()
            .filter_map(|file| parse_archive_name(file))
            .map(|parsed| parsed.name)
            .collect()
    }
}

/// Finds the archives in `destination` that have no manifest: cheap (the folder's listing and
/// a look at each manifest name), so it can run before the daemon serves. Only names of the
/// archive grammar are looked at; anything of ours present under the manifest name (even an
/// invalid manifest) is left for verify to report, another user's file there is reported.
pub fn plan_manifest_repairs(destination: &dyn Destination) -> io::Result<RepairPlan> {
    let mut plan = RepairPlan::default();
    let mut files = destination.files()?;
    files.sort();
    for (file, _) in files {
        if parse_archive_name(&file).is_none() {
            continue;
        }
        match manifest_state(destination, &file)? {
            ManifestState::Present => {}
            ManifestState::Missing => plan.rebuild.push(file),
            ManifestState::Held(held) => plan.held.push(held),
        }
    }
    Ok(plan)
}

enum ManifestState {
    Present,
    Missing,
    Held(ManifestRepair),
}

fn manifest_state(destination: &dyn Destination, file: &str) -> io::Result<ManifestState> {
    let manifest_name = manifest_name_for(file);
    Ok(
        match destination.holder(std::slice::from_ref(&manifest_name))? {
            None => ManifestState::Missing,
            Some(Holder::Ours) => ManifestState::Present,
            Some(Holder::Stranger { file: held, uid }) => {
                ManifestState::Held(ManifestRepair::NameHeld {
                    archive: destination.path_of(file),
                    manifest: destination.path_of(&held),
                    uid,
                })
            }
        },
    )
}

/// Rebuilds the manifest of every archive in `destination` that has none: the plan, then
/// every rebuild, at once.
pub fn rebuild_missing_manifests(destination: &dyn Destination) -> io::Result<Vec<ManifestRepair>> {
    let plan = plan_manifest_repairs(destination)?;
    let mut repairs = plan.held;
    rebuild_manifests(
        destination,
        &plan.rebuild,
        &Arc::new(AtomicBool::new(false)),
        &mut |repair| repairs.push(repair),
    );
    Ok(repairs)
}

/// Rebuilds the manifests of `files` (from [`plan_manifest_repairs`]) one after the other,
/// telling `done` of each. A file whose state changed since the plan (gone, or its manifest
/// there now) is passed over. Once `stop` is set, the archive being read fails at its next
/// read and nothing more is done: the manifest is written whole (atomically) or not at all.
pub fn rebuild_manifests(
    destination: &dyn Destination,
    files: &[String],
    stop: &Arc<AtomicBool>,
    done: &mut dyn FnMut(ManifestRepair),
) {
    let stoppable = Stoppable {
        inner: destination,
        stop: Arc::clone(stop),
    };
    for file in files {
        let archive = destination.path_of(file);
        if stop.load(Ordering::Relaxed) {
            done(ManifestRepair::Stopped { archive });
            return;
        }
        let state = destination
            .any_exists(std::slice::from_ref(file))
            .and_then(|exists| {
                exists
                    .then(|| manifest_state(destination, file))
                    .transpose()
            });
        match state {
            Ok(Some(ManifestState::Missing)) => {}
            Ok(Some(ManifestState::Held(held))) => {
                done(held);
                continue;
            }
            Ok(None | Some(ManifestState::Present)) => continue,
            Err(e) => {
                done(ManifestRepair::Undecodable {
                    archive,
                    reason: e.to_string(),
                });
                continue;
            }
        }
        let manifest_name = manifest_name_for(file);
        match rebuild(&stoppable, file, &manifest_name) {
            Ok(()) => done(ManifestRepair::Rebuilt {
                archive,
                manifest: destination.path_of(&manifest_name),
            }),
            // Whatever the read failed with, it was cut short: not the archive's fault.
            Err(_) if stop.load(Ordering::Relaxed) => {
                done(ManifestRepair::Stopped { archive });
                return;
            }
            Err(e) => done(ManifestRepair::Undecodable {
                archive,
                reason: e.to_string(),
            }),
        }
    }
}

/// A destination whose archive reads fail once `stop` is set, so that a rebuild of a large
/// archive ends within a read of the daemon being told to stop.
#[derive(Debug)]
struct Stoppable<'a> {
    inner: &'a dyn Destination,
    stop: Arc<AtomicBool>,
}

impl Destination for Stoppable<'_> {
    fn location(&self) -> PathBuf {
        self.inner.location()
    }
    fn path_of(&self, file: &str) -> PathBuf {
        self.inner.path_of(file)
    }
    fn files(&self) -> io::Result<Vec<(String, u64)>> {
        self.inner.files()
    }
    fn any_exists(&self, files: &[String]) -> io::Result<bool> {
        self.inner.any_exists(files)
    }
    fn holder(&self, files: &[String]) -> io::Result<Option<Holder>> {
        self.inner.holder(files)
    }
    fn rename_new(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename_new(from, to)
    }
    fn open(&self, file: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(StoppableRead {
            inner: self.inner.open(file)?,
            stop: Arc::clone(&self.stop),
        }))
    }
    fn get(&self, file: &str) -> io::Result<Vec<u8>> {
        self.inner.get(file)
    }
    fn put_new(&self, file: &str, bytes: &[u8]) -> io::Result<()> {
        self.inner.put_new(file, bytes)
    }
    fn begin(&self, archive: &str) -> io::Result<Box<dyn PendingArchive>> {
        self.inner.begin(archive)
    }
    fn remove(&self, file: &str) -> io::Result<()> {
        self.inner.remove(file)
    }
    fn identity(&self, file: &str) -> io::Result<FileIdentity> {
        self.inner.identity(file)
    }
    fn remove_if_same(&self, file: &str, expected: &FileIdentity) -> io::Result<Removal> {
        self.inner.remove_if_same(file, expected)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
    fn whole_without_manifest(&self) -> bool {
        self.inner.whole_without_manifest()
    }
    fn held_by_a_provider(&self) -> bool {
        self.inner.held_by_a_provider()
    }
}

struct StoppableRead {
    inner: Box<dyn Read + Send>,
    stop: Arc<AtomicBool>,
}

impl Read for StoppableRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            // Not `Interrupted`: readers retry that.
            return Err(io::Error::other("the daemon is stopping"));
        }
        self.inner.read(buf)
    }
}

fn rebuild(destination: &dyn Destination, file: &str, manifest_name: &str) -> io::Result<()> {
    let parsed = parse_archive_name(file)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an archive name"))?;
    // An encrypted archive cannot be read without its key: its checksum is still rebuilt, so
    // verify without a key keeps finding corruption; the counts stay unknown (0).
    let counts = if parsed.encrypted {
        Counts::default()
    } else {
        count_entries(destination, file)?
    };
    let (checksum, size_bytes) = sha256_of(destination.open(file)?)?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        backupd_version: env!("CARGO_PKG_VERSION").to_owned(),
        name: parsed.name,
        backup_file: destination.path_of(file),
        source: PathBuf::new(),
        created: parsed.stamp,
        // Unknown: the daemon may have restarted in another time zone.
        utc_offset: None,
        compression: parsed.codec,
        level: None,
        size_bytes,
        size_human: human_size(size_bytes),
        checksum_sha256: checksum,
        files: counts.files,
        dirs: counts.dirs,
        symlinks: counts.symlinks,
        hardlinks: counts.hardlinks,
        bytes_in: counts.bytes_in,
        duration_ms: 0,
        // What the lost run skipped is unknown; the warning says the manifest was rebuilt.
        skipped: 0,
        commands: Vec::new(),
        warnings: vec![REBUILT_WARNING.to_owned()],
        encryption: parsed.encrypted.then_some(Encryption::Age),
        // The age header does not name X25519 recipients; it does say "scrypt".
        recipients: Vec::new(),
        passphrase: parsed.encrypted && sealed_with_passphrase(destination.open(file)?)?,
    };
    destination.put_new(manifest_name, &manifest.to_json().map_err(io::Error::from)?)
}

#[derive(Debug, Default)]
struct Counts {
    files: u64,
    dirs: u64,
    symlinks: u64,
    hardlinks: u64,
    bytes_in: u64,
}

/// Reads every entry to the end, as verify does, and counts them as the engine does.
fn count_entries(destination: &dyn Destination, file: &str) -> io::Result<Counts> {
    let stream = open_tar_stream(destination, file, None, None)?;
    let mut tar = tar::Archive::new(stream);
    let mut counts = Counts::default();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let size = entry.size();
        let copied = super::verify::read_entry_data(&mut entry)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("an entry ends after {copied} of {size} bytes"),
            ));
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            counts.dirs += 1;
        } else if kind.is_symlink() {
            counts.symlinks += 1;
        } else if kind.is_hard_link() {
            counts.hardlinks += 1;
            counts.files += 1;
        } else if kind.is_gnu_sparse() {
            counts.files += 1;
            // Its data, not its holes, as the engine counts what it read.
            counts.bytes_in += entry.header().entry_size().unwrap_or(size);
        } else if kind.is_file() {
            counts.files += 1;
            counts.bytes_in += size;
        } else if kind.is_fifo() || kind.is_character_special() || kind.is_block_special() {
            // The walk counts FIFOs and device nodes among the files.
            counts.files += 1;
        }
    }
    read_past_entries(tar)?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::destination::LocalFolder;
    use crate::store::VerifyFinding;
    use crate::store::test_support::{
        NOBODY, backup, build_tree, can_give_files_away, dir_names, manifest_of, verify_path,
    };
    use proto::{Codec, Compression};

    #[test]
    fn a_missing_manifest_is_rebuilt_and_verifies() {
        for compression in [
            Compression::default(),
            Compression::of(Codec::Zstd),
            Compression::of(Codec::None),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let src = build_tree(dir.path());
            // A file with holes: 4 KiB of data read of its 8 MiB.
            let holes = fs::File::create(src.join("holes")).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&holes, &[1; 4096], 4 << 20).unwrap();
            holes.set_len(8 << 20).unwrap();
            let dest = dir.path().join("backups");
            fs::create_dir(&dest).unwrap();
            let outcome = backup(&src, &dest, "tree", compression, "20250102_030405");
            let written = outcome.manifest;
            assert!(written.bytes_in < 1 << 20, "{}", written.bytes_in);
            fs::remove_file(&outcome.manifest_path).unwrap();

            let repairs = rebuild_missing_manifests(&LocalFolder::new(&dest)).unwrap();
            assert_eq!(
                repairs,
                [ManifestRepair::Rebuilt {
                    archive: outcome.archive.clone(),
                    manifest: outcome.manifest_path.clone(),
                }]
            );
            let rebuilt = Manifest::from_json(&fs::read(&outcome.manifest_path).unwrap()).unwrap();
            assert_eq!(rebuilt.checksum_sha256, written.checksum_sha256);
            assert_eq!(rebuilt.size_bytes, written.size_bytes);
            assert_eq!(rebuilt.created, written.created);
            assert_eq!(rebuilt.compression, written.compression);
            assert_eq!(
                (
                    rebuilt.files,
                    rebuilt.dirs,
                    rebuilt.symlinks,
                    rebuilt.hardlinks
                ),
                (
                    written.files,
                    written.dirs,
                    written.symlinks,
                    written.hardlinks
                ),
                "{compression:?}"
            );
            assert_eq!(rebuilt.bytes_in, written.bytes_in);
            assert_eq!(rebuilt.warnings, [REBUILT_WARNING]);
            assert_eq!(
                verify_path(&outcome.archive).unwrap().finding,
                VerifyFinding::Ok
            );

            // Once rebuilt, nothing more to do.
            let again = rebuild_missing_manifests(&LocalFolder::new(&dest)).unwrap();
            assert!(again.is_empty(), "{again:?}");
        }
    }

    #[test]
    fn a_stopped_rebuild_writes_nothing_and_leaves_the_rest_for_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let src = build_tree(dir.path());
        let dest = dir.path().join("backups");
        fs::create_dir(&dest).unwrap();
        let outcome = backup(
            &src,
            &dest,
            "tree",
            Compression::default(),
            "20250102_030405",
        );
        fs::remove_file(&outcome.manifest_path).unwrap();
        let folder = LocalFolder::new(&dest);
        let plan = plan_manifest_repairs(&folder).unwrap();
        assert_eq!(plan.names(), BTreeSet::from(["tree".to_owned()]));

        let stop = Arc::new(AtomicBool::new(true));
        let mut repairs = Vec::new();
        rebuild_manifests(&folder, &plan.rebuild, &stop, &mut |r| repairs.push(r));
        assert_eq!(
            repairs,
            [ManifestRepair::Stopped {
                archive: outcome.archive.clone()
            }]
        );
        assert_eq!(dir_names(&dest), ["tree_20250102_030405.tar.gz"]);

        // A read under way fails at once, and not as `Interrupted`, which readers retry.
        let stoppable = Stoppable {
            inner: &folder,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let mut reader = stoppable.open("tree_20250102_030405.tar.gz").unwrap();
        reader.read_exact(&mut [0; 16]).unwrap();
        stoppable.stop.store(true, Ordering::Relaxed);
        let err = reader.read(&mut [0; 16]).unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::Interrupted);
    }

    #[test]
    fn a_manifest_name_another_user_holds_is_reported_and_the_archive_left_unread() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !can_give_files_away() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = build_tree(dir.path());
        let dest = dir.path().join("shared");
        fs::create_dir(&dest).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o1777)).unwrap();
        let outcome = backup(
            &src,
            &dest,
            "tree",
            Compression::default(),
            "20250102_030405",
        );
        fs::remove_file(&outcome.manifest_path).unwrap();
        fs::write(&outcome.manifest_path, b"").unwrap();
        std::os::unix::fs::chown(&outcome.manifest_path, Some(NOBODY), Some(NOBODY)).unwrap();

        let repairs = rebuild_missing_manifests(&LocalFolder::new(&dest)).unwrap();
        assert_eq!(
            repairs,
            [ManifestRepair::NameHeld {
                archive: outcome.archive.clone(),
                manifest: outcome.manifest_path.clone(),
                uid: NOBODY,
            }]
        );
        let theirs = fs::metadata(&outcome.manifest_path).unwrap();
        assert_eq!((theirs.uid(), theirs.len()), (NOBODY, 0), "left as it is");
    }

    #[test]
    fn an_undecodable_archive_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let src = build_tree(dir.path());
        let dest = dir.path().join("backups");
        fs::create_dir(&dest).unwrap();
        let outcome = backup(
            &src,
            &dest,
            "tree",
            Compression::default(),
            "20250102_030405",
        );
        fs::remove_file(&outcome.manifest_path).unwrap();
        let bytes = fs::read(&outcome.archive).unwrap();
        fs::write(&outcome.archive, &bytes[..bytes.len() / 2]).unwrap();
        // Not ours to look at: a stranger, and an archive with an (invalid) manifest.
        fs::write(dest.join("notes_20250101_000000.txt"), b"x").unwrap();
        fs::write(dest.join("x_20250101_000000.tar"), b"junk").unwrap();
        fs::write(dest.join("x_20250101_000000.json"), b"{}").unwrap();

        let repairs = rebuild_missing_manifests(&LocalFolder::new(&dest)).unwrap();
        assert_eq!(repairs.len(), 1, "{repairs:?}");
        let ManifestRepair::Undecodable { archive, reason } = &repairs[0] else {
            panic!("{repairs:?}");
        };
        assert_eq!(archive, &outcome.archive);
        assert!(!reason.is_empty());
        assert_eq!(
            fs::read(&outcome.archive).unwrap(),
            &bytes[..bytes.len() / 2]
        );
        assert!(!manifest_of(&outcome.archive).exists());
        assert_eq!(
            dir_names(&dest),
            [
                "notes_20250101_000000.txt",
                "tree_20250102_030405.tar.gz",
                "x_20250101_000000.json",
                "x_20250101_000000.tar"
            ]
        );
    }
}
