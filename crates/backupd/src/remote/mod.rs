//! Offsite remotes: S3-compatible object stores that backup sets are copied to. A remote is
//! named by a `[remote.NAME]` table of `backupd.toml` or given directly as `s3://BUCKET/PREFIX`
//! (defaults, and the `AWS_*` environment); [`resolve`] turns either into a [`ResolvedRemote`],
//! whose [`store`] builds the client. Credentials are read at resolve time and never stored,
//! logged or shown: [`credentials::Credentials`] redacts itself.
//!
//! ```toml
//! [remote.offsite]
//! endpoint = "https://s3.eu-central-1.amazonaws.com"   # default: AWS from the region
//! region = "eu-central-1"
//! bucket = "my-backups"
//! prefix = "laptop"             # objects go to <bucket>/<prefix>/<archive>
//! virtual_hosted = false        # path-style by default (MinIO, Ceph, s3s, Garage)
//! allow_http = false            # true only for a local server over plain http
//! ca_file = "/etc/ssl/my-ca.pem"
//! storage_class = "STANDARD_IA"
//! part_size = "16MiB"           # first part size; grows so 10,000 parts are never exceeded
//! upload_concurrency = 4        # parts in flight at once
//! connect_timeout = "10s"
//! request_timeout = "5m"
//! retries = 5
//! checksums = true              # SHA-256 of every part and object, checked by the server
//! credentials_file = "/etc/backupd/aws-credentials"
//! profile = "backup"
//! object_lock_days = 30         # retention of each uploaded object (bucket with object lock)
//! object_lock_mode = "governance"   # or "compliance"
//! ```

pub mod credentials;
pub mod object_lock;
pub mod signed;
pub mod stale_uploads;
pub mod store;
pub mod table;
#[cfg(test)]
pub mod test_server;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

pub use credentials::Credentials;

/// The smallest part S3 accepts (but for the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Default size of the first parts of a multipart upload.
pub const DEFAULT_PART_SIZE: u64 = 16 * 1024 * 1024;
/// Default number of parts in flight.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 4;
/// Most parts in flight that a remote may ask for.
pub const MAX_UPLOAD_CONCURRENCY: usize = 64;
/// Default region when neither the config nor `AWS_REGION` names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// One remote's settings, checked. Holds no secret: credentials are read by [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// The table's name, or the `s3://…` spec it was given as.
    pub name: String,
    /// `None`: AWS, from the region.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// Virtual-hosted-style requests (`BUCKET.host`); path-style otherwise.
    pub virtual_hosted: bool,
    pub allow_http: bool,
    /// Extra root certificates (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    pub storage_class: Option<String>,
    /// Size of the first parts; see [`store::part_size_for`].
    pub part_size: u64,
    pub upload_concurrency: usize,
    pub connect_timeout: Duration,
    /// One HTTP request, a part's upload included.
    pub request_timeout: Duration,
    /// Retries of one request (5xx, SlowDown, timeouts), with exponential backoff.
    pub retries: usize,
    /// Send each part's and object's SHA-256 (`x-amz-checksum-sha256`) for the server to
    /// check; off only for a server that rejects the header.
    pub checksums: bool,
    /// A file in the `~/.aws/credentials` format, used when the environment has no keys.
    pub credentials_file: Option<PathBuf>,
    /// Its section; default `default`.
    pub profile: Option<String>,
    /// Object lock retention for uploaded objects, in days.
    pub object_lock_days: Option<u32>,
    /// The retention's mode (with `object_lock_days`).
    pub object_lock_mode: object_lock::LockMode,
}

impl RemoteConfig {
    /// A remote with every default, for `bucket` and `prefix`.
    pub fn new(name: &str, bucket: &str, prefix: &str) -> Self {
        Self {
            name: name.to_owned(),
            endpoint: None,
            region: DEFAULT_REGION.to_owned(),
            bucket: bucket.to_owned(),
            prefix: normalize_prefix(prefix),
            virtual_hosted: false,
            allow_http: false,
            ca_file: None,
            storage_class: None,
            part_size: DEFAULT_PART_SIZE,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
            retries: 5,
            checksums: true,
            credentials_file: None,
            profile: None,
            object_lock_days: None,
            object_lock_mode: object_lock::LockMode::default(),
        }
    }

