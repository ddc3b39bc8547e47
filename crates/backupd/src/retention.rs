//! Rotation as the daemon runs it: resolves a retention policy with the original backup
//! script's defaults, plans it for a destination with the store, deletes (or, in a dry run,
//! lists) and logs that script's lines. Blocking: call it on a blocking thread.

use crate::destination::{self, ArchiveInfo, Destination};
use crate::plan::Defaults;
use crate::store::{self, RetentionPolicy, StoreError};
use chrono::NaiveDateTime;
use proto::Retention;
use proto::schedule::Schedule;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A policy from request or schedule settings; unset fields take the defaults.
pub fn policy(retention: Option<&Retention>) -> RetentionPolicy {
    let defaults = RetentionPolicy::default();
    let Some(r) = retention else {
        return defaults;
    };
    RetentionPolicy {
        retention_days: r.days.unwrap_or(defaults.retention_days),
        min_keep: r.min_keep.unwrap_or(defaults.min_keep),
        keep_last: r.keep_last,
        keep_daily: r.keep_daily,
        keep_weekly: r.keep_weekly,
        keep_monthly: r.keep_monthly,
    }
}

/// The retention by which the archives of each name in one destination are rotated where a
/// request gives none: that of the stored schedule writing the name there (its own, else the
/// configuration's `[defaults]`), else the `[defaults]`', else the original backup script's.
/// So a `prune`, or a one-off run of a schedule's name, keeps what the schedule keeps.
#[derive(Debug, Clone, Default)]
pub struct NameRetention {
    by_name: HashMap<String, RetentionPolicy>,
    /// The configured rules, which fill in what a request's policy leaves unset.
    configured: Option<Retention>,
}

impl NameRetention {
    /// From the policies of the names schedules write there, and the configured rules for any
    /// other name.
    pub fn new(by_name: HashMap<String, RetentionPolicy>, configured: Option<Retention>) -> Self {
        NameRetention {
            by_name,
            configured,
        }
    }

    /// For the local `folder`. Blocking: each schedule's destination is looked up.
    pub fn in_folder(schedules: &[Arc<Schedule>], defaults: &Defaults, folder: &Path) -> Self {
        let mut by_name = HashMap::new();
        for (schedule, options) in crate::plan::schedules_writing_into(schedules, defaults, folder)
        {
            let policy = policy(options.retention.as_ref());
            for name in crate::plan::archive_names(schedule) {
                by_name.insert(name, policy);
            }
        }
        NameRetention::new(by_name, defaults.job.retention)
    }

    /// The policy of `name`: `given` (a request's, the configured rules filling in what it
    /// leaves unset), else the schedule's or the configured one.
    pub fn policy(&self, name: &str, given: Option<&Retention>) -> RetentionPolicy {
        match given {
            Some(given) => policy(Retention::merged(Some(*given), self.configured).as_ref()),
            None => (self.of_schedule(name)).unwrap_or_else(|| policy(self.configured.as_ref())),
        }
    }

    /// The policy of the schedule writing `name` there, if one does.
    pub fn of_schedule(&self, name: &str) -> Option<RetentionPolicy> {
        self.by_name.get(name).copied()
    }
}

/// What a rotation did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotated {
    /// File names of the archives deleted (or that would be).
    pub deleted: Vec<String>,
    /// `<file>: <reason>` for deletions that failed.
    pub failed: Vec<String>,
    pub kept: usize,
    /// `<file>: kept (locked until …)` for archives an object lock keeps.
    pub locked: Vec<String>,
}

/// What a run's rotation may touch: only archives it saw before it wrote its own, still the
/// same files (a freed name reused by a newer archive is another file), and older than its
/// own archive.
#[derive(Debug, Clone, Copy)]
pub struct RunScope<'a> {
    pub existed_before: &'a [ArchiveInfo],
    /// When the run's own archive was made (its file-name timestamp).
    pub own_timestamp: NaiveDateTime,
}

impl RunScope<'_> {
    fn allows(&self, archive: &ArchiveInfo) -> bool {
        let checksum = |a: &ArchiveInfo| a.manifest.as_ref().map(|m| m.checksum_sha256.clone());
        archive.timestamp < self.own_timestamp
            && archive.identity.is_some()
            && self.existed_before.iter().any(|seen| {
                seen.file_name == archive.file_name
                    && seen.identity == archive.identity
                    && checksum(seen) == checksum(archive)
            })
    }
}

/// Rotates the archives in `destination` (of one `name`, or all). With a run's `scope`, only
/// the archives it allows may go and only those count, so that neither the run's own archive
/// nor one a concurrent run wrote (even under a reused name) is ever deleted. Callers hold
/// the name's rotation lock ([`crate::rotation_locks`]).
pub fn rotate(
    destination: &dyn Destination,
    name: Option<&str>,
    policy: &RetentionPolicy,
    scope: Option<&RunScope<'_>>,
    dry_run: bool,
) -> Result<Rotated, StoreError> {
    rotate_by(destination, name, &|_| *policy, scope, dry_run)
}

