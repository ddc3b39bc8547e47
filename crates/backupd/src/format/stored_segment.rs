//! A few plain bytes framed by the codec but stored uncompressed, so they can be rewritten in
//! place once the stream has moved on: the tar header of a command source, whose size is known
//! only after its output has streamed into the archive.
//!
//! Each codec can end its stream and start another that readers join to the first: gzip
//! members (RFC 1952 2.2), zstd frames (RFC 8878 3.1), and for no compression nothing at all.
//! The segment is such a stream of its own, holding the bytes in the codec's "stored" form:
//! a deflate stored block (RFC 1951 3.2.4) in a gzip member, a raw block in a zstd frame
//! without checksum. Its length never depends on the bytes, so rewriting them changes only
//! them and, for gzip, the member's CRC-32.

use std::io::{self, Write};

use flate2::Crc;
use proto::Codec;

/// The plain bytes a segment holds: one tar header block.
pub const SEGMENT_LEN: usize = 512;

const LEN_U16: u16 = SEGMENT_LEN as u16;

/// Gzip member header: no name, no time, "unknown" OS (RFC 1952 2.3).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Zstd frame header: magic; descriptor 0x60 = 2-byte content size, single segment, no
/// checksum, no dictionary; content size minus 256 (RFC 8878 3.1.1.1.2 and .4).
const ZSTD_HEADER: [u8; 7] = [0x28, 0xb5, 0x2f, 0xfd, 0x60, 0x00, 0x01];

/// Where a written segment lies in the output, counted from the segment's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSegment {
    codec: Codec,
}

/// Bytes to write over the output at `offset` (from the segment's start).
#[derive(Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

impl StoredSegment {
    /// Writes `plain` as a complete stream of `codec` to `out`.
    pub fn write(
        codec: Codec,
        plain: &[u8; SEGMENT_LEN],
        out: &mut impl Write,
    ) -> io::Result<Self> {
        let segment = StoredSegment { codec };
        match codec {
            Codec::None => out.write_all(plain)?,
            Codec::Gzip => {
                out.write_all(&GZIP_HEADER)?;
                // BFINAL = 1, BTYPE = 00 (stored), then LEN and its complement.
                out.write_all(&[0x01])?;
                out.write_all(&LEN_U16.to_le_bytes())?;
                out.write_all(&(!LEN_U16).to_le_bytes())?;
                out.write_all(plain)?;
                out.write_all(&crc32(plain).to_le_bytes())?;
                out.write_all(&u32::from(LEN_U16).to_le_bytes())?;
            }
            Codec::Zstd => {
                out.write_all(&ZSTD_HEADER)?;
                // Block header: last block, raw, size 512 (3 bytes, little-endian).
                let block = 1u32 | (u32::from(LEN_U16) << 3);
                out.write_all(&block.to_le_bytes()[..3])?;
                out.write_all(plain)?;
            }
        }
        Ok(segment)
    }

    /// Where the plain bytes start, from the segment's first byte.
    fn plain_offset(self) -> u64 {
        match self.codec {
            Codec::None => 0,
            Codec::Gzip => (GZIP_HEADER.len() + 5) as u64,
            Codec::Zstd => (ZSTD_HEADER.len() + 3) as u64,
        }
    }

    /// What to write over the segment so that it holds `plain` instead.
    pub fn rewrites(self, plain: &[u8; SEGMENT_LEN]) -> Vec<Rewrite> {
        let start = self.plain_offset();
        let mut rewrites = vec![Rewrite {
            offset: start,
            bytes: plain.to_vec(),
        }];
        if self.codec == Codec::Gzip {
            rewrites.push(Rewrite {
                offset: start + SEGMENT_LEN as u64,
                bytes: crc32(plain).to_le_bytes().to_vec(),
            });
        }
        rewrites
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = Crc::new();
    crc.update(bytes);
    crc.sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::codec::{Encoder, decoder};
    use proto::Compression;
    use std::io::Read;

    fn block(fill: u8) -> [u8; SEGMENT_LEN] {
        let mut plain = [fill; SEGMENT_LEN];
        plain[0] = b'<';
        plain[SEGMENT_LEN - 1] = b'>';
        plain
    }

    /// Compressed text, then a segment of `placeholder`, then more compressed text; the
    /// segment rewritten to `real` afterwards.
    fn stream_with_rewritten_segment(codec: Codec) -> Vec<u8> {
        let mut enc = Encoder::new(Compression::of(codec), Vec::new()).unwrap();
        enc.write_all(b"before ".repeat(1000).as_slice()).unwrap();
        enc.end_segment().unwrap();
        let start = enc.get_mut().unwrap().len() as u64;
        let segment = StoredSegment::write(codec, &block(b'?'), enc.get_mut().unwrap()).unwrap();
        enc.write_all(b" after".repeat(1000).as_slice()).unwrap();
        let mut out = enc.finish().unwrap();
        for rewrite in segment.rewrites(&block(b'!')) {
            let at = usize::try_from(start + rewrite.offset).unwrap();
            out[at..at + rewrite.bytes.len()].copy_from_slice(&rewrite.bytes);
        }
        out
    }

    #[test]
    fn a_rewritten_segment_reads_back_in_every_codec() {
        for codec in Codec::ALL {
            let out = stream_with_rewritten_segment(codec);
            let mut back = Vec::new();
            decoder(Some(codec), &out[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            let mut expected = b"before ".repeat(1000);
            expected.extend_from_slice(&block(b'!'));
            expected.extend(b" after".repeat(1000));
            assert_eq!(back, expected, "{codec}");
        }
    }

    #[test]
    fn the_command_line_tools_accept_the_rewritten_stream() {
        for (codec, tool) in [(Codec::Gzip, "gzip"), (Codec::Zstd, "zstd")] {
            let out = stream_with_rewritten_segment(codec);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("stream");
            std::fs::write(&path, &out).unwrap();
            let status = std::process::Command::new(tool)
                .args(["-t", "-q"])
                .arg(&path)
                .status();
            match status {
                Ok(status) => assert!(status.success(), "{tool} -t refused the stream"),
                Err(e) if std::env::var_os("CI").is_none() => {
                    eprintln!("skipped: {tool} not runnable: {e}");
                }
                Err(e) => panic!("{tool}: {e}"),
            }
        }
    }

    #[test]
    fn a_segment_has_the_same_length_whatever_it_holds() {
        for codec in Codec::ALL {
            let mut a = Vec::new();
            let mut b = Vec::new();
            StoredSegment::write(codec, &[0; SEGMENT_LEN], &mut a).unwrap();
            StoredSegment::write(codec, &[0xff; SEGMENT_LEN], &mut b).unwrap();
            assert_eq!(a.len(), b.len(), "{codec}");
        }
    }
}
