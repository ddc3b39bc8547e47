//! Crash-safe file operations the daemon's files share: renames that never replace, folder
//! syncs, and small files (schedules, manifests, the verify ledger) replaced atomically; and
//! the checked reads of files the daemon takes commands ([`read_trusted`]) or secrets
//! ([`read_secret`]) from.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How the temporary files of [`write_atomically`] begin and end: `.backupd-XXXXXX.tmp`, a
/// name nobody else uses, so that a crash's leftovers can be swept ([`sweep_temp_files`]).
const TEMP_PREFIX: &str = ".backupd-";
const TEMP_SUFFIX: &str = ".tmp";
/// Random characters between them, as `tempfile` makes them.
const TEMP_RANDOM_LEN: usize = 6;
/// Temporary files created for one write before giving up, each swept before it was locked.
const TEMP_ATTEMPTS: usize = 3;

/// Renames without ever replacing `to`: `renameat2(RENAME_NOREPLACE)`, falling back to
/// `link` + `unlink` on file systems that lack it (both fail if `to` exists).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {}
            Err(e) => return Err(e.into()),
        }
    }
    fs::hard_link(from, to)?;
    fs::remove_file(from)
}

pub fn parent_dir(path: &Path) -> Option<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

/// Flushes a folder's entries (creations, renames) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same folder is
/// written, synced and renamed over `path`, then the folder is synced. Readers see the
/// old content or the new, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_temp(path, bytes, true)
}

/// Like [`write_atomically`], but fails with `AlreadyExists` instead of replacing a file.
pub fn write_new_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_temp(path, bytes, false)
}

/// A temporary file of ours in `path`'s folder, and that folder. The file is locked until it
/// is closed (after its rename, or its removal): a daemon starting meanwhile on another home
/// that shares the folder must not sweep it as a crash's leftover ([`sweep_temp_files`]).
fn temp_beside(path: &Path) -> io::Result<(&Path, tempfile::NamedTempFile)> {
    let dir = parent_dir(path)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(TEMP_SUFFIX)
            .rand_bytes(TEMP_RANDOM_LEN)
            .tempfile_in(dir)?;
        if lock_as_writer(tmp.as_file())? {
            return Ok((dir, tmp));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        "every temporary file created was swept before it could be locked",
    ))
}

/// Locks a file just created, as its writer. `false` when a sweep took it between its
/// creation and the lock (it holds the lock, or has removed the file): the caller starts
/// again under a new name. Where the file system has no `flock`, the file is written
/// unlocked, as before there was a lock.
fn lock_as_writer(file: &File) -> io::Result<bool> {
    match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file.metadata()?.nlink() > 0),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(_) => Ok(true),
    }
}

/// `path` opened and locked, if it is a regular file nobody holds locked: a temporary file
/// whose writer is gone. `None` when its writer still holds it, and when it cannot be opened
/// to know (another user's, mode 0600: their daemon sweeps it). No link is followed, no
/// FIFO waited on.
fn lock_abandoned(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(not_waiting_not_following())
        .open(path)
        .ok()?;
    ensure_regular(&file).ok()?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
    Some(file)
}

fn write_via_temp(path: &Path, bytes: &[u8], replace: bool) -> io::Result<()> {
    let (dir, mut tmp) = temp_beside(path)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    if replace {
        tmp.persist(path).map_err(|e| e.error)?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| e.error)?;
    }
    sync_dir(dir)
}

/// Like [`write_atomically`], but `write` streams the content into a buffered writer on the
/// temporary file, so a large file is never held whole in memory first. The content is
/// synced once (`fdatasync`: the data and the size) before the rename, then the folder.
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut io::BufWriter<&mut File>) -> io::Result<()>,
) -> io::Result<()> {
    let (dir, mut tmp) = temp_beside(path)?;
    {
        let mut buffered = io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut());
        write(&mut buffered)?;
        buffered.flush()?;
    }
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Which temporary names [`sweep_temp_files`] may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempNames {
    /// Only `.backupd-XXXXXX.tmp`: in a folder users share with us (a destination).
    Ours,
    /// Also `.tmpXXXXXX`, the names earlier versions used: only in the home's own folders,
    /// where nobody else writes.
    OursAndLegacy,
}

