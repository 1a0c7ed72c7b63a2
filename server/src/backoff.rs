//! Retry backoff: exponential, capped, with jitter.

use std::time::Duration;

use rand::Rng;

/// The delay before retrying after `attempt` failed (1-based): `base · 2^(attempt-1)`,
/// capped at `cap`, then jittered to between half and all of it so that many
/// tasks failing together do not retry together.
pub fn retry_delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1 << exponent).min(cap);
    let half = full / 2;
    half + full
        .saturating_sub(half)
        .mul_f64(rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_attempt_within_jitter_and_respects_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        for _ in 0..100 {
            let first = retry_delay(1, base, cap);
            assert!(
                first >= Duration::from_millis(50) && first <= base,
                "{first:?}"
            );
            let third = retry_delay(3, base, cap);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = retry_delay(40, base, cap);
            assert!(late >= cap / 2 && late <= cap, "{late:?}");
        }
    }
}
