//! The archive file-name grammar: `<name>_<YYYYMMDD_HHMMSS><extension>` beside
//! `<name>_<YYYYMMDD_HHMMSS>.json`, and `<archive>.partial` while it is being written. An
//! encrypted archive adds `.age` after its codec's extension (`.tar.gz.age`). A rotation marks
//! the manifest it is deleting with `.backupd-deleting-<manifest>`.
//!
//! Names may contain `_`, so a file name is parsed from the right: extension, then the
//! fixed-width timestamp, then whatever is left is the backup name.

use chrono::NaiveDateTime;
use proto::Codec;
use proto::schedule_spec::validate_name;

use super::encryption::EXTENSION as AGE_EXTENSION;

/// `chrono` format of the timestamp in file names.
pub const TIMESTAMP_FORMAT: &str = proto::ARCHIVE_TIME_FORMAT;
/// `YYYYMMDD_HHMMSS`
const STAMP_LEN: usize = 15;
const MANIFEST_EXTENSION: &str = ".json";
const PARTIAL_SUFFIX: &str = ".partial";
const CONDEMNED_PREFIX: &str = ".backupd-deleting-";

/// File name suffix of an archive, including the `.tar` part.
pub fn extension(codec: Codec) -> &'static str {
    match codec {
        Codec::Gzip => ".tar.gz",
        Codec::Zstd => ".tar.zst",
        Codec::None => ".tar",
    }
}

/// The file names of one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveNames {
    /// `<name>_<YYYYMMDD_HHMMSS>.tar.gz` (or `.tar.zst`, `.tar`)
    pub archive: String,
    /// `<name>_<YYYYMMDD_HHMMSS>.json`
    pub manifest: String,
    /// `YYYYMMDD_HHMMSS`
    pub created: String,
}

impl ArchiveNames {
    pub fn new(name: &str, codec: Codec, timestamp: NaiveDateTime) -> Self {
        let created = timestamp.format(TIMESTAMP_FORMAT).to_string();
        let stem = format!("{name}_{created}");
        Self {
            archive: format!("{stem}{}", extension(codec)),
            manifest: format!("{stem}{MANIFEST_EXTENSION}"),
            created,
        }
    }

    /// The names of an age-encrypted archive when `encrypted` (`.tar.gz.age`).
    pub fn encrypted(mut self, encrypted: bool) -> Self {
        if encrypted {
            self.archive.push_str(AGE_EXTENSION);
        }
        self
    }

    /// Every file that, if present, means a backup of this name and second exists or is being
    /// written, whatever its codec: they would all share the manifest name.
    pub fn claimed(&self) -> Vec<String> {
        let mut names = vec![self.manifest.clone()];
        for archive in archives_sharing(&self.manifest) {
            names.push(partial_name(&archive));
            names.push(archive);
        }
        names
    }
}

/// Every archive name, whatever its codec and encryption, whose manifest is `manifest`.
pub fn archives_sharing(manifest: &str) -> Vec<String> {
    let stem = manifest
        .strip_suffix(MANIFEST_EXTENSION)
        .unwrap_or(manifest);
    let mut names = Vec::new();
    for codec in Codec::ALL {
        for sealed in ["", AGE_EXTENSION] {
            names.push(format!("{stem}{}{sealed}", extension(codec)));
        }
    }
    names
}

/// The parts of a well-formed archive file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName {
    pub name: String,
    /// The `YYYYMMDD_HHMMSS` text; its shape is checked, not whether it is a real date.
    pub stamp: String,
    pub codec: Codec,
    /// Encrypted with age (`.age` after the codec's extension).
    pub encrypted: bool,
}

/// Parses an archive file name; `None` for anything backupd would not have written.
pub fn parse_archive_name(file_name: &str) -> Option<ParsedName> {
    let (stem, codec, encrypted) = split_extension(file_name)?;
    let split = stem.len().checked_sub(STAMP_LEN + 1)?;
    let (name, rest) = stem.split_at_checked(split)?;
    let stamp = rest.strip_prefix('_')?;
    if !is_stamp_shaped(stamp) || validate_name(name).is_err() {
        return None;
    }
    Some(ParsedName {
        name: name.to_owned(),
        stamp: stamp.to_owned(),
        codec,
        encrypted,
    })
}

