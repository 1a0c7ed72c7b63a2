//! The `user_management` domain: welcome and password-reset emails, account
//! clean-up and profile export, and the sign-in alert behind a flag.
//!
//! - [`emails`]: the messages a user receives.
//! - [`accounts`]: a user's account data.

pub mod accounts;
pub mod emails;

use std::sync::Arc;

use super::factories::{BuildHandler, factories};
use crate::services::AppServices;
use taskplane_agent::registry::{DomainRegistry, TaskRegistry};

/// The feature flag that registers `login_alert`: with it off, the agent
/// does not serve the type at all (the guide's gradual rollout of a whole
/// handler; `payment_processing` v2 shows one version behind a flag).
pub const LOGIN_ALERTS: &str = "login_alerts";

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
        let mut entries: Vec<(&'static str, BuildHandler)> = vec![
            ("welcome_email", emails::welcome_email),
            ("password_reset", emails::password_reset),
            ("account_cleanup", accounts::account_cleanup),
            ("profile_export", accounts::profile_export),
        ];
        if self.services.feature_enabled(LOGIN_ALERTS) {
            entries.push(("login_alert", emails::login_alert));
        }
        factories(&self.services, &entries).register_all(registry)
    }

    fn domain_name(&self) -> &'static str {
        "user_management"
    }
}
