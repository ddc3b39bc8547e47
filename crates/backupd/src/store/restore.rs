//! Safe restore: an archive whose bytes match its manifest is extracted into an empty
//! folder, and no entry may write outside it.
//!
//! Every entry's path is checked before it is unpacked (absolute, `..`, a symlink among
//! its parents, a hard link escaping or through a symlink); refused entries are reported,
//! never written. The tar crate's own guards stay on as a second line.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use super::checksum::{Integrity, check_integrity};
use super::error::StoreError;
use super::verify::{open_tar_stream, read_manifest};
use crate::destination::Destination;
use crate::format::Manifest;
use crate::format::naming::manifest_name_for;

/// What a restore wrote and what it refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Regular files, including hard links.
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Content bytes of the regular files.
    pub bytes: u64,
    /// `<entry path>: <reason>` for every entry not restored for safety.
    pub refused: Vec<String>,
}

/// Restores `archive` into `to`, which must be empty or not exist (it is then created).
///
/// `paths`, if not empty, restricts the restore to entries under those subpaths, given
/// relative to the backed-up folder (`docs`) or including its top-level name
/// (`tree/docs`); a subpath matching nothing fails before anything is written.
pub fn restore(
    destination: &dyn Destination,
    file: &str,
    to: &Path,
    paths: &[String],
) -> Result<RestoreReport, StoreError> {
    let archive = Archive {
        destination,
        file,
        path: destination.path_of(file),
    };
    let manifest = checked_manifest(&archive)?;
    check_target(to)?;
    let filters = Filters::new(paths);
    if !filters.is_empty() {
        let unmatched = filters.unmatched(&archive, &manifest)?;
        if let Some(path) = unmatched.into_iter().next() {
            return Err(StoreError::PathNotInArchive {
                archive: archive.path,
                path,
            });
        }
    }
    let target_error = |source| StoreError::Target {
        path: to.to_owned(),
        source,
    };
    fs::create_dir_all(to).map_err(target_error)?;
    let root = fs::canonicalize(to).map_err(target_error)?;
    Extractor {
        archive: &archive,
        root: &root,
        filters: &filters,
        report: RestoreReport::default(),
    }
    .run(&manifest)
}

/// The archive being restored: where it is read from, and its path for messages.
struct Archive<'a> {
    destination: &'a dyn Destination,
    file: &'a str,
    path: PathBuf,
}

impl Archive<'_> {
    fn tar_stream(&self, manifest: &Manifest) -> io::Result<tar::Archive<impl io::Read + use<'_>>> {
        open_tar_stream(self.destination, self.file, Some(manifest)).map(tar::Archive::new)
    }
}

/// The manifest, once the archive's bytes are known to match it.
fn checked_manifest(archive: &Archive<'_>) -> Result<Manifest, StoreError> {
    let manifest = read_manifest(
        archive.destination,
        archive.file,
        &manifest_name_for(archive.file),
    )?;
    let unreadable = |source| StoreError::ReadArchive {
        path: archive.path.clone(),
        source,
    };
    let bytes = archive.destination.open(archive.file).map_err(unreadable)?;
    match check_integrity(bytes, &manifest).map_err(unreadable)? {
        Integrity::Matches => Ok(manifest),
        differs => Err(StoreError::ChecksumMismatch {
            path: archive.path.clone(),
            reason: differs.describe(&manifest).unwrap_or_default(),
        }),
    }
}

/// Never write into a folder that has something in it: a restore must not mix with, or
/// overwrite, what is there.
fn check_target(to: &Path) -> Result<(), StoreError> {
    let target_error = |source| StoreError::Target {
        path: to.to_owned(),
        source,
    };
    match fs::metadata(to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(target_error(e)),
        Ok(meta) if !meta.is_dir() => Err(StoreError::TargetNotDirectory {
            path: to.to_owned(),
        }),
        Ok(_) => {
            let mut entries = fs::read_dir(to).map_err(target_error)?;
            if entries.next().is_some() {
                Err(StoreError::TargetNotEmpty {
                    path: to.to_owned(),
                })
            } else {
                Ok(())
            }
        }
    }
}

