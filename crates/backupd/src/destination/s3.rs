//! A destination that is a prefix of an S3 bucket: each file of a backup set is the object
//! `<prefix>/<file>`. Synchronous like every destination: the calls block their thread on the
//! daemon's runtime (`Handle::block_on`), so they must run on blocking threads, as the engine
//! and the store already do — never on a runtime worker.
//!
//! - An archive is a multipart upload of bounded memory: one part filling, at most
//!   `upload_concurrency` parts in flight; the part size doubles every 1,000 parts so 10,000
//!   are never exceeded. It becomes visible only when completed by `publish`; dropped before,
//!   or failing, the upload is aborted (S3 keeps the parts out of sight meanwhile).
//!   S3 completes a multipart upload without a create-only condition through object_store, so
//!   `publish` checks by HEAD that no object holds the name just before completing; two
//!   writers of one archive name (names carry the second) could still race there.
//! - Manifests are written create-only (`If-None-Match: *`). A server that ignores that header
//!   would let a manifest be replaced silently, so the first `begin` or `put_new` probes it (a
//!   probe object written twice create-only must be refused the second time) and a remote that
//!   fails the probe is refused. A probe that gets no answer (the network) is made again by
//!   the next call, so a whole copy's retry retries it too.
//! - `identity` is the ETag (hashed into `ino`), size and last-modified time; `remove_if_same`
//!   re-checks them by HEAD just before DELETE. S3 has no conditional DELETE everywhere, so an
//!   object replaced between the HEAD and the DELETE (a window of one request) would go.
//! - Object lock (`object_lock_days`): the first archive or manifest written checks that the
//!   bucket has object lock; each object published (the archive once completed, the manifest
//!   once put) gets its retention before it counts, and one that cannot is removed again.
//!   `remove_if_same` reads the object's lock first and keeps a locked object
//!   ([`Removal::Locked`]): in a versioned bucket a DELETE would only add a delete marker.
//! - A rotation marks the manifest it condemns with an object naming it by ETag and size
//!   ([`condemned`]), so that the next rotation finishes one cut between the archive and it.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions,
    PutOptions, PutPayload,
};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::{
    Destination, FileIdentity, Listed, MANIFEST_SIZE_LIMIT, PendingArchive, PublishError, Removal,
    manifest_too_large,
};
use crate::remote::RemoteConfig;
use crate::remote::object_lock::{ObjectLock, ObjectState};
use crate::remote::signed::SignedClient;
use crate::remote::store::part_size_for;

mod condemned;

/// How many manifests a listing reads at once: enough to hide the round trips, few enough
/// for any server's request limits.
const SMALL_READS_AT_ONCE: usize = 8;

/// A prefix of a bucket holding archives and manifests side by side.
pub struct S3Prefix {
    store: Arc<AmazonS3>,
    config: RemoteConfig,
    runtime: Handle,
    /// The create-only probe's answer once there is one (`Err`: the server ignores
    /// If-None-Match). A probe that fails leaves it unknown, so the next attempt probes again.
    create_only: Mutex<Option<Result<(), String>>>,
    /// Object lock calls, made when first needed (it reads the CA file).
    object_lock: OnceLock<Result<ObjectLock, String>>,
    /// Set once the bucket is known to have object lock.
    lockable: OnceLock<()>,
    /// The ETag of each object as first read: a later read must find the same object, so a
    /// restore extracts the very bytes its first pass checked against the manifest.
    first_read: Mutex<HashMap<String, String>>,
}

impl fmt::Debug for S3Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Prefix")
            .field("remote", &self.config.name)
            .field("url", &self.config.url())
            .finish_non_exhaustive()
    }
}

