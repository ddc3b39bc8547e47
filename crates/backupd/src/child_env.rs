//! What the commands backupd starts (hooks, command sources) inherit: its environment less the
//! secrets it reads there itself, with `GLIBC_TUNABLES` as the user set it (see
//! [`crate::allocator`]). The README promises those are never logged, and a hook that
//! prints its environment, or a tool that does so on error, would put them in the log or in an
//! archive. Everything else (`PGPASSWORD` for a dump, say) is the user's to pass on.

use std::sync::OnceLock;

/// Where the daemon reads S3 credentials from, as the AWS tools do.
const AWS_SECRETS: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// The variable `[email] password_env` names, once the configuration is read.
static EMAIL_PASSWORD: OnceLock<String> = OnceLock::new();

/// Withholds `name` too from every command started from now on (set once, at start).
pub fn withhold(name: &str) {
    let _ = EMAIL_PASSWORD.set(name.to_owned());
}

/// Makes `command`'s environment what a command of the daemon's inherits.
pub fn prepare(command: &mut std::process::Command) {
    for name in withheld() {
        command.env_remove(name);
    }
    use crate::allocator::{TUNABLES, USERS_TUNABLES};
    if let Some(users) = std::env::var_os(USERS_TUNABLES) {
        command.env_remove(USERS_TUNABLES);
        if users.is_empty() {
            command.env_remove(TUNABLES);
        } else {
            command.env(TUNABLES, users);
        }
    }
}

/// The variables commands must not inherit.
fn withheld() -> impl Iterator<Item = &'static str> {
    AWS_SECRETS
        .into_iter()
        .chain(EMAIL_PASSWORD.get().map(String::as_str))
}