/// The relative, `..`-free components of an archive path, or why it is refused. An empty
/// result is the archive root itself (`./`).
fn safe_components(path: &Path) -> Result<Vec<&OsStr>, &'static str> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(parts)
}

/// The subpaths a restore is limited to.
#[derive(Debug)]
struct Filters {
    /// As given, for messages; and split into components.
    paths: Vec<(String, Vec<String>)>,
}

impl Filters {
    fn new(paths: &[String]) -> Self {
        let paths = paths
            .iter()
            .map(|p| {
                let parts = Path::new(p)
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                        // `..` can never match an entry (those are refused anyway).
                        Component::ParentDir => Some("..".to_owned()),
                        _ => None,
                    })
                    .collect();
                (p.clone(), parts)
            })
            .collect();
        Filters { paths }
    }

    fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The index of the first filter selecting `parts`, or `None`. With no filters every
    /// entry is selected (`Some(usize::MAX)`).
    fn select(&self, parts: &[&OsStr]) -> Option<usize> {
        if self.is_empty() {
            return Some(usize::MAX);
        }
        let under = |prefix: &[String], parts: &[&OsStr]| {
            !prefix.is_empty()
                && parts.len() >= prefix.len()
                && prefix.iter().zip(parts).all(|(a, b)| OsStr::new(a) == *b)
        };
        self.paths.iter().position(|(_, prefix)| {
            // Relative to the source folder (below the top-level entry), or including it.
            under(prefix, parts) || (!parts.is_empty() && under(prefix, &parts[1..]))
        })
    }

    /// Reads the archive's entry names and returns the filters that match none.
    fn unmatched(
        &self,
        archive: &Archive<'_>,
        manifest: &Manifest,
    ) -> Result<Vec<String>, StoreError> {
        let stream_error = |source| StoreError::Extract {
            archive: archive.path.clone(),
            entry: "<archive stream>".to_owned(),
            source,
        };
        let mut matched = vec![false; self.paths.len()];
        let mut tar = archive.tar_stream(manifest).map_err(stream_error)?;
        for entry in tar.entries().map_err(stream_error)? {
            let entry = entry.map_err(stream_error)?;
            let path = entry.path().map_err(stream_error)?;
            if let Ok(parts) = safe_components(&path)
                && let Some(i) = self.select(&parts)
            {
                matched[i] = true;
            }
        }
        Ok(self
            .paths
            .iter()
            .zip(matched)
            .filter(|(_, m)| !m)
            .map(|((p, _), _)| p.clone())
            .collect())
    }
}

/// One pass over the archive, writing under `root` (canonical, existing, initially empty).
struct Extractor<'a> {
    archive: &'a Archive<'a>,
    root: &'a Path,
    filters: &'a Filters,
    report: RestoreReport,
}

