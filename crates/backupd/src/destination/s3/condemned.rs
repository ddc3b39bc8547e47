//! The marks of the manifests a rotation condemns, in a bucket. Before an archive's DELETE the
//! rotation writes `.backupd-deleting-<manifest>`, whose body is the manifest's ETag and size
//! as a `HEAD` gave them, and deletes it after the manifest's. A rotation cut between the two
//! (a kill, a lost network) leaves the manifest and its mark; the next rotation of that name
//! removes the manifest while it is still the object the mark names and no archive of its
//! stem is left, and any other mark alone ([`S3Prefix::finish_cut_rotations`]). A manifest
//! without a mark is never removed: a user may keep one whose archive went elsewhere.

use std::io;

use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::{S3Prefix, identity_of};
use crate::destination::{Destination, FinishedRotations, Removal};
use crate::format::naming::{
    archives_sharing, condemned_mark, manifest_condemned_by, name_of_manifest,
};

/// A manifest as the bucket told it when a rotation condemned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Condemned {
    etag: String,
    size: u64,
}

impl Condemned {
    /// `None` from a server that gives no ETag: nothing would tell the object again.
    fn of(meta: &object_store::ObjectMeta) -> Option<Self> {
        Some(Self {
            etag: meta.e_tag.clone()?,
            size: meta.size,
        })
    }
}

/// What became of one mark.
enum Finished {
    /// The manifest went, then the mark.
    Manifest,
    /// The mark went alone.
    Mark,
    /// Nothing: the mark was gone already, or an object lock keeps the manifest for now.
    Nothing,
}

impl S3Prefix {
    /// Marks `manifest` as it is now, replacing a mark an earlier cut left; `false` when there
    /// is no manifest, or no ETag to name it by.
    pub(super) fn mark(&self, manifest: &str) -> io::Result<bool> {
        let meta = match self.head(manifest) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let Some(condemned) = Condemned::of(&meta) else {
            return Ok(false);
        };
        let body = serde_json::to_vec(&condemned).map_err(io::Error::other)?;
        // A plain put, without the remote's retention: a mark must be deletable at once.
        let key = self.key(&condemned_mark(manifest));
        self.runtime
            .block_on(self.store.put(&key, PutPayload::from(body)))
            .map_err(|e| self.io_error(e))?;
        Ok(true)
    }

    /// Once the rotation is done with `manifest`, removed or kept.
    pub(super) fn unmark(&self, manifest: &str) -> io::Result<()> {
        self.remove(&condemned_mark(manifest))
    }

    /// [`Self::finish_cut_rotations`], best effort: what it did is logged, and what fails
    /// stays for the next rotation.
    pub fn finish_cut_rotations_logged(&self, name: Option<&str>) {
        match self.finish_cut_rotations(name) {
            Ok(finished) => finished.log(),
            Err(e) => tracing::warn!(
                "can't finish the rotations cut short on remote {}: {e}",
                self.config().name
            ),
        }
    }

    /// Finishes the rotations of `name` (or of every name) cut short between an archive and
    /// its manifest, by their marks. Callers hold the names' rotation locks, as the rotation
    /// that follows does.
    pub fn finish_cut_rotations(&self, name: Option<&str>) -> io::Result<FinishedRotations> {
        let mut finished = FinishedRotations::default();
        for listed in self.listing()? {
            let mark = listed.file;
            let Some(manifest) = manifest_condemned_by(&mark) else {
                continue;
            };
            if name.is_some_and(|name| name_of_manifest(manifest).as_deref() != Some(name)) {
                continue;
            }
            match self.finish(&mark, manifest)? {
                Finished::Manifest => {
                    finished.manifests.push(self.path_of(manifest));
                    finished.marks.push(self.path_of(&mark));
                }
                Finished::Mark => finished.marks.push(self.path_of(&mark)),
                Finished::Nothing => {}
            }
        }
        finished.manifests.sort();
        finished.marks.sort();
        Ok(finished)
    }

