//! Where a notification goes, read from a `--notify` URL: the scheme's prefix says the kind
//! (`hc+https://…` a healthchecks.io check, `ntfy+https://…` an ntfy topic, a bare
//! `http(s)://…` a webhook that gets the outcome as JSON). URLs may hold tokens, so only
//! [`Target::shown`] (scheme and host) ever reaches a log line or an error.

use reqwest::Url;

/// The kinds of notification URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A JSON POST of the job's outcome.
    Webhook,
    /// healthchecks.io pings: `/start`, the URL itself on success, `/fail` with the error.
    Healthchecks,
    /// An ntfy message to the topic, with title, priority and tags.
    Ntfy,
}

/// A checked notification URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    /// The URL requests go to, without the kind's prefix.
    pub url: Url,
}

/// Why a `--notify` value is not a notification URL; never holds the URL itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "invalid notify URL: use http(s)://… (webhook), hc+http(s)://… (healthchecks) or \
         ntfy+http(s)://… (ntfy){0}"
    )]
    Invalid(String),
}

impl Target {
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        let (kind, rest) = if let Some(rest) = text.strip_prefix("hc+") {
            (Kind::Healthchecks, rest)
        } else if let Some(rest) = text.strip_prefix("ntfy+") {
            (Kind::Ntfy, rest)
        } else {
            (Kind::Webhook, text)
        };
        let url = Url::parse(rest).map_err(|e| TargetError::Invalid(format!(" ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError::Invalid(format!(
                " (scheme {:?})",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(TargetError::Invalid(" (no host)".into()));
        }
        Ok(Self { kind, url })
    }

    /// What logs may say of the target: its kind, scheme and host (paths, user names,
    /// passwords and queries can be secrets).
    pub fn shown(&self) -> String {
        let kind = match self.kind {
            Kind::Webhook => "webhook",
            Kind::Healthchecks => "healthchecks",
            Kind::Ntfy => "ntfy",
        };
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{kind} {}://{host}:{port}", self.url.scheme()),
            None => format!("{kind} {}://{host}", self.url.scheme()),
        }
    }

    /// The URL with `suffix` appended to its path (`/start`, `/fail` for healthchecks).
    pub fn with_path_suffix(&self, suffix: &str) -> Url {
        let mut url = self.url.clone();
        let path = format!("{}/{suffix}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }
}

/// Only the shown form: a `{:?}` of a plan must not print a token either.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_names_the_kind() {
        let hc = Target::parse("hc+https://hc-ping.com/0a1b-uuid").unwrap();
        assert_eq!(hc.kind, Kind::Healthchecks);
        assert_eq!(hc.url.as_str(), "https://hc-ping.com/0a1b-uuid");
        assert_eq!(
            hc.with_path_suffix("start").as_str(),
            "https://hc-ping.com/0a1b-uuid/start"
        );
        let ntfy = Target::parse("ntfy+http://127.0.0.1:8080/backups").unwrap();
        assert_eq!(ntfy.kind, Kind::Ntfy);
        assert_eq!(ntfy.url.as_str(), "http://127.0.0.1:8080/backups");
        let hook = Target::parse("https://example.org/hook?token=s3cret").unwrap();
        assert_eq!(hook.kind, Kind::Webhook);
    }

    #[test]
    fn logs_see_scheme_and_host_only() {
        let hook = Target::parse("https://user:pw@example.org:8443/t0ken?k=s3cret").unwrap();
        assert_eq!(hook.shown(), "webhook https://example.org:8443");
        assert_eq!(format!("{hook:?}"), hook.shown());
    }

    #[test]
    fn other_schemes_and_garbage_are_refused_without_echoing_the_url() {
        for bad in [
            "ftp://example.org/x",
            "hc+ftp://example.org/x",
            "example.org/hook",
            "ntfy+",
            "file:///etc/passwd",
            "",
        ] {
            let err = Target::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid notify URL"), "{bad}: {err}");
            // "ntfy+" alone is in the message as the kind it names.
            if bad.len() > "ntfy+".len() {
                assert!(!err.contains(bad), "{bad}: {err}");
            }
        }
    }
}
