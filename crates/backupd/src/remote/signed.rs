//! Signed requests for the S3 calls object_store cannot make (ListMultipartUploads and its
//! abort, object lock's configuration and retention): plain requests signed by object_store's
//! SigV4 authorizer with the credentials its client resolved (environment, credentials file or
//! instance metadata; fetched per request, so expiring ones are renewed), sent with reqwest
//! under the remote's timeouts and CA file. Errors carry the server's code and message, never
//! a request header (they hold the key id).

use object_store::aws::{AmazonS3, AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpRequest, HttpRequestBody};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest, Sha256};

use super::{RemoteConfig, RemoteError};

/// Why a signed request failed. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum SignedError {
    /// The server does not implement the call.
    #[error("the server does not implement {0}")]
    NotSupported(String),
    /// The server answered with an error.
    #[error("{what}: {status} {code} {message}")]
    Server {
        what: String,
        status: StatusCode,
        code: String,
        message: String,
    },
    /// No answer (network, timeout, signing).
    #[error("{0}")]
    Request(String),
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub headers: HeaderMap,
    pub body: String,
}

/// Signed requests to one remote's bucket.
#[derive(Debug)]
pub struct SignedClient {
    http: reqwest::Client,
    credentials: AwsCredentialProvider,
    region: String,
    /// `…/BUCKET` (path-style) or `BUCKET.…` (virtual-hosted), without a trailing `/`.
    bucket_url: Url,
}

impl SignedClient {
    /// A client for `config`'s bucket using `store`'s credentials; reads the CA file.
    pub fn new(config: &RemoteConfig, store: &AmazonS3) -> Result<Self, RemoteError> {
        let fail = |reason: String| RemoteError::Client {
            remote: config.name.clone(),
            reason,
        };
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", config.region));
        let mut bucket_url = Url::parse(&endpoint).map_err(|e| fail(format!("endpoint: {e}")))?;
        if bucket_url.scheme() == "http" && !config.allow_http {
            return Err(fail("plain http is not allowed (allow_http)".into()));
        }
        if config.virtual_hosted {
            let host = bucket_url.host_str().unwrap_or_default().to_owned();
            bucket_url
                .set_host(Some(&format!("{}.{host}", config.bucket)))
                .map_err(|e| fail(format!("endpoint: {e}")))?;
        } else {
            bucket_url
                .path_segments_mut()
                .map_err(|()| fail("endpoint: not a base URL".into()))?
                .pop_if_empty()
                .push(&config.bucket);
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca_file) = &config.ca_file {
            let pem = std::fs::read(ca_file)
                .map_err(|e| fail(format!("ca_file {}: {e}", ca_file.display())))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| fail(format!("ca_file {}: {e}", ca_file.display())))?;
            for certificate in certificates {
                http = http.add_root_certificate(certificate);
            }
        }
        let http = http
            .build()
            .map_err(|e| fail(e.without_url().to_string()))?;
        Ok(Self {
            http,
            credentials: store.credentials().clone(),
            region: config.region.clone(),
            bucket_url,
        })
    }

    /// The bucket's URL with `query` (`key` or `key=value` pairs).
    pub fn bucket(&self, query: &[(&str, Option<&str>)]) -> Url {
        let mut url = self.bucket_url.clone();
        append_query(&mut url, query);
        url
    }

    /// The URL of object `key` with `query`.
    pub fn object(&self, key: &str, query: &[(&str, Option<&str>)]) -> Result<Url, SignedError> {
        let mut url = self.bucket_url.clone();
        url.path_segments_mut()
            .map_err(|()| SignedError::Request("endpoint: not a base URL".into()))?
            .extend(key.split('/'));
        append_query(&mut url, query);
        Ok(url)
    }

    /// Sends one signed request without a body.
    pub async fn send(&self, method: Method, url: Url) -> Result<Answer, SignedError> {
        self.send_with(method, url, HeaderMap::new(), Vec::new())
            .await
    }

    /// Sends one signed request with an XML `body`, its SHA-256 checksum in
    /// `x-amz-checksum-sha256` (S3 wants a checksum on object lock calls; no MD5 here).
    pub async fn send_xml(
        &self,
        method: Method,
        url: Url,
        body: String,
    ) -> Result<Answer, SignedError> {
        let digest = Sha256::digest(body.as_bytes());
        let mut headers = HeaderMap::new();
        let header = |value: &str| {
            HeaderValue::from_str(value).map_err(|e| SignedError::Request(e.to_string()))
        };
        headers.insert(reqwest::header::CONTENT_TYPE, header("application/xml")?);
        headers.insert(
            HeaderName::from_static("x-amz-checksum-sha256"),
            header(&base64(&digest))?,
        );
        headers.insert(
            HeaderName::from_static("x-amz-sdk-checksum-algorithm"),
            header("SHA256")?,
        );
        self.send_with(method, url, headers, body.into_bytes())
            .await
    }

    async fn send_with(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Answer, SignedError> {
        let what = format!(
            "{method} {}{}",
            url.path(),
            url.query().map(|q| format!("?{q}")).unwrap_or_default()
        );
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| SignedError::Request(format!("credentials: {e}")))?;
        let digest = Sha256::digest(&body);
        // Signed with the body's digest; the body itself goes with reqwest.
        let mut request = HttpRequest::new(HttpRequestBody::empty());
        *request.method_mut() = method.clone();
        *request.uri_mut() = url
            .as_str()
            .parse()
            .map_err(|e| SignedError::Request(format!("{what}: {e}")))?;
        *request.headers_mut() = headers;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, Some(digest.as_slice()))
            .map_err(|e| SignedError::Request(format!("signing: {e}")))?;
        let response = self
            .http
            .request(method.clone(), url)
            .headers(request.headers().clone())
            .body(body)
            .send()
            .await
            .map_err(|e| SignedError::Request(format!("{what}: {}", e.without_url())))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = if method == Method::HEAD {
            String::new()
        } else {
            response
                .text()
                .await
                .map_err(|e| SignedError::Request(format!("{what}: {}", e.without_url())))?
        };
        if status.is_success() {
            return Ok(Answer { headers, body });
        }
        let code = element(&body, "Code").unwrap_or_default();
        if status == StatusCode::NOT_IMPLEMENTED || code == "NotImplemented" {
            return Err(SignedError::NotSupported(what));
        }
        let message = element(&body, "Message").unwrap_or_default();
        Err(SignedError::Server {
            what,
            status,
            code,
            message,
        })
    }
}

