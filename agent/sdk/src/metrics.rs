//! The agent's own metrics: tasks in flight, handler durations and handler
//! errors by kind, per task type. Served by the agent binary on
//! `TASKPLANE_METRICS_LISTEN` (`taskplane_common::metrics_endpoint`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::handler::TaskError;

/// Labels of per-type handler metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerLabels {
    /// The task type.
    pub task_type: String,
    /// `completed`, `retryable`, `permanent`, `unsupported_version`, `timeout` or `cancelled`.
    pub outcome: String,
}

/// Durations from 1 ms to about 9 minutes.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// The agent's metrics.
#[derive(Debug)]
pub struct AgentMetrics {
    in_flight: Gauge,
    handler_duration: Family<HandlerLabels, Histogram, fn() -> Histogram>,
    handler_errors: Family<HandlerLabels, Counter>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            in_flight: Gauge::default(),
            handler_duration: Family::new_with_constructor(duration_histogram),
            handler_errors: Family::default(),
        }
    }
}

impl AgentMetrics {
    /// A registry holding these metrics, for the scrape endpoint.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("taskplane_agent");
        registry.register(
            "tasks_in_flight",
            "Tasks this agent is running now",
            self.in_flight.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "How long handlers ran, by task type and outcome",
            self.handler_duration.clone(),
        );
        registry.register(
            "handler_errors",
            "Handler runs that failed, by task type and kind of error",
            self.handler_errors.clone(),
        );
        registry
    }

    /// Counts a task that starts running.
    pub fn started(&self) {
        self.in_flight.inc();
    }

    /// Records how a task's run ended and how long it took.
    pub fn finished(&self, task_type: &str, error: Option<&TaskError>, seconds: f64) {
        self.in_flight.dec();
        let outcome = match error {
            None => "completed",
            Some(TaskError::Retryable(_) | TaskError::RetryAfter { .. }) => "retryable",
            Some(TaskError::Permanent(_)) => "permanent",
            Some(TaskError::UnsupportedVersion(_)) => "unsupported_version",
            Some(TaskError::Timeout(_)) => "timeout",
            Some(TaskError::Cancelled(_)) => "cancelled",
        };
        let labels = HandlerLabels {
            task_type: task_type.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.handler_duration
            .get_or_create(&labels)
            .observe(seconds);
        if error.is_some() {
            self.handler_errors.get_or_create(&labels).inc();
        }
    }
}