impl S3Prefix {
    /// `runtime` runs the requests; calls block on it from the caller's (blocking) thread.
    pub fn new(store: Arc<AmazonS3>, config: RemoteConfig, runtime: Handle) -> Self {
        Self {
            store,
            config,
            runtime,
            create_only: Mutex::new(None),
            object_lock: OnceLock::new(),
            lockable: OnceLock::new(),
            first_read: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    /// The object key of `file`.
    fn key(&self, file: &str) -> ObjectPath {
        if self.config.prefix.is_empty() {
            ObjectPath::from(file)
        } else {
            ObjectPath::from(format!("{}/{file}", self.config.prefix))
        }
    }

    fn prefix_path(&self) -> Option<ObjectPath> {
        (!self.config.prefix.is_empty()).then(|| ObjectPath::from(self.config.prefix.as_str()))
    }

    fn io_error(&self, error: object_store::Error) -> io::Error {
        to_io(&self.config.name, error)
    }

    /// One small file (a manifest), whole.
    async fn get_small(&self, file: &str) -> io::Result<Vec<u8>> {
        let key = self.key(file);
        let object = self.store.get(&key).await.map_err(|e| self.io_error(e))?;
        if object.meta.size > MANIFEST_SIZE_LIMIT {
            return Err(manifest_too_large(file, object.meta.size));
        }
        let bytes = object.bytes().await.map_err(|e| self.io_error(e))?;
        Ok(bytes.to_vec())
    }

    fn head(&self, file: &str) -> io::Result<object_store::ObjectMeta> {
        let key = self.key(file);
        self.runtime
            .block_on(self.store.head(&key))
            .map_err(|e| self.io_error(e))
    }

    fn object_lock(&self) -> io::Result<&ObjectLock> {
        self.object_lock
            .get_or_init(|| {
                SignedClient::new(&self.config, &self.store)
                    .map(|client| ObjectLock::new(Arc::new(client), &self.config))
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))
    }

    /// With `object_lock_days`: the lock calls, once the bucket is known to have object lock
    /// (checked at the first call; a refusal is not remembered, so a fixed bucket works).
    fn retention(&self) -> io::Result<Option<Retention>> {
        let Some(days) = self.config.object_lock_days else {
            return Ok(None);
        };
        let lock = self.object_lock()?;
        if self.lockable.get().is_none() {
            self.runtime.block_on(lock.check_bucket())?;
            let _ = self.lockable.set(());
        }
        Ok(Some(Retention {
            lock: lock.clone(),
            mode: self.config.object_lock_mode,
            days,
        }))
    }

    /// Whether the server honours `If-None-Match: *`: a second create-only put of one
    /// object must be refused.
    fn check_create_only(&self) -> io::Result<()> {
        let mut known = self
            .create_only
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let answer = match &*known {
            Some(answer) => answer.clone(),
            None => known.insert(self.probe_create_only()?).clone(),
        };
        answer.map_err(io::Error::other)
    }

    /// Puts a probe object twice create-only: the answer is whether the second put was
    /// refused; `Err` if there is no answer (the network, the server, the credentials).
    fn probe_create_only(&self) -> io::Result<Result<(), String>> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let probe = self.key(&format!(".backupd-probe-{}-{stamp}", std::process::id()));
        let create = || PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.runtime.block_on(async {
            self.store
                .put_opts(&probe, PutPayload::from_static(b"probe"), create())
                .await
                .map_err(|e| self.io_error(e))?;
            let second = self
                .store
                .put_opts(&probe, PutPayload::from_static(b"probe"), create())
                .await;
            let _ = self.store.delete(&probe).await;
            match second {
                Err(object_store::Error::AlreadyExists { .. }) => Ok(Ok(())),
                Ok(_) => Ok(Err(format!(
                    "remote {}: the server ignores If-None-Match, so a manifest could be \
                     replaced; backupd refuses such a server",
                    self.config.name
                ))),
                Err(e) => Err(self.io_error(e)),
            }
        })
    }
}

/// An object_store error as an `io::Error` naming the remote; the kinds the destination
/// contract relies on (`NotFound`, `AlreadyExists`) are kept.
fn to_io(remote: &str, error: object_store::Error) -> io::Error {
    let message = error.to_string();
    if IMDS_PATHS.iter().any(|path| message.contains(path)) {
        // object_store says only which request failed; the user needs to know why it was
        // made. No credentials is no permission: another attempt would meet it again.
        return io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("remote {remote}: {message}{NO_CREDENTIALS}"),
        );
    }
    let kind = match &error {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            io::ErrorKind::AlreadyExists
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("remote {remote}: {message}"))
}

