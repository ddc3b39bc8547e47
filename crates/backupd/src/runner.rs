//! Runs a set of backups, one per source, concurrently up to the daemon's job limit: each on a
//! blocking thread through the archive engine, then the plan's steps after a successful write.
//! Logs the original backup script's lines, streams events, and sums the outcome up in a
//! report. Both `run` requests and schedules come here.

use crate::destination::{self, ArchiveInfo, Destination};
use crate::engine::{self, BackupJob, BackupOutcome, EngineError};
use crate::events::EventSink;
use crate::format::ArchiveNames;
use crate::hooks::JobHooks;
use crate::jobs::{Job, JobGuard, NewJob};
use crate::notifications::{self, JobNotifications, job_log};
use crate::outcome::JobOutcome;
use crate::retention::{self, Rotated, RunScope};
use crate::rotation_locks::{RepairUnfinished, Unfinished};
use crate::state::Daemon;
use crate::store::{self, RetentionPolicy};
use chrono::NaiveDateTime;
use proto::Event;
use proto::event::JobRef;
use proto::response::{OffsiteError, OffsiteStep, RunReport, SourceReport};
use proto::size::human_size;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::broadcast;

/// What to run: validated jobs sharing one destination, and what to do after each.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub jobs: Vec<BackupJob>,
    pub destination: Arc<dyn Destination>,
    pub dry_run: bool,
    /// Done in order after each source's archive is written; the first that fails a source
    /// ends its list.
    pub after: Vec<AfterWrite>,
    /// The schedule the run is for, if any: its jobs carry the name.
    pub schedule: Option<String>,
    /// Who hears how each job ended.
    pub notify: JobNotifications,
    /// Commands run before and after each job.
    pub hooks: JobHooks,
    /// Names whose rotation keeps another policy than `after`'s: those a stored schedule
    /// writes into the destination, for a one-off run given no retention of its own.
    pub rotation_by_name: std::collections::BTreeMap<String, RetentionPolicy>,
    /// The same for the copies on a remote (by its `s3://` URL) a stored schedule copies
    /// the name to.
    pub remote_rotation_by_name: std::collections::BTreeMap<(String, String), RetentionPolicy>,
}

impl RunPlan {
    /// The steps after a job of `name`'s archive is written.
    fn after_for(&self, name: &str) -> Vec<AfterWrite> {
        let own = self.rotation_by_name.get(name);
        let own_remote = |offsite: &crate::offsite::Offsite| {
            let key = (offsite.remote.config().url(), name.to_owned());
            self.remote_rotation_by_name.get(&key).copied()
        };
        (self.after.iter())
            .map(|step| match (step, own) {
                (AfterWrite::Rotate(_), Some(policy)) => AfterWrite::Rotate(*policy),
                (AfterWrite::RotateRemote(offsite, policy), _) => AfterWrite::RotateRemote(
                    offsite.clone(),
                    own_remote(offsite).unwrap_or(*policy),
                ),
                _ => step.clone(),
            })
            .collect()
    }
}

/// A step after an archive is published. Offsite copies and hooks are more of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterWrite {
    /// Read the new archive back against its manifest; a failure fails the source.
    Verify,
    /// Delete older archives of the name by this policy; never fails the source (on a remote
    /// destination, `--offsite-only`, a rotation that cannot run is an offsite failure).
    Rotate(RetentionPolicy),
    /// Copy the archive and its manifest to a remote (and any this remote lacks of the
    /// name); a failure marks the run `completed with offsite failure`, never fails the
    /// source.
    Offsite(crate::offsite::Offsite),
    /// Rotate the copies of the name on a remote by this policy, once this run's copies to it
    /// all arrived; never fails the source, but one that cannot run is an offsite failure.
    RotateRemote(crate::offsite::Offsite, RetentionPolicy),
}

