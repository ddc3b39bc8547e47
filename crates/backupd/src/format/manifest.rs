//! The JSON manifest written next to each archive.
//!
//! It records what was archived and the archive's SHA-256 and size, so later steps (list,
//! verify, restore) can trust an archive without re-walking the source.

use std::path::PathBuf;

use chrono::FixedOffset;
use proto::Codec;
use serde::{Deserialize, Serialize};

use super::encryption::Encryption;
use super::naming::manifest_name_for;

pub const FORMAT_VERSION: u32 = 1;

/// Lower-case hex, as manifests write checksums.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// What an archive holds and how to trust it. Manifests written by the original backup script
/// have only `backup_file`, `source`, `created`, `size_bytes`, `size_human` and
/// `checksum_sha256`; they read with the other fields at their defaults and `format_version` 0
/// (that script wrote gzip archives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub format_version: u32,
    #[serde(default)]
    pub backupd_version: String,
    #[serde(default)]
    pub name: String,
    /// Absolute path of the archive.
    pub backup_file: PathBuf,
    /// Absolute path of the source folder.
    pub source: PathBuf,
    /// `YYYYMMDD_HHMMSS`, the timestamp in the file names: local time.
    pub created: String,
    /// The UTC offset that local time had (`+01:00`), so that an archive's age stays right
    /// when the daemon's time zone changes (a moved laptop, a container given a `TZ`, DST).
    /// Absent from older manifests and the original backup script's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset: Option<String>,
    #[serde(default)]
    pub compression: Codec,
    /// `None` for uncompressed archives.
    #[serde(default)]
    pub level: Option<i32>,
    pub size_bytes: u64,
    pub size_human: String,
    pub checksum_sha256: String,
    /// Regular files, including hard-link entries.
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub dirs: u64,
    #[serde(default)]
    pub symlinks: u64,
    #[serde(default)]
    pub hardlinks: u64,
    /// Source content bytes read.
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Entries among `warnings` left out for a reason other than vanishing (unreadable,
    /// changed type, a failed read): the backup completed with warnings.
    #[serde(default)]
    pub skipped: u64,
    /// `Some(Age)` for an encrypted archive; `checksum_sha256` and `size_bytes` are then of
    /// the encrypted file on disk, so a check without a key still finds corruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// The public keys (`age1…`) it is encrypted to; never a secret key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Encrypted to a passphrase (age's scrypt recipient) rather than to keys.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passphrase: bool,
    /// The command sources archived beside the folder (database dumps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandRecord>,
}

/// A command source as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// The file's name in the archive.
    pub name: String,
    /// The argv that wrote it.
    pub command: Vec<String>,
    pub exit_status: i32,
    /// Bytes of output archived.
    pub bytes: u64,
}

