//! The `billing` domain: invoices, payments and subscriptions, kept
//! together as the guide advises (one module per business domain).
//!
//! - [`gateway`]: the payment gateway's client and protocol.
//! - [`charges`]: the handlers that charge through it.
//! - [`test_gateway`]: a gateway in test mode, which `taskplane dev` runs.

pub mod charges;
pub mod gateway;
pub mod test_gateway;

use std::sync::Arc;

use super::factories::{BuildHandler, factories};
use crate::builtin::invoice::InvoiceHandler;
use crate::builtin::unconfigured::UnconfiguredHandler;
use crate::services::AppServices;
use charges::{Amount, PaymentHandler, RenewalHandler, RetryHandler};
use gateway::GatewayClient;
use taskplane_agent::handler::TaskHandler;
use taskplane_agent::registry::{DomainRegistry, TaskRegistry};
use taskplane_agent::versioned::{HandlerVersion, VersionedHandler};

/// The feature flag that turns on version 2 of `payment_processing`.
pub const NEW_PAYMENT_FLOW: &str = "new_payment_flow";

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
        let entries: [(&'static str, BuildHandler); 4] = [
            ("invoice_generation", invoice_generation),
            ("payment_processing", payment_processing),
            ("subscription_renewal", subscription_renewal),
            ("failed_payment_retry", failed_payment_retry),
        ];
        factories(&self.services, &entries).register_all(registry)
    }

    fn domain_name(&self) -> &'static str {
        "billing"
    }
}

/// `invoice_generation`: invoices into the `invoices` directory.
pub fn invoice_generation(services: &AppServices) -> Box<dyn TaskHandler> {
    Box::new(InvoiceHandler::new(services.dir("invoices")))
}

/// A handler charging through the configured gateway, or the honest
/// failure of a missing one.
fn with_gateway(
    services: &AppServices,
    description: &str,
    build: impl FnOnce(GatewayClient) -> Box<dyn TaskHandler>,
) -> Box<dyn TaskHandler> {
    match &services.payment_gateway_url {
        Some(url) => build(GatewayClient::new(&services.egress, url)),
        None => Box::new(UnconfiguredHandler::new(
            "no payment gateway is configured: set TASKPLANE_PAYMENT_GATEWAY_URL (taskplane dev runs one in test mode)".into(),
            description.to_owned(),
        )),
    }
}

/// `payment_processing`: version 1 charges `amount_cents`; version 2,
/// served only with the `new_payment_flow` flag on (the guide's gradual
/// rollout), charges the total of the payload's `items`.
pub fn payment_processing(services: &AppServices) -> Box<dyn TaskHandler> {
    with_gateway(services, "Charges a customer once per task", |gateway| {
        let mut handler = VersionedHandler::new(HandlerVersion::V1).with_version(
            HandlerVersion::V1,
            Box::new(PaymentHandler::new(gateway.clone(), Amount::Given)),
        );
        if services.feature_enabled(NEW_PAYMENT_FLOW) {
            handler = handler.with_version(
                HandlerVersion::V2,
                Box::new(PaymentHandler::new(gateway, Amount::FromItems)),
            );
        }
        Box::new(handler.with_description(
            "Charges a customer once per task (v1: amount_cents; v2 with new_payment_flow: items)",
        ))
    })
}

/// `subscription_renewal`: the plan's price for the next period.
pub fn subscription_renewal(services: &AppServices) -> Box<dyn TaskHandler> {
    with_gateway(services, "Renews a subscription", |gateway| {
        Box::new(RenewalHandler::new(gateway))
    })
}

/// `failed_payment_retry`: a declined charge again, under its key.
pub fn failed_payment_retry(services: &AppServices) -> Box<dyn TaskHandler> {
    with_gateway(services, "Retries a declined payment", |gateway| {
        Box::new(RetryHandler::new(gateway))
    })
}
