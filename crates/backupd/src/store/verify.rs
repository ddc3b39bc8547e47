//! Verifying an archive: its bytes against the manifest's SHA-256 and size, then every
//! entry read to the end through the decompressor and the tar reader.
//!
//! The outcome is a report, not an error: a damaged archive is a finding to show the user.

use std::fmt;
use std::io::{self, BufReader};
use std::path::PathBuf;

use proto::VerifyStatus;

use super::checksum::{Integrity, check_integrity};
use super::error::StoreError;
use super::header_limit::HeaderLimit;
use super::tar_end::{TarEndError, read_past_entries};
use super::until_stopped::{NEVER, Stopping, UntilStopped};
use crate::destination::Destination;
use crate::format::naming::{codec_from_name, is_encrypted_name, manifest_name_for};
use crate::format::{CountingReader, Identities, Manifest, decoder, open_sealed};

/// What verification found, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyFinding {
    Ok,
    /// The bytes are not what the manifest recorded (hash or size).
    ChecksumMismatch {
        expected: String,
        actual: String,
    },
    /// The compressed or tar stream ends early.
    Truncated(String),
    /// The stream is corrupt in some other way.
    Unreadable(String),
    /// No manifest beside the archive; `detail` says whether the contents read.
    ManifestMissing,
    /// A manifest exists but is not valid JSON of the expected shape.
    ManifestInvalid(String),
}

impl VerifyFinding {
    pub fn is_ok(&self) -> bool {
        *self == VerifyFinding::Ok
    }

    /// The finding in one word, as the protocol reports it.
    pub fn status(&self) -> VerifyStatus {
        match self {
            VerifyFinding::Ok => VerifyStatus::Ok,
            VerifyFinding::ChecksumMismatch { .. } => VerifyStatus::ChecksumMismatch,
            VerifyFinding::Truncated(_) => VerifyStatus::Truncated,
            VerifyFinding::Unreadable(_) => VerifyStatus::Unreadable,
            VerifyFinding::ManifestMissing => VerifyStatus::ManifestMissing,
            VerifyFinding::ManifestInvalid(_) => VerifyStatus::ManifestInvalid,
        }
    }

    /// Why it failed, beyond its status: the two checksums, or the reader's error.
    pub fn reason(&self) -> Option<String> {
        match self {
            VerifyFinding::Ok | VerifyFinding::ManifestMissing => None,
            VerifyFinding::ChecksumMismatch { expected, actual } => {
                Some(format!("manifest {expected}, file {actual}"))
            }
            VerifyFinding::Truncated(reason)
            | VerifyFinding::Unreadable(reason)
            | VerifyFinding::ManifestInvalid(reason) => Some(reason.clone()),
        }
    }
}

/// `OK`, or the status in words with its reason: `checksum mismatch (manifest …, file …)`.
impl fmt::Display for VerifyFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status())?;
        match self.reason() {
            Some(reason) => write!(f, " ({reason})"),
            None => Ok(()),
        }
    }
}