impl Manifest {
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = serde_json::to_vec_pretty(self)?;
        out.push(b'\n');
        Ok(out)
    }

    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes)
    }

    /// The offset `created` is in, when the manifest records a valid one.
    pub fn created_offset(&self) -> Option<FixedOffset> {
        self.utc_offset.as_deref()?.parse().ok()
    }

    /// This manifest as a storage provider may read it. A plain archive's provider reads its
    /// contents anyway; for an encrypted one it keeps what checking and rotating the copy
    /// need (name, time, sizes, checksum, recipients) and leaves out what would tell about
    /// the contents: the source's path, the warnings (they quote paths inside the archive),
    /// the dump commands, and the folder the archive was written in.
    pub fn as_a_provider_reads_it(&self) -> Manifest {
        if self.encryption.is_none() {
            return self.clone();
        }
        let file_name = self.backup_file.file_name().map(PathBuf::from);
        Manifest {
            backup_file: file_name.unwrap_or_default(),
            source: PathBuf::new(),
            warnings: Vec::new(),
            commands: Vec::new(),
            ..self.clone()
        }
    }

    /// The archive this manifest was written for, when that is not `archive` but another
    /// file that shares its manifest name (`X.tar.zst` beside `X.tar` after `zstd -d` in
    /// place): the manifest is that archive's, not this one's.
    pub fn written_for_sibling_of(&self, archive: &str) -> Option<&str> {
        let written_for = self.backup_file.file_name()?.to_str()?;
        (written_for != archive && manifest_name_for(written_for) == manifest_name_for(archive))
            .then_some(written_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::size::human_size;

    #[test]
    fn json_round_trip() {
        let m = Manifest {
            format_version: FORMAT_VERSION,
            backupd_version: "0.1.0".into(),
            name: "docs".into(),
            backup_file: "/b/docs_20250101_120000.tar.gz".into(),
            source: "/home/u/docs".into(),
            created: "20250101_120000".into(),
            utc_offset: Some("+01:00".into()),
            compression: Codec::Gzip,
            level: Some(6),
            size_bytes: 10,
            size_human: human_size(10),
            checksum_sha256: "00".repeat(32),
            files: 1,
            dirs: 2,
            symlinks: 3,
            hardlinks: 0,
            bytes_in: 4,
            duration_ms: 5,
            warnings: vec!["x: gone".into()],
            skipped: 0,
            encryption: Some(Encryption::Age),
            recipients: vec!["age1example".into()],
            passphrase: false,
            commands: vec![CommandRecord {
                name: "db.sql".into(),
                command: vec!["sqlite3".into(), "/d.db".into(), ".dump".into()],
                exit_status: 0,
                bytes: 12,
            }],
        };
        let json = m.to_json().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["size_human"], "10.00 B");
        assert_eq!(v["checksum_sha256"], "00".repeat(32));
        assert_eq!(v["encryption"], "age");
        assert_eq!(v["utc_offset"], "+01:00");
        assert_eq!(Manifest::from_json(&json).unwrap(), m);
    }

    #[test]
    fn the_offset_of_created_reads_when_valid_only() {
        let with = |offset: &str| {
            let json = format!(
                r#"{{"backup_file": "/b/d_20250101_120000.tar", "source": "/s",
                "created": "20250101_120000", "size_bytes": 1, "size_human": "1 B",
                "checksum_sha256": "", "utc_offset": "{offset}"}}"#
            );
            Manifest::from_json(json.as_bytes())
                .unwrap()
                .created_offset()
        };
        assert_eq!(with("+05:30"), FixedOffset::east_opt(5 * 3600 + 30 * 60));
        assert_eq!(with("-12:00"), FixedOffset::west_opt(12 * 3600));
        assert_eq!(with("local"), None);
        assert_eq!(with("+25:00"), None);
    }

    #[test]
    fn manifests_of_the_original_backup_script_read() {
        let json = br#"{
            "backup_file": "/home/user/backups/projects_20250208_143025.tar.gz",
            "source": "/home/user/projects",
            "created": "20250208_143025",
            "size_bytes": 16065536,
            "size_human": "15.32 MB",
            "checksum_sha256": "a3f5c89b2e1d4f6c3a8e9b5d2f1a7c4e6b8d3f5a9c2e7b4d1f8a6c3e9b5d2f1a"
        }"#;
        let m = Manifest::from_json(json).unwrap();
        assert_eq!(m.format_version, 0);
        assert_eq!(m.compression, Codec::Gzip);
        assert_eq!(m.size_bytes, 16065536);
        assert_eq!(m.created_offset(), None);
        assert!(Manifest::from_json(br#"{"source": "/x"}"#).is_err());
    }

    #[test]
    fn a_manifest_is_known_as_a_sibling_s_only_by_the_archive_it_names() {
        let json = br#"{"backup_file": "/b/docs_20250101_120000.tar.zst", "source": "/s",
            "created": "20250101_120000", "size_bytes": 1, "size_human": "1 B",
            "checksum_sha256": ""}"#;
        let m = Manifest::from_json(json).unwrap();
        assert_eq!(
            m.written_for_sibling_of("docs_20250101_120000.tar.zst"),
            None
        );
        assert_eq!(
            m.written_for_sibling_of("docs_20250101_120000.tar"),
            Some("docs_20250101_120000.tar.zst")
        );
        assert_eq!(
            m.written_for_sibling_of("docs_20250101_120000.tar.gz.age"),
            Some("docs_20250101_120000.tar.zst")
        );
        // A pair renamed together keeps its manifest: only a file of the same stem is another's.
        assert_eq!(
            m.written_for_sibling_of("renamed_20250101_120000.tar.zst"),
            None
        );
    }

    #[test]
    fn hex_is_lower_case_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab]), "000fab");
    }
}
