//! Re-hashing an archive to compare it with its manifest.
//!
//! The engine hashes while writing; here the stored bytes are read back in bounded chunks,
//! so checking a large archive costs time, never memory.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use crate::format::{Manifest, hex};

const CHUNK: usize = 256 * 1024;

/// Lower-case hex SHA-256 and length of a stream's bytes.
pub fn sha256_of(mut file: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

/// How an archive's bytes compare with what its manifest recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    Matches,
    /// Fewer bytes than the manifest recorded: the file was cut.
    Short {
        size: u64,
        expected: u64,
    },
    /// Other bytes (and possibly another size) than the manifest recorded.
    Differs {
        expected: String,
        actual: String,
        /// The size on disk when it differs from the manifest's.
        size: Option<u64>,
    },
}

impl Integrity {
    /// In words, for a failure: how the bytes differ from the manifest.
    pub fn describe(&self, manifest: &Manifest) -> Option<String> {
        match self {
            Integrity::Matches => None,
            Integrity::Short { size, expected } => {
                Some(format!("{size} of {expected} bytes on disk"))
            }
            Integrity::Differs {
                expected,
                actual,
                size,
            } => {
                let sizes = size.map(|size| {
                    format!(
                        "size {size} bytes, manifest says {} bytes; ",
                        manifest.size_bytes
                    )
                });
                Some(format!(
                    "{}sha256 {actual}, manifest says {expected}",
                    sizes.unwrap_or_default()
                ))
            }
        }
    }
}

/// Hashes an archive's bytes and compares hash and size with `manifest`.
pub fn check_integrity(archive: impl Read, manifest: &Manifest) -> io::Result<Integrity> {
    let (actual, size) = sha256_of(archive)?;
    let expected = manifest.checksum_sha256.to_ascii_lowercase();
    Ok(if actual == expected && size == manifest.size_bytes {
        Integrity::Matches
    } else if size < manifest.size_bytes {
        Integrity::Short {
            size,
            expected: manifest.size_bytes,
        }
    } else {
        Integrity::Differs {
            expected,
            actual,
            size: (size != manifest.size_bytes).then_some(size),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(
            sha256_of(&b""[..]).unwrap(),
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(),
                0
            )
        );
        // Larger than one chunk, so the streaming loop runs more than once.
        let data = vec![b'a'; CHUNK * 2 + 7];
        let expected = hex(&Sha256::digest(&data));
        assert_eq!(sha256_of(&data[..]).unwrap(), (expected, data.len() as u64));
    }
}