    /// Where this remote's objects are, as reports show it: `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Why a remote cannot be used. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("unknown remote {0:?}: define [remote.{0}] in backupd.toml or give s3://BUCKET/PREFIX")]
    Unknown(String),
    #[error("invalid remote {spec:?}: {reason}")]
    Invalid { spec: String, reason: String },
    #[error("remote {remote}: {reason}")]
    Credentials { remote: String, reason: String },
    #[error("remote {remote}: {reason}")]
    Client { remote: String, reason: String },
}

/// Where the credentials of a remote come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`).
    Environment,
    /// A credentials file and profile.
    File { path: PathBuf, profile: String },
    /// Nothing given: object_store asks the instance metadata service, at
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT` if set (as the AWS SDKs do), else 169.254.169.254.
    InstanceMetadata { endpoint: Option<String> },
}

/// A remote ready to build a client for: its settings and its credentials.
#[derive(Debug, Clone)]
pub struct ResolvedRemote {
    pub config: RemoteConfig,
    pub source: CredentialSource,
    /// `None` for the instance metadata.
    pub credentials: Option<Credentials>,
}

/// `s3://BUCKET[/PREFIX]` with defaults and the environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ALLOW_HTTP`), or a remote named in the configuration.
pub fn resolve(
    spec: &str,
    remotes: &BTreeMap<String, RemoteConfig>,
) -> Result<ResolvedRemote, RemoteError> {
    let config = match spec.strip_prefix("s3://") {
        Some(rest) => direct(spec, rest)?,
        None => remotes
            .get(spec)
            .cloned()
            .ok_or_else(|| RemoteError::Unknown(spec.to_owned()))?,
    };
    let (source, credentials) = credentials::resolve(&config)?;
    Ok(ResolvedRemote {
        config,
        source,
        credentials,
    })
}

/// The `s3://BUCKET/PREFIX` that `spec` names, as [`resolve`] reads it, without reading any
/// credentials; `None` when it names none.
pub fn url_of(spec: &str, remotes: &BTreeMap<String, RemoteConfig>) -> Option<String> {
    match spec.strip_prefix("s3://") {
        Some(rest) => direct(spec, rest).ok().map(|config| config.url()),
        None => remotes.get(spec).map(RemoteConfig::url),
    }
}

/// Whether `spec` is one that [`resolve`] may accept without reading anything.
pub fn check_spec(spec: &str, remotes: &BTreeMap<String, RemoteConfig>) -> Result<(), RemoteError> {
    match spec.strip_prefix("s3://") {
        Some(rest) => direct(spec, rest).map(|_| ()),
        None if remotes.contains_key(spec) => Ok(()),
        None => Err(RemoteError::Unknown(spec.to_owned())),
    }
}

fn direct(spec: &str, rest: &str) -> Result<RemoteConfig, RemoteError> {
    direct_with(spec, rest, |key| {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    })
}

/// [`direct`] with the environment given, for the tests.
fn direct_with(
    spec: &str,
    rest: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<RemoteConfig, RemoteError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    check_bucket(bucket).map_err(|reason| RemoteError::Invalid {
        spec: spec.to_owned(),
        reason,
    })?;
    check_prefix(prefix).map_err(|reason| RemoteError::Invalid {
        spec: spec.to_owned(),
        reason,
    })?;
    let mut config = RemoteConfig::new(spec, bucket, prefix);
    if let Some(endpoint) = env("AWS_ENDPOINT_URL") {
        let url = check_endpoint(&endpoint).map_err(|reason| RemoteError::Invalid {
            spec: spec.to_owned(),
            reason: format!("AWS_ENDPOINT_URL: {reason}"),
        })?;
        config.endpoint = Some(endpoint_text(&url));
    }
    if let Some(region) = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
        config.region = region;
    }
    config.allow_http = env("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Ok(config)
}

