//! The taskplane control plane, as a library: the `taskplane` binary
//! (`server/cli`) runs it, and so do the integration tests.
//!
//! - [`server`]: binds, serves gRPC (tasks, registry, agents, health,
//!   reflection) and shuts down gracefully.
//! - [`api`]: the thin gRPC service implementations.
//! - [`auth`] and [`tls`]: bearer tokens, roles, domain scopes, per-token
//!   quotas, and TLS with certificates reloaded while serving.
//! - [`plane`]: the operations the services share, keeping the store, the
//!   live sessions and the change notices consistent.
//! - [`store`]: durable state behind one trait; [`store::SqliteStore`] is the
//!   embedded default.
//! - [`sessions`] and [`dispatch`]: live agent streams, their credit, and
//!   the dispatchers that push leased tasks to them.
//! - [`completer`]: results written in batches, one transaction each.
//! - [`metrics`]: the Prometheus metrics served on `--metrics-listen`.
//! - [`retention`]: finished tasks purged in batches after the retention.
//! - [`task_counts`]: the finished-task counts behind queue statistics,
//!   folded as they age.
//! - [`testing`]: a private PostgreSQL schema per test or benchmark run.
//! - [`model`], [`convert`], [`error`], [`config`], [`backoff`], [`events`]:
//!   domain types, wire conversion and validation, the error → status
//!   mapping, configuration, retry delays and task-change notices.

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod backoff;
pub mod config;
pub mod engine;
pub mod error;
pub mod maintenance;
pub mod metrics;
pub mod model;
pub mod server;
pub mod store;
pub mod testing;
pub mod transport;

pub use config::{QueueConfig, ServerConfig};
pub use server::Server;
