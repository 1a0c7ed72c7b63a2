//! The control plane's configuration: one struct, with defaults that work on
//! a laptop. The `taskplane` binary fills it from flags and `TASKPLANE_*`
//! environment variables; tests build it directly with short timeouts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::RetryPolicy;

/// Everything the control plane needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where gRPC listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `sqlite://path` (created if missing) or `postgres://…`.
    pub database_url: String,
    /// Tunables of the queue and the agent protocol.
    pub queue: QueueConfig,
    /// TLS and authentication; both off by default (local development).
    pub security: SecurityConfig,
    /// Where Prometheus scrapes `/metrics` (plain HTTP); `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the web console is served (HTTPS when TLS is configured);
    /// `None` serves none.
    pub console_listen: Option<SocketAddr>,
}

/// TLS and authentication settings.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Serve TLS with these files; `None` serves plaintext.
    pub tls: Option<TlsFiles>,
    /// Require bearer tokens; `None` lets every request through.
    pub auth: Option<AuthConfig>,
    /// Allow serving without authentication on an address other than
    /// loopback (otherwise the server refuses to start).
    pub insecure: bool,
    /// How often the certificate, key, client CA and tokens files are
    /// checked for changes (they are also re-read on SIGHUP).
    pub reload_interval: Duration,
}

/// The PEM files of the server's TLS identity.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Bearer-token authentication.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Tokens kept in a TOML file besides those in the database.
    pub tokens_file: Option<PathBuf>,
    /// How long a database token lookup is reused; a revocation takes
    /// effect within this time.
    pub cache_ttl: Duration,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            tls: None,
            auth: None,
            insecure: false,
            reload_interval: Duration::from_secs(2),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            tokens_file: None,
            cache_ttl: Duration::from_secs(5),
        }
    }
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
    /// The largest result an agent may report, in bytes of JSON.
    pub max_result_bytes: usize,
    /// The largest gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// The most task types one agent registration may carry.
    pub max_registered_types: usize,
    /// The most agent streams one token may hold open at once (0: no limit).
    pub max_streams_per_token: usize,
    /// The most tasks one token may enqueue per second (0: no limit).
    pub enqueue_rate_per_token: u32,
    /// How long past its timeout an attempt may go unanswered before the
    /// server ends it (as a timed-out failure) and tells the agent to stop:
    /// the agent's own cutoff and its report have this long to arrive.
    pub timeout_grace: Duration,
    /// How long finished tasks (and their attempts) are kept; `None` keeps
    /// them forever.
    pub retention: Option<Duration>,
    /// How often the retention purge runs.
    pub purge_interval: Duration,
    /// The most tasks one purge transaction deletes.
    pub purge_batch: u32,
    /// When an SQLite commit reaches the disk (PostgreSQL ignores it).
    pub sqlite_durability: SqliteDurability,
    /// A schedule's fire time the scheduler reaches later than this was
    /// missed (no server was running): the schedule's catch-up policy
    /// decides what it makes. Later but within it, it fires as usual.
    pub schedule_grace: Duration,
}

/// When a commit of the embedded SQLite store reaches the disk: SQLite's
/// `synchronous` setting (the database is in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteDurability {
    /// Every commit is synced to the disk before it is acknowledged, so an
    /// accepted task or a recorded result survives power loss and OS
    /// crashes (`synchronous = FULL`). The default.
    #[default]
    Full,
    /// Commits are synced at checkpoints only (`synchronous = NORMAL`): a
    /// process crash loses nothing, but power loss or an OS crash can lose
    /// the last commits before the next checkpoint (a few hundred
    /// milliseconds of acknowledged enqueues and results).
    Normal,
}

impl SqliteDurability {
    /// The value of SQLite's `synchronous` pragma.
    pub fn pragma(self) -> &'static str {
        match self {
            SqliteDurability::Full => "full",
            SqliteDurability::Normal => "normal",
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: "sqlite://taskplane-data/taskplane.db".to_owned(),
            queue: QueueConfig::default(),
            security: SecurityConfig::default(),
            metrics_listen: None,
            console_listen: None,
        }
    }
}

impl QueueConfig {
    /// `lease_duration` as a span of wall-clock time, for lease deadlines.
    pub fn lease_length(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.lease_duration).unwrap_or(chrono::Duration::MAX)
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
            max_result_bytes: 1024 * 1024,
            max_message_bytes: 4 * 1024 * 1024,
            max_registered_types: 1000,
            max_streams_per_token: 64,
            enqueue_rate_per_token: 0,
            timeout_grace: Duration::from_secs(5),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            purge_interval: Duration::from_secs(60),
            purge_batch: 1000,
            sqlite_durability: SqliteDurability::Full,
            schedule_grace: Duration::from_secs(60),
        }
    }
}
