//! A bound on the tar extension headers an archive may hold, and on a GNU sparse map.
//!
//! The tar reader reads a GNU long name or long link (`L`, `K`) and a pax header (`x`) whole
//! into memory, however large its header says it is: a 100 KB zstd archive whose long name
//! claims 3 GiB of one byte made the daemon allocate 3 GiB to verify, list or restore it, or
//! to repair its manifest at start. This reader watches the decoded stream as the tar reader
//! takes it, finds each header as the tar reader would, and fails the read where such a
//! header is larger than anything a real archive holds, before its data is read.
//!
//! It follows the tar reader's own layout rules (data rounded up to 512-byte blocks, a pax
//! `size` for the entry after it, the extension blocks of a GNU sparse entry) and stops
//! looking at the first header the tar reader itself would refuse or end on.

use std::io::{self, Read};

use crate::format::{TAR_BLOCK, tar_padding};

const BLOCK: usize = TAR_BLOCK;
/// A long name or link: far beyond any path (`PATH_MAX` is 4096), small enough to hold.
pub const MAX_LONG_NAME: u64 = 1 << 20;
/// A pax header: paths and times, and extended attributes, which may be larger.
pub const MAX_PAX_HEADER: u64 = 8 << 20;
/// The extension blocks of one GNU sparse entry's map: 21,508 regions with the header's four,
/// where backupd writes at most 3,994. The tar reader holds every region in memory (a 113 KB
/// archive of millions of empty ones took 1.5 GB) and reads them in a time that grows with
/// the square of their number (21,500: 0.5 s; 86,000: 8 s).
pub const MAX_SPARSE_EXTENSIONS: u32 = 1024;

/// Fails the read of a header that the tar reader would take whole into memory when it
/// is larger than [`MAX_LONG_NAME`] or [`MAX_PAX_HEADER`], or of a sparse map of more than
/// [`MAX_SPARSE_EXTENSIONS`] extension blocks.
#[derive(Debug)]
pub struct HeaderLimit<R> {
    inner: R,
    /// Where the stream is in the archive's layout.
    at: At,
    /// The next header's bytes, gathered across reads.
    block: Box<[u8; BLOCK]>,
    filled: usize,
    /// A pax header's data, gathered to find the `size` it gives the next entry.
    pax: Vec<u8>,
    /// That `size`, until the entry it belongs to.
    pax_size: Option<u64>,
    /// Where the stream's header blocks start, for messages.
    offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// In a header block.
    Header,
    /// In the extension block after the first `before` of a GNU sparse entry, whose data
    /// (`size` bytes) follows them.
    SparseExtension { size: u64, before: u32 },
    /// In a pax header's data (`left` bytes of it), then its padding.
    PaxData { left: u64, padding: u64 },
    /// In an entry's data and padding.
    Data { left: u64 },
    /// Past the end marker, or past a header the tar reader refuses: nothing more to watch.
    Done,
}

