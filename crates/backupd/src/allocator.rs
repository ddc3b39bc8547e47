//! Makes glibc's allocator give memory back after a burst.
//!
//! glibc serves big allocations with `mmap` (returned to the system on free) only up to a
//! threshold it raises each time such a block is freed; after a flood of large request lines
//! the same sizes come from the heap, whose freed pages mostly stay resident. A fixed
//! threshold keeps it from rising. It can only be set before the process starts
//! (`GLIBC_TUNABLES`; `mallopt` would need `unsafe`), so the daemon re-executes itself once
//! with it, keeping its pid, arguments and inherited sockets.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

pub const TUNABLES: &str = "GLIBC_TUNABLES";
/// `GLIBC_TUNABLES` as it was before the re-execution (empty: unset): the commands the
/// daemon starts get the user's back, not the daemon's allocator setting.
pub const USERS_TUNABLES: &str = "BACKUPD_USERS_GLIBC_TUNABLES";
/// glibc's own starting threshold, kept fixed.
const MMAP_THRESHOLD: &str = "glibc.malloc.mmap_threshold=131072";

/// Re-executes the running program with a fixed mmap threshold added to `GLIBC_TUNABLES`,
/// unless one is set already (by us on the first pass, or by the user). Returns only when
/// nothing was done or the exec failed; the daemon then runs as before.
pub fn fix_mmap_threshold() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let users = std::env::var_os(TUNABLES);
    let Some(tunables) = tunables_with_threshold(users.clone()) else {
        return;
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // Only returns on failure.
    let _ = std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env(TUNABLES, tunables)
        .env(USERS_TUNABLES, users.unwrap_or_default())
        .exec();
}

/// The tunables to run with, or `None` if the threshold is set already.
fn tunables_with_threshold(current: Option<OsString>) -> Option<OsString> {
    match current {
        Some(current) if current.to_string_lossy().contains("malloc.mmap_threshold") => None,
        Some(current) if !current.is_empty() => {
            let mut tunables = current;
            tunables.push(":");
            tunables.push(MMAP_THRESHOLD);
            Some(tunables)
        }
        _ => Some(MMAP_THRESHOLD.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_added_once_and_a_users_tunables_are_kept() {
        assert_eq!(tunables_with_threshold(None), Some(MMAP_THRESHOLD.into()));
        assert_eq!(
            tunables_with_threshold(Some("glibc.malloc.arena_max=2".into())),
            Some(format!("glibc.malloc.arena_max=2:{MMAP_THRESHOLD}").into())
        );
        assert_eq!(tunables_with_threshold(Some(MMAP_THRESHOLD.into())), None);
        let users = "glibc.malloc.mmap_threshold=4096";
        assert_eq!(tunables_with_threshold(Some(users.into())), None);
    }
}