/// Runs every job of the plan and reports; never fails as a whole, each source succeeds or
/// fails on its own. A real run registers all its jobs first, so that they can be listed and
/// cancelled even while they wait for a job slot, and tells the client their ids.
pub async fn execute(daemon: &Daemon, plan: RunPlan, events: &EventSink) -> RunReport {
    let dry_run = plan.dry_run;
    let after = &plan.after;
    // Each job's own, in the order of the jobs.
    let afters: Vec<_> = (plan.jobs.iter())
        .map(|job| plan.after_for(&job.name))
        .collect();
    // The retention the summary names: the first job's (a stored schedule's, for a one-off
    // run of its name), as most runs have one.
    let shown_retention = retention_days(afters.first().map_or(after, Vec::as_slice));
    let notify = &plan.notify;
    let hooks = &plan.hooks;
    // The original backup script's first two lines; the plan is this run's configuration.
    tracing::info!("Starting backup process");
    tracing::info!("Configuration loaded successfully");
    let sources = if dry_run {
        tracing::info!("[DRY-RUN MODE] No files will be created or deleted");
        let sources: Vec<String> = (plan.jobs.iter())
            .map(|job| job.source.display().to_string())
            .collect();
        for line in proto::response::dry_run_header(
            sources.iter().map(String::as_str),
            &plan.destination.location().display().to_string(),
            shown_retention,
        ) {
            tracing::info!("{line}");
        }
        let runs = (plan.jobs.into_iter())
            .zip(&afters)
            .map(|(job, after)| plan_one(daemon, job, after));
        futures_util::future::join_all(runs).await
    } else {
        let registered: Vec<(BackupJob, JobGuard)> = plan
            .jobs
            .into_iter()
            .map(|job| {
                let new = NewJob {
                    name: job.name.clone(),
                    schedule: plan.schedule.clone(),
                    source: job.source.display().to_string(),
                };
                let guard = daemon.registry.register(new, &daemon.shutdown);
                (job, guard)
            })
            .collect();
        let jobs = registered
            .iter()
            .map(|(_, guard)| JobRef {
                job: guard.job().id,
                name: guard.job().name.clone(),
                source: guard.job().source.clone(),
            })
            .collect();
        events.send(Event::RunStarted { jobs }).await;
        for (_, guard) in &registered {
            let job = guard.job();
            daemon.publish(Event::JobStarted {
                job: job.id,
                name: job.name.clone(),
                schedule: job.schedule.clone(),
                source: job.source.clone(),
            });
        }
        let runs = (registered.into_iter())
            .zip(&afters)
            .map(|((job, guard), after)| {
                back_up_one(daemon, job, guard, after, notify, hooks, events)
            });
        futures_util::future::join_all(runs).await
    };
    let mut report = summarize(dry_run, &plan.destination.location(), sources);
    report.retention_days = shown_retention;
    log_summary(&report);
    report
}

/// The local rotation's `retention_days`, which every run has.
fn retention_days(after: &[AfterWrite]) -> Option<u32> {
    after.iter().find_map(|step| match step {
        AfterWrite::Rotate(policy) => Some(policy.retention_days),
        _ => None,
    })
}

fn summarize(dry_run: bool, destination: &Path, mut sources: Vec<SourceReport>) -> RunReport {
    for source in &mut sources {
        // Names of files never written would send a script looking for them. Only a published
        // archive has a checksum; one that failed after (verify, offsite) keeps its names.
        let written = if dry_run {
            source.ok
        } else {
            source.checksum_sha256.is_some()
        };
        if !written {
            source.archive.clear();
            source.manifest.clear();
        }
    }
    let successful = sources.iter().filter(|s| s.ok).count();
    let old_backups_deleted = sources.iter().map(|s| s.deleted.len()).sum();
    let total_size_bytes = sources.iter().filter(|s| s.ok).map(|s| s.size_bytes).sum();
    let with_warnings = sources.iter().filter(|s| s.ok && s.skipped > 0).count();
    let offsite_failed = sources
        .iter()
        .map(|s| s.offsite.iter().filter(|u| !u.ok).count() + s.offsite_errors.len())
        .sum();
    RunReport {
        dry_run,
        destination: destination.display().to_string(),
        retention_days: None,
        total: sources.len(),
        successful,
        failed: sources.len() - successful,
        old_backups_deleted,
        total_size_bytes,
        total_size_human: human_size(total_size_bytes),
        sources,
        with_warnings,
        offsite_failed,
    }
}

fn log_summary(report: &RunReport) {
    if report.dry_run {
        tracing::info!("=== [DRY-RUN] Backup Summary ===");
        tracing::info!("Total sources: {}", report.total);
        tracing::info!("Would create: {} backups", report.successful);
        tracing::info!("Would delete: {} old backups", report.old_backups_deleted);
        if report.failed > 0 {
            tracing::info!("Would fail: {}", report.failed);
        }
    } else {
        tracing::info!("=== Backup Summary ===");
        tracing::info!("Total sources: {}", report.total);
        tracing::info!("Successful: {}", report.successful);
        tracing::info!("Failed: {}", report.failed);
        tracing::info!("Old backups deleted: {}", report.old_backups_deleted);
        tracing::info!("Total backup size: {}", report.total_size_human);
        if let Some(line) = report.warnings_summary() {
            tracing::info!("{line}");
        }
        let uploads: Vec<_> = report.sources.iter().flat_map(|s| &s.offsite).collect();
        if !uploads.is_empty() {
            let sent: u64 = uploads.iter().map(|u| u.bytes).sum();
            let failed = uploads.iter().filter(|u| !u.ok).count();
            tracing::info!(
                "Offsite uploads: {} ok, {failed} failed, {} sent",
                uploads.len() - failed,
                human_size(sent)
            );
        }
        if let Some(line) = report.offsite_summary() {
            tracing::warn!("{line}");
        }
    }
}

/// Claims free file names for the job (the timestamp moves past any backup of the same name
/// in the same second) and, for a dry run, checks its source; on a blocking thread.
async fn claim_free_names(
    mut job: BackupJob,
    check_source: bool,
) -> (BackupJob, ArchiveNames, Result<(), EngineError>) {
    let fallback = job.clone();
    tokio::task::spawn_blocking(move || {
        let names = job.claim_free_names();
        let checked = if check_source {
            engine::check_job_source(&job).map(drop)
        } else {
            Ok(())
        };
        (job, names, checked)
    })
    .await
    .unwrap_or_else(|panic| {
        let names = fallback.names();
        let error = EngineError::Write {
            path: fallback.destination.location(),
            source: std::io::Error::other(panic.to_string()),
        };
        (fallback, names, Err(error))
    })
}

