//! The schedule file, `<home>/schedules.json`: loaded at start, and rewritten atomically on
//! every change so that a crash or a full disk never loses or corrupts it. The in-memory copy
//! only changes once the new file is safely on disk.

use crate::fsutil::write_atomically_with;
use chrono::{DateTime, Local};
use proto::response::RunReport;
use proto::schedule::{RunRecord, Schedule, StartedRun, StrictSchedule, Timing};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{Mutex, Notify};

/// Outcomes a schedule keeps unless configured: its last run and nine before it.
pub const DEFAULT_RUNS_KEPT: usize = 10;

/// Version of the schedule file's layout.
pub const FORMAT_VERSION: u32 = 1;

/// The schedule file's content. Each schedule is shared, so that a copy of the whole file
/// (a snapshot, or the next state while a change is saved) copies pointers, not schedules:
/// with 10,000 of them that copy was most of a `list` or a `create`.
///
/// Read strictly: a key the daemon does not know, at the top or in a schedule, is an error
/// rather than ignored and dropped at the next save.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    pub version: u32,
    /// Above every id in the file: the id the next schedule gets.
    pub next_id: u64,
    #[serde(deserialize_with = "strict_schedules")]
    pub schedules: Vec<Arc<Schedule>>,
}

fn strict_schedules<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Arc<Schedule>>, D::Error> {
    let schedules = Vec::<StrictSchedule>::deserialize(deserializer)?;
    Ok(schedules.into_iter().map(|s| Arc::new(s.0)).collect())
}

impl Default for ScheduleFile {
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            next_id: 1,
            schedules: Vec::new(),
        }
    }
}

impl ScheduleFile {
    /// Appends a schedule under a fresh id (whatever id it had) and returns its index; `None`
    /// once `next_id` has reached the last id (only a hand-edited file gets there).
    pub fn add(&mut self, mut schedule: Schedule) -> Option<usize> {
        schedule.id = self.next_id;
        self.next_id = self.next_id.checked_add(1)?;
        self.schedules.push(Arc::new(schedule));
        Some(self.schedules.len() - 1)
    }

    pub fn position_of_id(&self, id: u64) -> Option<usize> {
        self.schedules.iter().position(|s| s.id == id)
    }

    pub fn position_of_name(&self, name: &str) -> Option<usize> {
        self.schedules.iter().position(|s| s.name == name)
    }

    /// Gives the schedule at `position` the definition of `new` (name, sources, timing,
    /// options) and keeps what the daemon knows of it: id, creation, runs, last success, the
    /// run going on (which ends with the settings it started with). A new timing counts from
    /// `now`: an occurrence of it before `now` is neither missed nor caught up.
    pub fn replace(&mut self, position: usize, new: Schedule, now: DateTime<Local>) {
        // Destructured so that a new field of the definition cannot be forgotten here.
        let Schedule {
            id: _,
            name,
            sources,
            timing,
            options,
            created: _,
            last_due: _,
            last_run: _,
            earlier_runs: _,
            last_success: _,
            started_run: _,
        } = new;
        let current = Arc::make_mut(&mut self.schedules[position]);
        if current.timing != timing {
            let from = Some(now.fixed_offset());
            current.last_due = from;
            // A run cut short by a crash is due again from there, not by the old timing.
            if let Some(run) = &mut current.started_run {
                run.previous_due = from;
            }
        }
        current.name = name;
        current.sources = sources;
        current.timing = timing;
        current.options = options;
    }

    /// Schedule `id`, to change: copied first if a snapshot still shares it.
    pub fn by_id_mut(&mut self, id: u64) -> Option<&mut Schedule> {
        self.schedules
            .iter_mut()
            .find(|s| s.id == id)
            .map(Arc::make_mut)
    }
}

/// Why the schedule file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleFileError {
    #[error("can't read schedule file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "schedule file {path} is corrupt ({source}{}); fix or move it away — backupd will not overwrite it",
        in_schedule(.schedule.as_deref())
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
        /// Which schedule, when the fault is in one: `schedule "x" (id 1)`.
        schedule: Option<String>,
    },
    #[error(
        "schedule file {path} has schedules that clash: {clashes}, or move the file away — backupd will not overwrite it"
    )]
    Clashes { path: PathBuf, clashes: Clashes },
    #[error(
        "schedule file {path} is corrupt (invalid cron expression {cron:?} in {schedule}: {reason}); fix or move it away — backupd will not overwrite it"
    )]
    BadCron {
        path: PathBuf,
        /// `schedule "x" (id 1)`
        schedule: String,
        cron: String,
        reason: String,
    },
    #[error(
        "schedule file {path} has a schedule with id {}, which leaves no id for a new one; renumber the schedules (and next_id) or move the file away — backupd will not overwrite it",
        u64::MAX
    )]
    NoIdLeft { path: PathBuf },
    #[error(
        "schedule file {path} has version {found}, this backupd reads version {FORMAT_VERSION}"
    )]
    UnknownVersion { path: PathBuf, found: u32 },
    #[error("can't save schedule file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

fn in_schedule(schedule: Option<&str>) -> String {
    schedule.map_or_else(String::new, |s| format!(", in {s}"))
}

