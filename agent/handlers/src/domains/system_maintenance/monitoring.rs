//! Watching the system: health probes (metric aggregation is the shared
//! [`crate::domains::factories::data_processing`]).

use crate::builtin::probe::HealthCheckHandler;
use crate::services::AppServices;
use taskplane_agent::handler::TaskHandler;

/// `health_check`: HTTP or TCP probes.
pub fn health_check(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(HealthCheckHandler::new(services.egress.clone()))
}
