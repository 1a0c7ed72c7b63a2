//! `AggregateHandler`: count, sum, min, max and mean of `values`, a JSON
//! array of numbers in the payload.

use async_trait::async_trait;
use serde_json::json;

use crate::handler::{TaskContext, TaskError, TaskHandler, TaskResult};

/// Computes statistics over the payload's `values`.
pub struct AggregateHandler;

#[async_trait]
impl TaskHandler for AggregateHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let values = context
            .payload
            .get("values")
            .and_then(|v| v.as_array())
            .ok_or_else(|| TaskError::bad_payload("values", "an array of numbers"))?;
        let numbers = values
            .iter()
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| TaskError::bad_payload("values", "an array of numbers only"))
            })
            .collect::<Result<Vec<f64>, _>>()?;
        if numbers.is_empty() {
            return Ok(TaskResult::new(json!({"count": 0})));
        }
        let sum: f64 = numbers.iter().sum();
        let min = numbers.iter().copied().fold(f64::INFINITY, f64::min);
        let max = numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Ok(TaskResult::new(json!({
            "count": numbers.len(),
            "sum": sum,
            "min": min,
            "max": max,
            "mean": sum / numbers.len() as f64,
        })))
    }

    fn description(&self) -> String {
        "Aggregates numbers: count, sum, min, max, mean of payload.values".into()
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["aggregate".into()]
    }
}