/// A dry run of one source: checks it, names the files and what rotation would delete;
/// writes and deletes nothing.
async fn plan_one(daemon: &Daemon, job: BackupJob, after: &[AfterWrite]) -> SourceReport {
    let (job, names, checked) = claim_free_names(job, true).await;
    let mut report = empty_report(&job, &names);
    if let Err(e) = checked {
        tracing::error!("{e}");
        report.error = Some(e.to_string());
        return report;
    }
    tracing::info!("[DRY-RUN] Would compress {}", job.source.display());
    tracing::info!("[DRY-RUN] Would create: {}", report.archive);
    tracing::info!("[DRY-RUN] Would create manifest: {}", names.manifest);
    report.ok = true;
    for step in after {
        if let AfterWrite::Rotate(policy) = step {
            report.deleted = rotate(daemon, &job, policy, None, true)
                .await
                .map(|rotated| rotated.deleted)
                .unwrap_or_default();
        }
    }
    report
}

/// What a run's rotation may delete: the archives it saw before writing, older than its own.
#[derive(Debug, Clone)]
struct SeenBefore {
    archives: Vec<ArchiveInfo>,
    own_timestamp: NaiveDateTime,
}

/// Rotates the archives of the job's name under the name's rotation lock: those `seen`
/// before the run (see [`RunScope`]), or all in a dry run. Returns the file names deleted
/// (or that would be), or why the rotation could not run (logged).
async fn rotate(
    daemon: &Daemon,
    job: &BackupJob,
    policy: &RetentionPolicy,
    seen: Option<SeenBefore>,
    dry_run: bool,
) -> Result<Rotated, String> {
    let destination = Arc::clone(&job.destination);
    let name = job.name.clone();
    let policy = *policy;
    let _lock = daemon
        .rotation_locks
        .lock(&destination.location(), &name)
        .await;
    let rotated = tokio::task::spawn_blocking(move || {
        let scope = seen.as_ref().map(|seen| RunScope {
            existed_before: &seen.archives,
            own_timestamp: seen.own_timestamp,
        });
        if !dry_run {
            destination.finish_cut_rotations_of(&name);
        }
        retention::rotate(
            destination.as_ref(),
            Some(&name),
            &policy,
            scope.as_ref(),
            dry_run,
        )
    })
    .await;
    let error = match rotated {
        Ok(Ok(rotated)) => return Ok(rotated),
        Ok(Err(e)) => format!("can't rotate backups of {}: {e}", job.name),
        Err(panic) => format!("can't rotate backups of {}: {panic}", job.name),
    };
    tracing::error!("{error}");
    Err(error)
}

/// The archives of the job's name in its destination now (none if it cannot be read), and
/// how many source bytes the newest of them read: what this run may expect to read.
async fn existing_archives(job: &BackupJob) -> (Vec<ArchiveInfo>, Option<u64>) {
    let destination = Arc::clone(&job.destination);
    let name = job.name.clone();
    tokio::task::spawn_blocking(move || {
        let archives: Vec<_> = destination::list(destination.as_ref())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.name == name)
            .collect();
        // Listed oldest first.
        let expected = archives
            .iter()
            .rev()
            .find_map(|a| a.manifest.as_ref().filter(|m| m.format_version > 0))
            .map(|m| m.bytes_in);
        (archives, expected)
    })
    .await
    .unwrap_or_default()
}

/// Why a new archive is not verified.
enum Unverified {
    /// It does not verify, for this reason.
    Failed(String),
    /// The job was cancelled (or the daemon stopped) while it was read.
    Stopped,
}

/// Verifies a new archive, until `registered` is cancelled.
async fn verify_new(
    daemon: &Daemon,
    job: &BackupJob,
    archive: &Path,
    tag: &str,
    registered: &Arc<Job>,
) -> Result<(), Unverified> {
    let destination = Arc::clone(&job.destination);
    let file = file_name(archive);
    let watched = Arc::clone(registered);
    let checked = tokio::task::spawn_blocking(move || {
        // Before the check, as `verify` does.
        let identity = destination.identity(&file).ok();
        let stopping = || watched.is_cancelled();
        store::verify_with(destination.as_ref(), &file, None, &stopping)
            .map(|report| (identity, report))
    })
    .await;
    // What a stopped read found says nothing of the archive: not recorded.
    if registered.is_cancelled() {
        return Err(Unverified::Stopped);
    }
    let (identity, report) = match checked {
        Ok(Ok(checked)) => checked,
        Ok(Err(e)) => return Err(Unverified::Failed(e.to_string())),
        Err(panic) => return Err(Unverified::Failed(panic.to_string())),
    };
    daemon
        .verify_ledger
        .record(archive, identity, report.finding.status())
        .await;
    daemon.publish(Event::Verified {
        archive: archive.display().to_string(),
        status: report.finding.status(),
    });
    if report.finding.is_ok() {
        // An encrypted archive is checked without its key: the log says the content was not read.
        match &report.detail {
            Some(detail) => tracing::info!("{tag} Verify OK ({detail}): {}", file_name(archive)),
            None => tracing::info!("{tag} Verify OK: {}", file_name(archive)),
        }
        Ok(())
    } else {
        Err(Unverified::Failed(report.finding.to_string()))
    }
}

