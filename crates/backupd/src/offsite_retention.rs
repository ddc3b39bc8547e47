//! Remote retention: a retention policy applied to one backup set on an offsite remote,
//! through the same rotation code as a folder (`retention::rotate` → `store::plan_rotation`,
//! identity re-checked by HEAD just before each DELETE). `prune --remote` calls
//! [`rotate_remote`], each name by its schedule's policy unless it gives one
//! ([`names_on_remote`]); a run rotates each remote after its uploads ([`after_upload`]) by the
//! job's `offsite_retention`, or its `retention` where that sets nothing. Each first finishes
//! the rotations of its names cut short between an archive and its manifest
//! ([`S3Prefix::finish_cut_rotations`]): a bucket has no start-up to do it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::NaiveDateTime;
use proto::schedule::Schedule;
use proto::{JobOptions, Retention};

use crate::destination::{self, S3Prefix};
use crate::engine::BackupJob;
use crate::format::naming::parse_archive_name;
use crate::offsite::Offsite;
use crate::remote::RemoteConfig;
use crate::retention::{self, NameRetention, Rotated, RunScope};
use crate::runner::AfterWrite;
use crate::state::Daemon;
use crate::store::{RetentionPolicy, StoreError};

/// The policy of a job's remote copies: `offsite_retention`'s fields, else `retention`'s,
/// else the defaults.
pub fn policy(options: &JobOptions) -> RetentionPolicy {
    retention::policy(Some(&rules(options)))
}

/// The rules of a job's remote copies, before the built-in defaults fill in the rest.
fn rules(options: &JobOptions) -> Retention {
    let own = options.offsite_retention.unwrap_or_default();
    own.or(options.retention.unwrap_or_default())
}

/// One remote rotation after each offsite copy among `after`.
pub fn steps(after: &[AfterWrite], options: &JobOptions) -> Vec<AfterWrite> {
    let policy = policy(options);
    after
        .iter()
        .filter_map(|step| match step {
            AfterWrite::Offsite(offsite) => Some(AfterWrite::RotateRemote(offsite.clone(), policy)),
            _ => None,
        })
        .collect()
}

/// The retention of each name on the remote at `url`, where a request gives none: that of
/// the stored schedule copying it there (its copies', which an offsite-only schedule's
/// archives are), else the `[defaults]`' copies'.
pub fn names_on_remote(
    schedules: &[Arc<Schedule>],
    defaults: &JobOptions,
    remotes: &BTreeMap<String, RemoteConfig>,
    url: &str,
) -> NameRetention {
    let mut by_name = HashMap::new();
    for (schedule, options, _) in schedules_copying_to(schedules, defaults, remotes, url) {
        let policy = policy(&options);
        for name in crate::plan::archive_names(schedule) {
            by_name.insert(name, policy);
        }
    }
    NameRetention::new(by_name, Some(rules(defaults)))
}

/// The stored schedules whose archives go to the remote at `url` (copies, or an offsite-only
/// schedule's own), each with its options (`defaults` filled in) and whether it is
/// offsite-only.
pub fn schedules_copying_to<'a>(
    schedules: &'a [Arc<Schedule>],
    defaults: &JobOptions,
    remotes: &BTreeMap<String, RemoteConfig>,
    url: &str,
) -> Vec<(&'a Schedule, JobOptions, bool)> {
    let mut copying = Vec::new();
    for schedule in schedules {
        let Ok((options, offsite_only)) =
            crate::offsite::split(&schedule.options.clone().or(defaults))
        else {
            continue;
        };
        let copies_there = (options.offsite.iter())
            .any(|spec| crate::remote::url_of(spec, remotes).as_deref() == Some(url));
        if copies_there {
            copying.push((schedule.as_ref(), options, offsite_only));
        }
    }
    copying
}

