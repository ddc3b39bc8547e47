//! Retention: which archives to keep and which to delete, then deleting them.
//!
//! Planning is a pure function of the listing, the policy and an injected `now`, so every
//! rule is unit-tested without a clock or a disk; [`apply_rotation`] only executes a plan.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeDelta};

use crate::destination::{ArchiveInfo, Destination, Holder, Removal, group_by_name};
use crate::format::naming::archives_sharing;

/// How many archives of each backup name to keep.
///
/// An archive is kept if it is younger than `retention_days`, or among the newest
/// `min_keep`, or selected by any of the `keep_*` rules (restic's `forget` semantics);
/// everything else is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub retention_days: u32,
    /// Never fewer than this many, however old (the original backup script's "minimum backups").
    pub min_keep: u32,
    /// The newest N.
    pub keep_last: Option<u32>,
    /// The newest archive of each of the last N days that have archives.
    pub keep_daily: Option<u32>,
    /// The newest archive of each of the last N ISO weeks that have archives.
    pub keep_weekly: Option<u32>,
    /// The newest archive of each of the last N months that have archives.
    pub keep_monthly: Option<u32>,
}

impl Default for RetentionPolicy {
    /// The original backup script's defaults: 7 days, at least 3 backups.
    fn default() -> Self {
        RetentionPolicy {
            retention_days: 7,
            min_keep: 3,
            keep_last: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
        }
    }
}

/// What a rotation would do. Both lists are sorted by name, then oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RotationPlan {
    pub delete: Vec<ArchiveInfo>,
    pub keep: Vec<ArchiveInfo>,
}

/// Which archives the rules that count (`min_keep`, `keep_*`) may pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Every archive: a local one is whole once it has its name, manifest or not.
    Every,
    /// Only archives with their manifest (read or not: one a lifecycle rule moved out of
    /// reach, or a request failed to read, is there): on a remote, the manifest is written
    /// last, so a copy without one is an upload cut short. Such a copy is kept by its age alone; were it
    /// counted, `min_keep` would keep it in place of a complete one and delete that.
    WithManifest,
}

/// Plans a rotation of `archives` (any mix of backup names) as of `now`, every archive
/// counted.
///
/// Each backup name is planned on its own.
pub fn plan_rotation(
    archives: &[ArchiveInfo],
    policy: &RetentionPolicy,
    now: DateTime<FixedOffset>,
) -> RotationPlan {
    plan_rotation_counting(archives, policy, Counted::Every, now)
}

/// [`plan_rotation`], with the rules that count picking among `counted` archives only.
pub fn plan_rotation_counting(
    archives: &[ArchiveInfo],
    policy: &RetentionPolicy,
    counted: Counted,
    now: DateTime<FixedOffset>,
) -> RotationPlan {
    plan_rotation_by(archives, &|_| *policy, counted, now)
}

/// [`plan_rotation_counting`], each backup name by the policy `policy_of` gives it.
pub fn plan_rotation_by(
    archives: &[ArchiveInfo],
    policy_of: &dyn Fn(&str) -> RetentionPolicy,
    counted: Counted,
    now: DateTime<FixedOffset>,
) -> RotationPlan {
    let mut plan = RotationPlan::default();
    for (name, group) in group_by_name(archives) {
        let policy = policy_of(&name);
        let max_age = TimeDelta::days(i64::from(policy.retention_days));
        let kept = kept_indices(&group, &policy, counted, now, max_age);
        for (i, archive) in group.into_iter().enumerate() {
            if kept.contains(&i) {
                plan.keep.push(archive);
            } else {
                plan.delete.push(archive);
            }
        }
    }
    let order = |a: &ArchiveInfo, b: &ArchiveInfo| {
        (&a.name, a.timestamp, &a.path).cmp(&(&b.name, b.timestamp, &b.path))
    };
    plan.delete.sort_by(order);
    plan.keep.sort_by(order);
    plan
}

/// Indices (into `group`, newest first) of the archives to keep.
fn kept_indices(
    group: &[ArchiveInfo],
    policy: &RetentionPolicy,
    counted: Counted,
    now: DateTime<FixedOffset>,
    max_age: TimeDelta,
) -> HashSet<usize> {
    // One backup may be several files of one stem (`X.tar` beside `X.tar.zst` after a
    // `zstd -d` in place): they count as one and are kept or deleted together.
    let backups = backups_of(group);
    let countable: Vec<&Vec<usize>> = backups
        .iter()
        .filter(|files| match counted {
            Counted::Every => true,
            Counted::WithManifest => {
                (files.iter()).any(|&i| group[i].manifest.is_some() || group[i].manifest_unread)
            }
        })
        .collect();
    let newest = |n: u32| {
        countable
            .iter()
            .take(n as usize)
            .copied()
            .flatten()
            .copied()
    };
    let eligible: HashSet<usize> = countable.iter().copied().flatten().copied().collect();
    let mut kept: HashSet<usize> = group
        .iter()
        .enumerate()
        .filter(|(_, a)| age(a, now) <= max_age)
        .map(|(i, _)| i)
        .collect();
    kept.extend(newest(policy.min_keep));
    if let Some(n) = policy.keep_last {
        kept.extend(newest(n));
    }
    let rules: [(Option<u32>, BucketOf); 3] = [
        (policy.keep_daily, Bucket::day),
        (policy.keep_weekly, Bucket::week),
        (policy.keep_monthly, Bucket::month),
    ];
    for (limit, bucket_of) in rules {
        if let Some(n) = limit {
            kept.extend(newest_per_bucket(group, &eligible, n, bucket_of));
        }
    }
    for files in &backups {
        if files.iter().any(|i| kept.contains(i)) {
            kept.extend(files);
        }
    }
    kept
}

