//! The gRPC services. Each method is thin: convert the request, call the
//! control plane, convert the answer; errors map to `Status` in one place
//! (`crate::error`).

mod agents;
pub mod convert;
mod registry;
mod tasks;

pub use agents::AgentApi;
pub use registry::RegistryApi;
pub use tasks::TaskApi;