/// The instance metadata service's paths for a token and for a role's credentials.
const IMDS_PATHS: [&str; 2] = [
    "/latest/api/token",
    "/latest/meta-data/iam/security-credentials",
];

const NO_CREDENTIALS: &str = " (no credentials were given: neither AWS_ACCESS_KEY_ID and \
    AWS_SECRET_ACCESS_KEY in backupd's environment nor a credentials_file for the remote, so \
    they were asked of the EC2 instance metadata service, which gave none)";

/// A number for an ETag, to stand in `FileIdentity::ino`; the same in every build, as the
/// verify ledger keeps it on disk (`DefaultHasher` may change between Rust releases).
fn etag_hash(etag: Option<&str>) -> u64 {
    use sha2::Digest;
    let Some(etag) = etag else { return 0 };
    let digest = sha2::Sha256::digest(etag.as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// In whole seconds: a listing gives milliseconds, a `HEAD` (`Last-Modified`) only seconds,
/// and a file listed then checked before its removal must be the same file.
fn identity_of(meta: &object_store::ObjectMeta) -> FileIdentity {
    FileIdentity {
        dev: 0,
        ino: etag_hash(meta.e_tag.as_deref()),
        size: meta.size,
        mtime_ns: i128::from(meta.last_modified.timestamp()) * 1_000_000_000,
    }
}

impl Destination for S3Prefix {
    fn location(&self) -> PathBuf {
        PathBuf::from(self.config.url())
    }

    fn whole_without_manifest(&self) -> bool {
        false
    }

    fn held_by_a_provider(&self) -> bool {
        true
    }

    fn finish_cut_rotations_of(&self, name: &str) {
        self.finish_cut_rotations_logged(Some(name));
    }

    fn path_of(&self, file: &str) -> PathBuf {
        PathBuf::from(format!("{}/{file}", self.config.url()))
    }

    fn files(&self) -> io::Result<Vec<(String, u64)>> {
        let listed = self.listing()?.into_iter();
        Ok(listed.map(|listed| (listed.file, listed.size)).collect())
    }

    fn listing(&self) -> io::Result<Vec<Listed>> {
        let prefix = self.prefix_path();
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(prefix.as_ref()))
            .map_err(|e| listing_error(&self.config, e))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|meta| {
                Some(Listed {
                    file: meta.location.filename()?.to_owned(),
                    size: meta.size,
                    // Without its ETag (a server that lists none), a `HEAD` tells it.
                    identity: meta.e_tag.is_some().then(|| identity_of(&meta)),
                })
            })
            .collect())
    }

    fn any_exists(&self, files: &[String]) -> io::Result<bool> {
        for file in files {
            match self.head(file) {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    fn open(&self, file: &str) -> io::Result<Box<dyn Read + Send>> {
        let key = self.key(file);
        let mut first_read = self
            .first_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pinned = first_read.get(file).cloned();
        let replaced = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} was replaced since it was first read",
                    self.path_of(file).display()
                ),
            )
        };
        let options = GetOptions {
            if_match: pinned.clone(),
            ..GetOptions::default()
        };
        let result = match self.runtime.block_on(self.store.get_opts(&key, options)) {
            Ok(result) => result,
            Err(object_store::Error::Precondition { .. }) => return Err(replaced()),
            Err(e) => return Err(self.io_error(e)),
        };
        // Checked here too: not every S3 server honours If-Match.
        match (&pinned, &result.meta.e_tag) {
            (Some(pinned), Some(e_tag)) if pinned != e_tag => return Err(replaced()),
            (Some(_), None) => return Err(replaced()),
            (None, Some(e_tag)) => {
                first_read.insert(file.to_owned(), e_tag.clone());
            }
            _ => {}
        }
        drop(first_read);
        Ok(Box::new(ObjectReader {
            stream: result.into_stream(),
            chunk: Bytes::new(),
            runtime: self.runtime.clone(),
            remote: self.config.name.clone(),
        }))
    }

    fn get(&self, file: &str) -> io::Result<Vec<u8>> {
        self.runtime.block_on(self.get_small(file))
    }

    fn get_each(&self, files: &[String]) -> Vec<io::Result<Vec<u8>>> {
        let reads = futures_util::stream::iter(files).map(|file| self.get_small(file));
        self.runtime
            .block_on(reads.buffered(SMALL_READS_AT_ONCE).collect())
    }

    fn put_new(&self, file: &str, bytes: &[u8]) -> io::Result<()> {
        self.check_create_only()?;
        let key = self.key(file);
        let options = PutOptions {
            mode: PutMode::Create,
            // Not the storage class of the archives: a manifest in an archive class (GLACIER)
            // could not be read back, and every listing needs it.
            ..PutOptions::default()
        };
        let retention = self.retention()?;
        let payload = PutPayload::from(bytes.to_vec());
        self.runtime
            .block_on(self.store.put_opts(&key, payload, options))
            .map_err(|e| self.io_error(e))?;
        if let Some(retention) = retention
            && let Err(e) = self.runtime.block_on(retention.apply(&key))
        {
            // Not locked, so not counted: the next attempt writes it again.
            let _ = self.runtime.block_on(self.store.delete(&key));
            return Err(e);
        }
        Ok(())
    }

    fn begin(&self, archive: &str) -> io::Result<Box<dyn PendingArchive>> {
        // Before any byte goes: a server that would let a manifest be replaced is refused.
        self.check_create_only()?;
        let retention = self.retention()?;
        let key = self.key(archive);
        let options = PutMultipartOptions {
            attributes: self.attributes(),
            ..PutMultipartOptions::default()
        };
        let upload_id = self
            .runtime
            .block_on(self.store.create_multipart_opts(&key, options))
            .map_err(|e| self.io_error(e))?;
        Ok(Box::new(MultipartArchive {
            store: Arc::clone(&self.store),
            runtime: self.runtime.clone(),
            remote: self.config.name.clone(),
            location: self.path_of(archive),
            key,
            upload_id: Some(upload_id),
            first_part_size: self.config.part_size,
            concurrency: self.config.upload_concurrency.max(1),
            buffer: Vec::new(),
            in_flight: VecDeque::new(),
            parts: Vec::new(),
            next_part: 0,
            sent: 0,
            failed: None,
            retention,
        }))
    }

    fn remove(&self, file: &str) -> io::Result<()> {
        let key = self.key(file);
        match self.runtime.block_on(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.io_error(e)),
        }
    }

    fn identity(&self, file: &str) -> io::Result<FileIdentity> {
        self.head(file).map(|meta| identity_of(&meta))
    }

    fn mark_condemned(&self, manifest: &str) -> io::Result<bool> {
        self.mark(manifest)
    }

    fn unmark_condemned(&self, manifest: &str) -> io::Result<()> {
        self.unmark(manifest)
    }

    fn remove_if_same(&self, file: &str, expected: &FileIdentity) -> io::Result<Removal> {
        match self.head(file) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removal::Gone),
            Err(e) => Err(e),
            Ok(meta) if identity_of(&meta) != *expected => Ok(Removal::Replaced),
            Ok(_) => {
                let key = self.key(file);
                match self
                    .runtime
                    .block_on(self.object_lock()?.state(key.as_ref()))?
                {
                    ObjectState::Locked { until } => Ok(Removal::Locked { until }),
                    ObjectState::Gone => Ok(Removal::Gone),
                    ObjectState::Unlocked => self.remove(file).map(|()| Removal::Removed),
                }
            }
        }
    }
}

