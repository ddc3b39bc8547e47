//! The original backup script's configuration variables (`BACKUP_SOURCES`,
//! `BACKUP_DESTINATION`, `LOG_LEVEL`, …), read from the environment and from a `.env` file in the working directory. A variable set
//! in the environment wins over `.env`, as with python-dotenv; command-line flags win over both.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

pub const SOURCES: &str = "BACKUP_SOURCES";
pub const DESTINATION: &str = "BACKUP_DESTINATION";
pub const LOG_LEVEL: &str = "LOG_LEVEL";
pub const RETENTION_DAYS: &str = "RETENTION_DAYS";
pub const MIN_BACKUPS_TO_KEEP: &str = "MIN_BACKUPS_TO_KEEP";

#[derive(Debug, Default)]
pub struct Settings {
    dotenv: HashMap<String, String>,
}

impl Settings {
    /// Reads `<dir>/.env` if there is one.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join(".env");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Self {
                dotenv: parse_dotenv(&text),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("can't read {}: {e}", path.display())),
        }
    }

    /// The variable's value: the environment first, then `.env`; empty counts as unset.
    pub fn get(&self, key: &str) -> Option<String> {
        std::env::var(key)
            .ok()
            .or_else(|| self.dotenv.get(key).cloned())
            .filter(|value| !value.trim().is_empty())
    }

    /// A whole-number variable, such as `RETENTION_DAYS`.
    pub fn number(&self, key: &str) -> Result<Option<u32>, String> {
        self.get(key)
            .map(|value| {
                value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{key} must be a whole number, not {value:?}"))
            })
            .transpose()
    }

    /// `BACKUP_SOURCES` as absolute paths (relative ones taken from `cwd`).
    pub fn sources(&self, cwd: &Path) -> Vec<PathBuf> {
        split_sources(self.get(SOURCES).as_deref().unwrap_or_default(), cwd)
    }
}

fn split_sources(list: &str, cwd: &Path) -> Vec<PathBuf> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| cwd.join(s))
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
    fn sources_are_split_trimmed_and_made_absolute() {
        assert_eq!(
            split_sources(" docs , /srv/data,,", Path::new("/home/me")),
            [PathBuf::from("/home/me/docs"), PathBuf::from("/srv/data")]
        );
        assert!(split_sources("", Path::new("/")).is_empty());
    }
}
