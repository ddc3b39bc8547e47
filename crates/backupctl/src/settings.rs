//! The original backup script's configuration variables (`BACKUP_SOURCES`,
//! `BACKUP_DESTINATION`, `LOG_LEVEL`, …), read from the environment and from a `.env` file in the working directory. A variable set
//! in the environment wins over `.env`, as with python-dotenv; command-line flags win over both.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

pub const SOURCES: &str = "BACKUP_SOURCES";
pub const DESTINATION: &str = "BACKUP_DESTINATION";
pub const LOG_LEVEL: &str = "LOG_LEVEL";
pub const RETENTION_DAYS: &str = "RETENTION_DAYS";
pub const MIN_BACKUPS_TO_KEEP: &str = "MIN_BACKUPS_TO_KEEP";

/// The variables of the environment and of `<dir>/.env`. The file is read the first time a
/// variable is asked for, so that a command needing none works in any folder: as root it may
/// refuse the file, and the working directory may be gone.
#[derive(Debug)]
pub struct Settings {
    dir: PathBuf,
    dotenv: OnceCell<HashMap<String, String>>,
}

impl Settings {
    /// The settings of the working directory, whose `.env` is not read yet. A deleted one
    /// holds no `.env`: looked for as `./.env`, none is found.
    pub fn here() -> Self {
        Self {
            dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            dotenv: OnceCell::new(),
        }
    }

    /// The variable's value: the environment first, then `.env`; empty counts as unset.
    pub fn get(&self, key: &str) -> Result<Option<String>, String> {
        let dotenv = self.dotenv()?;
        Ok(std::env::var(key)
            .ok()
            .or_else(|| dotenv.get(key).cloned())
            .filter(|value| !value.trim().is_empty()))
    }

    /// A whole-number variable, such as `RETENTION_DAYS`.
    pub fn number(&self, key: &str) -> Result<Option<u32>, String> {
        self.get(key)?
            .map(|value| {
                value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{key} must be a whole number, not {value:?}"))
            })
            .transpose()
    }

    /// `BACKUP_SOURCES`, as written (a relative one is relative to the working directory).
    pub fn sources(&self) -> Result<Vec<PathBuf>, String> {
        Ok(split_sources(
            self.get(SOURCES)?.as_deref().unwrap_or_default(),
        ))
    }

    /// `.env`'s variables, read at the first call. As root, a `.env` someone else could have
    /// written (see [`check_dotenv_owner`]) is refused rather than obeyed.
    fn dotenv(&self) -> Result<&HashMap<String, String>, String> {
        if let Some(vars) = self.dotenv.get() {
            return Ok(vars);
        }
        let vars = read_dotenv(&self.dir.join(".env"))?;
        Ok(self.dotenv.get_or_init(|| vars))
    }
}

/// The variables of the `.env` at `path`; none if there is no such file.
fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, String> {
    let uid = rustix::process::geteuid().as_raw();
    let read = if uid == 0 {
        read_trusted(path, uid)
    } else {
        std::fs::read_to_string(path)
    };
    match read {
        Ok(text) => Ok(parse_dotenv(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(e.to_string()),
        Err(e) => Err(format!("can't read {}: {e}", path.display())),
    }
}

/// Reads `path` only if it is a regular file (not a link) owned by `uid` and not writable by
/// group or others; otherwise fails with `PermissionDenied` and a message naming the fix.
fn read_trusted(path: &Path, uid: u32) -> io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |why: String| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing {} as uid {uid}: {why}; another user could have written it",
                path.display()
            ),
        )
    };
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(refuse("it is a symbolic link".to_owned()));
        }
        other => other?,
    };
    let meta = file.metadata()?;
    check_dotenv_owner(&meta, uid).map_err(refuse)?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

/// A `.env` is trusted only if it is a regular file of `uid`'s that no one else may write.
fn check_dotenv_owner(meta: &std::fs::Metadata, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return Err("it is not a regular file".to_owned());
    }
    if meta.uid() != uid {
        return Err(format!(
            "it belongs to uid {} (fix: chown {uid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "it is writable by group or others (mode {:04o}; fix: chmod go-w)",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

fn split_sources(list: &str) -> Vec<PathBuf> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// `KEY=VALUE` lines as python-dotenv reads them: blank lines and `#` comments skipped, an
/// `export ` prefix removed, a quoted value taken up to its closing quote, and an unquoted one up
/// to a ` #` comment.
fn parse_dotenv(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (key, value) = line.split_once('=')?;
            Some((key.trim().to_owned(), dotenv_value(value).to_owned()))
        })
        .collect()
}

/// `raw` is everything after the `=`: a `#` counts as a comment only after whitespace.
fn dotenv_value(raw: &str) -> &str {
    let value = raw.trim();
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote)
            && let Some(end) = rest.find(quote)
        {
            return &rest[..end];
        }
    }
    let comment = raw
        .char_indices()
        .find(|&(i, c)| c == '#' && raw[..i].ends_with([' ', '\t']))
        .map_or(raw.len(), |(i, _)| i);
    raw[..comment].trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dotenv_others_could_write_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "BACKUP_SOURCES=/x\n").unwrap();
        let uid = rustix::process::geteuid().as_raw();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_trusted(&path, uid).unwrap(), "BACKUP_SOURCES=/x\n");
        let err = read_trusted(&path, uid + 1).unwrap_err();
        assert!(
            err.to_string().contains(&format!("belongs to uid {uid}")),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
        let err = read_trusted(&path, uid).unwrap_err();
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = read_trusted(&link, uid).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn dotenv_lines_are_read_like_python_dotenv() {
        let vars = parse_dotenv(
            "# comment\n\nBACKUP_SOURCES=/a,/b\nexport BACKUP_DESTINATION=\"/d e\"\nRETENTION_DAYS = 7 \nJUNK\nQ='x'\n",
        );
        assert_eq!(vars["BACKUP_SOURCES"], "/a,/b");
        assert_eq!(vars["BACKUP_DESTINATION"], "/d e");
        assert_eq!(vars["RETENTION_DAYS"], "7");
        assert_eq!(vars["Q"], "x");
        assert!(!vars.contains_key("JUNK"));
    }

    #[test]
    fn inline_comments_end_unquoted_values_only() {
        let vars = parse_dotenv(
            "A=/srv/a # nightly\nB=\"/b # not a comment\" # but this is\nC=x#y\nD='q' #c\nE=\t# only\n",
        );
        assert_eq!(vars["A"], "/srv/a");
        assert_eq!(vars["B"], "/b # not a comment");
        assert_eq!(vars["C"], "x#y");
        assert_eq!(vars["D"], "q");
        assert_eq!(vars["E"], "");
    }

    #[test]
    fn sources_are_split_and_trimmed() {
        assert_eq!(
            split_sources(" docs , /srv/data,,"),
            [PathBuf::from("docs"), PathBuf::from("/srv/data")]
        );
        assert!(split_sources("").is_empty());
    }
}