/// Whether a file name ends like an archive (`backups` lists these, grammar or not).
pub fn has_archive_extension(file_name: &str) -> bool {
    split_extension(file_name).is_some()
}

/// The manifest beside an archive: the same stem with `.json`. For a file without a known
/// archive extension, the last extension is replaced.
pub fn manifest_name_for(archive: &str) -> String {
    let stem = match split_extension(archive) {
        Some((stem, ..)) => stem,
        None => archive.rsplit_once('.').map_or(archive, |(stem, _)| stem),
    };
    format!("{stem}{MANIFEST_EXTENSION}")
}

/// The codec implied by an archive's file name, if it has a known extension.
pub fn codec_from_name(archive: &str) -> Option<Codec> {
    split_extension(archive).map(|(_, codec, _)| codec)
}

/// Whether an archive's file name says it is age-encrypted (`….age`).
pub fn is_encrypted_name(archive: &str) -> bool {
    split_extension(archive).is_some_and(|(.., encrypted)| encrypted)
}

/// `<archive>.partial`
pub fn partial_name(archive: &str) -> String {
    format!("{archive}{PARTIAL_SUFFIX}")
}

/// Whether a file name is an archive's partial file (and not, say, a user's `thesis.partial`).
pub fn is_partial_archive(file_name: &str) -> bool {
    file_name
        .strip_suffix(PARTIAL_SUFFIX)
        .is_some_and(|archive| parse_archive_name(archive).is_some())
}

/// The backup name of a manifest named by the grammar (`<name>_<YYYYMMDD_HHMMSS>.json`).
pub fn name_of_manifest(manifest: &str) -> Option<String> {
    let stem = manifest.strip_suffix(MANIFEST_EXTENSION)?;
    let archive = format!("{stem}{}", extension(Codec::None));
    parse_archive_name(&archive).map(|parsed| parsed.name)
}

/// `.backupd-deleting-<manifest>`: the mark a rotation sets on the manifest it condemns before
/// deleting its archive, and removes after the manifest.
pub fn condemned_mark(manifest: &str) -> String {
    format!("{CONDEMNED_PREFIX}{manifest}")
}

/// The manifest name a mark holds, if `file` is one: `.backupd-deleting-` and a name of the
/// manifest grammar.
pub fn manifest_condemned_by(file: &str) -> Option<&str> {
    let manifest = file.strip_prefix(CONDEMNED_PREFIX)?;
    name_of_manifest(manifest).is_some().then_some(manifest)
}