    /// Removes `manifest` if `mark` names it as it is now and no archive of its stem is left,
    /// then the mark. The manifest goes first: should its removal fail, the mark stays for the
    /// next rotation.
    fn finish(&self, mark: &str, manifest: &str) -> io::Result<Finished> {
        let condemned = match self.get(mark) {
            // Not a body a rotation wrote: it condemns nothing.
            Ok(body) => serde_json::from_slice::<Condemned>(&body).ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Finished::Nothing),
            Err(e) => return Err(e),
        };
        let now = match self.head(manifest) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let still_condemned = now.filter(|meta| {
            condemned
                .as_ref()
                .is_some_and(|c| Condemned::of(meta).as_ref() == Some(c))
        });
        let mut removed = false;
        // By the rule the rotation keeps a manifest by: an archive of its stem keeps it.
        if let Some(meta) = still_condemned
            && !self.any_exists(&archives_sharing(manifest))?
        {
            match self.remove_if_same(manifest, &identity_of(&meta))? {
                Removal::Removed => removed = true,
                Removal::Gone | Removal::Replaced => {}
                Removal::Locked { until } => {
                    tracing::info!(
                        "Not removing stale manifest {}: {}; its mark stays for a later rotation",
                        self.path_of(manifest).display(),
                        crate::remote::object_lock::kept_reason(until)
                    );
                    return Ok(Finished::Nothing);
                }
            }
        }
        self.remove(mark)?;
        Ok(if removed {
            Finished::Manifest
        } else {
            Finished::Mark
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{prefix_on, runtime};
    use super::*;
    use crate::destination::list;
    use crate::remote::test_server::{SECRET_KEY, TestServer};

    const ARCHIVE: &str = "docs_20250101_000000.tar.gz";
    const MANIFEST: &str = "docs_20250101_000000.json";

    fn mark_of(manifest: &str) -> String {
        condemned_mark(manifest)
    }

    /// The file names in the prefix, sorted.
    fn names(prefix: &S3Prefix) -> Vec<String> {
        let mut names: Vec<String> = prefix.files().unwrap().into_iter().map(|f| f.0).collect();
        names.sort();
        names
    }

    /// An archive and its manifest, as an upload leaves them.
    fn backup(prefix: &S3Prefix, archive: &str, manifest: &str) {
        prefix.put_new(archive, b"archive bytes").unwrap();
        prefix.put_new(manifest, b"{\"manifest\":1}").unwrap();
    }

    /// What a rotation cut right after the archive's DELETE leaves: the manifest, marked.
    fn cut_after_the_archive(prefix: &S3Prefix, archive: &str, manifest: &str) {
        assert!(prefix.mark_condemned(manifest).unwrap(), "marked");
        prefix.remove(archive).unwrap();
    }

    #[test]
    fn a_mark_names_the_manifest_by_etag_and_size_and_goes_when_unmarked() {
        let server = TestServer::start();
        let runtime = runtime();
        let prefix = prefix_on(&server, &runtime, SECRET_KEY);
        assert!(!prefix.mark_condemned(MANIFEST).unwrap(), "nothing to mark");
        backup(&prefix, ARCHIVE, MANIFEST);
        assert!(prefix.mark_condemned(MANIFEST).unwrap());
        let body: serde_json::Value =
            serde_json::from_slice(&prefix.get(&mark_of(MANIFEST)).unwrap()).unwrap();
        let head = prefix.head(MANIFEST).unwrap();
        assert_eq!(body["etag"], head.e_tag.unwrap());
        assert_eq!(body["size"], 14);
        // Neither an archive nor a manifest to anyone listing the prefix.
        let listed = list(&prefix).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].file_name, ARCHIVE);
        prefix.unmark_condemned(MANIFEST).unwrap();
        assert_eq!(names(&prefix), [MANIFEST, ARCHIVE]);
    }

    #[test]
    fn a_marked_manifest_without_its_archive_goes_with_its_mark_an_unmarked_one_stays() {
        let server = TestServer::start();
        let runtime = runtime();
        let prefix = prefix_on(&server, &runtime, SECRET_KEY);
        backup(&prefix, ARCHIVE, MANIFEST);
        cut_after_the_archive(&prefix, ARCHIVE, MANIFEST);
        // A manifest kept by its user after moving its archive elsewhere: never marked.
        let kept = "docs_20240101_000000.json";
        prefix.put_new(kept, b"{}").unwrap();
        // A cut rotation of another name: not finished by a rotation of `docs`.
        let photos = ("photos_20250101_000000.tar", "photos_20250101_000000.json");
        backup(&prefix, photos.0, photos.1);
        cut_after_the_archive(&prefix, photos.0, photos.1);
        assert!(list(&prefix).unwrap().is_empty(), "no backup shows");

        let finished = prefix.finish_cut_rotations(Some("docs")).unwrap();
        assert_eq!(finished.manifests, [prefix.path_of(MANIFEST)]);
        assert_eq!(finished.marks, [prefix.path_of(&mark_of(MANIFEST))]);
        let mut left = vec![mark_of(photos.1), kept.to_owned(), photos.1.to_owned()];
        left.sort();
        assert_eq!(names(&prefix), left);

        let finished = prefix.finish_cut_rotations(None).unwrap();
        assert_eq!(finished.manifests, [prefix.path_of(photos.1)]);
        assert_eq!(names(&prefix), [kept]);
    }

    #[test]
    fn a_mark_goes_alone_when_its_manifest_changed_or_its_archive_is_there() {
        let server = TestServer::start();
        let runtime = runtime();
        let prefix = prefix_on(&server, &runtime, SECRET_KEY);
        backup(&prefix, ARCHIVE, MANIFEST);
        cut_after_the_archive(&prefix, ARCHIVE, MANIFEST);
        // Replaced since: the same size, another ETag.
        prefix.remove(MANIFEST).unwrap();
        prefix.put_new(MANIFEST, b"{\"manifest\":2}").unwrap();
        // Marked, its archive not deleted yet when the rotation was cut.
        let (archive, manifest) = ("docs_20250102_000000.tar.zst", "docs_20250102_000000.json");
        backup(&prefix, archive, manifest);
        assert!(prefix.mark_condemned(manifest).unwrap());
        // A mark whose manifest is gone, and one with a body no rotation wrote.
        let gone = "docs_20250103_000000.json";
        prefix.put_new(&mark_of(gone), b"{}").unwrap();
        let (junk_archive, junk) = ("docs_20250104_000000.tar", "docs_20250104_000000.json");
        backup(&prefix, junk_archive, junk);
        prefix.remove(junk_archive).unwrap();
        prefix.put_new(&mark_of(junk), b"not json").unwrap();

        let finished = prefix.finish_cut_rotations(Some("docs")).unwrap();
        assert_eq!(finished.manifests, Vec::<std::path::PathBuf>::new());
        assert_eq!(finished.marks.len(), 4, "{finished:?}");
        let mut left = vec![MANIFEST, archive, manifest, junk];
        left.sort();
        assert_eq!(names(&prefix), left);
        assert_eq!(prefix.get(MANIFEST).unwrap(), b"{\"manifest\":2}");
    }
}
