//! Turns a `run` request or a stored schedule into a validated [`RunPlan`]. Everything that
//! can be wrong with the configuration is found here, before a single byte is written.

use crate::destination::{Destination, LocalFolder};
use crate::engine::{BackupJob, ExcludeSet, Holes};
use crate::format::{Passphrase, Recipients};
use crate::hooks::JobHooks;
use crate::key_files::{self, Requester};
use crate::notifications::JobNotifications;
use crate::remote::RemoteConfig;
use crate::retention;
use crate::rotation_locks::FolderKey;
use crate::runner::{AfterWrite, RunPlan};
use proto::JobOptions;
use proto::schedule::Schedule;
use proto::schedule_spec::{MAX_NAME_LEN, validate_name};
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a run cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Invalid(String),
    #[error("Backup destination not writable: {path} ({reason})")]
    DestinationNotWritable { path: String, reason: String },
    #[error(transparent)]
    NameInUse(Box<crate::name_owner::NameInUse>),
}

/// How the archives of a run are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// After each source's folder (`/home/me/docs` → `docs`).
    ByFolder,
    /// One name for the one source.
    Fixed(String),
    /// `<prefix>-<folder>` for each source: a schedule with several sources.
    Prefixed(String),
}

impl Naming {
    /// How a stored schedule names its archives: its single source under the schedule's name,
    /// or each of its sources as `<name>-<folder>`.
    pub fn of_schedule(schedule: &Schedule) -> Self {
        if schedule.sources.len() == 1 {
            Naming::Fixed(schedule.name.clone())
        } else {
            Naming::Prefixed(schedule.name.clone())
        }
    }

    /// The name of `source`'s archives (a fixed name as given: [`plan`] checks it).
    pub fn name_of(&self, source: &Path) -> String {
        match self {
            Naming::Fixed(name) => name.clone(),
            Naming::ByFolder => folder_name(source),
            Naming::Prefixed(prefix) => {
                let mut name = format!("{prefix}-{}", folder_name(source));
                name.truncate(MAX_NAME_LEN);
                name
            }
        }
    }
}

/// What a job falls back on where its options set nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Where archives go when neither the job nor `job` names a destination.
    pub destination: PathBuf,
    /// The daemon's configured defaults.
    pub job: JobOptions,
    /// The `[remote.NAME]` tables jobs may name for offsite copies.
    pub remotes: Arc<BTreeMap<String, RemoteConfig>>,
    /// Whose files (a recipients file) this run may read: the client's, else the daemon's.
    pub requester: Requester,
    /// The passphrase a client typed for this one-off run, to encrypt to instead of keys.
    pub passphrase: Option<Passphrase>,
    /// Whether files with holes are stored as GNU sparse entries.
    pub holes: Holes,
}

