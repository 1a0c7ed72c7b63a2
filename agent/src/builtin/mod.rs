//! Handlers that do real work with nothing but the payload and local
//! resources, used by the example domains.
//!
//! - [`aggregate`]: statistics over numbers in the payload.
//! - [`invoice`]: invoice totals from line items.
//! - [`probe`]: a TCP reachability probe with a latency budget.
//! - [`export`]: writes a JSON document into an export directory.
//! - [`unconfigured`]: the honest answer of a task type whose external
//!   service (SMTP, payment gateway, database) this agent has not been given.

pub mod aggregate;
pub mod export;
pub mod invoice;
pub mod probe;
pub mod unconfigured;

use crate::handler::TaskError;

/// Reads a required string field of the payload.
pub(crate) fn required_str<'a>(
    payload: &'a serde_json::Value,
    field: &str,
) -> Result<&'a str, TaskError> {
    payload
        .get(field)
        .and_then(|v| v.as_str())
        .ok_or_else(|| TaskError::bad_payload(field, "a string"))
}
