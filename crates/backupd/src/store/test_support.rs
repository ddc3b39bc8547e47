//! Helpers shared by the store's unit tests: real archives made by the engine, and
//! manifests for hand-made (hostile or broken) archives.
//!
//! Test-only; compiled under `cfg(test)`.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::NaiveDateTime;
use proto::size::human_size;
use proto::{Codec, Compression};

use super::checksum::sha256_of;
use super::{StoreError, VerifyReport};
use crate::destination::{Destination, FileIdentity, LocalFolder, PendingArchive, Removal};
use crate::engine::{self, BackupJob, BackupOutcome, ExcludeSet, Holes};
use crate::format::naming::manifest_name_for;
use crate::format::{FORMAT_VERSION, Manifest, TIMESTAMP_FORMAT, hex};
use crate::fsutil::write_atomically;

/// The manifest path beside an archive path.
pub fn manifest_of(archive: &Path) -> PathBuf {
    let name = archive.file_name().unwrap().to_str().unwrap();
    archive.with_file_name(manifest_name_for(name))
}

/// Verifies an archive given by path.
pub fn verify_path(archive: &Path) -> Result<VerifyReport, StoreError> {
    let (folder, name) = LocalFolder::containing(archive).unwrap();
    super::verify(&folder, &name)
}

pub fn stamp(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, TIMESTAMP_FORMAT).unwrap()
}

/// A manifest for `bytes`, as if the engine had written them.
pub fn fake_manifest(name: &str, created: &str, bytes: &[u8]) -> Manifest {
    use sha2::{Digest, Sha256};
    let checksum = hex(&Sha256::digest(bytes));
    Manifest {
        format_version: FORMAT_VERSION,
        backupd_version: "0.1.0".into(),
        name: name.into(),
        backup_file: PathBuf::from("/unused"),
        source: PathBuf::from("/unused"),
        created: created.into(),
        utc_offset: None,
        compression: Codec::None,
        level: None,
        size_bytes: bytes.len() as u64,
        size_human: human_size(bytes.len() as u64),
        checksum_sha256: checksum,
        files: 0,
        dirs: 0,
        symlinks: 0,
        hardlinks: 0,
        bytes_in: 0,
        duration_ms: 0,
        warnings: Vec::new(),
        skipped: 0,
        encryption: None,
        recipients: Vec::new(),
        passphrase: false,
        commands: Vec::new(),
    }
}

/// Writes (or rewrites) the manifest beside `archive` so that it matches the archive's
/// current bytes: for archives built or damaged by a test.
pub fn write_matching_manifest(archive: &Path) -> PathBuf {
    let (checksum, size) = sha256_of(fs::File::open(archive).unwrap()).unwrap();
    let manifest_path = manifest_of(archive);
    let mut manifest = match fs::read(&manifest_path) {
        Ok(bytes) => Manifest::from_json(&bytes).unwrap(),
        Err(_) => fake_manifest("hostile", "20250102_030405", b""),
    };
    manifest.backup_file = archive.to_owned();
    manifest.checksum_sha256 = checksum;
    manifest.size_bytes = size;
    manifest.size_human = human_size(size);
    write_atomically(&manifest_path, &manifest.to_json().unwrap()).unwrap();
    manifest_path
}

/// A small source tree: files, modes, nested folders, symlinks, a hard link.
pub fn build_tree(base: &Path) -> PathBuf {
    let src = base.join("tree");
    fs::create_dir_all(src.join("docs/deep")).unwrap();
    fs::create_dir(src.join("empty")).unwrap();
    fs::write(src.join("top.txt"), "top\n").unwrap();
    fs::write(src.join("docs/a.txt"), "alpha\n").unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(src.join("docs/deep/data.bin"), &data).unwrap();
    fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(src.join("docs/secret"), "s").unwrap();
    fs::set_permissions(src.join("docs/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("a.txt", src.join("docs/link_rel")).unwrap();
    symlink("/nonexistent/dangling", src.join("link_abs")).unwrap();
    fs::write(src.join("docs/hard1"), "linked").unwrap();
    fs::hard_link(src.join("docs/hard1"), src.join("docs/deep/hard2")).unwrap();
    fs::set_permissions(src.join("docs/deep"), fs::Permissions::from_mode(0o750)).unwrap();
    src
}

/// Backs `source` up into `dest` with the engine, named `name` at `when`.
pub fn backup(
    source: &Path,
    dest: &Path,
    name: &str,
    compression: Compression,
    when: &str,
) -> BackupOutcome {
    let job = BackupJob {
        source: source.to_owned(),
        name: name.into(),
        destination: Arc::new(LocalFolder::new(dest)),
        compression,
        excludes: ExcludeSet::new::<&str>(&[]).unwrap(),
        timestamp: stamp(when),
        utc_offset: chrono::FixedOffset::east_opt(0).unwrap(),
        never_archive: Vec::new(),
        holes: Holes::Kept,
        recipients: None,
        commands: Vec::new(),
        name_from_folder: false,
    };
    engine::run_backup(&job, &mut |_| {}, &AtomicBool::new(false)).unwrap()
}

/// The names in a folder, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The uid tests give files to as another user.
pub const NOBODY: u32 = 65534;

/// Whether this test may give files to [`NOBODY`] (it runs as root); says it is skipped if not.
pub fn can_give_files_away() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        println!("skipped: needs root to give files to nobody");
    }
    root
}

/// What a file opened from an [`OpenHooked`] folder is read through.
pub type Opened = Box<dyn std::io::Read + Send>;

/// A local folder whose `open` goes through `hook` (the file's name and what the folder
/// opened): for tests that act as a file is opened or read, the rest as the folder does.
pub struct OpenHooked<F> {
    pub folder: LocalFolder,
    pub hook: F,
}

impl<F> std::fmt::Debug for OpenHooked<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenHooked")
            .field("folder", &self.folder)
            .finish()
    }
}

impl<F> Destination for OpenHooked<F>
where
    F: Fn(&str, Opened) -> std::io::Result<Opened> + Send + Sync,
{
    fn location(&self) -> PathBuf {
        self.folder.location()
    }
    fn path_of(&self, file: &str) -> PathBuf {
        self.folder.path_of(file)
    }
    fn files(&self) -> std::io::Result<Vec<(String, u64)>> {
        self.folder.files()
    }
    fn any_exists(&self, files: &[String]) -> std::io::Result<bool> {
        self.folder.any_exists(files)
    }
    fn open(&self, file: &str) -> std::io::Result<Opened> {
        (self.hook)(file, self.folder.open(file)?)
    }
    fn get(&self, file: &str) -> std::io::Result<Vec<u8>> {
        self.folder.get(file)
    }
    fn put_new(&self, file: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.folder.put_new(file, bytes)
    }
    fn begin(&self, archive: &str) -> std::io::Result<Box<dyn PendingArchive>> {
        self.folder.begin(archive)
    }
    fn remove(&self, file: &str) -> std::io::Result<()> {
        self.folder.remove(file)
    }
    fn identity(&self, file: &str) -> std::io::Result<FileIdentity> {
        self.folder.identity(file)
    }
    fn remove_if_same(&self, file: &str, expected: &FileIdentity) -> std::io::Result<Removal> {
        self.folder.remove_if_same(file, expected)
    }
}