/// [`rotate`], each backup name by the policy `policy_of` gives it.
pub fn rotate_by(
    destination: &dyn Destination,
    name: Option<&str>,
    policy_of: &dyn Fn(&str) -> RetentionPolicy,
    scope: Option<&RunScope<'_>>,
    dry_run: bool,
) -> Result<Rotated, StoreError> {
    let archives: Vec<_> = destination::list_named(destination, name)
        .map_err(|source| StoreError::ReadDir {
            path: destination.location(),
            source,
        })?
        .into_iter()
        .filter(|a| scope.is_none_or(|s| s.allows(a)))
        .collect();
    // A run's new archive may be named ahead of the clock (runs of one name faster than one a
    // second): its time is "now" at least, so an archive older than it is never too young.
    // Named further ahead, it follows an archive dated in the future (a clock set back): the
    // others are aged by the clock, or a year's error would delete a year's archives.
    let clock = chrono::Local::now().fixed_offset();
    let now = match scope {
        Some(s) if s.own_timestamp - clock.naive_local() <= crate::engine::NAMED_AHEAD_AT_MOST => {
            (s.own_timestamp.and_local_timezone(*clock.offset()).single())
                .map_or(clock, |own| clock.max(own))
        }
        _ => clock,
    };
    let counted = if destination.whole_without_manifest() {
        store::Counted::Every
    } else {
        store::Counted::WithManifest
    };
    let plan = store::plan_rotation_by(&archives, policy_of, counted, now);
    let mut rotated = Rotated {
        kept: plan.keep.len(),
        ..Rotated::default()
    };
    if dry_run {
        rotated.deleted = plan.delete.iter().map(|a| a.file_name.clone()).collect();
        if !rotated.deleted.is_empty() {
            tracing::info!(
                "[DRY-RUN] Found {} old backups that would be deleted:",
                rotated.deleted.len()
            );
            for file in &rotated.deleted {
                tracing::info!("[DRY-RUN]   - {file}");
            }
        }
        return Ok(rotated);
    }
    for archive in &plan.delete {
        tracing::info!("Deleting old backup: {}", archive.file_name);
    }
    let outcome = store::apply_rotation(destination, &plan);
    rotated.deleted = outcome.deleted.iter().map(|p| file_name(p)).collect();
    for path in &outcome.replaced {
        tracing::info!(
            "Kept {}: another archive took its name since rotation listed it",
            file_name(path)
        );
    }
    for (path, until) in &outcome.locked {
        let line = format!(
            "{}: {}",
            file_name(path),
            crate::remote::object_lock::kept_reason(*until)
        );
        tracing::info!("Not deleting old backup {line}");
        rotated.locked.push(line);
    }
    for (path, reason) in outcome.failed {
        let line = format!("{}: {reason}", file_name(&path));
        tracing::error!("can't delete old backup {line}");
        rotated.failed.push(line);
    }
    Ok(rotated)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::{FileIdentity, LocalFolder};
    use crate::store::test_support::{dir_names, fake_manifest};

    #[test]
    fn unset_fields_take_the_defaults() {
        assert_eq!(policy(None), RetentionPolicy::default());
        let custom = policy(Some(&Retention {
            days: Some(14),
            keep_daily: Some(7),
            ..Retention::default()
        }));
        assert_eq!(custom.retention_days, 14);
        assert_eq!(custom.min_keep, 3);
        assert_eq!(custom.keep_daily, Some(7));
    }

    fn keep_nothing() -> RetentionPolicy {
        RetentionPolicy {
            retention_days: 0,
            min_keep: 0,
            ..RetentionPolicy::default()
        }
    }

    #[test]
    fn a_run_deletes_only_what_it_saw_unchanged_and_older_than_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let folder = LocalFolder::new(d);
        let write = |stem: &str, bytes: &[u8]| {
            std::fs::write(d.join(format!("{stem}.tar.gz")), bytes).unwrap();
            let manifest = fake_manifest("docs", &stem[5..], bytes);
            std::fs::write(d.join(format!("{stem}.json")), manifest.to_json().unwrap()).unwrap();
        };
        // Seen before the run: one to go, one whose manifest changes, one to be replaced,
        // and one newer than the run's own archive (a clock stepped back).
        write("docs_20250101_000000", b"old");
        write("docs_20250102_000000", b"manifest changes");
        write("docs_20250103_000000", b"replaced");
        write("docs_20250301_000000", b"from the future");
        let seen = destination::list(&folder).unwrap();
        assert!(seen.iter().all(|a| a.identity.is_some()));

        let other = fake_manifest("docs", "20250102_000000", b"another archive");
        std::fs::write(
            d.join("docs_20250102_000000.json"),
            other.to_json().unwrap(),
        )
        .unwrap();
        std::fs::remove_file(d.join("docs_20250103_000000.tar.gz")).unwrap();
        write("docs_20250103_000000", b"replaced, by a newer archive");

        let scope = RunScope {
            existed_before: &seen,
            own_timestamp: crate::store::test_support::stamp("20250201_000000"),
        };
        let rotated = rotate(&folder, Some("docs"), &keep_nothing(), Some(&scope), false).unwrap();
        assert_eq!(rotated.deleted, ["docs_20250101_000000.tar.gz"]);
        assert_eq!(
            dir_names(d),
            [
                "docs_20250102_000000.json",
                "docs_20250102_000000.tar.gz",
                "docs_20250103_000000.json",
                "docs_20250103_000000.tar.gz",
                "docs_20250301_000000.json",
                "docs_20250301_000000.tar.gz",
            ]
        );
    }

    #[test]
    fn a_run_named_ahead_of_the_clock_ages_the_others_from_its_own_time() {
        // Runs faster than one a second are named ahead of the clock: an archive older than
        // the run's own but still "in the future" looked younger than 0 days, and stayed.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let folder = LocalFolder::new(d);
        let ahead = |seconds| {
            (chrono::Local::now().naive_local() + chrono::TimeDelta::seconds(seconds))
                .format(crate::format::TIMESTAMP_FORMAT)
                .to_string()
        };
        let earlier = format!("docs_{}", ahead(30));
        std::fs::write(d.join(format!("{earlier}.tar.gz")), b"earlier").unwrap();
        let manifest = fake_manifest("docs", &earlier[5..], b"earlier");
        std::fs::write(
            d.join(format!("{earlier}.json")),
            manifest.to_json().unwrap(),
        )
        .unwrap();
        let seen = destination::list(&folder).unwrap();
        let scope = RunScope {
            existed_before: &seen,
            own_timestamp: crate::store::test_support::stamp(&ahead(31)),
        };
        let rotated = rotate(&folder, Some("docs"), &keep_nothing(), Some(&scope), false).unwrap();
        assert_eq!(rotated.deleted, [format!("{earlier}.tar.gz")]);
    }

    #[test]
    fn a_run_named_after_an_archive_dated_in_the_future_ages_the_others_by_the_clock() {
        // The clock was a year fast for one run, then set right: the next run is named a
        // second after that archive, and the archives of the last days must not look a year
        // old.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let folder = LocalFolder::new(d);
        let stem = |days: i64| {
            let when = chrono::Local::now().naive_local() + chrono::TimeDelta::days(days);
            format!("docs_{}", when.format(crate::format::TIMESTAMP_FORMAT))
        };
        let stems: Vec<String> = [-5, -4, -3, -2, -1, 365].map(stem).to_vec();
        for stem in &stems {
            std::fs::write(d.join(format!("{stem}.tar.gz")), stem).unwrap();
            let manifest = fake_manifest("docs", &stem[5..], stem.as_bytes());
            std::fs::write(d.join(format!("{stem}.json")), manifest.to_json().unwrap()).unwrap();
        }
        let seen = destination::list(&folder).unwrap();
        let future = seen.last().unwrap().timestamp;
        let scope = RunScope {
            existed_before: &seen,
            own_timestamp: future + chrono::TimeDelta::seconds(1),
        };
        let week_one_kept = RetentionPolicy {
            retention_days: 7,
            min_keep: 1,
            ..RetentionPolicy::default()
        };
        let rotated = rotate(&folder, Some("docs"), &week_one_kept, Some(&scope), false).unwrap();
        assert_eq!(rotated.deleted, Vec::<String>::new());
        assert_eq!(rotated.kept, stems.len());
        // Still: what is older than the week goes.
        let old = stem(-30);
        std::fs::write(d.join(format!("{old}.tar.gz")), b"old").unwrap();
        let manifest = fake_manifest("docs", &old[5..], b"old");
        std::fs::write(d.join(format!("{old}.json")), manifest.to_json().unwrap()).unwrap();
        let seen = destination::list(&folder).unwrap();
        let scope = RunScope {
            existed_before: &seen,
            ..scope
        };
        let rotated = rotate(&folder, Some("docs"), &week_one_kept, Some(&scope), false).unwrap();
        assert_eq!(rotated.deleted, [format!("{old}.tar.gz")]);
    }

    #[test]
    fn an_archive_without_identity_is_never_in_a_runs_scope() {
        let dir = tempfile::tempdir().unwrap();
        let folder = LocalFolder::new(dir.path());
        std::fs::write(dir.path().join("docs_20250101_000000.tar"), b"x").unwrap();
        let listed = destination::list(&folder).unwrap();
        let own_timestamp = crate::store::test_support::stamp("20250201_000000");
        let allowed = |seen: &ArchiveInfo, now: &ArchiveInfo| {
            let existed_before = std::slice::from_ref(seen);
            RunScope {
                existed_before,
                own_timestamp,
            }
            .allows(now)
        };
        assert!(allowed(&listed[0], &listed[0]));
        let unknown = ArchiveInfo {
            identity: None,
            ..listed[0].clone()
        };
        assert!(!allowed(&unknown, &unknown));
        let other = ArchiveInfo {
            identity: Some(FileIdentity {
                dev: 0,
                ino: 0,
                size: 0,
                mtime_ns: 0,
            }),
            ..listed[0].clone()
        };
        assert!(!allowed(&listed[0], &other));
    }
}