impl S3Prefix {
    fn attributes(&self) -> Attributes {
        let mut attributes = Attributes::new();
        if let Some(class) = &self.config.storage_class {
            attributes.insert(Attribute::StorageClass, class.clone().into());
        }
        attributes
    }
}

/// A listing's error; one naming the key object_store cannot parse as a path, which fails
/// the whole listing (object_store 0.14 parses every key of a page and offers no raw listing).
fn listing_error(config: &RemoteConfig, error: object_store::Error) -> io::Error {
    use object_store::path::Error as PathError;
    let key = match &error {
        object_store::Error::InvalidPath {
            source:
                PathError::EmptySegment { path }
                | PathError::BadSegment { path, .. }
                | PathError::NonUnicode { path, .. },
        } => Some(path),
        _ => None,
    };
    let Some(key) = key else {
        return to_io(&config.name, error);
    };
    // A common prefix (`host//` of `host//x`) stands for the objects under it.
    let (objects, have, them) = if key.ends_with('/') {
        (format!("the objects under {key:?}"), "have names", "them")
    } else {
        (format!("the object {key:?}"), "has a name", "it")
    };
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "remote {}: {objects} in bucket {} {have} backupd's S3 client cannot read (a \
             \".\", \"..\" or empty segment, or a control character), so nothing in {} can \
             be listed: remove or rename {them}",
            config.name,
            config.bucket,
            config.url()
        ),
    )
}