/// A bucket name as S3 takes it: 3 to 63 lowercase letters, digits, `.` and `-`.
pub fn check_bucket(bucket: &str) -> Result<(), String> {
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-']);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "bucket {bucket:?} is not a valid bucket name (3 to 63 lowercase letters, digits, . and -)"
        ))
    }
}

/// A prefix of plain path segments: no `.`/`..` segment, no control characters.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let normalized = normalize_prefix(prefix);
    let bad_segment = normalized
        .split('/')
        .any(|s| !normalized.is_empty() && (s.is_empty() || s == "." || s == ".."));
    if bad_segment || prefix.chars().any(char::is_control) || prefix.len() > 512 {
        return Err(format!(
            "prefix {prefix:?} must be plain path segments (no empty, . or .. segment)"
        ));
    }
    Ok(())
}

/// An endpoint object_store can build requests on (it panics on a URL it cannot): an
/// `https://` or `http://` URL with a host, and a port or a path if need be. No user info
/// (the file holds no secret), query or fragment. The caller checks `allow_http`.
pub fn check_endpoint(text: &str) -> Result<Url, String> {
    if !(text.starts_with("https://") || text.starts_with("http://")) {
        return Err(format!("{text:?} must start with https:// (or http://)"));
    }
    // Said without the text, which would show the password.
    let authority = text.split_once("://").map_or("", |(_, rest)| {
        rest.split(['/', '\\', '?', '#']).next().unwrap_or("")
    });
    if authority.contains('@') {
        return Err(USER_INFO.to_owned());
    }
    // The URL parser would drop tabs and newlines silently, and encode spaces in a path.
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{text:?} must not contain spaces or control characters"
        ));
    }
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(USER_INFO.to_owned());
    }
    if text.contains(['?', '#']) {
        return Err(format!(
            "{text:?} must have no query or fragment (a path is fine)"
        ));
    }
    Ok(url)
}

const USER_INFO: &str = "must not hold a user or password: give credentials by \
    credentials_file or the environment";

/// `url` as the remote's endpoint: as the URL parser writes it (percent-encoded, which
/// object_store needs), without a trailing `/`.
pub fn endpoint_text(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

fn normalize_prefix(prefix: &str) -> String {
    prefix.trim_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_spec_resolves_to_defaults_and_a_name_to_its_table() {
        let direct = direct_with("s3://my-bucket/a/b/", "my-bucket/a/b/", |_| None).unwrap();
        assert_eq!(direct.bucket, "my-bucket");
        assert_eq!(direct.prefix, "a/b");
        assert_eq!(direct.url(), "s3://my-bucket/a/b");
        assert_eq!(direct.part_size, DEFAULT_PART_SIZE);
        assert!(!direct.virtual_hosted);
        let bare = direct_with("s3://bkt", "bkt", |_| None).unwrap();
        assert_eq!(bare.prefix, "");
        assert_eq!(bare.url(), "s3://bkt");
        let mut remotes = BTreeMap::new();
        remotes.insert("off".to_owned(), RemoteConfig::new("off", "bkt", "p"));
        assert!(check_spec("off", &remotes).is_ok());
        assert!(matches!(
            check_spec("nope", &remotes),
            Err(RemoteError::Unknown(_))
        ));
        for bad in [
            "s3://",
            "s3://B",
            "s3://ab",
            "s3://bkt/a/../b",
            "s3://bkt/a//b",
        ] {
            assert!(check_spec(bad, &remotes).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_direct_spec_takes_an_endpoint_from_the_environment_only_if_it_is_a_url() {
        let with = |endpoint: &'static str| {
            direct_with("s3://bkt/p", "bkt/p", move |key| {
                (key == "AWS_ENDPOINT_URL").then(|| endpoint.to_owned())
            })
        };
        let config = with("http://127.0.0.1:9000/").unwrap();
        assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        for bad in ["https://exa mple.com", "https://"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "invalid remote \"s3://bkt/p\": AWS_ENDPOINT_URL: {bad:?} "
                )),
                "{err}"
            );
        }
        let err = with("https://key:Secret9@host").unwrap_err().to_string();
        assert!(err.contains("must not hold a user or password"), "{err}");
        assert!(!err.contains("Secret9"), "{err}");
    }
}
