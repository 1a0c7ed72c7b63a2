//! The `billing` domain: invoices, payments and subscriptions.

use crate::builtin::invoice::InvoiceHandler;
use crate::builtin::unconfigured::UnconfiguredHandler;
use crate::registry::{DomainRegistry, TaskRegistry};

/// Registers the billing handlers.
pub struct BillingDomainRegistry;

impl DomainRegistry for BillingDomainRegistry {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        registry.register_handler("invoice_generation", Box::new(InvoiceHandler));
        registry.register_handler(
            "payment_processing",
            Box::new(UnconfiguredHandler::new(
                "a payment gateway",
                "Charges a payment through the gateway",
            )),
        );
        registry.register_handler(
            "subscription_renewal",
            Box::new(UnconfiguredHandler::new(
                "a payment gateway",
                "Renews a subscription and charges it",
            )),
        );
        registry.register_handler(
            "failed_payment_retry",
            Box::new(UnconfiguredHandler::new(
                "a payment gateway",
                "Retries a declined payment",
            )),
        );
        [
            "invoice_generation",
            "payment_processing",
            "subscription_renewal",
            "failed_payment_retry",
        ]
        .map(String::from)
        .to_vec()
    }

    fn domain_name(&self) -> &'static str {
        "billing"
    }
}