/// Whether `name` is a temporary file of [`write_atomically`] (or of earlier versions).
pub fn is_temp_name(name: &str, names: TempNames) -> bool {
    let random =
        |s: &str| s.len() == TEMP_RANDOM_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let ours = name
        .strip_prefix(TEMP_PREFIX)
        .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
        .is_some_and(random);
    let legacy = names == TempNames::OursAndLegacy && name.strip_prefix(".tmp").is_some_and(random);
    ours || legacy
}

/// The owners whose files in `dir` can be ours: root, the daemon's user, and the folder's
/// owner, who could delete them anyway. In a folder others may write (sticky, as `/tmp`),
/// anyone else's file is theirs whatever its name.
pub fn trusted_owners(dir: &Path) -> io::Result<[u32; 3]> {
    Ok([
        0,
        rustix::process::geteuid().as_raw(),
        fs::metadata(dir)?.uid(),
    ])
}

/// Removes the temporary files an interrupted atomic write left directly in `dir` (regular
/// files of [`trusted_owners`] only, never through a symlink) and returns their paths. Call it
/// only before anything of this daemon may write in `dir`: at daemon start. A temporary file
/// whose writer still holds its lock (another daemon sharing the folder) is left.
pub fn sweep_temp_files(dir: &Path, names: TempNames) -> io::Result<Vec<PathBuf>> {
    let trusted = trusted_owners(dir)?;
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|name| is_temp_name(name, names));
        if !is_temp {
            continue;
        }
        // `metadata` of an entry does not follow symlinks.
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !meta.is_file() || !trusted.contains(&meta.uid()) {
            continue;
        }
        // Held until the file is gone, so that no writer takes it up meanwhile.
        let Some(_abandoned) = lock_abandoned(&entry.path()) else {
            continue;
        };
        match fs::remove_file(entry.path()) {
            Ok(()) => removed.push(entry.path()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    removed.sort();
    Ok(removed)
}

/// Whether [`read_trusted`] follows a symbolic link in the file's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    Follow,
    Refuse,
}

/// Who besides its owner may read a file that [`read_trusted`] or [`read_secret`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readers {
    /// Anyone: the file names commands (the configuration) but holds no secret.
    Anyone,
    /// Nobody: the file holds secret keys or passwords, so group or others reading is refused,
    /// as ssh refuses a private key others can read.
    OwnerOnly,
}

/// The text of a file the daemon may trust with commands: a regular file owned by root or the
/// daemon's user that neither group nor others may write, read up to `limit` bytes. Others
/// may read it: use [`read_secret`] for a file that holds secrets. A refusal is
/// `PermissionDenied` and says why and how to fix it.
pub fn read_trusted(path: &Path, links: Links, limit: u64) -> io::Result<String> {
    read_checked(path, links, limit, Readers::Anyone)
}

/// Like [`read_trusted`], for a file holding secrets (credentials, a password): also refused
/// if group or others may read it, even a group the owner chose (`root:backup`, mode 0640):
/// such a file is for the daemon's user alone, mode 0600.
pub fn read_secret(path: &Path, links: Links, limit: u64) -> io::Result<String> {
    read_checked(path, links, limit, Readers::OwnerOnly)
}

fn read_checked(path: &Path, links: Links, limit: u64, readers: Readers) -> io::Result<String> {
    use rustix::fs::{FileType, Mode, OFlags};
    use std::io::Read;
    let refused = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if links == Links::Refuse {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) if links == Links::Refuse => {
            return Err(refused("is a symlink; name the file itself".into()));
        }
        Err(e) => return Err(e.into()),
    };
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(refused("is not a regular file".into()));
    }
    let euid = rustix::process::geteuid().as_raw();
    if stat.st_uid != 0 && stat.st_uid != euid {
        return Err(refused(format!(
            "is owned by uid {}, neither root nor the daemon's user",
            stat.st_uid
        )));
    }
    let mode = stat.st_mode & 0o7777;
    // For a secret, one fix that also ends the reading.
    let fix = match readers {
        Readers::Anyone => "chmod go-w it",
        Readers::OwnerOnly => "chmod 600 it",
    };
    if mode & 0o022 != 0 {
        return Err(refused(format!(
            "is writable by group or others (mode {mode:o}); {fix}"
        )));
    }
    if readers == Readers::OwnerOnly && mode & 0o044 != 0 {
        return Err(refused(format!(
            "is readable by group or others (mode {mode:o}) but holds secrets; {fix}"
        )));
    }
    let mut text = String::new();
    File::from(fd).take(limit).read_to_string(&mut text)?;
    Ok(text)
}