/// Attempts at finding free names when concurrent runs keep taking them.
const NAME_ATTEMPTS: usize = 5;

async fn back_up_one(
    daemon: &Daemon,
    job: BackupJob,
    guard: JobGuard,
    after: &[AfterWrite],
    notify: &JobNotifications,
    hooks: &JobHooks,
    events: &EventSink,
) -> SourceReport {
    let registered = Arc::clone(guard.job());
    let tag = registered.tag();
    // Its last lines, for the outcome (an email quotes them).
    let log = job_log::watch(&tag);
    let source = job.source.display().to_string();
    // A job cancelled while it waits for a slot never starts. Before the slot, it waits for
    // the start-up repair of its name's manifests, so that it lists and rotates the archives
    // with them, without keeping other jobs from running meanwhile.
    // A repair a stop cut short leaves the name's archives without manifests: the run ends
    // as cancelled, as the stop would end it. One that failed fails the run.
    let repaired_then_slot = async {
        daemon
            .rotation_locks
            .wait_for_repair(&job.destination.location(), Some(&job.name))
            .await?;
        Ok::<_, Option<RepairUnfinished>>(daemon.job_slots.acquire().await)
    };
    let slot = tokio::select! {
        slot = repaired_then_slot => slot.map(|slot| slot.expect("job slots are never closed")),
        () = registered.cancelled() => Err(None),
    };
    let slot = match slot {
        Ok(slot) => slot,
        Err(unfinished) => {
            let mut report = empty_report(&job, &job.names());
            match unfinished {
                Some(failed) if failed.why == Unfinished::Failed => {
                    let message = format!("Backup failed for {source}: {failed}");
                    tracing::error!("{tag} {message}");
                    report.error = Some(message);
                }
                _ => cancelled(daemon, &tag, &source, &mut report),
            }
            let ended = JobEnd {
                hooks,
                notify,
                started: notifications::Started::default(),
                log,
                slot: None,
            };
            return finish_job(daemon, &registered, report, ended, events).await;
        }
    };
    let _counted = daemon.notify.backup_started();
    let (mut job, names, _) = claim_free_names(job, false).await;
    let mut report = empty_report(&job, &names);
    registered.set_running(&report.archive);
    let notified = daemon.notifications.job_started(notify, &tag);
    // Nothing is written when the `before` hook fails.
    let planned = [
        ("BACKUPD_NAME", job.name.clone()),
        ("BACKUPD_ARCHIVE", report.archive.clone()),
        ("BACKUPD_MANIFEST", report.manifest.clone()),
        ("BACKUPD_STATUS", "running".to_owned()),
        ("BACKUPD_ERROR", String::new()),
        ("BACKUPD_SIZE_BYTES", String::new()),
        ("BACKUPD_SHA256", String::new()),
    ];
    let before = hooks.before(
        &tag,
        planned.to_vec(),
        &daemon.shutdown,
        registered.cancellation(),
    );
    if let Err(e) = before.await {
        if matches!(e, crate::hooks::HookError::Stopped { .. }) {
            cancelled(daemon, &tag, &source, &mut report);
        } else {
            report.error = Some(format!("Backup failed for {source}: {e}"));
        }
        let ended = JobEnd {
            hooks,
            notify,
            started: notified,
            log,
            slot: Some(slot),
        };
        return finish_job(daemon, &registered, report, ended, events).await;
    }
    tracing::info!("{tag} Compressing {source}");
    let (existed_before, expected_bytes) = existing_archives(&job).await;
    if let Some(in_use) = crate::name_owner::among(&job, &existed_before) {
        let message = format!("Backup failed for {source}: {in_use}");
        tracing::error!("{tag} {message}");
        report.error = Some(message);
        let ended = JobEnd {
            hooks,
            notify,
            started: notified,
            log,
            slot: Some(slot),
        };
        return finish_job(daemon, &registered, report, ended, events).await;
    }
    events
        .send(Event::SourceStarted {
            source: source.clone(),
            archive: report.archive.clone(),
            expected_bytes,
        })
        .await;

    // Its own cancellation, or shutdown's, stops the archive cleanly: the engine removes its
    // partial file.
    let cancel = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let cancel = Arc::clone(&cancel);
        let registered = Arc::clone(&registered);
        async move {
            registered.cancelled().await;
            cancel.store(true, Ordering::Relaxed);
        }
    });
    let rotation_job = job.clone();
    let progress = ProgressTo {
        events: events.clone(),
        watchers: daemon.publisher(),
        job: Arc::clone(&registered),
        source: source.clone(),
    };
    let mut attempts = 1;
    let writing = std::time::Instant::now();
    let outcome = loop {
        match write_archive(job, progress.clone(), Arc::clone(&cancel)).await {
            // Another run took these names between our check and our write.
            Ok((again, Err(EngineError::ArchiveExists { .. }))) if attempts < NAME_ATTEMPTS => {
                attempts += 1;
                job = claim_free_names(again, false).await.0;
            }
            Ok((_, outcome)) => break Ok(outcome),
            Err(panic) => break Err(panic),
        }
    };
    watcher.abort();

    match outcome {
        Ok(Ok(outcome)) => {
            registered.set_written();
            log_success(daemon, &tag, &source, &outcome);
            fill_success(&mut report, &outcome);
            for step in after {
                match step {
                    AfterWrite::Verify => {
                        let archive = &outcome.archive;
                        match verify_new(daemon, &rotation_job, archive, &tag, &registered).await {
                            Ok(()) => report.verified = Some(true),
                            Err(Unverified::Failed(reason)) => {
                                report.verified = Some(false);
                                let message =
                                    format!("Verify failed for {}: {reason}", archive.display());
                                tracing::error!("{tag} {message}");
                                report.ok = false;
                                report.error = Some(message);
                            }
                            // Unverified, it must not push older archives out: nothing after.
                            Err(Unverified::Stopped) => {
                                cancelled(daemon, &tag, &source, &mut report);
                                report.ok = false;
                                let kept = format!(
                                    "{} is kept, unverified; older archives were not rotated",
                                    file_name(archive)
                                );
                                tracing::warn!("{tag} {kept}");
                                report.warnings.push(kept);
                            }
                        }
                    }
                    AfterWrite::Offsite(offsite) => {
                        // What the remote's rotation after the uploads keeps.
                        let keeps = after.iter().find_map(|later| match later {
                            AfterWrite::RotateRemote(remote, policy) if remote == offsite => {
                                Some(*policy)
                            }
                            _ => None,
                        });
                        let (uploads, catch_up) = upload_offsite(
                            &rotation_job,
                            &outcome.archive,
                            offsite,
                            keeps,
                            &registered,
                            &tag,
                        )
                        .await;
                        for upload in &uploads {
                            daemon.publish(Event::Uploaded {
                                job: registered.id,
                                name: rotation_job.name.clone(),
                                upload: upload.clone(),
                            });
                        }
                        report.offsite.extend(uploads);
                        report.offsite_errors.extend(catch_up);
                    }
                    AfterWrite::RotateRemote(offsite, policy) => {
                        let mut sent = report.offsite.iter().filter(|u| u.remote == offsite.spec);
                        if sent.all(|u| u.ok) {
                            let own = file_name(&outcome.archive);
                            let rotated = crate::offsite_retention::after_upload(
                                daemon,
                                &rotation_job,
                                &own,
                                offsite,
                                policy,
                                &tag,
                            )
                            .await;
                            if let Err(error) = rotated {
                                report.offsite_errors.push(OffsiteError {
                                    remote: offsite.spec.clone(),
                                    step: OffsiteStep::Rotation,
                                    error,
                                });
                            }
                        }
                    }
                    AfterWrite::Rotate(policy) => {
                        // Without its own timestamp (never expected) nothing is old enough.
                        let own_timestamp = NaiveDateTime::parse_from_str(
                            &outcome.manifest.created,
                            crate::format::TIMESTAMP_FORMAT,
                        )
                        .unwrap_or(NaiveDateTime::MIN);
                        let seen = SeenBefore {
                            archives: crate::name_owner::rotatable(&rotation_job, &existed_before),
                            own_timestamp,
                        };
                        let destination = &rotation_job.destination;
                        match rotate(daemon, &rotation_job, policy, Some(seen), false).await {
                            // Said in the run's report, not only the log: an old archive
                            // left behind fills the destination, run after run.
                            Ok(rotated) => {
                                report.deleted = rotated.deleted;
                                report.warnings.extend(
                                    rotated
                                        .failed
                                        .iter()
                                        .map(|failed| format!("can't delete old backup {failed}")),
                                );
                            }
                            // An --offsite-only job's archives are on a remote: its rotation
                            // failing lets the bucket grow, as a remote rotation's would.
                            Err(error) if destination.held_by_a_provider() => {
                                report.offsite_errors.push(OffsiteError {
                                    remote: destination.location().display().to_string(),
                                    step: OffsiteStep::Rotation,
                                    error,
                                });
                            }
                            Err(error) => report.warnings.push(error),
                        }
                        if !report.deleted.is_empty() {
                            daemon.publish(Event::Rotated {
                                destination: rotation_job
                                    .destination
                                    .location()
                                    .display()
                                    .to_string(),
                                deleted: report.deleted.clone(),
                            });
                        }
                    }
                }
                if !report.ok {
                    break;
                }
            }
        }
        Ok(Err(EngineError::Cancelled)) => {
            cancelled(daemon, &tag, &source, &mut report);
            read_before_it_ended(&mut report, &registered, writing);
        }
        Ok(Err(e)) => {
            let message = format!("Backup failed for {source}: {e}");
            tracing::error!("{tag} {message}");
            report.error = Some(message);
            read_before_it_ended(&mut report, &registered, writing);
        }
        Err(panic) => {
            let message = format!("Backup failed for {source}: internal error: {panic}");
            tracing::error!("{tag} {message}");
            report.error = Some(message);
        }
    }
    let ended = JobEnd {
        hooks,
        notify,
        started: notified,
        log,
        slot: Some(slot),
    };
    finish_job(daemon, &registered, report, ended, events).await
}

