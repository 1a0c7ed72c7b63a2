//! The benchmark's agent: no-op handlers that record, per task id, how many
//! times they ran and when they first started.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use taskplane_agent::{
    DomainRegistry, TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult,
};

/// The task type every workload processes.
pub const NOOP_TYPE: &str = "bench_noop";
/// The task type of W3's backlog, which no agent serves.
pub const BACKLOG_TYPE: &str = "bench_backlog";

/// Executions seen by the benchmark's handlers.
#[derive(Default)]
pub struct Probe {
    runs: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Probe {
    fn record(&self, task_id: &str) {
        let now = Instant::now();
        self.runs
            .lock()
            .expect("probe lock")
            .entry(task_id.to_owned())
            .and_modify(|(count, _)| *count += 1)
            .or_insert((1, now));
    }

    /// How many distinct tasks ran.
    pub fn distinct(&self) -> usize {
        self.runs.lock().expect("probe lock").len()
    }

    /// Runs beyond the first, summed over tasks.
    pub fn duplicates(&self) -> u64 {
        self.runs
            .lock()
            .expect("probe lock")
            .values()
            .map(|(count, _)| u64::from(count - 1))
            .sum()
    }

    /// When a task first started.
    pub fn started(&self, task_id: &str) -> Option<Instant> {
        self.runs
            .lock()
            .expect("probe lock")
            .get(task_id)
            .map(|(_, at)| *at)
    }

    /// Forgets everything seen.
    pub fn reset(&self) {
        self.runs.lock().expect("probe lock").clear();
    }
}

struct NoOp(Arc<Probe>);

#[async_trait]
impl TaskHandler for NoOp {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        self.0.record(&context.task_id);
        Ok(TaskResult::empty())
    }
}

struct BenchDomain(Arc<Probe>);

impl DomainRegistry for BenchDomain {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        registry.register_handler(NOOP_TYPE, Box::new(NoOp(self.0.clone())));
        vec![NOOP_TYPE.to_owned()]
    }

    fn domain_name(&self) -> &'static str {
        "bench"
    }
}

/// A registry serving the no-op type into `probe`.
pub fn registry(probe: &Arc<Probe>) -> TaskRegistry {
    let mut registry = TaskRegistry::new();
    registry.register_domain("bench", Box::new(BenchDomain(probe.clone())));
    registry
}
