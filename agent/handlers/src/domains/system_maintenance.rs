//! The `system_maintenance` domain: backups, log clean-up, health checks and
//! metric aggregation.

use std::sync::Arc;

use super::factories::{self, factories};
use crate::services::AppServices;
use taskplane_agent::registry::{DomainRegistry, TaskRegistry};

/// Registers the system-maintenance handlers, built from the shared services.
pub struct SystemDomainRegistry {
    services: Arc<AppServices>,
}

impl SystemDomainRegistry {
    /// The domain, with the services its handlers use.
    pub fn new(services: Arc<AppServices>) -> Self {
        SystemDomainRegistry { services }
    }
}

impl DomainRegistry for SystemDomainRegistry {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        factories(
            &self.services,
            &[
                ("database_backup", factories::database_backup),
                ("log_cleanup", factories::log_cleanup),
                ("health_check", factories::health_check),
                ("metric_aggregation", factories::data_processing),
            ],
        )
        .register_all(registry)
    }

    fn domain_name(&self) -> &'static str {
        "system_maintenance"
    }
}