/// The retention each uploaded object gets.
#[derive(Debug, Clone)]
struct Retention {
    lock: ObjectLock,
    mode: crate::remote::object_lock::LockMode,
    days: u32,
}

impl Retention {
    async fn apply(&self, key: &ObjectPath) -> io::Result<()> {
        self.lock.retain(key.as_ref(), self.mode, self.days).await
    }
}

/// A GET streamed chunk by chunk: memory is one HTTP chunk.
struct ObjectReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    runtime: Handle,
    remote: String,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(to_io(&self.remote, e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// An archive being uploaded in parts.
struct MultipartArchive {
    store: Arc<AmazonS3>,
    runtime: Handle,
    remote: String,
    location: PathBuf,
    key: ObjectPath,
    /// `None` once completed or aborted.
    upload_id: Option<String>,
    first_part_size: u64,
    concurrency: usize,
    /// The part being filled.
    buffer: Vec<u8>,
    /// Parts being sent, in order.
    in_flight: VecDeque<JoinHandle<object_store::Result<PartId>>>,
    /// Parts sent, in order.
    parts: Vec<PartId>,
    next_part: usize,
    /// Bytes handed to parts.
    sent: u64,
    /// The first error; every later write fails with it.
    failed: Option<String>,
    /// Set on the object once completed, before it counts.
    retention: Option<Retention>,
}

impl fmt::Debug for MultipartArchive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultipartArchive")
            .field("remote", &self.remote)
            .field("key", &self.key.as_ref())
            .field("parts", &self.next_part)
            .finish_non_exhaustive()
    }
}

impl MultipartArchive {
    fn part_size(&self) -> usize {
        usize::try_from(part_size_for(self.first_part_size, self.next_part)).unwrap_or(usize::MAX)
    }

    fn fail(&mut self, error: io::Error) -> io::Error {
        self.failed.get_or_insert_with(|| error.to_string());
        error
    }

    /// Waits for the oldest part in flight.
    fn wait_oldest(&mut self) -> io::Result<()> {
        let Some(task) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match self.runtime.block_on(task) {
            Ok(Ok(part)) => {
                self.parts.push(part);
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail(to_io(&self.remote, e))),
            Err(e) => Err(self.fail(io::Error::other(format!("remote {}: {e}", self.remote)))),
        }
    }

    /// Sends the buffer as the next part, once fewer than `concurrency` are in flight.
    fn send_part(&mut self) -> io::Result<()> {
        while self.in_flight.len() >= self.concurrency {
            self.wait_oldest()?;
        }
        let Some(upload_id) = self.upload_id.clone() else {
            return Err(io::Error::other("upload already ended"));
        };
        let data = std::mem::take(&mut self.buffer);
        self.sent += data.len() as u64;
        let (store, key, index) = (Arc::clone(&self.store), self.key.clone(), self.next_part);
        self.next_part += 1;
        self.in_flight.push_back(self.runtime.spawn(async move {
            store
                .put_part(&key, &upload_id, index, PutPayload::from(data))
                .await
        }));
        Ok(())
    }