/// Reads the manifest `manifest` of `archive` in `destination`.
pub fn read_manifest(
    destination: &dyn Destination,
    archive: &str,
    manifest: &str,
) -> Result<Manifest, StoreError> {
    let invalid = |reason: String| StoreError::ManifestInvalid {
        path: destination.path_of(manifest),
        reason,
    };
    match destination.get(manifest) {
        Ok(bytes) => {
            let parsed = Manifest::from_json(&bytes)
                .map_err(|e| invalid(manifest_error_without_content(&e)))?;
            match parsed.written_for_sibling_of(archive) {
                None => Ok(parsed),
                Some(written_for) => Err(StoreError::ManifestOfSibling {
                    archive: destination.path_of(archive),
                    manifest: destination.path_of(manifest),
                    written_for: written_for.to_owned(),
                }),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::ManifestMissing {
            archive: destination.path_of(archive),
            manifest: destination.path_of(manifest),
        }),
        Err(e) => Err(invalid(e.to_string())),
    }
}

/// What verify says of an encrypted archive checked without a key.
pub const CHECKSUM_ONLY: &str =
    "checksum only: content not read (encrypted; give --identity or --passphrase)";

/// Whether an archive is age-encrypted, by its name or its manifest.
pub fn is_encrypted(archive: &str, manifest: Option<&Manifest>) -> bool {
    is_encrypted_name(archive) || manifest.is_some_and(|m| m.encryption.is_some())
}

/// The decoded tar stream of an archive, counting the bytes it yields and refusing absurd
/// extension headers ([`HeaderLimit`]). The codec comes from the file name, then the
/// manifest, then the magic bytes. An encrypted archive is decrypted with `identities`, and
/// without them cannot be opened.
pub(crate) fn open_tar_stream(
    destination: &dyn Destination,
    archive: &str,
    manifest: Option<&Manifest>,
    identities: Option<&Identities>,
) -> io::Result<CountingReader<Box<dyn io::Read + Send>>> {
    let codec = codec_from_name(archive).or(manifest.map(|m| m.compression));
    let input = BufReader::new(destination.open(archive)?);
    if !is_encrypted(archive, manifest) {
        return Ok(limited(decoder(codec, input)?));
    }
    let Some(identities) = identities else {
        let how = if manifest.is_some_and(|m| m.passphrase) {
            "the archive is encrypted with a passphrase; give --passphrase"
        } else {
            "the archive is encrypted with age; give --identity FILE"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, how));
    };
    let plain = open_sealed(identities, input)?;
    Ok(limited(decoder(codec, plain)?))
}

fn limited(decoded: Box<dyn io::Read + Send>) -> CountingReader<Box<dyn io::Read + Send>> {
    CountingReader::new(Box::new(HeaderLimit::new(decoded)))
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub archive: PathBuf,
    pub manifest_path: PathBuf,
    pub finding: VerifyFinding,
    /// Tar entries read completely before the end or the first problem.
    pub entries: u64,
    /// Content bytes of those entries.
    pub content_bytes: u64,
    /// More words for a human: the size difference, or whether the contents of an archive
    /// without a (valid) manifest read.
    pub detail: Option<String>,
}

/// Verifies one archive of `destination`. Fails only when the archive itself cannot be read.
pub fn verify(destination: &dyn Destination, archive: &str) -> Result<VerifyReport, StoreError> {
    verify_with(destination, archive, None, NEVER)
}

/// [`verify`], decrypting an encrypted archive with `identities` to read it to the end;
/// without them its bytes are only checked against the manifest ([`CHECKSUM_ONLY`]).
///
/// Once `stopping` says so, every read fails: what is then reported is not a finding about
/// the archive, and the caller, which is stopping, drops it.
pub fn verify_with(
    destination: &dyn Destination,
    archive: &str,
    identities: Option<&Identities>,
    stopping: Stopping<'_>,
) -> Result<VerifyReport, StoreError> {
    let path = destination.path_of(archive);
    let unreadable = |source| StoreError::ReadArchive {
        path: path.clone(),
        source,
    };
    let bytes = UntilStopped::new(destination.open(archive).map_err(unreadable)?, stopping);
    let manifest_name = manifest_name_for(archive);
    let mut report = VerifyReport {
        archive: path.clone(),
        manifest_path: destination.path_of(&manifest_name),
        finding: VerifyFinding::Ok,
        entries: 0,
        content_bytes: 0,
        detail: None,
    };

    let manifest = match read_manifest(destination, archive, &manifest_name) {
        Ok(manifest) => Some(manifest),
        Err(StoreError::ManifestMissing { .. }) => {
            report.finding = VerifyFinding::ManifestMissing;
            None
        }
        Err(e) => {
            report.finding = VerifyFinding::ManifestInvalid(e.to_string());
            None
        }
    };
    if let Some(manifest) = &manifest {
        match check_integrity(bytes, manifest).map_err(unreadable)? {
            Integrity::Matches => {}
            short @ Integrity::Short { .. } => {
                report.finding =
                    VerifyFinding::Truncated(short.describe(manifest).unwrap_or_default());
            }
            Integrity::Differs {
                expected,
                actual,
                size,
            } => {
                report.finding = VerifyFinding::ChecksumMismatch { expected, actual };
                // The two checksums are in the finding; only a size difference adds to it.
                report.detail = size.map(|size| {
                    format!(
                        "size {size} bytes, manifest says {} bytes",
                        manifest.size_bytes
                    )
                });
            }
        }
    }

    if identities.is_none() && is_encrypted(archive, manifest.as_ref()) {
        // The checksum vouches for the bytes on disk; the content needs the key.
        if report.finding.is_ok() {
            report.detail = Some(CHECKSUM_ONLY.to_owned());
        }
        return Ok(report);
    }
    let read = read_through(
        destination,
        archive,
        manifest.as_ref(),
        identities,
        stopping,
        &mut report,
    );
    match (&report.finding, read) {
        (VerifyFinding::Ok, Ok(())) => {}
        (VerifyFinding::Ok, Err(problem)) => report.finding = problem,
        // The manifest already condemned or could not vouch for the archive; whether the
        // contents read is still worth saying.
        (_, outcome) => {
            let reads = match outcome {
                Ok(()) => format!("contents read: {} entries", report.entries),
                Err(VerifyFinding::Truncated(why)) => format!("contents truncated: {why}"),
                Err(VerifyFinding::Unreadable(why)) => format!("contents unreadable: {why}"),
                Err(other) => format!("{other:?}"),
            };
            report.detail = Some(match report.detail.take() {
                Some(detail) => format!("{detail}; {reads}"),
                None => reads,
            });
        }
    }
    Ok(report)
}

