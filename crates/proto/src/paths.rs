//! Where the daemon's home and socket are: one rule, shared by `backupd` and `backupctl` so
//! that both always meet at the same socket.

use std::path::{Path, PathBuf};

/// Environment variable naming the home directory.
pub const HOME_ENV: &str = "BACKUPD_HOME";
/// Environment variable naming the socket path.
pub const SOCKET_ENV: &str = "BACKUPD_SOCKET";
/// File name of the socket inside the home, when no other path is given.
pub const SOCKET_FILE: &str = "backupd.sock";
/// Folder of the home that holds the archives.
pub const BACKUPS_DIR: &str = "backups";
/// Folder of the home that holds the logs.
pub const LOGS_DIR: &str = "logs";
/// The kernel's `sun_path` holds 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Why the home or socket could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error(
        "can't find a home directory: pass --home DIR, or set {HOME_ENV}, XDG_STATE_HOME or HOME"
    )]
    NoHome,
    #[error(
        "socket path {path} is {len} bytes long, over the kernel limit of {MAX_SOCKET_PATH_BYTES}: \
         pass a shorter --socket PATH (or set {SOCKET_ENV}), or use a shorter home"
    )]
    SocketPathTooLong { path: String, len: usize },
}

/// Environment values the resolution reads; a plain struct so tests need not touch the
/// process environment.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub backupd_home: Option<PathBuf>,
    pub backupd_socket: Option<PathBuf>,
    pub xdg_state_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl Env {
    /// Reads the variables from the process environment; empty values count as unset.
    pub fn from_process() -> Self {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            backupd_home: var(HOME_ENV),
            backupd_socket: var(SOCKET_ENV),
            xdg_state_home: var("XDG_STATE_HOME"),
            home: var("HOME"),
        }
    }
}

/// The home: `--home`, else `BACKUPD_HOME`, else `$XDG_STATE_HOME/backupd`, else
/// `~/.local/state/backupd`.
pub fn resolve_home(flag: Option<&Path>, env: &Env) -> Result<PathBuf, PathError> {
    if let Some(home) = flag.or(env.backupd_home.as_deref()) {
        return Ok(home.to_path_buf());
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(state) = env.xdg_state_home.as_deref().filter(|p| p.is_absolute()) {
        return Ok(state.join("backupd"));
    }
    env.home
        .as_deref()
        .map(|home| home.join(".local/state/backupd"))
        .ok_or(PathError::NoHome)
}

/// The socket: `--socket`, else `BACKUPD_SOCKET`, else `<home>/backupd.sock`; checked against
/// the kernel's length limit so the failure names the path instead of a bare `EINVAL`.
pub fn resolve_socket(flag: Option<&Path>, env: &Env, home: &Path) -> Result<PathBuf, PathError> {
    let socket = flag
        .or(env.backupd_socket.as_deref())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| home.join(SOCKET_FILE));
    check_socket_len(&socket)?;
    Ok(socket)
}

fn check_socket_len(socket: &Path) -> Result<(), PathError> {
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH_BYTES {
        Err(PathError::SocketPathTooLong {
            path: socket.display().to_string(),
            len,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            backupd_home: Some("/env/home".into()),
            backupd_socket: Some("/env/sock".into()),
            xdg_state_home: Some("/xdg".into()),
            home: Some("/home/u".into()),
        }
    }

    #[test]
    fn home_prefers_flag_then_env_then_xdg_then_home() {
        let mut env = env();
        assert_eq!(
            resolve_home(Some(Path::new("/flag")), &env).unwrap(),
            Path::new("/flag")
        );
        assert_eq!(resolve_home(None, &env).unwrap(), Path::new("/env/home"));
        env.backupd_home = None;
        assert_eq!(resolve_home(None, &env).unwrap(), Path::new("/xdg/backupd"));
        env.xdg_state_home = Some("relative".into());
        assert_eq!(
            resolve_home(None, &env).unwrap(),
            Path::new("/home/u/.local/state/backupd")
        );
        env.xdg_state_home = None;
        env.home = None;
        assert_eq!(resolve_home(None, &env), Err(PathError::NoHome));
    }

    #[test]
    fn socket_prefers_flag_then_env_then_home() {
        let mut env = env();
        let home = Path::new("/h");
        assert_eq!(
            resolve_socket(Some(Path::new("/f.sock")), &env, home).unwrap(),
            Path::new("/f.sock")
        );
        assert_eq!(
            resolve_socket(None, &env, home).unwrap(),
            Path::new("/env/sock")
        );
        env.backupd_socket = None;
        assert_eq!(
            resolve_socket(None, &env, home).unwrap(),
            Path::new("/h/backupd.sock")
        );
    }

    #[test]
    fn socket_path_over_the_kernel_limit_is_named_in_the_error() {
        let env = Env::default();
        let home = PathBuf::from(format!("/{}", "d".repeat(100)));
        let err = resolve_socket(None, &env, &home).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&home.display().to_string()), "{message}");
        assert!(message.contains("--socket"), "{message}");
        // Exactly at the limit is fine.
        let at_limit = PathBuf::from(format!("/{}", "s".repeat(MAX_SOCKET_PATH_BYTES - 1)));
        assert!(resolve_socket(Some(&at_limit), &env, &home).is_ok());
    }
}
