//! Whose backups a name holds. Rotation goes by name within a destination, and a one-off run
//! names its archives after its source's folder: `run --sources /a/data` and `run --sources
//! /b/data` would both write `data` archives, and each run's rotation would take the other's
//! backups for its own older ones and delete them. So a run named after its folder may use
//! the name only where the name's newest archive that tells its source backs up that same
//! folder, and no stored schedule writes the name there from another one; a new schedule
//! likewise. The job checks again against what it lists before writing ([`among`]), and its
//! rotation leaves out archives of another folder ([`rotatable`]). A name given to a one-off
//! run with `--name` is the client's choice and is not checked, nor is a schedule replaced:
//! that is how a moved folder carries on its set.

use crate::destination::{ArchiveInfo, Destination, Listed};
use crate::engine::BackupJob;
use crate::format::Manifest;
use crate::format::naming::{manifest_name_for, parse_archive_name};
use crate::offsite_retention::schedules_copying_to;
use crate::plan::{self, Defaults, Naming};
use crate::remote::RemoteConfig;
use crate::runner::{AfterWrite, RunPlan};
use proto::schedule::Schedule;
use proto::schedule_spec::MAX_NAME_LEN;
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Who already writes a name into a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A stored schedule, by its name.
    Schedule(String),
    /// The archives of the name, as their newest manifest that tells a source says.
    Archives,
}

/// What would write under the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    /// A one-off run, its archives named after its folder.
    Run,
    /// A new schedule, by its name.
    Schedule(String),
}

/// A name that already holds the backups of another folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct NameInUse {
    pub writer: Writer,
    pub name: String,
    pub destination: PathBuf,
    pub owner: Owner,
    /// The folder the name's backups are of.
    pub theirs: PathBuf,
    /// The folder this run backs up.
    pub ours: PathBuf,
}

impl NameInUse {
    fn message(&self) -> String {
        let Self {
            name,
            destination,
            theirs,
            ours,
            ..
        } = self;
        let whose = match &self.owner {
            Owner::Schedule(schedule) => format!(
                "schedule {schedule:?} writes archives named {name:?} into {}, from {}",
                destination.display(),
                theirs.display()
            ),
            Owner::Archives => format!(
                "the archives named {name:?} in {} are backups of {}",
                destination.display(),
                theirs.display()
            ),
        };
        let (rotation, own_name) = match &self.writer {
            Writer::Run => (
                "this run's".to_owned(),
                match suggested_name(ours, name) {
                    Some(suggested) => format!("give it a name of its own (--name {suggested})"),
                    None => "give it a name of its own with --name".to_owned(),
                },
            ),
            Writer::Schedule(schedule) => (
                format!("schedule {schedule:?}'s"),
                "give it another name".to_owned(),
            ),
        };
        // How a folder that moved carries its set on (a schedule's name stays its own).
        let (theirs, ours) = (theirs.display(), ours.display());
        let moved = match (&self.owner, &self.writer) {
            (Owner::Schedule(_), _) => String::new(),
            (Owner::Archives, Writer::Run) => {
                format!(", or --name {name} if {theirs} is now {ours}")
            }
            (Owner::Archives, Writer::Schedule(_)) => format!(
                ", or, if {theirs} is now {ours}, back it up once with run --name {name} \
                 --sources {ours} first"
            ),
        };
        format!(
            "{whose}, not {ours}, and {rotation} rotation would delete them as its own older \
             archives: {own_name}{moved}"
        )
    }
}

/// The stored schedules, and what tells where they write.
#[derive(Debug)]
pub struct Stored<'a> {
    pub schedules: &'a [Arc<Schedule>],
    pub defaults: &'a Defaults,
    pub remotes: &'a BTreeMap<String, RemoteConfig>,
}

