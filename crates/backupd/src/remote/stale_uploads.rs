//! Stale multipart uploads: an upload cut short by a crash (SIGKILL, power loss) stays on the
//! server, invisible but stored (and billed), until it is aborted. At start the daemon lists
//! the uploads under each configured remote's prefix and aborts those of archives named
//! before it started: archive names carry the second they were made, so an upload of one of
//! this daemon's own runs is never touched, whatever the server's clock says.
//!
//! object_store cannot list multipart uploads, so `ListMultipartUploads` and the abort are
//! requests of [`super::signed`] (SigV4 with the credentials object_store's client resolved,
//! sent with reqwest). A server without the call (s3s-fs) answers `NotImplemented`: nothing
//! to do there.

use std::sync::Arc;

use chrono::NaiveDateTime;
use object_store::aws::AmazonS3;
use reqwest::Method;

use super::signed::{Answer, SignedClient, SignedError, blocks, element};
use super::{RemoteError, ResolvedRemote};
use crate::format::TIMESTAMP_FORMAT;
use crate::format::naming::parse_archive_name;
use crate::state::Daemon;

/// Bound on listing pages (1,000 uploads each): a runaway listing stops there.
const MAX_PAGES: usize = 100;

/// Why the uploads of a remote could not be swept. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The server does not list multipart uploads.
    #[error("the server does not list multipart uploads")]
    NotSupported,
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{0}")]
    Request(String),
}

/// One multipart upload in progress, as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
}

/// Sweeps every configured remote on a task of its own, so that a slow or unreachable
/// server delays nothing; each outcome is logged.
pub fn spawn(daemon: &Arc<Daemon>) {
    let started = daemon.started.0.naive_local();
    for name in daemon.remotes.keys() {
        let (name, daemon) = (name.clone(), Arc::clone(daemon));
        tokio::spawn(async move {
            let remotes = Arc::clone(&daemon.remotes);
            let spec = name.clone();
            // Credentials and a CA file are read from disk.
            let resolved = tokio::task::spawn_blocking(move || {
                let resolved = super::resolve(&spec, &remotes)?;
                let store = super::store::build(&resolved)?;
                Ok::<_, RemoteError>((resolved, store))
            })
            .await;
            let outcome = match resolved {
                Ok(Ok((resolved, store))) => abort_stale(&resolved, &store, started).await,
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(SweepError::Request(format!("internal error: {e}"))),
            };
            match outcome {
                Ok(aborted) => {
                    for key in aborted {
                        tracing::info!("Aborted a stale upload of {key} on remote {name}");
                    }
                }
                Err(SweepError::NotSupported) => tracing::info!(
                    "remote {name}: the server does not list multipart uploads; none swept"
                ),
                Err(e) => tracing::warn!("can't sweep stale uploads on remote {name}: {e}"),
            }
        });
    }
}

/// Aborts the uploads under `remote`'s prefix of archives named before `started`; returns
/// their keys. Other uploads (a newer archive's, a stranger's) stay.
pub async fn abort_stale(
    remote: &ResolvedRemote,
    store: &AmazonS3,
    started: NaiveDateTime,
) -> Result<Vec<String>, SweepError> {
    let client = Client::new(remote, store)?;
    let mut aborted = Vec::new();
    for upload in client.list().await? {
        if is_stale(&remote.config.prefix, &upload.key, started) {
            client.abort(&upload).await?;
            aborted.push(upload.key);
        }
    }
    Ok(aborted)
}

/// Whether `key` is an archive directly under `prefix` named before `started`.
fn is_stale(prefix: &str, key: &str, started: NaiveDateTime) -> bool {
    let file = if prefix.is_empty() {
        Some(key)
    } else {
        key.strip_prefix(prefix).and_then(|k| k.strip_prefix('/'))
    };
    file.filter(|f| !f.contains('/'))
        .and_then(parse_archive_name)
        .and_then(|parsed| NaiveDateTime::parse_from_str(&parsed.stamp, TIMESTAMP_FORMAT).ok())
        .is_some_and(|made| made < started)
}

/// `ListMultipartUploads` and its abort under one remote's prefix.
struct Client {
    signed: SignedClient,
    prefix: String,
}

impl Client {
    fn new(remote: &ResolvedRemote, store: &AmazonS3) -> Result<Self, SweepError> {
        Ok(Self {
            signed: SignedClient::new(&remote.config, store)?,
            prefix: remote.config.prefix.clone(),
        })
    }

