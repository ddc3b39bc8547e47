//! The archive store: what to do with the archives in a destination — retention planning and
//! deletion, verification, listing contents, safe restore, and rebuilding a manifest lost to a
//! crash.
//!
//! Synchronous and protocol-free: the daemon calls it on blocking threads and maps its
//! results to responses. Archives are written by [`crate::engine`] and reached through
//! [`crate::destination`]; this module only reads and deletes them.

mod beneath;
mod checksum;
mod early_sync;
mod error;
mod header_limit;
mod listing;
mod repair;
mod restore;
mod restore_target;
mod restore_temp;
mod rotation;
mod tar_end;
mod until_stopped;
mod verify;

#[cfg(test)]
pub(crate) mod test_support;

pub use checksum::sha256_of;
pub use error::StoreError;
pub use header_limit::MAX_LONG_NAME;
pub use listing::{ListedEntry, Listing, MAX_LISTED, list_contents};
pub use repair::{
    ManifestRepair, REBUILT_WARNING, RepairPlan, plan_manifest_repairs, rebuild_manifests,
    rebuild_missing_manifests,
};
pub use restore::{RestoreOptions, RestoreReport, restore, restore_with};
pub use rotation::{
    Counted, RetentionPolicy, RotationOutcome, RotationPlan, apply_rotation, plan_rotation,
    plan_rotation_by, plan_rotation_counting,
};
pub use until_stopped::{NEVER, Stopping};
pub use verify::{CHECKSUM_ONLY, VerifyFinding, VerifyReport, is_encrypted, verify, verify_with};
