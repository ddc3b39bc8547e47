//! The one seam between the tar stream and the compressor.
//!
//! [`Compression`] says which codec and level; [`Encoder`] wraps any `Write` and gives it
//! back from [`Encoder::finish`]. A parallel compressor would be one more variant here and
//! nothing else in the engine would change.

use std::io::{self, Write};

use super::error::EngineError;

/// Codec and level of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: Self::GZIP_DEFAULT,
        }
    }
}

impl Compression {
    pub const GZIP_DEFAULT: u32 = 6;
    pub const ZSTD_DEFAULT: i32 = 3;

    /// Gzip at `level` (0-9), or 6 when `None`.
    pub fn gzip(level: Option<i32>) -> Result<Self, EngineError> {
        let level = level.unwrap_or(Self::GZIP_DEFAULT as i32);
        check_range("gzip", level, 0, 9)?;
        Ok(Compression::Gzip {
            level: level.unsigned_abs(),
        })
    }

    /// Zstd at `level` (1-22), or 3 when `None`.
    pub fn zstd(level: Option<i32>) -> Result<Self, EngineError> {
        let level = level.unwrap_or(Self::ZSTD_DEFAULT);
        check_range("zstd", level, 1, 22)?;
        Ok(Compression::Zstd { level })
    }

    /// From the names used in jobs and manifests: `gzip`, `zstd`, `none`.
    pub fn parse(name: &str, level: Option<i32>) -> Result<Self, EngineError> {
        match name {
            "gzip" | "gz" => Self::gzip(level),
            "zstd" | "zst" => Self::zstd(level),
            "none" => Ok(Compression::None),
            other => Err(EngineError::UnknownCompression(other.to_owned())),
        }
    }

    /// Re-checks the level, for values built directly from the enum variants.
    pub fn validate(self) -> Result<Self, EngineError> {
        match self {
            Compression::None => Ok(self),
            Compression::Gzip { level } => {
                Self::gzip(Some(i32::try_from(level).unwrap_or(i32::MAX)))
            }
            Compression::Zstd { level } => Self::zstd(Some(level)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
        }
    }

    /// File name suffix, including the `.tar` part.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => ".tar",
            Compression::Gzip { .. } => ".tar.gz",
            Compression::Zstd { .. } => ".tar.zst",
        }
    }

    pub fn level(self) -> Option<i32> {
        match self {
            Compression::None => None,
            Compression::Gzip { level } => i32::try_from(level).ok(),
            Compression::Zstd { level } => Some(level),
        }
    }

    /// Wraps `inner` in this codec's streaming encoder.
    pub fn encoder<W: Write>(self, inner: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::None => Encoder::Plain(inner),
            Compression::Gzip { level } => Encoder::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level),
            )),
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
                // A frame checksum lets `zstd -t` catch corruption on its own.
                enc.include_checksum(true)?;
                Encoder::Zstd(enc)
            }
        })
    }
}

fn check_range(
    compression: &'static str,
    level: i32,
    min: i32,
    max: i32,
) -> Result<(), EngineError> {
    if (min..=max).contains(&level) {
        Ok(())
    } else {
        Err(EngineError::InvalidLevel {
            compression,
            level,
            min,
            max,
        })
    }
}

/// A streaming compressor over `W`.
pub enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> std::fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Encoder::Plain(_) => "none",
            Encoder::Gzip(_) => "gzip",
            Encoder::Zstd(_) => "zstd",
        };
        f.debug_tuple("Encoder").field(&kind).finish()
    }
}

impl<W: Write> Encoder<W> {
    /// Writes the codec's trailer and returns the inner writer (not flushed).
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }

    pub fn get_ref(&self) -> &W {
        match self {
            Encoder::Plain(w) => w,
            Encoder::Gzip(e) => e.get_ref(),
            Encoder::Zstd(e) => e.get_ref(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.write_all(buf),
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn defaults_are_gzip_6_and_zstd_3() {
        assert_eq!(Compression::default(), Compression::Gzip { level: 6 });
        assert_eq!(
            Compression::gzip(None).unwrap(),
            Compression::Gzip { level: 6 }
        );
        assert_eq!(
            Compression::zstd(None).unwrap(),
            Compression::Zstd { level: 3 }
        );
    }

    #[test]
    fn levels_out_of_range_are_rejected() {
        for bad in [-1, 10, 100] {
            assert!(matches!(
                Compression::gzip(Some(bad)),
                Err(EngineError::InvalidLevel {
                    compression: "gzip",
                    ..
                })
            ));
        }
        for bad in [0, 23, -5] {
            assert!(matches!(
                Compression::zstd(Some(bad)),
                Err(EngineError::InvalidLevel {
                    compression: "zstd",
                    ..
                })
            ));
        }
        assert!(Compression::gzip(Some(0)).is_ok());
        assert!(Compression::gzip(Some(9)).is_ok());
        assert!(Compression::zstd(Some(1)).is_ok());
        assert!(Compression::zstd(Some(22)).is_ok());
        assert!(Compression::Gzip { level: 12 }.validate().is_err());
        assert!(Compression::Zstd { level: 0 }.validate().is_err());
    }

    #[test]
    fn parse_names() {
        assert_eq!(
            Compression::parse("none", Some(99)).unwrap(),
            Compression::None
        );
        assert_eq!(
            Compression::parse("zstd", Some(19)).unwrap(),
            Compression::Zstd { level: 19 }
        );
        assert!(matches!(
            Compression::parse("bzip2", None),
            Err(EngineError::UnknownCompression(_))
        ));
    }

    #[test]
    fn encoders_round_trip() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [
            Compression::None,
            Compression::default(),
            Compression::zstd(None).unwrap(),
        ] {
            let mut enc = c.encoder(Vec::new()).unwrap();
            enc.write_all(&data).unwrap();
            let out = enc.finish().unwrap();
            let mut back = Vec::new();
            match c {
                Compression::None => back = out,
                Compression::Gzip { .. } => {
                    flate2::read::GzDecoder::new(&out[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Compression::Zstd { .. } => back = zstd::decode_all(&out[..]).unwrap(),
            }
            assert_eq!(back, data, "{}", c.name());
        }
    }
}
