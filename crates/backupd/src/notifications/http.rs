//! The daemon's one HTTP client and how each kind of target is spoken to: a webhook gets the
//! outcome as JSON, healthchecks.io gets its pings, ntfy a message with title, priority and
//! tags. Each request has a timeout and is retried a few times with backoff; what finally
//! fails is returned for the caller to log, and never names more than scheme and host.

use super::target::{Kind, Target};
use crate::outcome::JobOutcome;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Client, RequestBuilder, StatusCode};
use std::time::Duration;

/// Attempts per notification, and the wait before the second one (doubled each time).
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a notification did not arrive; says nothing of the URL's path or query.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the HTTP client could not be set up: {0}")]
    Client(String),
    #[error("{target}: {reason} (after {attempts} attempts)")]
    Failed {
        target: String,
        reason: String,
        attempts: u32,
    },
    #[error("{target}: answered {status}")]
    Refused { target: String, status: StatusCode },
}

/// Builds the daemon's client: rustls, timeouts, no redirects (a POST turned into a GET
/// elsewhere would be a silent loss).
pub fn client() -> Result<Client, String> {
    Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("backupd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.without_url().to_string())
}

/// The healthchecks `/start` ping.
pub async fn send_start(client: &Client, target: &Target) -> Result<(), SendError> {
    let url = target.with_path_suffix("start");
    send(target, || client.post(url.clone())).await
}

/// The notification of a finished job for `target`.
pub async fn send_outcome(
    client: &Client,
    target: &Target,
    outcome: &JobOutcome,
) -> Result<(), SendError> {
    match target.kind {
        Kind::Webhook => {
            let body = serde_json::to_vec(&outcome.webhook_body()).unwrap_or_default();
            send(target, || {
                client
                    .post(target.url.clone())
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(body.clone())
            })
            .await
        }
        Kind::Healthchecks => {
            let (url, body) = if outcome.succeeded() {
                (target.url.clone(), String::new())
            } else {
                let error = outcome.error.clone().unwrap_or_default();
                (target.with_path_suffix("fail"), error)
            };
            send(target, || client.post(url.clone()).body(body.clone())).await
        }
        Kind::Ntfy => {
            let (priority, tags) = if outcome.succeeded() {
                ("default", "white_check_mark,backupd")
            } else {
                ("high", "warning,backupd")
            };
            let title = outcome.title();
            let body = outcome.summary();
            send(target, || {
                let request = client.post(target.url.clone());
                // A title that is not a valid header value (never expected) goes without it.
                let request = match HeaderValue::from_str(&title) {
                    Ok(title) => request.header("Title", title),
                    Err(_) => request,
                };
                request
                    .header("Priority", priority)
                    .header("Tags", tags)
                    .body(body.clone())
            })
            .await
        }
    }
}

/// Sends what `request` builds, retrying connection failures, timeouts and server errors.
async fn send(target: &Target, request: impl Fn() -> RequestBuilder) -> Result<(), SendError> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let reason = match request().send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) if !response.status().is_server_error() => {
                return Err(SendError::Refused {
                    target: target.shown(),
                    status: response.status(),
                });
            }
            Ok(response) => format!("answered {}", response.status()),
            // reqwest's errors name the URL unless told not to.
            Err(e) => error_chain(&e.without_url()),
        };
        if attempt == ATTEMPTS {
            return Err(SendError::Failed {
                target: target.shown(),
                reason,
                attempts: attempt,
            });
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

/// The error and its causes on one line: reqwest's own message alone is only "error sending
/// request".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}
