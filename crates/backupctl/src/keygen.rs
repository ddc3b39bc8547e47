//! `keygen`: makes an age identity in the client, as `age-keygen` does, so that a secret key
//! never passes through the daemon. The file is written whole with mode 0600 and never
//! replaces an existing one.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use age::secrecy::ExposeSecret;

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

/// Writes `text` to a new file at `path`, mode 0600 from its creation. It is written and
/// synced under a temporary name beside `path` and only then renamed into place, so that a
/// failed write (a full disk) leaves no truncated key under the name: nothing at all.
fn write_new_private(path: &Path, text: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".backupctl-keygen-")
        .suffix(".tmp")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    // Through the file itself: errors then read as the OS says them, without the temporary name.
    temp.as_file_mut().write_all(text.as_bytes())?;
    temp.as_file().sync_all()?;
    // RENAME_NOREPLACE (or link + unlink): fails on any existing name, a planted symlink too.
    // On any error the temporary file is removed when `temp` drops.
    temp.persist_noclobber(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
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
