//! How many connections are served at once: a cap per uid, so one user's stalled clients
//! cannot take every slot, and a few slots beyond it reserved for the daemon's own user and
//! root, so that `hello` or `stop` still get through when the caps are reached. A reserved
//! connection serves one short request (see `server`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Connection counts the daemon allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once, reserved slots included.
    pub max_connections: usize,
    /// Connections one uid may hold outside the reserved slots.
    pub per_uid: usize,
    /// Slots only the daemon's own uid and root may take when the others are full.
    pub reserved: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            per_uid: 64,
            reserved: 4,
        }
    }
}

/// Which kind of slot a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Shared,
    Reserved,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error("uid {uid} already has {open} connections open (at most {cap} per user)")]
    User { uid: u32, open: usize, cap: usize },
    #[error("the daemon already serves {0} connections")]
    Daemon(usize),
}

#[derive(Debug, Default)]
struct Counts {
    shared: usize,
    reserved: usize,
    by_uid: HashMap<u32, usize>,
}

/// The open connections, counted per uid; shared by the accept loop and every connection.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    counts: Mutex<Counts>,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A slot for a connection from `uid`, if one is free; `privileged` (the daemon's own uid
    /// or root) may take a reserved slot once its shared ones are used up.
    pub fn admit(self: &Arc<Self>, uid: u32, privileged: bool) -> Result<Ticket, Full> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let shared_cap = self
            .limits
            .max_connections
            .saturating_sub(self.limits.reserved);
        let of_uid = counts.by_uid.get(&uid).copied().unwrap_or(0);
        let slot = if of_uid < self.limits.per_uid && counts.shared < shared_cap {
            counts.shared += 1;
            *counts.by_uid.entry(uid).or_default() += 1;
            Slot::Shared
        } else if privileged && counts.reserved < self.limits.reserved {
            counts.reserved += 1;
            Slot::Reserved
        } else if of_uid >= self.limits.per_uid {
            return Err(Full::User {
                uid,
                open: of_uid,
                cap: self.limits.per_uid,
            });
        } else {
            return Err(Full::Daemon(counts.shared + counts.reserved));
        };
        Ok(Ticket {
            admission: Arc::clone(self),
            uid,
            slot,
        })
    }
}

/// One admitted connection's slot, given back when the connection ends.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    uid: u32,
    slot: Slot,
}

impl Ticket {
    pub fn slot(&self) -> Slot {
        self.slot
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match self.slot {
            Slot::Reserved => counts.reserved -= 1,
            Slot::Shared => {
                counts.shared -= 1;
                if let Some(n) = counts.by_uid.get_mut(&self.uid) {
                    *n -= 1;
                    if *n == 0 {
                        counts.by_uid.remove(&self.uid);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> Arc<Admission> {
        Admission::new(Limits {
            max_connections: 6,
            per_uid: 2,
            reserved: 2,
        })
    }

    #[test]
    fn one_uid_takes_at_most_its_share() {
        let admission = admission();
        let held: Vec<_> = (0..2)
            .map(|_| admission.admit(1000, false).unwrap())
            .collect();
        assert!(held.iter().all(|t| t.slot() == Slot::Shared));
        assert_eq!(
            admission.admit(1000, false).unwrap_err(),
            Full::User {
                uid: 1000,
                open: 2,
                cap: 2
            }
        );
        // Another user is not affected.
        assert!(admission.admit(1001, false).is_ok());
        drop(held);
        assert!(admission.admit(1000, false).is_ok(), "slots come back");
    }

    #[test]
    fn the_reserved_slots_are_for_the_privileged_only() {
        let admission = admission();
        let _shared: Vec<_> = [1, 2, 3, 3]
            .iter()
            .map(|&uid| admission.admit(uid, false).unwrap())
            .collect();
        assert_eq!(admission.admit(4, false).unwrap_err(), Full::Daemon(4));
        let first = admission.admit(0, true).unwrap();
        assert_eq!(first.slot(), Slot::Reserved);
        let second = admission.admit(0, true).unwrap();
        assert_eq!(second.slot(), Slot::Reserved);
        assert!(admission.admit(0, true).is_err(), "all slots are taken");
        drop(first);
        assert_eq!(admission.admit(0, true).unwrap().slot(), Slot::Reserved);
    }

    #[test]
    fn the_privileged_over_their_own_cap_use_a_reserved_slot() {
        let admission = admission();
        let _own: Vec<_> = (0..2).map(|_| admission.admit(0, true).unwrap()).collect();
        assert_eq!(admission.admit(0, true).unwrap().slot(), Slot::Reserved);
    }
}
