//! `run`: backs sources up now. Configuration is checked first and a bad one fails the whole
//! run before anything is written; after that each source succeeds or fails on its own.

use super::{HandlerError, HandlerResult};
use crate::engine::{BackupJob, Compression, ExcludeSet};
use crate::events::EventSink;
use crate::runner::{self, RunPlan};
use crate::state::Daemon;
use proto::ErrorCode;
use proto::request::RunArgs;
use proto::response::RunReport;
use proto::schedule_spec::{MAX_NAME_LEN, validate_name};
use std::collections::HashSet;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub async fn handle(
    daemon: &Daemon,
    args: RunArgs,
    events: &EventSink,
) -> HandlerResult<RunReport> {
    let plan = plan(daemon, args)?;
    Ok(runner::execute(daemon, plan, events).await)
}

fn invalid(message: impl Into<String>) -> HandlerError {
    HandlerError::new(ErrorCode::InvalidArguments, message)
}

fn plan(daemon: &Daemon, args: RunArgs) -> HandlerResult<RunPlan> {
    if args.sources.is_empty() {
        return Err(invalid("run needs at least one source"));
    }
    if args.name.is_some() && args.sources.len() > 1 {
        return Err(invalid(
            "a name applies to one source only; run the sources separately to name each",
        ));
    }
    let compression = Compression::parse(args.compression.as_deref().unwrap_or("gzip"), args.level)
        .map_err(|e| invalid(e.to_string()))?;
    let excludes = ExcludeSet::new(&args.exclude).map_err(|e| invalid(e.to_string()))?;
    let destination = match args.destination {
        Some(path) => absolute(&path, "destination")?,
        None => daemon.home.backups_dir(),
    };
    ensure_writable(&destination, args.dry_run)?;

    let timestamp = chrono::Local::now().naive_local();
    let mut names = HashSet::new();
    let mut jobs = Vec::with_capacity(args.sources.len());
    for source in &args.sources {
        let source = absolute(source, "source")?;
        let name = match &args.name {
            Some(name) => {
                validate_name(name).map_err(|e| invalid(e.to_string()))?;
                name.clone()
            }
            None => default_name(&source),
        };
        if !names.insert(name.clone()) {
            return Err(invalid(format!(
                "two sources would both write archives named {name:?}; run them separately with --name"
            )));
        }
        jobs.push(BackupJob {
            source,
            name,
            destination: destination.clone(),
            compression,
            excludes: excludes.clone(),
            timestamp,
        });
    }
    Ok(RunPlan {
        jobs,
        destination,
        dry_run: args.dry_run,
    })
}

fn absolute(path: &str, what: &str) -> HandlerResult<PathBuf> {
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(invalid(format!("{what} must be an absolute path: {path}")))
    }
}

/// The archive name for a source: its folder name, with characters a name may not hold
/// replaced by `_` (`my docs` → `my_docs`).
fn default_name(source: &Path) -> String {
    let folder = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cleaned: String = folder
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed: String = cleaned
        .trim_start_matches('.')
        .chars()
        .take(MAX_NAME_LEN)
        .collect();
    if trimmed.is_empty() {
        "backup".to_owned()
    } else {
        trimmed
    }
}

/// Fails fast, before any source is read, when the destination cannot take archives. A real
/// run creates it when missing (the seed does); a dry run only checks.
fn ensure_writable(destination: &Path, dry_run: bool) -> HandlerResult<()> {
    let refuse = |reason: String| {
        HandlerError::new(
            ErrorCode::DestinationNotWritable,
            format!(
                "Backup destination not writable: {} ({reason})",
                destination.display()
            ),
        )
    };
    let existing = if dry_run {
        destination
            .ancestors()
            .find(|dir| dir.exists())
            .unwrap_or(Path::new("/"))
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(destination)
            .map_err(|e| refuse(e.to_string()))?;
        destination
    };
    if !existing.is_dir() {
        return Err(refuse(format!("{} is not a directory", existing.display())));
    }
    let access = rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK;
    rustix::fs::access(existing, access).map_err(|e| refuse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid_file_names() {
        assert_eq!(default_name(Path::new("/home/me/projects")), "projects");
        assert_eq!(default_name(Path::new("/home/me/my docs")), "my_docs");
        assert_eq!(default_name(Path::new("/home/me/.config")), "config");
        assert_eq!(default_name(Path::new("/")), "backup");
        let long = format!("/{}", "x".repeat(100));
        assert_eq!(default_name(Path::new(&long)).len(), MAX_NAME_LEN);
        for path in ["/a/é", "/a/...", "/srv/data"] {
            let name = default_name(Path::new(path));
            assert!(validate_name(&name).is_ok(), "{path} -> {name}");
        }
    }

    #[test]
    fn a_dry_run_checks_the_destination_without_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a/b");
        assert!(ensure_writable(&missing, true).is_ok());
        assert!(!missing.exists());
        assert!(ensure_writable(&missing, false).is_ok());
        assert!(missing.is_dir());
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let under_file = file.join("dest");
        let err = ensure_writable(&under_file, false).unwrap_err();
        assert_eq!(err.code, ErrorCode::DestinationNotWritable);
        assert!(err.message.starts_with("Backup destination not writable: "));
        assert!(ensure_writable(&under_file, true).is_err());
    }
}
