//! The archive file-name grammar, `<name>_<YYYYMMDD_HHMMSS><.tar.gz|.tar.zst|.tar>`.
//!
//! Names may contain `_`, so a file name is parsed from the right: extension, then the
//! fixed-width timestamp, then whatever is left is the backup name.

use std::path::{Path, PathBuf};

use crate::engine::Compression;

/// Extensions the engine writes, longest first so `.tar` never shadows `.tar.gz`.
const EXTENSIONS: [(&str, Compression); 3] = [
    (
        ".tar.gz",
        Compression::Gzip {
            level: Compression::GZIP_DEFAULT,
        },
    ),
    (
        ".tar.zst",
        Compression::Zstd {
            level: Compression::ZSTD_DEFAULT,
        },
    ),
    (".tar", Compression::None),
];

/// `YYYYMMDD_HHMMSS`
const STAMP_LEN: usize = 15;
const MAX_NAME_LEN: usize = 64;

/// The parts of a well-formed archive file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName {
    pub name: String,
    /// The `YYYYMMDD_HHMMSS` text; its shape is checked, not whether it is a real date.
    pub stamp: String,
    /// `gzip`, `zstd` or `none`, as in manifests.
    pub compression: &'static str,
}

/// Parses an archive file name; `None` for anything the engine would not have written.
pub fn parse_archive_name(file_name: &str) -> Option<ParsedName> {
    let (stem, compression) = split_extension(file_name)?;
    let split = stem.len().checked_sub(STAMP_LEN + 1)?;
    let (name, rest) = stem.split_at_checked(split)?;
    let stamp = rest.strip_prefix('_')?;
    if !is_stamp_shaped(stamp) || !is_valid_name(name) {
        return None;
    }
    Some(ParsedName {
        name: name.to_owned(),
        stamp: stamp.to_owned(),
        compression: compression.name(),
    })
}

/// The manifest beside an archive: the same stem with `.json`. For a file without a known
/// archive extension, the last extension is replaced.
pub fn manifest_path_for(archive: &Path) -> PathBuf {
    let file_name = archive.file_name().and_then(|n| n.to_str());
    match file_name.and_then(split_extension) {
        Some((stem, _)) => archive.with_file_name(format!("{stem}.json")),
        None => archive.with_extension("json"),
    }
}

/// The codec implied by an archive's file name, if it has a known extension.
pub fn compression_from_name(archive: &Path) -> Option<Compression> {
    let file_name = archive.file_name()?.to_str()?;
    split_extension(file_name).map(|(_, compression)| compression)
}

fn split_extension(file_name: &str) -> Option<(&str, Compression)> {
    EXTENSIONS
        .iter()
        .find_map(|(ext, compression)| file_name.strip_suffix(ext).map(|stem| (stem, *compression)))
}

fn is_stamp_shaped(stamp: &str) -> bool {
    let bytes = stamp.as_bytes();
    bytes.len() == STAMP_LEN
        && bytes.iter().enumerate().all(|(i, b)| {
            if i == 8 {
                *b == b'_'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// `[A-Za-z0-9._-]{1,64}`, the names the daemon accepts for jobs.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_underscores_parse_from_the_right() {
        let parsed = parse_archive_name("my_docs_v2_20250102_030405.tar.gz").unwrap();
        assert_eq!(parsed.name, "my_docs_v2");
        assert_eq!(parsed.stamp, "20250102_030405");
        assert_eq!(parsed.compression, "gzip");
        assert_eq!(
            parse_archive_name("a_20250102_030405.tar.zst")
                .unwrap()
                .compression,
            "zstd"
        );
        assert_eq!(
            parse_archive_name("a.b-c_20250102_030405.tar")
                .unwrap()
                .compression,
            "none"
        );
    }

    #[test]
    fn other_files_do_not_parse() {
        for name in [
            "docs_20250102_030405.json",
            "docs_20250102_030405.tar.gz.partial",
            "docs_20250102_030405.zip",
            "_20250102_030405.tar.gz",
            "20250102_030405.tar.gz",
            "docs-20250102_030405.tar.gz",
            "docs_2025010_030405.tar.gz",
            "docs_20250102-030405.tar.gz",
            "docs_2025010x_030405.tar.gz",
            "do cs_20250102_030405.tar.gz",
            "notes.txt",
            ".tar.gz",
        ] {
            assert_eq!(parse_archive_name(name), None, "{name}");
        }
        let long = format!("{}_20250102_030405.tar", "n".repeat(65));
        assert_eq!(parse_archive_name(&long), None);
        let max = format!("{}_20250102_030405.tar", "n".repeat(64));
        assert!(parse_archive_name(&max).is_some());
    }

    #[test]
    fn shape_not_date_is_checked_here() {
        // Whether the date is real is the lister's call: it may fall back to the manifest.
        let parsed = parse_archive_name("x_20261399_000000.tar.gz").unwrap();
        assert_eq!(parsed.stamp, "20261399_000000");
    }

    #[test]
    fn manifest_sits_beside_the_archive() {
        assert_eq!(
            manifest_path_for(Path::new("/b/my_docs_20250102_030405.tar.gz")),
            Path::new("/b/my_docs_20250102_030405.json")
        );
        assert_eq!(
            manifest_path_for(Path::new("/b/a_20250102_030405.tar.zst")),
            Path::new("/b/a_20250102_030405.json")
        );
        assert_eq!(
            manifest_path_for(Path::new("/b/a_20250102_030405.tar")),
            Path::new("/b/a_20250102_030405.json")
        );
        assert_eq!(
            manifest_path_for(Path::new("/b/odd.bin")),
            Path::new("/b/odd.json")
        );
    }
}