/// What a job that wrote no archive had read, from its last progress, and for how long since
/// it began writing: how far it got.
fn read_before_it_ended(report: &mut SourceReport, job: &Job, writing: std::time::Instant) {
    let progress = job.info();
    report.files = progress.files;
    report.bytes_in = progress.bytes_in;
    report.duration_ms = u64::try_from(writing.elapsed().as_millis()).unwrap_or(u64::MAX);
}

/// Marks the report of a cancelled job, saying who cancelled it.
fn cancelled(daemon: &Daemon, tag: &str, source: &str, report: &mut SourceReport) {
    let why = if daemon.shutdown.is_cancelled() {
        "backupd is stopping"
    } else {
        "cancelled by request"
    };
    let message = format!("Backup cancelled for {source}: {why}");
    tracing::warn!("{tag} {message}");
    report.error = Some(message);
    report.cancelled = true;
}

/// What follows a job of a real run: its hooks and notifications, where its log lines were
/// kept, and its job slot if it had one.
struct JobEnd<'a> {
    hooks: &'a JobHooks,
    notify: &'a JobNotifications,
    started: notifications::Started,
    log: job_log::JobLog,
    slot: Option<tokio::sync::SemaphorePermit<'a>>,
}

/// Tells the run's client and the watchers how the job ended, then hands its one
/// [`JobOutcome`] to the hooks and the notifications.
async fn finish_job(
    daemon: &Daemon,
    job: &Job,
    report: SourceReport,
    ended: JobEnd<'_>,
    events: &EventSink,
) -> SourceReport {
    let error = report.error.clone().unwrap_or_default();
    let (id, name, source) = (job.id, job.name.clone(), report.source.clone());
    daemon.publish(if report.ok {
        Event::JobFinished {
            job: id,
            name,
            source,
            archive: report.archive.clone(),
            size_bytes: report.size_bytes,
        }
    } else if report.cancelled {
        Event::JobCancelled {
            job: id,
            name,
            source,
            error,
        }
    } else {
        Event::JobFailed {
            job: id,
            name,
            source,
            error,
        }
    });
    events
        .send(Event::SourceFinished {
            source: report.source.clone(),
            ok: report.ok,
            error: report.error.clone(),
        })
        .await;
    let host = daemon.notifications.host();
    let outcome = JobOutcome::new(job, &report, ended.log.lines(), host);
    drop(ended.log);
    let tag = job.tag();
    let slot = ended.slot;
    let hooks = async {
        ended
            .hooks
            .after_job(&outcome, &tag, &daemon.shutdown)
            .await;
        // The archive is done with: another job may start while notifications are still sent.
        drop(slot);
    };
    // Side by side: a slow hook does not hold the notifications back, nor they the hook.
    futures_util::future::join(
        hooks,
        daemon.notifications.job_finished(
            ended.notify,
            ended.started,
            &tag,
            &outcome,
            job.cancellation(),
            &daemon.shutdown,
        ),
    )
    .await;
    report
}

