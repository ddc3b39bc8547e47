//! Writers that take a file's bytes straight into a buffer of their own.
//!
//! `io::copy` (which the `tar` crate uses for an entry's data) reads a file 8 KiB at a time
//! into a stack buffer, then copies each piece again into the next writer's buffer. A writer
//! that keeps a large buffer (the hashing writer under an uncompressed archive) reads into it
//! instead: one copy of each byte and one `read` per buffer instead of two copies and a
//! `read` per 8 KiB. Layers that transform the bytes (compression, encryption) take the copy.

use std::io::{self, Read, Write};

/// A writer that can fill itself from a reader.
pub trait WriteFrom: Write {
    /// Writes the next `len` bytes of `source`; fewer only if `source` ends first. Returns
    /// the number written.
    fn write_from(&mut self, source: &mut dyn Read, len: u64) -> io::Result<u64> {
        copy_from(self, source, len)
    }
}

/// [`WriteFrom::write_from`] through an intermediate buffer, for a writer that has none.
pub fn copy_from<W: Write + ?Sized>(
    writer: &mut W,
    source: &mut dyn Read,
    len: u64,
) -> io::Result<u64> {
    io::copy(&mut source.take(len), writer)
}

impl WriteFrom for Vec<u8> {}
impl WriteFrom for io::Sink {}
