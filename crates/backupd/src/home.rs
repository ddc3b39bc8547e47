//! The daemon's home directory and the fixed places inside it.

use proto::paths::{BACKUPS_DIR, LOGS_DIR};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// File name of the schedule file inside the home.
pub const SCHEDULES_FILE: &str = "schedules.json";

/// Paths of everything the daemon owns.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn schedules_file(&self) -> PathBuf {
        self.root.join(SCHEDULES_FILE)
    }

    pub fn backups_dir(&self) -> PathBuf {
        self.root.join(BACKUPS_DIR)
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join(LOGS_DIR)
    }

    /// Creates the home and its folders where missing. New folders are private (0700): the
    /// archives hold copies of the user's data.
    pub fn create_dirs(&self) -> io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for dir in [self.root.clone(), self.backups_dir(), self.logs_dir()] {
            builder.create(&dir).map_err(|e| {
                io::Error::new(e.kind(), format!("can't create {}: {e}", dir.display()))
            })?;
        }
        Ok(())
    }
}
