//! What taskplane ships to run on its agents, beyond the SDK
//! (`taskplane-agent`): the design guide's example domains, the built-in
//! handlers that do real work, and the `taskplane-agent` binary that serves
//! them.
//!
//! - [`domains`]: the example domains and [`setup_registry_with_config`].
//! - [`builtin`]: handlers that do real work (SMTP, webhooks, files,
//!   reports, health checks, backups).
//! - [`services`]: [`AppServices`], the shared services injected into them.
//! - [`agent_config`]: the agent's configuration file, one table of
//!   settings per handler.
//! - [`environment`]: the agent binary's settings, the one place it reads
//!   its environment.

#![warn(missing_docs)]

pub mod agent_config;
pub mod builtin;
pub mod domains;
pub mod egress;
pub mod environment;
pub mod services;

pub use domains::setup_registry_with_config;
pub use services::AppServices;
