//! The gRPC services. Each method is thin: convert the request, call the
//! control plane, convert the answer; errors map to `Status` in one place
//! (`crate::error`).

mod agents;
pub mod convert;
mod registry;
pub mod schedules;
mod tasks;

pub use agents::AgentApi;
pub use registry::RegistryApi;
pub use schedules::ScheduleApi;
pub use tasks::TaskApi;
