//! Offsite copies: after a local archive is published (and verified when asked), each offsite
//! remote of the job gets the archive, then its manifest, written last and create-only — a
//! remote copy counts only once its manifest is there. Each request is retried by object_store
//! (backoff on 5xx, SlowDown, timeouts); a copy that still fails midway is retried whole a few
//! times, its multipart upload aborted each time. The local archive stays whatever happens.
//!
//! The same step also sends archives of the job's name that an earlier run could not send
//! (the remote lacks them whole) and the remote's retention keeps, so a failed upload is caught
//! up by the next run.
//!
//! Synchronous, on the blocking thread the runner gives it, like the engine.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use proto::response::OffsiteUpload;
use sha2::{Digest, Sha256};

use crate::destination::{ArchiveInfo, Destination, PendingArchive, S3Prefix, list_named};
use crate::format::naming::manifest_name_for;
use crate::format::{Manifest, TIMESTAMP_FORMAT};
use crate::plan::PlanError;
use crate::remote::{self, RemoteConfig, RemoteError};
use crate::store::{self, Counted, RetentionPolicy};

/// Attempts of a whole copy (the first and the retries).
const COPY_ATTEMPTS: u32 = 3;
/// Wait before the first retry of a whole copy; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The read buffer between the local archive and the upload: small, since the upload keeps
/// its own part buffers (`part_size × (upload_concurrency + 1)`), which are the memory bound.
const CHUNK: usize = 64 << 10;

/// An offsite remote ready for uploads: its name as the job gives it, and the destination.
#[derive(Clone)]
pub struct Offsite {
    pub spec: String,
    pub remote: Arc<S3Prefix>,
}

impl fmt::Debug for Offsite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offsite")
            .field("spec", &self.spec)
            .field("remote", &self.remote)
            .finish()
    }
}

/// Two steps are the same when they name the same remote.
impl PartialEq for Offsite {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for Offsite {}

/// Resolves `spec` (credentials included) and builds its client; blocking (it may read a
/// credentials file and a CA file). `runtime` runs the requests.
pub fn prepare(
    spec: &str,
    remotes: &BTreeMap<String, RemoteConfig>,
    runtime: tokio::runtime::Handle,
) -> Result<Offsite, RemoteError> {
    let resolved = remote::resolve(spec, remotes)?;
    let store = remote::store::build(&resolved)?;
    Ok(Offsite {
        spec: spec.to_owned(),
        remote: Arc::new(S3Prefix::new(store, resolved.config, runtime)),
    })
}

/// Why one copy attempt failed.
#[derive(Debug, thiserror::Error)]
enum CopyError {
    #[error("cancelled")]
    Cancelled,
    /// Worth another attempt (the network, the server).
    #[error("{0}")]
    Transient(String),
    /// Another attempt would fail the same way (credentials, a local archive that does not
    /// match its manifest).
    #[error("{0}")]
    Permanent(String),
}

impl From<io::Error> for CopyError {
    fn from(e: io::Error) -> Self {
        if is_permanent(e.kind()) {
            Self::Permanent(e.to_string())
        } else {
            Self::Transient(e.to_string())
        }
    }
}

/// Errors another attempt would meet again: credentials, or a bucket without the object lock
/// the remote asks for.
fn is_permanent(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported
    )
}