    /// Stops the parts in flight and aborts the upload, without waiting.
    fn abort_in_background(&mut self) {
        for task in self.in_flight.drain(..) {
            task.abort();
        }
        if let Some(upload_id) = self.upload_id.take() {
            let (store, key) = (Arc::clone(&self.store), self.key.clone());
            self.runtime.spawn(async move {
                if let Err(e) = store.abort_multipart(&key, &upload_id).await {
                    tracing::warn!("could not abort the multipart upload of {key}: {e}");
                }
            });
        }
    }

    fn complete(&mut self, written: u64) -> Result<(), PublishError> {
        let io = |source: io::Error, path: &PathBuf| PublishError::Io {
            path: path.clone(),
            source,
        };
        if !self.buffer.is_empty() || self.next_part == 0 {
            self.send_part().map_err(|e| io(e, &self.location))?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest().map_err(|e| io(e, &self.location))?;
        }
        if self.sent != written {
            return Err(PublishError::Incomplete {
                path: self.location.clone(),
                reason: format!("{} bytes sent, {written} written", self.sent),
            });
        }
        // Completing replaces whatever holds the name: look first (see the module docs).
        match self.runtime.block_on(self.store.head(&self.key)) {
            Ok(_) => return Err(PublishError::Exists(self.location.clone())),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(io(to_io(&self.remote, e), &self.location)),
        }
        let Some(upload_id) = self.upload_id.clone() else {
            return Err(io(io::Error::other("upload already ended"), &self.location));
        };
        let parts = std::mem::take(&mut self.parts);
        self.runtime
            .block_on(self.store.complete_multipart(&self.key, &upload_id, parts))
            .map_err(|e| io(to_io(&self.remote, e), &self.location))?;
        self.upload_id = None;
        let meta = self
            .runtime
            .block_on(self.store.head(&self.key))
            .map_err(|e| io(to_io(&self.remote, e), &self.location))?;
        if meta.size != written {
            return Err(PublishError::Incomplete {
                path: self.location.clone(),
                reason: format!("the object holds {} bytes, {written} written", meta.size),
            });
        }
        if let Some(retention) = &self.retention {
            self.runtime
                .block_on(retention.apply(&self.key))
                .map_err(|e| io(e, &self.location))?;
        }
        Ok(())
    }
}

impl Write for MultipartArchive {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(reason) = &self.failed {
            return Err(io::Error::other(reason.clone()));
        }
        let room = self.part_size().saturating_sub(self.buffer.len());
        let n = buf.len().min(room);
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(self.part_size());
        }
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() >= self.part_size() {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Parts go when full; the last one at publish.
        Ok(())
    }
}

impl PendingArchive for MultipartArchive {
    fn location(&self) -> PathBuf {
        self.location.clone()
    }

    fn file_id(&self) -> Option<(u64, u64)> {
        None
    }

    fn publish(mut self: Box<Self>, written: u64) -> Result<PathBuf, PublishError> {
        match self.complete(written) {
            Ok(()) => Ok(self.location.clone()),
            Err(e) => {
                // Dropping aborts the upload; a completed object that fails the size check
                // is removed, so nothing half-checked keeps the name.
                if self.upload_id.is_none() && !matches!(e, PublishError::Exists(_)) {
                    let _ = self.runtime.block_on(self.store.delete(&self.key));
                }
                Err(e)
            }
        }
    }
}

