//! The `platform` domain: the general-purpose built-ins under their own
//! names — `email`, `webhook`, `data_processing`, `file_cleanup`,
//! `report_generation` (the `health_check` built-in is served by
//! `system_maintenance`).

use std::sync::Arc;

use super::factories::{self, factories};
use crate::services::AppServices;
use taskplane_agent::registry::{DomainRegistry, TaskRegistry};

/// Registers the general-purpose built-in handlers.
pub struct PlatformDomainRegistry {
    services: Arc<AppServices>,
}

impl PlatformDomainRegistry {
    /// The domain, with the services its handlers use.
    pub fn new(services: Arc<AppServices>) -> Self {
        PlatformDomainRegistry { services }
    }
}

impl DomainRegistry for PlatformDomainRegistry {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        factories(
            &self.services,
            &[
                ("email", factories::generic_email),
                ("webhook", factories::webhook),
                ("data_processing", factories::data_processing),
                ("file_cleanup", factories::file_cleanup),
                ("report_generation", factories::report_generation),
            ],
        )
        .register_all(registry)
    }

    fn domain_name(&self) -> &'static str {
        "platform"
    }
}
