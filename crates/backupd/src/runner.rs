//! Runs a set of backups, one per source, concurrently up to the daemon's job limit: each on a
//! blocking thread through the archive engine. Logs the seed's lines, streams events, and
//! sums the outcome up in a report. Both `run` requests and (later) schedules come here.

use crate::engine::{self, BackupJob, BackupOutcome, EngineError};
use crate::events::EventSink;
use crate::retention;
use crate::state::Daemon;
use crate::store::{self, RetentionPolicy, VerifyStatus};
use crate::verify_ledger;
use proto::Event;
use proto::response::{RunReport, SourceReport};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What to run: validated jobs sharing one destination, and what to do after each.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub jobs: Vec<BackupJob>,
    pub destination: PathBuf,
    pub dry_run: bool,
    /// Applied to each source's archives after it succeeds.
    pub retention: RetentionPolicy,
    /// Verify each archive right after writing it.
    pub verify_after: bool,
}

/// Runs every job of the plan and reports; never fails as a whole, each source succeeds or
/// fails on its own.
pub async fn execute(daemon: &Daemon, plan: RunPlan, events: &EventSink) -> RunReport {
    let dry_run = plan.dry_run;
    if dry_run {
        tracing::info!("[DRY-RUN MODE] No files will be created or deleted");
    }
    let after = AfterWrite {
        retention: plan.retention,
        verify: plan.verify_after,
    };
    let after = &after;
    let runs = plan.jobs.into_iter().map(|job| async move {
        if dry_run {
            plan_one(job, &after.retention).await
        } else {
            back_up_one(daemon, job, after, events).await
        }
    });
    let sources = futures_util::future::join_all(runs).await;
    let report = summarize(dry_run, &plan.destination, sources);
    log_summary(&report);
    report
}

/// What follows a successful write.
#[derive(Debug)]
struct AfterWrite {
    retention: RetentionPolicy,
    verify: bool,
}

fn summarize(dry_run: bool, destination: &Path, sources: Vec<SourceReport>) -> RunReport {
    let successful = sources.iter().filter(|s| s.ok).count();
    let old_backups_deleted = sources.iter().map(|s| s.deleted.len()).sum();
    let total_size_bytes = sources.iter().filter(|s| s.ok).map(|s| s.size_bytes).sum();
    RunReport {
        dry_run,
        destination: destination.display().to_string(),
        total: sources.len(),
        successful,
        failed: sources.len() - successful,
        old_backups_deleted,
        total_size_bytes,
        total_size_human: engine::human_size(total_size_bytes),
        sources,
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
    }
}

/// Moves the job's timestamp past any backup of the same name in the same second.
fn claim_free_names(job: &mut BackupJob) -> engine::ArchiveNames {
    job.timestamp =
        engine::free_timestamp(&job.destination, &job.name, job.compression, job.timestamp);
    engine::archive_names(&job.destination, &job.name, job.compression, job.timestamp)
}

/// A dry run of one source: checks it, names the files and what rotation would delete;
/// writes and deletes nothing.
async fn plan_one(mut job: BackupJob, retention: &RetentionPolicy) -> SourceReport {
    let names = claim_free_names(&mut job);
    let mut report = empty_report(&job, &names.archive, &names.manifest);
    if let Err(e) = engine::check_source(&job.source) {
        tracing::error!("{e}");
        report.error = Some(e.to_string());
        return report;
    }
    tracing::info!("[DRY-RUN] Would compress {}", job.source.display());
    tracing::info!("[DRY-RUN] Would create: {}", names.archive.display());
    tracing::info!(
        "[DRY-RUN] Would create manifest: {}",
        file_name(&names.manifest)
    );
    report.ok = true;
    report.deleted = rotate(&job, retention, None, true).await;
    report
}

/// Rotates the archives of the job's name: among `candidates` (those that existed before the
/// run, so neither its own archive nor one a concurrent run just wrote), or among all in a dry
/// run. Returns the file names deleted (or that would be).
async fn rotate(
    job: &BackupJob,
    policy: &RetentionPolicy,
    candidates: Option<Vec<PathBuf>>,
    dry_run: bool,
) -> Vec<String> {
    let destination = job.destination.clone();
    let name = job.name.clone();
    let policy = *policy;
    let rotated = tokio::task::spawn_blocking(move || {
        retention::rotate(
            &destination,
            Some(&name),
            &policy,
            candidates.as_deref(),
            dry_run,
        )
    })
    .await;
    match rotated {
        Ok(Ok(rotated)) => rotated.deleted,
        Ok(Err(e)) => {
            tracing::error!("can't rotate backups of {}: {e}", job.name);
            Vec::new()
        }
        Err(panic) => {
            tracing::error!("can't rotate backups of {}: {panic}", job.name);
            Vec::new()
        }
    }
}

