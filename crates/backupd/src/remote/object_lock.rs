//! S3 object lock: a remote with `object_lock_days` gives each object it uploads a retention
//! (`PutObjectRetention`, GOVERNANCE or COMPLIANCE, until now + the days), so that neither a
//! thief with the keys nor a bug can destroy the copy before then; rotation reads an
//! object's lock (HEAD's `x-amz-object-lock-*` headers) and keeps it while it holds.
//!
//! A bucket without object lock refuses retentions, so the first upload of a run checks the
//! bucket's configuration once (`GET ?object-lock`) and fails before sending a byte, naming
//! the remote; a refused `PutObjectRetention` says the same. object_store cannot make these
//! calls: they go through [`super::signed`].

use std::io;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use reqwest::header::HeaderMap;

use super::RemoteConfig;
use super::signed::{SignedClient, SignedError, element};

/// How strict a retention is: GOVERNANCE may be lifted by a user with
/// `s3:BypassGovernanceRetention`; COMPLIANCE by nobody, root included, until it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LockMode {
    #[default]
    Governance,
    Compliance,
}

impl LockMode {
    /// As written in `backupd.toml`: `"governance"` or `"compliance"`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "governance" => Some(Self::Governance),
            "compliance" => Some(Self::Compliance),
            _ => None,
        }
    }

    /// As S3 names it.
    pub fn as_s3(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
}

/// What holds an object, as its HEAD says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectState {
    /// Nothing keeps it (no retention, or one that ended).
    Unlocked,
    /// A retention until `until`, or a legal hold (`until` is `None`: it has no end).
    Locked { until: Option<DateTime<Utc>> },
    /// No object of that key.
    Gone,
}

/// The end of a retention of `days` from `now`, to the second.
pub fn retain_until(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    let until = now + TimeDelta::days(i64::from(days));
    DateTime::from_timestamp(until.timestamp(), 0).unwrap_or(until)
}

/// A date as S3 takes it: ISO 8601 in UTC, `2025-01-31T12:00:00Z`.
pub fn s3_date(date: DateTime<Utc>) -> String {
    date.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The body of `PutObjectRetention`.
pub fn retention_xml(mode: LockMode, until: DateTime<Utc>) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
        mode.as_s3(),
        s3_date(until)
    )
}

/// The lock of an object from its HEAD's headers, at `now`. A retention with an unreadable
/// date counts as locked with no known end: it is safer kept.
pub fn state_from_headers(headers: &HeaderMap, now: DateTime<Utc>) -> ObjectState {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if text("x-amz-object-lock-legal-hold").is_some_and(|v| v.eq_ignore_ascii_case("ON")) {
        return ObjectState::Locked { until: None };
    }
    match text("x-amz-object-lock-retain-until-date") {
        None => ObjectState::Unlocked,
        Some(date) => match DateTime::parse_from_rfc3339(date) {
            Ok(until) if until.with_timezone(&Utc) <= now => ObjectState::Unlocked,
            Ok(until) => ObjectState::Locked {
                until: Some(until.with_timezone(&Utc)),
            },
            Err(_) => ObjectState::Locked { until: None },
        },
    }
}

/// How a rotation says why it kept an object.
pub fn kept_reason(until: Option<DateTime<Utc>>) -> String {
    match until {
        Some(until) => format!("kept (locked until {})", s3_date(until)),
        None => "kept (locked: legal hold or an unreadable retention)".to_owned(),
    }
}

/// Object lock calls for one remote.
#[derive(Debug, Clone)]
pub struct ObjectLock {
    client: Arc<SignedClient>,
    remote: String,
    bucket: String,
}

impl ObjectLock {
    pub fn new(client: Arc<SignedClient>, config: &RemoteConfig) -> Self {
        Self {
            client,
            remote: config.name.clone(),
            bucket: config.bucket.clone(),
        }
    }

