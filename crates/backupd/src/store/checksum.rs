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
    /// Hash (and possibly size) differ; `detail` says how, for humans.
    Differs {
        expected: String,
        actual: String,
        detail: String,
    },
}

/// Hashes an archive's bytes and compares hash and size with `manifest`.
pub fn check_integrity(archive: impl Read, manifest: &Manifest) -> io::Result<Integrity> {
    let (actual, size) = sha256_of(archive)?;
    let expected = manifest.checksum_sha256.to_ascii_lowercase();
    if actual == expected && size == manifest.size_bytes {
        return Ok(Integrity::Matches);
    }
    let detail = if size == manifest.size_bytes {
        format!("sha256 {actual}, manifest says {expected}")
    } else {
        format!(
            "size {size} bytes, manifest says {} bytes; sha256 {actual}, manifest says {expected}",
            manifest.size_bytes
        )
    };
    Ok(Integrity::Differs {
        expected,
        actual,
        detail,
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
