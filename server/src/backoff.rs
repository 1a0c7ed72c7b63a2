//! Retry backoff: exponential, capped, with jitter.

use std::time::Duration;

use crate::model::RetryPolicy;

/// The delay before retrying after `attempt` failed (1-based):
/// `initial · factor^(attempt-1)`, capped at `max`, then scaled by `jitter`
/// (a uniform sample in `[0, 1)`) to between half and all of it, so that many
/// tasks failing together do not retry together.
pub fn retry_delay(attempt: u32, policy: &RetryPolicy, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(64) as i32;
    let growth = policy.backoff_factor.max(1.0).powi(exponent);
    let full = policy.initial_backoff.as_secs_f64() * growth;
    let full = Duration::from_secs_f64(full.min(policy.max_backoff.as_secs_f64()));
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            backoff_factor: 3.0,
            max_backoff: Duration::from_secs(1),
        }
    }

    #[test]
    fn grows_by_the_factor_and_jitters_between_half_and_all() {
        assert_eq!(retry_delay(1, &policy(), 0.0), Duration::from_millis(50));
        assert_eq!(retry_delay(1, &policy(), 1.0), Duration::from_millis(100));
        assert_eq!(retry_delay(3, &policy(), 1.0), Duration::from_millis(900));
        assert_eq!(retry_delay(3, &policy(), 0.0), Duration::from_millis(450));
    }

    #[test]
    fn never_exceeds_the_cap() {
        assert_eq!(retry_delay(4, &policy(), 1.0), Duration::from_secs(1));
        assert_eq!(
            retry_delay(1000, &policy(), 0.5),
            Duration::from_millis(750)
        );
    }
}