/// [`check`] in `plan`'s destination, and against the schedules copying to each remote it
/// copies to: a remote's rotation after the upload goes by name too. The remotes themselves
/// are not listed: the local archive must not wait for a remote (one down, or stalled), and
/// a remote rotation leaves out plain copies of another folder by itself
/// ([`rotatable`]). Blocking, as `check`.
pub fn check_plan(writer: &Writer, plan: &RunPlan, stored: &Stored) -> Result<(), Box<NameInUse>> {
    let copies = (plan.after.iter()).filter_map(|step| match step {
        AfterWrite::Offsite(offsite) => Some(offsite.remote.as_ref() as &dyn Destination),
        _ => None,
    });
    let destination = std::iter::once((plan.destination.as_ref(), Looked::Archives));
    let copies = copies.map(|copy| (copy, Looked::SchedulesOnly));
    for (destination, looked) in destination.chain(copies) {
        let location = destination.location();
        let writing: Vec<&Schedule> = if destination.held_by_a_provider() {
            let url = location.to_string_lossy();
            let job_defaults = &stored.defaults.job;
            (schedules_copying_to(stored.schedules, job_defaults, stored.remotes, &url).into_iter())
                .map(|(schedule, _, _)| schedule)
                .collect()
        } else {
            (plan::schedules_writing_into(stored.schedules, stored.defaults, &location).into_iter())
                .map(|(schedule, _)| schedule)
                .collect()
        };
        check(writer, &plan.jobs, destination, &writing, looked)?;
    }
    Ok(())
}

/// What [`check`] looks at besides the schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looked {
    /// The destination's archives too.
    Archives,
    SchedulesOnly,
}

/// Checks each of `writer`'s jobs against the archives in `destination` and the stored
/// schedules `writing` there ([`plan::schedules_writing_into`] a folder,
/// [`crate::offsite_retention::schedules_copying_to`] a remote). Blocking: it lists the
/// destination and reads a manifest or two per name. A destination that cannot be listed is
/// not checked here: the run fails on it by itself.
pub fn check(
    writer: &Writer,
    jobs: &[BackupJob],
    destination: &dyn Destination,
    writing: &[&Schedule],
    looked: Looked,
) -> Result<(), Box<NameInUse>> {
    if jobs.is_empty() {
        return Ok(());
    }
    let location = destination.location();
    let listing = match looked {
        Looked::Archives => destination.listing().unwrap_or_default(),
        Looked::SchedulesOnly => Vec::new(),
    };
    for job in jobs {
        let in_use = |owner, theirs| {
            Box::new(NameInUse {
                writer: writer.clone(),
                name: job.name.clone(),
                destination: location.clone(),
                owner,
                theirs,
                ours: job.source.clone(),
            })
        };
        for schedule in writing {
            let naming = Naming::of_schedule(schedule);
            for source in schedule.sources.iter().map(PathBuf::from) {
                if naming.name_of(&source) == job.name && !same_folder(&source, &job.source) {
                    return Err(in_use(Owner::Schedule(schedule.name.clone()), source));
                }
            }
        }
        if let Some(theirs) = newest_source(destination, &listing, &job.name)
            && !same_folder(&theirs, &job.source)
        {
            return Err(in_use(Owner::Archives, theirs));
        }
    }
    Ok(())
}

/// Why `job` may not write among `archives`, the archives of its name listed just before it
/// writes (oldest first): the newest that tells its source backs up another folder. Checked
/// again there, as another run of that folder may have written since the run was planned.
pub fn among(job: &BackupJob, archives: &[ArchiveInfo]) -> Option<Box<NameInUse>> {
    if !job.name_from_folder {
        return None;
    }
    let theirs = (archives.iter().rev())
        .filter_map(|archive| archive.manifest.as_ref())
        .map(|manifest| manifest.source.clone())
        .find(|source| !source.as_os_str().is_empty())?;
    (!same_folder(&theirs, &job.source)).then(|| {
        Box::new(NameInUse {
            writer: Writer::Run,
            name: job.name.clone(),
            destination: job.destination.location(),
            owner: Owner::Archives,
            theirs,
            ours: job.source.clone(),
        })
    })
}