/// A run of `sources` (absolute paths) with `options`. The destination is checked (and, for a
/// real run, created) on a blocking thread.
pub async fn plan(
    defaults: &Defaults,
    sources: &[String],
    naming: &Naming,
    options: &JobOptions,
    dry_run: bool,
) -> Result<RunPlan, PlanError> {
    let options = &options.clone().or(&defaults.job);
    if sources.is_empty() {
        return Err(PlanError::Invalid("run needs at least one source".into()));
    }
    if matches!(naming, Naming::Fixed(_)) && sources.len() > 1 {
        return Err(PlanError::Invalid(
            "a name applies to one source only; run the sources separately to name each".into(),
        ));
    }
    // Arguments first, the destination after: a mistake is the client's, not a failed run.
    if let Naming::Fixed(name) = naming {
        validate_name(name).map_err(|e| PlanError::Invalid(e.to_string()))?;
    }
    let (options, offsite_only) = &crate::offsite::split(options)?;
    let offsites = crate::offsite::prepare_all(&options.offsite, &defaults.remotes).await?;
    let (excludes, destination) = check_options(options)?;
    let notify =
        JobNotifications::from_options(options).map_err(|e| PlanError::Invalid(e.to_string()))?;
    let recipients = recipients_of(options, defaults).await?;
    let destination: Arc<dyn Destination> = match (offsite_only, offsites.first()) {
        (true, Some(offsite)) => offsite.remote.clone(),
        _ => {
            let destination = destination.unwrap_or_else(|| defaults.destination.clone());
            let folder = destination.clone();
            tokio::task::spawn_blocking(move || ensure_writable(&folder, dry_run))
                .await
                .map_err(|e| PlanError::Invalid(format!("internal error: {e}")))??;
            Arc::new(LocalFolder::new(destination))
        }
    };
    if !options.source_commands.is_empty() && sources.len() > 1 {
        return Err(PlanError::Invalid(
            "command sources apply to one folder source only; run the others separately".into(),
        ));
    }

    let now = chrono::Local::now();
    let (timestamp, utc_offset) = (now.naive_local(), chrono::Offset::fix(now.offset()));
    let mut names = HashSet::new();
    let mut jobs = Vec::with_capacity(sources.len());
    for source in sources {
        let source = absolute(source, "source")?;
        let name = naming.name_of(&source);
        let top = source.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(clash) = options
            .source_commands
            .iter()
            .find(|c| Some(&c.name) == top.as_ref())
        {
            return Err(PlanError::Invalid(format!(
                "command source {:?} has the name of the source folder in the archive",
                clash.name
            )));
        }
        if !names.insert(name.clone()) {
            return Err(PlanError::Invalid(format!(
                "two sources would both write archives named {name:?}; run them separately with --name"
            )));
        }
        jobs.push(BackupJob {
            source,
            name,
            destination: Arc::clone(&destination),
            compression: options.compression(),
            excludes: excludes.clone(),
            timestamp,
            utc_offset,
            // The home's backups folder, whatever the destination.
            never_archive: vec![defaults.destination.clone()],
            recipients: recipients.clone(),
            commands: options.source_commands.clone(),
            holes: defaults.holes,
            name_from_folder: *naming == Naming::ByFolder,
        });
    }
    // In this order: an archive that does not verify must not push older ones out.
    let mut after = Vec::new();
    if options.verify_after {
        after.push(AfterWrite::Verify);
    }
    // After verify (a copy of an archive that does not verify is worth nothing), before
    // rotation (which deletes only local archives older than the one just copied).
    if !offsite_only {
        after.extend(offsites.into_iter().map(AfterWrite::Offsite));
    }
    after.extend(crate::offsite_retention::steps(&after, options));
    // An offsite-only run's archives are the remote's copies: kept by their policy.
    after.push(AfterWrite::Rotate(if *offsite_only {
        crate::offsite_retention::policy(options)
    } else {
        retention::policy(options.retention.as_ref())
    }));
    Ok(RunPlan {
        jobs,
        destination,
        dry_run,
        after,
        schedule: None,
        notify,
        hooks: JobHooks {
            hooks: options.hooks.clone(),
            timeout: std::time::Duration::from_secs(options.hook_timeout_secs()),
        },
        rotation_by_name: BTreeMap::new(),
        remote_rotation_by_name: BTreeMap::new(),
    })
}

/// The run of a stored schedule: its single source under the schedule's name, or each of its
/// sources as `<name>-<folder>`.
pub async fn for_schedule(
    defaults: &Defaults,
    schedule: &Schedule,
    dry_run: bool,
) -> Result<RunPlan, PlanError> {
    let mut plan = plan(
        defaults,
        &schedule.sources,
        &Naming::of_schedule(schedule),
        &schedule.options,
        dry_run,
    )
    .await?;
    plan.schedule = Some(schedule.name.clone());
    Ok(plan)
}

