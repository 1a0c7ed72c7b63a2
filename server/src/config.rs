//! The control plane's configuration: one struct, with defaults that work on
//! a laptop. The `taskplane` binary fills it from flags and `TASKPLANE_*`
//! environment variables; tests build it directly with short timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use crate::model::RetryPolicy;

/// Everything the control plane needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where gRPC listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `sqlite://path` (created if missing) or, later, `postgres://…`.
    pub database_url: String,
    /// Tunables of the queue and the agent protocol.
    pub queue: QueueConfig,
}

/// Tunables of the queue and the agent protocol.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// How long an assignment's lease lasts unless extended.
    pub lease_duration: Duration,
    /// How often agents heartbeat; the server extends live leases as often.
    pub heartbeat_interval: Duration,
    /// How often an idle session looks for delayed tasks that became due.
    pub poll_interval: Duration,
    /// The largest payload accepted, in bytes of JSON.
    pub max_payload_bytes: usize,
    /// The most tasks one `EnqueueTasks` call may carry.
    pub max_batch_size: usize,
    /// The most tasks claimed for one session in one statement.
    pub max_claim_batch: u32,
    /// Retry policy for task types registered without one.
    pub default_retry_policy: RetryPolicy,
    /// Attempts for task types registered without a default.
    pub default_max_attempts: u32,
    /// Timeout for task types registered without a default.
    pub default_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: "sqlite://taskplane-data/taskplane.db".to_owned(),
            queue: QueueConfig::default(),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            lease_duration: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            max_payload_bytes: 1024 * 1024,
            max_batch_size: 1000,
            max_claim_batch: 100,
            default_retry_policy: RetryPolicy::default(),
            default_max_attempts: 3,
            default_timeout: Duration::from_secs(300),
        }
    }
}
