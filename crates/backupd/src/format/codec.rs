//! The codec layers between the tar stream and the stored bytes: [`Encoder`] on the way in,
//! [`decoder`] on the way out, both chosen by a [`Compression`] / [`Codec`].
//!
//! A new layer (a parallel compressor, encryption) is one more variant here, one more
//! extension in [`super::naming`] and, if readers need to know, a manifest field; nothing in the
//! engine or the store changes.

use std::io::{self, BufRead, Read, Write};

use proto::{Codec, Compression};

use super::parallel_gzip::{ParallelGzEncoder, available_workers};
use super::write_from::{WriteFrom, copy_from};

/// Why a codec could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("can't start the {codec} encoder: {source}")]
    Encoder { codec: Codec, source: io::Error },
    #[error("can't start the {codec} decoder: {source}")]
    Decoder { codec: Codec, source: io::Error },
}

impl From<CodecError> for io::Error {
    fn from(err: CodecError) -> Self {
        match err {
            CodecError::Encoder { source, .. } | CodecError::Decoder { source, .. } => source,
        }
    }
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// Input bytes per zstd worker job.
const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// A streaming compressor over `W`.
pub enum Encoder<W: Write> {
    Plain(W),
    /// Gzip members, one per block, compressed on every core ([`super::parallel_gzip`]).
    Gzip(ParallelGzEncoder<W>),
    /// `None` only after a failed [`Encoder::end_segment`]: the stream cannot go on.
    Zstd {
        encoder: Option<zstd::stream::write::Encoder<'static, W>>,
        level: i32,
    },
}

impl<W: Write> std::fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Encoder::Plain(_) => "none",
            Encoder::Gzip(_) => "gzip",
            Encoder::Zstd { .. } => "zstd",
        };
        f.debug_tuple("Encoder").field(&kind).finish()
    }
}

impl<W: Write> Encoder<W> {
    /// Wraps `inner` in the streaming encoder of `compression`.
    pub fn new(compression: Compression, inner: W) -> Result<Self, CodecError> {
        let codec = compression.codec();
        let level = compression.level();
        Ok(match codec {
            Codec::None => Encoder::Plain(inner),
            Codec::Gzip => {
                let level = level.and_then(|l| u32::try_from(l).ok()).unwrap_or(6);
                Encoder::Gzip(ParallelGzEncoder::new(inner, level, available_workers()))
            }
            Codec::Zstd => {
                let level = level.unwrap_or(3);
                let encoder = start_zstd(inner, level)
                    .map_err(|source| CodecError::Encoder { codec, source })?;
                Encoder::Zstd {
                    encoder: Some(encoder),
                    level,
                }
            }
        })
    }

    /// Ends the compressed stream written so far (a gzip member, a zstd frame) so that the
    /// inner writer holds every byte written; the next write starts a new one, which readers
    /// join to it. [`super::stored_segment`] goes in between.
    pub fn end_segment(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(_) => Ok(()),
            Encoder::Gzip(e) => e.end_member(),
            Encoder::Zstd { encoder, level } => {
                let inner = zstd_or_lost(encoder.take())?.finish()?;
                *encoder = Some(start_zstd(inner, *level)?);
                Ok(())
            }
        }
    }

    /// The inner writer: it holds every byte written only right after
    /// [`Encoder::end_segment`].
    pub fn get_mut(&mut self) -> io::Result<&mut W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Zstd { encoder, .. } => Ok(zstd_or_lost(encoder.as_mut())?.get_mut()),
        }
    }

    /// Writes the codec's trailer and returns the inner writer (not flushed).
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd { encoder, .. } => zstd_or_lost(encoder)?.finish(),
        }
    }
}

fn start_zstd<W: Write>(
    inner: W,
    level: i32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
    // A frame checksum lets `zstd -t` catch corruption on its own.
    enc.include_checksum(true)?;
    enc.multithread(zstd_workers())?;
    // Smaller jobs than zstd's default (4 windows, 8 MiB at level 3) keep the buffers of the
    // jobs in flight, hence the daemon's memory, small.
    enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
    Ok(enc)
}

fn zstd_or_lost<T>(encoder: Option<T>) -> io::Result<T> {
    encoder.ok_or_else(|| io::Error::other("the zstd stream was lost to an earlier error"))
}