/// Schedules of one file that share an id or a name: the daemon finds a schedule by its id
/// (a run's record, a one-shot's removal) or its name (`run --name`, `delete --name`, the
/// archives), so either would act on the first of them only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clashes {
    /// Each shared id, with the names of the schedules that have it.
    pub ids: Vec<(u64, Vec<String>)>,
    /// Each shared name, with the ids of the schedules that have it.
    pub names: Vec<(String, Vec<u64>)>,
    /// The lowest id above `next_id` and every id: where free ids start.
    pub free_from: u64,
}

impl Clashes {
    /// The clashes in `file`, if any.
    fn find(file: &ScheduleFile) -> Option<Self> {
        let mut by_id: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        let mut by_name: HashMap<&str, Vec<u64>> = HashMap::new();
        for schedule in &file.schedules {
            by_id.entry(schedule.id).or_default().push(&schedule.name);
            by_name.entry(&schedule.name).or_default().push(schedule.id);
        }
        let highest = by_id.last_key_value().map(|(&id, _)| id);
        let ids: Vec<_> = by_id
            .into_iter()
            .filter(|(_, names)| names.len() > 1)
            .map(|(id, names)| (id, names.into_iter().map(str::to_owned).collect()))
            .collect();
        let mut names: Vec<_> = by_name
            .into_iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(name, ids)| (name.to_owned(), ids))
            .collect();
        if ids.is_empty() && names.is_empty() {
            return None;
        }
        names.sort();
        let free_from = highest.map_or(file.next_id, |id| file.next_id.max(id.saturating_add(1)));
        Some(Self {
            ids,
            names,
            free_from,
        })
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

impl fmt::Display for Clashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names quoted and escaped as Rust strings: they are the user's, control characters too.
        let quoted = |names: &[String]| and_list(names.iter().map(|n| format!("{n:?}")));
        let ids = self
            .ids
            .iter()
            .map(|(id, names)| format!("id {id} is shared by {}", quoted(names)));
        let names = self
            .names
            .iter()
            .map(|(name, ids)| format!("the name {name:?} is shared by ids {}", and_list(ids)));
        let clashes: Vec<String> = ids.chain(names).collect();
        write!(
            f,
            "{}; backupd tells schedules apart by id and by name: give each schedule ",
            clashes.join("; ")
        )?;
        let own_id = format!(
            "its own id ({} and up are free; next_id must stay above every id)",
            self.free_from
        );
        match (self.ids.is_empty(), self.names.is_empty()) {
            (false, false) => write!(f, "{own_id} and its own name"),
            (false, true) => f.write_str(&own_id),
            _ => f.write_str("its own name"),
        }
    }
}

/// A `next_id` that was not above every id, raised: the next schedule would have shared an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextIdRaised {
    pub from: u64,
    pub to: u64,
    pub highest_id: u64,
}

/// Checks what the daemon relies on and the file cannot say: cron expressions valid (one
/// that is not would never fire, and the backup never happen, without a word), ids and names
/// unique, `next_id` above every id. Shared ids or names are refused, for only the user knows
/// which schedule is which; a low `next_id` is raised, which loses nothing.
fn check(path: &Path, file: &mut ScheduleFile) -> Result<Option<NextIdRaised>, ScheduleFileError> {
    for schedule in &file.schedules {
        if let Timing::Cron { cron } = &schedule.timing
            && let Err(reason) = crate::timing::parse_cron(cron)
        {
            return Err(ScheduleFileError::BadCron {
                path: path.to_path_buf(),
                schedule: format!("schedule {:?} (id {})", schedule.name, schedule.id),
                cron: cron.clone(),
                reason,
            });
        }
    }
    if let Some(clashes) = Clashes::find(file) {
        return Err(ScheduleFileError::Clashes {
            path: path.to_path_buf(),
            clashes,
        });
    }
    let Some(highest_id) = file.schedules.iter().map(|s| s.id).max() else {
        return Ok(None);
    };
    if file.next_id > highest_id {
        return Ok(None);
    }
    let to = highest_id
        .checked_add(1)
        .ok_or_else(|| ScheduleFileError::NoIdLeft {
            path: path.to_path_buf(),
        })?;
    let raised = NextIdRaised {
        from: file.next_id,
        to,
        highest_id,
    };
    file.next_id = to;
    Ok(Some(raised))
}

/// The schedules, guarded so that changes are applied and saved one at a time.
#[derive(Debug)]
pub struct ScheduleStore {
    path: PathBuf,
    file: Mutex<ScheduleFile>,
    /// How many outcomes a schedule keeps: its last run and the earlier ones.
    runs_kept: usize,
    /// Woken after every saved change, so the scheduler looks again.
    changed: Notify,
}

