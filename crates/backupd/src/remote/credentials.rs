//! A remote's credentials: the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), else the credentials file the remote names (the `~/.aws/credentials`
//! format, one profile), else none, and object_store asks the instance metadata service
//! (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, or its usual address).
//!
//! The file is trusted like the daemon's own: opened without following a symlink, a regular
//! file owned by root or the daemon's user that neither group nor others may read or write
//! (`fsutil::read_secret`). Secrets never appear in a `Debug` output or an error message.

use std::fmt;
use std::path::Path;

use super::{CredentialSource, RemoteConfig, RemoteError};

/// Bound on a credentials file: it holds a few keys.
const MAX_FILE: u64 = 1 << 20;

/// An access key, its secret and maybe a session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub key_id: String,
    pub secret_key: String,
    pub token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key id names the account only; the secret and token stay out.
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .field("secret_key", &"<redacted>")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where `remote`'s credentials come from, and what they are.
pub fn resolve(
    remote: &RemoteConfig,
) -> Result<(CredentialSource, Option<Credentials>), RemoteError> {
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    if let (Some(key_id), Some(secret_key)) =
        (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        let token = env("AWS_SESSION_TOKEN");
        return Ok((
            CredentialSource::Environment,
            Some(Credentials {
                key_id,
                secret_key,
                token,
            }),
        ));
    }
    let Some(path) = &remote.credentials_file else {
        let endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
        return Ok((CredentialSource::InstanceMetadata { endpoint }, None));
    };
    let profile = remote.profile.clone().unwrap_or_else(|| "default".into());
    let fail = |reason: String| RemoteError::Credentials {
        remote: remote.name.clone(),
        reason,
    };
    let text = read_secret(path)
        .map_err(|reason| fail(format!("credentials file {}: {reason}", path.display())))?;
    let credentials = parse_profile(&text, &profile).map_err(|reason| {
        fail(format!(
            "credentials file {}, profile {profile:?}: {reason}",
            path.display()
        ))
    })?;
    Ok((
        CredentialSource::File {
            path: path.clone(),
            profile,
        },
        Some(credentials),
    ))
}

/// The file's text, if it is one the daemon may trust with secrets.
fn read_secret(path: &Path) -> Result<String, String> {
    crate::fsutil::read_secret(path, crate::fsutil::Links::Refuse, MAX_FILE)
        .map_err(|e| e.to_string())
}

/// The keys of `[profile]` in the INI text of a credentials file. Errors name keys, never
/// values.
pub fn parse_profile(text: &str, profile: &str) -> Result<Credentials, String> {
    let mut in_profile = false;
    let mut found = false;
    let (mut key_id, mut secret_key, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            // The config-file form `[profile NAME]` is accepted too.
            let name = section.strip_prefix("profile ").unwrap_or(section).trim();
            in_profile = name == profile;
            found |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().to_owned();
        match key.trim() {
            "aws_access_key_id" => key_id = Some(value),
            "aws_secret_access_key" => secret_key = Some(value),
            "aws_session_token" => token = Some(value),
            _ => {}
        }
    }
    if !found {
        return Err("no such profile".into());
    }
    match (key_id, secret_key) {
        (Some(key_id), Some(secret_key)) if !key_id.is_empty() && !secret_key.is_empty() => {
            Ok(Credentials {
                key_id,
                secret_key,
                token: token.filter(|t| !t.is_empty()),
            })
        }
        _ => Err("needs aws_access_key_id and aws_secret_access_key".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const FILE: &str = "# comment\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key = sdef\n\n\
                        [backup]\naws_access_key_id=AKBAK\naws_secret_access_key= sbak \n\
                        aws_session_token = tok\n";

    #[test]
    fn a_profile_is_read_and_debug_hides_the_secret() {
        let creds = parse_profile(FILE, "backup").unwrap();
        assert_eq!(creds.key_id, "AKBAK");
        assert_eq!(creds.secret_key, "sbak");
        assert_eq!(creds.token.as_deref(), Some("tok"));
        let shown = format!("{creds:?}");
        assert!(
            !shown.contains("sbak") && !shown.contains("tok\""),
            "{shown}"
        );
        assert_eq!(parse_profile(FILE, "default").unwrap().key_id, "AKDEF");
        assert_eq!(parse_profile(FILE, "nope").unwrap_err(), "no such profile");
        let partial = parse_profile("[x]\naws_access_key_id = A\n", "x").unwrap_err();
        assert!(partial.contains("aws_secret_access_key"));
    }

    #[test]
    fn a_file_others_may_write_or_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(&path, FILE).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_secret(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
        let err = read_secret(&path).unwrap_err();
        assert!(err.contains("writable by group or others"), "{err}");
        assert!(!err.contains("sbak"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_secret(&link).unwrap_err().contains("symlink"));
    }

    #[test]
    fn a_file_group_or_others_may_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(&path, FILE).unwrap();
        // Group-readable too: a secret is the daemon user's alone, as ssh wants private keys.
        for mode in [0o644, 0o640] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_secret(&path).unwrap_err();
            assert!(err.contains("readable by group or others"), "{err}");
            assert!(err.contains("chmod 600"), "{err}");
            assert!(!err.contains("sbak"));
        }
    }
}
