//! [`FlowLimits`]: the flow-control limits a handler declares for its task
//! type, sent when the agent registers.
//!
//! The server enforces them across every agent and replica, exactly as the
//! limits an operator sets with `taskplane types set`: declared, they
//! replace the type's limits at each registration, so the code is where
//! they live. A handler that declares none leaves whatever an operator set.
//! Pausing stays an operator's act. The server checks the limits when the
//! agent registers and refuses the registration, naming the type, when
//! they do not work (an unknown key path, a per-key limit without a key).

use taskplane_proto::v1;

/// A task type's flow-control limits, built up from none:
///
/// ```
/// use taskplane_agent::FlowLimits;
///
/// let limits = FlowLimits::new()
///     .concurrency_key("payload.customer_id")
///     .max_running_per_key(1)
///     .rate_limit("20/second");
/// assert_eq!(limits.max_running_per_key, Some(1));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlowLimits {
    /// At most this many running at once, across all agents and replicas.
    pub max_running: Option<u32>,
    /// What groups tasks for `max_running_per_key`: `payload.<field>` or
    /// `metadata.<key>`.
    pub concurrency_key: Option<String>,
    /// At most this many running at once per key.
    pub max_running_per_key: Option<u32>,
    /// At most N starts per second, minute or hour, e.g. `"20/second"`.
    pub rate_limit: Option<String>,
    /// Keeps the rate limit per value of this key, e.g.
    /// `"payload.customer_id"`.
    pub rate_limit_key: Option<String>,
}

impl FlowLimits {
    /// No limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `max_running`.
    pub fn max_running(mut self, max: u32) -> Self {
        self.max_running = Some(max);
        self
    }

    /// Sets the concurrency key, e.g. `"payload.customer_id"`.
    pub fn concurrency_key(mut self, path: impl Into<String>) -> Self {
        self.concurrency_key = Some(path.into());
        self
    }

    /// Sets `max_running_per_key` (needs a concurrency key).
    pub fn max_running_per_key(mut self, max: u32) -> Self {
        self.max_running_per_key = Some(max);
        self
    }

    /// Sets the rate limit, e.g. `"20/second"`, `"100/minute"`.
    pub fn rate_limit(mut self, rate: impl Into<String>) -> Self {
        self.rate_limit = Some(rate.into());
        self
    }

    /// Keeps the rate limit per value of this key (`payload.<field>` or
    /// `metadata.<key>`).
    pub fn rate_limit_key(mut self, path: impl Into<String>) -> Self {
        self.rate_limit_key = Some(path.into());
        self
    }

    /// The wire form: unset limits are zero or empty, which limit nothing.
    pub fn to_proto(&self) -> v1::FlowLimits {
        v1::FlowLimits {
            max_running: self.max_running.unwrap_or(0),
            concurrency_key: self.concurrency_key.clone().unwrap_or_default(),
            max_running_per_key: self.max_running_per_key.unwrap_or(0),
            rate_limit: self.rate_limit.clone().unwrap_or_default(),
            rate_limit_key: self.rate_limit_key.clone().unwrap_or_default(),
        }
    }
}