impl ScheduleStore {
    /// Loads the file; a missing file is an empty list, an unreadable or inconsistent one an
    /// error. A `next_id` not above every id is raised, logged and saved.
    pub fn load(path: PathBuf) -> Result<Self, ScheduleFileError> {
        let file = match crate::fsutil::read_nofollow(&path) {
            Ok(bytes) => {
                let mut file = parse(&path, &bytes)?;
                let raised = check(&path, &mut file)?;
                let cleared = clear_zero_hook_timeouts(&mut file);
                if raised.is_some() || !cleared.is_empty() {
                    repaired(&path, &file, raised, &cleared);
                }
                warn_of_shared_archive_names(&file);
                file
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => ScheduleFile::default(),
            Err(source) => return Err(ScheduleFileError::Read { path, source }),
        };
        Ok(Self {
            path,
            file: Mutex::new(file),
            runs_kept: DEFAULT_RUNS_KEPT,
            changed: Notify::new(),
        })
    }

    /// Keeps `runs` outcomes per schedule (at least the last one) from the next run on.
    pub fn keep_runs(mut self, runs: usize) -> Self {
        self.runs_kept = runs.max(1);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the current schedules.
    pub async fn snapshot(&self) -> ScheduleFile {
        self.file.lock().await.clone()
    }

    /// Applies `change` to a copy, saves the copy atomically, and only then makes it current.
    /// If `change` fails or the save fails, nothing changes.
    pub async fn update<T, E>(
        &self,
        change: impl FnOnce(&mut ScheduleFile) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<ScheduleFileError>,
    {
        let mut current = self.file.lock().await;
        let mut next = current.clone();
        let outcome = change(&mut next)?;
        *current = self
            .save_off_thread(next)
            .await
            .map_err(|source| ScheduleFileError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.changed.notify_one();
        Ok(outcome)
    }

    /// Applies a change to the daemon's own bookkeeping (a run started or ended, occurrences
    /// dealt with, a one-shot gone): in memory at once, on disk if it can be saved, else with
    /// the next change that can. A full disk under the home must not stop the schedules:
    /// until the change is saved a restart undoes it, so a run may be caught up twice, but
    /// none is skipped for want of a few bytes.
    async fn keep(&self, what: &str, change: impl FnOnce(&mut ScheduleFile)) {
        let mut current = self.file.lock().await;
        change(&mut current);
        if let Err(e) = self.save_off_thread(current.clone()).await {
            tracing::error!(
                "can't save the schedule state ({what}; kept in memory, saved with the next change): can't save schedule file {}: {e}",
                self.path.display()
            );
        }
        self.changed.notify_one();
    }

    /// Saves `file`, serialized on a blocking thread straight into the temporary file (compact
    /// JSON, no intermediate copy of the whole file); hands it back once saved.
    async fn save_off_thread(&self, file: ScheduleFile) -> io::Result<ScheduleFile> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || save(&path, &file).map(|()| file))
            .await
            .unwrap_or_else(|join| Err(io::Error::other(join.to_string())))
    }

    /// Resolves after the next saved change (or at once if one happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Records the outcome of a run of `schedule` (as it was when the run started) into the
    /// schedule of that id; a timetabled run also ends its "started" record, and a one-shot
    /// that ran on its timetable is removed, as the schedule manager does, unless it was
    /// replaced meanwhile by another timing. Returns whether it was removed.
    pub async fn record_run(
        &self,
        schedule: &Schedule,
        record: RunRecord,
        timetabled: bool,
    ) -> bool {
        let what = format!("the run of {}", schedule.name);
        let mut removed = false;
        self.keep(&what, |file| {
            let Some(position) = file.position_of_id(schedule.id) else {
                return;
            };
            let stored = &file.schedules[position];
            if timetabled && stored.is_once() && stored.timing == schedule.timing {
                file.schedules.remove(position);
                removed = true;
                return;
            }
            let schedule = Arc::make_mut(&mut file.schedules[position]);
            if timetabled {
                schedule.started_run = None;
            }
            if record.ok {
                schedule.last_success = Some(record.finished);
            }
            if let Some(previous) = schedule.last_run.replace(record) {
                schedule.earlier_runs.insert(0, previous);
            }
            schedule.earlier_runs.truncate(self.runs_kept - 1);
        })
        .await;
        removed
    }

    /// Records that every occurrence of schedule `id` up to `latest` has been dealt with.
    pub async fn mark_handled(&self, id: u64, latest: DateTime<Local>) {
        let latest = latest.fixed_offset();
        let unchanged = self
            .file
            .lock()
            .await
            .schedules
            .iter()
            .any(|s| s.id == id && s.last_due == Some(latest));
        if unchanged {
            return; // nothing new: no write, no wake-up
        }
        self.keep("occurrences dealt with", |file| {
            if let Some(schedule) = file.by_id_mut(id) {
                schedule.last_due = Some(latest);
            }
        })
        .await;
    }

    /// Records, before a timetabled run of `schedule` begins, that it starts now for every
    /// occurrence up to `latest`. Records nothing and answers `false` when the schedule was
    /// deleted or given a new definition since `schedule` was read (a due run waiting its
    /// turn among many): that run must not start, least of all as it was.
    pub async fn mark_started(&self, schedule: &Schedule, latest: DateTime<Local>) -> bool {
        let mut started = false;
        self.keep("a run started", |file| {
            let unchanged = file
                .by_id_mut(schedule.id)
                .filter(|current| same_definition(current, schedule));
            if let Some(schedule) = unchanged {
                started = true;
                let previous_due = schedule.last_due.replace(latest.fixed_offset());
                schedule.started_run = Some(StartedRun {
                    due: latest.fixed_offset(),
                    at: Local::now().fixed_offset(),
                    previous_due,
                });
            }
        })
        .await;
        started
    }

    /// The runs that started and never finished (the daemon was killed or stopped meanwhile):
    /// each schedule as [`Self::reopen_interrupted`] will make it, with the run interrupted.
    pub async fn interrupted(&self) -> Vec<(Schedule, StartedRun)> {
        let file = self.file.lock().await;
        file.schedules
            .iter()
            .filter_map(|schedule| {
                let interrupted = schedule.started_run.clone()?;
                let mut reopened = Schedule::clone(schedule);
                reopen(&mut reopened);
                Some((reopened, interrupted))
            })
            .collect()
    }

    /// At start: makes every run that started and never finished due again, as if missed.
    pub async fn reopen_interrupted(&self) {
        self.keep("interrupted runs reopened", |file| {
            file.schedules
                .iter_mut()
                .filter(|s| s.started_run.is_some())
                .for_each(|s| reopen(Arc::make_mut(s)));
        })
        .await;
    }

    /// Removes schedule `id` (a one-shot dealt with), if it is still there.
    pub async fn remove(&self, id: u64) {
        self.keep("a one-shot removed", |file| {
            if let Some(position) = file.position_of_id(id) {
                file.schedules.remove(position);
            }
        })
        .await;
    }
}

/// Whether `a` and `b` define the same schedule, whatever their runs.
fn same_definition(a: &Schedule, b: &Schedule) -> bool {
    // Destructured so that a new field of the definition cannot be forgotten here.
    let Schedule {
        id,
        name,
        sources,
        timing,
        options,
        created,
        last_due: _,
        last_run: _,
        earlier_runs: _,
        last_success: _,
        started_run: _,
    } = a;
    (id, name, sources, timing, options, created)
        == (
            &b.id, &b.name, &b.sources, &b.timing, &b.options, &b.created,
        )
}

/// The record of a run that started at `started` and ended now: its report, or why it could
/// not run at all.
pub fn run_record(started: DateTime<Local>, outcome: Result<&RunReport, &str>) -> RunRecord {
    let finished = Local::now().fixed_offset();
    match outcome {
        Ok(report) => RunRecord {
            started: started.fixed_offset(),
            finished,
            ok: report.failed == 0,
            archives: report
                .sources
                .iter()
                .filter(|s| s.ok)
                .map(|s| s.archive.clone())
                .collect(),
            error: (report.failed > 0).then(|| {
                report
                    .sources
                    .iter()
                    .filter_map(|s| s.error.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
            skipped: report.skipped(),
            offsite_failed: u64::try_from(report.offsite_failed).unwrap_or(u64::MAX),
            size_bytes: report
                .sources
                .iter()
                .filter(|s| s.ok)
                .map(|s| s.size_bytes)
                .sum(),
        },
        Err(error) => RunRecord {
            started: started.fixed_offset(),
            finished,
            ok: false,
            archives: Vec::new(),
            error: Some(error.to_owned()),
            skipped: 0,
            offsite_failed: 0,
            size_bytes: 0,
        },
    }
}

/// Undoes a started run's mark: its occurrence is due again.
fn reopen(schedule: &mut Schedule) {
    if let Some(interrupted) = schedule.started_run.take() {
        schedule.last_due = interrupted.previous_due;
    }
}

/// Replaces the file at `path` with `file`, atomically: compact JSON with one schedule per
/// line, so it stays small and fast to write at 10,000 schedules and still reads (and diffs)
/// line by line.
fn save(path: &Path, file: &ScheduleFile) -> io::Result<()> {
    // Destructured so that a new field cannot be forgotten here.
    let ScheduleFile {
        version,
        next_id,
        schedules,
    } = file;
    write_atomically_with(path, |out| {
        write!(
            out,
            "{{\"version\":{version},\"next_id\":{next_id},\"schedules\":["
        )?;
        for (i, schedule) in schedules.iter().enumerate() {
            out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
            serde_json::to_writer(&mut *out, schedule)?;
        }
        out.write_all(b"\n]}\n")
    })
}

/// Earlier versions stored a hook timeout of 0, which killed every hook as it starts (and
/// which 0 now refuses): such a schedule takes the default instead of failing every run.
/// Returns the names of the schedules changed.
fn clear_zero_hook_timeouts(file: &mut ScheduleFile) -> Vec<String> {
    let zero = file
        .schedules
        .iter_mut()
        .filter(|s| s.options.hook_timeout == Some(0));
    zero.map(|schedule| {
        std::sync::Arc::make_mut(schedule).options.hook_timeout = None;
        schedule.name.clone()
    })
    .collect()
}

/// Logs what loading repaired, and saves it.
fn repaired(path: &Path, file: &ScheduleFile, raised: Option<NextIdRaised>, cleared: &[String]) {
    if let Some(NextIdRaised {
        from,
        to,
        highest_id,
    }) = raised
    {
        tracing::warn!(
            "Schedule file {}: next_id {from} was not above every id (the highest is {highest_id}); raised it to {to}, so that a new schedule gets an id of its own",
            path.display()
        );
    }
    for name in cleared {
        tracing::warn!(
            "Schedule {name}: hook_timeout 0 killed every hook as it started; it now takes the daemon's (hook_timeout in [defaults], else {} s)",
            proto::job::DEFAULT_HOOK_TIMEOUT_SECS
        );
    }
    if let Err(e) = save(path, file) {
        tracing::error!(
            "can't save the repaired schedules (kept in memory, saved with the next change): can't save schedule file {}: {e}",
            path.display()
        );
    }
}

/// Says which schedules write archives under one name (a file from before `create` refused
/// that, or edited by hand): each one's rotation deletes the other's backups.
fn warn_of_shared_archive_names(file: &ScheduleFile) {
    let mut writers: HashMap<String, &str> = HashMap::new();
    for schedule in &file.schedules {
        for name in crate::plan::archive_names(schedule) {
            match writers.get(&name) {
                Some(&other) if other != schedule.name => tracing::error!(
                    "Schedules {other} and {} both write archives named {name}: the rotation of \
                     each deletes the other's backups; rename one (create --replace)",
                    schedule.name
                ),
                Some(_) => {}
                None => {
                    writers.insert(name, &schedule.name);
                }
            }
        }
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<ScheduleFile, ScheduleFileError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let corrupt = |source| ScheduleFileError::Corrupt {
        path: path.to_path_buf(),
        source,
        schedule: None,
    };
    let VersionOnly { version } = serde_json::from_slice(bytes).map_err(corrupt)?;
    if version != FORMAT_VERSION {
        return Err(ScheduleFileError::UnknownVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    serde_json::from_slice(bytes).map_err(|source| ScheduleFileError::Corrupt {
        path: path.to_path_buf(),
        source,
        schedule: faulty_schedule(bytes),
    })
}

/// Which schedule of a file that failed to load is at fault, if one is: the error's line and
/// column point into a line of JSON, this names the schedule (`schedule "x" (id 1)`). Only
/// run on failure, so a good file is read once.
fn faulty_schedule(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Loose {
        schedules: Vec<serde_json::Value>,
    }
    let Loose { schedules } = serde_json::from_slice(bytes).ok()?;
    let (number, faulty) = schedules
        .into_iter()
        .enumerate()
        .find(|(_, s)| StrictSchedule::deserialize(s).is_err())?;
    let name = faulty.get("name").and_then(serde_json::Value::as_str);
    let id = faulty.get("id").and_then(serde_json::Value::as_u64);
    Some(match (name, id) {
        (Some(name), Some(id)) => format!("schedule {name:?} (id {id})"),
        (Some(name), None) => format!("schedule {name:?}"),
        (None, Some(id)) => format!("the schedule with id {id}"),
        (None, None) => format!("schedule number {} of the file", number + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(name: &str) -> Schedule {
        Schedule {
            id: 0,
            name: name.to_owned(),
            sources: vec![format!("/{name}")],
            timing: proto::schedule::Timing::Daily {
                time: "01:00".parse().unwrap(),
            },
            options: proto::JobOptions::default(),
            created: chrono::DateTime::parse_from_rfc3339("2026-11-24T16:00:00+01:00").unwrap(),
            last_due: None,
            last_run: None,
            earlier_runs: Vec::new(),
            last_success: None,
            started_run: None,
        }
    }

    #[tokio::test]
    async fn changes_are_saved_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        let store = ScheduleStore::load(path.clone()).unwrap();
        store
            .update(|f| Ok::<_, ScheduleFileError>(f.add(schedule("a")).unwrap()))
            .await
            .unwrap();
        store
            .update(|f| Ok::<_, ScheduleFileError>(f.add(schedule("b")).unwrap()))
            .await
            .unwrap();
        let reloaded = ScheduleStore::load(path).unwrap().snapshot().await;
        assert_eq!(reloaded, store.snapshot().await);
        let ids: Vec<u64> = reloaded.schedules.iter().map(|s| s.id).collect();
        assert_eq!(ids, [1, 2]);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["schedules.json"], "no temporary file is left");
    }

    #[tokio::test]
    async fn the_file_has_one_schedule_per_line_and_reads_as_one_json_document() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        let store = ScheduleStore::load(path.clone()).unwrap();
        for name in ["a", "b", "c"] {
            store
                .update(|f| Ok::<_, ScheduleFileError>(f.add(schedule(name)).unwrap()))
                .await
                .unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0], r#"{"version":1,"next_id":4,"schedules":["#);
        assert!(lines[1].starts_with(r#"{"id":1,"name":"a""#), "{text}");
        assert_eq!(lines[4], "]}");
        let whole: ScheduleFile = serde_json::from_str(&text).unwrap();
        assert_eq!(whole, store.snapshot().await);

        store
            .update(|f| {
                f.schedules.clear();
                Ok::<_, ScheduleFileError>(())
            })
            .await
            .unwrap();
        let empty = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            serde_json::from_str::<ScheduleFile>(&empty).unwrap(),
            store.snapshot().await
        );
    }

    #[tokio::test]
    async fn a_failed_save_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // The schedule file's folder vanishes: the save must fail and memory stay as it was.
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let store = ScheduleStore::load(home.join("schedules.json")).unwrap();
        std::fs::remove_dir(&home).unwrap();
        let result = store
            .update(|f| Ok::<_, ScheduleFileError>(f.add(schedule("a")).unwrap()))
            .await;
        assert!(matches!(result, Err(ScheduleFileError::Write { .. })));
        assert!(store.snapshot().await.schedules.is_empty());
        assert_eq!(store.snapshot().await.next_id, 1);
    }

    fn at(text: &str) -> DateTime<Local> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Local)
    }

    /// A file holding schedule `a` (daily 01:00), run once and dealt with up to `last_due`.
    fn file_with_run_schedule(last_due: &str) -> ScheduleFile {
        let mut file = ScheduleFile::default();
        let mut a = schedule("a");
        a.last_due = Some(at(last_due).fixed_offset());
        a.last_run = Some(run_record(at(last_due), Err("failed")));
        a.last_success = Some(at("2026-11-20T01:05:00+01:00").fixed_offset());
        file.add(a).unwrap();
        file
    }

    #[test]
    fn a_replacement_keeps_what_the_daemon_knows_and_takes_the_new_definition() {
        let mut file = file_with_run_schedule("2026-11-25T01:00:00+01:00");
        let before = Schedule::clone(&file.schedules[0]);
        let mut new = schedule("a");
        new.sources = vec!["/elsewhere".into()];
        new.options.exclude = vec!["*.tmp".into()];
        new.created = at("2026-11-25T10:00:00+01:00").fixed_offset();
        file.replace(0, new, at("2026-11-25T10:00:00+01:00"));
        let after = &file.schedules[0];
        assert_eq!(after.sources, ["/elsewhere"]);
        assert_eq!(after.options.exclude, ["*.tmp"]);
        assert_eq!(
            (after.id, after.created, &after.last_run, after.last_success),
            (
                before.id,
                before.created,
                &before.last_run,
                before.last_success
            )
        );
        // The same timing: the occurrences dealt with stay dealt with, none is added.
        assert_eq!(after.last_due, before.last_due);
        assert_eq!(file.next_id, 2, "no new id");
    }

    #[test]
    fn a_new_timing_counts_from_the_replacement_so_nothing_past_is_caught_up() {
        // Daily 01:00, dealt with up to last night; at 10:00 it becomes daily 09:00, whose
        // 09:00 today would otherwise be an occurrence missed an hour ago, and run at once.
        let mut file = file_with_run_schedule("2026-11-25T01:00:00+01:00");
        let now = at("2026-11-25T10:00:00+01:00");
        let mut new = schedule("a");
        new.timing = proto::schedule::Timing::Daily {
            time: "09:00".parse().unwrap(),
        };
        file.replace(0, new, now);
        let after = &file.schedules[0];
        assert_eq!(after.last_due, Some(now.fixed_offset()));
        let grace = chrono::TimeDelta::hours(24);
        let decision = crate::timing::decide(after, &now, grace, false);
        assert!(
            matches!(decision, crate::timing::Decision::Wait { until } if until > now),
            "{decision:?}"
        );
    }

    #[tokio::test]
    async fn a_due_run_read_before_its_schedule_was_deleted_or_replaced_does_not_start() {
        // Hundreds due at once are started one by one from the list read as they fell due:
        // one deleted, or given other sources, meanwhile ran as it had been.
        let dir = tempfile::tempdir().unwrap();
        let store = ScheduleStore::load(dir.path().join("schedules.json")).unwrap();
        for name in ["gone", "changed"] {
            store
                .update(|f| Ok::<_, ScheduleFileError>(f.add(schedule(name)).unwrap()))
                .await
                .unwrap();
        }
        let due = chrono::Local::now();
        let read = store.snapshot().await.schedules;
        let mut changed = Schedule::clone(&read[1]);
        changed.sources = vec!["/elsewhere".into()];
        store
            .update(|f| {
                f.schedules.remove(0);
                f.replace(0, changed, due);
                Ok::<_, ScheduleFileError>(())
            })
            .await
            .unwrap();
        assert!(!store.mark_started(&read[0], due).await);
        assert!(!store.mark_started(&read[1], due).await);
        let now = store.snapshot().await.schedules;
        assert_eq!(now[0].started_run, None);
        assert!(store.mark_started(&now[0], due).await);
        assert!(store.snapshot().await.schedules[0].started_run.is_some());
    }

    #[tokio::test]
    async fn a_one_shot_replaced_during_its_run_by_another_time_stays_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = ScheduleStore::load(dir.path().join("schedules.json")).unwrap();
        let due = at("2026-11-25T10:00:00+01:00");
        let mut once = schedule("o");
        once.timing = proto::schedule::Timing::Once {
            time: "10:00".parse().unwrap(),
            due: due.fixed_offset(),
        };
        store
            .update(|f| Ok::<_, ScheduleFileError>(f.add(once).unwrap()))
            .await
            .unwrap();
        store
            .mark_started(&store.snapshot().await.schedules[0], due)
            .await;
        let running = store.snapshot().await.schedules[0].clone();
        let mut later = Schedule::clone(&running);
        later.timing = proto::schedule::Timing::Once {
            time: "11:00".parse().unwrap(),
            due: (due + chrono::TimeDelta::hours(1)).fixed_offset(),
        };
        store
            .update(|f| {
                f.replace(0, later, due + chrono::TimeDelta::minutes(1));
                Ok::<_, ScheduleFileError>(())
            })
            .await
            .unwrap();
        let removed = store
            .record_run(&running, run_record(due, Err("failed")), true)
            .await;
        assert!(!removed);
        let kept = store.snapshot().await.schedules[0].clone();
        assert!(kept.last_run.is_some(), "recorded into it");
        assert_eq!(kept.started_run, None);

        // Not replaced, the one-shot goes with its run.
        store
            .mark_started(&store.snapshot().await.schedules[0], due)
            .await;
        let running = store.snapshot().await.schedules[0].clone();
        assert!(
            store
                .record_run(&running, run_record(due, Err("failed")), true)
                .await
        );
        assert!(store.snapshot().await.schedules.is_empty());
    }

    #[tokio::test]
    async fn a_schedule_keeps_its_last_runs_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = ScheduleStore::load(dir.path().join("schedules.json"))
            .unwrap()
            .keep_runs(3);
        store
            .update(|f| Ok::<_, ScheduleFileError>(f.add(schedule("a")).unwrap()))
            .await
            .unwrap();
        let added = store.snapshot().await.schedules[0].clone();
        for n in 0..5 {
            let started = chrono::Local::now() + chrono::TimeDelta::minutes(n);
            let record = run_record(started, Err(&format!("run {n}")));
            store.record_run(&added, record, false).await;
        }
        let kept = store.snapshot().await.schedules[0].clone();
        assert_eq!(
            kept.last_run.as_ref().unwrap().error.as_deref(),
            Some("run 4")
        );
        let earlier: Vec<_> = kept
            .earlier_runs
            .iter()
            .map(|r| r.error.clone().unwrap())
            .collect();
        assert_eq!(earlier, ["run 3", "run 2"], "3 kept in all, newest first");
    }

    #[tokio::test]
    async fn a_run_started_and_never_finished_is_reopened_at_the_next_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        let store = ScheduleStore::load(path.clone()).unwrap();
        store
            .update(|f| Ok::<_, ScheduleFileError>(f.add(schedule("a")).unwrap()))
            .await
            .unwrap();
        let before = chrono::Local::now() - chrono::TimeDelta::days(1);
        store.mark_handled(1, before).await;
        let due = chrono::Local::now();
        store
            .mark_started(&store.snapshot().await.schedules[0], due)
            .await;
        // The daemon dies here: a fresh load finds the run started, not finished.
        let reloaded = ScheduleStore::load(path.clone()).unwrap();
        let interrupted = reloaded.interrupted().await;
        assert_eq!(interrupted.len(), 1);
        let (schedule, run) = &interrupted[0];
        assert_eq!(run.due, due.fixed_offset());
        assert_eq!(schedule.last_due, Some(before.fixed_offset()), "due again");
        assert_eq!(schedule.started_run, None);
        reloaded.reopen_interrupted().await;
        assert_eq!(*reloaded.snapshot().await.schedules[0], *schedule);
        // Saved: a second start has nothing more to reopen.
        let again = ScheduleStore::load(path.clone()).unwrap();
        assert!(again.interrupted().await.is_empty());

        // A run that finished leaves nothing to reopen.
        again
            .mark_started(&again.snapshot().await.schedules[0], due)
            .await;
        let started = again.snapshot().await.schedules[0].clone();
        again
            .record_run(&started, run_record(due, Err("failed")), true)
            .await;
        let finished = ScheduleStore::load(path).unwrap();
        assert!(finished.interrupted().await.is_empty());
        let kept = finished.snapshot().await.schedules[0].clone();
        assert_eq!(kept.last_due, Some(due.fixed_offset()));
        assert!(kept.last_run.is_some());
    }

    #[test]
    fn a_stored_hook_timeout_of_0_becomes_the_default_and_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        let stored = br#"{"version":1,"next_id":3,"schedules":[
            {"id":1,"name":"a","sources":["/a"],"kind":"daily","time":"01:00",
             "created":"2026-11-24T16:00:00+01:00","hook_timeout":0},
            {"id":2,"name":"b","sources":["/b"],"kind":"daily","time":"01:00",
             "created":"2026-11-24T16:00:00+01:00","hook_timeout":30}]}"#;
        std::fs::write(&path, stored).unwrap();
        let store = ScheduleStore::load(path.clone()).unwrap();
        let timeouts = |file: &ScheduleFile| -> Vec<Option<u64>> {
            file.schedules
                .iter()
                .map(|s| s.options.hook_timeout)
                .collect()
        };
        assert_eq!(timeouts(&store.file.try_lock().unwrap()), [None, Some(30)]);
        let saved = ScheduleStore::load(path).unwrap();
        assert_eq!(timeouts(&saved.file.try_lock().unwrap()), [None, Some(30)]);
    }

