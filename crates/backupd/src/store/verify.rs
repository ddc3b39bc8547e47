//! Verifying an archive: its bytes against the manifest's SHA-256 and size, then every
//! entry read to the end through the decompressor and the tar reader.
//!
//! The outcome is a report, not an error: a damaged archive is a finding to show the user.

use std::io;
use std::path::{Path, PathBuf};

use super::archive_list::read_manifest;
use super::checksum::{Integrity, check_integrity};
use super::decode::open_tar_stream;
use super::error::StoreError;
use crate::engine::Manifest;
use crate::engine::naming::manifest_path_for;

const BLOCK: u64 = 512;
/// Two zero blocks end a tar archive.
const END_MARKER: u64 = 2 * BLOCK;

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyStatus {
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

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub archive: PathBuf,
    pub manifest_path: PathBuf,
    pub status: VerifyStatus,
    /// Tar entries read completely before the end or the first problem.
    pub entries: u64,
    /// Content bytes of those entries.
    pub content_bytes: u64,
    /// More words for a human: the size difference, or whether the contents of an archive
    /// without a (valid) manifest read.
    pub detail: Option<String>,
}

/// Verifies one archive. Fails only when the archive itself cannot be opened.
pub fn verify(archive: &Path) -> Result<VerifyReport, StoreError> {
    std::fs::metadata(archive).map_err(|source| StoreError::ReadArchive {
        path: archive.to_owned(),
        source,
    })?;
    let manifest_path = manifest_path_for(archive);
    let mut report = VerifyReport {
        archive: archive.to_owned(),
        manifest_path: manifest_path.clone(),
        status: VerifyStatus::Ok,
        entries: 0,
        content_bytes: 0,
        detail: None,
    };

    let manifest = if manifest_path.exists() {
        match read_manifest(&manifest_path) {
            Ok(manifest) => Some(manifest),
            Err(e) => {
                report.status = VerifyStatus::ManifestInvalid(e.to_string());
                None
            }
        }
    } else {
        report.status = VerifyStatus::ManifestMissing;
        None
    };
    if let Some(manifest) = &manifest {
        let integrity =
            check_integrity(archive, manifest).map_err(|source| StoreError::ReadArchive {
                path: archive.to_owned(),
                source,
            })?;
        if let Integrity::Differs {
            expected,
            actual,
            detail,
        } = integrity
        {
            report.status = VerifyStatus::ChecksumMismatch { expected, actual };
            report.detail = Some(detail);
        }
    }

    let read = read_through(archive, manifest.as_ref(), &mut report);
    match (&report.status, read) {
        (VerifyStatus::Ok, Ok(())) => {}
        (VerifyStatus::Ok, Err(problem)) => report.status = problem,
        // The manifest already condemned or could not vouch for the archive; whether the
        // contents read is still worth saying.
        (_, outcome) => {
            let reads = match outcome {
                Ok(()) => format!("contents read: {} entries", report.entries),
                Err(VerifyStatus::Truncated(why)) => format!("contents truncated: {why}"),
                Err(VerifyStatus::Unreadable(why)) => format!("contents unreadable: {why}"),
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

/// Reads every entry's data to the end and checks the end-of-archive marker. Returns the
/// problem as a status.
fn read_through(
    archive: &Path,
    manifest: Option<&Manifest>,
    report: &mut VerifyReport,
) -> Result<(), VerifyStatus> {
    let stream = open_tar_stream(archive, manifest).map_err(classify)?;
    let mut tar = tar::Archive::new(stream);
    // Where the last entry's padded data ends, in the decompressed stream.
    let mut end = 0u64;
    for entry in tar.entries().map_err(classify)? {
        let mut entry = entry.map_err(classify)?;
        let size = entry.size();
        let copied = io::copy(&mut entry, &mut io::sink()).map_err(classify)?;
        if copied != size {
            return Err(VerifyStatus::Truncated(format!(
                "{}: {copied} of {size} bytes",
                String::from_utf8_lossy(&entry.path_bytes())
            )));
        }
        end = entry.raw_file_position() + size.next_multiple_of(BLOCK);
        report.entries += 1;
        report.content_bytes += size;
    }
    // The tar reader stops at the first zero block (or at a clean end of input, which a
    // truncation on a block boundary looks like); the rest of the stream must still
    // decompress, and the end marker must be there.
    let mut stream = tar.into_inner();
    io::copy(&mut stream, &mut io::sink()).map_err(classify)?;
    if stream.count() < end + END_MARKER {
        return Err(VerifyStatus::Truncated(format!(
            "tar stream ends after {} bytes without its end-of-archive marker",
            stream.count()
        )));
    }
    Ok(())
}

/// Early end of input is truncation; anything else is corruption. The tar crate reports a
/// short header block only through its message, hence the text match.
fn classify(error: io::Error) -> VerifyStatus {
    let text = error.to_string();
    let short = error.kind() == io::ErrorKind::UnexpectedEof
        || text.contains("failed to read entire block")
        || text.contains("incomplete frame");
    if short {
        VerifyStatus::Truncated(text)
    } else {
        VerifyStatus::Unreadable(text)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::engine::Compression;
    use crate::store::test_support::{backup, build_tree, write_matching_manifest};

    fn made(compression: Compression) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let src = build_tree(dir.path());
        let dest = dir.path().join("backups");
        fs::create_dir(&dest).unwrap();
        let outcome = backup(&src, &dest, "tree", compression, "20250102_030405");
        (dir, outcome.archive)
    }

    fn gzip() -> (tempfile::TempDir, PathBuf) {
        made(Compression::default())
    }

    #[test]
    fn valid_archives_of_every_compression_verify() {
        for compression in [
            Compression::default(),
            Compression::Zstd { level: 3 },
            Compression::None,
        ] {
            let (_dir, archive) = made(compression);
            let report = verify(&archive).unwrap();
            assert_eq!(
                report.status,
                VerifyStatus::Ok,
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
        let mut bytes = fs::read(&archive).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        fs::write(&archive, &bytes).unwrap();
        let report = verify(&archive).unwrap();
        let VerifyStatus::ChecksumMismatch { expected, actual } = &report.status else {
            panic!("{report:?}");
        };
        assert_ne!(expected, actual);
        assert_eq!(actual.len(), 64);
        assert!(report.detail.unwrap().contains("contents"));
    }

    #[test]
    fn a_size_difference_is_reported_in_the_detail() {
        let (_dir, archive) = gzip();
        let mut bytes = fs::read(&archive).unwrap();
        bytes.push(0);
        fs::write(&archive, &bytes).unwrap();
        let report = verify(&archive).unwrap();
        assert!(matches!(
            report.status,
            VerifyStatus::ChecksumMismatch { .. }
        ));
        assert!(report.detail.unwrap().contains("size"));
    }

    #[test]
    fn truncation_is_found_even_with_a_matching_manifest() {
        for compression in [
            Compression::default(),
            Compression::Zstd { level: 3 },
            Compression::None,
        ] {
            let (_dir, archive) = made(compression);
            let bytes = fs::read(&archive).unwrap();
            fs::write(&archive, &bytes[..bytes.len() * 2 / 3]).unwrap();
            write_matching_manifest(&archive);
            let report = verify(&archive).unwrap();
            assert!(
                matches!(report.status, VerifyStatus::Truncated(_)),
                "{compression:?}: {report:?}"
            );
        }
    }

    #[test]
    fn a_plain_tar_cut_on_a_block_boundary_is_truncated() {
        let (_dir, archive) = made(Compression::None);
        let bytes = fs::read(&archive).unwrap();
        // Drop the end marker and padding: every entry is still whole.
        let cut = bytes.len() - 4096;
        let cut = cut - cut % 512;
        fs::write(&archive, &bytes[..cut]).unwrap();
        write_matching_manifest(&archive);
        let report = verify(&archive).unwrap();
        assert!(
            matches!(report.status, VerifyStatus::Truncated(_)),
            "{report:?}"
        );
    }

    #[test]
    fn a_gzip_missing_only_its_trailer_is_truncated() {
        let (_dir, archive) = gzip();
        let bytes = fs::read(&archive).unwrap();
        fs::write(&archive, &bytes[..bytes.len() - 4]).unwrap();
        write_matching_manifest(&archive);
        let report = verify(&archive).unwrap();
        assert!(
            matches!(report.status, VerifyStatus::Truncated(_)),
            "{report:?}"
        );
    }

    #[test]
    fn a_missing_manifest_is_reported_with_whether_it_reads() {
        let (_dir, archive) = gzip();
        fs::remove_file(manifest_path_for(&archive)).unwrap();
        let report = verify(&archive).unwrap();
        assert_eq!(report.status, VerifyStatus::ManifestMissing);
        assert!(report.detail.unwrap().starts_with("contents read"));
    }

    #[test]
    fn an_invalid_manifest_is_reported() {
        let (_dir, archive) = gzip();
        fs::write(manifest_path_for(&archive), b"{ not json").unwrap();
        let report = verify(&archive).unwrap();
        assert!(matches!(report.status, VerifyStatus::ManifestInvalid(_)));
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
            let report = verify(&archive).unwrap();
            assert!(
                matches!(report.status, VerifyStatus::Unreadable(_)),
                "{name}: {report:?}"
            );
            fs::remove_file(&archive).unwrap();
        }
    }

    #[test]
    fn a_missing_archive_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify(&dir.path().join("x_20250102_030405.tar.gz")).unwrap_err();
        assert!(
            err.to_string().contains("x_20250102_030405.tar.gz"),
            "{err}"
        );
    }
}
