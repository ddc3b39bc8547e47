//! The archive store: what is in a backup folder and what to do with it — listing,
//! retention planning and deletion, verification, and safe restore.
//!
//! Synchronous and protocol-free: the daemon calls it on blocking threads and maps its
//! results to responses. Archives are written by [`crate::engine`]; this module only reads
//! and deletes them.

mod archive_list;
mod checksum;
mod decode;
mod error;
mod restore;
mod rotation;
mod verify;

#[cfg(test)]
pub(crate) mod test_support;

pub use crate::engine::naming::{ParsedName, is_valid_name, manifest_path_for, parse_archive_name};
pub use archive_list::{ArchiveInfo, group_by_name, read_manifest, scan};
pub use checksum::{Integrity, check_integrity, sha256_file};
pub use error::StoreError;
pub use restore::{RestoreReport, restore};
pub use rotation::{RetentionPolicy, RotationOutcome, RotationPlan, apply_rotation, plan_rotation};
pub use verify::{VerifyReport, VerifyStatus, verify};
