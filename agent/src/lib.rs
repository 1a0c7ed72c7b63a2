//! The taskplane agent SDK.
//!
//! An agent is a worker process for one or more business domains. It builds a
//! [`TaskRegistry`] of handlers, connects to the control plane over one gRPC
//! stream, registers every task type atomically, and runs the tasks the
//! server pushes to it.
//!
//! - [`handler`]: [`TaskHandler`], [`TaskContext`], [`TaskResult`], [`TaskError`].
//! - [`registry`]: [`TaskRegistry`] and [`DomainRegistry`].
//! - [`config`]: which domains and types are enabled, [`RegistryConfig::from_env`].
//! - [`runtime`]: [`Agent`], which connects, heartbeats, reconnects and drains.
//! - [`domains`]: the design guide's example domains.
//! - [`builtin`]: handlers the example domains are made of.
//! - [`signal`]: graceful shutdown and logging set-up for the binaries.
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

pub mod builtin;
pub mod config;
pub mod domains;
pub mod handler;
pub mod registry;
pub mod runtime;
pub mod signal;

pub use config::RegistryConfig;
pub use domains::{AppServices, setup_registry_with_config};
pub use handler::{TaskContext, TaskError, TaskHandler, TaskResult};
pub use registry::{DomainRegistry, HandlerInfo, TaskRegistry};
pub use runtime::{Agent, AgentBuilder, AgentError, ConnectionState};
