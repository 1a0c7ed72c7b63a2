//! The taskplane control plane, as a library: the `taskplane` binary
//! (`server/cli`) runs it, and so do the integration tests.
//!
//! - [`server`]: binds, serves gRPC (tasks, registry, agents, health,
//!   reflection) and shuts down gracefully.
//! - [`api`]: the thin gRPC services and the wire conversion.
//! - [`auth`]: bearer tokens, roles, domain scopes and per-token quotas.
//! - [`console`]: the web console (`--console-listen`), calling the gRPC
//!   services in process with the signed-in token.
//! - [`engine`]: the queue engine of one replica (sessions, dispatch,
//!   hand-offs, the group commits of enqueues and results).
//! - [`maintenance`]: every periodic loop, started in one place.
//! - [`transport`]: the listener, TLS and reloading its files.
//! - [`store`]: durable state behind one trait; [`store::SqliteStore`] is the
//!   embedded default, [`store::PostgresStore`] serves several replicas.
//! - [`metrics`]: the Prometheus metrics served on `--metrics-listen`,
//!   and [`activity`], the last hour by type and minute that the console
//!   charts.
//! - [`testing`]: a private PostgreSQL schema per test or benchmark run,
//!   and the macro that runs a test on both databases.
//! - [`model`], [`error`], [`config`], [`backoff`]: domain types, the one
//!   error → status mapping, configuration and retry delays.

#![warn(missing_docs)]

pub mod activity;
pub mod api;
pub mod auth;
pub mod backoff;
pub mod config;
pub mod console;
pub mod engine;
pub mod error;
pub mod maintenance;
pub mod metrics;
pub mod model;
pub mod schedule;
pub mod server;
pub mod store;
pub mod testing;
pub mod transport;

pub use config::{QueueConfig, ServerConfig, SqliteDurability};
pub use server::Server;
