//! The `[remote.NAME]` tables of `backupd.toml`, read into [`RemoteConfig`]s. Errors carry the
//! byte span of the offending value so `config` names its line.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::object_lock::LockMode;
use super::{
    MAX_PART_SIZE, MAX_UPLOAD_CONCURRENCY, MIN_PART_SIZE, RemoteConfig, check_bucket,
    check_endpoint, check_prefix, endpoint_text,
};

/// One `[remote.NAME]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteTable {
    endpoint: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    bucket: Spanned<String>,
    prefix: Option<Spanned<String>>,
    virtual_hosted: Option<bool>,
    /// The opposite of `virtual_hosted`, as other tools name it.
    path_style: Option<bool>,
    allow_http: Option<bool>,
    ca_file: Option<Spanned<String>>,
    storage_class: Option<Spanned<String>>,
    part_size: Option<Spanned<Size>>,
    upload_concurrency: Option<Spanned<usize>>,
    connect_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    retries: Option<Spanned<usize>>,
    checksums: Option<bool>,
    credentials_file: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
    object_lock_days: Option<Spanned<u32>>,
    object_lock_mode: Option<Spanned<String>>,
}

/// A byte size: a number, or a string such as `"16MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// What is wrong, and where.
pub type TableError = (Range<usize>, String);

/// The remotes of the file, checked.
pub fn read(
    tables: BTreeMap<String, Spanned<RemoteTable>>,
) -> Result<BTreeMap<String, RemoteConfig>, TableError> {
    let mut remotes = BTreeMap::new();
    for (name, table) in tables {
        let span = table.span();
        if name.is_empty()
            || name.starts_with("s3:")
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err((
                span,
                format!("remote name {name:?}: use letters, digits, '-', '_' and '.'"),
            ));
        }
        let remote = one(&name, table.into_inner())?;
        remotes.insert(name, remote);
    }
    Ok(remotes)
}

