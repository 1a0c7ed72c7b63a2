//! The billing domain's handlers, each a charge through the
//! [`GatewayClient`] under a key chosen so that no customer is charged
//! twice for one thing:
//!
//! - `payment_processing`: the task id. Version 1 charges the payload's
//!   `amount_cents`; version 2 (the `new_payment_flow` rollout) charges the
//!   total of its `items` and `tax_rate_percent`, as an invoice totals them,
//!   and returns the lines.
//! - `subscription_renewal`: the subscription and the period it pays for,
//!   at the plan's monthly price; it returns the next period.
//! - `failed_payment_retry`: the key of the charge that failed, so a charge
//!   that went through after all is answered, not made again. A permanent
//!   decline ends the task DEAD with the gateway's reason.

use async_trait::async_trait;
use chrono::{DateTime, Months, Utc};
use serde_json::{Value, json};

use super::gateway::{ChargeRequest, GatewayClient};
use crate::builtin::invoice::totals;
use crate::builtin::required_str;
use taskplane_agent::handler::{TaskContext, TaskError, TaskHandler, TaskResult};

/// Where a payment's amount comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// The payload's `amount_cents` (version 1).
    Given,
    /// The total of the payload's `items` and `tax_rate_percent` (version 2).
    FromItems,
}

/// `payment_processing`: charges a customer once per task.
pub struct PaymentHandler {
    gateway: GatewayClient,
    amount: Amount,
}

impl PaymentHandler {
    /// Charges through `gateway`, the amount taken as `amount` says.
    pub fn new(gateway: GatewayClient, amount: Amount) -> Self {
        PaymentHandler { gateway, amount }
    }
}

/// The charge's fields a result shows.
fn charged(charge: &Value) -> Value {
    json!({
        "charge_id": charge["id"],
        "status": charge["status"],
        "amount_cents": charge["amount_cents"],
        "currency": charge["currency"],
        "customer_id": charge["customer_id"],
    })
}

#[async_trait]
impl TaskHandler for PaymentHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let payload = &context.payload;
        let (amount, lines) = match self.amount {
            Amount::Given => {
                let amount = payload
                    .get("amount_cents")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| TaskError::bad_payload("amount_cents", "an integer"))?;
                (amount, None)
            }
            Amount::FromItems => {
                let totals = totals(payload)?;
                (totals.total(), Some(totals.lines))
            }
        };
        let request = ChargeRequest::from_payload(payload, amount)?;
        let charge = self.gateway.charge(&context.task_id, &request).await?;
        let mut result = charged(&charge);
        if let Some(lines) = lines {
            result["lines"] = Value::Array(lines);
        }
        Ok(TaskResult::new(result))
    }

    fn description(&self) -> String {
        "Charges a customer once per task (payload: customer_id, currency, amount_cents; v2: items, tax_rate_percent)".into()
    }
}

/// The plans a subscription may be on, and their monthly price in cents.
pub const PLANS: [(&str, i64); 3] = [("basic", 900), ("pro", 2900), ("team", 9900)];

/// `subscription_renewal`: charges the plan's price for the period that
/// starts when the current one ends.
pub struct RenewalHandler {
    gateway: GatewayClient,
}

impl RenewalHandler {
    /// Renews through `gateway`.
    pub fn new(gateway: GatewayClient) -> Self {
        RenewalHandler { gateway }
    }
}

#[async_trait]
impl TaskHandler for RenewalHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let payload = &context.payload;
        let subscription = required_str(payload, "subscription_id")?;
        let plan = required_str(payload, "plan")?;
        let price = PLANS
            .iter()
            .find(|(name, _)| *name == plan)
            .map(|(_, price)| *price)
            .ok_or_else(|| {
                TaskError::Permanent(format!(
                    "plan '{plan}' is not one of {}",
                    PLANS.map(|(name, _)| name).join(", ")
                ))
            })?;
        let period_start: DateTime<Utc> = required_str(payload, "current_period_end")?
            .parse()
            .map_err(|_| {
                TaskError::bad_payload(
                    "current_period_end",
                    "an RFC 3339 time, e.g. 2026-12-01T00:00:00Z",
                )
            })?;
        let period_end = period_start
            .checked_add_months(Months::new(1))
            .ok_or_else(|| TaskError::Permanent("the next period is out of range".into()))?;
        let mut with_currency = payload.clone();
        if with_currency.get("currency").is_none() {
            with_currency["currency"] = json!("EUR");
        }
        if with_currency.get("description").is_none() {
            with_currency["description"] =
                json!(format!("{plan} plan from {}", period_start.date_naive()));
        }
        let request = ChargeRequest::from_payload(&with_currency, price)?;
        // One charge per subscription and period, whichever task asks.
        let key = format!("renewal:{subscription}:{}", period_start.to_rfc3339());
        let charge = self.gateway.charge(&key, &request).await?;
        let mut result = charged(&charge);
        result["plan"] = json!(plan);
        result["period_start"] = json!(period_start.to_rfc3339());
        result["next_period_end"] = json!(period_end.to_rfc3339());
        Ok(TaskResult::new(result))
    }

    fn description(&self) -> String {
        "Renews a subscription: charges its plan's monthly price and returns the next period (payload: subscription_id, customer_id, plan, current_period_end)".into()
    }
}

/// `failed_payment_retry`: tries a declined charge again under its
/// original key.
pub struct RetryHandler {
    gateway: GatewayClient,
}

impl RetryHandler {
    /// Retries through `gateway`.
    pub fn new(gateway: GatewayClient) -> Self {
        RetryHandler { gateway }
    }
}

#[async_trait]
impl TaskHandler for RetryHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let payload = &context.payload;
        let original = required_str(payload, "original_key")?;
        let amount = payload
            .get("amount_cents")
            .and_then(Value::as_i64)
            .ok_or_else(|| TaskError::bad_payload("amount_cents", "an integer"))?;
        let request = ChargeRequest::from_payload(payload, amount)?;
        let charge = self.gateway.charge(original, &request).await?;
        let mut result = charged(&charge);
        result["original_key"] = json!(original);
        Ok(TaskResult::new(result))
    }

    fn description(&self) -> String {
        "Retries a declined payment under its original key (payload: original_key, customer_id, amount_cents, currency)".into()
    }
}