/// How long before `now` `archive` was made. Its name is in local time: that of the offset its
/// manifest records, else taken to be `now`'s (older manifests, the original backup script's),
/// so a daemon whose time zone moved east does not see a backup of a minute ago as a day old.
fn age(archive: &ArchiveInfo, now: DateTime<FixedOffset>) -> TimeDelta {
    let offset = (archive.manifest.as_ref())
        .and_then(|m| m.created_offset())
        .unwrap_or(*now.offset());
    let made_utc = archive.timestamp - TimeDelta::seconds(offset.local_minus_utc().into());
    now.naive_utc() - made_utc
}

/// The indices of `group` (newest first) gathered by backup, newest first: the files that
/// share a manifest name are one backup.
fn backups_of(group: &[ArchiveInfo]) -> Vec<Vec<usize>> {
    let mut backups: Vec<Vec<usize>> = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for (i, archive) in group.iter().enumerate() {
        match index_of.get(archive.manifest_name.as_str()) {
            Some(&b) => backups[b].push(i),
            None => {
                index_of.insert(&archive.manifest_name, backups.len());
                backups.push(vec![i]);
            }
        }
    }
    backups
}

/// A calendar period a GFS rule keeps one archive of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bucket {
    Day(NaiveDate),
    /// ISO year and week: the last days of December may belong to week 1 of the next year.
    Week(i32, u32),
    Month(i32, u32),
}

/// Which period an archive falls in, for one GFS rule.
type BucketOf = fn(NaiveDateTime) -> Bucket;

impl Bucket {
    fn day(t: NaiveDateTime) -> Self {
        Bucket::Day(t.date())
    }

    fn week(t: NaiveDateTime) -> Self {
        let week = t.iso_week();
        Bucket::Week(week.year(), week.week())
    }

    fn month(t: NaiveDateTime) -> Self {
        Bucket::Month(t.year(), t.month())
    }
}

/// The newest `eligible` archive of each of the `n` most recent periods that have one;
/// periods without one do not use up the count (restic's semantics).
fn newest_per_bucket(
    group: &[ArchiveInfo],
    eligible: &HashSet<usize>,
    n: u32,
    bucket_of: BucketOf,
) -> Vec<usize> {
    let mut seen = HashSet::new();
    let mut picked = Vec::new();
    // `group` is newest first, so the first archive met in a period is its newest.
    for (i, archive) in group.iter().enumerate() {
        if seen.len() >= n as usize {
            break;
        }
        if !eligible.contains(&i) {
            continue;
        }
        if seen.insert(bucket_of(archive.timestamp)) {
            picked.push(i);
        }
    }
    picked
}

/// What [`apply_rotation`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationOutcome {
    /// Archives deleted, in plan order; the daemon logs `Deleting old backup: <file name>`
    /// for each.
    pub deleted: Vec<PathBuf>,
    /// Files that could not be deleted, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// Archives left alone because another file holds their name now (a newer archive).
    pub replaced: Vec<PathBuf>,
    /// Archives an object lock keeps, with their manifests: until when (`None`: no end).
    pub locked: Vec<(PathBuf, Option<chrono::DateTime<chrono::Utc>>)>,
}