fn one(name: &str, table: RemoteTable) -> Result<RemoteConfig, TableError> {
    let at = |span: Range<usize>, reason: String| (span, format!("remote.{name}.{reason}"));
    check_bucket(table.bucket.get_ref())
        .map_err(|r| at(table.bucket.span(), format!("bucket: {r}")))?;
    let prefix = table.prefix.as_ref().map_or("", |p| p.get_ref().as_str());
    if let Some(p) = &table.prefix {
        check_prefix(p.get_ref()).map_err(|r| at(p.span(), format!("prefix: {r}")))?;
    }
    let mut remote = RemoteConfig::new(name, table.bucket.get_ref(), prefix);
    if let Some(endpoint) = table.endpoint {
        let url = check_endpoint(endpoint.get_ref())
            .map_err(|r| at(endpoint.span(), format!("endpoint: {r}")))?;
        if url.scheme() == "http" && table.allow_http != Some(true) {
            return Err(at(
                endpoint.span(),
                "endpoint: plain http:// needs allow_http = true (for a local server only)".into(),
            ));
        }
        remote.endpoint = Some(endpoint_text(&url));
    }
    if let Some(region) = table.region {
        if region.get_ref().is_empty() {
            return Err(at(region.span(), "region: must not be empty".into()));
        }
        remote.region = region.into_inner();
    }
    match (table.virtual_hosted, table.path_style) {
        (Some(v), Some(p)) if v == p => {
            return Err(at(
                table.bucket.span(),
                "virtual_hosted and path_style contradict each other".into(),
            ));
        }
        (Some(v), _) => remote.virtual_hosted = v,
        (None, Some(p)) => remote.virtual_hosted = !p,
        (None, None) => {}
    }
    remote.allow_http = table.allow_http.unwrap_or(false);
    remote.checksums = table.checksums.unwrap_or(true);
    if let Some(ca) = table.ca_file {
        if !ca.get_ref().starts_with('/') {
            return Err(at(ca.span(), "ca_file: must be an absolute path".into()));
        }
        remote.ca_file = Some(PathBuf::from(ca.into_inner()));
    }
    if let Some(class) = table.storage_class {
        if class.get_ref().is_empty() {
            return Err(at(class.span(), "storage_class: must not be empty".into()));
        }
        remote.storage_class = Some(class.into_inner());
    }
    if let Some(size) = table.part_size {
        let span = size.span();
        let bytes = match size.into_inner() {
            Size::Bytes(bytes) => Some(bytes),
            Size::Text(text) => parse_size(&text),
        };
        remote.part_size = bytes
            .filter(|b| (MIN_PART_SIZE..=MAX_PART_SIZE).contains(b))
            .ok_or_else(|| {
                at(
                    span,
                    "part_size: must be between 5MiB and 5GiB (a number of bytes or e.g. \"16MiB\")"
                        .into(),
                )
            })?;
    }
    if let Some(n) = table.upload_concurrency {
        if !(1..=MAX_UPLOAD_CONCURRENCY).contains(n.get_ref()) {
            return Err(at(
                n.span(),
                format!("upload_concurrency: must be between 1 and {MAX_UPLOAD_CONCURRENCY}"),
            ));
        }
        remote.upload_concurrency = n.into_inner();
    }
    for (key, value, slot) in [
        (
            "connect_timeout",
            table.connect_timeout,
            &mut remote.connect_timeout,
        ),
        (
            "request_timeout",
            table.request_timeout,
            &mut remote.request_timeout,
        ),
    ] {
        if let Some(value) = value {
            *slot = parse_timeout(value.get_ref()).ok_or_else(|| {
                at(
                    value.span(),
                    format!(
                        "{key}: invalid duration {:?}: use a number above 0 with s, m or h",
                        value.get_ref()
                    ),
                )
            })?;
        }
    }
    if let Some(retries) = table.retries {
        if *retries.get_ref() > 20 {
            return Err(at(retries.span(), "retries: at most 20".into()));
        }
        remote.retries = retries.into_inner();
    }
    if let Some(file) = table.credentials_file {
        if !file.get_ref().starts_with('/') {
            return Err(at(
                file.span(),
                "credentials_file: must be an absolute path".into(),
            ));
        }
        remote.credentials_file = Some(PathBuf::from(file.into_inner()));
    }
    if let Some(profile) = table.profile {
        if remote.credentials_file.is_none() {
            return Err(at(profile.span(), "profile: needs credentials_file".into()));
        }
        remote.profile = Some(profile.into_inner());
    }
    if let Some(days) = table.object_lock_days {
        if *days.get_ref() == 0 {
            return Err(at(
                days.span(),
                "object_lock_days: must be at least 1".into(),
            ));
        }
        remote.object_lock_days = Some(days.into_inner());
    }
    if let Some(mode) = table.object_lock_mode {
        if remote.object_lock_days.is_none() {
            return Err(at(
                mode.span(),
                "object_lock_mode: needs object_lock_days".into(),
            ));
        }
        remote.object_lock_mode = LockMode::parse(mode.get_ref()).ok_or_else(|| {
            at(
                mode.span(),
                format!(
                    "object_lock_mode: {:?} is neither \"governance\" nor \"compliance\"",
                    mode.get_ref()
                ),
            )
        })?;
    }
    Ok(remote)
}

fn parse_timeout(text: &str) -> Option<Duration> {
    crate::timing::parse_duration(text)
        .ok()
        .and_then(|d| d.to_std().ok())
        .filter(|d| !d.is_zero())
}