    /// The uploads in progress under the prefix, every page.
    async fn list(&self) -> Result<Vec<Upload>, SweepError> {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("uploads", None), ("prefix", Some(prefix.as_str()))];
            if let Some((key, upload_id)) = &markers {
                query.push(("key-marker", Some(key.as_str())));
                query.push(("upload-id-marker", Some(upload_id.as_str())));
            }
            let url = self.signed.bucket(&query);
            let body = send(self.signed.send(Method::GET, url)).await?;
            let page = parse_listing(&body);
            uploads.extend(page.uploads);
            match page.next {
                Some(next) if page.truncated => markers = Some(next),
                _ => return Ok(uploads),
            }
        }
        Ok(uploads)
    }

    async fn abort(&self, upload: &Upload) -> Result<(), SweepError> {
        let url = self
            .signed
            .object(
                &upload.key,
                &[("uploadId", Some(upload.upload_id.as_str()))],
            )
            .map_err(|e| SweepError::Request(e.to_string()))?;
        send(self.signed.send(Method::DELETE, url))
            .await
            .map(|_| ())
    }
}

/// The body of a signed request's answer; a server without the call is `NotSupported`.
async fn send(
    request: impl Future<Output = Result<Answer, SignedError>>,
) -> Result<String, SweepError> {
    match request.await {
        Ok(answer) => Ok(answer.body),
        Err(SignedError::NotSupported(_)) => Err(SweepError::NotSupported),
        Err(e) => Err(SweepError::Request(e.to_string())),
    }
}

/// One page of `ListMultipartUploads`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Page {
    uploads: Vec<Upload>,
    truncated: bool,
    /// `NextKeyMarker` and `NextUploadIdMarker`.
    next: Option<(String, String)>,
}

/// The fields we use of a `ListMultipartUploadsResult`. Its elements are flat text (no
/// attributes, no nesting we read into), so a scan for them is enough.
fn parse_listing(xml: &str) -> Page {
    let uploads = blocks(xml, "Upload")
        .filter_map(|upload| {
            Some(Upload {
                key: element(upload, "Key")?,
                upload_id: element(upload, "UploadId")?,
            })
        })
        .collect();
    let next = element(xml, "NextKeyMarker").zip(element(xml, "NextUploadIdMarker"));
    Page {
        uploads,
        truncated: element(xml, "IsTruncated").as_deref() == Some("true"),
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::stamp;

    #[test]
    fn only_archives_directly_under_the_prefix_named_before_the_start_are_stale() {
        let started = stamp("20250601_120000");
        assert!(is_stale(
            "host",
            "host/docs_20250601_115959.tar.gz",
            started
        ));
        assert!(is_stale("", "docs_20250101_000000.tar.zst.age", started));
        assert!(!is_stale(
            "host",
            "host/docs_20250601_120000.tar.gz",
            started
        ));
        assert!(!is_stale("host", "host/notes.txt", started));
        assert!(!is_stale(
            "host",
            "hostile/docs_20250101_000000.tar.gz",
            started
        ));
        assert!(!is_stale(
            "host",
            "host/sub/docs_20250101_000000.tar.gz",
            started
        ));
        assert!(!is_stale(
            "host",
            "other/docs_20250101_000000.tar.gz",
            started
        ));
    }

    #[test]
    fn a_listing_gives_its_uploads_and_where_the_next_page_starts() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>host/b&amp;c.tar.gz</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>host/a_20250101_000000.tar.gz</Key><UploadId>u1</UploadId>
    <Initiator><ID>x</ID></Initiator><Initiated>2025-01-01T00:00:00.000Z</Initiated></Upload>
  <Upload><Key>host/b&amp;c.tar.gz</Key><UploadId>u2</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let page = parse_listing(xml);
        assert_eq!(
            page.uploads,
            [
                Upload {
                    key: "host/a_20250101_000000.tar.gz".into(),
                    upload_id: "u1".into()
                },
                Upload {
                    key: "host/b&c.tar.gz".into(),
                    upload_id: "u2".into()
                },
            ]
        );
        assert!(page.truncated);
        assert_eq!(page.next, Some(("host/b&c.tar.gz".into(), "u2".into())));
        let empty = parse_listing(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        );
        assert_eq!(empty, Page::default());
    }
}
