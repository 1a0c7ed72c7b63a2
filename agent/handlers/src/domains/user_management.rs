//! The `user_management` domain: welcome and password-reset emails, account
//! clean-up and profile export.

use std::sync::Arc;

use super::factories::{self, factories};
use crate::services::AppServices;
use taskplane_agent::registry::{DomainRegistry, TaskRegistry};

/// Registers the user-management handlers, built from the shared services.
pub struct UserDomainRegistry {
    services: Arc<AppServices>,
}

impl UserDomainRegistry {
    /// The domain, with the services its handlers use.
    pub fn new(services: Arc<AppServices>) -> Self {
        UserDomainRegistry { services }
    }
}

impl DomainRegistry for UserDomainRegistry {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        factories(
            &self.services,
            &[
                ("welcome_email", factories::welcome_email),
                ("password_reset", factories::password_reset),
                ("account_cleanup", factories::account_cleanup),
                ("profile_export", factories::profile_export),
            ],
        )
        .register_all(registry)
    }

    fn domain_name(&self) -> &'static str {
        "user_management"
    }
}