/// Where a job's progress goes: its run's client, the watchers, and the registry.
#[derive(Debug, Clone)]
struct ProgressTo {
    events: EventSink,
    watchers: broadcast::Sender<Event>,
    job: Arc<Job>,
    source: String,
}

impl ProgressTo {
    /// Never waits: it runs on the thread that writes the archive.
    fn report(&self, p: &engine::Progress) {
        self.job.record_progress(p);
        self.events.try_send(Event::Progress {
            source: self.source.clone(),
            files: p.files,
            bytes_in: p.bytes_in,
            bytes_out: p.bytes_out,
        });
        let _ = self.watchers.send(Event::JobProgress {
            job: self.job.id,
            name: self.job.name.clone(),
            files: p.files,
            bytes_in: p.bytes_in,
            bytes_out: p.bytes_out,
        });
    }
}

type EngineRun = (BackupJob, Result<BackupOutcome, EngineError>);

/// Runs the engine on a blocking thread; hands the job back for a retry. Errs only if the
/// engine panicked.
async fn write_archive(
    job: BackupJob,
    progress: ProgressTo,
    cancel: Arc<AtomicBool>,
) -> Result<EngineRun, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let mut on_progress = |p: &engine::Progress| progress.report(p);
        let outcome = engine::run_backup(&job, &mut on_progress, &cancel);
        (job, outcome)
    })
    .await
}