impl<R> HeaderLimit<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            at: At::Header,
            block: Box::new([0; BLOCK]),
            filled: 0,
            pax: Vec::new(),
            pax_size: None,
            offset: 0,
        }
    }

    /// Follows the layout through `bytes`, the next ones the tar reader gets.
    fn watch(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.at {
                At::Done => return Ok(()),
                At::Data { left } => {
                    let n = step(left, bytes.len());
                    bytes = &bytes[n..];
                    self.offset += n as u64;
                    self.at = if left == n as u64 {
                        At::Header
                    } else {
                        At::Data {
                            left: left - n as u64,
                        }
                    };
                }
                At::PaxData { left, padding } => {
                    let n = step(left, bytes.len());
                    self.pax.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.offset += n as u64;
                    if left == n as u64 {
                        self.pax_size = pax_value(&self.pax, "size");
                        self.pax.clear();
                        self.at = At::Data { left: padding };
                        if padding == 0 {
                            self.at = At::Header;
                        }
                    } else {
                        self.at = At::PaxData {
                            left: left - n as u64,
                            padding,
                        };
                    }
                }
                At::Header | At::SparseExtension { .. } => {
                    let n = (BLOCK - self.filled).min(bytes.len());
                    self.block[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
                    self.filled += n;
                    bytes = &bytes[n..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.at = match self.at {
                            At::SparseExtension { size, before } => {
                                self.after_sparse_extension(size, before)?
                            }
                            _ => self.after_header()?,
                        };
                        self.offset += BLOCK as u64;
                    }
                }
            }
        }
        Ok(())
    }

    /// Where a whole header block leads, as the tar reader reads it.
    fn after_header(&mut self) -> io::Result<At> {
        if self.block.iter().all(|b| *b == 0) {
            // The end-of-archive marker: the tar reader stops here.
            return Ok(At::Done);
        }
        let header = tar::Header::from_byte_slice(&self.block[..]);
        let Ok(size) = header.entry_size() else {
            return Ok(At::Done);
        };
        if !checksum_matches(&self.block) {
            return Ok(At::Done);
        }
        let kind = header.entry_type();
        let extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        // A pax `size` counts for the next entry that is not an extension header.
        let size = match self.pax_size {
            Some(pax) if !extension => pax,
            _ => size,
        };
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        let read_whole = recognized
            && (kind.is_gnu_longname() || kind.is_gnu_longlink() || kind.is_pax_local_extensions());
        if !read_whole {
            // The tar reader hands this entry out, and the pax header with it.
            self.pax_size = None;
        }
        if read_whole {
            let (what, limit) = if kind.is_pax_local_extensions() {
                ("pax header", MAX_PAX_HEADER)
            } else {
                ("long name", MAX_LONG_NAME)
            };
            if size > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the {what} at byte {} of the tar stream says it is {size} bytes; \
                         no archive needs more than {limit}",
                        self.offset
                    ),
                ));
            }
        }
        let padding = tar_padding(size);
        if recognized && kind.is_pax_local_extensions() {
            return Ok(match size {
                0 => data(padding),
                left => At::PaxData { left, padding },
            });
        }
        if kind.is_gnu_sparse() && !extension {
            let Some(gnu) = header.as_gnu() else {
                // The tar reader refuses a sparse entry without a GNU header.
                return Ok(At::Done);
            };
            if gnu.is_extended() {
                return Ok(At::SparseExtension { size, before: 0 });
            }
        }
        Ok(data(size.saturating_add(padding)))
    }

    /// Where a GNU sparse entry's extension block, after `before` others, leads: another
    /// one, or the entry's data.
    fn after_sparse_extension(&self, size: u64, before: u32) -> io::Result<At> {
        // `isextended`, after 21 sparse descriptors of 24 bytes.
        if self.block[504] == 0 {
            return Ok(data(size.saturating_add(tar_padding(size))));
        }
        let before = before + 1;
        if before == MAX_SPARSE_EXTENSIONS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the sparse map at byte {} of the tar stream goes on past {MAX_SPARSE_EXTENSIONS} \
                     extension blocks; no archive needs more",
                    self.offset
                ),
            ));
        }
        Ok(At::SparseExtension { size, before })
    }
}

impl<R: Read> Read for HeaderLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.watch(&buf[..n])?;
        Ok(n)
    }
}

fn step(left: u64, available: usize) -> usize {
    usize::try_from(left).map_or(available, |left| left.min(available))
}

fn data(left: u64) -> At {
    if left == 0 {
        At::Header
    } else {
        At::Data { left }
    }
}

/// The header checksum as the tar reader checks it: its own field counted as spaces.
fn checksum_matches(block: &[u8; BLOCK]) -> bool {
    let header = tar::Header::from_byte_slice(&block[..]);
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|b| u32::from(*b))
        .sum::<u32>()
        + 8 * 32;
    header.cksum().is_ok_and(|stored| stored == sum)
}

