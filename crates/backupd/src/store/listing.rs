//! An archive's contents: each entry's kind, mode, size, mtime and path, read from the tar
//! headers (the data is skipped, not written anywhere).
//!
//! Only archives with a readable manifest are listed, as for verify and restore, so the
//! daemon does not become a way to read other tar files; a reader error is reported
//! without quoting the file's bytes.

use std::io;
use std::path::PathBuf;

use proto::response::DeviceKind;
use tar::EntryType;

use super::error::StoreError;
use super::restore::{Filters, entry_mtime, is_global_header, safe_components};
use super::until_stopped::{Stopping, UntilStopped};
use super::verify::{open_tar_stream, read_manifest, without_quoted_bytes};
use crate::destination::Destination;
use crate::format::Identities;
use crate::format::naming::manifest_name_for;

/// Entries listed at most, so that one request's answer stays bounded.
pub const MAX_LISTED: usize = 100_000;

/// Bytes of paths and link targets listed at most, as the answer writes them (JSON-escaped):
/// a hostile archive's names may be a MiB each, and [`MAX_LISTED`] of them would make an
/// answer of 100 GB.
pub const MAX_LISTED_BYTES: usize = 64 << 20;

/// How much one listing holds.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    entries: usize,
    bytes: usize,
}

/// A listing being gathered within its bounds.
#[derive(Debug, Default)]
struct Collecting {
    listing: Listing,
    bytes: usize,
}

impl Collecting {
    fn is_empty(&self) -> bool {
        self.listing.entries.is_empty() && self.listing.not_listed == 0
    }

    /// Lists `entry` as `name`, or counts it as not listed past `bounds`.
    fn add<R: io::Read>(&mut self, entry: &tar::Entry<'_, R>, name: String, bounds: Bounds) {
        let listing = &mut self.listing;
        // Once one entry is left out, so is every later one: the listing stays the archive's
        // first entries, with no gap a shorter name after a long one would leave.
        if listing.not_listed > 0 || listing.entries.len() >= bounds.entries {
            listing.not_listed += 1;
            return;
        }
        let link = entry
            .link_name_bytes()
            .map(|link| String::from_utf8_lossy(&link).into_owned());
        let bytes = json_len(&name) + link.as_deref().map_or(0, json_len);
        if self.bytes + bytes > bounds.bytes {
            listing.not_listed += 1;
            return;
        }
        self.bytes += bytes;
        let header = entry.header();
        let kind = match header.entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => "file",
            EntryType::Directory => "dir",
            EntryType::Symlink => "symlink",
            EntryType::Link => "hardlink",
            EntryType::Fifo => "fifo",
            EntryType::Char | EntryType::Block => "device",
            _ => "other",
        };
        listing.entries.push(ListedEntry {
            kind,
            mode: header.mode().unwrap_or(0) & 0o7777,
            size: entry.size(),
            mtime: entry_mtime(header),
            path: name,
            link,
            device: match header.entry_type() {
                EntryType::Char => Some(DeviceKind::Char),
                EntryType::Block => Some(DeviceKind::Block),
                _ => None,
            },
        });
    }
}

/// Bytes of `text` in a JSON string: a control character takes up to six (`\u001b`), so a name
/// of them counted raw made an answer six times its bound.
fn json_len(text: &str) -> usize {
    text.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if c < ' ' => 6,
            c => c.len_utf8(),
        })
        .sum()
}

/// One entry, as its header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    pub kind: &'static str,
    pub mode: u32,
    pub size: u64,
    /// Seconds since 1970; before it, negative.
    pub mtime: i64,
    pub path: String,
    pub link: Option<String>,
    /// Of a `device`: char or block.
    pub device: Option<DeviceKind>,
}

/// The entries of an archive, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub entries: Vec<ListedEntry>,
    /// Entries after the first that would pass [`MAX_LISTED`] or [`MAX_LISTED_BYTES`],
    /// counted but not listed.
    pub not_listed: u64,
}

/// Lists `file`, or with `path` only that entry and what is under it (a path matching
/// nothing is an error). An encrypted archive is read with `identities`.
pub fn list_contents(
    destination: &dyn Destination,
    file: &str,
    path: Option<&str>,
    identities: Option<&Identities>,
    stopping: Stopping<'_>,
) -> Result<Listing, StoreError> {
    let bounds = Bounds {
        entries: MAX_LISTED,
        bytes: MAX_LISTED_BYTES,
    };
    list_within(destination, file, path, identities, bounds, stopping)
}