/// Copies `archive` (a file of `local`) and its manifest to `offsite`, retrying a failed copy
/// whole; the report says how it went.
pub fn copy(
    local: &dyn Destination,
    archive: &str,
    offsite: &Offsite,
    cancel: &AtomicBool,
) -> OffsiteUpload {
    let started = Instant::now();
    let mut report = OffsiteUpload {
        remote: offsite.spec.clone(),
        url: offsite.remote.path_of(archive).display().to_string(),
        ok: false,
        bytes: 0,
        duration_ms: 0,
        retries: 0,
        error: None,
        already_there: false,
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        match copy_once(local, archive, offsite.remote.as_ref(), cancel) {
            Ok(sent) => {
                report.ok = true;
                report.already_there = sent.is_none();
                report.bytes = sent.unwrap_or(0);
                break;
            }
            Err(CopyError::Transient(reason)) if report.retries + 1 < COPY_ATTEMPTS => {
                tracing::warn!(
                    "Upload of {archive} to {} failed, retrying in {}s: {reason}",
                    offsite.spec,
                    backoff.as_secs()
                );
                if !sleep_unless_cancelled(backoff, cancel) {
                    report.error = Some("cancelled".into());
                    break;
                }
                backoff *= 2;
                report.retries += 1;
            }
            Err(e) => {
                report.error = Some(e.to_string());
                break;
            }
        }
    }
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

/// The archives of `name` in `local` that `offsite` lacks whole ([`is_there`]), newest first,
/// leaving out `except` (this run's own, copied already) and, given the policy the remote's
/// rotation `keeps` by, those it would delete again at once: a remote that keeps fewer
/// backups than the folder is not sent the older ones every run. Errors listing either side:
/// none.
pub fn missing(
    local: &dyn Destination,
    name: &str,
    except: &str,
    offsite: &Offsite,
    keeps: Option<&RetentionPolicy>,
) -> io::Result<Vec<String>> {
    let copies = list_named(offsite.remote.as_ref(), Some(name))?;
    let mut lacking: Vec<ArchiveInfo> = list_named(local, Some(name))?
        .into_iter()
        .filter(|a| a.file_name != except && a.manifest.is_some())
        .filter(|a| !is_there(a, &copies))
        .collect();
    if let Some(policy) = keeps {
        // As that rotation plans: the run's own copy is kept, and only those older count.
        let own = crate::format::naming::parse_archive_name(except)
            .and_then(|own| NaiveDateTime::parse_from_str(&own.stamp, TIMESTAMP_FORMAT).ok());
        let mut after_sending: Vec<ArchiveInfo> = (copies.into_iter())
            .filter(|c| c.file_name != except && own.is_none_or(|own| c.timestamp < own))
            .collect();
        after_sending.extend(lacking.iter().cloned());
        let now = chrono::Local::now().fixed_offset();
        let plan =
            store::plan_rotation_by(&after_sending, &|_| *policy, Counted::WithManifest, now);
        lacking.retain(|a| plan.keep.iter().any(|kept| kept.path == a.path));
    }
    lacking.reverse();
    Ok(lacking.into_iter().map(|a| a.file_name).collect())
}

/// Whether `archive` (a local one, with its manifest) is on the remote whole, among `copies`
/// (the remote's archives of its name): under its name, with a manifest of the same backup
/// and an object of the size that records. A manifest alone (its archive removed by hand or
/// by a lifecycle rule), or another backup's of the same name, is no copy of it; one that
/// cannot be read beside an object of the right size is.
pub fn is_there(archive: &ArchiveInfo, copies: &[ArchiveInfo]) -> bool {
    let Some(ours) = &archive.manifest else {
        return false;
    };
    copies.iter().any(|copy| {
        let same = match &copy.manifest {
            Some(theirs) => same_backup(theirs, ours),
            // One it cannot read (an archive storage class) is taken on the listing's word.
            None => copy.manifest_unread,
        };
        copy.file_name == archive.file_name && copy.size_bytes == ours.size_bytes && same
    })
}

/// Whether two manifests (a local one, and one as the provider reads it) are of one backup.
fn same_backup(a: &Manifest, b: &Manifest) -> bool {
    (a.checksum_sha256.as_str(), a.size_bytes) == (b.checksum_sha256.as_str(), b.size_bytes)
}

/// One attempt: `Ok(None)` when the remote has the archive and its manifest already,
/// `Ok(Some(bytes))` once both are sent.
fn copy_once(
    local: &dyn Destination,
    archive: &str,
    remote: &S3Prefix,
    cancel: &AtomicBool,
) -> Result<Option<u64>, CopyError> {
    let manifest_name = manifest_name_for(archive);
    let local_bytes = local.get(&manifest_name)?;
    let unreadable = |e: serde_json::Error| {
        CopyError::Permanent(format!(
            "the local manifest {manifest_name} is unreadable: {e}"
        ))
    };
    let manifest = Manifest::from_json(&local_bytes).map_err(unreadable)?;
    if remote.any_exists(std::slice::from_ref(&manifest_name))? {
        already_there(remote, &manifest_name, &manifest)?;
        let archive_there = remote.identity(archive).map(|object| object.size);
        if archive_there.is_ok_and(|size| size == manifest.size_bytes) {
            return Ok(None);
        }
        // The manifest outlived its archive: the archive is sent again, under it.
    }
    let manifest_bytes = if manifest.encryption.is_some() {
        manifest
            .as_a_provider_reads_it()
            .to_json()
            .map_err(unreadable)?
    } else {
        local_bytes
    };
    let mut reader = local.open(archive)?;
    let mut pending = remote.begin(archive)?;
    let sent = stream(&mut *reader, pending.as_mut(), cancel)?;
    if sent.1 != manifest.checksum_sha256 {
        return Err(CopyError::Permanent(format!(
            "the local archive {archive} no longer matches its manifest's SHA-256"
        )));
    }
    // An archive without its manifest is a copy an earlier attempt left unfinished: not a
    // backup yet, so it is replaced, but only by one that is whole (the local archive may
    // have rotted since; that copy may be the better one).
    remote.remove(archive)?;
    pending.publish(sent.0).map_err(|e| match &e {
        crate::destination::PublishError::Io { source, .. } if is_permanent(source.kind()) => {
            CopyError::Permanent(e.to_string())
        }
        _ => CopyError::Transient(e.to_string()),
    })?;
    match remote.put_new(&manifest_name, &manifest_bytes) {
        Ok(()) => {}
        // Another run sent the same manifest meanwhile, or it was there already.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            already_there(remote, &manifest_name, &manifest)?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Some(sent.0))
}

/// Whether the backup whose manifest the remote holds under `manifest_name` is `ours`: a
/// backup of the same name and second from elsewhere (another daemon or destination sharing
/// the prefix) is not this one, and this one is not on the remote.
fn already_there(remote: &S3Prefix, manifest_name: &str, ours: &Manifest) -> Result<(), CopyError> {
    let theirs = Manifest::from_json(&remote.get(manifest_name)?).ok();
    if theirs.is_some_and(|theirs| same_backup(&theirs, ours)) {
        return Ok(());
    }
    Err(CopyError::Permanent(format!(
        "the remote already holds another backup named {manifest_name} (another daemon, or a \
         run into another folder, wrote that name there: give each a prefix of its own); this \
         one was not copied"
    )))
}

/// Copies `reader` into `pending`, hashing; `(bytes, sha256 hex)`.
fn stream(
    reader: &mut dyn Read,
    pending: &mut dyn PendingArchive,
    cancel: &AtomicBool,
) -> Result<(u64, String), CopyError> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; CHUNK];
    let mut total = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(CopyError::Cancelled);
        }
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hasher.update(&buffer[..n]);
        pending.write_all(&buffer[..n])?;
        total += n as u64;
    }
    let digest = hasher.finalize();
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok((total, hex))
}

