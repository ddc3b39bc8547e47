//! Builds the object_store client of a resolved remote: path-style unless asked otherwise,
//! plain http only when allowed, the remote's CA file, timeouts and retries (exponential
//! backoff on 5xx, SlowDown and timeouts, by object_store's `RetryConfig`), and a SHA-256
//! checksum on every part and object the server checks on receipt, unless turned off.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::{BackoffConfig, Certificate, ClientOptions, RetryConfig};

use super::{CredentialSource, MAX_PART_SIZE, RemoteError, ResolvedRemote};

/// Parts after which the part size doubles; S3 allows 10,000 parts per upload.
const PARTS_PER_SIZE: usize = 1_000;

/// `endpoint` as object_store takes it: for virtual-hosted requests it wants the bucket in the
/// endpoint's host already (`https://BUCKET.host`); given `https://host`, it sent every
/// request there, where the server took the prefix's first segment for the bucket.
fn object_store_endpoint(
    endpoint: &str,
    bucket: &str,
    virtual_hosted: bool,
) -> Result<String, String> {
    if !virtual_hosted {
        return Ok(endpoint.to_owned());
    }
    let mut url = reqwest::Url::parse(endpoint).map_err(|e| format!("endpoint: {e}"))?;
    let host = url.host_str().unwrap_or_default().to_owned();
    url.set_host(Some(&format!("{bucket}.{host}")))
        .map_err(|e| format!("endpoint: {e}"))?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The client for `remote`.
pub fn build(remote: &ResolvedRemote) -> Result<Arc<AmazonS3>, RemoteError> {
    let config = &remote.config;
    let fail = |reason: String| RemoteError::Client {
        remote: config.name.clone(),
        reason,
    };
    let mut options = ClientOptions::new()
        .with_allow_http(config.allow_http)
        .with_connect_timeout(config.connect_timeout)
        .with_timeout(config.request_timeout);
    if let Some(ca_file) = &config.ca_file {
        let pem = std::fs::read(ca_file)
            .map_err(|e| fail(format!("ca_file {}: {e}", ca_file.display())))?;
        let certificates = Certificate::from_pem_bundle(&pem)
            .map_err(|e| fail(format!("ca_file {}: {e}", ca_file.display())))?;
        if certificates.is_empty() {
            return Err(fail(format!(
                "ca_file {}: no PEM certificate in it",
                ca_file.display()
            )));
        }
        for certificate in certificates {
            options = options.with_root_certificate(certificate);
        }
    }
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: config.retries,
        retry_timeout: Duration::from_secs(180),
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_allow_http(config.allow_http)
        .with_virtual_hosted_style_request(config.virtual_hosted)
        .with_retry(retry)
        .with_client_options(options);
    if let Some(endpoint) = &config.endpoint {
        let endpoint =
            object_store_endpoint(endpoint, &config.bucket, config.virtual_hosted).map_err(fail)?;
        builder = builder.with_endpoint(endpoint);
    }
    if config.checksums {
        builder = builder.with_checksum_algorithm(Checksum::SHA256);
    }
    if let CredentialSource::InstanceMetadata {
        endpoint: Some(endpoint),
    } = &remote.source
    {
        builder = builder.with_metadata_endpoint(endpoint);
    }
    if let Some(credentials) = &remote.credentials {
        builder = builder
            .with_access_key_id(&credentials.key_id)
            .with_secret_access_key(&credentials.secret_key);
        if let Some(token) = &credentials.token {
            builder = builder.with_token(token);
        }
    }
    // object_store's messages name settings, never the secret it was given.
    builder
        .build()
        .map(Arc::new)
        .map_err(|e| fail(e.to_string()))
}

/// The size of part `index` (from 0) of an upload whose first parts are `first` bytes: it
/// doubles every 1,000 parts (up to S3's 5 GiB), so 10,000 parts hold over 1,000 times
/// `first`: 4.9 TiB at the 5 MiB minimum, past S3's 5 TiB object limit from the default on.
pub fn part_size_for(first: u64, index: usize) -> u64 {
    let doublings = u32::try_from(index / PARTS_PER_SIZE)
        .unwrap_or(u32::MAX)
        .min(20);
    first.saturating_mul(1 << doublings).min(MAX_PART_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{DEFAULT_PART_SIZE, MIN_PART_SIZE};

    #[test]
    fn parts_grow_so_ten_thousand_hold_five_tebibytes() {
        assert_eq!(part_size_for(MIN_PART_SIZE, 0), MIN_PART_SIZE);
        assert_eq!(part_size_for(MIN_PART_SIZE, 999), MIN_PART_SIZE);
        assert_eq!(part_size_for(MIN_PART_SIZE, 1_000), 2 * MIN_PART_SIZE);
        assert_eq!(part_size_for(DEFAULT_PART_SIZE, 9_999), MAX_PART_SIZE);
        let total = |first| (0..10_000).map(|i| part_size_for(first, i)).sum::<u64>();
        assert!(
            total(MIN_PART_SIZE) >= 1000 * MIN_PART_SIZE * 1000,
            "{}",
            total(MIN_PART_SIZE)
        );
        assert!(
            total(DEFAULT_PART_SIZE) >= 5 << 40,
            "{}",
            total(DEFAULT_PART_SIZE)
        );
    }

    #[test]
    fn a_virtual_hosted_endpoint_gets_the_bucket_in_its_host() {
        let cases = [
            (
                "https://s3.example.com",
                true,
                "https://backups.s3.example.com",
            ),
            (
                "http://minio.lan:9000",
                true,
                "http://backups.minio.lan:9000",
            ),
            ("https://s3.example.com", false, "https://s3.example.com"),
            (
                "http://127.0.0.1:9000/base",
                false,
                "http://127.0.0.1:9000/base",
            ),
        ];
        for (endpoint, virtual_hosted, expected) in cases {
            assert_eq!(
                object_store_endpoint(endpoint, "backups", virtual_hosted).unwrap(),
                expected
            );
        }
    }
}
