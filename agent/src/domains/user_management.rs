//! The `user_management` domain: welcome and password-reset emails, account
//! clean-up and profile export.

use std::sync::Arc;

use super::AppServices;
use crate::builtin::export::ExportHandler;
use crate::builtin::unconfigured::UnconfiguredHandler;
use crate::registry::{DomainRegistry, TaskRegistry};

/// Registers the user-management handlers.
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
        registry.register_handler(
            "welcome_email",
            Box::new(UnconfiguredHandler::new(
                "an SMTP server",
                "Sends the welcome email to a new user",
            )),
        );
        registry.register_handler(
            "password_reset",
            Box::new(UnconfiguredHandler::new(
                "an SMTP server",
                "Sends a password-reset link",
            )),
        );
        registry.register_handler(
            "account_cleanup",
            Box::new(UnconfiguredHandler::new(
                "a user database",
                "Deletes a closed account's data",
            )),
        );
        registry.register_handler(
            "profile_export",
            Box::new(ExportHandler::new(self.services.export_dir.clone())),
        );
        [
            "welcome_email",
            "password_reset",
            "account_cleanup",
            "profile_export",
        ]
        .map(String::from)
        .to_vec()
    }

    fn domain_name(&self) -> &'static str {
        "user_management"
    }
}