/// Deletes every archive in `plan.delete` from `destination`, then its manifest, carrying on
/// after failures.
///
/// An archive is deleted only while its name still holds the file that was planned
/// ([`ArchiveInfo::identity`]); one replaced meanwhile is left with its manifest. An archive
/// already gone counts as deleted (another rotation got there first); a missing manifest is
/// not an error. When an archive cannot be deleted its manifest is left, so what remains can
/// still be verified. A manifest is marked as going with its archive before the archive goes
/// ([`Destination::mark_condemned`]), and unmarked once done with, so that a start after a
/// kill between the two finishes the job, and touches no manifest it did not mark.
pub fn apply_rotation(destination: &dyn Destination, plan: &RotationPlan) -> RotationOutcome {
    let mut outcome = RotationOutcome::default();
    for archive in &plan.delete {
        let Some(identity) = &archive.identity else {
            let reason = "cannot tell which file it is".to_owned();
            outcome.failed.push((archive.path.clone(), reason));
            continue;
        };
        let manifest = &archive.manifest_name;
        // Before the archive goes: a start after a kill between it and its manifest removes a
        // manifest only by this mark, as nothing else tells it from one a user kept. Best
        // effort: unmarked (no hard links there, a full disk), a cut leaves the manifest.
        let marked = destination.mark_condemned(manifest).unwrap_or(false);
        let unmark = || {
            if marked {
                // Left, it goes at the next start, alone, or with a manifest condemned still.
                let _ = destination.unmark_condemned(manifest);
            }
        };
        match destination.remove_if_same(&archive.file_name, identity) {
            Ok(Removal::Removed | Removal::Gone) => {}
            Ok(Removal::Replaced) => {
                unmark();
                outcome.replaced.push(archive.path.clone());
                continue;
            }
            Ok(Removal::Locked { until }) => {
                unmark();
                outcome.locked.push((archive.path.clone(), until));
                continue;
            }
            Err(e) => {
                unmark();
                outcome.failed.push((archive.path.clone(), e.to_string()));
                continue;
            }
        }
        outcome.deleted.push(archive.path.clone());
        // At once, so that a rotation killed midway leaves at most one marked manifest without
        // its archive; but another archive of ours of the same stem keeps it (it may be the
        // one it describes). Another user's file under either name is theirs: it neither
        // keeps our manifest nor goes with it.
        let removed = match destination.any_exists(&archives_sharing(manifest)) {
            Ok(true) => Ok(()),
            Ok(false) => match destination.holder(std::slice::from_ref(manifest)) {
                Ok(Some(Holder::Ours)) => destination.remove(manifest),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) => unmark(),
            // The mark stays: the next start removes the manifest it condemned.
            Err(e) => outcome
                .failed
                .push((destination.path_of(manifest), e.to_string())),
        }
    }
    if !plan.delete.is_empty() {
        // Durability of the deletions is best effort: they already happened.
        let _ = destination.sync();
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::{LocalFolder, list};
    use crate::format::{Manifest, TIMESTAMP_FORMAT};
    use crate::store::test_support::{NOBODY, can_give_files_away, dir_names, stamp};
    use std::fs;

    fn archive(name: &str, when: NaiveDateTime) -> ArchiveInfo {
        let stem = format!("{name}_{}", when.format(TIMESTAMP_FORMAT));
        ArchiveInfo {
            path: PathBuf::from(format!("/b/{stem}.tar.gz")),
            file_name: format!("{stem}.tar.gz"),
            name: name.into(),
            timestamp: when,
            compression: proto::Codec::Gzip,
            size_bytes: 0,
            manifest_name: format!("{stem}.json"),
            manifest: None,
            manifest_unread: false,
            identity: None,
        }
    }

    fn now() -> NaiveDateTime {
        stamp("20250615_120000")
    }

    /// The daemon's clock reading `local`, in UTC.
    fn clock(local: NaiveDateTime) -> DateTime<FixedOffset> {
        local.and_utc().fixed_offset()
    }

    /// `ages` in days before `now`, one archive each.
    fn aged(name: &str, ages: &[i64]) -> Vec<ArchiveInfo> {
        ages.iter()
            .map(|d| archive(name, now() - TimeDelta::days(*d)))
            .collect()
    }

    fn at(name: &str, stamps: &[&str]) -> Vec<ArchiveInfo> {
        stamps.iter().map(|s| archive(name, stamp(s))).collect()
    }

    fn default_policy() -> RetentionPolicy {
        RetentionPolicy::default()
    }

    fn gfs_only() -> RetentionPolicy {
        // No age-based keeping, no minimum: only the GFS rule under test keeps anything.
        RetentionPolicy {
            retention_days: 0,
            min_keep: 0,
            ..RetentionPolicy::default()
        }
    }

    fn kept_stamps(plan: &RotationPlan) -> Vec<String> {
        plan.keep
            .iter()
            .map(|a| a.timestamp.format(TIMESTAMP_FORMAT).to_string())
            .collect()
    }

    #[test]
    fn copies_without_a_manifest_are_kept_by_age_alone_where_only_manifests_count() {
        // Three complete remote copies, then two uploads cut short before their manifest.
        let mut archives = aged("m", &[14, 13, 12, 11, 10]);
        for (i, archive) in archives.iter_mut().enumerate().take(3) {
            let created = archive.timestamp.format(TIMESTAMP_FORMAT).to_string();
            archive.manifest = Some(crate::store::test_support::fake_manifest(
                "m",
                &created,
                &[i as u8],
            ));
        }
        let policy = RetentionPolicy {
            retention_days: 7,
            min_keep: 2,
            keep_daily: Some(2),
            ..RetentionPolicy::default()
        };
        let kept = |counted| {
            let plan = plan_rotation_counting(&archives, &policy, counted, clock(now()));
            kept_stamps(&plan)
        };
        let day = |d: i64| {
            (now() - TimeDelta::days(d))
                .format(TIMESTAMP_FORMAT)
                .to_string()
        };
        assert_eq!(kept(Counted::WithManifest), [day(13), day(12)]);
        assert_eq!(kept(Counted::Every), [day(11), day(10)]);
        // Young enough, a copy without one stays: a later upload may complete it.
        let young = RetentionPolicy {
            retention_days: 10,
            ..policy
        };
        let plan = plan_rotation_counting(&archives, &young, Counted::WithManifest, clock(now()));
        assert_eq!(kept_stamps(&plan), [day(13), day(12), day(10)]);
    }

    #[test]
    fn an_archive_is_aged_in_the_time_zone_its_manifest_records() {
        // The daemon ran at UTC-12, then restarted at UTC+14: a backup of a minute ago is named
        // 26 hours before the clock's new local time.
        let now = clock(now()).with_timezone(&FixedOffset::east_opt(14 * 3600).unwrap());
        let local = |minutes_ago: i64, hours: i32| {
            let offset = FixedOffset::east_opt(hours * 3600).unwrap();
            let when = now.with_timezone(&offset) - TimeDelta::minutes(minutes_ago);
            let mut archive = archive("m", when.naive_local());
            let created = when.format(TIMESTAMP_FORMAT).to_string();
            let manifest = crate::store::test_support::fake_manifest("m", &created, b"m");
            archive.manifest = Some(Manifest {
                utc_offset: Some(offset.to_string()),
                ..manifest
            });
            archive
        };
        let policy = RetentionPolicy {
            retention_days: 1,
            min_keep: 0,
            ..RetentionPolicy::default()
        };
        let minute_ago = local(1, -12);
        let days_ago = local(2 * 24 * 60, 14);
        let plan = plan_rotation(&[days_ago.clone(), minute_ago.clone()], &policy, now);
        assert_eq!(plan.keep, std::slice::from_ref(&minute_ago));
        assert_eq!(plan.delete, [days_ago]);
        // Without the offset it is taken to be in the clock's zone, as before manifests had one.
        let mut unknown = minute_ago;
        unknown.manifest.as_mut().unwrap().utc_offset = None;
        let plan = plan_rotation(&[unknown.clone()], &policy, now);
        assert_eq!(plan.delete, [unknown]);
    }

    #[test]
    fn copies_whose_manifest_is_there_but_unread_count_toward_the_minimum() {
        // A lifecycle rule moved the manifests to an archive storage class, or a request to
        // read them failed: taken for uploads cut short, copies past the retention were all
        // deleted, whatever the minimum kept.
        let mut archives = aged("m", &[14, 13, 12]);
        for archive in &mut archives {
            archive.manifest_unread = true;
        }
        let policy = RetentionPolicy {
            retention_days: 7,
            min_keep: 2,
            ..RetentionPolicy::default()
        };
        let plan = plan_rotation_counting(&archives, &policy, Counted::WithManifest, clock(now()));
        let day = |d: i64| {
            (now() - TimeDelta::days(d))
                .format(TIMESTAMP_FORMAT)
                .to_string()
        };
        assert_eq!(kept_stamps(&plan), [day(13), day(12)]);
    }

    #[test]
    fn defaults_are_the_original_backup_scripts() {
        let p = RetentionPolicy::default();
        assert_eq!((p.retention_days, p.min_keep), (7, 3));
        assert_eq!(p.keep_last, None);
    }

    #[test]
    fn eight_old_of_ten_deletes_seven() {
        // Ages 1, 2 are recent; 8..=15 are old. Newest 3 = the 2 recent + the newest old one.
        let archives = aged("docs", &[1, 2, 8, 9, 10, 11, 12, 13, 14, 15]);
        let plan = plan_rotation(&archives, &default_policy(), clock(now()));
        assert_eq!(plan.delete.len(), 7);
        assert_eq!(plan.keep.len(), 3);
        assert!(
            plan.keep
                .iter()
                .all(|a| now() - a.timestamp <= TimeDelta::days(8))
        );
    }

    #[test]
    fn two_old_of_ten_deletes_both() {
        let archives = aged("docs", &[0, 1, 2, 3, 4, 5, 6, 7, 20, 30]);
        let plan = plan_rotation(&archives, &default_policy(), clock(now()));
        let deleted: Vec<_> = plan.delete.iter().map(|a| a.timestamp).collect();
        assert_eq!(
            deleted,
            [now() - TimeDelta::days(30), now() - TimeDelta::days(20)]
        );
        assert_eq!(plan.keep.len(), 8);
    }

    #[test]
    fn exactly_retention_days_old_is_not_old() {
        let archives = aged("docs", &[7, 8, 9, 10, 11]);
        let policy = RetentionPolicy {
            min_keep: 0,
            ..default_policy()
        };
        let plan = plan_rotation(&archives, &policy, clock(now()));
        assert_eq!(plan.keep.len(), 1);
        assert_eq!(plan.keep[0].timestamp, now() - TimeDelta::days(7));
    }

    #[test]
    fn all_ten_old_keeps_the_newest_three() {
        let archives = aged("docs", &[30, 31, 32, 33, 34, 35, 36, 37, 38, 39]);
        let plan = plan_rotation(&archives, &default_policy(), clock(now()));
        assert_eq!(plan.delete.len(), 7);
        let kept: Vec<_> = plan.keep.iter().map(|a| a.timestamp).collect();
        assert_eq!(
            kept,
            [32, 31, 30].map(|d| now() - TimeDelta::days(d)).to_vec()
        );
    }

    #[test]
    fn names_do_not_push_each_other_out() {
        let mut archives = aged("docs", &[30, 31, 32, 33, 34]);
        archives.extend(aged("docs_old", &[40, 41]));
        archives.extend(aged("photos", &[1, 2, 3, 4, 5, 6]));
        let plan = plan_rotation(&archives, &default_policy(), clock(now()));
        let count =
            |list: &[ArchiveInfo], name: &str| list.iter().filter(|a| a.name == name).count();
        assert_eq!(count(&plan.keep, "docs"), 3);
        assert_eq!(count(&plan.delete, "docs"), 2);
        assert_eq!(count(&plan.keep, "docs_old"), 2, "fewer than min_keep");
        assert_eq!(count(&plan.keep, "photos"), 6);
        assert_eq!(count(&plan.delete, "photos"), 0);
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_day() {
        let archives = at(
            "docs",
            &[
                "20250610_080000",
                "20250610_200000",
                "20250611_090000",
                "20250611_100000",
                "20250611_230000",
                // No archive on the 12th: that day does not use up a slot.
                "20250613_010000",
                "20250613_020000",
            ],
        );
        let policy = RetentionPolicy {
            keep_daily: Some(3),
            ..gfs_only()
        };
        let plan = plan_rotation(&archives, &policy, clock(now()));
        assert_eq!(
            kept_stamps(&plan),
            ["20250610_200000", "20250611_230000", "20250613_020000"]
        );
        assert_eq!(plan.delete.len(), 4);
    }

    #[test]
    fn keep_weekly_uses_iso_weeks_across_a_year_boundary() {
        // 2024-12-30 (Mon) .. 2025-01-05 (Sun) are all ISO week 2025-W01.
        let archives = at(
            "docs",
            &[
                "20241223_120000", // 2024-W52
                "20241229_120000", // 2024-W52 (Sunday), newest of that week
                "20241230_120000", // 2025-W01
                "20241231_120000", // 2025-W01
                "20250101_120000", // 2025-W01
                "20250105_120000", // 2025-W01, newest of that week
                "20250106_120000", // 2025-W02
            ],
        );
        let policy = RetentionPolicy {
            keep_weekly: Some(3),
            ..gfs_only()
        };
        let plan = plan_rotation(&archives, &policy, clock(now()));
        assert_eq!(
            kept_stamps(&plan),
            ["20241229_120000", "20250105_120000", "20250106_120000"]
        );
        let two = RetentionPolicy {
            keep_weekly: Some(2),
            ..gfs_only()
        };
        let plan = plan_rotation(&archives, &two, clock(now()));
        assert_eq!(kept_stamps(&plan), ["20250105_120000", "20250106_120000"]);
    }

    #[test]
    fn keep_monthly_keeps_the_newest_of_each_month() {
        let archives = at(
            "docs",
            &[
                "20241130_120000",
                "20241201_120000",
                "20241231_235959",
                "20250101_000000",
                "20250131_120000",
                "20250301_120000",
            ],
        );
        let policy = RetentionPolicy {
            keep_monthly: Some(3),
            ..gfs_only()
        };
        let plan = plan_rotation(&archives, &policy, clock(now()));
        assert_eq!(
            kept_stamps(&plan),
            ["20241231_235959", "20250131_120000", "20250301_120000"]
        );
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let archives = aged("docs", &[20, 21, 22, 23, 24]);
        let policy = RetentionPolicy {
            keep_last: Some(2),
            ..gfs_only()
        };
        let plan = plan_rotation(&archives, &policy, clock(now()));
        let kept: Vec<_> = plan.keep.iter().map(|a| a.timestamp).collect();
        assert_eq!(kept, [21, 20].map(|d| now() - TimeDelta::days(d)).to_vec());
    }

    #[test]
    fn rules_are_a_union_with_min_keep_and_age() {
        // Two recent; then one archive per month going back a year.
        let mut archives = aged("docs", &[0, 1]);
        archives.extend(aged("docs", &[40, 70, 100, 130, 160, 190, 220, 250]));
        let policy = RetentionPolicy {
            retention_days: 7,
            min_keep: 3,
            keep_monthly: Some(5),
            ..RetentionPolicy::default()
        };
        let plan = plan_rotation(&archives, &policy, clock(now()));
        // Monthly: the 5 newest months are those of ages 0/1 (June), 40, 70, 100, 130.
        // min_keep adds age 40 (already in). Age keeps 0 and 1.
        let mut kept: Vec<i64> = plan
            .keep
            .iter()
            .map(|a| (now() - a.timestamp).num_days())
            .collect();
        kept.sort_unstable();
        assert_eq!(kept, [0, 1, 40, 70, 100, 130]);
        assert_eq!(plan.delete.len(), 4);
    }

    /// `docs` archives 1 to 3 days old, and a decompressed copy beside the newest.
    fn with_a_decompressed_copy() -> Vec<ArchiveInfo> {
        let mut archives = aged("docs", &[1, 2, 3]);
        let mut copy = archives[0].clone();
        copy.file_name = copy.file_name.replace(".tar.gz", ".tar");
        copy.path = copy.path.with_file_name(&copy.file_name);
        copy.compression = proto::Codec::None;
        archives.push(copy);
        archives
    }

    #[test]
    fn files_of_one_stem_count_as_one_backup_and_go_together() {
        let policy = RetentionPolicy {
            retention_days: 0,
            min_keep: 2,
            ..RetentionPolicy::default()
        };
        let plan = plan_rotation(&with_a_decompressed_copy(), &policy, clock(now()));
        let days = |list: &[ArchiveInfo]| -> Vec<i64> {
            list.iter()
                .map(|a| (now() - a.timestamp).num_days())
                .collect()
        };
        // Two backups kept (three files), not the newest's two files alone.
        assert_eq!(days(&plan.keep), [2, 1, 1]);
        assert_eq!(days(&plan.delete), [3]);

        let older = RetentionPolicy {
            keep_daily: Some(1),
            min_keep: 0,
            ..policy
        };
        let plan = plan_rotation(&with_a_decompressed_copy(), &older, clock(now()));
        assert_eq!(
            days(&plan.keep),
            [1, 1],
            "the GFS pick keeps its stem's other file"
        );
    }

    #[test]
    fn a_manifest_stays_while_an_archive_of_its_stem_does() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let zst = d.join("docs_20250101_000000.tar.zst");
        fs::write(&zst, b"compressed").unwrap();
        let manifest = crate::store::test_support::write_matching_manifest(&zst);
        fs::write(d.join("docs_20250101_000000.tar"), b"decompressed").unwrap();
        let folder = LocalFolder::new(d);
        let listed = list(&folder).unwrap();
        let only = |suffix: &str| RotationPlan {
            delete: listed
                .iter()
                .filter(|a| a.file_name.ends_with(suffix))
                .cloned()
                .collect(),
            keep: Vec::new(),
        };
        let tar = listed
            .iter()
            .find(|a| a.file_name.ends_with(".tar"))
            .unwrap();
        assert_eq!(tar.manifest, None, "the manifest is the .tar.zst's");

        let outcome = apply_rotation(&folder, &only(".tar"));
        assert_eq!(outcome.deleted.len(), 1);
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        assert!(
            manifest.exists(),
            "removed with the other archive of its stem"
        );
        apply_rotation(&folder, &only(".tar.zst"));
        assert_eq!(dir_names(d), Vec::<String>::new());
    }

    #[test]
    fn another_user_s_files_neither_keep_a_deleted_archive_s_manifest_nor_go_with_it() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !can_give_files_away() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::set_permissions(d, fs::Permissions::from_mode(0o1777)).unwrap();
        let plant = |name: &str| {
            fs::write(d.join(name), b"").unwrap();
            std::os::unix::fs::chown(d.join(name), Some(NOBODY), Some(NOBODY)).unwrap();
        };
        // Ours with its manifest, and a stranger's file of the same stem.
        let ours = d.join("docs_20250101_000000.tar.zst");
        fs::write(&ours, b"compressed").unwrap();
        let manifest = crate::store::test_support::write_matching_manifest(&ours);
        plant("docs_20250101_000000.tar");
        // Ours without a manifest, whose manifest name a stranger holds.
        fs::write(d.join("docs_20250102_000000.tar.zst"), b"compressed").unwrap();
        plant("docs_20250102_000000.json");
        let folder = LocalFolder::new(d);
        let plan = RotationPlan {
            delete: list(&folder).unwrap(),
            keep: Vec::new(),
        };
        assert_eq!(plan.delete.len(), 2, "{:?}", plan.delete);

        let outcome = apply_rotation(&folder, &plan);
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        assert!(!manifest.exists(), "a stranger's file kept our manifest");
        assert_eq!(
            dir_names(d),
            ["docs_20250101_000000.tar", "docs_20250102_000000.json"]
        );
        let theirs = fs::metadata(d.join("docs_20250102_000000.json")).unwrap();
        assert_eq!(theirs.uid(), NOBODY);
    }

    /// A local folder that records each removal and mark, in order, whose archives a lock may
    /// hold until `locked_until`, as an S3 object lock would, and whose rotation may be cut
    /// (`cut`) right after an archive's removal, as a kill would: nothing else is removed.
    #[derive(Debug)]
    struct Observed {
        folder: LocalFolder,
        locked_until: Option<chrono::DateTime<chrono::Utc>>,
        cut: bool,
        removed: std::sync::Mutex<Vec<String>>,
    }

    impl Observed {
        fn new(folder: LocalFolder) -> Self {
            Self {
                folder,
                locked_until: None,
                cut: false,
                removed: Default::default(),
            }
        }

        fn note(&self, file: &str) {
            self.removed.lock().unwrap().push(file.to_owned());
        }
    }

    impl Destination for Observed {
        fn location(&self) -> PathBuf {
            self.folder.location()
        }
        fn path_of(&self, file: &str) -> PathBuf {
            self.folder.path_of(file)
        }
        fn files(&self) -> std::io::Result<Vec<(String, u64)>> {
            self.folder.files()
        }
        fn any_exists(&self, files: &[String]) -> std::io::Result<bool> {
            self.folder.any_exists(files)
        }
        fn open(&self, file: &str) -> std::io::Result<Box<dyn std::io::Read + Send>> {
            self.folder.open(file)
        }
        fn get(&self, file: &str) -> std::io::Result<Vec<u8>> {
            self.folder.get(file)
        }
        fn put_new(&self, file: &str, bytes: &[u8]) -> std::io::Result<()> {
            self.folder.put_new(file, bytes)
        }
        fn begin(
            &self,
            archive: &str,
        ) -> std::io::Result<Box<dyn crate::destination::PendingArchive>> {
            self.folder.begin(archive)
        }
        fn remove(&self, file: &str) -> std::io::Result<()> {
            if self.cut {
                return Err(std::io::Error::other("killed"));
            }
            self.note(file);
            self.folder.remove(file)
        }
        fn mark_condemned(&self, manifest: &str) -> std::io::Result<bool> {
            self.note(&format!("mark {manifest}"));
            self.folder.mark_condemned(manifest)
        }
        fn unmark_condemned(&self, manifest: &str) -> std::io::Result<()> {
            if self.cut {
                return Err(std::io::Error::other("killed"));
            }
            self.note(&format!("unmark {manifest}"));
            self.folder.unmark_condemned(manifest)
        }
        fn identity(&self, file: &str) -> std::io::Result<crate::destination::FileIdentity> {
            self.folder.identity(file)
        }
        fn remove_if_same(
            &self,
            file: &str,
            expected: &crate::destination::FileIdentity,
        ) -> std::io::Result<Removal> {
            if let Some(until) = self.locked_until {
                return Ok(Removal::Locked { until: Some(until) });
            }
            self.note(file);
            self.folder.remove_if_same(file, expected)
        }
    }

    #[test]
    fn each_manifest_goes_right_after_its_archive() {
        // A rotation killed midway then leaves at most one manifest without its archive.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let stems = ["docs_20250101_000000", "docs_20250102_000000"];
        for stem in stems {
            fs::write(d.join(format!("{stem}.tar.gz")), b"a").unwrap();
            fs::write(d.join(format!("{stem}.json")), b"{}").unwrap();
        }
        let recorded = Observed::new(LocalFolder::new(d));
        let plan = RotationPlan {
            delete: list(&recorded).unwrap(),
            keep: Vec::new(),
        };
        apply_rotation(&recorded, &plan);
        let order = [
            "mark docs_20250101_000000.json",
            "docs_20250101_000000.tar.gz",
            "docs_20250101_000000.json",
            "unmark docs_20250101_000000.json",
            "mark docs_20250102_000000.json",
            "docs_20250102_000000.tar.gz",
            "docs_20250102_000000.json",
            "unmark docs_20250102_000000.json",
        ];
        assert_eq!(*recorded.removed.lock().unwrap(), order);
        assert_eq!(dir_names(d), Vec::<String>::new());
    }

    /// `<stem>.tar.gz` and its manifest in `d`.
    fn backup_in(d: &std::path::Path, stem: &str) {
        fs::write(d.join(format!("{stem}.tar.gz")), b"a").unwrap();
        fs::write(d.join(format!("{stem}.json")), b"{}").unwrap();
    }

    fn delete_all(destination: &dyn Destination) -> RotationOutcome {
        let plan = RotationPlan {
            delete: list(destination).unwrap(),
            keep: Vec::new(),
        };
        apply_rotation(destination, &plan)
    }

    #[test]
    fn a_rotation_cut_after_an_archive_leaves_its_manifest_marked_and_the_start_finishes_it() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let stem = "docs_20250101_000000";
        backup_in(d, stem);
        // A user's manifest whose archive went to tape: not the rotation's.
        fs::write(d.join("docs_20240101_000000.json"), b"{}").unwrap();
        let cut = Observed {
            cut: true,
            ..Observed::new(LocalFolder::new(d))
        };
        delete_all(&cut);
        let mark = d.join(format!(".backupd-deleting-{stem}.json"));
        assert_eq!(
            dir_names(d),
            [
                format!(".backupd-deleting-{stem}.json"),
                "docs_20240101_000000.json".to_owned(),
                format!("{stem}.json"),
            ]
        );
        let inode = |path: &std::path::Path| fs::metadata(path).unwrap().ino();
        assert_eq!(inode(&mark), inode(&d.join(format!("{stem}.json"))));

        let finished = LocalFolder::new(d).finish_cut_rotations().unwrap();
        assert_eq!(finished.manifests, [d.join(format!("{stem}.json"))]);
        assert_eq!(dir_names(d), ["docs_20240101_000000.json"]);
    }

    #[test]
    fn a_leftover_mark_under_the_name_is_replaced_and_the_rotation_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let stem = "docs_20250101_000000";
        backup_in(d, stem);
        // A mark an earlier cut left, for another file of that name.
        fs::write(d.join(format!(".backupd-deleting-{stem}.json")), b"{}").unwrap();
        let recorded = Observed::new(LocalFolder::new(d));
        let outcome = delete_all(&recorded);
        assert!(outcome.failed.is_empty(), "{outcome:?}");
        assert_eq!(dir_names(d), Vec::<String>::new());
        // Marked indeed: the rotation, cut, leaves the mark the start acts by.
        backup_in(d, stem);
        fs::write(d.join(format!(".backupd-deleting-{stem}.json")), b"{}").unwrap();
        let cut = Observed {
            cut: true,
            ..Observed::new(LocalFolder::new(d))
        };
        delete_all(&cut);
        let finished = LocalFolder::new(d).finish_cut_rotations().unwrap();
        assert_eq!(finished.manifests, [d.join(format!("{stem}.json"))]);
        assert_eq!(dir_names(d), Vec::<String>::new());
    }

    #[test]
    fn a_mark_name_held_by_what_is_not_ours_stays_and_the_rotation_goes_on_unmarked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let stem = "docs_20250101_000000";
        let mark = d.join(format!(".backupd-deleting-{stem}.json"));
        let mut planted = vec![format!(".backupd-deleting-{stem}.json")];
        backup_in(d, stem);
        std::os::unix::fs::symlink("elsewhere", &mark).unwrap();
        let outcome = delete_all(&LocalFolder::new(d));
        assert!(outcome.failed.is_empty(), "{outcome:?}");
        assert_eq!(dir_names(d), planted, "a link under the mark's name stays");
        fs::remove_file(&mark).unwrap();

        if !rustix::process::geteuid().is_root() {
            println!("not root: the part with another user's file is skipped");
            return;
        }
        fs::set_permissions(d, fs::Permissions::from_mode(0o1777)).unwrap();
        backup_in(d, stem);
        fs::write(&mark, b"theirs").unwrap();
        std::os::unix::fs::chown(&mark, Some(NOBODY), Some(NOBODY)).unwrap();
        let outcome = delete_all(&LocalFolder::new(d));
        assert!(outcome.failed.is_empty(), "{outcome:?}");
        planted.sort();
        assert_eq!(dir_names(d), planted, "another user's file stays");
        assert_eq!(fs::read(&mark).unwrap(), b"theirs");
    }

    #[test]
    fn apply_deletes_archive_and_manifest_and_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for stem in [
            "docs_20250101_000000",
            "docs_20250102_000000",
            "docs_20250103_000000",
            "docs_20250104_000000",
            "docs_20250105_000000",
        ] {
            fs::write(d.join(format!("{stem}.tar.gz")), b"a").unwrap();
            fs::write(d.join(format!("{stem}.json")), b"{}").unwrap();
        }
        // No manifest: not an error.
        fs::remove_file(d.join("docs_20250102_000000.json")).unwrap();
        // A manifest that cannot be removed with remove_file (a folder), even as root.
        fs::remove_file(d.join("docs_20250101_000000.json")).unwrap();
        fs::create_dir(d.join("docs_20250101_000000.json")).unwrap();
        fs::write(d.join("unrelated.txt"), b"keep me").unwrap();

        let policy = RetentionPolicy {
            retention_days: 0,
            min_keep: 2,
            ..RetentionPolicy::default()
        };
        let folder = LocalFolder::new(d);
        let plan = plan_rotation(
            &list(&folder).unwrap(),
            &policy,
            clock(stamp("20250201_000000")),
        );
        assert_eq!(plan.delete.len(), 3);
        // One archive disappears before the rotation runs: already gone counts as deleted.
        fs::remove_file(d.join("docs_20250103_000000.tar.gz")).unwrap();

        let outcome = apply_rotation(&folder, &plan);
        assert_eq!(
            outcome.deleted,
            [
                d.join("docs_20250101_000000.tar.gz"),
                d.join("docs_20250102_000000.tar.gz"),
                d.join("docs_20250103_000000.tar.gz"),
            ]
        );
        assert_eq!(outcome.failed.len(), 1);
        assert_eq!(outcome.failed[0].0, d.join("docs_20250101_000000.json"));

        let mut left: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "docs_20250101_000000.json",
                "docs_20250104_000000.json",
                "docs_20250104_000000.tar.gz",
                "docs_20250105_000000.json",
                "docs_20250105_000000.tar.gz",
                "unrelated.txt",
            ]
        );
    }

    #[test]
    fn a_failed_archive_deletion_keeps_its_manifest_and_continues() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A folder where the archive should be: remove_file fails even as root.
        let stuck = archive("docs", stamp("20250101_000000"));
        let stuck = ArchiveInfo {
            path: d.join("docs_20250101_000000.tar.gz"),
            identity: Some(crate::destination::FileIdentity {
                dev: 0,
                ino: 0,
                size: 0,
                mtime_ns: 0,
            }),
            ..stuck
        };
        let stuck_manifest = d.join("docs_20250101_000000.json");
        fs::create_dir(&stuck.path).unwrap();
        fs::write(&stuck_manifest, b"{}").unwrap();
        fs::write(d.join("docs_20250102_000000.tar.gz"), b"a").unwrap();
        let folder = LocalFolder::new(d);
        let fine = ArchiveInfo {
            path: d.join("docs_20250102_000000.tar.gz"),
            identity: folder.identity("docs_20250102_000000.tar.gz").ok(),
            ..archive("docs", stamp("20250102_000000"))
        };
        let plan = RotationPlan {
            delete: vec![stuck.clone(), fine.clone()],
            keep: Vec::new(),
        };
        let outcome = apply_rotation(&folder, &plan);
        assert_eq!(outcome.deleted, std::slice::from_ref(&fine.path));
        assert_eq!(outcome.failed.len(), 1);
        assert_eq!(outcome.failed[0].0, stuck.path);
        assert!(stuck_manifest.exists());
        assert!(!fine.path.exists());
        // Unmarked again: the next start has nothing to act on.
        assert_eq!(
            dir_names(d),
            ["docs_20250101_000000.json", "docs_20250101_000000.tar.gz"]
        );
    }

    #[test]
    fn an_archive_whose_name_was_reused_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let folder = LocalFolder::new(d);
        let old = "docs_20250101_000000.tar.gz";
        fs::write(d.join(old), b"the old archive").unwrap();
        fs::write(d.join("docs_20250101_000000.json"), b"{}").unwrap();
        let policy = RetentionPolicy {
            retention_days: 0,
            min_keep: 0,
            ..RetentionPolicy::default()
        };
        let plan = plan_rotation(
            &list(&folder).unwrap(),
            &policy,
            clock(stamp("20250201_000000")),
        );
        assert_eq!(plan.delete.len(), 1);

        // Between planning and deleting, the name is freed and a new archive published under
        // it (created before the old one is gone, so even a recycled inode cannot match).
        fs::write(d.join("new"), b"a newer archive").unwrap();
        fs::rename(d.join("new"), d.join(old)).unwrap();
        let outcome = apply_rotation(&folder, &plan);
        assert!(outcome.deleted.is_empty(), "{outcome:?}");
        assert_eq!(outcome.replaced, [d.join(old)]);
        assert_eq!(fs::read(d.join(old)).unwrap(), b"a newer archive");
        assert_eq!(dir_names(d), ["docs_20250101_000000.json", old]);

        // The same file, still there: deleted with its manifest.
        let plan = plan_rotation(
            &list(&folder).unwrap(),
            &policy,
            clock(stamp("20250201_000000")),
        );
        let outcome = apply_rotation(&folder, &plan);
        assert_eq!(outcome.deleted, [d.join(old)]);
        assert!(dir_names(d).is_empty());
    }

    #[test]
    fn a_locked_archive_stays_with_its_manifest_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("docs_20250101_000000.tar.gz"), b"locked").unwrap();
        fs::write(d.join("docs_20250101_000000.json"), b"{}").unwrap();
        let until = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let locked = Observed {
            locked_until: Some(until),
            ..Observed::new(LocalFolder::new(d))
        };
        let policy = RetentionPolicy {
            retention_days: 0,
            min_keep: 0,
            ..RetentionPolicy::default()
        };
        let plan = plan_rotation(
            &list(&locked).unwrap(),
            &policy,
            clock(stamp("20250201_000000")),
        );
        assert_eq!(plan.delete.len(), 1);
        let outcome = apply_rotation(&locked, &plan);
        assert!(outcome.deleted.is_empty(), "{outcome:?}");
        assert!(outcome.failed.is_empty(), "{outcome:?}");
        assert_eq!(
            outcome.locked,
            [(d.join("docs_20250101_000000.tar.gz"), Some(until))]
        );
        assert_eq!(
            dir_names(d),
            ["docs_20250101_000000.json", "docs_20250101_000000.tar.gz"]
        );
    }
}