/// The stem, the codec and whether the name ends in `.age`.
fn split_extension(file_name: &str) -> Option<(&str, Codec, bool)> {
    let (file_name, encrypted) = match file_name.strip_suffix(AGE_EXTENSION) {
        Some(inner) => (inner, true),
        None => (file_name, false),
    };
    // Longest first, so that `.tar` never shadows `.tar.gz`.
    [Codec::Gzip, Codec::Zstd, Codec::None]
        .into_iter()
        .find_map(|codec| {
            file_name
                .strip_suffix(extension(codec))
                .map(|stem| (stem, codec, encrypted))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_underscores_parse_from_the_right() {
        let parsed = parse_archive_name("my_docs_v2_20250102_030405.tar.gz").unwrap();
        assert_eq!(parsed.name, "my_docs_v2");
        assert_eq!(parsed.stamp, "20250102_030405");
        assert_eq!(parsed.codec, Codec::Gzip);
        assert_eq!(
            parse_archive_name("a_20250102_030405.tar.zst")
                .unwrap()
                .codec,
            Codec::Zstd
        );
        assert_eq!(
            parse_archive_name("a.b-c_20250102_030405.tar")
                .unwrap()
                .codec,
            Codec::None
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
            ".hidden_20250102_030405.tar.gz",
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
    fn encrypted_names_parse_with_their_codec() {
        for (file, codec) in [
            ("my_docs_20250102_030405.tar.gz.age", Codec::Gzip),
            ("a_20250102_030405.tar.zst.age", Codec::Zstd),
            ("a_20250102_030405.tar.age", Codec::None),
        ] {
            let parsed = parse_archive_name(file).unwrap();
            assert_eq!((parsed.codec, parsed.encrypted), (codec, true), "{file}");
            assert!(is_encrypted_name(file));
            assert!(is_partial_archive(&partial_name(file)));
        }
        assert!(
            !parse_archive_name("a_20250102_030405.tar.gz")
                .unwrap()
                .encrypted
        );
        assert_eq!(parse_archive_name("a_20250102_030405.age"), None);
        assert_eq!(parse_archive_name("a_20250102_030405.tar.gz.age.age"), None);
        assert_eq!(
            manifest_name_for("my_docs_20250102_030405.tar.gz.age"),
            "my_docs_20250102_030405.json"
        );
        let when = NaiveDateTime::parse_from_str("20250102_030405", TIMESTAMP_FORMAT).unwrap();
        let names = ArchiveNames::new("docs", Codec::Gzip, when).encrypted(true);
        assert_eq!(names.archive, "docs_20250102_030405.tar.gz.age");
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
            manifest_name_for("my_docs_20250102_030405.tar.gz"),
            "my_docs_20250102_030405.json"
        );
        assert_eq!(
            manifest_name_for("a_20250102_030405.tar.zst"),
            "a_20250102_030405.json"
        );
        assert_eq!(
            manifest_name_for("a_20250102_030405.tar"),
            "a_20250102_030405.json"
        );
        assert_eq!(manifest_name_for("odd.bin"), "odd.json");
    }

    #[test]
    fn names_round_trip_and_claim_every_codec() {
        let when = NaiveDateTime::parse_from_str("20250102_030405", TIMESTAMP_FORMAT).unwrap();
        let names = ArchiveNames::new("docs", Codec::Zstd, when);
        assert_eq!(names.archive, "docs_20250102_030405.tar.zst");
        assert_eq!(names.manifest, "docs_20250102_030405.json");
        let parsed = parse_archive_name(&names.archive).unwrap();
        assert_eq!((parsed.name.as_str(), parsed.codec), ("docs", Codec::Zstd));
        let claimed = names.claimed();
        assert_eq!(claimed.len(), 13);
        assert!(claimed.contains(&"docs_20250102_030405.tar.age.partial".to_owned()));
        assert!(claimed.contains(&"docs_20250102_030405.tar.gz.partial".to_owned()));
        assert!(is_partial_archive("docs_20250102_030405.tar.gz.partial"));
        assert!(!is_partial_archive("thesis.partial"));
    }

    #[test]
    fn a_mark_names_its_manifest_and_is_never_an_archive_partial_or_manifest() {
        let mark = condemned_mark("my_docs_20250102_030405.json");
        assert_eq!(mark, ".backupd-deleting-my_docs_20250102_030405.json");
        assert_eq!(
            manifest_condemned_by(&mark),
            Some("my_docs_20250102_030405.json")
        );
        assert_eq!(
            name_of_manifest("my_docs_20250102_030405.json").as_deref(),
            Some("my_docs")
        );
        assert_eq!(parse_archive_name(&mark), None);
        assert!(!has_archive_extension(&mark) && !is_partial_archive(&mark));
        assert_eq!(name_of_manifest(&mark), None);
        for not_a_mark in [
            ".backupd-deleting-notes.json",
            ".backupd-deleting-docs_20250102_030405.tar.gz",
            "docs_20250102_030405.json",
        ] {
            assert_eq!(manifest_condemned_by(not_a_mark), None, "{not_a_mark}");
        }
    }
}