/// Sleeps `duration` unless cancelled first; `false` if cancelled.
fn sleep_unless_cancelled(duration: Duration, cancel: &AtomicBool) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    !cancel.load(Ordering::Relaxed)
}

/// A job's options with `--destination s3://…` turned into its offsite-only form, and
/// whether the job writes to its remote only. Checks what needs no I/O: a known remote name or
/// a valid `s3://` spec, no remote twice, exactly one remote for `--offsite-only`.
pub fn split(options: &proto::JobOptions) -> Result<(proto::JobOptions, bool), PlanError> {
    let mut options = options.clone();
    let mut offsite_only = options.offsite_only;
    if let Some(remote) = options
        .destination
        .take_if(|destination| destination.starts_with("s3://"))
    {
        offsite_only = true;
        if !options.offsite.contains(&remote) {
            options.offsite.insert(0, remote);
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = options.offsite.iter().find(|spec| !seen.insert(*spec)) {
        return Err(PlanError::Invalid(format!(
            "offsite remote {twice} is named twice"
        )));
    }
    if offsite_only && options.offsite.len() != 1 {
        return Err(PlanError::Invalid(
            "--offsite-only writes to exactly one remote: give one --offsite NAME|s3://BUCKET/PREFIX"
                .into(),
        ));
    }
    if offsite_only {
        // No local copy: a configured default destination does not apply.
        options.destination = None;
    }
    Ok((options, offsite_only))
}

/// Resolves and builds every remote of `specs` (on a blocking thread: credentials and CA
/// files are read), in order.
pub async fn prepare_all(
    specs: &[String],
    remotes: &Arc<BTreeMap<String, RemoteConfig>>,
) -> Result<Vec<Offsite>, PlanError> {
    for spec in specs {
        remote::check_spec(spec, remotes).map_err(|e| PlanError::Invalid(e.to_string()))?;
    }
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let (specs, remotes) = (specs.to_vec(), Arc::clone(remotes));
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        specs
            .iter()
            .map(|spec| prepare(spec, &remotes, runtime.clone()))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| PlanError::Invalid(format!("internal error: {e}")))?
    .map_err(|e| PlanError::Invalid(e.to_string()))
}
