//! A reader that yields exactly the size a tar header declared, whatever the file does.
//!
//! The header is written before the data, so a file that shrinks, grows or fails to read
//! part-way must still fill exactly `declared` bytes: short reads are padded with zeros,
//! extra bytes are left out, and the change is reported so the backup can warn about it.

use std::io::{self, Read};

/// What happened to a file between its header and the end of its data.
#[derive(Debug)]
pub enum SizeChange {
    /// Fewer bytes than declared: the rest was padded with zeros.
    Shrank { read: u64 },
    /// More bytes than declared: the extra was not archived.
    Grew,
    /// A read failed: the rest was padded with zeros.
    Failed { read: u64, error: io::Error },
}

impl SizeChange {
    /// The warning for a file written to in place while it was read, its size unchanged.
    pub const REWRITTEN: &'static str =
        "changed while being read (written to in place; what is stored may mix old and new)";
}

impl std::fmt::Display for SizeChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeChange::Shrank { read } => write!(
                f,
                "changed while being read (shrank to {read} bytes, padded with zeros)"
            ),
            SizeChange::Grew => write!(f, "changed while being read (grew, truncated)"),
            SizeChange::Failed { read, error } => write!(
                f,
                "read failed after {read} bytes ({error}), padded with zeros"
            ),
        }
    }
}

#[derive(Debug)]
pub struct SizedReader<R> {
    inner: R,
    declared: u64,
    /// Bytes handed out so far, real or padding.
    pos: u64,
    /// Real bytes read from `inner`.
    from_source: u64,
    /// Set once the source stops giving bytes early; from then on only zeros.
    change: Option<SizeChange>,
}

impl<R: Read> SizedReader<R> {
    pub fn new(inner: R, declared: u64) -> Self {
        SizedReader {
            inner,
            declared,
            pos: 0,
            from_source: 0,
            change: None,
        }
    }

    /// Bytes that really came from the source.
    pub fn bytes_from_source(&self) -> u64 {
        self.from_source
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Call after the declared size was consumed: reports a shrink, a failed read, or
    /// (probing one byte past the end) a file that grew.
    pub fn finish(mut self) -> Option<SizeChange> {
        if self.change.is_none() {
            let mut probe = [0u8; 1];
            loop {
                match self.inner.read(&mut probe) {
                    Ok(0) => break,
                    Ok(_) => return Some(SizeChange::Grew),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // The declared bytes were all read; a late error changes nothing stored.
                    Err(_) => break,
                }
            }
        }
        self.change
    }
}

impl<R: Read> Read for SizedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.declared - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let buf = &mut buf[..want];
        if self.change.is_some() {
            buf.fill(0);
            self.pos += want as u64;
            return Ok(want);
        }
        loop {
            match self.inner.read(buf) {
                Ok(0) => {
                    self.change = Some(SizeChange::Shrank {
                        read: self.from_source,
                    });
                    break;
                }
                Ok(n) => {
                    self.pos += n as u64;
                    self.from_source += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    self.change = Some(SizeChange::Failed {
                        read: self.from_source,
                        error,
                    });
                    break;
                }
            }
        }
        buf.fill(0);
        self.pos += want as u64;
        Ok(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all<R: Read>(r: &mut SizedReader<R>) -> Vec<u8> {
        let mut out = Vec::new();
        // A small buffer so padding spans several calls.
        let mut buf = [0u8; 3];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn exact_size_passes_through_unchanged() {
        let mut r = SizedReader::new(&b"abcdef"[..], 6);
        assert_eq!(read_all(&mut r), b"abcdef");
        assert_eq!(r.bytes_from_source(), 6);
        assert!(r.finish().is_none());
    }

    #[test]
    fn shrunk_source_is_zero_padded_and_flagged() {
        let mut r = SizedReader::new(&b"abc"[..], 8);
        assert_eq!(read_all(&mut r), b"abc\0\0\0\0\0");
        assert_eq!(r.bytes_from_source(), 3);
        assert!(matches!(r.finish(), Some(SizeChange::Shrank { read: 3 })));
    }

    #[test]
    fn grown_source_is_truncated_and_flagged() {
        let mut r = SizedReader::new(&b"abcdefgh"[..], 5);
        assert_eq!(read_all(&mut r), b"abcde");
        let change = r.finish();
        assert!(matches!(change, Some(SizeChange::Grew)));
        assert!(
            change
                .unwrap()
                .to_string()
                .contains("changed while being read")
        );
    }

    #[test]
    fn failing_source_is_zero_padded_and_flagged() {
        struct Broken(u8);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let mut r = SizedReader::new(Broken(2), 4);
        assert_eq!(read_all(&mut r), b"xx\0\0");
        assert!(matches!(
            r.finish(),
            Some(SizeChange::Failed { read: 2, .. })
        ));
    }

    #[test]
    fn zero_declared_reads_nothing() {
        let mut r = SizedReader::new(&b""[..], 0);
        assert!(read_all(&mut r).is_empty());
        assert!(r.finish().is_none());
    }
}
