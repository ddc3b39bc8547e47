//! Opening an archive as a plain tar stream, whatever its compression.
//!
//! Verify and restore both read archives this way; the codec comes from the file name,
//! then the manifest, then the file's magic bytes, so a renamed archive still opens.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::engine::naming::compression_from_name;
use crate::engine::{Compression, Manifest};

const READ_BUFFER: usize = 256 * 1024;
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// The decompressed tar stream of `archive`, counting the bytes it yields.
pub fn open_tar_stream(
    archive: &Path,
    manifest: Option<&Manifest>,
) -> io::Result<CountingReader<Box<dyn Read>>> {
    let mut file = BufReader::with_capacity(READ_BUFFER, File::open(archive)?);
    let compression = match compression_from_name(archive)
        .or_else(|| Compression::parse(&manifest?.compression, None).ok())
    {
        Some(compression) => compression,
        None => sniff(&mut file)?,
    };
    let inner: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip { .. } => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Zstd { .. } => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
    };
    Ok(CountingReader { inner, count: 0 })
}

fn sniff(file: &mut BufReader<File>) -> io::Result<Compression> {
    let head = file.fill_buf()?;
    Ok(if head.starts_with(GZIP_MAGIC) {
        Compression::default()
    } else if head.starts_with(ZSTD_MAGIC) {
        Compression::Zstd {
            level: Compression::ZSTD_DEFAULT,
        }
    } else {
        Compression::None
    })
}

/// Counts the bytes read through it: the tar reader does not say where the archive ended.
#[derive(Debug)]
pub struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R> CountingReader<R> {
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}
