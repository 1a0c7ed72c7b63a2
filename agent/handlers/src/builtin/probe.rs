//! `HealthCheckHandler`: an HTTP(S) or TCP probe within a latency budget.
//!
//! Payload: `url` (HTTP probe: GET, expecting `expected_status`, default
//! 200) or `host` and `port` (TCP connect probe); `budget_ms` (default
//! 1000). A probe that fails, answers the wrong status, or takes longer than
//! the budget fails the attempt (retryably: the target may recover).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;

use super::optional_u64;
use crate::egress::Egress;
use taskplane_agent::handler::{TaskContext, TaskError, TaskHandler, TaskResult};

/// Probes HTTP or TCP endpoints.
pub struct HealthCheckHandler {
    egress: Egress,
}

impl HealthCheckHandler {
    /// Probes with this HTTP client.
    pub fn new(egress: Egress) -> Self {
        HealthCheckHandler { egress }
    }
}

fn over_budget(target: &str, elapsed: Duration, budget: Duration) -> Result<(), TaskError> {
    if elapsed > budget {
        return Err(TaskError::Retryable(format!(
            "{target} answered in {} ms, over the {} ms budget",
            elapsed.as_millis(),
            budget.as_millis()
        )));
    }
    Ok(())
}

#[async_trait]
impl TaskHandler for HealthCheckHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let payload = &context.payload;
        let budget = Duration::from_millis(optional_u64(payload, "budget_ms")?.unwrap_or(1000));
        let started = Instant::now();
        if let Some(url) = payload.get("url").and_then(|u| u.as_str()) {
            let expected = optional_u64(payload, "expected_status")?.unwrap_or(200);
            self.egress.check_url(url).await?;
            let response = self
                .egress
                .client()
                .get(url)
                .timeout(budget)
                .send()
                .await
                .map_err(|e| {
                    if e.is_builder() {
                        TaskError::Permanent(format!("'{url}' is not a URL to probe: {e}"))
                    } else {
                        TaskError::Retryable(format!(
                            "{url} did not answer within {} ms: {e}",
                            budget.as_millis()
                        ))
                    }
                })?;
            let elapsed = started.elapsed();
            let status = response.status().as_u16();
            if u64::from(status) != expected {
                return Err(TaskError::Retryable(format!(
                    "{url} answered {status}, expected {expected}"
                )));
            }
            over_budget(url, elapsed, budget)?;
            return Ok(TaskResult::new(
                json!({ "target": url, "status": status, "latency_ms": elapsed.as_secs_f64() * 1000.0 }),
            ));
        }
        let host = super::required_str(payload, "host")
            .map_err(|_| TaskError::bad_payload("url, or host and port", "the target to probe"))?;
        let port = optional_u64(payload, "port")?
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| TaskError::bad_payload("port", "a port number"))?;
        let target = format!("{host}:{port}");
        let addresses = self.egress.resolve(host, port).await?;
        match tokio::time::timeout(budget, tokio::net::TcpStream::connect(&addresses[..])).await {
            Ok(Ok(_)) => {
                let elapsed = started.elapsed();
                over_budget(&target, elapsed, budget)?;
                Ok(TaskResult::new(
                    json!({ "target": target, "reachable": true, "latency_ms": elapsed.as_secs_f64() * 1000.0 }),
                ))
            }
            Ok(Err(error)) => Err(TaskError::Retryable(format!(
                "{target} is unreachable: {error}"
            ))),
            Err(_) => Err(TaskError::Retryable(format!(
                "{target} did not accept within the {} ms budget",
                budget.as_millis()
            ))),
        }
    }

    fn description(&self) -> String {
        "Probes an HTTP(S) URL or a TCP port within a latency budget".into()
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["http".into(), "tcp".into()]
    }
}
