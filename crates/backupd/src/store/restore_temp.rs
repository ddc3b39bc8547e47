//! The temporary names an overwriting restore links a new entry under before renaming it over
//! the old one (`.backupd-restore-<pid>-<start>-<n>`), and the sweep of those an interrupted
//! restore left: a power cut or a killed daemon between the link and the rename leaves one
//! behind.
//!
//! A leftover is removed only when no restore alive can still be using it: it was changed
//! before this boot, or the process its name carries is gone. A name carries the process's
//! start time as well as its pid, so a process that got the same pid later (a container's
//! PID 1 restarted) is not taken for the one that made it. Only names of the kinds a restore
//! makes (file, symlink, FIFO), owned by whom a restore's files can be owned by, are looked
//! at; all through the folder's handle, never following a symlink.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Stat};
use rustix::io::Errno;

use super::beneath;

const PREFIX: &str = ".backupd-restore-";

/// A process that makes temporary names: its pid, and when it started (clock ticks since
/// boot, field 22 of `/proc/<pid>/stat`), which no later process with that pid shares.
/// `started` is `None` in a name made before names carried it, or where `/proc` is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Maker {
    pid: u32,
    started: Option<u64>,
}

/// This daemon, read once.
fn this_process() -> Maker {
    static THIS: OnceLock<Maker> = OnceLock::new();
    *THIS.get_or_init(|| {
        let pid = std::process::id();
        Maker {
            pid,
            started: start_time_of(pid),
        }
    })
}

/// A temporary name no other restore uses, even one writing in the same folder at the same
/// time (this daemon's, or another's): short whatever the entry's name, so it always fits a
/// file system's name limit.
pub fn next_temp_name() -> OsString {
    temp_name(this_process(), next_number())
}

fn temp_name(maker: Maker, n: u64) -> OsString {
    let Maker { pid, started } = maker;
    OsString::from(match started {
        Some(started) => format!("{PREFIX}{pid}-{started}-{n}"),
        None => format!("{PREFIX}{pid}-{n}"),
    })
}

fn next_number() -> u64 {
    #[cfg(test)]
    if let Some(n) = test_names::take_chosen() {
        return n;
    }
    static TAKEN: AtomicU64 = AtomicU64::new(0);
    TAKEN.fetch_add(1, Ordering::Relaxed) + 1
}

/// For unit tests: the next temporary names a restore on this thread will try, chosen so
/// that a test can take them first. Other threads' names are numbered as in the daemon.
#[cfg(test)]
pub mod test_names {
    use std::cell::Cell;
    use std::ffi::OsString;

    thread_local! {
        static NEXT: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// The names this thread's restores try next are [`name`]`(first)`, `(first + 1)`, …
    pub fn start_at(first: u64) {
        NEXT.with(|next| next.set(Some(first)));
    }

    /// The temporary name numbered `n` (of this process).
    pub fn name(n: u64) -> OsString {
        super::temp_name(super::this_process(), n)
    }

    pub(super) fn take_chosen() -> Option<u64> {
        NEXT.with(|next| {
            let n = next.get()?;
            next.set(Some(n + 1));
            Some(n)
        })
    }
}

/// What made a temporary name, if `name` is one of ours: `<pid>-<start>-<n>`, or `<pid>-<n>`
/// as earlier versions named them.
pub fn maker_of(name: &OsStr) -> Option<Maker> {
    let rest = name.as_bytes().strip_prefix(PREFIX.as_bytes())?;
    let text = std::str::from_utf8(rest).ok()?;
    let number = |s: &str| {
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits.then(|| s.parse::<u64>().ok()).flatten()
    };
    let fields: Vec<Option<u64>> = text.split('-').map(number).collect();
    let (pid, started) = match fields[..] {
        [Some(pid), Some(_)] => (pid, None),
        [Some(pid), Some(started), Some(_)] => (pid, Some(started)),
        _ => return None,
    };
    Some(Maker {
        pid: u32::try_from(pid).ok()?,
        started,
    })
}

/// What decides whether a leftover is abandoned, read once per restore.
pub struct Sweeper {
    /// When this boot began (`btime` of `/proc/stat`), in seconds since 1970; `None` if
    /// unreadable, and then only the process test is made.
    boot: Option<i64>,
    this: Maker,
}

impl Sweeper {
    pub fn new() -> Self {
        Sweeper {
            boot: boot_time(),
            this: this_process(),
        }
    }

