//! Files with holes (disk images, database files): where their data lies, found with
//! `SEEK_DATA` and `SEEK_HOLE`, and the GNU sparse entry (`tar --sparse`'s old GNU format)
//! that stores only that data. Its holes are neither read nor stored, and a restore makes
//! them holes again. GNU tar, bsdtar and Python's `tarfile` read such entries.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use rustix::fs::{SeekFrom, Stat};
use rustix::io::Errno;
use tar::{GnuExtSparseHeader, GnuSparseHeader, Header};

use crate::format::TAR_BLOCK;

/// Whether a backup stores a file's holes as holes, or reads them as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Holes {
    /// A file with holes becomes a GNU sparse entry.
    #[default]
    Kept,
    /// Every file becomes a plain entry, its holes read as zeros: for tar readers that do
    /// not know GNU sparse entries.
    ReadAsZeros,
}

/// A part of a file that holds data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
}

impl Region {
    fn end(self) -> u64 {
        self.offset + self.len
    }
}

/// Regions a map holds at most: 190 extension blocks, 95 KiB of header. Past them, the rest
/// of the file is one region, its holes read as zeros.
const MOST_REGIONS: usize = 4 + 21 * 190;

/// The data regions of `file` (`meta` its `fstat`), if it has holes; `None` for a file with
/// every block allocated (most files: no system call spent), or on a file system that cannot
/// tell where its holes are.
///
/// Each region starts and ends on a 512-byte boundary (the last one may end at the end of
/// the file), as every region but the last of a GNU sparse entry must.
pub fn data_regions(file: &File, meta: &Stat) -> Option<Vec<Region>> {
    let size = u64::try_from(meta.st_size).ok()?;
    let allocated = u64::try_from(meta.st_blocks).ok()?.saturating_mul(512);
    if allocated >= size {
        return None;
    }
    regions_within(file, size)
}

/// The data regions of the first `size` bytes of `file`, which may have grown or shrunk
/// since `size` was taken: what lies past it is not looked at.
fn regions_within(file: &File, size: u64) -> Option<Vec<Region>> {
    let mut regions: Vec<Region> = Vec::new();
    let mut from = 0;
    while from < size {
        let data = match rustix::fs::seek(file, SeekFrom::Data(from)) {
            // Data only past `size` (the file grew since), or none past `from` (it may have
            // shrunk): the rest is a hole.
            Ok(data) if data >= size => break,
            Ok(data) => data,
            Err(Errno::NXIO) => break,
            Err(_) => return None,
        };
        let hole = rustix::fs::seek(file, SeekFrom::Hole(data)).ok()?;
        if hole <= data {
            return None;
        }
        let start = data - data % 512;
        let end = hole.min(size).next_multiple_of(512).min(size);
        let full = regions.len() == MOST_REGIONS;
        match regions.last_mut() {
            Some(last) if start <= last.end() => last.len = end.max(last.end()) - last.offset,
            Some(last) if full => {
                last.len = size - last.offset;
                break;
            }
            _ => regions.push(Region {
                offset: start,
                len: end - start,
            }),
        }
        from = hole;
    }
    let stored: u64 = regions.iter().map(|r| r.len).sum();
    (stored < size).then_some(regions)
}

/// Makes `header` (made for a file of `size` bytes) that of a GNU sparse entry of the file's
/// `regions`. Returns the bytes of data the entry stores, and the extension blocks that
/// follow the header where the map does not fit it.
pub fn make_sparse(header: &mut Header, regions: &[Region], size: u64) -> (u64, Vec<u8>) {
    let stored = regions.iter().map(|r| r.len).sum();
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_size(stored);
    // The map ends where the file does: a final empty region tells a trailing hole.
    let trailing_hole = regions.last().map_or(size > 0, |last| last.end() < size);
    let end = trailing_hole.then_some(Region {
        offset: size,
        len: 0,
    });
    let mut map = regions.iter().copied().chain(end);
    let mut extensions = Vec::new();
    let Some(gnu) = header.as_gnu_mut() else {
        return (stored, extensions);
    };
    gnu.set_real_size(size);
    fill(&mut gnu.sparse, &mut map);
    let mut more = map.peekable();
    gnu.set_is_extended(more.peek().is_some());
    while more.peek().is_some() {
        let mut block = GnuExtSparseHeader::new();
        fill(block.sparse_mut(), &mut more);
        block.set_is_extended(more.peek().is_some());
        extensions.extend_from_slice(block.as_bytes());
    }
    debug_assert_eq!(extensions.len() % TAR_BLOCK, 0);
    (stored, extensions)
}

fn fill(slots: &mut [GnuSparseHeader], map: &mut impl Iterator<Item = Region>) {
    for (slot, region) in slots.iter_mut().zip(map) {
        slot.set_offset(region.offset);
        slot.set_length(region.len);
    }
}

/// Reads a file's data: all of it, or its data regions one after the other. Either way it
/// then reads on past the file's end, so that a file that grew is noticed.
#[derive(Debug)]
pub struct DataReader<'f> {
    file: &'f File,
    regions: Vec<Region>,
    /// The region being read, and how far into it.
    next: usize,
    done: u64,
    /// Where reading goes on once the regions are read.
    then: u64,
}

impl<'f> DataReader<'f> {
    /// The whole file, from its start.
    pub fn whole(file: &'f File) -> Self {
        Self::regions(file, Vec::new(), 0)
    }

    /// The `regions` of a file of `size` bytes.
    pub fn regions(file: &'f File, regions: Vec<Region>, size: u64) -> Self {
        DataReader {
            file,
            regions,
            next: 0,
            done: 0,
            then: size,
        }
    }