/// The original backup script's lines, each after the job's tag.
fn log_success(daemon: &Daemon, tag: &str, source: &str, outcome: &BackupOutcome) {
    let manifest = &outcome.manifest;
    for warning in &manifest.warnings {
        tracing::warn!("{tag} {warning}");
    }
    tracing::info!("{tag} Backup created {}", outcome.archive.display());
    tracing::info!("{tag} Archive size: {}", manifest.size_human);
    tracing::info!("{tag} Checksum: {}", manifest.checksum_sha256);
    tracing::info!(
        "{tag} Manifest created: {}",
        file_name(&outcome.manifest_path)
    );
    // The original backup script names archives inside the home relative to it.
    let shown = outcome
        .archive
        .strip_prefix(daemon.home.root())
        .unwrap_or(&outcome.archive);
    tracing::info!("{tag} Backup done for {source} in {}", shown.display());
}

fn empty_report(job: &BackupJob, names: &ArchiveNames) -> SourceReport {
    let path = |file: &str| job.destination.path_of(file).display().to_string();
    SourceReport {
        source: job.source.display().to_string(),
        name: job.name.clone(),
        ok: false,
        archive: path(&names.archive),
        manifest: path(&names.manifest),
        error: None,
        size_bytes: 0,
        size_human: human_size(0),
        checksum_sha256: None,
        files: 0,
        bytes_in: 0,
        duration_ms: 0,
        warnings: Vec::new(),
        skipped: 0,
        deleted: Vec::new(),
        verified: None,
        cancelled: false,
        offsite: Vec::new(),
        offsite_errors: Vec::new(),
    }
}

fn fill_success(report: &mut SourceReport, outcome: &BackupOutcome) {
    let manifest = &outcome.manifest;
    report.ok = true;
    report.archive = outcome.archive.display().to_string();
    report.manifest = outcome.manifest_path.display().to_string();
    report.size_bytes = manifest.size_bytes;
    report.size_human = manifest.size_human.clone();
    report.checksum_sha256 = Some(manifest.checksum_sha256.clone());
    report.files = manifest.files;
    report.bytes_in = manifest.bytes_in;
    report.duration_ms = manifest.duration_ms;
    report.warnings = manifest.warnings.clone();
    report.skipped = manifest.skipped;
}