    /// Removes the abandoned temporary names directly in `dir`, returning how many. Best
    /// effort: one that cannot be looked at or removed is left for a later restore.
    pub fn sweep(&self, dir: &OwnedFd) -> u64 {
        let Ok(folder) = rustix::fs::fstat(dir) else {
            return 0;
        };
        // As `fsutil::trusted_owners`: root, the daemon's user and the folder's owner (who
        // could remove them anyway). In a folder others may write, their file is theirs.
        let trusted = [0, rustix::process::geteuid().as_raw(), folder.st_uid];
        let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries {
            let Ok(entry) = entry else {
                break;
            };
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            let Some(maker) = maker_of(name) else {
                continue;
            };
            let Ok(Some(stat)) = beneath::stat_of(dir, name) else {
                continue;
            };
            let made_by_a_restore = matches!(
                beneath::kind_of(&stat),
                FileType::RegularFile | FileType::Symlink | FileType::Fifo
            );
            if made_by_a_restore
                && trusted.contains(&stat.st_uid)
                && self.is_abandoned(maker, &stat, look_up)
                // The name itself: a symlink is removed, never what it points to.
                && rustix::fs::unlinkat(dir, name, AtFlags::empty()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Whether no restore alive can be using a temporary name `maker` made, with `stat`:
    /// changed before this boot (no process alive now wrote it), or made by a process that
    /// is gone. This daemon's own names are in use by its other restores, running beside
    /// this one; a name with its pid but another start time is an earlier process's.
    fn is_abandoned(&self, maker: Maker, stat: &Stat, look_up: impl Fn(u32) -> Found) -> bool {
        #[allow(clippy::unnecessary_cast)] // `st_ctime`'s width differs by target
        let changed = stat.st_ctime as i64;
        if self.boot.is_some_and(|boot| changed < boot) {
            return true;
        }
        if maker.pid == self.this.pid {
            // This daemon names its own with its start time: one without was made by an
            // earlier process (an earlier version) that had this pid.
            return self.this.started.is_some() && maker.started != self.this.started;
        }
        match (look_up(maker.pid), maker.started) {
            (Found::Gone, _) => true,
            (Found::Started(now), Some(started)) => now != started,
            (Found::Started(_) | Found::Unknown, _) => false,
        }
    }
}

/// What became of the process with a pid (in this PID namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    /// No process has it.
    Gone,
    /// The process that has it now started then (clock ticks since boot).
    Started(u64),
    /// A process has it, but when it started cannot be read (`/proc` hidden or missing).
    Unknown,
}

fn look_up(pid: u32) -> Found {
    let Some(raw) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        // No process can have it: taken as one that cannot be looked at.
        return Found::Unknown;
    };
    // Anything but "no such process" (EPERM: another user's) means it exists.
    if rustix::process::test_kill_process(raw) == Err(Errno::SRCH) {
        return Found::Gone;
    }
    start_time_of(pid).map_or(Found::Unknown, Found::Started)
}

/// When process `pid` started, in clock ticks since boot: field 22 of `/proc/<pid>/stat`.
fn start_time_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(proc_pid_stat: &str) -> Option<u64> {
    // Field 2, the command in parentheses, may itself hold spaces and parentheses.
    let (_, after_command) = proc_pid_stat.rsplit_once(')')?;
    // Fields 3 onwards: the start time is the 20th of those.
    after_command.split_whitespace().nth(19)?.parse().ok()
}

/// `btime` of `/proc/stat`: when this boot began, in seconds since 1970.
fn boot_time() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_boot_time(&stat)
}

fn parse_boot_time(proc_stat: &str) -> Option<i64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|secs| secs.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn restores_at_once_never_share_a_temporary_name() {
        let names: HashSet<OsString> = std::thread::scope(|s| {
            let each = || (0..1000).map(|_| next_temp_name()).collect::<Vec<_>>();
            let (a, b) = (s.spawn(each), s.spawn(each));
            let (a, b) = (a.join().unwrap(), b.join().unwrap());
            a.into_iter().chain(b).collect()
        });
        assert_eq!(names.len(), 2000);
    }

    #[test]
    fn a_name_carries_its_process_and_when_it_started() {
        let this = this_process();
        assert_eq!(this.pid, std::process::id());
        assert!(this.started.is_some(), "read from /proc/self/stat");
        let name = next_temp_name();
        assert_eq!(maker_of(&name), Some(this));
        assert!(name.len() <= PREFIX.len() + 3 * 20 + 2, "{name:?}");
        let longest = temp_name(
            Maker {
                pid: u32::MAX,
                started: Some(u64::MAX),
            },
            u64::MAX,
        );
        assert!(longest.len() < 100, "far under any NAME_MAX: {longest:?}");
    }