/// The archives of the job's name in its destination now (none if it cannot be read).
async fn existing_archives(job: &BackupJob) -> Vec<PathBuf> {
    let destination = job.destination.clone();
    let name = job.name.clone();
    tokio::task::spawn_blocking(move || {
        store::scan(&destination)
            .map(|all| {
                all.into_iter()
                    .filter(|a| a.name == name)
                    .map(|a| a.path)
                    .collect()
            })
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default()
}

/// Verifies a new archive; `Err` says why it failed.
async fn verify_new(daemon: &Daemon, archive: &Path) -> Result<(), String> {
    let path = archive.to_path_buf();
    let checked = tokio::task::spawn_blocking(move || store::verify(&path)).await;
    let report = match checked {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(panic) => return Err(panic.to_string()),
    };
    daemon.verify_ledger.record(archive, &report.status).await;
    if report.status == VerifyStatus::Ok {
        tracing::info!("Verify OK: {}", file_name(archive));
        Ok(())
    } else {
        Err(verify_ledger::describe(&report.status))
    }
}

/// Attempts at finding free names when concurrent runs keep taking them.
const NAME_ATTEMPTS: usize = 5;

async fn back_up_one(
    daemon: &Daemon,
    mut job: BackupJob,
    after: &AfterWrite,
    events: &EventSink,
) -> SourceReport {
    let _slot = daemon
        .job_slots
        .acquire()
        .await
        .expect("job slots are never closed");
    let names = claim_free_names(&mut job);
    let mut report = empty_report(&job, &names.archive, &names.manifest);
    let source = job.source.display().to_string();
    tracing::info!("Compressing {source}");
    events
        .send(Event::SourceStarted {
            source: source.clone(),
            archive: report.archive.clone(),
        })
        .await;

    // Shutdown cancels the archive cleanly: the engine removes its partial file.
    let cancel = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let cancel = Arc::clone(&cancel);
        let shutdown = daemon.shutdown.clone();
        async move {
            shutdown.cancelled().await;
            cancel.store(true, Ordering::Relaxed);
        }
    });
    let existed_before = existing_archives(&job).await;
    let rotation_job = job.clone();
    let mut attempts = 1;
    let outcome = loop {
        match write_archive(job, events, &source, Arc::clone(&cancel)).await {
            // Another run took these names between our check and our write.
            Ok((mut again, Err(EngineError::ArchiveExists { .. }))) if attempts < NAME_ATTEMPTS => {
                attempts += 1;
                claim_free_names(&mut again);
                job = again;
            }
            Ok((_, outcome)) => break Ok(outcome),
            Err(panic) => break Err(panic),
        }
    };
    watcher.abort();

    match outcome {
        Ok(Ok(outcome)) => {
            log_success(daemon, &source, &outcome);
            fill_success(&mut report, &outcome);
            if after.verify {
                let verified = verify_new(daemon, &outcome.archive).await;
                report.verified = Some(verified.is_ok());
                if let Err(reason) = verified {
                    let message =
                        format!("Verify failed for {}: {reason}", outcome.archive.display());
                    tracing::error!("{message}");
                    report.ok = false;
                    report.error = Some(message);
                }
            }
            if report.ok {
                report.deleted =
                    rotate(&rotation_job, &after.retention, Some(existed_before), false).await;
            }
        }
        Ok(Err(EngineError::Cancelled)) => {
            let message = format!("Backup cancelled for {source}: backupd is stopping");
            tracing::warn!("{message}");
            report.error = Some(message);
        }
        Ok(Err(e)) => {
            let message = format!("Backup failed for {source}: {e}");
            tracing::error!("{message}");
            report.error = Some(message);
        }
        Err(panic) => {
            let message = format!("Backup failed for {source}: internal error: {panic}");
            tracing::error!("{message}");
            report.error = Some(message);
        }
    }
    events
        .send(Event::SourceFinished {
            source,
            ok: report.ok,
            error: report.error.clone(),
        })
        .await;
    report
}

type EngineRun = (BackupJob, Result<BackupOutcome, EngineError>);

/// Runs the engine on a blocking thread; hands the job back for a retry. Errs only if the
/// engine panicked.
async fn write_archive(
    job: BackupJob,
    events: &EventSink,
    source: &str,
    cancel: Arc<AtomicBool>,
) -> Result<EngineRun, tokio::task::JoinError> {
    let sink = events.clone();
    let source = source.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut on_progress = |p: &engine::Progress| {
            sink.try_send(Event::Progress {
                source: source.clone(),
                files: p.files,
                bytes_in: p.bytes_in,
                bytes_out: p.bytes_out,
            });
        };
        let outcome = engine::run_backup(&job, &mut on_progress, &cancel);
        (job, outcome)
    })
    .await
}

fn log_success(daemon: &Daemon, source: &str, outcome: &BackupOutcome) {
    let manifest = &outcome.manifest;
    for warning in &manifest.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!("Backup created {}", outcome.archive.display());
    tracing::info!("Archive size: {}", manifest.size_human);
    tracing::info!("Checksum: {}", manifest.checksum_sha256);
    tracing::info!("Manifest created: {}", file_name(&outcome.manifest_path));
    // The seed names archives inside the home relative to it: `backups/<file>`.
    let shown = outcome
        .archive
        .strip_prefix(daemon.home.root())
        .unwrap_or(&outcome.archive);
    tracing::info!("Backup done for {source} in {}", shown.display());
}

fn empty_report(job: &BackupJob, archive: &Path, manifest: &Path) -> SourceReport {
    SourceReport {
        source: job.source.display().to_string(),
        name: job.name.clone(),
        ok: false,
        archive: archive.display().to_string(),
        manifest: manifest.display().to_string(),
        error: None,
        size_bytes: 0,
        size_human: engine::human_size(0),
        checksum_sha256: None,
        files: 0,
        bytes_in: 0,
        duration_ms: 0,
        warnings: Vec::new(),
        deleted: Vec::new(),
        verified: None,
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
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