/// [`list_contents`], holding at most `bounds`.
fn list_within(
    destination: &dyn Destination,
    file: &str,
    path: Option<&str>,
    identities: Option<&Identities>,
    bounds: Bounds,
    stopping: Stopping<'_>,
) -> Result<Listing, StoreError> {
    let archive = destination.path_of(file);
    let manifest = read_manifest(destination, file, &manifest_name_for(file))?;
    let unreadable = |e: io::Error| StoreError::ReadArchive {
        path: archive.clone(),
        source: io::Error::new(e.kind(), without_quoted_bytes(&e.to_string())),
    };
    let wanted: Vec<String> = path.map(str::to_owned).into_iter().collect();
    let filters = Filters::new(&wanted);
    let stream = open_tar_stream(destination, file, Some(&manifest), identities);
    // Every read of a long archive ends with a stop.
    let mut tar = tar::Archive::new(UntilStopped::new(stream.map_err(unreadable)?, stopping));
    // With a path, the entries it names relative to the backed-up folder, and those it names
    // only from the archive's root: the first if there are any (as restore settles it).
    let (mut relative, mut from_root) = (Collecting::default(), Collecting::default());
    for entry in tar.entries().map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        if is_global_header(&entry) {
            continue;
        }
        let entry_path = PathBuf::from(String::from_utf8_lossy(&entry.path_bytes()).as_ref());
        let into = if filters.is_empty() {
            &mut relative
        } else {
            let matched = safe_components(&entry_path)
                .map(|parts| filters.matches(0, &parts))
                .unwrap_or_default();
            if matched.below_top {
                &mut relative
            } else if matched.root_only {
                &mut from_root
            } else {
                continue;
            }
        };
        into.add(&entry, entry_path.display().to_string(), bounds);
    }
    let listing = if relative.is_empty() {
        from_root.listing
    } else {
        relative.listing
    };
    if let Some(path) = path
        && listing.entries.is_empty()
        && listing.not_listed == 0
    {
        return Err(StoreError::PathNotInArchive {
            archive,
            path: path.to_owned(),
        });
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::destination::LocalFolder;
    use crate::store::NEVER;
    use crate::store::test_support::{backup, build_tree, manifest_of, write_matching_manifest};
    use proto::Compression;

    fn listed(archive: &std::path::Path, path: Option<&str>) -> Result<Listing, StoreError> {
        let (folder, file) = LocalFolder::containing(archive).unwrap();
        list_contents(&folder, &file, path, None, NEVER)
    }

    #[test]
    fn lists_every_entry_or_those_under_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let src = build_tree(dir.path());
        let dest = dir.path().join("backups");
        fs::create_dir(&dest).unwrap();
        let archive = backup(
            &src,
            &dest,
            "tree",
            Compression::default(),
            "20250102_030405",
        )
        .archive;
        let all = listed(&archive, None).unwrap();
        let top = all
            .entries
            .iter()
            .find(|e| e.path == "tree/top.txt")
            .unwrap();
        assert_eq!(top.kind, "file");
        assert_eq!(top.size, fs::metadata(src.join("top.txt")).unwrap().len());
        assert!(
            all.entries
                .iter()
                .any(|e| e.kind == "dir" && e.path == "tree/docs/")
        );
        assert!(
            all.entries
                .iter()
                .any(|e| e.kind == "symlink" && e.link.is_some())
        );

        for path in ["docs/deep", "tree/docs/deep"] {
            let some = listed(&archive, Some(path)).unwrap();
            assert!(!some.entries.is_empty());
            assert!(
                some.entries
                    .iter()
                    .all(|e| e.path.starts_with("tree/docs/deep")),
                "{some:?}"
            );
        }
        let err = listed(&archive, Some("nope")).unwrap_err();
        assert!(matches!(err, StoreError::PathNotInArchive { .. }), "{err}");

        fs::remove_file(manifest_of(&archive)).unwrap();
        let err = listed(&archive, None).unwrap_err();
        assert!(matches!(err, StoreError::ManifestMissing { .. }), "{err}");
    }

    /// A listing stops at its entry bound, or where the bytes of paths and link targets
    /// would pass its byte bound, and counts every entry after.
    #[test]
    fn a_path_naming_entries_both_ways_lists_the_relative_ones() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("docs_20250101_000000.tar");
        let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
        for path in ["docs/docs/inner.txt", "docs/private/p.txt"] {
            let mut header = tar::Header::new_gnu();
            header.set_size(1);
            header.set_mode(0o644);
            builder.append_data(&mut header, path, &b"x"[..]).unwrap();
        }
        builder.into_inner().unwrap();
        write_matching_manifest(&archive);
        let paths = |listing: Listing| -> Vec<String> {
            listing.entries.into_iter().map(|e| e.path).collect()
        };
        assert_eq!(
            paths(listed(&archive, Some("docs")).unwrap()),
            ["docs/docs/inner.txt"]
        );
        assert_eq!(
            paths(listed(&archive, Some("docs/private")).unwrap()),
            ["docs/private/p.txt"],
            "named from the root only"
        );
    }

    #[test]
    fn a_listing_stops_at_its_bounds_and_counts_what_it_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("names_20250102_030405.tar");
        let mut tar = tar::Builder::new(fs::File::create(&archive).unwrap());
        let entries: [(&str, Option<&str>); 5] = [
            ("a", None),
            ("b/", None),
            ("l", Some("0123456789")),
            ("long_name_0123456789", None),
            ("c", None),
        ];
        for (path, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            match (path.ends_with('/'), link) {
                (true, _) => header.set_entry_type(EntryType::Directory),
                (false, Some(link)) => {
                    header.set_entry_type(EntryType::Symlink);
                    header.set_link_name(link).unwrap();
                }
                (false, None) => header.set_entry_type(EntryType::Regular),
            }
            tar.append_data(&mut header, path, io::empty()).unwrap();
        }
        tar.into_inner().unwrap();
        write_matching_manifest(&archive);
        let (folder, file) = LocalFolder::containing(&archive).unwrap();
        let paths = |bounds| {
            let listing = list_within(&folder, &file, None, None, bounds, NEVER).unwrap();
            let paths: Vec<String> = listing.entries.into_iter().map(|e| e.path).collect();
            (paths.join(" "), listing.not_listed)
        };
        let unbounded = Bounds {
            entries: 100,
            bytes: 100,
        };
        assert_eq!(
            paths(unbounded),
            ("a b/ l long_name_0123456789 c".into(), 0)
        );
        let three = Bounds {
            entries: 3,
            ..unbounded
        };
        assert_eq!(paths(three), ("a b/ l".into(), 2));
        // `l` and its link hold 11 bytes: 14 in all, exactly the bound.
        let fourteen = Bounds {
            entries: 100,
            bytes: 14,
        };
        assert_eq!(paths(fourteen), ("a b/ l".into(), 2));
        // One byte short: `l` is left out, and so is every entry after it, `c` too though it
        // would fit: the listing stays the archive's first entries.
        let thirteen = Bounds {
            bytes: 13,
            ..fourteen
        };
        assert_eq!(paths(thirteen), ("a b/".into(), 3));
    }

    #[test]
    fn names_are_bounded_as_the_answer_writes_them() {
        for text in ["plain/é", "tab\tquote\"back\\", "\u{1}\u{1b}[31m\u{7f}"] {
            let written = serde_json::to_string(text).unwrap();
            assert_eq!(json_len(text), written.len() - 2, "{written}");
        }
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("names_20250102_030405.tar");
        let mut tar = tar::Builder::new(fs::File::create(&archive).unwrap());
        for path in ["\u{1}\u{1}", "a"] {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_entry_type(EntryType::Regular);
            tar.append_data(&mut header, path, io::empty()).unwrap();
        }
        tar.into_inner().unwrap();
        write_matching_manifest(&archive);
        let (folder, file) = LocalFolder::containing(&archive).unwrap();
        let listed = |bytes| {
            let bounds = Bounds {
                entries: 100,
                bytes,
            };
            let listing = list_within(&folder, &file, None, None, bounds, NEVER).unwrap();
            (listing.entries.len(), listing.not_listed)
        };
        // Two raw bytes, twelve written: `\u0001\u0001`.
        assert_eq!(listed(13), (2, 0));
        assert_eq!(listed(11), (0, 2));
    }

    #[test]
    fn a_listing_ends_at_its_next_read_once_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let src = crate::store::test_support::build_tree(dir.path());
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let compression = proto::Compression::default();
        let outcome =
            crate::store::test_support::backup(&src, &dest, "t", compression, "20250101_000000");
        let (folder, file) = LocalFolder::containing(&outcome.archive).unwrap();
        let err = list_contents(&folder, &file, None, None, &|| true).unwrap_err();
        assert!(err.to_string().ends_with("backupd is stopping"), "{err}");
    }
}
