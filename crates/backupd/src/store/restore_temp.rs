//! The temporary names an overwriting restore links a new entry under before renaming it over
//! the old one (`.backupd-restore-<pid>-<n>`), and the sweep of those an interrupted restore
//! left: a power cut or a killed daemon between the link and the rename leaves one behind.
//!
//! A leftover is removed only when no restore alive can still be using it: it was changed
//! before this boot, or the process its name carries is gone (and is not this one, whose own
//! restores may be running beside the sweeping one). Only names of the kinds a restore makes
//! (file, symlink, FIFO), owned by whom a restore's files can be owned by, are looked at; all
//! through the folder's handle, never following a symlink.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Stat};
use rustix::io::Errno;

use super::beneath;

const PREFIX: &str = ".backupd-restore-";

/// A temporary name no other restore of this process uses, even one writing in the same
/// folder at the same time: short whatever the entry's name, so it always fits a file
/// system's name limit.
pub fn next_temp_name() -> OsString {
    static TAKEN: AtomicU64 = AtomicU64::new(0);
    let n = TAKEN.fetch_add(1, Ordering::Relaxed) + 1;
    OsString::from(format!("{PREFIX}{}-{n}", std::process::id()))
}

/// The process id a temporary name carries, if `name` is one of ours.
pub fn pid_of(name: &OsStr) -> Option<u32> {
    let rest = name.as_bytes().strip_prefix(PREFIX.as_bytes())?;
    let text = std::str::from_utf8(rest).ok()?;
    let (pid, n) = text.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) || n.parse::<u64>().is_err() {
        return None;
    }
    pid.parse().ok()
}

/// What decides whether a leftover is abandoned, read once per restore.
pub struct Sweeper {
    /// When this boot began (`btime` of `/proc/stat`), in seconds since 1970; `None` if
    /// unreadable, and then only the process test is made.
    boot: Option<i64>,
    own_pid: u32,
}

impl Sweeper {
    pub fn new() -> Self {
        Sweeper {
            boot: boot_time(),
            own_pid: std::process::id(),
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
            let Some(pid) = pid_of(name) else {
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
                && self.is_abandoned(pid, &stat, process_exists)
                // The name itself: a symlink is removed, never what it points to.
                && rustix::fs::unlinkat(dir, name, AtFlags::empty()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Whether no restore alive can be using a temporary name carrying `pid` with `stat`:
    /// changed before this boot (no process alive now wrote it), or made by a process that is
    /// gone (not this one: its other restores run beside this one).
    fn is_abandoned(&self, pid: u32, stat: &Stat, exists: impl Fn(u32) -> bool) -> bool {
        #[allow(clippy::unnecessary_cast)] // `st_ctime`'s width differs by target
        let changed = stat.st_ctime as i64;
        if self.boot.is_some_and(|boot| changed < boot) {
            return true;
        }
        pid != self.own_pid && !exists(pid)
    }
}

/// Whether a process `pid` exists (in this PID namespace). Anything but "no such process",
/// a pid no process can have included, counts as existing.
fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return true;
    };
    rustix::process::test_kill_process(pid) != Err(Errno::SRCH)
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
    fn names_are_parsed_strictly() {
        assert_eq!(pid_of(&next_temp_name()), Some(std::process::id()));
        assert_eq!(pid_of(OsStr::new(".backupd-restore-123-4")), Some(123));
        for not_ours in [
            ".backupd-restore-123",
            ".backupd-restore--4",
            ".backupd-restore-123-",
            ".backupd-restore-+123-4",
            ".backupd-restore-123-4-5",
            ".backupd-restore-123-4x",
            ".backupd-restore-99999999999-4",
            "backupd-restore-123-4",
            ".backupd-XXXXXX.tmp",
        ] {
            assert_eq!(pid_of(OsStr::new(not_ours)), None, "{not_ours}");
        }
    }

    #[test]
    fn boot_time_is_read_from_proc_stat() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
        assert!(boot_time().is_some());
    }

    fn changed_at(secs: i64) -> Stat {
        let dir = tempfile::tempdir().unwrap();
        let mut stat = rustix::fs::stat(dir.path()).unwrap();
        stat.st_ctime = secs as _;
        stat
    }

    #[test]
    fn a_leftover_is_abandoned_before_this_boot_or_when_its_process_is_gone() {
        let sweeper = Sweeper {
            boot: Some(1_000),
            own_pid: 10,
        };
        let alive = |_| true;
        let gone = |_| false;
        // Before this boot: whoever made it, nobody alive now.
        assert!(sweeper.is_abandoned(10, &changed_at(999), alive));
        assert!(sweeper.is_abandoned(20, &changed_at(999), alive));
        // This boot: by a process that is gone, not this one.
        assert!(sweeper.is_abandoned(20, &changed_at(1_000), gone));
        assert!(!sweeper.is_abandoned(20, &changed_at(1_000), alive));
        assert!(!sweeper.is_abandoned(10, &changed_at(1_000), gone));
        // Boot time unknown: only the process says.
        let unknown = Sweeper {
            boot: None,
            own_pid: 10,
        };
        assert!(!unknown.is_abandoned(20, &changed_at(0), alive));
        assert!(unknown.is_abandoned(20, &changed_at(0), gone));
    }

    #[test]
    fn this_process_exists_and_a_reaped_child_does_not() {
        assert!(process_exists(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_exists(pid));
        assert!(process_exists(0) && process_exists(u32::MAX));
    }
}