/// Rotates the archives of `name` (or of every name) on `remote`, each name by the policy
/// `policy_of` gives it; in a dry run, says what would go and deletes nothing. Blocking;
/// callers hold the names' locks (`RotationLocks::lock_all_remote`).
pub fn rotate_remote(
    remote: &S3Prefix,
    name: Option<&str>,
    policy_of: &dyn Fn(&str) -> RetentionPolicy,
    dry_run: bool,
) -> Result<Rotated, StoreError> {
    tracing::info!(
        "Rotating remote {} ({})",
        remote.config().name,
        remote.config().url()
    );
    if !dry_run {
        remote.finish_cut_rotations_logged(name);
    }
    retention::rotate_by(remote, name, policy_of, None, dry_run)
}

/// After `job` copied `own` to `offsite`: the remote copies of its name older than `own`
/// rotated by `policy`, under the name's remote lock. `own` and anything newer (another
/// run's) are never deleted, nor, for a job named after its folder, a plain copy of another
/// folder ([`crate::name_owner::rotatable`]). A rotation that could not run is logged and its error
/// returned, for the run's report: it fails no source.
pub async fn after_upload(
    daemon: &Daemon,
    job: &BackupJob,
    own: &str,
    offsite: &Offsite,
    policy: &RetentionPolicy,
    tag: &str,
) -> Result<Rotated, String> {
    let Some(own_timestamp) = parse_archive_name(own).and_then(|p| {
        NaiveDateTime::parse_from_str(&p.stamp, crate::format::TIMESTAMP_FORMAT).ok()
    }) else {
        return Ok(Rotated::default());
    };
    let url = offsite.remote.config().url();
    let _lock = daemon
        .rotation_locks
        .lock_all_remote(&url, &BTreeSet::from([job.name.clone()]))
        .await;
    let (remote, job_owned, own_owned, policy) = (
        Arc::clone(&offsite.remote),
        job.clone(),
        own.to_owned(),
        *policy,
    );
    let rotated = tokio::task::spawn_blocking(move || -> Result<Rotated, StoreError> {
        remote.finish_cut_rotations_logged(Some(&job_owned.name));
        let listed: Vec<_> = destination::list_named(remote.as_ref(), Some(&job_owned.name))
            .map_err(|source| StoreError::ReadDir {
                path: destination::Destination::location(remote.as_ref()),
                source,
            })?
            .into_iter()
            .filter(|a| a.name == job_owned.name && a.file_name != own_owned)
            .collect();
        let before = crate::name_owner::rotatable(&job_owned, &listed);
        let scope = RunScope {
            existed_before: &before,
            own_timestamp,
        };
        retention::rotate(
            remote.as_ref(),
            Some(job_owned.name.as_str()),
            &policy,
            Some(&scope),
            false,
        )
    })
    .await;
    match rotated {
        Ok(Ok(rotated)) => {
            if !rotated.deleted.is_empty() {
                tracing::info!(
                    "{tag} Old copies deleted from {}: {}",
                    offsite.spec,
                    rotated.deleted.len()
                );
                daemon.publish(proto::Event::Rotated {
                    destination: url,
                    deleted: rotated.deleted.clone(),
                });
            }
            Ok(rotated)
        }
        Ok(Err(e)) => {
            tracing::error!("{tag} can't rotate the copies on {}: {e}", offsite.spec);
            Err(format!("can't rotate the copies of {}: {e}", job.name))
        }
        Err(e) => {
            tracing::error!(
                "{tag} can't rotate the copies on {}: internal error: {e}",
                offsite.spec
            );
            Err(format!(
                "can't rotate the copies of {}: internal error: {e}",
                job.name
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offsite_policy_takes_the_jobs_retention_where_it_sets_nothing() {
        let defaults = RetentionPolicy::default();
        assert_eq!(policy(&JobOptions::default()), defaults);
        let options = JobOptions {
            retention: Some(Retention {
                days: Some(14),
                min_keep: Some(5),
                keep_weekly: Some(4),
                ..Retention::default()
            }),
            offsite_retention: Some(Retention {
                days: Some(90),
                ..Retention::default()
            }),
            ..JobOptions::default()
        };
        let remote = policy(&options);
        assert_eq!(remote.retention_days, 90);
        assert_eq!(remote.min_keep, 5);
        assert_eq!(remote.keep_weekly, Some(4));
        let local_only = JobOptions {
            offsite_retention: None,
            ..options
        };
        assert_eq!(policy(&local_only).retention_days, 14);
    }
}
