//! Who may talk to the daemon: its own user, root, and, when `socket_group` is set, members
//! of that group. The peer's uid and pid come from the kernel (SO_PEERCRED); its groups from
//! `/proc/<pid>/status`, and a peer whose groups cannot be read is refused.

use std::path::Path;

/// The users the daemon serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The daemon's effective uid.
    pub own_uid: u32,
    /// Members of this group are served too.
    pub group: Option<Group>,
}

/// A group named in the configuration, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub gid: u32,
}

impl Access {
    /// Only the daemon's own user (and root).
    pub fn own_user() -> Self {
        Self {
            own_uid: rustix::process::geteuid().as_raw(),
            group: None,
        }
    }

    /// The daemon's own uid and root need no further check (nor are they capped as tightly).
    pub fn is_privileged(&self, uid: u32) -> bool {
        uid == self.own_uid || uid == 0
    }

    /// Admits the peer `uid`/`pid` or says why not; group membership is read from `proc`
    /// (normally `/proc`).
    pub fn check(&self, uid: u32, pid: Option<u32>, proc: &Path) -> Result<(), String> {
        if self.is_privileged(uid) {
            return Ok(());
        }
        let refused = |why: &str| {
            Err(format!(
                "refused connection from uid {uid}: backupd runs as uid {}{why}",
                self.own_uid
            ))
        };
        let Some(group) = self.group else {
            return refused("");
        };
        let Some(pid) = pid.filter(|&pid| pid != 0) else {
            return refused(" and the peer's process is unknown");
        };
        match std::fs::read_to_string(proc.join(pid.to_string()).join("status")) {
            Ok(status) if in_group(&status, uid, group.gid) => Ok(()),
            Ok(_) => refused(&format!(" and uid {uid} is not in group {}", group.gid)),
            Err(e) => refused(&format!(" and the peer's groups are unreadable: {e}")),
        }
    }
}

/// Whether the process `status` describes runs as `uid` (so a reused pid is not trusted) and
/// has `gid` as its real or effective group or among its supplementary groups.
fn in_group(status: &str, uid: u32, gid: u32) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .map(|n| n.parse::<u32>().ok())
                    .collect::<Option<Vec<_>>>()
            })
    };
    let runs_as_uid = matches!(field("Uid:"), Some(Some(uids)) if uids.get(1) == Some(&uid));
    let ids_of = |name| field(name).flatten().unwrap_or_default();
    let gids = ids_of("Gid:");
    let groups = ids_of("Groups:");
    runs_as_uid && (gids.iter().take(2).any(|&g| g == gid) || groups.contains(&gid))
}

/// Resolves a group name (or a number) through `/etc/group`, as `getgrnam` would for local
/// groups.
pub fn resolve_group(name: &str, etc_group: &str) -> Result<Group, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Group { gid });
    }
    etc_group
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let group_name = fields.next()?;
            let gid = fields.nth(1)?.parse::<u32>().ok()?;
            (group_name == name).then_some(Group { gid })
        })
        .next()
        .ok_or_else(|| format!("socket_group: no group named {name:?} in /etc/group"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsocat\nUid:\t65534\t65534\t65534\t65534\n\
                          Gid:\t65534\t65534\t65534\t65534\nGroups:\t34 100 \n";

    #[test]
    fn membership_comes_from_the_status_file() {
        assert!(in_group(STATUS, 65534, 34));
        assert!(in_group(STATUS, 65534, 100));
        assert!(in_group(STATUS, 65534, 65534), "the primary group counts");
        assert!(!in_group(STATUS, 65534, 35));
        assert!(
            !in_group(STATUS, 1000, 34),
            "a pid now running as another uid"
        );
        assert!(!in_group("Uid:\t65534\t65534\t65534\t65534\n", 65534, 34));
        assert!(!in_group("", 65534, 34));
    }

    #[test]
    fn only_members_are_admitted_and_unreadable_groups_refuse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("42")).unwrap();
        std::fs::write(dir.path().join("42/status"), STATUS).unwrap();
        let access = Access {
            own_uid: 1000,
            group: Some(Group { gid: 34 }),
        };
        assert!(access.check(65534, Some(42), dir.path()).is_ok());
        assert!(access.check(1000, None, dir.path()).is_ok());
        assert!(access.check(0, None, dir.path()).is_ok());
        let err = access.check(65534, Some(43), dir.path()).unwrap_err();
        assert!(err.contains("unreadable"), "{err}");
        assert!(access.check(65534, None, dir.path()).is_err());
        let other = Access {
            group: Some(Group { gid: 35 }),
            ..access
        };
        let err = other.check(65534, Some(42), dir.path()).unwrap_err();
        assert!(err.contains("not in group 35"), "{err}");
        let no_group = Access {
            group: None,
            ..access
        };
        let err = no_group.check(65534, Some(42), dir.path()).unwrap_err();
        assert_eq!(
            err,
            "refused connection from uid 65534: backupd runs as uid 1000"
        );
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        let etc = "root:x:0:\nbackup:x:34:\nstaff:x:50:alice,bob\n";
        assert_eq!(resolve_group("backup", etc), Ok(Group { gid: 34 }));
        assert_eq!(resolve_group("77", etc), Ok(Group { gid: 77 }));
        assert!(resolve_group("nope", etc).unwrap_err().contains("nope"));
    }
}