    #[test]
    fn names_are_parsed_strictly() {
        let maker = |pid, started| Some(Maker { pid, started });
        assert_eq!(
            maker_of(OsStr::new(".backupd-restore-123-4")),
            maker(123, None)
        );
        assert_eq!(
            maker_of(OsStr::new(".backupd-restore-123-987654-4")),
            maker(123, Some(987_654))
        );
        for not_ours in [
            ".backupd-restore-123",
            ".backupd-restore--4",
            ".backupd-restore-123-",
            ".backupd-restore-123--4",
            ".backupd-restore-+123-4",
            ".backupd-restore-123-4-5-6",
            ".backupd-restore-123-4x",
            ".backupd-restore-123-x-4",
            ".backupd-restore-99999999999-4",
            ".backupd-restore-1-99999999999999999999-4",
            "backupd-restore-123-4",
            ".backupd-XXXXXX.tmp",
        ] {
            assert_eq!(maker_of(OsStr::new(not_ours)), None, "{not_ours}");
        }
    }

    #[test]
    fn boot_time_is_read_from_proc_stat() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
        assert!(boot_time().is_some());
    }

    #[test]
    fn start_time_is_field_22_of_proc_pid_stat_whatever_the_command() {
        let fields = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 19 20";
        let line = format!("77 (a) b (c) {fields}\n");
        assert_eq!(parse_start_time(&line), Some(4242));
        assert_eq!(parse_start_time("77 (short) S 1 2\n"), None);
        assert_eq!(parse_start_time("no command"), None);
    }

    fn changed_at(secs: i64) -> Stat {
        let dir = tempfile::tempdir().unwrap();
        let mut stat = rustix::fs::stat(dir.path()).unwrap();
        stat.st_ctime = secs as _;
        stat
    }

    fn by(pid: u32, started: Option<u64>) -> Maker {
        Maker { pid, started }
    }

    #[test]
    fn a_leftover_is_abandoned_before_this_boot_or_when_its_process_is_gone() {
        let sweeper = Sweeper {
            boot: Some(1_000),
            this: by(10, Some(500)),
        };
        let gone = |_| Found::Gone;
        let unknown = |_| Found::Unknown;
        let started_at = |ticks| move |_| Found::Started(ticks);
        let now = changed_at(1_000);
        // Before this boot: whoever made it, nobody alive now.
        assert!(sweeper.is_abandoned(by(10, Some(500)), &changed_at(999), unknown));
        assert!(sweeper.is_abandoned(by(20, Some(7)), &changed_at(999), started_at(7)));
        // This daemon's own: in use by its other restores.
        assert!(!sweeper.is_abandoned(by(10, Some(500)), &now, gone));
        // Its pid, but an earlier process's (a container's PID 1 restarted, an earlier
        // version's name without a start time).
        assert!(sweeper.is_abandoned(by(10, Some(499)), &now, unknown));
        assert!(sweeper.is_abandoned(by(10, None), &now, unknown));
        // Another pid: its process gone, or the pid now another process's.
        assert!(sweeper.is_abandoned(by(20, Some(7)), &now, gone));
        assert!(sweeper.is_abandoned(by(20, Some(7)), &now, started_at(8)));
        assert!(!sweeper.is_abandoned(by(20, Some(7)), &now, started_at(7)));
        assert!(!sweeper.is_abandoned(by(20, Some(7)), &now, unknown));
        // An earlier version's name: the pid alone says.
        assert!(sweeper.is_abandoned(by(20, None), &now, gone));
        assert!(!sweeper.is_abandoned(by(20, None), &now, started_at(8)));
        assert!(!sweeper.is_abandoned(by(20, None), &now, unknown));
        // Boot time unknown: only the process says.
        let no_boot = Sweeper {
            boot: None,
            this: by(10, Some(500)),
        };
        assert!(!no_boot.is_abandoned(by(20, Some(7)), &changed_at(0), started_at(7)));
        assert!(no_boot.is_abandoned(by(20, Some(7)), &changed_at(0), gone));
        // Without its own start time this daemon names its own by pid alone, as before.
        let no_start = Sweeper {
            boot: Some(1_000),
            this: by(10, None),
        };
        assert!(!no_start.is_abandoned(by(10, None), &now, gone));
        assert!(!no_start.is_abandoned(by(10, Some(499)), &now, gone));
    }

    #[test]
    fn this_process_is_found_with_its_start_and_a_reaped_child_is_gone() {
        let this = this_process();
        assert_eq!(look_up(this.pid), Found::Started(this.started.unwrap()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(look_up(pid), Found::Gone);
        assert_eq!(look_up(0), Found::Unknown);
        assert_eq!(look_up(u32::MAX), Found::Unknown);
    }
}