/// Checks the job options the protocol could not (compression was checked as it was read),
/// without touching the disk.
fn check_options(options: &JobOptions) -> Result<(ExcludeSet, Option<PathBuf>), PlanError> {
    let excludes =
        ExcludeSet::new(&options.exclude).map_err(|e| PlanError::Invalid(e.to_string()))?;
    let destination = options
        .destination
        .as_deref()
        .map(|d| absolute(d, "destination"))
        .transpose()?;
    check_command_sources(&options.source_commands)?;
    if options.hook_timeout == Some(0) {
        return Err(PlanError::Invalid(format!(
            "hook_timeout {}",
            proto::job::ZERO_HOOK_TIMEOUT
        )));
    }
    Ok((excludes, destination))
}

/// The recipients a job encrypts to: the passphrase of a one-off run, or its `encrypt_to`
/// keys and those of its `encrypt_to_file` (read now, by the file rules of [`key_files`]);
/// `None` when it names none.
async fn recipients_of(
    options: &JobOptions,
    defaults: &Defaults,
) -> Result<Option<Recipients>, PlanError> {
    let mut keys = options.encrypt_to.clone();
    if let Some(passphrase) = &defaults.passphrase {
        if !keys.is_empty() || options.encrypt_to_file.is_some() {
            // age allows no other recipient beside a passphrase.
            return Err(PlanError::Invalid(
                "encrypt to a passphrase or to keys (--encrypt-to, --encrypt-to-file), not both"
                    .into(),
            ));
        }
        return Ok(Some(Recipients::passphrase(passphrase.clone())));
    }
    if let Some(file) = options.encrypt_to_file.clone() {
        let requester = defaults.requester;
        let read =
            tokio::task::spawn_blocking(move || key_files::read_recipients(&file, requester))
                .await
                .map_err(|e| PlanError::Invalid(format!("internal error: {e}")))?;
        keys.extend(read.map_err(|e| PlanError::Invalid(e.to_string()))?);
    }
    if keys.is_empty() {
        return Ok(None);
    }
    Recipients::parse(keys.iter().map(String::as_str))
        .map(Some)
        .map_err(|e| PlanError::Invalid(e.to_string()))
}

/// Each command source names one file by the name rule, once, and has a command.
fn check_command_sources(commands: &[proto::job::CommandSource]) -> Result<(), PlanError> {
    let mut seen = HashSet::new();
    for command in commands {
        validate_name(&command.name).map_err(|_| {
            PlanError::Invalid(format!(
                "invalid command source name {:?}: one file name of letters, digits, '.', '_' and '-', not starting with '.'",
                command.name
            ))
        })?;
        if !seen.insert(&command.name) {
            return Err(PlanError::Invalid(format!(
                "two command sources are named {:?}",
                command.name
            )));
        }
        if command.command.first().is_none_or(String::is_empty) {
            return Err(PlanError::Invalid(format!(
                "command source {:?} has no command",
                command.name
            )));
        }
    }
    Ok(())
}

pub fn absolute(path: &str, what: &str) -> Result<PathBuf, PlanError> {
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(PlanError::Invalid(format!(
            "{what} must be an absolute path: {path}"
        )))
    }
}

/// The stored schedules that write archives into the local `folder` (however it is spelled),
/// each with its options, the configured defaults filled in. Blocking: each schedule's
/// destination is looked up.
pub fn schedules_writing_into<'a>(
    schedules: &'a [Arc<Schedule>],
    defaults: &Defaults,
    folder: &Path,
) -> Vec<(&'a Schedule, JobOptions)> {
    let folder = FolderKey::of(folder);
    let mut writing = Vec::new();
    for schedule in schedules {
        let options = schedule.options.clone().or(&defaults.job);
        // An offsite-only schedule writes nothing into a folder.
        let Ok((options, false)) = crate::offsite::split(&options) else {
            continue;
        };
        let destination = (options.destination.as_ref())
            .map_or_else(|| defaults.destination.clone(), PathBuf::from);
        if FolderKey::of(&destination) == folder {
            writing.push((schedule.as_ref(), options));
        }
    }
    writing
}

