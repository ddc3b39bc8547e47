//! `keygen`: makes an age identity in the client, as `age-keygen` does, so that a secret key
//! never passes through the daemon. The file is written whole with mode 0600 and never
//! replaces an existing one; missing folders on its path are made with mode 0700.

use std::fs::{DirBuilder, File, Permissions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use age::secrecy::ExposeSecret;
use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

use crate::cli::{Cli, CliCommand};
use crate::failure::Failure;

/// Runs `keygen`; `None` for every other command.
pub fn run_local(cli: &Cli) -> Option<Result<(), Failure>> {
    let CliCommand::Keygen { out } = &cli.command else {
        return None;
    };
    if cli.json {
        return Some(Err(Failure::Usage(
            "--json does not apply to `keygen`: it prints no answer of the daemon".to_owned(),
        )));
    }
    Some(keygen(out.as_deref()))
}

fn keygen(out: Option<&Path>) -> Result<(), Failure> {
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    // The same three lines as age-keygen writes.
    let created = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text = format!(
        "# created: {created}\n# public key: {public}\n{}\n",
        identity.to_string().expose_secret()
    );
    match out {
        Some(path) => {
            write_new_private(path, &text).map_err(|e| {
                let why = match e.kind() {
                    io::ErrorKind::AlreadyExists => "it exists; an identity is never replaced",
                    _ => return Failure::Local(format!("can't write {}: {e}", path.display())),
                };
                Failure::Local(format!("can't write {}: {why}", path.display()))
            })?;
            println!("{public}");
        }
        None => {
            print!("{text}");
            eprintln!("Public key: {public}");
        }
    }
    Ok(())
}

/// Writes `text` to a new file at `path`, mode 0600 from its creation, which gets its name only
/// once written and synced: a failed write (a full disk) or a killed `keygen` leaves no
/// truncated key under the name, and no copy of the key under another.
fn write_new_private(path: &Path, text: &str) -> io::Result<()> {
    // A fresh account has no ~/.config/backupd; folders that hold a secret key are private.
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder_of(path))?;
    let dir = File::open(folder_of(path))?;
    let flags = OFlags::WRONLY.union(OFlags::TMPFILE).union(OFlags::CLOEXEC);
    match rustix::fs::openat(&dir, ".", flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => {
            let mut file = File::from(fd);
            // Through the file itself: errors then read as the OS says them.
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            link_unnamed(&file, path)?;
        }
        // No unnamed files on this file system (EISDIR: a kernel that predates them).
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => write_under_temporary_name(path)
            .and_then(|mut temp| {
                temp.as_file_mut().write_all(text.as_bytes())?;
                temp.as_file().sync_all()?;
                // RENAME_NOREPLACE (or link + unlink): fails on any existing name, a symlink
                // too. On any error the temporary file is removed when `temp` drops.
                temp.persist_noclobber(path).map(drop).map_err(|e| e.error)
            })?,
        Err(e) => return Err(e.into()),
    }
    dir.sync_all()
}

/// Gives the unnamed `file` the name `path`, never replacing anything there (a symlink
/// included): by the handle itself where allowed (root), else by its /proc name.
fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    match rustix::fs::linkat(file, "", CWD, path, AtFlags::EMPTY_PATH) {
        Err(Errno::NOENT) => {}
        linked => return Ok(linked?),
    }
    let by_proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    Ok(rustix::fs::linkat(
        CWD,
        by_proc.as_str(),
        CWD,
        path,
        AtFlags::SYMLINK_FOLLOW,
    )?)
}

fn write_under_temporary_name(path: &Path) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".backupctl-keygen-")
        .suffix(".tmp")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(folder_of(path))
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_private_file_is_written_whole_and_nothing_is_ever_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.txt");
        write_new_private(&path, "first\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let err = write_new_private(&path, "second\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");

        let target = dir.path().join("elsewhere");
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write_new_private(&link, "third\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!target.exists(), "nothing written through the link");

        // No temporary file is left by a success or a refusal.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["key.txt", "link.txt"]);
    }
}