/// Copies the new archive to `offsite`, then whatever archives of the name the remote still
/// lacks and its rotation `keeps`, on a blocking thread; the job's cancellation stops the copy (its multipart upload is
/// aborted). Logs one line per upload. The uploads, and the error of the catch-up when what
/// the remote lacks could not be listed.
async fn upload_offsite(
    job: &BackupJob,
    archive: &Path,
    offsite: &crate::offsite::Offsite,
    keeps: Option<RetentionPolicy>,
    registered: &Arc<Job>,
    tag: &str,
) -> (Vec<proto::response::OffsiteUpload>, Option<OffsiteError>) {
    let cancel = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let cancel = Arc::clone(&cancel);
        let registered = Arc::clone(registered);
        async move {
            registered.cancelled().await;
            cancel.store(true, Ordering::Relaxed);
        }
    });
    let local = Arc::clone(&job.destination);
    let (file, name, target) = (file_name(archive), job.name.clone(), offsite.clone());
    let copied = tokio::task::spawn_blocking({
        let cancel = Arc::clone(&cancel);
        move || {
            let first = crate::offsite::copy(local.as_ref(), &file, &target, &cancel);
            let mut uploads = vec![first];
            let mut catch_up = None;
            if uploads[0].ok {
                let keeps = keeps.as_ref();
                match crate::offsite::missing(local.as_ref(), &name, &file, &target, keeps) {
                    Ok(files) => {
                        for missing in files {
                            if cancel.load(Ordering::Relaxed) {
                                break;
                            }
                            uploads.push(crate::offsite::copy(
                                local.as_ref(),
                                &missing,
                                &target,
                                &cancel,
                            ));
                        }
                    }
                    Err(e) => {
                        let error = format!("can't list what the remote lacks of {name}: {e}");
                        catch_up = Some(OffsiteError {
                            remote: target.spec.clone(),
                            step: OffsiteStep::CatchUp,
                            error,
                        });
                    }
                }
            }
            (uploads, catch_up)
        }
    })
    .await;
    watcher.abort();
    let (uploads, catch_up) = copied.unwrap_or_else(|panic| {
        let upload = proto::response::OffsiteUpload {
            remote: offsite.spec.clone(),
            url: offsite
                .remote
                .path_of(&file_name(archive))
                .display()
                .to_string(),
            ok: false,
            bytes: 0,
            duration_ms: 0,
            retries: 0,
            error: Some(format!("internal error: {panic}")),
            already_there: false,
        };
        (vec![upload], None)
    });
    for upload in &uploads {
        if upload.ok && upload.already_there {
            tracing::info!(
                "{tag} Offsite {}: {} already there",
                upload.remote,
                upload.url
            );
        } else if upload.ok {
            tracing::info!(
                "{tag} Uploaded {} to {}: {} in {:.1}s ({}/s), {} retries",
                upload.url,
                upload.remote,
                human_size(upload.bytes),
                upload.duration_ms as f64 / 1000.0,
                human_size(upload.rate()),
                upload.retries
            );
        } else {
            tracing::error!(
                "{tag} Upload to {} failed after {} retries: {}",
                upload.remote,
                upload.retries,
                upload.error.as_deref().unwrap_or("no reason")
            );
        }
    }
    if let Some(failed) = &catch_up {
        tracing::error!(
            "{tag} Offsite catch-up on {} failed: {}",
            failed.remote,
            failed.error
        );
    }
    (uploads, catch_up)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::plan::Naming;

    /// The run of `docs` from a one-file source into `daemon`'s backups folder, after the
    /// start-up repair of that name ended unfinished (`why`).
    async fn run_after_unfinished_repair(why: Unfinished) -> (RunReport, Vec<String>) {
        let home = tempfile::tempdir().unwrap();
        let source = tempfile::tempdir().unwrap();
        std::fs::write(source.path().join("a.txt"), b"kept").unwrap();
        let daemon = Daemon::in_test_home(home.path());
        let backups = daemon.home.backups_dir();
        let names = BTreeSet::from(["docs".to_owned()]);
        let hold = daemon
            .rotation_locks
            .hold_for_repair(&backups, &names)
            .await;
        hold.unfinished(why);
        let plan = crate::plan::plan(
            &daemon.plan_defaults(),
            &[source.path().display().to_string()],
            &Naming::Fixed("docs".to_owned()),
            &proto::JobOptions::default(),
            false,
        )
        .await
        .unwrap();
        let report = execute(&daemon, plan, &EventSink::disabled()).await;
        let written = std::fs::read_dir(&backups)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        (report, written)
    }

    #[tokio::test]
    async fn a_run_of_a_name_whose_repair_failed_fails_and_writes_nothing() {
        let (report, written) = run_after_unfinished_repair(Unfinished::Failed).await;
        assert_eq!((report.total, report.failed), (1, 1));
        let source = &report.sources[0];
        let error = source.error.as_deref().unwrap_or_default();
        assert!(error.starts_with("Backup failed for "), "{error}");
        assert!(error.contains("restart the daemon"), "{error}");
        assert!(!source.cancelled);
        assert!(written.is_empty(), "{written:?}");
    }

    #[tokio::test]
    async fn a_run_of_a_name_whose_repair_a_stop_cut_short_ends_cancelled() {
        let (report, written) = run_after_unfinished_repair(Unfinished::Stopped).await;
        let source = &report.sources[0];
        assert!(source.cancelled, "{source:?}");
        let error = source.error.as_deref().unwrap_or_default();
        assert!(error.starts_with("Backup cancelled for "), "{error}");
        assert!(written.is_empty(), "{written:?}");
    }

    #[tokio::test]
    async fn a_stop_during_the_verify_after_a_write_keeps_the_archive_and_rotates_nothing() {
        use crate::store::test_support::{OpenHooked, backup};
        let home = tempfile::tempdir().unwrap();
        let source = tempfile::tempdir().unwrap();
        std::fs::write(source.path().join("a.txt"), b"kept").unwrap();
        let daemon = Daemon::in_test_home(home.path());
        let backups = daemon.home.backups_dir();
        // The finally hook hears of the archive kept: it exists.
        let told = home.path().join("told");
        let tell = format!("printf %s \"$BACKUPD_ARCHIVE\" > {}", told.display());
        // An older archive of the name, which a rotation keeping nothing would delete.
        let older = backup(
            source.path(),
            &backups,
            "docs",
            proto::Compression::default(),
            "20200101_000000",
        );
        let options = proto::JobOptions {
            verify_after: true,
            retention: Some(proto::job::Retention {
                days: Some(0),
                min_keep: Some(0),
                ..proto::job::Retention::default()
            }),
            hooks: proto::job::Hooks {
                finally: vec!["sh".into(), "-c".into(), tell],
                ..proto::job::Hooks::default()
            },
            ..proto::JobOptions::default()
        };
        let mut plan = crate::plan::plan(
            &daemon.plan_defaults(),
            &[source.path().display().to_string()],
            &Naming::Fixed("docs".to_owned()),
            &options,
            false,
        )
        .await
        .unwrap();
        // The daemon stops as the verify opens the new archive.
        for job in &mut plan.jobs {
            let shutdown = daemon.shutdown.clone();
            job.destination = Arc::new(OpenHooked {
                folder: crate::destination::LocalFolder::new(&backups),
                hook: move |_: &str, opened| {
                    shutdown.cancel();
                    Ok(opened)
                },
            });
        }
        let report = execute(&daemon, plan, &EventSink::disabled()).await;
        let source = &report.sources[0];
        assert!(source.cancelled, "{source:?}");
        assert_eq!(source.verified, None);
        let kept = "is kept, unverified; older archives were not rotated";
        assert!(
            source.warnings.iter().any(|w| w.ends_with(kept)),
            "{source:?}"
        );
        assert!(std::path::Path::new(&source.archive).exists());
        assert!(older.archive.exists(), "not rotated");
        let new = std::path::Path::new(&source.archive);
        assert!(daemon.verify_ledger.get(new, None).await.is_none());
        assert_eq!(std::fs::read_to_string(&told).unwrap(), source.archive);
    }
}
