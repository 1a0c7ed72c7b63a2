//! The `billing` domain: invoices, payments and subscriptions.

use std::sync::Arc;

use super::factories::{self, factories};
use crate::services::AppServices;
use taskplane_agent::registry::{DomainRegistry, TaskRegistry};

/// Registers the billing handlers, built from the shared services.
pub struct BillingDomainRegistry {
    services: Arc<AppServices>,
}

impl BillingDomainRegistry {
    /// The domain, with the services its handlers use.
    pub fn new(services: Arc<AppServices>) -> Self {
        BillingDomainRegistry { services }
    }
}

impl DomainRegistry for BillingDomainRegistry {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        factories(
            &self.services,
            &[
                ("invoice_generation", factories::invoice_generation),
                ("payment_processing", factories::payment_processing),
                ("subscription_renewal", factories::subscription_renewal),
                ("failed_payment_retry", factories::failed_payment_retry),
            ],
        )
        .register_all(registry)
    }

    fn domain_name(&self) -> &'static str {
        "billing"
    }
}