    fn no_lock(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "remote {}: bucket {} has no object lock, which object_lock_days needs \
                 (object lock can only be enabled on a bucket when it is created)",
                self.remote, self.bucket
            ),
        )
    }

    fn to_io(&self, error: SignedError) -> io::Error {
        let kind = match &error {
            SignedError::Server { status, .. } if status.as_u16() == 404 => io::ErrorKind::NotFound,
            SignedError::Server { status, .. } if status.as_u16() == 403 => {
                io::ErrorKind::PermissionDenied
            }
            SignedError::NotSupported(_) => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("remote {}: {error}", self.remote))
    }

    /// Whether the bucket has object lock enabled; an error naming the remote if not.
    pub async fn check_bucket(&self) -> io::Result<()> {
        match self
            .client
            .send(Method::GET, self.client.bucket(&[("object-lock", None)]))
            .await
        {
            Ok(answer)
                if element(&answer.body, "ObjectLockEnabled").as_deref() == Some("Enabled") =>
            {
                Ok(())
            }
            Ok(_) | Err(SignedError::NotSupported(_)) => Err(self.no_lock()),
            Err(SignedError::Server { code, .. })
                if code == "ObjectLockConfigurationNotFoundError" =>
            {
                Err(self.no_lock())
            }
            Err(e) => Err(self.to_io(e)),
        }
    }

    /// Gives object `key` a retention of `days` from now.
    pub async fn retain(&self, key: &str, mode: LockMode, days: u32) -> io::Result<()> {
        let body = retention_xml(mode, retain_until(Utc::now(), days));
        let url = self
            .client
            .object(key, &[("retention", None)])
            .map_err(|e| self.to_io(e))?;
        match self.client.send_xml(Method::PUT, url, body).await {
            Ok(_) => Ok(()),
            Err(SignedError::NotSupported(_)) => Err(self.no_lock()),
            Err(SignedError::Server { code, message, .. })
                if code == "InvalidRequest" && message.contains("ObjectLockConfiguration") =>
            {
                Err(self.no_lock())
            }
            Err(e) => Err(self.to_io(e)),
        }
    }

    /// What holds object `key` now. A server without object lock headers: unlocked.
    pub async fn state(&self, key: &str) -> io::Result<ObjectState> {
        let url = self.client.object(key, &[]).map_err(|e| self.to_io(e))?;
        match self.client.send(Method::HEAD, url).await {
            Ok(answer) => Ok(state_from_headers(&answer.headers, Utc::now())),
            Err(SignedError::Server { status, .. }) if status.as_u16() == 404 => {
                Ok(ObjectState::Gone)
            }
            Err(e) => Err(self.to_io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn date(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_retention_ends_whole_days_later_to_the_second() {
        let now = date("2025-01-31T23:59:58.750Z");
        assert_eq!(s3_date(retain_until(now, 1)), "2025-02-01T23:59:58Z");
        assert_eq!(s3_date(retain_until(now, 30)), "2025-03-02T23:59:58Z");
    }

    #[test]
    fn the_retention_body_names_the_mode_and_the_date() {
        let until = date("2025-03-02T08:05:09Z");
        assert_eq!(
            retention_xml(LockMode::Governance, until),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Mode>GOVERNANCE</Mode><RetainUntilDate>2025-03-02T08:05:09Z</RetainUntilDate>\
             </Retention>"
        );
        assert!(retention_xml(LockMode::Compliance, until).contains("<Mode>COMPLIANCE</Mode>"));
        assert_eq!(LockMode::parse("Compliance"), Some(LockMode::Compliance));
        assert_eq!(LockMode::parse("governance"), Some(LockMode::Governance));
        assert_eq!(LockMode::parse("legal"), None);
    }

    #[test]
    fn an_object_is_locked_while_its_retention_lasts_or_under_a_legal_hold() {
        let now = date("2025-06-01T12:00:00Z");
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            map
        };
        let until = "x-amz-object-lock-retain-until-date";
        assert_eq!(
            state_from_headers(&headers(&[]), now),
            ObjectState::Unlocked
        );
        assert_eq!(
            state_from_headers(&headers(&[(until, "2025-06-02T00:00:00.000Z")]), now),
            ObjectState::Locked {
                until: Some(date("2025-06-02T00:00:00Z"))
            }
        );
        assert_eq!(
            state_from_headers(&headers(&[(until, "2025-06-01T12:00:00Z")]), now),
            ObjectState::Unlocked
        );
        assert_eq!(
            state_from_headers(&headers(&[(until, "soon")]), now),
            ObjectState::Locked { until: None }
        );
        assert_eq!(
            state_from_headers(&headers(&[("x-amz-object-lock-legal-hold", "ON")]), now),
            ObjectState::Locked { until: None }
        );
        assert_eq!(
            kept_reason(Some(date("2025-06-02T00:00:00Z"))),
            "kept (locked until 2025-06-02T00:00:00Z)"
        );
    }
}