/// `"16MiB"`, `"16M"`, `"1GiB"`, `"5242880"`.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "KB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        "G" | "GiB" | "GB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[remote.x]` table with `endpoint`: its endpoint as stored, or the error, whose
    /// span must be the value's.
    fn endpoint_of(endpoint: &str) -> Result<Option<String>, String> {
        #[derive(Deserialize)]
        struct File {
            remote: BTreeMap<String, Spanned<RemoteTable>>,
        }
        // A JSON string is a TOML basic string, escapes included.
        let literal = serde_json::to_string(endpoint).unwrap();
        let text =
            format!("[remote.x]\nbucket = \"bkt\"\nallow_http = true\nendpoint = {literal}\n");
        let file: File = toml::from_str(&text).unwrap();
        match read(file.remote) {
            Ok(remotes) => Ok(remotes["x"].endpoint.clone()),
            Err((span, reason)) => {
                assert_eq!(text[span].trim(), literal, "{reason}");
                Err(reason)
            }
        }
    }

    #[test]
    fn an_endpoint_must_be_a_url_object_store_can_send_to() {
        for (endpoint, reason) in [
            ("https://exa mple.com", "must not contain spaces"),
            ("https://exa\tmple.com", "must not contain spaces"),
            ("https://", "is not a URL: empty host"),
            ("https://[::1", "is not a URL: invalid IPv6 address"),
            ("https://host:99999", "is not a URL: invalid port number"),
            ("https://host/?x=1", "no query or fragment"),
            ("https://host/#x", "no query or fragment"),
            ("ftp://host", "must start with https://"),
        ] {
            let err = endpoint_of(endpoint).unwrap_err();
            assert!(
                err.starts_with(&format!("remote.x.endpoint: {endpoint:?} ")),
                "{endpoint}: {err}"
            );
            assert!(err.contains(reason), "{endpoint}: {err}");
        }
        // Refused without showing the password.
        for endpoint in [
            "https://user:Secret9@host",
            "https://AKIA@host",
            "https://u:Secret9@exa mple.com/p",
        ] {
            let err = endpoint_of(endpoint).unwrap_err();
            assert!(
                err.starts_with("remote.x.endpoint: must not hold a user or password"),
                "{err}"
            );
            assert!(!err.contains("Secret9") && !err.contains("AKIA"), "{err}");
        }
        // An `@` in the path is no user.
        assert!(endpoint_of("https://host/a@b").is_ok());
        // Kept as the URL parser writes it, so object_store gets what it can send.
        for (endpoint, stored) in [
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            (
                "https://minio.example.net:9000/",
                "https://minio.example.net:9000",
            ),
            ("https://Example.NET/minio/", "https://example.net/minio"),
            ("https://[::1]:9000", "https://[::1]:9000"),
            ("https://example.net/a<b>", "https://example.net/a%3Cb%3E"),
        ] {
            assert_eq!(
                endpoint_of(endpoint).unwrap().as_deref(),
                Some(stored),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn object_store_sends_to_an_accepted_endpoint_instead_of_panicking() {
        use crate::remote::test_server::ports::refusing_port;
        use crate::remote::{CredentialSource, Credentials, ResolvedRemote};
        use object_store::ObjectStoreExt;

        let closed = refusing_port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for path in ["", "/", "/minio", "/a<b>`c", "/%7B%7D", "/ü"] {
            let endpoint = format!("http://127.0.0.1:{}{path}", closed.port);
            let mut config = RemoteConfig::new("x", "bkt", "p");
            config.endpoint = endpoint_of(&endpoint).unwrap();
            config.allow_http = true;
            config.retries = 0;
            let remote = ResolvedRemote {
                config,
                source: CredentialSource::Environment,
                credentials: Some(Credentials {
                    key_id: "k".into(),
                    secret_key: "s".into(),
                    token: None,
                }),
            };
            let store = crate::remote::store::build(&remote).unwrap();
            let path = object_store::path::Path::from("p/f");
            // A panic here fails the test; the refused connection is the expected answer.
            let err = runtime.block_on(store.head(&path)).unwrap_err();
            assert!(!err.to_string().contains("panic"), "{endpoint}: {err}");
        }
    }

    #[test]
    fn sizes_read_with_binary_units() {
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("5M"), Some(5 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("5242880"), Some(5_242_880));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5 parsecs"), None);
    }
}