impl Extractor<'_> {
    fn run(mut self, manifest: &Manifest) -> Result<RestoreReport, StoreError> {
        let mut tar = self
            .archive
            .tar_stream(manifest)
            .map_err(|e| self.error("<archive stream>", e))?;
        tar.set_preserve_permissions(true);
        tar.set_preserve_mtime(true);
        // Only root may give files away; as anyone else the restorer owns them.
        tar.set_preserve_ownerships(rustix::process::geteuid().is_root());
        tar.set_unpack_xattrs(false);
        tar.set_overwrite(false);

        // Folders get their mode and mtime last, deepest first, so a read-only folder
        // does not block its own contents and writing contents does not bump its mtime.
        let mut folders = Vec::new();
        let entries = tar
            .entries()
            .map_err(|e| self.error("<archive stream>", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.error("<archive stream>", e))?;
            let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = entry
                .path()
                .map_err(|e| self.error(&shown, e))?
                .into_owned();
            let parts = match safe_components(&path) {
                Ok(parts) if parts.is_empty() => continue,
                Ok(parts) => parts,
                Err(reason) => {
                    self.refuse(&shown, reason);
                    continue;
                }
            };
            if self.filters.select(&parts).is_none() {
                continue;
            }
            let kind = entry.header().entry_type();
            let link = entry.link_name().map_err(|e| self.error(&shown, e))?;
            if let Err(reason) = self.check(&parts, kind, link.as_deref()) {
                self.refuse(&shown, &reason);
                continue;
            }
            let destination: PathBuf = parts.iter().fold(self.root.to_owned(), |p, c| p.join(c));
            if kind == EntryType::Directory {
                fs::create_dir_all(&destination).map_err(|e| self.error(&shown, e))?;
                self.report.dirs += 1;
                folders.push((shown, destination, entry));
                continue;
            }
            let unpacked = entry
                .unpack_in(self.root)
                .map_err(|e| self.error(&shown, e))?;
            if !unpacked {
                self.refuse(&shown, "refused by the tar reader");
                continue;
            }
            match kind {
                EntryType::Symlink => self.report.symlinks += 1,
                EntryType::Link => self.report.files += 1,
                _ => {
                    self.report.files += 1;
                    self.report.bytes += entry.size();
                }
            }
        }
        for (shown, destination, mut entry) in folders.into_iter().rev() {
            entry
                .unpack_in(self.root)
                .map_err(|e| self.error(&shown, e))?;
            // The tar reader sets a folder's mode but not its mtime.
            if let Ok(mtime) = entry.header().mtime() {
                let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
                fs::File::open(&destination)
                    .and_then(|dir| dir.set_modified(when))
                    .map_err(|e| self.error(&shown, e))?;
            }
        }
        Ok(self.report)
    }

    /// Why an entry must not be written, if it must not.
    fn check(&self, parts: &[&OsStr], kind: EntryType, link: Option<&Path>) -> Result<(), String> {
        match kind {
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link => {}
            other => return Err(format!("unsupported entry type {other:?}")),
        }
        self.check_parents(parts)?;
        let destination = parts.iter().fold(self.root.to_owned(), |p, c| p.join(c));
        match fs::symlink_metadata(&destination) {
            Err(_) => {}
            Ok(meta) if kind == EntryType::Directory && meta.is_dir() => {}
            // Replacing would mean unlinking something an earlier entry made, and a
            // symlink there could redirect the write.
            Ok(_) => return Err("already exists (duplicate entry)".to_owned()),
        }
        if kind == EntryType::Link {
            let link = link.ok_or("hard link without a target")?;
            let target = safe_components(link).map_err(|r| format!("hard link target: {r}"))?;
            if target.is_empty() {
                return Err("hard link to the archive root".to_owned());
            }
            self.check_parents(&target)
                .map_err(|r| format!("hard link target: {r}"))?;
            let target_path = target.iter().fold(self.root.to_owned(), |p, c| p.join(c));
            match fs::symlink_metadata(&target_path) {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => return Err("hard link target is not a regular file".to_owned()),
                Err(_) => {
                    return Err(format!(
                        "hard link target {} was not restored",
                        link.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every existing parent of `parts` under the root must be a real folder: a symlink
    /// among them could lead outside the target.
    fn check_parents(&self, parts: &[&OsStr]) -> Result<(), String> {
        let mut current = self.root.to_owned();
        for part in &parts[..parts.len().saturating_sub(1)] {
            current.push(part);
            match fs::symlink_metadata(&current) {
                Err(_) => return Ok(()), // the rest is created fresh, as folders
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(format!("{} is a symlink", self.shown(&current)));
                }
                Ok(meta) if !meta.is_dir() => {
                    return Err(format!("{} is not a folder", self.shown(&current)));
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }

    fn shown(&self, path: &Path) -> String {
        path.strip_prefix(self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    fn refuse(&mut self, entry: &str, reason: &str) {
        self.report.refused.push(format!("{entry}: {reason}"));
    }

    fn error(&self, entry: &str, source: io::Error) -> StoreError {
        StoreError::Extract {
            archive: self.archive.path.clone(),
            entry: entry.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::destination::LocalFolder;
    use crate::store::test_support::{
        backup, build_tree, dir_names, manifest_of, write_matching_manifest,
    };
    use proto::{Codec, Compression};

    /// Restores an archive given by path.
    fn restore(archive: &Path, to: &Path, paths: &[String]) -> Result<RestoreReport, StoreError> {
        let (folder, file) = LocalFolder::containing(archive).unwrap();
        super::restore(&folder, &file, to, paths)
    }

    /// Kind, mode, mtime and content (or link target) of everything under `root`.
    fn snapshot(root: &Path) -> BTreeMap<String, (char, u32, i64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let mode = meta.mode() & 0o7777;
                let value = if meta.file_type().is_symlink() {
                    let target = fs::read_link(&path).unwrap();
                    (
                        'l',
                        0,
                        meta.mtime(),
                        target.into_os_string().into_encoded_bytes(),
                    )
                } else if meta.is_dir() {
                    stack.push(path.clone());
                    ('d', mode, meta.mtime(), Vec::new())
                } else {
                    ('f', mode, meta.mtime(), fs::read(&path).unwrap())
                };
                out.insert(rel, value);
            }
        }
        out
    }

    fn made(compression: Compression) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let src = build_tree(dir.path());
        let dest = dir.path().join("backups");
        fs::create_dir(&dest).unwrap();
        let outcome = backup(&src, &dest, "tree", compression, "20250102_030405");
        (dir, src, outcome.archive)
    }

    #[test]
    fn round_trips_an_engine_archive() {
        for compression in [
            Compression::default(),
            Compression::of(Codec::Zstd),
            Compression::of(Codec::None),
        ] {
            let (dir, src, archive) = made(compression);
            let out = dir.path().join("out/nested");
            let report = restore(&archive, &out, &[]).unwrap();
            assert_eq!(report.refused, Vec::<String>::new());
            assert_eq!(
                snapshot(&out.join("tree")),
                snapshot(&src),
                "{compression:?}"
            );
            assert_eq!(report.symlinks, 2);
            assert_eq!(report.dirs, 4, "tree, docs, docs/deep, empty");
            assert_eq!(report.files, 7, "6 files + 1 hard link");
            let hard1 = fs::metadata(out.join("tree/docs/hard1")).unwrap();
            let hard2 = fs::metadata(out.join("tree/docs/deep/hard2")).unwrap();
            assert_eq!(hard1.ino(), hard2.ino(), "hard link restored as a link");
        }
    }

    #[test]
    fn a_non_empty_or_non_folder_target_is_refused() {
        let (dir, _src, archive) = made(Compression::default());
        let busy = dir.path().join("busy");
        fs::create_dir(&busy).unwrap();
        fs::write(busy.join("keep.txt"), "mine").unwrap();
        let err = restore(&archive, &busy, &[]).unwrap_err();
        assert!(matches!(err, StoreError::TargetNotEmpty { .. }), "{err}");
        assert!(err.to_string().contains("busy"));
        assert_eq!(fs::read_dir(&busy).unwrap().count(), 1);

        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        let err = restore(&archive, &file, &[]).unwrap_err();
        assert!(
            matches!(err, StoreError::TargetNotDirectory { .. }),
            "{err}"
        );

        let empty = dir.path().join("empty_target");
        fs::create_dir(&empty).unwrap();
        restore(&archive, &empty, &[]).unwrap();
        assert!(empty.join("tree/top.txt").exists());
    }

    #[test]
    fn a_damaged_or_unvouched_archive_is_not_restored() {
        let (dir, _src, archive) = made(Compression::default());
        let mut bytes = fs::read(&archive).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(&archive, &bytes).unwrap();
        let out = dir.path().join("out");
        let err = restore(&archive, &out, &[]).unwrap_err();
        assert!(matches!(err, StoreError::ChecksumMismatch { .. }), "{err}");
        assert!(!out.exists(), "nothing created");

        fs::remove_file(manifest_of(&archive)).unwrap();
        let err = restore(&archive, &out, &[]).unwrap_err();
        assert!(matches!(err, StoreError::ManifestMissing { .. }), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn subpaths_select_entries_with_or_without_the_top_folder() {
        let (dir, _src, archive) = made(Compression::default());
        for filter in ["docs", "tree/docs", "docs/"] {
            let out = dir.path().join(format!("out_{}", filter.replace('/', "_")));
            let report = restore(&archive, &out, &[filter.to_owned()]).unwrap();
            let got = snapshot(&out);
            assert!(got.contains_key("tree/docs/a.txt"), "{filter}");
            assert!(got.contains_key("tree/docs/deep/data.bin"));
            assert!(got.contains_key("tree/docs/deep/hard2"));
            assert!(!got.contains_key("tree/top.txt"));
            assert!(!got.contains_key("tree/empty"));
            assert_eq!(report.refused, Vec::<String>::new());
        }
        let out = dir.path().join("out_two");
        restore(&archive, &out, &["top.txt".into(), "docs/deep".into()]).unwrap();
        let got = snapshot(&out);
        assert!(got.contains_key("tree/top.txt"));
        assert!(got.contains_key("tree/docs/deep/data.bin"));
        assert!(!got.contains_key("tree/docs/a.txt"));
        assert!(got.contains_key("tree/docs/deep/hard2"));

        // The engine walks in name order, so `docs/deep/hard2` holds the data and
        // `docs/hard1` is a link to it: selected alone, it is reported, not silently lost.
        let out = dir.path().join("out_link");
        let report = restore(&archive, &out, &["docs/hard1".into()]).unwrap();
        assert_eq!(report.refused.len(), 1, "{:?}", report.refused);
        assert!(report.refused[0].starts_with("tree/docs/hard1: "));
        assert!(report.refused[0].contains("not restored"));
    }

    #[test]
    fn an_unknown_subpath_fails_before_writing() {
        let (dir, _src, archive) = made(Compression::default());
        let out = dir.path().join("out");
        let err = restore(&archive, &out, &["docs".into(), "nope/x".into()]).unwrap_err();
        match &err {
            StoreError::PathNotInArchive { path, .. } => assert_eq!(path, "nope/x"),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("nope/x"));
        assert!(!out.exists());
    }

    // --- hostile archives -------------------------------------------------------------

    enum Hostile<'a> {
        File(&'a [u8], &'a [u8]),
        Dir(&'a [u8]),
        Symlink(&'a [u8], &'a [u8]),
        HardLink(&'a [u8], &'a [u8]),
    }

    /// Writes a plain tar with raw (unchecked) names, plus a manifest that matches it.
    fn hostile_archive(dir: &Path, entries: &[Hostile]) -> PathBuf {
        let archive = dir.join("evil_20250102_030405.tar");
        let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(1_700_000_000);
            let (name, kind, data, link): (&[u8], _, &[u8], &[u8]) = match entry {
                Hostile::File(name, data) => (name, EntryType::Regular, data, b""),
                Hostile::Dir(name) => (name, EntryType::Directory, b"", b""),
                Hostile::Symlink(name, to) => (name, EntryType::Symlink, b"", to),
                Hostile::HardLink(name, to) => (name, EntryType::Link, b"", to),
            };
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            let old = header.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.into_inner().unwrap();
        write_matching_manifest(&archive);
        archive
    }

    #[test]
    fn hostile_paths_are_refused_and_nothing_escapes() {
        let base = tempfile::tempdir().unwrap();
        // A sandbox whose parent we can inspect; `/abs` is harmless to try, but check it.
        let work = base.path().join("work");
        fs::create_dir(&work).unwrap();
        let outside = base.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let outside_link = outside.to_str().unwrap().as_bytes().to_vec();
        let outside_file = format!("{}/victim", outside.display()).into_bytes();
        fs::write(outside.join("victim"), "untouched").unwrap();

        let archive = hostile_archive(
            &work,
            &[
                Hostile::Dir(b"top/"),
                Hostile::File(b"top/ok.txt", b"fine"),
                Hostile::File(b"/abs_store_test/file", b"abs"),
                Hostile::File(b"../escape", b"dotdot"),
                Hostile::File(b"top/a/../../../escape2", b"dotdot"),
                Hostile::Symlink(b"top/evil", &outside_link),
                Hostile::File(b"top/evil/file", b"through the link"),
                Hostile::Dir(b"top/evil/sub/"),
                Hostile::HardLink(b"top/hl_abs", &outside_file),
                Hostile::HardLink(b"top/hl_up", b"../outside/victim"),
                Hostile::HardLink(b"top/hl_through", b"top/evil/victim"),
                Hostile::HardLink(b"top/hl_ok", b"top/ok.txt"),
                Hostile::Symlink(b"top/evil2", &outside_file),
                Hostile::File(b"top/evil2", b"overwrite via duplicate"),
            ],
        );
        let target = work.join("target");
        let report = restore(&archive, &target, &[]).unwrap();

        let refused: Vec<&str> = report
            .refused
            .iter()
            .map(|r| r.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            refused,
            [
                "/abs_store_test/file",
                "../escape",
                "top/a/../../../escape2",
                "top/evil/file",
                "top/evil/sub/",
                "top/hl_abs",
                "top/hl_up",
                "top/hl_through",
                "top/evil2",
            ],
            "{:#?}",
            report.refused
        );
        assert!(
            report.refused[3].contains("symlink"),
            "{}",
            report.refused[3]
        );
        // The harmless entries are restored, symlinks included (making a link is safe).
        assert_eq!(
            fs::read_to_string(target.join("top/ok.txt")).unwrap(),
            "fine"
        );
        assert_eq!(
            fs::metadata(target.join("top/hl_ok")).unwrap().ino(),
            fs::metadata(target.join("top/ok.txt")).unwrap().ino()
        );
        assert!(
            fs::symlink_metadata(target.join("top/evil"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!((report.files, report.symlinks, report.dirs), (2, 2, 1));

        // Nothing written outside the target.
        assert_eq!(dir_names(&outside), ["victim"]);
        assert_eq!(
            fs::read_to_string(outside.join("victim")).unwrap(),
            "untouched"
        );
        assert_eq!(
            dir_names(&work),
            [
                "evil_20250102_030405.json",
                "evil_20250102_030405.tar",
                "target"
            ]
        );
        assert_eq!(dir_names(base.path()), ["outside", "work"]);
        assert!(!Path::new("/abs_store_test").exists());
        assert_eq!(dir_names(&target), ["top"]);
    }

    #[test]
    fn a_file_where_a_folder_should_be_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let archive = hostile_archive(
            base.path(),
            &[
                Hostile::File(b"top", b"a file"),
                Hostile::File(b"top/inner", b"under a file"),
            ],
        );
        let target = base.path().join("target");
        let report = restore(&archive, &target, &[]).unwrap();
        assert_eq!(report.refused.len(), 1, "{:?}", report.refused);
        assert!(report.refused[0].starts_with("top/inner: "));
        assert_eq!(fs::read_to_string(target.join("top")).unwrap(), "a file");
    }

    #[test]
    fn modes_are_restored_even_for_read_only_folders() {
        let base = tempfile::tempdir().unwrap();
        let src = base.path().join("ro");
        fs::create_dir_all(src.join("locked")).unwrap();
        fs::write(src.join("locked/f"), "x").unwrap();
        fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o555)).unwrap();
        let dest = base.path().join("b");
        fs::create_dir(&dest).unwrap();
        let archive = backup(
            &src,
            &dest,
            "ro",
            Compression::of(Codec::None),
            "20250102_030405",
        )
        .archive;
        let out = base.path().join("out");
        restore(&archive, &out, &[]).unwrap();
        let mode = fs::metadata(out.join("ro/locked")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o555);
        assert_eq!(fs::read_to_string(out.join("ro/locked/f")).unwrap(), "x");
    }

    #[test]
    fn ownership_is_restored_only_as_root() {
        let base = tempfile::tempdir().unwrap();
        let src = base.path().join("owned");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), "x").unwrap();
        let root = rustix::process::geteuid().is_root();
        if root {
            std::os::unix::fs::chown(src.join("f"), Some(4321), Some(4322)).unwrap();
        }
        let dest = base.path().join("b");
        fs::create_dir(&dest).unwrap();
        let archive = backup(
            &src,
            &dest,
            "owned",
            Compression::of(Codec::None),
            "20250102_030405",
        )
        .archive;
        let out = base.path().join("out");
        restore(&archive, &out, &[]).unwrap();
        let meta = fs::metadata(out.join("owned/f")).unwrap();
        if root {
            assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
        } else {
            // Not root: whatever the archive says, the restorer owns the files.
            assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
        }
    }
}