/// Reads every entry's data, then the stream to its end ([`super::tar_end`]). Returns the
/// problem as a status.
fn read_through(
    destination: &dyn Destination,
    archive: &str,
    manifest: Option<&Manifest>,
    identities: Option<&Identities>,
    stopping: Stopping<'_>,
    report: &mut VerifyReport,
) -> Result<(), VerifyFinding> {
    let stream = open_tar_stream(destination, archive, manifest, identities).map_err(classify)?;
    // Every read of the stream (data, and what the tar reader skips) ends with a stop.
    let mut tar = tar::Archive::new(CountingReader::new(UntilStopped::new(stream, stopping)));
    for entry in tar.entries().map_err(classify)? {
        let mut entry = entry.map_err(classify)?;
        let size = entry.size();
        let copied = read_entry_data(&mut entry).map_err(classify)?;
        if copied != size {
            return Err(VerifyFinding::Truncated(format!(
                "{}: {copied} of {size} bytes",
                String::from_utf8_lossy(&entry.path_bytes())
            )));
        }
        report.entries += 1;
        report.content_bytes += size;
    }
    read_past_entries(tar).map_err(|error| match error {
        TarEndError::Undecodable(source) => classify(source),
        missing @ TarEndError::NoEndMarker { .. } => VerifyFinding::Truncated(missing.to_string()),
    })
}

/// Reads `entry`'s data to its end and returns its size, as far as the archive holds it. A GNU
/// sparse entry is not read: its holes are not in the stream, and read they would be zeros
/// made up to the size it claims (a 126-byte archive can claim a PiB). The tar reader reads
/// its stored bytes on its way to the next entry, which fails if they are cut short.
pub(super) fn read_entry_data<R: io::Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<u64> {
    if entry.header().entry_type() == tar::EntryType::GNUSparse {
        return Ok(entry.size());
    }
    io::copy(entry, &mut io::sink())
}

/// Early end of input is truncation; anything else is corruption. The tar crate reports a
/// short header block only through its message, hence the text match.
fn classify(error: io::Error) -> VerifyFinding {
    let text = without_quoted_bytes(&error.to_string());
    let short = error.kind() == io::ErrorKind::UnexpectedEof
        || text.contains("failed to read entire block")
        || text.contains("unexpected EOF during skip")
        || text.contains("incomplete frame");
    if short {
        VerifyFinding::Truncated(text)
    } else {
        VerifyFinding::Unreadable(text)
    }
}

/// A reader's error message without what it quotes of the input: the tar reader appends
/// header bytes after a colon (`numeric field was not a number: <bytes> when getting cksum
/// for <bytes>`), and a file that is not an archive (`/etc/passwd`) must not be echoed to a
/// client or the log. Decoders' and the system's messages have no colon and pass whole.
pub(crate) fn without_quoted_bytes(message: &str) -> String {
    let head = message.split(':').next().unwrap_or_default().trim_end();
    head.chars().filter(|c| !c.is_control()).take(120).collect()
}