impl Drop for MultipartArchive {
    fn drop(&mut self) {
        self.abort_in_background();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::CredentialSource;
    use crate::remote::store::build;
    use crate::remote::test_server::ports::refusing_port;
    use crate::remote::test_server::{CuttingProxy, SECRET_KEY, TestServer};

    pub(super) fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    pub(super) fn prefix_on(
        server: &TestServer,
        runtime: &tokio::runtime::Runtime,
        secret: &str,
    ) -> S3Prefix {
        let remote = server.remote("host/a", secret);
        S3Prefix::new(
            build(&remote).unwrap(),
            remote.config,
            runtime.handle().clone(),
        )
    }

    /// Bytes that do not compress, so parts are as large as they say.
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn a_key_object_store_cannot_parse_is_named_escaped_with_what_to_do() {
        let config = RemoteConfig::new("far", "backups", "host");
        for (key, named, fix) in [
            ("host/..", r#"the object "host/..""#, "remove or rename it"),
            (
                "host/bad\u{1}name",
                r#"the object "host/bad\u{1}name""#,
                "remove or rename it",
            ),
            // A common prefix, as a listing with `/` returns for `host//x`.
            (
                "host//",
                r#"the objects under "host//""#,
                "remove or rename them",
            ),
        ] {
            let source = ObjectPath::parse(key).unwrap_err();
            let err = listing_error(&config, object_store::Error::InvalidPath { source });
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            let err = err.to_string();
            let start = format!("remote far: {named} in bucket backups ");
            assert!(err.starts_with(&start), "{err}");
            assert!(err.ends_with(fix), "{err}");
            assert!(
                err.contains("nothing in s3://backups/host can be listed"),
                "{err}"
            );
        }
    }

    #[test]
    fn an_archive_goes_up_in_parts_and_reads_back_and_manifests_are_create_only() {
        let server = TestServer::start();
        let runtime = runtime();
        let prefix = prefix_on(&server, &runtime, SECRET_KEY);
        let data = noise(12 * 1024 * 1024 + 77);
        let name = "docs_20250101_120000.tar.gz";
        let mut pending = prefix.begin(name).unwrap();
        for chunk in data.chunks(100_000) {
            pending.write_all(chunk).unwrap();
        }
        let published = pending.publish(data.len() as u64).unwrap();
        assert_eq!(published, PathBuf::from(format!("s3://unit/host/a/{name}")));
        let on_disk = server.root.path().join("unit/host/a").join(name);
        assert_eq!(std::fs::read(on_disk).unwrap(), data);
        assert_eq!(
            prefix.files().unwrap(),
            [(name.to_owned(), data.len() as u64)]
        );
        let mut back = Vec::new();
        prefix.open(name).unwrap().read_to_end(&mut back).unwrap();
        assert!(back == data, "the object read back differs");
        // Replaced behind its back (by anyone who may write the bucket): a second read, as a
        // restore's after its check, must not get the new bytes.
        let replaced = noise(1000);
        let other = prefix_on(&server, &runtime, SECRET_KEY);
        let key = other.key(name);
        let payload = PutPayload::from(replaced.clone());
        runtime.block_on(other.store.put(&key, payload)).unwrap();
        let mut fresh = Vec::new();
        other.open(name).unwrap().read_to_end(&mut fresh).unwrap();
        assert!(fresh == replaced, "another reader sees the new object");
        let err = prefix
            .open(name)
            .err()
            .expect("the replaced object was read");
        assert!(
            err.to_string()
                .ends_with("was replaced since it was first read"),
            "{err}"
        );

        let manifest = "docs_20250101_120000.tar.gz.manifest.json";
        prefix.put_new(manifest, b"{}").unwrap();
        let again = prefix.put_new(manifest, b"{\"x\":1}").unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists, "{again}");
        assert_eq!(prefix.get(manifest).unwrap(), b"{}");
        assert!(prefix.any_exists(&[manifest.to_owned()]).unwrap());

        let identity = prefix.identity(name).unwrap();
        let other = FileIdentity {
            ino: identity.ino ^ 1,
            ..identity
        };
        assert_eq!(
            prefix.remove_if_same(name, &other).unwrap(),
            Removal::Replaced
        );
        assert_eq!(
            prefix.remove_if_same(name, &identity).unwrap(),
            Removal::Removed
        );
        assert_eq!(
            prefix.remove_if_same(name, &identity).unwrap(),
            Removal::Gone
        );
        assert!(!prefix.any_exists(&[name.to_owned()]).unwrap());
    }

    #[test]
    fn an_upload_dropped_or_short_leaves_no_object() {
        let server = TestServer::start();
        let runtime = runtime();
        let prefix = prefix_on(&server, &runtime, SECRET_KEY);
        let data = noise(6 * 1024 * 1024);
        let mut dropped = prefix.begin("a_20250101_120000.tar.gz").unwrap();
        dropped.write_all(&data).unwrap();
        drop(dropped);
        let mut short = prefix.begin("b_20250101_120000.tar.gz").unwrap();
        short.write_all(&data).unwrap();
        let err = short.publish(data.len() as u64 + 1).unwrap_err();
        assert!(matches!(err, PublishError::Incomplete { .. }), "{err}");
        assert_eq!(prefix.files().unwrap(), []);
        // Aborted: s3s-fs forgets the upload ids (`.upload-<id>.json` in its root).
        let uploads = || {
            std::fs::read_dir(server.root.path())
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(".upload-"))
                .count()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while uploads() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(uploads(), 0, "the multipart uploads were not aborted");
    }

    #[test]
    fn a_wrong_secret_names_the_remote_and_never_shows_the_secret() {
        let server = TestServer::start();
        let runtime = runtime();
        let wrong = "wrong-secret-0b5e";
        let prefix = prefix_on(&server, &runtime, wrong);
        let err = prefix.files().unwrap_err().to_string();
        assert!(err.starts_with("remote unit: "), "{err}");
        assert!(!err.contains(wrong) && !err.contains(SECRET_KEY), "{err}");
        let err = prefix
            .begin("c_20250101_120000.tar.gz")
            .unwrap_err()
            .to_string();
        assert!(!err.contains(wrong), "{err}");
    }

    #[test]
    fn a_create_only_probe_cut_short_is_made_again_by_the_next_attempt() {
        let server = TestServer::start();
        let probe_put = "PUT /unit/host/a/.backupd-probe-";
        let proxy = CuttingProxy::start(server.addr, probe_put, 1);
        let runtime = runtime();
        let mut remote = server.remote("host/a", SECRET_KEY);
        remote.config.endpoint = Some(format!("http://{}", proxy.addr));
        remote.config.retries = 0;
        let prefix = S3Prefix::new(
            build(&remote).unwrap(),
            remote.config,
            runtime.handle().clone(),
        );
        let name = "docs_20250101_120000.tar.gz";
        let err = prefix.begin(name).unwrap_err();
        assert_eq!(proxy.cut(), 1, "the probe's connection was cut: {err}");
        assert!(err.to_string().starts_with("remote unit: "), "{err}");
        assert!(!err.to_string().contains("If-None-Match"), "{err}");

        // As the whole copy's next attempt does: it probes again, and this time gets through.
        let mut pending = prefix.begin(name).unwrap();
        pending.write_all(b"archive").unwrap();
        pending.publish(7).unwrap();
        let manifest = format!("{name}.manifest.json");
        prefix.put_new(&manifest, b"{}").unwrap();
        assert_eq!(prefix.get(&manifest).unwrap(), b"{}");
        let mut files = prefix.files().unwrap();
        files.sort();
        assert_eq!(
            files,
            [(name.to_owned(), 7), (manifest, 2)],
            "no probe left"
        );
    }

    #[test]
    fn without_credentials_a_failed_instance_metadata_lookup_says_none_were_given() {
        let server = TestServer::start();
        let runtime = runtime();
        // A port nothing listens on, as on a machine that is not an EC2 instance.
        let closed = refusing_port();
        let metadata = format!("http://127.0.0.1:{}", closed.port);
        let mut remote = server.remote("host/a", SECRET_KEY);
        remote.credentials = None;
        remote.source = CredentialSource::InstanceMetadata {
            endpoint: Some(metadata.clone()),
        };
        remote.config.retries = 0;
        let prefix = S3Prefix::new(
            build(&remote).unwrap(),
            remote.config,
            runtime.handle().clone(),
        );
        let err = prefix.files().unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::PermissionDenied,
            "not worth retrying"
        );
        let err = err.to_string();
        assert!(
            err.contains(&format!("{metadata}/latest/api/token")),
            "the metadata endpoint given is the one asked: {err}"
        );
        assert!(err.contains(NO_CREDENTIALS), "{err}");

        // Any other failure is told as it is.
        let with_keys = prefix_on(&server, &runtime, "wrong-secret-0b5e");
        let err = with_keys.files().unwrap_err().to_string();
        assert!(!err.contains(NO_CREDENTIALS), "{err}");
    }
}
