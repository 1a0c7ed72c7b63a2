//! The taskplane agent SDK.
//!
//! An agent is a worker process for one or more business domains. It builds a
//! [`TaskRegistry`] of handlers, connects to the control plane over one gRPC
//! stream, registers every task type atomically, and runs the tasks the
//! server pushes to it.
//!
//! - [`handler`]: [`TaskHandler`], [`TaskContext`], [`TaskResult`], [`TaskError`].
//! - [`registry`]: [`TaskRegistry`] and [`DomainRegistry`].
//! - [`versioned`]: [`VersionedHandler`], v3 → v2 → v1 fallback.
//! - [`factory`]: [`HandlerFactory`] and [`FactoryRegistry`], handlers built
//!   from injected services.
//! - [`config`]: which domains and types are enabled, [`RegistryConfig::from_env`].
//! - [`runtime`]: [`Agent`], which connects, heartbeats, reconnects and drains;
//!   [`ConnectOptions`] carries its token and TLS settings.
//! - [`metrics`]: the agent's Prometheus metrics.
//! - [`schedule`]: [`Schedule`], recurring work a domain declares with its
//!   handlers.
//!
//! The design guide's example domains, the built-in handlers that do real
//! work and the `taskplane-agent` binary are in the `taskplane-handlers`
//! crate: an application that only runs its own handlers builds none of
//! their dependencies.
//!
//! # Differences from the design guide
//!
//! The guide's examples compile with these mechanical changes:
//!
//! - `register_handler` takes `impl Into<String>` (a `&str` works too). A
//!   second handler for one task type is not an overwrite: the first stays,
//!   and [`AgentBuilder::build`] refuses to start, naming the duplicate.
//! - `TaskHandler` describes itself to the server through optional methods
//!   (`description`, `versions`, `capabilities`, `health_check`); there is no
//!   `as_any` downcast for health checks.
//! - `TaskContext::metadata` is `HashMap<String, String>`: `get(..)` gives a
//!   `&String`, so the guide's `.as_str()` on it needs no `if let`. The task's
//!   own `handler_version` field (set at enqueue) is consulted first.
//! - `setup_registry_with_config` takes the configuration by reference and the
//!   shared `AppServices` (both in `taskplane-handlers`), and also returns the unknown domains it warned
//!   about, so callers can refuse them ([`RegistryConfig::check_unknown_domains`]
//!   under `TASK_STRICT_CONFIG=true`). `RegistryConfig::from_env` returns a
//!   `Result`: a malformed `TASK_FEATURE_FLAGS` is an error, not ignored.
//! - The guide's two registration steps are one: the agent registers its task
//!   types atomically when it connects ([`Agent::run`]); there is no
//!   `TaskProcessor` and no HTTP call.
//! - `register_domain(name, registry)` files a domain under `name` only when
//!   it is the registry's own `domain_name()`, and a handler a domain
//!   registers without returning its task type is an error; a second
//!   factory for one task type is refused like a second handler. Each is
//!   recorded, and [`AgentBuilder::build`] refuses to start naming it.
//! - `VersionedHandler` is built with [`VersionedHandler::new`] and
//!   `with_version`; its fields are private.
//!
//! # Example
//!
//! ```no_run
//! use taskplane_agent::{Agent, TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
//!
//! struct Greet;
//!
//! #[async_trait::async_trait]
//! impl TaskHandler for Greet {
//!     async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
//!         let name = context.payload["name"].as_str().unwrap_or("world");
//!         Ok(TaskResult::new(serde_json::json!({ "greeting": format!("hello, {name}") })))
//!     }
//! }
//!
//! # async fn run() -> Result<(), taskplane_agent::AgentError> {
//! let mut registry = TaskRegistry::new();
//! registry.register_handler("greet", Box::new(Greet));
//! Agent::builder()
//!     .registry(registry)
//!     .server("http://127.0.0.1:50051")
//!     .max_concurrency(8)
//!     .build()?
//!     .run(async { tokio::signal::ctrl_c().await.ok(); })
//!     .await
//! # }
//! ```

#![warn(missing_docs)]

pub mod concurrency;
pub mod config;
mod execution;
pub mod factory;
pub mod flow;
pub mod follow_up;
pub mod handler;
pub mod metrics;
pub mod progress;
pub mod registry;
mod running;
pub mod runtime;
pub mod schedule;
pub mod versioned;
mod work;

pub use concurrency::Concurrency;
pub use config::RegistryConfig;
pub use factory::{FactoryRegistry, HandlerFactory};
pub use flow::FlowLimits;
pub use handler::{HandlerHealth, TaskContext, TaskError, TaskHandler, TaskResult};
pub use registry::{DomainRegistry, HandlerInfo, RegistryHealthStatus, TaskRegistry};
pub use runtime::{Agent, AgentBuilder, AgentError, ConnectionState};
pub use schedule::Schedule;
pub use taskplane_common::ConnectOptions;
pub use taskplane_common::shutdown::shutdown_signal;
pub use versioned::{HandlerVersion, VersionedHandler};

/// The README's handler example, compiled as a doctest of this crate.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeExample;