    /// Where in the file the next read starts: once a read found the end of the file, its
    /// size then.
    pub fn position(&self) -> u64 {
        match self.regions.get(self.next) {
            Some(region) => region.offset + self.done,
            None => self.then,
        }
    }
}

impl Read for DataReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(region) = self.regions.get(self.next) {
            let left = region.len - self.done;
            if left == 0 {
                self.next += 1;
                self.done = 0;
                continue;
            }
            let want = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
            let n = self
                .file
                .read_at(&mut buf[..want], region.offset + self.done)?;
            self.done += n as u64;
            return Ok(n);
        }
        let n = self.file.read_at(buf, self.then)?;
        self.then += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    /// A file `name` of `size` bytes with `data` written at each of `at`.
    fn holey(dir: &std::path::Path, name: &str, size: u64, at: &[u64], data: &[u8]) -> File {
        let mut file = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(dir.join(name))
            .unwrap();
        file.set_len(size).unwrap();
        for &offset in at {
            file.seek(io::SeekFrom::Start(offset)).unwrap();
            file.write_all(data).unwrap();
        }
        file
    }

    fn regions_of(file: &File) -> Option<Vec<Region>> {
        data_regions(file, &rustix::fs::fstat(file).unwrap())
    }

    #[test]
    fn data_regions_are_found_on_512_byte_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let mib = 1 << 20;
        let written = [mib, 4 * mib + 10];
        // Found before and after the data reaches the disk.
        let file = holey(dir.path(), "two", 8 * mib + 100, &written, b"data");
        for synced in [false, true] {
            if synced {
                file.sync_all().unwrap();
            }
            let regions = regions_of(&file).unwrap();
            assert_eq!(regions.len(), 2, "{regions:?}");
            for (region, at) in regions.iter().zip(written) {
                assert!(region.offset <= at && at + 4 <= region.end(), "{regions:?}");
                assert_eq!(
                    (region.offset % 512, region.len % 512),
                    (0, 0),
                    "{regions:?}"
                );
                // The file system's block at most, not the whole file.
                assert!(region.len <= 64 << 10, "{regions:?}");
            }
        }

        let all_hole = holey(dir.path(), "hole", 8 * mib, &[], b"");
        assert_eq!(regions_of(&all_hole), Some(Vec::new()));
        // Ending in data: the last region ends with the file, not on a boundary past it.
        let size = 2 * mib + 100;
        let ends_in_data = holey(dir.path(), "end", size, &[size - 10], b"0123456789");
        let regions = regions_of(&ends_in_data).unwrap();
        assert_eq!(regions.last().map(|r| r.end()), Some(size), "{regions:?}");

        std::fs::write(dir.path().join("full"), vec![1; 3 * 4096 + 7]).unwrap();
        let full = File::open(dir.path().join("full")).unwrap();
        assert_eq!(regions_of(&full), None);
    }

    #[test]
    fn data_past_the_size_taken_is_not_mapped() {
        // As when the file grows between its `fstat` and its map.
        let dir = tempfile::tempdir().unwrap();
        let mib = 1 << 20;
        let file = holey(dir.path(), "grown", 4 * mib, &[mib, 3 * mib], &[1; 4096]);
        let regions = regions_within(&file, 2 * mib).unwrap();
        assert_eq!(regions.len(), 1, "{regions:?}");
        assert!(regions[0].offset <= mib && regions[0].end() <= 2 * mib);
        // Past its data, at a size inside a data region: cut there.
        let regions = regions_within(&file, 3 * mib + 100).unwrap();
        assert_eq!(regions.last().map(|r| r.end()), Some(3 * mib + 100));
        assert!(regions.iter().all(|r| r.len > 0), "{regions:?}");
    }

    #[test]
    fn past_the_most_regions_a_map_holds_the_rest_is_one_region() {
        let dir = tempfile::tempdir().unwrap();
        let count = MOST_REGIONS as u64 + 10;
        let at: Vec<u64> = (0..count).map(|i| i * 8192).collect();
        let file = holey(dir.path(), "many", count * 8192, &at, &[7; 4096]);
        let regions = regions_of(&file).unwrap();
        assert_eq!(regions.len(), MOST_REGIONS);
        let last = regions[MOST_REGIONS - 1];
        assert_eq!(
            (last.offset, last.end()),
            (8192 * (count - 11), count * 8192)
        );
        assert!(regions[..MOST_REGIONS - 1].iter().all(|r| r.len == 4096));
    }

    #[test]
    fn a_data_reader_reads_the_regions_then_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let regions_again = || {
            vec![
                Region {
                    offset: 512,
                    len: 1024,
                },
                Region {
                    offset: 3072,
                    len: 512,
                },
            ]
        };
        let mut read = Vec::new();
        DataReader::regions(&file, regions_again(), 3584)
            .read_to_end(&mut read)
            .unwrap();
        let mut expected = bytes[512..1536].to_vec();
        // Past the regions, from the size given on: as for a file that grew.
        expected.extend_from_slice(&bytes[3072..]);
        assert_eq!(read, expected);

        let mut whole = Vec::new();
        DataReader::whole(&file).read_to_end(&mut whole).unwrap();
        assert_eq!(whole, bytes);

        // Cut short inside the last region: the reads end where the file does.
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        writer.set_len(3200).unwrap();
        let mut cut = DataReader::regions(&file, regions_again(), 3584);
        let mut read = Vec::new();
        cut.read_to_end(&mut read).unwrap();
        assert_eq!(read.len(), 1024 + 128);
        assert_eq!(cut.position(), 3200);
    }
}