    #[test]
    fn a_schedule_file_of_an_earlier_version_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        let old = br#"{"version":1,"next_id":2,"schedules":[{"id":1,"name":"a",
            "sources":["/a"],"kind":"daily","time":"01:00",
            "created":"2026-11-24T16:00:00+01:00","last_due":"2026-11-25T01:00:00+01:00"}]}"#;
        std::fs::write(&path, old).unwrap();
        let store = ScheduleStore::load(path).unwrap();
        let loaded = store.file.try_lock().unwrap().schedules[0].clone();
        assert_eq!(loaded.started_run, None);
        assert!(loaded.last_due.is_some());
    }

    fn file_with(next_id: u64, schedules: &[(u64, &str)]) -> String {
        let lines: Vec<String> = schedules
            .iter()
            .map(|&(id, name)| {
                let schedule = Schedule {
                    id,
                    ..schedule(name)
                };
                serde_json::to_string(&schedule).unwrap()
            })
            .collect();
        format!(
            "{{\"version\":1,\"next_id\":{next_id},\"schedules\":[\n{}\n]}}\n",
            lines.join(",\n")
        )
    }

    #[test]
    fn shared_ids_and_names_are_refused_and_the_file_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        let text = file_with(4, &[(1, "a"), (1, "b"), (2, "c"), (3, "c"), (3, "d")]);
        std::fs::write(&path, &text).unwrap();
        let Err(ScheduleFileError::Clashes { clashes, .. }) = ScheduleStore::load(path.clone())
        else {
            panic!("refused for its clashes");
        };
        assert_eq!(
            clashes,
            Clashes {
                ids: vec![
                    (1, vec!["a".into(), "b".into()]),
                    (3, vec!["c".into(), "d".into()])
                ],
                names: vec![("c".into(), vec![2, 3])],
                free_from: 4,
            }
        );
        assert_eq!(
            clashes.to_string(),
            "id 1 is shared by \"a\" and \"b\"; id 3 is shared by \"c\" and \"d\"; \
             the name \"c\" is shared by ids 2 and 3; backupd tells schedules apart by id and \
             by name: give each schedule its own id (4 and up are free; next_id must stay above \
             every id) and its own name"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

        // Free ids start above the highest id when next_id is lower.
        std::fs::write(&path, file_with(2, &[(7, "a"), (7, "b")])).unwrap();
        let err = ScheduleStore::load(path).unwrap_err().to_string();
        assert!(err.contains("(8 and up are free"), "{err}");
    }

    #[tokio::test]
    async fn a_next_id_not_above_every_id_is_raised_and_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        std::fs::write(&path, file_with(2, &[(1, "a"), (3, "b")])).unwrap();
        let store = ScheduleStore::load(path.clone()).unwrap();
        assert_eq!(store.snapshot().await.next_id, 4);
        let saved = ScheduleStore::load(path.clone()).unwrap().snapshot().await;
        assert_eq!(saved, store.snapshot().await, "saved as raised");
        store
            .update(|f| Ok::<_, ScheduleFileError>(f.add(schedule("c")).unwrap()))
            .await
            .unwrap();
        let ids: Vec<u64> = store
            .snapshot()
            .await
            .schedules
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [1, 3, 4]);

        // No id is left above u64::MAX: refused rather than wrapped around.
        std::fs::write(&path, file_with(1, &[(u64::MAX, "a")])).unwrap();
        assert!(matches!(
            ScheduleStore::load(path),
            Err(ScheduleFileError::NoIdLeft { .. })
        ));
    }

    #[test]
    fn a_cron_expression_that_would_never_fire_is_refused_naming_the_schedule() {
        // Edited by hand to hour 25: loaded without a word, the schedule never ran.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        let text = file_with(3, &[(1, "a"), (2, "b")]);
        let daily = serde_json::to_string(&schedule("b").timing).unwrap();
        let daily = &daily[1..daily.len() - 1];
        assert!(text.contains(daily), "{daily} in {text}");
        let text = text.replacen(daily, r#""kind":"cron","cron":"0 25 * * *""#, 1);
        std::fs::write(&path, &text).unwrap();
        let message = ScheduleStore::load(path.clone()).unwrap_err().to_string();
        assert!(
            message.contains("(invalid cron expression \"0 25 * * *\" in schedule \"a\" (id 1): "),
            "{message}"
        );
        assert!(message.ends_with("; fix or move it away — backupd will not overwrite it"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn an_unknown_key_is_refused_naming_the_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        let text = file_with(3, &[(1, "a"), (2, "b")]).replace(
            "\"name\":\"b\",",
            "\"name\":\"b\",\"retension\":{\"days\":30},",
        );
        std::fs::write(&path, &text).unwrap();
        let err = ScheduleStore::load(path.clone()).unwrap_err();
        assert!(
            matches!(&err, ScheduleFileError::Corrupt { schedule: Some(s), .. } if s == "schedule \"b\" (id 2)"),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("unknown field `retension` at line 3 column"),
            "{message}"
        );
        assert!(
            message.ends_with(
                ", in schedule \"b\" (id 2)); fix or move it away — backupd will not overwrite it"
            ),
            "{message}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

        // A fault outside any schedule names none.
        std::fs::write(
            &path,
            br#"{"version":1,"next_id":1,"schedules":[],"extra":1}"#,
        )
        .unwrap();
        assert!(matches!(
            ScheduleStore::load(path),
            Err(ScheduleFileError::Corrupt { schedule: None, .. })
        ));
    }

    #[test]
    fn a_corrupt_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = ScheduleStore::load(path.clone()).unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(std::fs::read(&path).unwrap(), b"{not json");
        std::fs::write(&path, br#"{"version":99}"#).unwrap();
        assert!(matches!(
            ScheduleStore::load(path),
            Err(ScheduleFileError::UnknownVersion { found: 99, .. })
        ));
    }
}
