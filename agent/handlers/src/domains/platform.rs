//! The `platform` domain: the general-purpose built-ins under their own
//! names — `email`, `webhook`, `data_processing`, `file_cleanup`,
//! `report_generation` (the `health_check` built-in is served by
//! `system_maintenance`).

use std::sync::Arc;

use super::factories::{self, email, factories};
use crate::builtin::cleanup::FileCleanupHandler;
use crate::builtin::report::ReportHandler;
use crate::builtin::webhook::WebhookHandler;
use crate::services::AppServices;
use taskplane_agent::handler::TaskHandler;
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
                ("email", generic_email),
                ("webhook", webhook),
                ("data_processing", factories::data_processing),
                ("file_cleanup", file_cleanup),
                ("report_generation", report_generation),
            ],
        )
        .register_all(registry)
    }

    fn domain_name(&self) -> &'static str {
        "platform"
    }
}

/// `email`: any message, templates in the payload.
pub fn generic_email(services: &AppServices) -> Box<dyn TaskHandler> {
    email(
        services,
        None,
        "Sends an email rendered from the payload's subject and body templates",
    )
}

/// `webhook`: any URL from the payload.
pub fn webhook(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(WebhookHandler::new(
        services.egress.clone(),
        services.webhook_secret.clone(),
    ))
}

/// `file_cleanup`: deletes old files under the agent's `files` directory.
pub fn file_cleanup(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(FileCleanupHandler::new(
        Some(services.dir("files")),
        "TASKPLANE_AGENT_DATA_DIR",
    ))
}

/// `report_generation`: reports into the agent's `reports` directory.
pub fn report_generation(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(ReportHandler::new(
        services.dir("reports"),
        services.control_plane.clone(),
        services.connect_options.clone(),
    ))
}