/// The archives `job`'s rotation may delete of those listed before it wrote: for a job named
/// after its folder, not those whose manifest names another folder. Two runs that wrote at
/// once (each checked before the other's archive existed) leave both folders' archives under
/// the name; neither's later runs delete the other's.
pub fn rotatable(job: &BackupJob, archives: &[ArchiveInfo]) -> Vec<ArchiveInfo> {
    let ours = |archive: &&ArchiveInfo| {
        let source = archive.manifest.as_ref().map(|m| m.source.as_path());
        match source {
            Some(theirs) if !theirs.as_os_str().is_empty() => same_folder(theirs, &job.source),
            _ => true,
        }
    };
    if !job.name_from_folder {
        return archives.to_vec();
    }
    archives.iter().filter(ours).cloned().collect()
}

/// The source the newest manifest of `name`'s archives names. Manifests rebuilt at start, and
/// a remote copy's of an encrypted archive, name none and are passed over.
fn newest_source(destination: &dyn Destination, listing: &[Listed], name: &str) -> Option<PathBuf> {
    let files: HashSet<&str> = listing.iter().map(|f| f.file.as_str()).collect();
    let mut archives: Vec<(String, &str)> = (listing.iter())
        .filter_map(|f| {
            let parsed = parse_archive_name(&f.file)?;
            (parsed.name == name).then_some((parsed.stamp, f.file.as_str()))
        })
        .collect();
    // Newest first: the stamp sorts as the time it tells.
    archives.sort_unstable_by(|a, b| b.cmp(a));
    archives
        .into_iter()
        .map(|(_, archive)| manifest_name_for(archive))
        .filter(|manifest| files.contains(manifest.as_str()))
        .filter_map(|manifest| Manifest::from_json(&destination.get(&manifest).ok()?).ok())
        .map(|manifest| manifest.source)
        .find(|source| !source.as_os_str().is_empty())
}

/// Whether two paths name one folder: spelled alike (but for `.` and trailing slashes), or the
/// same directory on disk. `..` is not resolved by text: after a symlink it leads where the
/// link's target is (`/a/link/../data` is `/b/data` with `/a/link -> /b/sub`). A folder gone
/// since is another.
fn same_folder(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.is_dir() && (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// `path` with `.` and `..` resolved as written.
fn resolved(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `<parent>-<name>` for a source under a named folder (`/b/data` → `b-data`).
fn suggested_name(source: &Path, name: &str) -> Option<String> {
    let parent = resolved(source).parent()?.to_owned();
    parent.file_name()?;
    let mut suggested = format!("{}-{name}", plan::folder_name(&parent));
    suggested.truncate(MAX_NAME_LEN);
    Some(suggested)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_the_same_however_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(dir.path().join("x")).unwrap();
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink(&data, dir.path().join("link")).unwrap();
        assert!(same_folder(&data, &dir.path().join("link")));
        assert!(same_folder(&data, &dir.path().join("x/../data/.")));
        let gone = Path::new("/gone/data");
        assert!(same_folder(gone, Path::new("/gone/./data/")));
        assert!(!same_folder(&data, gone));
        assert!(!same_folder(Path::new("/a/data"), Path::new("/b/data")));
        // By the folders the kernel finds, not by text.
        let b = dir.path().join("b");
        std::fs::create_dir_all(b.join("sub")).unwrap();
        std::fs::create_dir(b.join("data")).unwrap();
        std::os::unix::fs::symlink(b.join("sub"), dir.path().join("to_b")).unwrap();
        let via_link = dir.path().join("to_b/../data");
        assert!(!same_folder(&data, &via_link));
        assert!(same_folder(&b.join("data"), &via_link));
        assert!(!same_folder(Path::new("/gone/x/../data"), gone));
    }

    #[test]
    fn the_suggested_name_adds_the_parent_folder() {
        assert_eq!(
            suggested_name(Path::new("/srv/b/data"), "data").as_deref(),
            Some("b-data")
        );
        assert_eq!(
            suggested_name(Path::new("/home/my docs/x/../data"), "data").as_deref(),
            Some("my_docs-data")
        );
        assert_eq!(suggested_name(Path::new("/data"), "data"), None);
    }
}
