//! The archive format, the one room both the writer and the readers use: how archives and
//! their manifests are named ([`naming`]), what a manifest records ([`manifest`]), and the
//! codec layers between the tar stream and the stored bytes ([`codec`], with gzip compressed on
//! every core by [`parallel_gzip`] and decoded ahead of a restore by [`read_ahead`]), and the
//! [`stored_segment`] a header rewritten in place goes in. A file's bytes reach the innermost
//! buffer in one copy through [`write_from`].
//!
//! Encryption ([`encryption`], age) is the outermost layer: one more extension and the
//! manifest's `encryption` and `recipients`.

pub mod codec;
pub mod encryption;
pub mod manifest;
pub mod naming;
pub mod parallel_gzip;
pub mod read_ahead;
pub mod stored_segment;
pub mod write_from;
pub mod xattrs;

pub use codec::{CodecError, CountingReader, Encoder, decoder};
pub use encryption::{
    Encryption, Identities, KeyError, Passphrase, Recipients, Sealer, open_sealed,
    sealed_with_passphrase,
};
pub use manifest::{CommandRecord, FORMAT_VERSION, Manifest, hex};
pub use naming::{ArchiveNames, TIMESTAMP_FORMAT};
pub use read_ahead::ReadAhead;
pub use write_from::WriteFrom;

/// Bytes in a tar block: a header is one, and an entry's data is padded to whole ones.
pub const TAR_BLOCK: usize = 512;

/// How many zeros follow `size` bytes of an entry's data, up to a whole tar block.
pub fn tar_padding(size: u64) -> u64 {
    (TAR_BLOCK as u64 - size % TAR_BLOCK as u64) % TAR_BLOCK as u64
}
