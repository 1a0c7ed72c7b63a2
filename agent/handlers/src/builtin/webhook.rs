//! `WebhookHandler`: sends a JSON body to an HTTP(S) endpoint, signed so the
//! receiver can check it came from taskplane and was not altered.
//!
//! Payload: `url`, `method` (`POST` or
//! `PUT`, default `POST`), `headers` (an object of strings), `body` (any
//! JSON; default: the payload without these fields), `timeout_ms` (default
//! 10000).
//!
//! Signature (when a secret is configured): `X-Taskplane-Timestamp: <unix
//! seconds>` and `X-Taskplane-Signature: sha256=<hex>` where the hex is
//! HMAC-SHA256(secret, "<timestamp>.<body bytes>"). Receivers recompute it,
//! compare in constant time, and reject old timestamps.
//!
//! 5xx, 408 (request timeout) and 429 (too many requests) answers,
//! timeouts and connection errors are retryable; other 4xx answers are not
//! (the request itself is wrong). A `Retry-After` on a retryable answer
//! makes the retry wait at least that long, within the task's retry policy.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::optional_u64;
use super::throttle::{retryable_status, try_again_later};
use crate::egress::Egress;
use taskplane_agent::handler::{TaskContext, TaskError, TaskHandler, TaskResult};
use taskplane_common::connect::error_chain;

/// The payload fields that configure the request rather than form the body.
const REQUEST_FIELDS: [&str; 5] = ["url", "method", "headers", "body", "timeout_ms"];
/// How much of the response body the result keeps.
const RESPONSE_EXCERPT: usize = 2048;

/// Computes the `X-Taskplane-Signature` value for a body sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts signed JSON to an HTTP endpoint.
pub struct WebhookHandler {
    egress: Egress,
    secret: Option<String>,
}

impl WebhookHandler {
    /// A handler taking the URL from each payload.
    pub fn new(egress: Egress, secret: Option<String>) -> Self {
        WebhookHandler { egress, secret }
    }
}

/// The payload's `method`: POST (the default) or PUT.
fn request_method(payload: &serde_json::Value) -> Result<reqwest::Method, TaskError> {
    match payload
        .get("method")
        .and_then(|m| m.as_str())
        .unwrap_or("POST")
    {
        "POST" | "post" => Ok(reqwest::Method::POST),
        "PUT" | "put" => Ok(reqwest::Method::PUT),
        other => Err(TaskError::Permanent(format!(
            "method '{other}' is not supported: use POST or PUT"
        ))),
    }
}

/// The request's JSON body: the payload's `body`, or else the payload less
/// the fields that describe the request.
fn request_body(payload: &serde_json::Value) -> serde_json::Value {
    match payload.get("body") {
        Some(body) => body.clone(),
        None => {
            let mut rest = payload.as_object().cloned().unwrap_or_default();
            for field in REQUEST_FIELDS {
                rest.remove(field);
            }
            serde_json::Value::Object(rest)
        }
    }
}

#[async_trait]
impl TaskHandler for WebhookHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let payload = &context.payload;
        let url = super::required_str(payload, "url")?.to_owned();
        let method = request_method(payload)?;
        let timeout = Duration::from_millis(optional_u64(payload, "timeout_ms")?.unwrap_or(10_000));
        let body = request_body(payload);
        let bytes = serde_json::to_vec(&body).expect("JSON values serialize");
        self.egress.check_url(&url).await?;
        let mut request = self
            .egress
            .client()
            .request(method, &url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("x-taskplane-task-id", &context.task_id)
            .header("x-taskplane-attempt", context.attempt.to_string());
        if let Some(trace) = context.traceparent() {
            // The receiver joins the trace the task was enqueued in.
            request = request.header("traceparent", trace.to_string());
        }
        if let Some(headers) = payload.get("headers") {
            let headers = headers
                .as_object()
                .ok_or_else(|| TaskError::bad_payload("headers", "an object of strings"))?;
            for (name, value) in headers {
                let value = value.as_str().ok_or_else(|| {
                    TaskError::bad_payload(&format!("headers.{name}"), "a string")
                })?;
                request = request.header(name.as_str(), value);
            }
        }
        if let Some(secret) = &self.secret {
            let timestamp = chrono::Utc::now().timestamp();
            request = request
                .header("x-taskplane-timestamp", timestamp.to_string())
                .header(
                    "x-taskplane-signature",
                    signature(secret, timestamp, &bytes),
                );
        }
        let started = std::time::Instant::now();
        let response = request.body(bytes).send().await.map_err(|e| {
            let why = error_chain(&e);
            if e.is_builder() || e.is_redirect() {
                TaskError::Permanent(format!("the request to '{url}' cannot be made: {why}"))
            } else {
                TaskError::Retryable(format!("the request to {url} failed: {why}"))
            }
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(RESPONSE_EXCERPT).collect();
        if retryable_status(status) {
            return Err(try_again_later(
                format!("{url} answered {status}: {excerpt}"),
                &headers,
            ));
        }
        if !status.is_success() {
            return Err(TaskError::Permanent(format!(
                "{url} answered {status}: {excerpt}"
            )));
        }
        Ok(TaskResult::new(json!({
            "status": status.as_u16(),
            "response": excerpt,
            "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
        })))
    }

    fn description(&self) -> String {
        "Sends a signed JSON webhook".into()
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["http".into(), "hmac-sha256".into()]
    }
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Known answer, computed independently:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature("secret", 1_700_000_000, br#"{"a":1}"#),
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