/// The names of the archives `schedule` writes, one per source.
pub fn archive_names(schedule: &Schedule) -> Vec<String> {
    let naming = Naming::of_schedule(schedule);
    (schedule.sources.iter())
        .map(|source| naming.name_of(Path::new(source)))
        .collect()
}

/// The first of `others` that writes archives under a name `schedule` writes too, with that
/// name. Rotation goes by name, so each schedule's rotation would delete the other's backups
/// (`web` with sources `…/prod` and `…/other` writes `web-prod`, as a schedule `web-prod`
/// does).
pub fn shares_archive_names<'a>(
    schedule: &Schedule,
    others: impl IntoIterator<Item = &'a Schedule>,
) -> Option<(&'a Schedule, String)> {
    let names = archive_names(schedule);
    others.into_iter().find_map(|other| {
        let shared = archive_names(other)
            .into_iter()
            .find(|name| names.contains(name))?;
        Some((other, shared))
    })
}

/// The archive name for a source: its folder name, with characters a name may not hold
/// replaced by `_` (`my docs` → `my_docs`). A name with characters beyond ASCII also gets 8
/// hex digits of its SHA-256 (`照片` → `__-7b50017a`): otherwise every folder named in another
/// script of the same length would share one name, and so one rotation.
pub fn folder_name(source: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let folder = last_folder(source);
    let bytes = folder.as_bytes();
    let cleaned: String = folder
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if bytes.is_ascii() {
        let name: String = trimmed.chars().take(MAX_NAME_LEN).collect();
        return if name.is_empty() {
            "backup".to_owned()
        } else {
            name
        };
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let kept: String = trimmed.chars().take(MAX_NAME_LEN - tag.len() - 1).collect();
    if kept.is_empty() {
        tag
    } else {
        format!("{kept}-{tag}")
    }
}

/// The last folder `source` names, `..` and `.` resolved as written (`/srv/a/..` → `srv`);
/// empty for `/`.
fn last_folder(source: &Path) -> std::ffi::OsString {
    use std::path::Component;
    let mut folders = Vec::new();
    for part in source.components() {
        match part {
            Component::Normal(name) => folders.push(name),
            Component::ParentDir => {
                folders.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    folders
        .last()
        .map(|name| name.to_os_string())
        .unwrap_or_default()
}

/// Fails fast when the destination cannot take archives. A real run creates it when missing
/// (as the original backup script does); a dry run only checks.
fn ensure_writable(destination: &Path, dry_run: bool) -> Result<(), PlanError> {
    let refuse = |reason: String| PlanError::DestinationNotWritable {
        path: destination.display().to_string(),
        reason,
    };
    let existing = if dry_run {
        destination
            .ancestors()
            .find(|dir| dir.exists())
            .unwrap_or(Path::new("/"))
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(destination)
            .map_err(|e| refuse(e.to_string()))?;
        destination
    };
    if !existing.is_dir() {
        return Err(refuse(format!("{} is not a directory", existing.display())));
    }
    let access = rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK;
    rustix::fs::access(existing, access).map_err(|e| refuse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid_file_names() {
        assert_eq!(folder_name(Path::new("/home/me/projects")), "projects");
        assert_eq!(folder_name(Path::new("/home/me/my docs")), "my_docs");
        assert_eq!(folder_name(Path::new("/home/me/.config")), "config");
        assert_eq!(folder_name(Path::new("/")), "backup");
        let long = format!("/{}", "x".repeat(100));
        assert_eq!(folder_name(Path::new(&long)).len(), MAX_NAME_LEN);
        assert_eq!(folder_name(Path::new("/srv/a/sub/..")), "a");
        assert_eq!(folder_name(Path::new("/srv/a/./")), "a");
        for path in ["/a/é", "/a/...", "/srv/data", "/a/照片", "/a/\u{e9}t\u{e9}"] {
            let name = folder_name(Path::new(path));
            assert!(validate_name(&name).is_ok(), "{path} -> {name}");
        }
    }

    #[test]
    fn folders_named_beyond_ascii_keep_names_of_their_own() {
        use std::os::unix::ffi::OsStrExt;
        // Same length, every character replaced: one name (and one rotation) before.
        let photos = folder_name(Path::new("/home/me/照片"));
        let documents = folder_name(Path::new("/home/me/文档"));
        assert_ne!(photos, documents);
        assert_eq!(photos, "__-7b50017a", "as README shows");
        let cafe = folder_name(Path::new("/srv/Café"));
        assert!(cafe.starts_with("Caf_-"), "{cafe}");
        assert_ne!(cafe, folder_name(Path::new("/srv/Cafè")));
        // Bytes that are not UTF-8 are told apart by the bytes, not by their lossy text.
        let ff = std::ffi::OsStr::from_bytes(b"/srv/x\xff");
        let fe = std::ffi::OsStr::from_bytes(b"/srv/x\xfe");
        assert_ne!(folder_name(Path::new(ff)), folder_name(Path::new(fe)));
        let long = format!("/{}", "é".repeat(100));
        let name = folder_name(Path::new(&long));
        assert!(
            name.len() <= MAX_NAME_LEN && validate_name(&name).is_ok(),
            "{name}"
        );
    }

    #[test]
    fn a_dry_run_checks_the_destination_without_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a/b");
        assert!(ensure_writable(&missing, true).is_ok());
        assert!(!missing.exists());
        assert!(ensure_writable(&missing, false).is_ok());
        assert!(missing.is_dir());
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let under_file = file.join("dest");
        let err = ensure_writable(&under_file, false).unwrap_err();
        assert!(matches!(err, PlanError::DestinationNotWritable { .. }));
        assert!(
            err.to_string()
                .starts_with("Backup destination not writable: ")
        );
        assert!(ensure_writable(&under_file, true).is_err());
    }

    fn defaults_in(dir: &Path) -> Defaults {
        Defaults {
            destination: dir.to_owned(),
            job: JobOptions::default(),
            remotes: Arc::default(),
            requester: Requester::daemon(),
            passphrase: None,
            holes: Holes::Kept,
        }
    }

    #[tokio::test]
    async fn configured_defaults_apply_where_a_job_sets_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let configured = dir.path().join("configured");
        let defaults = Defaults {
            destination: dir.path().join("home-backups"),
            job: JobOptions {
                destination: Some(configured.display().to_string()),
                compression: Some(proto::Compression::of(proto::Codec::Zstd)),
                verify_after: true,
                ..JobOptions::default()
            },
            remotes: Arc::default(),
            requester: Requester::daemon(),
            passphrase: None,
            holes: Holes::Kept,
        };
        let sources = ["/srv/a".to_owned()];
        let planned = plan(
            &defaults,
            &sources,
            &Naming::ByFolder,
            &JobOptions::default(),
            true,
        )
        .await
        .unwrap();
        assert_eq!(planned.destination.location(), configured);
        assert_eq!(planned.jobs[0].compression.codec(), proto::Codec::Zstd);
        assert_eq!(planned.after[0], AfterWrite::Verify);
        let own = JobOptions {
            compression: Some(proto::Compression::of(proto::Codec::None)),
            ..JobOptions::default()
        };
        let planned = plan(&defaults, &sources, &Naming::ByFolder, &own, true)
            .await
            .unwrap();
        assert_eq!(planned.jobs[0].compression.codec(), proto::Codec::None);
    }

    #[tokio::test]
    async fn schedules_with_several_sources_prefix_each_archive_name() {
        let dir = tempfile::tempdir().unwrap();
        let sources = vec!["/srv/a".to_owned(), "/home/b".to_owned()];
        let plan = plan(
            &defaults_in(dir.path()),
            &sources,
            &Naming::Prefixed("nightly".into()),
            &JobOptions::default(),
            true,
        )
        .await
        .unwrap();
        let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["nightly-a", "nightly-b"]);
    }

    #[tokio::test]
    async fn verification_comes_before_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let sources = vec!["/srv/a".to_owned()];
        let plan_with = |verify_after| {
            let options = JobOptions {
                verify_after,
                ..JobOptions::default()
            };
            let sources = sources.clone();
            let defaults = defaults_in(dir.path());
            async move {
                plan(&defaults, &sources, &Naming::ByFolder, &options, true)
                    .await
                    .unwrap()
                    .after
            }
        };
        let policy = retention::policy(None);
        assert_eq!(
            plan_with(true).await,
            [AfterWrite::Verify, AfterWrite::Rotate(policy)]
        );
        assert_eq!(plan_with(false).await, [AfterWrite::Rotate(policy)]);
    }

    #[tokio::test]
    async fn recipients_come_from_keys_and_a_file_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = |_| age::x25519::Identity::generate().to_public().to_string();
        let (a, b): (String, String) = (key(0), key(1));
        let file = dir.path().join("recipients.txt");
        std::fs::write(&file, format!("# team\n{b}\n")).unwrap();
        let options = JobOptions {
            encrypt_to: vec![a.clone()],
            encrypt_to_file: Some(file.display().to_string()),
            ..JobOptions::default()
        };
        let sources = ["/srv/a".to_owned()];
        let planned = plan(
            &defaults_in(dir.path()),
            &sources,
            &Naming::ByFolder,
            &options,
            true,
        )
        .await
        .unwrap();
        let recipients = planned.jobs[0].recipients.as_ref().unwrap();
        assert_eq!(recipients.public_keys(), [a, b]);
        assert!(planned.jobs[0].names().archive.ends_with(".tar.gz.age"));

        let bad = JobOptions {
            encrypt_to: vec!["AGE-SECRET-KEY-1NOTAPUBLICKEY".into()],
            ..JobOptions::default()
        };
        let err = plan(
            &defaults_in(dir.path()),
            &sources,
            &Naming::ByFolder,
            &bad,
            true,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("where a recipient goes"), "{err}");
        assert!(!err.to_string().contains("NOTAPUBLICKEY"), "{err}");
        let plain = plan(
            &defaults_in(dir.path()),
            &sources,
            &Naming::ByFolder,
            &JobOptions::default(),
            true,
        )
        .await
        .unwrap();
        assert!(plain.jobs[0].recipients.is_none());
    }

    #[test]
    fn bad_options_are_found_before_any_write() {
        let bad = |options: JobOptions| check_options(&options).unwrap_err();
        assert!(matches!(
            bad(JobOptions {
                exclude: vec!["a/**/[".into()],
                ..JobOptions::default()
            }),
            PlanError::Invalid(_)
        ));
        bad(JobOptions {
            exclude: vec!["[x".into()],
            ..JobOptions::default()
        });
        bad(JobOptions {
            destination: Some("relative".into()),
            ..JobOptions::default()
        });
    }

    #[test]
    fn command_sources_need_valid_unique_names_and_a_command() {
        let with = |name: &str, command: &[&str]| JobOptions {
            source_commands: vec![proto::job::CommandSource {
                name: name.into(),
                command: command.iter().map(|w| (*w).to_owned()).collect(),
            }],
            ..JobOptions::default()
        };
        assert!(check_options(&with("db.sql", &["pg_dump", "app"])).is_ok());
        for bad in ["", "a/b", "..", ".hidden", "x y"] {
            let err = check_options(&with(bad, &["true"])).unwrap_err();
            assert!(
                err.to_string().contains("invalid command source name"),
                "{bad}: {err}"
            );
        }
        assert!(check_options(&with("db.sql", &[])).is_err());
        let mut twice = with("db.sql", &["true"]);
        twice.source_commands.push(twice.source_commands[0].clone());
        assert!(
            check_options(&twice)
                .unwrap_err()
                .to_string()
                .contains("two command sources")
        );
    }
}
