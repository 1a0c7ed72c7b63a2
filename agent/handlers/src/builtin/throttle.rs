//! What an HTTP answer of "try again later" means for the next attempt:
//! 5xx, 408 and 429 are passing faults, and a `Retry-After` header (delay
//! seconds or an HTTP date) says how long the retry should wait at least.
//! The control plane honours it within the task's retry policy.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use taskplane_agent::handler::TaskError;

/// Whether an answer of this status may succeed when sent again: a server
/// fault, a request timeout (408) or throttling (429).
pub fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// The delay a `Retry-After` value asks for at `now`: whole seconds, or an
/// HTTP date (a date already past asks for none). `None` when it is
/// neither.
pub fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // RFC 9110's IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is RFC 2822.
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&Utc) - now).to_std().unwrap_or_default())
}

/// The retryable error of an answer that asked to come back later, carrying
/// its `Retry-After` when the headers hold a valid one.
pub fn try_again_later(message: String, headers: &HeaderMap) -> TaskError {
    let after = headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| retry_after(value, Utc::now()));
    match after {
        Some(after) => TaskError::RetryAfter { message, after },
        None => TaskError::Retryable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_timeouts_and_throttling_are_retried_other_client_errors_are_not() {
        for code in [500, 502, 503, 504, 408, 429] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(retryable_status(status), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 410, 422] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(!retryable_status(status), "{code}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Mon, 07 Dec 2026 08:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after("Mon, 07 Dec 2026 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date already past asks for no wait"
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn an_answer_with_retry_after_carries_it_and_one_without_is_plain() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            try_again_later("busy".into(), &headers),
            TaskError::Retryable("busy".into())
        );
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        let error = try_again_later("busy".into(), &headers);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert!(error.is_retryable());
    }
}