fn append_query(url: &mut Url, query: &[(&str, Option<&str>)]) {
    if query.is_empty() {
        return;
    }
    let mut pairs = url.query_pairs_mut();
    for (key, value) in query {
        match value {
            Some(value) => pairs.append_pair(key, value),
            None => pairs.append_key_only(key),
        };
    }
}

/// Standard base64 with padding (RFC 4648), for checksum headers.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The inner text of each `<tag>…</tag>` of `xml`. S3's answers that we read are flat text
/// elements (no attributes on them, no nesting we read into), so a scan is enough.
pub fn blocks<'a>(xml: &'a str, tag: &str) -> impl Iterator<Item = &'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let end = start + rest[start..].find(&close)?;
        let inner = &rest[start..end];
        rest = &rest[end + close.len()..];
        Some(inner)
    })
}

/// The unescaped text of the first `<tag>…</tag>` of `xml`.
pub fn element(xml: &str, tag: &str) -> Option<String> {
    blocks(xml, tag).next().map(unescape)
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
        // The SHA-256 of nothing, as S3 shows it in x-amz-checksum-sha256.
        assert_eq!(
            base64(&Sha256::digest(b"")),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn elements_are_read_unescaped() {
        let xml = "<Error><Code>InvalidRequest</Code><Message>a &amp; b</Message></Error>";
        assert_eq!(element(xml, "Code").as_deref(), Some("InvalidRequest"));
        assert_eq!(element(xml, "Message").as_deref(), Some("a & b"));
        assert_eq!(element(xml, "Key"), None);
    }
}
