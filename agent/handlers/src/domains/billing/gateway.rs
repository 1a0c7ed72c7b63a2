//! The payment gateway's client: one call, `charge`, keyed so that the
//! gateway charges once per key however often it is called.
//!
//! The protocol (the test-mode gateway in [`super::test_gateway`] speaks it,
//! and so can a thin adapter in front of a real provider):
//!
//! - `POST <gateway>/charges` with `Idempotency-Key: <key>` and the body
//!   `{"customer_id", "amount_cents", "currency", "description"}`.
//! - `200` and the charge, `{"id", "status": "succeeded", …}`; a repeated
//!   key answers the first charge again.
//! - `402` and `{"error": {"code", "message", "retryable"}}` for a decline:
//!   a retryable one (insufficient funds) may pass later, another
//!   (card declined) will not.
//! - `409` when the key was used for a different charge.
//! - `408`, `429` and `5xx` are passing faults; a `Retry-After` on them
//!   sets the least wait before the retry.

use serde_json::{Value, json};

use crate::builtin::throttle::{retryable_status, try_again_later};
use crate::egress::Egress;
use taskplane_agent::handler::TaskError;
use taskplane_common::connect::error_chain;

/// One charge to make.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargeRequest {
    /// Who pays.
    pub customer_id: String,
    /// How much, in the currency's minor unit.
    pub amount_cents: i64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
    /// What it is for, shown on the statement.
    pub description: String,
}

impl ChargeRequest {
    /// The customer, amount and currency a payload names (`customer_id`,
    /// `currency` and the given amount), and its `description`.
    pub fn from_payload(payload: &Value, amount_cents: i64) -> Result<Self, TaskError> {
        let customer_id = crate::builtin::required_str(payload, "customer_id")?;
        let currency = crate::builtin::required_str(payload, "currency")?;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(TaskError::bad_payload(
                "currency",
                "an ISO 4217 code such as \"EUR\"",
            ));
        }
        if amount_cents <= 0 {
            return Err(TaskError::Permanent(format!(
                "the amount is {amount_cents} cents: a charge must be positive"
            )));
        }
        Ok(ChargeRequest {
            customer_id: customer_id.to_owned(),
            amount_cents,
            currency: currency.to_owned(),
            description: payload
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

/// Calls the payment gateway at one URL.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    egress: Egress,
    charges_url: String,
}

impl GatewayClient {
    /// A client of the gateway at `url` (its base, e.g.
    /// `http://127.0.0.1:7070`); the operator chose it, so its host is
    /// trusted by `egress`.
    pub fn new(egress: &Egress, url: &str) -> Self {
        GatewayClient {
            egress: egress.also_trusting_url(url),
            charges_url: format!("{}/charges", url.trim_end_matches('/')),
        }
    }

    /// Charges once per `key`: the charge made, or the one an earlier call
    /// with this key made. A decline or a refusal is an error that says
    /// whether trying again may help.
    pub async fn charge(&self, key: &str, request: &ChargeRequest) -> Result<Value, TaskError> {
        let url = &self.charges_url;
        self.egress.check_url(url).await?;
        let body = json!({
            "customer_id": request.customer_id,
            "amount_cents": request.amount_cents,
            "currency": request.currency,
            "description": request.description,
        });
        let response = self
            .egress
            .client()
            .post(url)
            .header("idempotency-key", key)
            .timeout(std::time::Duration::from_secs(30))
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                TaskError::Retryable(format!(
                    "the payment gateway at {url} cannot be reached: {}",
                    error_chain(&e)
                ))
            })?;
        let status = response.status();
        let headers = response.headers().clone();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        match status.as_u16() {
            200..=299 => Ok(answer),
            402 => Err(decline(&answer)),
            409 => Err(TaskError::Permanent(format!(
                "the payment gateway refused key '{key}': it was used for a different charge"
            ))),
            _ if retryable_status(status) => Err(try_again_later(
                format!("the payment gateway answered {status}; trying again later"),
                &headers,
            )),
            _ => Err(TaskError::Permanent(format!(
                "the payment gateway refused the charge ({status}): {answer}"
            ))),
        }
    }
}

/// The error of a declined charge, in the gateway's words.
fn decline(answer: &Value) -> TaskError {
    let error = &answer["error"];
    let code = error["code"].as_str().unwrap_or("declined");
    let message = error["message"].as_str().unwrap_or("no reason given");
    let reason = format!("the payment gateway declined the charge: {code}: {message}");
    if error["retryable"].as_bool().unwrap_or(false) {
        TaskError::Retryable(reason)
    } else {
        TaskError::Permanent(reason)
    }
}