/// Reads a whole file without following a link in its place (`O_NOFOLLOW`): the daemon's
/// own files are never links, and one planted there must not make it read someone else's.
pub fn read_nofollow(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(not_waiting_not_following())
        .open(path)?;
    ensure_regular(&file)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Open flags for a file of the daemon's own (state, log): a link in its place is not
/// followed, and a FIFO or device in its place does not hold the open (O_NONBLOCK, without
/// effect on a regular file's reads and writes) but fails [`ensure_regular`].
pub fn not_waiting_not_following() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32
}

/// Fails unless `file` is a regular file: a FIFO would hang whoever reads or writes it.
pub fn ensure_regular(file: &fs::File) -> io::Result<()> {
    if file.metadata()?.file_type().is_file() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{NOBODY, can_give_files_away};

    #[test]
    fn rename_noreplace_never_clobbers() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&from, b"new").unwrap();
        fs::write(&to, b"old").unwrap();
        let err = rename_noreplace(&from, &to).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&to).unwrap(), b"old");
        fs::remove_file(&to).unwrap();
        rename_noreplace(&from, &to).unwrap();
        assert_eq!(fs::read(&to).unwrap(), b"new");
        assert!(!from.exists());
    }

    #[test]
    fn write_atomically_with_streams_and_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        write_atomically(&path, b"old").unwrap();
        write_atomically_with(&path, |w| w.write_all(b"new content")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new content");
        // A failing writer leaves the old file and no temporary behind.
        let failed = write_atomically_with(&path, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("serializer failed"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"new content");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_atomically_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedule.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        let err = write_new_atomically(&path, b"three").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"two");
    }

    #[test]
    fn temp_names_are_recognised_exactly() {
        use TempNames::{Ours, OursAndLegacy};
        assert!(is_temp_name(".backupd-a1B2c3.tmp", Ours));
        assert!(is_temp_name(".tmpa1B2c3", OursAndLegacy));
        assert!(
            !is_temp_name(".tmpa1B2c3", Ours),
            "legacy names only in the home"
        );
        for other in [
            ".backupd-a1B2c.tmp",
            ".backupd-a1B2c3d.tmp",
            ".backupd-a1-2c3.tmp",
            "backupd-a1B2c3.tmp",
            ".tmpa1B2c",
            ".tmpa1B2c3.json",
            ".tmp",
            "schedules.json",
        ] {
            assert!(!is_temp_name(other, OursAndLegacy), "{other}");
        }
    }

    #[test]
    fn the_sweep_leaves_another_user_s_temp_file_in_a_shared_folder() {
        use std::os::unix::fs::PermissionsExt;
        if !can_give_files_away() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::set_permissions(d, fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(d.join(".backupd-abc123.tmp"), b"theirs").unwrap();
        std::os::unix::fs::chown(d.join(".backupd-abc123.tmp"), Some(NOBODY), Some(NOBODY))
            .unwrap();
        fs::write(d.join(".backupd-Ours12.tmp"), b"ours").unwrap();

        let removed = sweep_temp_files(d, TempNames::Ours).unwrap();
        assert_eq!(removed, [d.join(".backupd-Ours12.tmp")]);
        assert!(d.join(".backupd-abc123.tmp").exists());
    }

    #[test]
    fn an_interrupted_write_leaves_a_temp_file_that_the_sweep_removes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_atomically(&d.join("schedules.json"), b"{}").unwrap();
        // What a crash between create and rename leaves: a file named as the writer names them.
        let left = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(TEMP_SUFFIX)
            .rand_bytes(TEMP_RANDOM_LEN)
            .tempfile_in(d)
            .unwrap()
            .into_temp_path()
            .keep()
            .unwrap();
        fs::write(d.join(".tmpAbC123"), b"legacy").unwrap();
        fs::write(d.join(".tmpnotes"), b"a user's").unwrap();
        fs::create_dir(d.join(".tmpDiR123")).unwrap();
        std::os::unix::fs::symlink("schedules.json", d.join(".backupd-LiNk12.tmp")).unwrap();

        let removed = sweep_temp_files(d, TempNames::Ours).unwrap();
        assert_eq!(removed, std::slice::from_ref(&left));
        let removed = sweep_temp_files(d, TempNames::OursAndLegacy).unwrap();
        assert_eq!(removed, [d.join(".tmpAbC123")]);
        let mut names: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".backupd-LiNk12.tmp",
                ".tmpDiR123",
                ".tmpnotes",
                "schedules.json"
            ]
        );
    }

    #[test]
    fn the_sweep_leaves_a_temp_file_its_writer_still_holds() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (held, abandoned) = (d.join(".backupd-HeLd12.tmp"), d.join(".backupd-G0ne12.tmp"));
        fs::write(&held, b"being written").unwrap();
        fs::write(&abandoned, b"half a file").unwrap();
        // As another daemon sharing the folder holds the file it is writing.
        let writer = File::open(&held).unwrap();
        rustix::fs::flock(
            &writer,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        )
        .unwrap();

        assert_eq!(sweep_temp_files(d, TempNames::Ours).unwrap(), [abandoned]);
        assert!(held.exists());
        drop(writer);
        assert_eq!(sweep_temp_files(d, TempNames::Ours).unwrap(), [held]);
    }

    #[test]
    fn an_atomic_write_under_way_is_not_swept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let swept = |what: &str| {
            let removed = sweep_temp_files(d, TempNames::Ours).unwrap();
            assert_eq!(removed, Vec::<PathBuf>::new(), "{what}");
        };
        write_atomically_with(&d.join("schedules.json"), |w| {
            w.write_all(b"{")?;
            swept("streamed");
            w.write_all(b"}")
        })
        .unwrap();
        assert_eq!(fs::read(d.join("schedules.json")).unwrap(), b"{}");
        // The short forms lock from the same creation; the sweep sees their file mid-write.
        let (_, tmp) = temp_beside(&d.join("manifest.json")).unwrap();
        swept("created");
        assert!(tmp.path().exists());
    }

    #[test]
    fn a_secret_must_be_private_but_the_config_may_be_read_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        fs::write(&path, "key = 1\n").unwrap();
        let chmod = |mode| fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let read_secret = || read_secret(&path, Links::Refuse, 1024);
        let read_trusted = || read_trusted(&path, Links::Refuse, 1024);

        chmod(0o600);
        assert_eq!(read_secret().unwrap(), "key = 1\n");
        chmod(0o400);
        assert!(read_secret().is_ok());
        for mode in [0o644, 0o640, 0o604] {
            chmod(mode);
            assert_eq!(read_trusted().unwrap(), "key = 1\n", "{mode:o}");
            let err = read_secret().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
            let why = err.to_string();
            assert!(
                why.contains(&format!("is readable by group or others (mode {mode:o})")),
                "{why}"
            );
            assert!(why.ends_with("chmod 600 it"), "{why}");
        }
        chmod(0o660);
        let why = read_secret().unwrap_err().to_string();
        assert!(
            why.contains("writable by group or others (mode 660); chmod 600 it"),
            "{why}"
        );
        let why = read_trusted().unwrap_err().to_string();
        assert!(why.ends_with("chmod go-w it"), "{why}");
    }

    #[test]
    fn read_nofollow_refuses_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let (target, link) = (dir.path().join("target"), dir.path().join("link"));
        fs::write(&target, b"secret").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_nofollow(&target).unwrap(), b"secret");
        assert!(read_nofollow(&link).is_err());
    }
}