/// A manifest that does not parse, described by the parser's category and position only:
/// serde's messages quote values (`invalid type: string "…"`), and the file may be anything.
pub(crate) fn manifest_error_without_content(error: &serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "not a manifest (missing or mistyped fields)",
        serde_json::error::Category::Eof => "not valid JSON (ends early)",
    };
    format!("{kind} at line {} column {}", error.line(), error.column())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::store::test_support::{
        backup, build_tree, manifest_of, verify_path, write_matching_manifest,
    };
    use proto::{Codec, Compression};

    fn made(compression: Compression) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let src = build_tree(dir.path());
        let dest = dir.path().join("backups");
        fs::create_dir(&dest).unwrap();
        let outcome = backup(&src, &dest, "tree", compression, "20250102_030405");
        (dir, outcome.archive)
    }

    /// Damages an archive without changing its size.
    fn flip_middle_byte(archive: &Path) {
        let mut bytes = fs::read(archive).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        fs::write(archive, &bytes).unwrap();
    }

    fn gzip() -> (tempfile::TempDir, PathBuf) {
        made(Compression::default())
    }

    #[test]
    fn valid_archives_of_every_compression_verify() {
        for compression in [
            Compression::default(),
            Compression::of(Codec::Zstd),
            Compression::of(Codec::None),
        ] {
            let (_dir, archive) = made(compression);
            let report = verify_path(&archive).unwrap();
            assert_eq!(
                report.finding,
                VerifyFinding::Ok,
                "{compression:?} {report:?}"
            );
            assert!(report.entries >= 12, "{report:?}");
            assert!(report.content_bytes >= 200_000);
            assert_eq!(report.detail, None);
        }
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_mismatch() {
        let (_dir, archive) = gzip();
        flip_middle_byte(&archive);
        let report = verify_path(&archive).unwrap();
        let VerifyFinding::ChecksumMismatch { expected, actual } = &report.finding else {
            panic!("{report:?}");
        };
        assert_ne!(expected, actual);
        assert_eq!(actual.len(), 64);
        assert!(report.detail.unwrap().contains("contents"));
    }

    #[test]
    fn a_file_shorter_than_its_manifest_says_is_truncated() {
        let (_dir, archive) = gzip();
        let bytes = fs::read(&archive).unwrap();
        fs::write(&archive, &bytes[..50]).unwrap();
        let report = verify_path(&archive).unwrap();
        let VerifyFinding::Truncated(reason) = &report.finding else {
            panic!("{report:?}");
        };
        assert!(reason.starts_with("50 of "), "{reason}");
    }

    #[test]
    fn a_mismatch_names_each_checksum_once() {
        let (_dir, archive) = gzip();
        flip_middle_byte(&archive);
        let report = verify_path(&archive).unwrap();
        let VerifyFinding::ChecksumMismatch { expected, actual } = &report.finding else {
            panic!("{report:?}");
        };
        let words = format!("{} {}", report.finding, report.detail.unwrap_or_default());
        assert_eq!(words.matches(expected.as_str()).count(), 1, "{words}");
        assert_eq!(words.matches(actual.as_str()).count(), 1, "{words}");
    }

    #[test]
    fn a_size_difference_is_reported_in_the_detail() {
        let (_dir, archive) = gzip();
        let mut bytes = fs::read(&archive).unwrap();
        bytes.push(0);
        fs::write(&archive, &bytes).unwrap();
        let report = verify_path(&archive).unwrap();
        assert!(matches!(
            report.finding,
            VerifyFinding::ChecksumMismatch { .. }
        ));
        assert!(report.detail.unwrap().contains("size"));
    }

    #[test]
    fn truncation_is_found_even_with_a_matching_manifest() {
        for compression in [
            Compression::default(),
            Compression::of(Codec::Zstd),
            Compression::of(Codec::None),
        ] {
            let (_dir, archive) = made(compression);
            let bytes = fs::read(&archive).unwrap();
            fs::write(&archive, &bytes[..bytes.len() * 2 / 3]).unwrap();
            write_matching_manifest(&archive);
            let report = verify_path(&archive).unwrap();
            assert!(
                matches!(report.finding, VerifyFinding::Truncated(_)),
                "{compression:?}: {report:?}"
            );
        }
    }

    #[test]
    fn a_plain_tar_cut_on_a_block_boundary_is_truncated() {
        let (_dir, archive) = made(Compression::of(Codec::None));
        let bytes = fs::read(&archive).unwrap();
        // Drop the end marker and padding: every entry is still whole.
        let cut = bytes.len() - 4096;
        let cut = cut - cut % 512;
        fs::write(&archive, &bytes[..cut]).unwrap();
        write_matching_manifest(&archive);
        let report = verify_path(&archive).unwrap();
        assert!(
            matches!(report.finding, VerifyFinding::Truncated(_)),
            "{report:?}"
        );
    }

    #[test]
    fn a_gzip_missing_only_its_trailer_is_truncated() {
        let (_dir, archive) = gzip();
        let bytes = fs::read(&archive).unwrap();
        fs::write(&archive, &bytes[..bytes.len() - 4]).unwrap();
        write_matching_manifest(&archive);
        let report = verify_path(&archive).unwrap();
        assert!(
            matches!(report.finding, VerifyFinding::Truncated(_)),
            "{report:?}"
        );
    }

    #[test]
    fn a_missing_manifest_is_reported_with_whether_it_reads() {
        let (_dir, archive) = gzip();
        fs::remove_file(manifest_of(&archive)).unwrap();
        let report = verify_path(&archive).unwrap();
        assert_eq!(report.finding, VerifyFinding::ManifestMissing);
        assert!(report.detail.unwrap().starts_with("contents read"));
    }

    #[test]
    fn an_invalid_manifest_is_reported() {
        let (_dir, archive) = gzip();
        fs::write(manifest_of(&archive), b"{ not json").unwrap();
        let report = verify_path(&archive).unwrap();
        assert!(matches!(report.finding, VerifyFinding::ManifestInvalid(_)));
    }

    #[test]
    fn garbage_with_a_correct_manifest_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 256) as u8).collect();
        for name in [
            "g_20250102_030405.tar.gz",
            "g_20250102_030405.tar.zst",
            "g_20250102_030405.tar",
        ] {
            let archive = dir.path().join(name);
            fs::write(&archive, &garbage).unwrap();
            write_matching_manifest(&archive);
            let report = verify_path(&archive).unwrap();
            assert!(
                matches!(report.finding, VerifyFinding::Unreadable(_)),
                "{name}: {report:?}"
            );
            fs::remove_file(&archive).unwrap();
        }
    }

    #[test]
    fn a_file_that_is_not_an_archive_is_not_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let secret: String = (0..40)
            .map(|i| format!("user{i}:x:SECRET_MARKER:0:/home:/bin/sh\n"))
            .collect();
        let archive = dir.path().join("p_20250102_030405.tar");
        fs::write(&archive, &secret).unwrap();
        fs::write(manifest_of(&archive), r#"{"size_bytes":"SECRET_MARKER"}"#).unwrap();
        let report = verify_path(&archive).unwrap();
        let words = format!("{} {:?}", report.finding, report.detail);
        assert!(!words.contains("SECRET"), "{words}");
        assert!(words.contains("numeric field was not a number"), "{words}");
        assert!(words.contains("not a manifest"), "{words}");
        fs::remove_file(manifest_of(&archive)).unwrap();
        write_matching_manifest(&archive);
        let report = verify_path(&archive).unwrap();
        let words = format!("{} {:?}", report.finding, report.detail);
        assert!(
            matches!(report.finding, VerifyFinding::Unreadable(_)),
            "{words}"
        );
        assert!(!words.contains("SECRET"), "{words}");
    }

    #[test]
    fn a_missing_archive_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify_path(&dir.path().join("x_20250102_030405.tar.gz")).unwrap_err();
        assert!(
            err.to_string().contains("x_20250102_030405.tar.gz"),
            "{err}"
        );
    }
}
