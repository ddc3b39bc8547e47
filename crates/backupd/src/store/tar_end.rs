//! The end of an archive's tar stream, which every reader that vouches for an archive checks
//! the same way (verify, restore, and the repair of a lost manifest), so that they agree on
//! what is whole.
//!
//! The tar reader stops at the first zero block; a decoder sees trailing garbage, a cut or
//! corrupt last gzip member or zstd frame, or a damaged last age chunk only when it is read
//! to the end. So the rest of the stream must still decode, and be long enough to hold the
//! end-of-archive marker after the last entry (a clean cut between gzip members or on a
//! block boundary loses only that). Bytes that decode after the marker are ignored, as GNU
//! tar ignores them: in an uncompressed archive nothing but the manifest vouches for them.

use std::io::{self, Read};

use crate::format::CountingReader;

const BLOCK: u64 = 512;
/// Two zero blocks end a tar archive.
const END_MARKER: u64 = 2 * BLOCK;

/// Why an archive's stream is not whole after its last entry.
#[derive(Debug, thiserror::Error)]
pub(super) enum TarEndError {
    /// The decoder's (or the stored bytes') error, kept whole for callers that classify it.
    #[error("the archive does not decode to its end: {0}")]
    Undecodable(#[source] io::Error),
    #[error("tar stream ends after {decoded} bytes without its end-of-archive marker")]
    NoEndMarker { decoded: u64 },
}

impl From<TarEndError> for io::Error {
    fn from(error: TarEndError) -> Self {
        let kind = match &error {
            TarEndError::Undecodable(source) => source.kind(),
            TarEndError::NoEndMarker { .. } => io::ErrorKind::UnexpectedEof,
        };
        io::Error::new(kind, error)
    }
}

/// Reads what the tar reader left of `tar`'s stream to its end, once it has given out its
/// last entry.
///
/// The tar reader ends on the first zero block, or at the end of the stream: so it has read
/// exactly past that block, or to the end. Where the entries end is not known from them: a
/// GNU sparse entry's stored data is not its size, and its extension blocks come first.
pub(super) fn read_past_entries<R: Read>(
    tar: tar::Archive<CountingReader<R>>,
) -> Result<(), TarEndError> {
    let mut stream = tar.into_inner();
    let entries_end = stream.count().saturating_sub(BLOCK);
    io::copy(&mut stream, &mut io::sink()).map_err(TarEndError::Undecodable)?;
    if stream.count() < entries_end + END_MARKER {
        return Err(TarEndError::NoEndMarker {
            decoded: stream.count(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proto::{Codec, Compression};

    use super::*;
    use crate::format::{Encoder, decoder};

    /// A tar of one 1000-byte file, as `tar::Builder` ends it (two zero blocks).
    fn tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1000);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "a.txt", &[7u8; 1000][..])
            .unwrap();
        builder.into_inner().unwrap()
    }

    fn compressed(codec: Codec, plain: &[u8]) -> Vec<u8> {
        let mut encoder = Encoder::new(Compression::of(codec), Vec::new()).unwrap();
        encoder.write_all(plain).unwrap();
        encoder.finish().unwrap()
    }

    /// Reads `bytes` as `codec` the way verify and restore do: the entries, then the rest.
    fn read(codec: Codec, bytes: &[u8]) -> Result<(), TarEndError> {
        let stream = CountingReader::new(decoder(Some(codec), bytes).unwrap());
        let mut tar = tar::Archive::new(stream);
        for entry in tar.entries().unwrap() {
            io::copy(&mut entry.unwrap(), &mut io::sink()).unwrap();
        }
        read_past_entries(tar)
    }

    #[test]
    fn a_whole_archive_of_every_codec_reads_to_its_end() {
        for codec in Codec::ALL {
            read(codec, &compressed(codec, &tar())).unwrap();
        }
    }

    #[test]
    fn bytes_after_a_compressed_stream_do_not_decode() {
        for codec in [Codec::Gzip, Codec::Zstd] {
            let mut bytes = compressed(codec, &tar());
            bytes.extend_from_slice(b"trailing garbage, no member or frame");
            let error = read(codec, &bytes).unwrap_err();
            assert!(matches!(error, TarEndError::Undecodable(_)), "{codec}");
            assert!(
                error.to_string().starts_with("the archive does not decode"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_cut_member_or_frame_after_the_stream_is_an_early_end() {
        for codec in [Codec::Gzip, Codec::Zstd] {
            let whole = compressed(codec, &tar());
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&whole[..whole.len() / 2]);
            let error = read(codec, &bytes).unwrap_err();
            let TarEndError::Undecodable(source) = &error else {
                panic!("{codec}: {error}");
            };
            // Verify tells truncation by these (`classify`).
            let early = source.kind() == io::ErrorKind::UnexpectedEof
                || source.to_string().contains("incomplete frame");
            assert!(early, "{codec}: {source:?}");
        }
    }

    #[test]
    fn a_stream_cut_after_the_last_entry_lacks_the_end_marker() {
        let plain = tar();
        // The header and the padded data of the one entry, nothing after.
        let entries = 512 + 1024;
        for codec in Codec::ALL {
            let bytes = compressed(codec, &plain[..entries]);
            let error = read(codec, &bytes).unwrap_err();
            assert!(
                matches!(error, TarEndError::NoEndMarker { decoded } if decoded == entries as u64),
                "{codec}: {error}"
            );
            assert_eq!(io::Error::from(error).kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn one_zero_block_is_half_an_end_marker() {
        let plain = tar();
        let entries = 512 + 1024;
        for codec in Codec::ALL {
            let bytes = compressed(codec, &plain[..entries + 512]);
            let error = read(codec, &bytes).unwrap_err();
            assert!(
                matches!(error, TarEndError::NoEndMarker { decoded } if decoded == entries as u64 + 512),
                "{codec}: {error}"
            );
        }
    }

    #[test]
    fn bytes_that_decode_after_the_end_marker_are_ignored_as_gnu_tar_does() {
        let mut plain = tar();
        plain.extend_from_slice(b"not a header, after the end");
        for codec in Codec::ALL {
            read(codec, &compressed(codec, &plain)).unwrap();
        }
    }
}