/// The number a pax header gives `key`, as the tar reader takes it (the first record of
/// that key; nothing if a record before it is malformed).
fn pax_value(pax: &[u8], key: &str) -> Option<u64> {
    for extension in tar::PaxExtensions::new(pax) {
        let extension = extension.ok()?;
        if extension.key() == Ok(key) {
            return extension.value().ok()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `archive` through the limit in small, uneven pieces, as decoders hand it out.
    fn entries_through_limit(archive: &[u8]) -> io::Result<Vec<(String, u64)>> {
        let pieces = Pieces {
            bytes: archive,
            at: 0,
            step: 0,
        };
        let mut tar = tar::Archive::new(HeaderLimit::new(pieces));
        let mut seen = Vec::new();
        for entry in tar.entries()? {
            let mut entry = entry?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let size = io::copy(&mut entry, &mut io::sink())?;
            seen.push((path, size));
        }
        Ok(seen)
    }

    struct Pieces<'a> {
        bytes: &'a [u8],
        at: usize,
        step: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.step = self.step % 7 + 1;
            let n = (self.step * 97)
                .min(buf.len())
                .min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn header(kind: tar::EntryType, path: &str, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_path(path).unwrap();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        header
    }

    /// A raw extension header of `kind` claiming `size` bytes, followed by `data` only.
    fn extension(out: &mut Vec<u8>, kind: u8, size: u64, data: &[u8]) {
        let mut header = header(tar::EntryType::new(kind), "././@LongLink", size);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }

    #[test]
    fn ordinary_archives_read_as_without_it() {
        let mut builder = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(300));
        for (i, size) in [0usize, 1, 511, 512, 513, 70_000].into_iter().enumerate() {
            let path = if i == 3 {
                long.clone()
            } else {
                format!("f{i}")
            };
            let data = vec![b'x'; size];
            let mut file = header(tar::EntryType::Regular, "x", size as u64);
            builder.append_data(&mut file, &path, &data[..]).unwrap();
        }
        // A pax header giving the next entry's path and size, as GNU tar writes for big files.
        let mut pax = tar::Builder::new(Vec::new());
        pax.append_pax_extensions([("path", b"pax/named".as_slice()), ("size", b"1000")])
            .unwrap();
        let pax = pax.into_inner().unwrap();
        let mut archive = builder.into_inner().unwrap();
        archive.truncate(archive.len() - 2 * BLOCK);
        archive.extend_from_slice(&pax[..pax.len() - 2 * BLOCK]);
        let mut file = header(tar::EntryType::Regular, "short", 0);
        file.set_cksum();
        archive.extend_from_slice(file.as_bytes());
        archive.extend_from_slice(&[b'y'; 1000]);
        archive.resize(archive.len().next_multiple_of(BLOCK) + 2 * BLOCK, 0);

        let plain = {
            let mut tar = tar::Archive::new(&archive[..]);
            tar.entries()
                .unwrap()
                .map(|e| {
                    let mut e = e.unwrap();
                    let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                    (path, io::copy(&mut e, &mut io::sink()).unwrap())
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(plain.len(), 7);
        assert_eq!(plain[3].0, long);
        assert_eq!(plain[6], ("pax/named".to_owned(), 1000));
        assert_eq!(entries_through_limit(&archive).unwrap(), plain);
    }

    #[test]
    fn a_long_name_or_pax_header_larger_than_any_archive_needs_fails_before_it_is_read() {
        for (kind, limit) in [
            (b'L', MAX_LONG_NAME),
            (b'K', MAX_LONG_NAME),
            (b'x', MAX_PAX_HEADER),
        ] {
            let mut archive = Vec::new();
            let mut file = header(tar::EntryType::Regular, "first", 3);
            file.set_cksum();
            archive.extend_from_slice(file.as_bytes());
            archive.extend_from_slice(b"abc");
            archive.resize(BLOCK * 2, 0);
            // The header alone: its data need not be there for the size to be refused.
            extension(&mut archive, kind, limit + 1, &[]);
            let error = entries_through_limit(&archive).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
            let text = error.to_string();
            assert!(
                text.contains(&format!("says it is {} bytes", limit + 1)),
                "{text}"
            );
            assert!(text.contains("at byte 1024"), "{text}");

            // At the limit it is read as before.
            let mut archive = Vec::new();
            extension(&mut archive, kind, limit, &vec![b'a'; limit as usize]);
            let mut file = header(tar::EntryType::Regular, "after", 0);
            file.set_cksum();
            archive.extend_from_slice(file.as_bytes());
            archive.resize(archive.len() + 2 * BLOCK, 0);
            let result = entries_through_limit(&archive);
            assert!(
                !result
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("no archive needs")),
                "{result:?}"
            );
        }
    }

    /// A GNU sparse entry of an all-hole file whose map goes on for `extensions` blocks of
    /// empty regions, then its end.
    fn sparse_with_extensions(extensions: u32) -> Vec<u8> {
        let mut header = header(tar::EntryType::GNUSparse, "holes", 0);
        let gnu = header.as_gnu_mut().unwrap();
        gnu.set_real_size(4096);
        gnu.set_is_extended(true);
        header.set_cksum();
        let mut archive = header.as_bytes().to_vec();
        for i in 1..=extensions {
            let mut block = tar::GnuExtSparseHeader::new();
            if i == extensions {
                block.sparse_mut()[0].set_offset(4096);
                block.sparse_mut()[0].set_length(0);
            }
            block.set_is_extended(i < extensions);
            archive.extend_from_slice(block.as_bytes());
        }
        archive.resize(archive.len() + 2 * BLOCK, 0);
        archive
    }

    #[test]
    fn a_sparse_map_longer_than_any_archive_needs_fails_as_it_is_read() {
        let error =
            entries_through_limit(&sparse_with_extensions(MAX_SPARSE_EXTENSIONS + 1)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        assert!(
            error.to_string().contains("past 1024 extension blocks"),
            "{error}"
        );
        // At the limit it is read as before.
        assert_eq!(
            entries_through_limit(&sparse_with_extensions(MAX_SPARSE_EXTENSIONS)).unwrap(),
            [("holes".to_owned(), 4096)]
        );
    }

    #[test]
    fn a_header_in_file_data_is_data() {
        // A tar inside a file of the archive, with a huge long name: only data here.
        let mut inner = Vec::new();
        extension(&mut inner, b'L', 1 << 40, &[]);
        let mut builder = tar::Builder::new(Vec::new());
        let mut file = header(tar::EntryType::Regular, "x", inner.len() as u64);
        builder
            .append_data(&mut file, "inner.tar", &inner[..])
            .unwrap();
        let archive = builder.into_inner().unwrap();
        assert_eq!(
            entries_through_limit(&archive).unwrap(),
            [("inner.tar".to_owned(), inner.len() as u64)]
        );
    }
}