impl<W: WriteFrom> WriteFrom for Encoder<W> {
    fn write_from(&mut self, source: &mut dyn Read, len: u64) -> io::Result<u64> {
        match self {
            // Nothing to compress: the bytes go straight into the layer below.
            Encoder::Plain(w) => w.write_from(source, len),
            _ => copy_from(self, source, len),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd { encoder, .. } => zstd_or_lost(encoder.as_mut())?.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.write_all(buf),
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd { encoder, .. } => zstd_or_lost(encoder.as_mut())?.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd { encoder, .. } => zstd_or_lost(encoder.as_mut())?.flush(),
        }
    }
}

/// zstd's own worker threads: one per core, so one source uses every core.
pub fn zstd_workers() -> u32 {
    u32::try_from(available_workers()).unwrap_or(1)
}

/// The decoded (tar) stream of an archive's bytes. `codec` is what the name or manifest says;
/// without one the codec is sniffed from the magic bytes, so a renamed archive still opens.
/// Gzip is read as a sequence of members, as `gzip -d` does.
pub fn decoder<'a, R: BufRead + Send + 'a>(
    codec: Option<Codec>,
    mut input: R,
) -> Result<Box<dyn Read + Send + 'a>, CodecError> {
    let codec = match codec {
        Some(codec) => codec,
        None => sniff(&mut input).map_err(|source| CodecError::Decoder {
            codec: Codec::None,
            source,
        })?,
    };
    Ok(match codec {
        Codec::None => Box::new(input),
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Codec::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|source| CodecError::Decoder { codec, source })?,
        ),
    })
}

fn sniff(input: &mut impl BufRead) -> io::Result<Codec> {
    let head = input.fill_buf()?;
    Ok(if head.starts_with(GZIP_MAGIC) {
        Codec::Gzip
    } else if head.starts_with(ZSTD_MAGIC) {
        Codec::Zstd
    } else {
        Codec::None
    })
}

/// Counts the bytes read through it: the tar reader does not say where the archive ended.
#[derive(Debug)]
pub struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, count: 0 }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_named_or_sniffed() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in Codec::ALL {
            let mut enc = Encoder::new(Compression::of(codec), Vec::new()).unwrap();
            enc.write_all(&data).unwrap();
            let out = enc.finish().unwrap();
            for hint in [Some(codec), None] {
                let mut back = Vec::new();
                decoder(hint, io::Cursor::new(out.clone()))
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
                assert_eq!(back, data, "{codec} {hint:?}");
            }
        }
    }

    /// Threads of this process whose name is `name` (threads inherit their creator's name).
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
    }

    #[test]
    fn zstd_compresses_on_one_worker_per_core() {
        let cores = available_workers();
        assert_eq!(zstd_workers() as usize, cores);
        if cores < 2 {
            eprintln!("skipped: one core, zstd runs a single worker");
            return;
        }
        let data: Vec<u8> = (0..(4 * ZSTD_JOB_SIZE as usize))
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        // zstd's pool threads are unnamed: they carry the name of the thread that made them.
        let probe = "zstd-mt-probe";
        let (back, threads) = std::thread::Builder::new()
            .name(probe.to_owned())
            .spawn(move || {
                let mut enc = Encoder::new(Compression::of(Codec::Zstd), Vec::new()).unwrap();
                enc.write_all(&data).unwrap();
                let threads = threads_named(probe);
                let out = enc.finish().unwrap();
                let mut back = Vec::new();
                decoder(Some(Codec::Zstd), &out[..])
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
                (back == data, threads)
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(back, "the multi-threaded frame round-trips");
        // The probe itself plus one worker per core.
        assert!(threads > cores, "{threads} threads for {cores} cores");
    }

    #[test]
    fn gzip_members_are_read_one_after_another() {
        let mut joined = Vec::new();
        for part in [&b"first "[..], b"second"] {
            let mut enc = Encoder::new(Compression::of(Codec::Gzip), Vec::new()).unwrap();
            enc.write_all(part).unwrap();
            joined.extend(enc.finish().unwrap());
        }
        let mut back = String::new();
        decoder(Some(Codec::Gzip), &joined[..])
            .unwrap()
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, "first second");
    }
}
